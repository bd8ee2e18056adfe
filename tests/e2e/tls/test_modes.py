"""Listener TLS modes through `meshplane.Proxy` with App Mesh configs, checked with real clients:
httpx (Python ssl), an HTTP/2 client over TLS with ALPN (httpx + h2), curl and openssl s_client.

STRICT refuses plaintext, PERMISSIVE serves both kinds of client on one port, DISABLED is
plaintext only; the defaults are TLS 1.2/1.3 only, ALPN h2 + http/1.1, resumption on.
"""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
import trio
from meshplane import Proxy

from ..dataplane.support import LOCALHOST, H1Upstream
from .support import (
    GATEWAY_PORT,
    NODE_PORT,
    Issued,
    Pki,
    gateway_config,
    handshake,
    listener_tls,
    run_tool,
    sidecar_config,
    tool,
)

LISTENER = f"gateway/edge/{GATEWAY_PORT}"


def listener_stats(proxy: Proxy, name: str = LISTENER) -> dict[str, int]:
    return proxy.stats()["listeners"][name]  # type: ignore[no-any-return]


def tls_client(pki: Pki, cert: Issued | None = None, *, http2: bool = False) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=pki.client_context(cert), trust_env=False, timeout=5, http2=http2,
        http1=not http2,
    )


def plain_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=5)


async def test_strict_serves_tls_and_refuses_plaintext(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        async with tls_client(pki) as client:
            response = await client.get(f"https://127.0.0.1:{port}/hello")
        assert response.status_code == 200
        assert response.http_version == "HTTP/1.1"
        assert echo.seen[-1].header("x-forwarded-proto") == "https"
        assert echo.seen[-1].header("x-forwarded-client-cert") is None  # no client certificate

        with trio.fail_after(5):  # refused at once, not left hanging
            with pytest.raises(httpx.TransportError):
                async with plain_client() as client:
                    await client.get(f"http://127.0.0.1:{port}/hello")
        assert len(echo.seen) == 1  # the plaintext request never reached the upstream
        stats = listener_stats(proxy)
        assert stats["tls_handshakes"] == 1
        assert stats["tls_handshake_error"] == 1
        assert stats["plaintext_cx"] == 0


async def test_permissive_serves_tls_and_plaintext_clients_on_one_port(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    config = gateway_config(echo.address, listener_tls("PERMISSIVE", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        codes: dict[str, list[int]] = {"https": [], "http": []}

        async def requests(scheme: str, client: httpx.AsyncClient) -> None:
            async with client:
                for i in range(10):
                    r = await client.get(f"{scheme}://127.0.0.1:{port}/{scheme}/{i}")
                    codes[scheme].append(r.status_code)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:  # both kinds at the same time
                for _ in range(2):
                    nursery.start_soon(requests, "https", tls_client(pki))
                    nursery.start_soon(requests, "http", plain_client())
        assert codes == {"https": [200] * 20, "http": [200] * 20}
        protos = {s.target.split("/")[1]: s.header("x-forwarded-proto") for s in echo.seen}
        assert protos == {"https": "https", "http": "http"}
        stats = listener_stats(proxy)
        assert stats["tls_handshakes"] == 2  # keep-alive: one connection per client
        assert stats["plaintext_cx"] == 2
        assert stats["tls_handshake_error"] == 0


async def test_disabled_is_plaintext_only(pki: Pki, server_cert: Issued, echo: H1Upstream) -> None:
    config = gateway_config(echo.address, listener_tls("DISABLED", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        async with plain_client() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
        with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
            await handshake(port, pki.client_context())
        assert proxy.tls_info()["listeners"] == {}
        assert listener_stats(proxy)["tls_handshakes"] == 0


async def test_sidecar_inbound_listener_terminates_tls(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    async with Proxy(sidecar_config(echo.address, listener_tls("STRICT", server_cert)),
                     drain_ms=200) as proxy:
        port = proxy.port(NODE_PORT)
        async with tls_client(pki) as client:
            response = await client.get(f"https://127.0.0.1:{port}/inbound")
        assert response.status_code == 200
        assert echo.seen[-1].target == "/inbound"
        assert listener_stats(proxy, f"inbound/api/{NODE_PORT}")["tls_handshakes"] == 1


async def test_http2_over_tls_negotiated_by_alpn(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        results: list[httpx.Response] = []
        async with tls_client(pki, http2=True) as client:
            await client.get(f"https://127.0.0.1:{port}/warm")  # one connection first

            async def get(i: int) -> None:
                results.append(await client.get(f"https://127.0.0.1:{port}/h2/{i}"))

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for i in range(20):
                        nursery.start_soon(get, i)
        assert [r.status_code for r in results] == [200] * 20
        assert {r.http_version for r in results} == {"HTTP/2"}
        stats = listener_stats(proxy)
        assert stats["cx_total"] == 1  # 21 streams multiplexed on one TLS connection
        assert stats["tls_handshakes"] == 1
        assert (await handshake(port, pki.client_context(alpn=("h2", "http/1.1")))).alpn == "h2"


async def test_curl_over_tls(pki: Pki, server_cert: Issued, echo: H1Upstream) -> None:
    curl = tool("curl")
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        url = f"https://127.0.0.1:{proxy.port(GATEWAY_PORT)}/curl"
        common = [curl, "-sS", "--max-time", "10", "--cacert", str(pki.ca_path), "-o",
                  "/dev/null", "-w", "%{http_code} %{http_version}"]
        h1 = await run_tool([*common, "--http1.1", url])
        assert (h1.returncode, h1.stdout) == (0, "200 1.1"), h1.stderr
        h2 = await run_tool([*common, "--http2", url])
        assert (h2.returncode, h2.stdout) == (0, "200 2"), h2.stderr
        # by name, with SNI: the certificate also carries localhost
        named = await run_tool([*common, "--resolve", f"localhost:{proxy.port(GATEWAY_PORT)}:127.0.0.1",
                                url.replace("127.0.0.1", "localhost")])
        assert (named.returncode, named.stdout) == (0, "200 2"), named.stderr
        plain = await run_tool([curl, "-sS", "--max-time", "10", url.replace("https", "http")])
        # Refused (empty reply or reset), not a hang: curl's exit 28 would be its --max-time.
        assert plain.returncode not in (0, 28), (plain.returncode, plain.stderr)


async def test_openssl_sees_versions_and_alpn(pki: Pki, server_cert: Issued, echo: H1Upstream) -> None:
    openssl = tool("openssl")
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        base = [openssl, "s_client", "-connect", f"127.0.0.1:{proxy.port(GATEWAY_PORT)}",
                "-servername", "localhost", "-CAfile", str(pki.ca_path), "-verify_return_error"]
        tls13 = await run_tool([*base, "-alpn", "h2,http/1.1"])
        assert tls13.returncode == 0, tls13.stderr
        assert "New, TLSv1.3" in tls13.stdout
        assert "ALPN protocol: h2" in tls13.stdout
        assert "Verify return code: 0 (ok)" in tls13.stdout
        h1 = await run_tool([*base, "-alpn", "http/1.1"])
        assert "ALPN protocol: http/1.1" in h1.stdout
        tls12 = await run_tool([*base, "-tls1_2"])
        assert tls12.returncode == 0, tls12.stderr
        assert "New, TLSv1.2" in tls12.stdout
        tls11 = await run_tool([*base, "-tls1_1"])  # TLS 1.0/1.1 are not offered
        assert tls11.returncode != 0
        assert "New, TLSv1.1, Cipher is (NONE)" in tls11.stdout or "New, (NONE)" in tls11.stdout


def _resumed_second_connection(port: int, context: ssl.SSLContext) -> tuple[bool, str | None]:
    """Two connections from one context (blocking, run in a thread): a full request on the
    first (so the TLS 1.3 ticket arrives), then a resumption attempt."""
    request = b"GET /resume HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with socket.create_connection((LOCALHOST, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request)
            while tls.recv(65536):
                pass
            session = tls.session
    with socket.create_connection((LOCALHOST, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            return bool(tls.session_reused), tls.version()


async def test_sessions_resume(pki: Pki, server_cert: Issued, echo: H1Upstream) -> None:
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        reused, version = await trio.to_thread.run_sync(
            _resumed_second_connection, proxy.port(GATEWAY_PORT), pki.client_context()
        )
    assert (reused, version) == (True, "TLSv1.3")
