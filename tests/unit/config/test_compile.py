"""compile_snapshot: the document's structure (checked against a mirror of the Rust schema) and
App Mesh's semantics: ordering, default rewrites, default retries, gRPC mapping, clusters, ports."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from meshplane.config import (
    DnsTarget,
    MeshConfig,
    compile_snapshot,
    dns_targets,
    from_dict,
    listener_names,
)
from meshplane.config.routes import DEFAULT_RETRY

from .builders import (
    find,
    gateway_doc,
    gateway_route,
    http_route,
    node,
    route,
    router,
    service,
    sidecar_doc,
)
from .snapshot_contract import assert_valid_snapshot


def compiled(doc: dict[str, Any] | MeshConfig, **kwargs: Any) -> dict[str, Any]:
    cfg = doc if isinstance(doc, MeshConfig) else from_dict(doc)
    data = compile_snapshot(cfg, version=kwargs.pop("version", "v1"), **kwargs)
    snapshot = json.loads(data)
    assert_valid_snapshot(snapshot)
    return snapshot


def routes_of(snapshot: dict[str, Any], table: str, host: int = 0) -> list[dict[str, Any]]:
    return snapshot["routeTables"][table]["virtualHosts"][host]["routes"]  # type: ignore[no-any-return]


def cluster(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in snapshot["clusters"] if c["name"] == name)


def test_document_header_and_determinism() -> None:
    cfg = from_dict(gateway_doc())
    first = compile_snapshot(cfg, version="2024-01-01T00:00:00Z#3")
    assert first == compile_snapshot(from_dict(gateway_doc()), version="2024-01-01T00:00:00Z#3")
    doc = json.loads(first)
    assert doc["schema"] == 1 and doc["version"] == "2024-01-01T00:00:00Z#3"
    assert first.decode() == json.dumps(doc, sort_keys=True, indent=2) + "\n"
    assert [c["name"] for c in doc["clusters"]] == sorted(c["name"] for c in doc["clusters"])


# --- gateway mode ------------------------------------------------------------------------------


def test_gateway_listener_route_table_and_service_table() -> None:
    doc = gateway_doc()
    doc["proxy"]["ports"] = {8080: 18080}
    snap = compiled(doc)
    assert snap["listeners"] == [
        {
            "name": "gateway/edge/8080",
            "address": "127.0.0.1:18080",
            "protocol": "http",
            "routeTable": "gateway/edge/8080",
        }
    ]
    (host,) = snap["routeTables"]["gateway/edge/8080"]["virtualHosts"]
    assert host["name"] == "edge" and host["domains"] == ["*"]
    assert host["routes"] == [
        {
            "name": "gateway/edge/all",
            "match": {"path": {"kind": "prefix", "value": "/"}},
            "action": {"routeTable": "service/svc.local", "rewrite": {"host": "svc.local"}},
        }
    ]
    assert routes_of(snap, "service/svc.local")[0]["name"] == "r/default"
    assert [c["name"] for c in snap["clusters"]] == ["v1"]
    assert listener_names(from_dict(doc)) == {"gateway/edge/8080": 8080}


@pytest.mark.parametrize(
    ("match", "rewrite", "expected"),
    [
        ({"prefix": "/shop/"}, None, {"prefix": "/", "host": "svc.local"}),
        (
            {"prefix": "/shop/"},
            {"prefix": {"value": "/api/"}},
            {"prefix": "/api/", "host": "svc.local"},
        ),
        ({"prefix": "/shop/"}, {"prefix": {"defaultPrefix": "DISABLED"}}, {"host": "svc.local"}),
        ({"prefix": "/"}, None, {"host": "svc.local"}),
        ({"path": {"exact": "/a"}}, None, {"host": "svc.local"}),
        (
            {"path": {"regex": "/a.*"}},
            {"path": {"exact": "/b"}},
            {"path": "/b", "host": "svc.local"},
        ),
        ({"prefix": "/x/"}, {"hostname": {"defaultTargetHostname": "DISABLED"}}, {"prefix": "/"}),
        (
            {"prefix": "/x/"},
            {"hostname": {"defaultTargetHostname": "ENABLED"}},
            {"prefix": "/", "host": "svc.local"},
        ),
    ],
)
def test_gateway_default_rewrites(
    match: dict[str, Any], rewrite: dict[str, Any] | None, expected: dict[str, str]
) -> None:
    doc = gateway_doc()
    doc["resources"][1] = gateway_route("all", "svc.local", match, rewrite=rewrite)
    (r,) = routes_of(compiled(doc), "gateway/edge/8080")
    assert r["action"].get("rewrite") == expected


def test_gateway_route_order_and_hostname_match() -> None:
    doc = gateway_doc()
    doc["resources"][1:2] = [
        gateway_route("root", "svc.local", {"prefix": "/"}),
        gateway_route("long", "svc.local", {"prefix": "/chapter/"}),
        gateway_route("b-short", "svc.local", {"prefix": "/ch"}),
        gateway_route("a-short", "svc.local", {"prefix": "/ch"}),
        gateway_route(
            "exact",
            "svc.local",
            {"path": {"exact": "/x"}, "hostname": {"exact": "shop.example.com"}},
        ),
        gateway_route(
            "first",
            "svc.local",
            {"prefix": "/", "hostname": {"suffix": ".example.com"}},
            priority=5,
        ),
        gateway_route("zero", "svc.local", {"prefix": "/z"}, priority=0),
    ]
    routes = routes_of(compiled(doc), "gateway/edge/8080")
    assert [r["name"].rsplit("/", 1)[1] for r in routes] == [
        "zero",
        "first",
        "exact",
        "long",
        "a-short",
        "b-short",
        "root",
    ]
    assert routes[1]["match"]["hostname"] == {"kind": "suffix", "value": ".example.com"}
    assert routes[2]["match"] == {
        "path": {"kind": "exact", "value": "/x"},
        "hostname": {"kind": "exact", "value": "shop.example.com"},
    }


def test_gateway_multiple_listeners_and_target_ports() -> None:
    doc = gateway_doc()
    find(doc, "VirtualGateway", "edge")["spec"]["listeners"].append(
        {"portMapping": {"port": 9090, "protocol": "http"}}
    )
    find(doc, "VirtualRouter", "r")["spec"]["listeners"].append(
        {"portMapping": {"port": 3333, "protocol": "http"}}
    )
    find(doc, "Route", "default")["spec"]["httpRoute"]["match"]["port"] = 8080
    doc["resources"] += [
        route("other", "r", http_route("/", [("v2", 1)], match={"port": 3333})),
        node("v2"),
    ]
    doc["resources"][1] = gateway_route("all", "svc.local", {"prefix": "/", "port": 8080})
    route_9090 = gateway_route("nine", "svc.local", {"prefix": "/"})
    route_9090["spec"]["httpRoute"]["action"]["target"]["port"] = 3333
    find(doc, "GatewayRoute", "all")["spec"]["httpRoute"]["action"]["target"]["port"] = 8080
    doc["resources"].append(route_9090)
    doc["proxy"]["ports"] = {9090: 0}
    snap = compiled(doc)
    assert [(lst["name"], lst["address"]) for lst in snap["listeners"]] == [
        ("gateway/edge/8080", "127.0.0.1:8080"),
        ("gateway/edge/9090", "127.0.0.1:0"),
    ]
    on_8080 = routes_of(snap, "gateway/edge/8080")
    on_9090 = routes_of(snap, "gateway/edge/9090")
    assert [(r["name"], r["action"]["routeTable"]) for r in on_8080] == [
        ("gateway/edge:8080/all", "service/svc.local:8080"),
        ("gateway/edge:8080/nine", "service/svc.local:3333"),
    ]
    assert [r["name"] for r in on_9090] == ["gateway/edge:9090/nine"]
    assert [r["name"] for r in routes_of(snap, "service/svc.local:8080")] == ["r:8080/default"]
    assert [r["name"] for r in routes_of(snap, "service/svc.local:3333")] == ["r:3333/other"]
    assert all("port" not in r["match"] for r in on_8080 + on_9090)


def test_gateway_grpc_route() -> None:
    doc = gateway_doc()
    find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    doc["resources"][1] = gateway_route(
        "g",
        "svc.local",
        {"serviceName": "pkg.Color", "metadata": [{"name": "X-Tenant"}]},
        rtype="grpcRoute",
    )
    find(doc, "VirtualRouter", "r")["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    find(doc, "VirtualNode", "v1")["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    body = http_route()
    body["match"] = {"serviceName": "pkg.Color", "methodName": "Get"}
    find(doc, "Route", "default")["spec"] = {"grpcRoute": body}
    snap = compiled(doc)
    (g,) = routes_of(snap, "gateway/edge/8080")
    assert g["match"] == {
        "path": {"kind": "prefix", "value": "/pkg.Color/"},
        "headers": [{"name": "x-tenant", "kind": "present", "invert": False}],
    }
    assert g["action"]["rewrite"] == {"host": "svc.local"}
    (r,) = routes_of(snap, "service/svc.local")
    assert r["match"] == {"path": {"kind": "exact", "value": "/pkg.Color/Get"}}
    assert cluster(snap, "v1")["protocol"] == "http2"


# --- service routes ----------------------------------------------------------------------------


def test_route_order_priorities_first_then_specificity_then_name() -> None:
    doc = gateway_doc()
    doc["resources"] = [r for r in doc["resources"] if r["kind"] != "Route"] + [
        route("catch", "r", http_route("/")),
        route("p100", "r", http_route("/"), priority=100),
        route("p1", "r", http_route("/z"), priority=1),
        route("regex", "r", {**http_route(), "match": {"path": {"regex": "/r.*"}}}),
        route("exact", "r", {**http_route(), "match": {"path": {"exact": "/e"}}}),
        route("long", "r", http_route("/api/v1/")),
        route("b", "r", http_route("/api/")),
        route("a", "r", http_route("/api/")),
        route("headers-only", "r", {**http_route(), "match": {"headers": [{"name": "x"}]}}),
    ]
    names = [r["name"] for r in routes_of(compiled(doc), "service/svc.local")]
    assert names == [
        "r/p1",
        "r/p100",
        "r/exact",
        "r/regex",
        "r/long",
        "r/a",
        "r/b",
        "r/catch",
        "r/headers-only",
    ]


def test_match_translation() -> None:
    doc = gateway_doc()
    find(doc, "Route", "default")["spec"]["httpRoute"]["match"] = {
        "prefix": "/api/",
        "method": "POST",
        "scheme": "https",
        "headers": [
            {"name": "X-User-Tier", "match": {"prefix": "beta"}},
            {"name": "x-debug", "invert": True},
            {"name": "x-n", "match": {"range": {"start": 1, "end": 100}}},
            {"name": "x-e", "invert": True, "match": {"exact": "no"}},
        ],
        "queryParameters": [{"name": "a", "match": {"exact": "1"}}, {"name": "b"}],
        "port": 8080,
    }
    (r,) = routes_of(compiled(doc), "service/svc.local")
    assert r["match"] == {
        "path": {"kind": "prefix", "value": "/api/"},
        "method": "POST",
        "scheme": "https",
        "headers": [
            {"name": "x-user-tier", "kind": "prefix", "value": "beta", "invert": False},
            {"name": "x-debug", "kind": "present", "invert": True},
            {"name": "x-n", "kind": "range", "start": 1, "end": 100, "invert": False},
            {"name": "x-e", "kind": "exact", "value": "no", "invert": True},
        ],
        "query": [{"name": "a", "exact": "1"}, {"name": "b"}],
    }


def test_default_retry_and_timeout() -> None:
    (r,) = routes_of(compiled(gateway_doc()), "service/svc.local")
    assert r["action"] == {
        "clusters": [{"cluster": "v1", "weight": 1}],
        "timeoutMs": 15000,
        "retry": DEFAULT_RETRY,
    }
    assert DEFAULT_RETRY == {
        "maxRetries": 2,
        "retryOn": ["connect-failure", "refused-stream", "retriable-status-codes", "reset"],
        "retriableStatusCodes": [503],
        "grpcRetryOn": ["unavailable"],
    }


def test_retry_policy_and_timeouts_translation() -> None:
    doc = gateway_doc()
    body = find(doc, "Route", "default")["spec"]["httpRoute"]
    body["retryPolicy"] = {
        "maxRetries": 4,
        "perRetryTimeout": {"unit": "s", "value": 2},
        "httpRetryEvents": ["server-error", "gateway-error", "client-error", "stream-error"],
        "tcpRetryEvents": ["connection-error"],
    }
    body["timeout"] = {"perRequest": {"unit": "ms", "value": 0}, "idle": {"unit": "s", "value": 60}}
    (r,) = routes_of(compiled(doc), "service/svc.local")
    assert r["action"]["timeoutMs"] == 0 and r["action"]["idleTimeoutMs"] == 60000
    assert r["action"]["retry"] == {
        "maxRetries": 4,
        "perTryTimeoutMs": 2000,
        "retryOn": ["5xx", "gateway-error", "retriable-4xx", "refused-stream", "connect-failure"],
    }


def test_grpc_retry_events() -> None:
    doc = gateway_doc()
    for kind, name in (("VirtualRouter", "r"), ("VirtualNode", "v1")):
        find(doc, kind, name)["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    body = http_route()
    body["match"] = {"serviceName": "pkg.S"}
    body["retryPolicy"] = {
        "maxRetries": 1,
        "perRetryTimeout": {"unit": "ms", "value": 250},
        "grpcRetryEvents": ["cancelled", "unavailable"],
    }
    find(doc, "Route", "default")["spec"] = {"grpcRoute": body}
    find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    doc["resources"][1] = gateway_route(
        "all", "svc.local", {"serviceName": "pkg.S"}, rtype="grpcRoute"
    )
    (r,) = routes_of(compiled(doc), "service/svc.local")
    assert r["action"]["retry"] == {
        "maxRetries": 1,
        "perTryTimeoutMs": 250,
        "retryOn": [],
        "grpcRetryOn": ["cancelled", "unavailable"],
    }


def test_node_provider_gets_one_default_route() -> None:
    doc = gateway_doc()
    find(doc, "VirtualService", "svc.local")["spec"] = {
        "provider": {"virtualNode": {"virtualNodeName": "v1"}}
    }
    snap = compiled(doc)
    assert routes_of(snap, "service/svc.local") == [
        {
            "name": "service/svc.local/default",
            "match": {},
            "action": {
                "clusters": [{"cluster": "v1", "weight": 1}],
                "timeoutMs": 15000,
                "retry": DEFAULT_RETRY,
            },
        }
    ]


def test_router_shared_by_two_services_keeps_route_names_unique() -> None:
    doc = gateway_doc()
    doc["resources"] += [
        service("alias.local", router="r"),
        gateway_route("alias", "alias.local", {"prefix": "/a/"}),
    ]
    snap = compiled(doc)
    assert routes_of(snap, "service/svc.local")[0]["name"] == "service/svc.local/r/default"
    assert routes_of(snap, "service/alias.local")[0]["name"] == "service/alias.local/r/default"


def test_service_without_provider_compiles_to_an_empty_table() -> None:
    doc = gateway_doc()
    find(doc, "VirtualService", "svc.local")["spec"] = {}
    snap = compiled(doc)
    assert routes_of(snap, "service/svc.local") == []


# --- clusters ----------------------------------------------------------------------------------


def test_clusters_from_nodes() -> None:
    doc = gateway_doc()
    v1 = find(doc, "VirtualNode", "v1")
    v1["spec"]["listeners"][0]["connectionPool"] = {
        "http": {"maxConnections": 10, "maxPendingRequests": 5}
    }
    v1["spec"]["serviceDiscovery"]["static"]["endpoints"] = [
        "127.0.0.1",
        "127.0.0.2:9000",
        {"address": "::1", "weight": 3},
        {"address": "127.0.0.3", "port": 1, "weight": 2},
    ]
    v1["spec"]["loadBalancing"] = {"activeRequestBias": 0.5}
    c = cluster(compiled(doc), "v1")
    assert c == {
        "name": "v1",
        "protocol": "http1",
        "lb": "least_request",
        "activeRequestBias": 0.5,
        "endpoints": [
            {"address": "127.0.0.1:8080", "weight": 1},
            {"address": "127.0.0.2:9000", "weight": 1},
            {"address": "[::1]:8080", "weight": 3},
            {"address": "127.0.0.3:1", "weight": 2},
        ],
        "connectTimeoutMs": 5000,
        "circuitBreakers": {
            "maxConnections": 10,
            "maxPendingRequests": 5,
            "maxRequests": 2147483647,
            "maxRetries": 2147483647,
        },
    }


@pytest.mark.parametrize(
    ("protocol", "pool", "expected_protocol", "limits"),
    [
        ("http2", {"http2": {"maxRequests": 7}}, "http2", {"maxRequests": 7}),
        ("grpc", {"grpc": {"maxRequests": 8}}, "http2", {"maxRequests": 8}),
        ("tcp", {"tcp": {"maxConnections": 9}}, "tcp", {"maxConnections": 9}),
    ],
)
def test_cluster_protocol_and_circuit_breakers(
    protocol: str, pool: dict[str, Any], expected_protocol: str, limits: dict[str, int]
) -> None:
    doc = sidecar_doc()
    doc["resources"] += [
        service("x.local", node_name="x"),
        node("x", 7000, protocol, connectionPool=None),
    ]
    find(doc, "VirtualNode", "x")["spec"]["listeners"][0]["connectionPool"] = pool
    del find(doc, "VirtualNode", "x")["spec"]["connectionPool"]
    find(doc, "VirtualNode", "web")["spec"]["backends"].append(
        {"virtualService": {"virtualServiceName": "x.local"}}
    )
    c = cluster(compiled(doc), "x")
    assert c["protocol"] == expected_protocol
    assert {k: v for k, v in c["circuitBreakers"].items() if v != 2147483647} == limits


def test_multi_listener_node_clusters_are_named_by_port() -> None:
    doc = gateway_doc()
    find(doc, "VirtualNode", "v1")["spec"]["listeners"].append(
        {"portMapping": {"port": 9090, "protocol": "http"}}
    )
    targets = find(doc, "Route", "default")["spec"]["httpRoute"]["action"]["weightedTargets"]
    targets[0]["port"] = 9090
    snap = compiled(doc)
    assert [c["name"] for c in snap["clusters"]] == ["v1:9090"]
    assert cluster(snap, "v1:9090")["endpoints"] == [{"address": "127.0.0.1:9001", "weight": 1}]


def test_load_balancing_extension() -> None:
    doc = gateway_doc()
    find(doc, "VirtualNode", "v1")["spec"]["loadBalancing"] = {"policy": "random"}
    c = cluster(compiled(doc), "v1")
    assert c["lb"] == "random" and "activeRequestBias" not in c


def test_dns_discovery_targets_and_resolved_endpoints() -> None:
    doc = gateway_doc()
    doc["resources"].append(
        {
            "kind": "Mesh",
            "name": "demo",
            "spec": {"serviceDiscovery": {"ipPreference": "IPv4_ONLY"}},
        }
    )
    find(doc, "VirtualNode", "v1")["spec"]["serviceDiscovery"] = {
        "dns": {"hostname": "v1.apps.local", "responseType": "ENDPOINTS"}
    }
    doc["resources"] += [
        node("v2"),
        service("two.local", node_name="v2"),
        gateway_route("two", "two.local", {"prefix": "/2/"}),
    ]
    find(doc, "VirtualNode", "v2")["spec"]["serviceDiscovery"] = {
        "dns": {"hostname": "v2.apps.local", "ipPreference": "IPv6_ONLY"}
    }
    cfg = from_dict(doc)
    assert sorted(dns_targets(cfg)) == [
        DnsTarget("v1", "v1.apps.local", 8080, "ENDPOINTS", "IPv4_ONLY"),
        DnsTarget("v2", "v2.apps.local", 8080, "LOADBALANCER", "IPv6_ONLY"),
    ]
    snap = compiled(
        cfg,
        endpoints={
            "v1": [("10.0.0.2:8080", 1), ("10.0.0.1:8080", 2)],
            "ghost": [("10.9.9.9:1", 1)],
        },
    )
    assert cluster(snap, "v1")["endpoints"] == [
        {"address": "10.0.0.1:8080", "weight": 2},
        {"address": "10.0.0.2:8080", "weight": 1},
    ]
    assert cluster(snap, "v2")["endpoints"] == []
    with pytest.raises(ValueError, match="endpoints\\['v1'\\]"):
        compile_snapshot(cfg, version="v", endpoints={"v1": [("v1.apps.local:80", 1)]})


# --- sidecar mode ------------------------------------------------------------------------------


def test_sidecar_inbound_and_outbound() -> None:
    doc = sidecar_doc()
    web = find(doc, "VirtualNode", "web")["spec"]
    web["listeners"][0]["connectionPool"] = {"http": {"maxConnections": 3}}
    web["listeners"][0]["timeout"] = {
        "http": {"perRequest": {"unit": "s", "value": 30}, "idle": {"unit": "s", "value": 5}}
    }
    snap = compiled(doc)
    assert snap["listeners"] == [
        {
            "name": "inbound/web/8080",
            "address": "127.0.0.1:8080",
            "protocol": "http",
            "routeTable": "inbound/web/8080",
        },
        {
            "name": "outbound/web",
            "address": "127.0.0.1:15001",
            "protocol": "http",
            "routeTable": "outbound/web",
        },
    ]
    assert routes_of(snap, "inbound/web/8080") == [
        {
            "name": "inbound/web/8080",
            "match": {},
            "action": {
                "clusters": [{"cluster": "local/web/8080", "weight": 1}],
                "timeoutMs": 30000,
                "idleTimeoutMs": 5000,
            },
        }
    ]
    local = cluster(snap, "local/web/8080")
    assert local["endpoints"] == [{"address": "127.0.0.1:9080", "weight": 1}]
    assert local["circuitBreakers"]["maxConnections"] == 3
    (host,) = snap["routeTables"]["outbound/web"]["virtualHosts"]
    assert host["name"] == "svc.local" and host["domains"] == ["svc.local", "svc.local:8080"]
    assert [r["name"] for r in host["routes"]] == ["outbound/r/default"]
    assert "service/svc.local" not in snap["routeTables"]
    assert sorted(c["name"] for c in snap["clusters"]) == ["local/web/8080", "v1"]
    assert listener_names(from_dict(doc)) == {"inbound/web/8080": 8080, "outbound/web": 15001}


def test_sidecar_app_mapping_ports_and_outbound_address() -> None:
    doc = sidecar_doc()
    find(doc, "VirtualNode", "web")["spec"]["listeners"].append(
        {
            "portMapping": {"port": 9000, "protocol": "tcp"},
            "timeout": {"tcp": {"idle": {"unit": "s", "value": 9}}},
        }
    )
    doc["proxy"].update(
        app={8080: "127.0.0.1:18080", 9000: "[::1]:19000"},
        ports={8080: 0, 9000: 29000},
        outbound="127.0.0.1:0",
        bind="0.0.0.0",
    )
    snap = compiled(doc)
    assert [(lst["name"], lst["address"]) for lst in snap["listeners"]] == [
        ("inbound/web/8080", "0.0.0.0:0"),
        ("inbound/web/9000", "0.0.0.0:29000"),
        ("outbound/web", "127.0.0.1:0"),
    ]
    tcp = snap["listeners"][1]
    assert tcp["protocol"] == "tcp" and tcp["idleTimeoutMs"] == 9000
    assert tcp["tcpClusters"] == [{"cluster": "local/web/9000", "weight": 1}]
    assert cluster(snap, "local/web/9000")["endpoints"] == [{"address": "[::1]:19000", "weight": 1}]
    assert cluster(snap, "local/web/9000")["protocol"] == "tcp"


def test_sidecar_tcp_and_grpc_backends() -> None:
    doc = sidecar_doc()
    find(doc, "VirtualNode", "web")["spec"]["backends"] += [
        {"virtualService": {"virtualServiceName": "db.local"}},
        {"virtualService": {"virtualServiceName": "pay.local"}},
    ]
    doc["resources"] += [
        service("db.local", router="dbr"),
        router("dbr", 5432, "tcp"),
        route(
            "primary",
            "dbr",
            {
                "action": {
                    "weightedTargets": [
                        {"virtualNode": "db1", "weight": 3},
                        {"virtualNode": "db2", "weight": 1},
                    ]
                },
                "timeout": {"idle": {"unit": "s", "value": 600}},
            },
            rtype="tcpRoute",
            priority=1,
        ),
        route(
            "fallback",
            "dbr",
            {"action": {"weightedTargets": [{"virtualNode": "db2", "weight": 1}]}},
            rtype="tcpRoute",
        ),
        node("db1", 5432, "tcp"),
        node("db2", 5432, "tcp"),
        service("pay.local", node_name="pay"),
        node("pay", 50051, "grpc"),
    ]
    doc["proxy"]["ports"] = {5432: 15432}
    snap = compiled(doc)
    tcp = snap["listeners"][-1]
    assert tcp == {
        "name": "outbound/web/tcp/5432",
        "address": "127.0.0.1:15432",
        "protocol": "tcp",
        "tcpClusters": [{"cluster": "db1", "weight": 3}, {"cluster": "db2", "weight": 1}],
        "idleTimeoutMs": 600000,
    }
    hosts = snap["routeTables"]["outbound/web"]["virtualHosts"]
    assert [h["name"] for h in hosts] == ["svc.local", "pay.local"]
    assert hosts[1]["domains"] == ["pay.local", "pay.local:50051"]
    assert hosts[1]["routes"][0]["name"] == "outbound/service/pay.local/default"
    assert hosts[1]["routes"][0]["action"]["retry"] == DEFAULT_RETRY
    assert cluster(snap, "pay")["protocol"] == "http2"
    assert listener_names(from_dict(doc))["outbound/web/tcp/5432"] == 5432


# --- TLS and outlier detection -----------------------------------------------------------------

FILE_CERT = {"file": {"certificateChain": "/certs/chain.pem", "privateKey": "/certs/key.pem"}}
SNAPSHOT_CERT = {"certificateChain": "/certs/chain.pem", "privateKey": "/certs/key.pem"}


def test_listener_tls_termination() -> None:
    doc = gateway_doc()
    find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]["tls"] = {
        "mode": "STRICT",
        "certificate": FILE_CERT,
        "validation": {
            "trust": {"file": {"certificateChain": "/certs/ca.pem"}},
            "subjectAlternativeNames": {"match": {"exact": ["client.local"]}},
        },
    }
    (listener,) = compiled(doc)["listeners"]
    assert listener["tls"] == {
        "mode": "strict",
        "certificates": [SNAPSHOT_CERT],
        "validation": {"trust": "/certs/ca.pem", "subjectAlternativeNames": ["client.local"]},
    }
    find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]["tls"] = {
        "mode": "DISABLED",
        "certificate": {"acm": {"certificateArn": "arn:x"}},
    }
    assert "tls" not in compiled(doc)["listeners"][0]


def test_inbound_listener_tls() -> None:
    doc = sidecar_doc()
    find(doc, "VirtualNode", "web")["spec"]["listeners"][0]["tls"] = {
        "mode": "PERMISSIVE",
        "certificate": FILE_CERT,
    }
    inbound = compiled(doc)["listeners"][0]
    assert inbound["tls"] == {"mode": "permissive", "certificates": [SNAPSHOT_CERT]}


CLIENT_POLICY = {
    "tls": {
        "certificate": FILE_CERT,
        "validation": {
            "trust": {"file": {"certificateChain": "/certs/ca.pem"}},
            "subjectAlternativeNames": {"match": {"exact": ["v1.apps.local"]}},
        },
    }
}


@pytest.mark.parametrize(
    ("policy_change", "callee_mode", "expected"),
    [
        (
            {},
            None,
            {
                "serverName": "svc.local",  # static endpoints: the virtual service's name
                "certificate": SNAPSHOT_CERT,
                "validation": {
                    "trust": "/certs/ca.pem",
                    "subjectAlternativeNames": ["v1.apps.local"],
                },
            },
        ),
        ({"ports": [9999]}, None, None),  # the policy does not cover port 8080
        ({"enforce": False}, None, None),
        ({"enforce": False}, "STRICT", {"serverName": "svc.local"}),  # TLS, not verified
        ({"ports": [9999]}, "PERMISSIVE", {"serverName": "svc.local"}),
        ({"enforce": False}, "DISABLED", None),
    ],
)
def test_upstream_tls_follows_app_mesh_rules(
    policy_change: dict[str, Any], callee_mode: str | None, expected: dict[str, Any] | None
) -> None:
    doc = gateway_doc()
    policy = copy.deepcopy(CLIENT_POLICY)
    policy["tls"].update(policy_change)
    find(doc, "VirtualGateway", "edge")["spec"]["backendDefaults"] = {"clientPolicy": policy}
    if callee_mode:
        find(doc, "VirtualNode", "v1")["spec"]["listeners"][0]["tls"] = {
            "mode": callee_mode,
            "certificate": {"acm": {"certificateArn": "arn:aws:acm:x"}},
        }
    assert cluster(compiled(doc), "v1").get("tls") == expected


def test_upstream_server_name_is_the_discovery_name() -> None:
    doc = gateway_doc()
    find(doc, "VirtualGateway", "edge")["spec"]["backendDefaults"] = {"clientPolicy": CLIENT_POLICY}
    v1 = find(doc, "VirtualNode", "v1")["spec"]
    v1["serviceDiscovery"] = {"dns": {"hostname": "v1.svc.cluster.local"}}
    assert cluster(compiled(doc), "v1")["tls"]["serverName"] == "v1.svc.cluster.local"
    v1["serviceDiscovery"] = {
        "awsCloudMap": {"namespaceName": "apps.local", "serviceName": "color"}
    }
    assert cluster(compiled(doc), "v1")["tls"]["serverName"] == "color.apps.local"
    v1["serviceDiscovery"] = {"static": {"endpoints": ["[::1]:9000"]}}
    assert cluster(compiled(doc), "v1")["tls"]["serverName"] == "svc.local"  # the service
    find(doc, "Route", "default")["spec"]["httpRoute"]["action"]["weightedTargets"][0][
        "virtualNode"
    ] = "v_1"
    find(doc, "VirtualNode", "v1")["name"] = "v_1"
    for r in doc["resources"]:  # neither the service nor the node is a host name: the IP
        if r["kind"] == "VirtualService":
            r["name"] = "svc_local"
        if r["kind"] == "GatewayRoute":
            r["spec"]["httpRoute"]["action"]["target"]["virtualService"]["virtualServiceName"] = (
                "svc_local"
            )
    assert cluster(compiled(doc), "v_1")["tls"]["serverName"] == "::1"


def test_sidecar_backend_policy_overrides_backend_defaults() -> None:
    doc = sidecar_doc()
    web = find(doc, "VirtualNode", "web")["spec"]
    web["backendDefaults"] = {"clientPolicy": {"tls": {**CLIENT_POLICY["tls"], "ports": [1]}}}
    assert "tls" not in cluster(compiled(doc), "v1")
    web["backends"][0]["virtualService"]["clientPolicy"] = CLIENT_POLICY
    assert cluster(compiled(doc), "v1")["tls"]["validation"]["trust"] == "/certs/ca.pem"


def test_outlier_detection_thresholds_go_to_the_callers_cluster() -> None:
    doc = gateway_doc()
    find(doc, "VirtualNode", "v1")["spec"]["listeners"][0]["outlierDetection"] = {
        "maxServerErrors": 5,
        "interval": {"unit": "s", "value": 10},
        "baseEjectionDuration": {"unit": "s", "value": 30},
        "maxEjectionPercent": 50,
    }
    assert cluster(compiled(doc), "v1")["outlierDetection"] == {"consecutive5xx": 5}


def test_proxy_request_headers_timeout_and_backlog_reach_every_listener() -> None:
    plain = compiled(gateway_doc())
    assert all("requestHeadersTimeoutMs" not in lst and "backlog" not in lst
               for lst in plain["listeners"])  # the core's defaults: 10 s, 1024
    doc = gateway_doc()
    doc["proxy"].update(requestHeadersTimeoutMs=2500, backlog=4096)
    for lst in compiled(doc)["listeners"]:
        assert (lst["requestHeadersTimeoutMs"], lst["backlog"]) == (2500, 4096)
    side = sidecar_doc()
    side["proxy"]["backlog"] = 64
    assert {lst["backlog"] for lst in compiled(side)["listeners"]} == {64}


@pytest.mark.parametrize(
    "endpoints",
    [
        ["10.0.0.1:80", "10.0.0.2:8080", "255.255.255.255:65535", "0.0.0.0:1"],  # the fast path
        ["10.0.0.1:80", "10.0.0.2"],  # a bare IP takes the listener port
        ["10.0.0.1:080", "10.0.0.2:80"],  # a port with a leading zero is normalized
        ["[::1]:80", "10.0.0.2:80"],  # IPv6
        ["10.0.0.1:80", {"address": "10.0.0.2", "port": 81, "weight": 3}],
    ],
)
def test_the_compact_document_equals_the_pretty_one(endpoints: list[Any]) -> None:
    """`Proxy` serializes `compile_document` with `snapshot_json` (compact, endpoint lists of
    canonical addresses joined rather than encoded); it must say what `compile_snapshot` says."""
    from meshplane.config.compile import compile_document, snapshot_json

    doc = gateway_doc()
    doc["resources"] = [r for r in doc["resources"] if r["name"] != "v1"] + [node("v1", endpoints=endpoints)]
    cfg = from_dict(doc)
    document = compile_document(cfg).document
    assert "version" not in document
    compact = json.loads(snapshot_json(document))
    pretty = json.loads(compile_snapshot(cfg, version="v"))
    del pretty["version"]
    assert compact == pretty
    # The document itself still holds the endpoints as objects (the admin API's config_dump).
    assert [e["address"] for e in cluster(document, "v1")["endpoints"]] == [
        e["address"] for e in cluster(pretty, "v1")["endpoints"]
    ]


def test_the_canonical_check_covers_every_step_of_a_long_list() -> None:
    """The addresses are checked a step at a time: a bad one in a later step still counts."""
    from meshplane.config.compile import _CANONICAL_STEP, _canonical

    good = [f"10.0.{i >> 8 & 255}.{i & 255}:80" for i in range(_CANONICAL_STEP * 2 + 5)]
    assert _canonical(good)
    assert _canonical(good[: _CANONICAL_STEP + 1]) and _canonical(good[:1])
    assert not _canonical([])
    for bad in ("10.0.0.1:080", "10.0.0.1", "[::1]:80", "10.0.0.1:80\n10.0.0.2:80", 7):
        for at in (0, _CANONICAL_STEP - 1, _CANONICAL_STEP, len(good) - 1):
            addresses: list[Any] = list(good)
            addresses[at] = bad
            assert not _canonical(addresses), (bad, at)


def test_the_canonical_check_remembers_only_canonical_addresses(monkeypatch: Any) -> None:
    """Addresses found canonical are remembered; an unknown or bad one beside them is still
    checked, and the memory is emptied before it passes its bound."""
    from meshplane.config import compile as compile_module
    from meshplane.config.compile import _canonical

    known: set[str] = set()
    monkeypatch.setattr(compile_module, "_known_canonical", known)
    monkeypatch.setattr(compile_module, "_KNOWN_LIMIT", 8)
    good = [f"10.1.0.{i}:80" for i in range(6)]
    assert _canonical(good) and known == set(good)
    for bad in ("10.1.0.256:80", "010.1.0.1:80", {"address": "10.1.0.1:80"}, 7):
        assert not _canonical([*good, bad]) and not _canonical([bad, *good]), bad
        assert known == set(good)
    more = [f"10.2.0.{i}:80" for i in range(4)]
    assert _canonical(good + more) and known == set(more)  # 6 + 4 > 8: emptied first
    assert _canonical(good) and known == set(good)


def test_the_compact_document_of_discovered_endpoints_equals_the_pretty_one() -> None:
    from meshplane.config.compile import compile_document, snapshot_json

    doc = gateway_doc()
    v1 = node("v1")
    v1["spec"]["serviceDiscovery"] = {"dns": {"hostname": "v1.apps.local"}}
    doc["resources"] = [r for r in doc["resources"] if r["name"] != "v1"] + [v1]
    cfg = from_dict(doc)
    for found in ([("10.0.0.2:80", 1), ("10.0.0.1:80", 2)], [("[::1]:80", 1)], []):
        endpoints = {"v1": found}
        compact = json.loads(snapshot_json(compile_document(cfg, endpoints).document))
        pretty = json.loads(compile_snapshot(cfg, version="v", endpoints=endpoints))
        del pretty["version"]
        assert compact == pretty
