"""Configuration of the benchmark's upstream and of each proxy, as text or documents.

Pure: every function takes ports and returns a config (nginx.conf text, haproxy.cfg text, an
Envoy bootstrap dict, a meshplane snapshot dict or a `meshplane run` config dict). One worker or
thread each, keep-alive on both sides, and only 127.0.0.1. `tls=(port, cert, key)` adds a TLS
listener (the TLS scenarios) with the same settings everywhere: TLS 1.2 and 1.3, ALPN h2 and
http/1.1, session resumption on (meshplane's defaults, which are not configurable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Tls = tuple[int, Path, Path] | None  # (listen port, certificate PEM, key PEM)

BODY = "meshplane-bench-ok\n"  # the upstream's fixed 200 body (19 bytes)
HOST = "127.0.0.1"


def nginx_common(prefix: Path) -> str:
    return f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 10000; }}
"""


def nginx_http_common(prefix: Path) -> str:
    temps = "\n".join(f"    {d}_temp_path {prefix}/{d};"
                      for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
    access_log off;
{temps}
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
"""


def nginx_tls(tls: Tls) -> str:
    """The ssl_* settings of a TLS server block (nginx 1.22 lacks TLS 1.3 by default)."""
    if tls is None:
        return ""
    _, cert, key = tls
    return f"""
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:bench:10m;
        ssl_session_tickets on;"""


def upstream_nginx_conf(prefix: Path, h1: int, h2: int, tls: Tls = None) -> str:
    body = BODY.replace("\n", "\\n")
    tls_server = "" if tls is None else f"""
    server {{
        listen {HOST}:{tls[0]} ssl;{nginx_tls(tls)}
        location / {{ return 200 "{body}"; }}
    }}"""
    return nginx_common(prefix) + f"""
http {{
{nginx_http_common(prefix)}
    server {{
        listen {HOST}:{h1};
        location / {{ return 200 "{body}"; }}
    }}{tls_server}
    server {{
        listen {HOST}:{h2} http2;   # cleartext: HTTP/2 with prior knowledge only
        location / {{ return 200 "{body}"; }}
    }}
}}
"""


def proxy_nginx_conf(prefix: Path, h1: int, h2: int, up_h1: int, tls: Tls = None) -> str:
    tls_listen = "" if tls is None else f"\n        listen {HOST}:{tls[0]} ssl;{nginx_tls(tls)}"
    return nginx_common(prefix) + f"""
http {{
{nginx_http_common(prefix)}
    upstream up_h1 {{
        server {HOST}:{up_h1};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {HOST}:{h1};
        listen {HOST}:{h2} http2;{tls_listen}
        location / {{
            proxy_pass http://up_h1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_conf(h1: int, h2h2: int, up_h1: int, up_h2: int, tls: Tls = None,
                 tls_pem: Path | None = None) -> str:
    # A clear-text bind detects the HTTP/2 preface itself, so h1 also serves h2 prior knowledge.
    # TLS: `tls_pem` holds certificate and key; HAProxy 2.6 defaults to TLS 1.2+ with its
    # session cache and tickets on.
    tls_frontend = "" if tls is None else f"""
frontend fe_tls
    bind {HOST}:{tls[0]} ssl crt {tls_pem} alpn h2,http/1.1 ssl-min-ver TLSv1.2
    default_backend be_h1
"""
    return f"""
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always

frontend fe_h1
    bind {HOST}:{h1}
    default_backend be_h1

frontend fe_h2h2
    bind {HOST}:{h2h2}
    default_backend be_h2
{tls_frontend}
backend be_h1
    server up {HOST}:{up_h1}

backend be_h2
    server up {HOST}:{up_h2} proto h2
"""


def envoy_conf(h1: int, h2h2: int, up_h1: int, up_h2: int, tls: Tls = None) -> dict[str, Any]:
    def listener(name: str, port: int, cluster: str, secure: bool = False) -> dict[str, Any]:
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "codec_type": "AUTO",  # HTTP/1.1 or h2c prior knowledge, per connection
            "route_config": {"virtual_hosts": [{
                "name": "vh", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
            }]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }
        chain: dict[str, Any] = {"filters": [{
            "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        if secure and tls is not None:  # the same settings as the others: TLS 1.2-1.3, ALPN
            chain["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                             "DownstreamTlsContext",
                    "common_tls_context": {
                        "alpn_protocols": ["h2", "http/1.1"],
                        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                       "tls_maximum_protocol_version": "TLSv1_3"},
                        "tls_certificates": [{
                            "certificate_chain": {"filename": str(tls[1])},
                            "private_key": {"filename": str(tls[2])}}],
                    },
                }}
        return {
            "name": name,
            "address": {"socket_address": {"address": HOST, "port_value": port}},
            "filter_chains": [chain],
        }

    def cluster(name: str, port: int, h2: bool) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": name, "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {"address": HOST,
                                                            "port_value": port}}}}]}]},
        }
        if h2:
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }}
        return c

    listeners = [listener("h1", h1, "up_h1"), listener("h2h2", h2h2, "up_h2")]
    if tls is not None:
        listeners.append(listener("tls", tls[0], "up_h1", secure=True))
    return {"static_resources": {
        "listeners": listeners,
        "clusters": [cluster("up_h1", up_h1, False), cluster("up_h2", up_h2, True)],
    }}


def meshplane_snapshot(up_h1: int, up_h2: int | None, *, two_listeners: bool = True,
                       version: str = "bench", tls: Tls = None) -> dict[str, Any]:
    def table(route: str, clus: str) -> dict[str, Any]:
        return {"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [{
            "name": route, "match": {"path": {"kind": "prefix", "value": "/"}},
            "action": {"clusters": [{"cluster": clus, "weight": 1}]}}]}]}

    snap: dict[str, Any] = {
        "schema": 1, "version": version,
        "listeners": [{"name": "h1", "address": f"{HOST}:0", "protocol": "http",
                       "routeTable": "t1"}],
        "routeTables": {"t1": table("r1", "c1")},
        "clusters": [{"name": "c1", "protocol": "http1",
                      "endpoints": [{"address": f"{HOST}:{up_h1}"}]}],
    }
    if two_listeners and up_h2 is not None:
        snap["listeners"].append({"name": "h2h2", "address": f"{HOST}:0", "protocol": "http",
                                  "routeTable": "t2"})
        snap["routeTables"]["t2"] = table("r2", "c2")
        snap["clusters"].append({"name": "c2", "protocol": "http2",
                                 "endpoints": [{"address": f"{HOST}:{up_h2}"}]})
    if tls is not None:  # STRICT TLS in front of the same HTTP/1.1 cluster (port 0: ephemeral)
        snap["listeners"].append({
            "name": "h1tls", "address": f"{HOST}:0", "protocol": "http", "routeTable": "t1",
            "tls": {"mode": "strict", "certificates": [
                {"certificateChain": str(tls[1]), "privateKey": str(tls[2])}]},
        })
    return snap


def meshplane_run_config(up_h1: int) -> dict[str, Any]:
    """A one-listener `meshplane run` config (gateway → one virtual node), on 127.0.0.1 only.

    The admin API stays on (ephemeral port), as an operator would run it.
    """
    return {
        "mesh": "bench",
        "proxy": {"gateway": "edge", "bind": HOST, "admin": f"{HOST}:0", "ports": {8080: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge",
             "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {
                 "target": {"virtualService": {"virtualServiceName": "up.bench.local"}}}}}},
            {"kind": "VirtualService", "name": "up.bench.local",
             "spec": {"provider": {"virtualNode": {"virtualNodeName": "up"}}}},
            {"kind": "VirtualNode", "name": "up", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"static": {"endpoints": [f"{HOST}:{up_h1}"]}}}},
        ],
    }

