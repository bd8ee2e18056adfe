"""A gateway listener holding several certificates (meshplane's `sniCertificates` extension):
the client's SNI chooses one (exact names, `*.` wildcards for one label), anything else gets
the listener's own `certificate`."""

from __future__ import annotations

import ssl

import httpx
import trio
from meshplane import Proxy

from ..dataplane.support import H1Upstream
from .support import (
    GATEWAY_PORT,
    Issued,
    Pki,
    gateway_config,
    handshake,
    listener_tls,
    run_tool,
    serial_of,
    tool,
)


def unchecked(pki: Pki) -> ssl.SSLContext:
    """Trusts the CA, but accepts any name: to see which certificate a name gets."""
    ctx = pki.client_context()
    ctx.check_hostname = False
    return ctx


async def test_sni_chooses_among_certificates(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    api = pki.issue("api", "api.example.com")
    shop = pki.issue("shop", "*.shop.example")
    # the api certificate comes through the SDS mapping, the others are files
    sds = {"secrets": {"api-cert": {"certificateChain": str(api.chain),
                                    "privateKey": str(api.key)}}}
    tls = listener_tls(
        "STRICT",
        server_cert,
        sniCertificates=[
            {"serverNames": ["api.example.com"], "certificate": {"sds": {"secretName": "api-cert"}}},
            {"serverNames": ["*.shop.example"], "certificate": shop.app_mesh()},
        ],
    )
    async with Proxy(gateway_config(echo.address, tls, sds=sds), drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        seen = {}
        for name in ("api.example.com", "API.Example.com", "cart.shop.example", "shop.example",
                     "other.example", None):
            hs = await handshake(port, unchecked(pki), server_hostname=name)
            seen[name] = serial_of(hs.peer_cert)
        assert seen == {
            "api.example.com": api.serial,
            "API.Example.com": api.serial,  # SNI is case-insensitive
            "cart.shop.example": shop.serial,
            "shop.example": server_cert.serial,  # "*." covers one label, not the apex
            "other.example": server_cert.serial,  # unknown name: the default
            None: server_cert.serial,  # no SNI (an IP address): the default
        }
        # a verifying client by name, with SNI, through httpx
        async with httpx.AsyncClient(verify=pki.client_context(), trust_env=False,
                                     timeout=5) as client:
            response = await client.get(
                f"https://127.0.0.1:{port}/sni", headers={"host": "api.example.com"},
                extensions={"sni_hostname": "api.example.com"},
            )
        assert response.status_code == 200
        certs = proxy.tls_info()["listeners"][f"gateway/edge/{GATEWAY_PORT}"]["certificates"]
        assert [c["path"] for c in certs] == [str(server_cert.chain), str(api.chain),
                                             str(shop.chain)]


async def test_curl_gets_the_certificate_of_the_name_it_asks_for(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    curl = tool("curl")
    api = pki.issue("api", "api.example.com")
    tls = listener_tls(
        "STRICT", server_cert,
        sniCertificates=[{"serverNames": ["api.example.com"], "certificate": api.app_mesh()}],
    )
    async with Proxy(gateway_config(echo.address, tls), drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        with trio.fail_after(20):
            run = await run_tool([curl, "-sS", "--max-time", "10", "--cacert", str(pki.ca_path),
                                  "--resolve", f"api.example.com:{port}:127.0.0.1", "-o",
                                  "/dev/null", "-w", "%{http_code}",
                                  f"https://api.example.com:{port}/"])
            assert (run.returncode, run.stdout) == (0, "200"), run.stderr
            # the default certificate does not carry the name: verification would fail
            run = await run_tool([curl, "-sS", "--max-time", "10", "--cacert", str(pki.ca_path),
                                  "--resolve", f"www.example.com:{port}:127.0.0.1",
                                  f"https://www.example.com:{port}/"])
            assert run.returncode == 60, run.stderr  # CURLE_PEER_FAILED_VERIFICATION
