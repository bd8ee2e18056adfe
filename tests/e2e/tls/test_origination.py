"""TLS origination towards upstreams from App Mesh client policies, and App Mesh's negotiation
rules (spec §5): a client policy verifies the upstream (its trust; its SANs, else the callee's
discovery name, for static endpoints the virtual service name), with a client certificate for
mutual TLS; without a policy, a callee listener in STRICT or PERMISSIVE mode still gets TLS,
unverified. Pooled TLS connections are reused; a SAN mismatch is a 503 counted as
`cx_tls_fail`."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import trio
from meshplane import Proxy

from ..dataplane.support import H1Upstream
from .support import (
    GATEWAY_PORT,
    NODE_PORT,
    SERVICE,
    Issued,
    Pki,
    TlsUpstream,
    client_policy,
    gateway_config,
    listener_tls,
    sans_of,
    sidecar_config,
)

EDGE_ID = "spiffe://shop.local/ns/shop/sa/edge"


async def tls_upstream(
    nursery: trio.Nursery, pki: Pki, cert: Issued, *, require_client: bool = False
) -> tuple[TlsUpstream, list[str | None]]:
    """A TLS echo upstream presenting `cert`; also returns the SNI names it was asked for."""
    context = pki.server_context(cert, require_client=require_client)
    names: list[str | None] = []

    def sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = sni
    up = TlsUpstream("tls-app", context=context)
    await nursery.start(up.run)
    return up, names


async def get_many(port: int, n: int, path: str = "/") -> list[int]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        return [(await client.get(f"http://127.0.0.1:{port}{path}")).status_code for _ in range(n)]


def cluster_stats(proxy: Proxy) -> dict[str, Any]:
    return proxy.stats()["clusters"]["api"]  # type: ignore[no-any-return]


async def test_client_policy_verifies_the_upstream_and_reuses_connections(
    nursery: trio.Nursery, pki: Pki
) -> None:
    up, sni = await tls_upstream(nursery, pki, pki.issue("api", SERVICE))
    config = gateway_config(up.address, policy=client_policy(pki.ca_path))
    async with Proxy(config, drain_ms=200) as proxy:
        assert await get_many(proxy.port(GATEWAY_PORT), 5) == [200] * 5
        stats = cluster_stats(proxy)
    assert len(up.seen) == 5
    assert up.accepted == 1 and stats["cx_total"] == 1  # one pooled TLS connection, reused
    assert up.peer_certs == [None]  # no client certificate without one in the policy
    assert up.alpn == ["http/1.1"]
    assert sni == [SERVICE]  # the default SAN is also the SNI sent
    assert stats["cx_tls_fail"] == 0


async def test_mutual_tls_towards_the_upstream(nursery: trio.Nursery, pki: Pki) -> None:
    up, _ = await tls_upstream(nursery, pki, pki.issue("api", SERVICE), require_client=True)
    edge = pki.issue_spiffe("edge-client", EDGE_ID)
    with_cert = gateway_config(up.address, policy=client_policy(pki.ca_path, cert=edge))
    async with Proxy(with_cert, drain_ms=200) as proxy:
        assert await get_many(proxy.port(GATEWAY_PORT), 3) == [200] * 3
    assert [sans_of(der) for der in up.peer_certs] == [[EDGE_ID]]

    without_cert = gateway_config(up.address, policy=client_policy(pki.ca_path))
    async with Proxy(without_cert, drain_ms=200) as proxy:
        codes = await get_many(proxy.port(GATEWAY_PORT), 1)
    assert codes[0] in (502, 503)  # the upstream refused the handshake
    assert len(up.seen) == 3


async def test_san_mismatch_is_a_503_counted_as_a_tls_failure(
    nursery: trio.Nursery, pki: Pki, other_pki: Pki
) -> None:
    up, _ = await tls_upstream(nursery, pki, pki.issue("api", SERVICE))
    impostor, _ = await tls_upstream(nursery, other_pki, other_pki.issue("fake", SERVICE))
    cases = {
        "listed SAN missing": (up, client_policy(pki.ca_path, sans=["payments.shop.local"])),
        "untrusted CA": (impostor, client_policy(pki.ca_path)),
    }
    for name, (target, policy) in cases.items():
        async with Proxy(gateway_config(target.address, policy=policy), drain_ms=200) as proxy:
            codes = await get_many(proxy.port(GATEWAY_PORT), 2)
            stats = cluster_stats(proxy)
        assert codes == [503, 503], name
        assert stats["cx_tls_fail"] >= 2, (name, stats)
        assert stats["rq_5xx"] == 2, name
    assert up.seen == [] and impostor.seen == []


async def test_default_san_is_checked_when_none_are_listed(nursery: trio.Nursery, pki: Pki) -> None:
    up, _ = await tls_upstream(nursery, pki, pki.issue("api", "someone-else.shop.local"))
    async with Proxy(gateway_config(up.address, policy=client_policy(pki.ca_path)),
                     drain_ms=200) as proxy:
        assert await get_many(proxy.port(GATEWAY_PORT), 1) == [503]
        assert cluster_stats(proxy)["cx_tls_fail"] >= 1


async def test_strict_callee_without_client_policy_gets_tls_unverified(
    nursery: trio.Nursery, pki: Pki, other_pki: Pki
) -> None:
    # The upstream's certificate is from a CA nobody trusts and names nothing we asked for:
    # App Mesh still originates TLS (file certificate, no client policy) and does not verify.
    up, _ = await tls_upstream(nursery, other_pki, other_pki.issue("api", "unrelated.example"))
    node_tls = listener_tls("STRICT", pki.issue("node", SERVICE))
    cases: dict[str, dict[str, Any] | None] = {
        "no client policy": None,
        "a policy for other ports": client_policy(pki.ca_path, ports=[9999]),
        "a policy not enforced": client_policy(pki.ca_path, enforce=False),
    }
    for name, policy in cases.items():
        config = gateway_config(up.address, policy=policy, node_tls=node_tls)
        async with Proxy(config, drain_ms=200) as proxy:
            assert await get_many(proxy.port(GATEWAY_PORT), 2) == [200, 200], name
    assert len(up.peer_certs) == 3 and len(up.seen) == 6  # TLS every time


async def test_disabled_callee_without_policy_is_plaintext(pki: Pki, echo: H1Upstream) -> None:
    node_tls = listener_tls("DISABLED", pki.issue("node", SERVICE))
    async with Proxy(gateway_config(echo.address, node_tls=node_tls), drain_ms=200) as proxy:
        assert await get_many(proxy.port(GATEWAY_PORT), 1) == [200]
        assert "api" not in proxy.tls_info()["clusters"]


async def test_gateway_to_sidecar_mutual_tls(pki: Pki, echo: H1Upstream) -> None:
    """A mesh of two meshplane proxies: the gateway originates mTLS with a SPIFFE identity, the
    sidecar requires it (STRICT, SAN list) and hands the identity to its application."""
    sidecar_tls = listener_tls("STRICT", pki.issue("api-node", SERVICE), trust=pki.ca_path,
                               sans=[EDGE_ID])
    edge = pki.issue_spiffe("edge-client", EDGE_ID)
    async with Proxy(sidecar_config(echo.address, sidecar_tls), drain_ms=200) as sidecar:
        node_address = f"127.0.0.1:{sidecar.port(NODE_PORT)}"
        policy = client_policy(pki.ca_path, cert=edge)
        config = gateway_config(node_address, policy=policy, node_tls=sidecar_tls)
        async with Proxy(config, drain_ms=200) as gateway:
            assert await get_many(gateway.port(GATEWAY_PORT), 3, "/orders") == [200] * 3
        assert echo.seen[-1].header("x-forwarded-client-cert") == f"URI={EDGE_ID}"
        assert echo.seen[-1].target == "/orders"

        stranger = pki.issue_spiffe("stranger", "spiffe://shop.local/ns/shop/sa/stranger")
        policy = client_policy(pki.ca_path, cert=stranger)
        config = gateway_config(node_address, policy=policy, node_tls=sidecar_tls)
        async with Proxy(config, drain_ms=200) as gateway:
            codes = await get_many(gateway.port(GATEWAY_PORT), 1)
        assert codes[0] in (502, 503)  # the sidecar refused the identity
        inbound = sidecar.stats()["listeners"][f"inbound/api/{NODE_PORT}"]
        assert inbound["tls_handshake_error"] >= 1
    assert len(echo.seen) == 3
