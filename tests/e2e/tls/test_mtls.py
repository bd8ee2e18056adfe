"""Mutual TLS on listeners (App Mesh `validation`): a client without a certificate, with one from
another CA, or with a SAN not in the list is refused during the handshake, promptly; an
accepted client's SANs (SPIFFE URIs included) reach the upstream as `x-forwarded-client-cert`,
which a client can never set itself, and which routes can match."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from meshplane import Proxy

from ..dataplane.support import H1Upstream
from .support import (
    GATEWAY_PORT,
    SERVICE,
    Issued,
    Pki,
    gateway_config,
    listener_tls,
    run_tool,
)

LISTENER = f"gateway/edge/{GATEWAY_PORT}"
FRONTEND = "spiffe://shop.local/ns/shop/sa/frontend"
ALLOWED = [FRONTEND, "client.shop.local"]


def mtls(pki: Pki, server_cert: Issued, mode: str = "STRICT") -> dict[str, Any]:
    return listener_tls(mode, server_cert, trust=pki.ca_path, sans=ALLOWED)


@pytest.fixture(params=["no client certificate", "another CA", "SAN not listed"])
def refused_client(request: pytest.FixtureRequest, pki: Pki, other_pki: Pki) -> Issued | None:
    if request.param == "no client certificate":
        return None
    if request.param == "another CA":
        return other_pki.issue("stranger", "client.shop.local")  # a listed SAN, wrong CA
    return pki.issue("intruder", "intruder.shop.local")  # right CA, SAN not listed


async def test_refused_during_the_handshake(
    pki: Pki, server_cert: Issued, echo: H1Upstream, refused_client: Issued | None
) -> None:
    async with Proxy(gateway_config(echo.address, mtls(pki, server_cert)), drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        with trio.fail_after(5):  # a handshake failure, not a hang
            with pytest.raises(httpx.TransportError):
                async with httpx.AsyncClient(
                    verify=pki.client_context(refused_client), trust_env=False, timeout=5
                ) as client:
                    await client.get(f"https://127.0.0.1:{port}/")
        if tool_available("openssl"):
            args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                    str(pki.ca_path), "-servername", "localhost"]
            if refused_client is not None:
                args += ["-cert", str(refused_client.combined)]
            # TLS 1.2: the server checks the client's certificate before its Finished, so the
            # client's handshake itself fails. TLS 1.3: the client's side completes first, and
            # the server's alert arrives as the next record (-ign_eof: keep reading for it).
            for version in (["-tls1_2"], ["-tls1_3", "-ign_eof"]):
                run = await run_tool([*args, *version])
                assert run.returncode != 0, run.stdout
                assert "alert" in run.stderr, run.stderr  # the server's alert ended it
        assert echo.seen == []
        stats = proxy.stats()["listeners"][LISTENER]
        assert stats["tls_handshakes"] == 0
        assert stats["tls_handshake_error"] >= 1
        assert stats["rq_total"] == 0


def tool_available(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


async def test_spiffe_identity_accepted_and_forwarded(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    frontend = pki.issue_spiffe("frontend", FRONTEND)
    dns_client = pki.issue("client", "client.shop.local")
    async with Proxy(gateway_config(echo.address, mtls(pki, server_cert)), drain_ms=200) as proxy:
        url = f"https://127.0.0.1:{proxy.port(GATEWAY_PORT)}/who"
        async with httpx.AsyncClient(verify=pki.client_context(frontend), trust_env=False,
                                     timeout=5) as client:
            spoof = {"x-forwarded-client-cert": "URI=spiffe://shop.local/ns/shop/sa/admin"}
            response = await client.get(url, headers=spoof)
        assert response.status_code == 200
        assert echo.seen[-1].header_all("x-forwarded-client-cert") == [f"URI={FRONTEND}"]
        async with httpx.AsyncClient(verify=pki.client_context(dns_client), trust_env=False,
                                     timeout=5) as client:
            assert (await client.get(url)).status_code == 200
        assert echo.seen[-1].header_all("x-forwarded-client-cert") == ["DNS=client.shop.local"]
        if tool_available("curl"):
            run = await run_tool(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca_path),
                                  "--cert", str(frontend.combined), "-o", "/dev/null", "-w",
                                  "%{http_code}", url])
            assert (run.returncode, run.stdout) == (0, "200"), run.stderr
        stats = proxy.stats()["listeners"][LISTENER]
        assert stats["tls_handshake_error"] == 0


async def test_no_san_list_accepts_any_certificate_of_the_trusted_ca(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    anyone = pki.issue("anyone", "anyone.shop.local")
    tls = listener_tls("STRICT", server_cert, trust=pki.ca_path)  # App Mesh: SANs not checked
    async with Proxy(gateway_config(echo.address, tls), drain_ms=200) as proxy:
        async with httpx.AsyncClient(verify=pki.client_context(anyone), trust_env=False,
                                     timeout=5) as client:
            response = await client.get(f"https://127.0.0.1:{proxy.port(GATEWAY_PORT)}/")
        assert response.status_code == 200
        assert echo.seen[-1].header("x-forwarded-client-cert") == "DNS=anyone.shop.local"


async def test_plaintext_clients_cannot_forge_an_identity_upstream(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    tls = listener_tls("PERMISSIVE", server_cert, trust=pki.ca_path, sans=ALLOWED)
    async with Proxy(gateway_config(echo.address, tls), drain_ms=200) as proxy:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            forged = {"x-forwarded-client-cert": f"URI={FRONTEND}"}
            url = f"http://127.0.0.1:{proxy.port(GATEWAY_PORT)}/"
            assert (await client.get(url, headers=forged)).status_code == 200
    assert echo.seen[-1].header("x-forwarded-client-cert") is None


async def test_routes_match_the_verified_identity_and_plaintext_cannot_forge_it(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    admin_id = "spiffe://shop.local/ns/shop/sa/admin"
    route = {
        "kind": "GatewayRoute",
        "name": "admin-only",
        "virtualGatewayName": "edge",
        "spec": {
            "httpRoute": {
                "match": {
                    "prefix": "/admin",
                    "headers": [
                        {"name": "x-forwarded-client-cert", "match": {"exact": f"URI={admin_id}"}}
                    ],
                },
                "action": {"target": {"virtualService": {"virtualServiceName": SERVICE}}},
            }
        },
    }
    tls = listener_tls("PERMISSIVE", server_cert, trust=pki.ca_path,
                       sans=[admin_id, FRONTEND])
    admin = pki.issue_spiffe("admin", admin_id)
    frontend = pki.issue_spiffe("frontend", FRONTEND)
    async with Proxy(gateway_config(echo.address, tls, routes=[route]), drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        codes = {}
        for name, cert in (("admin", admin), ("frontend", frontend)):
            async with httpx.AsyncClient(verify=pki.client_context(cert), trust_env=False,
                                         timeout=5) as client:
                codes[name] = (await client.get(f"https://127.0.0.1:{port}/admin")).status_code
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:  # PERMISSIVE: plaintext
            forged = await client.get(f"http://127.0.0.1:{port}/admin",
                                      headers={"x-forwarded-client-cert": f"URI={admin_id}"})
            codes["plaintext forging the header"] = forged.status_code
    assert codes == {"admin": 200, "frontend": 404, "plaintext forging the header": 404}
    assert len(echo.seen) == 1
