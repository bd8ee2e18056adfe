"""Certificates in the admin API: `/certs` (JSON, like Envoy's) lists every certificate in use
with its subject, SANs and expiry; `/stats` exports seconds until expiry per listener and
cluster, the TLS counters and the reload counts."""

from __future__ import annotations

import datetime as dt
import time

import httpx
from meshplane import Proxy
from meshplane.admin.prometheus import parse

from ..dataplane.support import H1Upstream
from .support import GATEWAY_PORT, Issued, Pki, client_policy, gateway_config, listener_tls

LISTENER = f"gateway/edge/{GATEWAY_PORT}"


async def admin_get(proxy: Proxy, path: str) -> httpx.Response:
    assert proxy.admin_address is not None
    host, port = proxy.admin_address
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        return await client.get(f"http://{host}:{port}{path}")


async def test_certs_and_expiry_metrics(pki: Pki, echo: H1Upstream) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=2, hours=1)
    server = pki.issue("edge", "127.0.0.1", "localhost", not_after=soon)
    client_cert = pki.issue("edge-client", "edge.shop.local")
    tls = listener_tls("STRICT", server, trust=pki.ca_path)
    config = gateway_config(echo.address, tls, policy=client_policy(pki.ca_path, cert=client_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        async with httpx.AsyncClient(verify=pki.client_context(client_cert), trust_env=False,
                                     timeout=5) as client:
            assert (await client.get(f"https://127.0.0.1:{proxy.port(GATEWAY_PORT)}/")).status_code in (
                502, 503)  # the plaintext echo upstream cannot speak TLS: counted below
        certs = (await admin_get(proxy, "/certs")).json()
        before = time.time()
        stats_text = (await admin_get(proxy, "/stats")).text
        after = time.time()
        listed = (await admin_get(proxy, "/")).text
    assert "/certs" in listed

    listener = certs["listeners"][LISTENER]
    assert listener["mode"] == "strict"
    chain, ca = listener["certificates"]
    assert chain["kind"] == "cert_chain" and chain["path"] == str(server.chain)
    assert {"DNS:localhost", "IP:127.0.0.1"} <= set(chain["subject_alt_names"])
    assert "meshplane tests mesh-ca" not in chain["subject"]
    assert chain["not_after"] == int(soon.timestamp())
    assert chain["days_until_expiration"] == 2
    assert chain["expiration_time"] == soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ca["kind"] == "ca_cert" and ca["path"] == str(pki.ca_path)
    assert "meshplane tests mesh-ca" in ca["subject"]
    cluster_paths = {c["path"]: c["kind"] for c in certs["clusters"]["api"]["certificates"]}
    assert cluster_paths == {str(pki.ca_path): "ca_cert", str(client_cert.chain): "cert_chain"}
    assert certs["reload"]["last_error"] is None
    assert str(server.key) in certs["reload"]["files"]

    samples = parse(stats_text)
    expiry = samples[("meshplane_tls_certificate_expiry_seconds",
                      (("listener", LISTENER), ("path", str(server.chain))))]
    # not_after minus the moment /stats was answered (between `before` and `after`), in whole s.
    not_after = chain["not_after"]
    assert int(not_after - after) <= expiry <= int(not_after - before)
    assert ("meshplane_tls_certificate_expiry_seconds",
            (("cluster", "api"), ("path", str(client_cert.chain)))) in samples
    assert samples[("meshplane_listener_downstream_tls_handshakes_total", (("listener", LISTENER),))] == 1
    assert ("meshplane_listener_downstream_tls_handshake_error_total", (("listener", LISTENER),)) in samples
    assert samples[("meshplane_cluster_upstream_cx_tls_fail_total", (("cluster", "api"),))] >= 1
    assert samples[("meshplane_tls_reload_total", (("result", "failure"),))] == 0
    assert "# TYPE meshplane_tls_certificate_expiry_seconds gauge" in stats_text


async def test_no_tls_no_tls_metrics(echo: H1Upstream, server_cert: Issued) -> None:
    async with Proxy(gateway_config(echo.address), drain_ms=200) as proxy:
        certs = (await admin_get(proxy, "/certs")).json()
        stats_text = (await admin_get(proxy, "/stats")).text
    assert certs["listeners"] == {} and certs["clusters"] == {}
    assert "meshplane_tls_" not in stats_text
