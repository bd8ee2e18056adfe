"""Certificates that rotate without a restart: the Trio certificate watcher sees the files change
and the core swaps the new material in. Under load nothing fails, new handshakes get the new
certificate, established connections keep theirs; a broken file keeps the old material and the
error is reported (log, `/certs`, `meshplane_tls_reload_total`)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx
import pytest
import trio
from meshplane import Proxy

from ..dataplane.support import H1Upstream
from ..waiting import eventually, until_set
from .support import (
    GATEWAY_PORT,
    SERVICE,
    Issued,
    Pki,
    TlsUpstream,
    client_policy,
    gateway_config,
    handshake,
    listener_tls,
    serial_of,
)

LOAD_SECONDS_AFTER_ROTATION = 1.5


async def served_serial(port: int, context: ssl.SSLContext) -> int:
    return serial_of((await handshake(port, context)).peer_cert)


def peer_serial(response: httpx.Response) -> tuple[int, int]:
    """(id of the connection's stream, serial of the certificate it was opened with)."""
    stream = response.extensions["network_stream"]
    ssl_object = stream.get_extra_info("ssl_object")
    return id(stream), serial_of(ssl_object.getpeercert(binary_form=True))


async def test_rotation_under_load_fails_no_request(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=500) as proxy:
        port = proxy.port(GATEWAY_PORT)
        url = f"https://127.0.0.1:{port}/load"
        context = pki.client_context()
        stop = trio.Event()
        failures: list[str] = []
        ok = 0
        keepalive_seen: list[set[tuple[int, int]]] = []
        fresh_serials: list[int] = []
        # (began after the new certificate was seen being served, serial it got): a handshake
        # that began before the reload may still end with the old certificate after it.
        fresh: list[tuple[bool, int]] = []
        rotated = False

        async def keepalive_client() -> None:
            nonlocal ok
            seen: set[tuple[int, int]] = set()
            keepalive_seen.append(seen)
            limits = httpx.Limits(max_connections=1)
            async with httpx.AsyncClient(verify=context, trust_env=False, timeout=5,
                                         limits=limits) as client:
                for _ in until_set(stop):
                    try:
                        response = await client.get(url)
                    except httpx.HTTPError as exc:
                        failures.append(f"keep-alive: {exc!r}")
                        continue
                    if response.status_code != 200:
                        failures.append(f"keep-alive: {response.status_code}")
                    ok += 1
                    seen.add(peer_serial(response))

        async def new_connection_client() -> None:
            nonlocal ok
            for _ in until_set(stop):
                began_after = rotated
                try:
                    async with httpx.AsyncClient(verify=context, trust_env=False,
                                                 timeout=5) as client:
                        response = await client.get(url)
                        fresh_serials.append(peer_serial(response)[1])
                        fresh.append((began_after, fresh_serials[-1]))
                except httpx.HTTPError as exc:
                    failures.append(f"new connection: {exc!r}")
                    continue
                if response.status_code != 200:
                    failures.append(f"new connection: {response.status_code}")
                ok += 1

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(keepalive_client)
                for _ in range(2):
                    nursery.start_soon(new_connection_client)
                await eventually(lambda: len(fresh_serials) >= 5 and ok >= 50, what="load to start", timeout=10, poll=0.05)
                old = server_cert.serial
                new = pki.issue("edge", "127.0.0.1", "localhost", into=server_cert).serial
                assert new != old
                await eventually(lambda: _is(served_serial(port, context), new),
                                 what="new handshakes to get the new certificate", timeout=10, poll=0.05)
                rotated = True
                await trio.sleep(LOAD_SECONDS_AFTER_ROTATION)
                stop.set()

        assert failures == []
        assert ok > 100
        # every keep-alive client kept its one connection, opened with the old certificate
        assert [len(seen) for seen in keepalive_seen] == [1, 1, 1, 1]
        assert {serial for seen in keepalive_seen for _, serial in seen} == {old}
        # new connections: the old certificate, then (begun once reloaded) only the new one
        assert fresh_serials[0] == old
        after = [serial for began_after, serial in fresh if began_after]
        assert after and set(after) == {new}
        info = proxy.tls_info()
        assert info["reload"]["reloads"] >= 1
        assert info["reload"]["last_error"] is None
        assert proxy.stats()["listeners"][f"gateway/edge/{GATEWAY_PORT}"]["tls_handshake_error"] == 0


async def _is(awaitable: Any, expected: int) -> bool:
    return await awaitable == expected  # type: ignore[no-any-return]


async def test_a_broken_certificate_keeps_the_old_one_and_says_why(
    pki: Pki, server_cert: Issued, echo: H1Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshplane.cert_watch")
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)
        context = pki.client_context()
        old = server_cert.serial
        server_cert.key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        await eventually(lambda: proxy.tls_info()["reload"]["failures"] >= 1, what="the reload to fail", timeout=10, poll=0.05)
        error = proxy.tls_info()["reload"]["last_error"]
        assert str(server_cert.key) in error
        assert await served_serial(port, context) == old  # still the old certificate
        async with httpx.AsyncClient(verify=context, trust_env=False, timeout=5) as client:
            assert (await client.get(f"https://127.0.0.1:{port}/")).status_code == 200
        logged = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert logged and str(server_cert.key) in logged[-1].getMessage()
        assert "previous certificates keep serving" in logged[-1].getMessage()

        # fixing the files is picked up at the next change
        new = pki.issue("edge", "127.0.0.1", "localhost", into=server_cert).serial
        await eventually(lambda: _is(served_serial(port, context), new), what="the fixed certificate", timeout=10, poll=0.05)
        assert proxy.tls_info()["reload"]["last_error"] is None


async def test_trust_bundle_rotation_admits_a_new_ca(
    pki: Pki, other_pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    bundle = pki.root / "bundle.pem"
    bundle.write_bytes(pki.ca_path.read_bytes())
    newcomer = other_pki.issue("newcomer", "client.shop.local")
    tls = listener_tls("STRICT", server_cert, trust=bundle)
    async with Proxy(gateway_config(echo.address, tls), drain_ms=200) as proxy:
        port = proxy.port(GATEWAY_PORT)

        async def status() -> int | None:
            try:
                async with httpx.AsyncClient(verify=pki.client_context(newcomer),
                                             trust_env=False, timeout=5) as client:
                    return (await client.get(f"https://127.0.0.1:{port}/")).status_code
            except httpx.TransportError:
                return None

        assert await status() is None  # refused: its CA is not trusted yet
        bundle.write_bytes(pki.ca_path.read_bytes() + other_pki.ca_path.read_bytes())
        await eventually(lambda: _is(status(), 200), what="the new CA to be trusted", timeout=10, poll=0.05)
    assert echo.seen[-1].header("x-forwarded-client-cert") == "DNS=client.shop.local"


async def test_client_certificate_rotation_reaches_the_upstream(
    nursery: trio.Nursery, pki: Pki
) -> None:
    upstream = TlsUpstream("tls-app", context=pki.server_context(pki.issue("api", SERVICE),
                                                                  require_client=True))
    await nursery.start(upstream.run)
    client_cert = pki.issue("edge-client", "edge.shop.local")
    config = gateway_config(upstream.address, policy=client_policy(pki.ca_path, cert=client_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        url = f"http://127.0.0.1:{proxy.port(GATEWAY_PORT)}/"
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            assert (await client.get(url)).status_code == 200
            new = pki.issue("edge-client", "edge.shop.local", into=client_cert).serial

            async def upstream_sees_new() -> bool:
                assert (await client.get(url)).status_code == 200
                return serial_of(upstream.peer_certs[-1]) == new

            await eventually(upstream_sees_new, what="the upstream to see the new client certificate", timeout=10, poll=0.05)
    assert serial_of(upstream.peer_certs[0]) == client_cert.serial
