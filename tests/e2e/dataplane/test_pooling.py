"""Upstream connection pooling and circuit breakers: HTTP/1.1 keep-alive reuse, the
maxConnections and maxPendingRequests limits, and HTTP/2 multiplexing on one connection.

Concurrency is made deterministic with gates: the upstream holds each request until the test
has observed the state it wants (so many requests in flight, so many pending), then releases.
"""

from __future__ import annotations

import httpx
import trio

from ..waiting import eventually
from .support import AsgiEcho, Exchange, Proxy, RawH2, echo, one_route, pattern, sha256


class Gate:
    """An upstream handler that holds every request until `open()`."""

    def __init__(self) -> None:
        self.event = trio.Event()

    async def __call__(self, ex: Exchange) -> None:
        await self.event.wait()
        await echo(ex)

    def open(self) -> None:
        self.event.set()


async def fire(client: httpx.AsyncClient, url: str, results: list[httpx.Response]) -> None:
    results.append(await client.get(url))


async def test_keep_alive_reuses_upstream_connections(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    with trio.fail_after(20):
        for _ in range(200):
            r = await client.get(proxy.url("/"))
            assert r.status_code == 200
        # Fresh downstream connections still share the pooled upstream ones.
        for _ in range(20):
            async with httpx.AsyncClient(trust_env=False) as fresh:
                assert (await fresh.get(proxy.url("/"))).status_code == 200
    assert up.requests == 220
    assert up.accepted <= 2, f"{up.accepted} upstream connections for 220 sequential requests"
    assert proxy.cluster_stats()["cx_total"] == up.accepted
    assert proxy.host_stats("c", up.address)["cx_total"] == up.accepted


async def test_max_connections_caps_upstream_connections(make_core, upstreams, client):
    gate = Gate()
    up = await upstreams.h1(gate)
    proxy = make_core(one_route([up.address],
                                cluster_extra={"circuitBreakers": {"maxConnections": 2}}))
    results: list[httpx.Response] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(fire, client, proxy.url("/"), results)
            # Two requests reach the upstream, the other 18 wait as pending requests.
            await eventually(lambda: up.active == 2
                             and proxy.cluster_stats()["rq_pending_active"] == 18,
                             what="2 active upstream requests and 18 pending")
            assert up.accepted == 2
            gate.open()
    assert [r.status_code for r in results] == [200] * 20
    assert up.max_open == 2 and up.accepted == 2
    stats = proxy.cluster_stats()
    assert stats["cx_total"] == 2 and stats["cx_overflow"] >= 18
    assert stats["rq_pending_overflow"] == 0


async def test_max_pending_requests_overflow_is_503_overloaded(make_core, upstreams, client):
    gate = Gate()
    up = await upstreams.h1(gate)
    proxy = make_core(one_route([up.address], cluster_extra={
        "circuitBreakers": {"maxConnections": 1, "maxPendingRequests": 1}}))
    url = proxy.url("/")
    held: list[httpx.Response] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            n.start_soon(fire, client, url, held)
            await eventually(lambda: up.active == 1, what="the first request upstream")
            n.start_soon(fire, client, url, held)
            await eventually(lambda: proxy.cluster_stats()["rq_pending_active"] == 1,
                             what="one pending request")
            overflowed = [await client.get(url) for _ in range(5)]
            gate.open()
    assert [r.status_code for r in held] == [200, 200]
    for r in overflowed:
        assert r.status_code == 503
        assert r.headers["x-envoy-overloaded"] == "true"
    assert up.requests == 2
    assert proxy.cluster_stats()["rq_pending_overflow"] == 5


async def hold_concurrently(proxy: Proxy, app: AsgiEcho, n: int) -> list[int]:
    """`n` concurrent /hold requests on one HTTP/2 connection, their HEADERS frames written in
    one TCP segment; wait until all are at the upstream, then release them."""
    port = proxy.port()
    with trio.fail_after(20):
        async with await RawH2.connect(port) as h2c:
            sids = [h2c.request("/hold", port) for _ in range(n)]
            await h2c.flush()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(h2c.until, lambda: h2c.ended >= set(sids))
                await eventually(lambda: app.active == n, what=f"{n} requests at the upstream")
                app.release.set()
    return [h2c.status.get(s, 0) for s in sids]


async def test_h2_upstream_multiplexes_one_connection(make_core, upstreams, client):
    app = await upstreams.asgi()
    proxy = make_core(one_route([app.address], "http2"))
    assert (await client.get(proxy.url("/warm"))).status_code == 200
    statuses = await hold_concurrently(proxy, app, 30)
    assert statuses == [200] * 30
    assert app.max_active >= 30
    assert len(app.clients) == 1, f"{len(app.clients)} upstream connections"
    assert proxy.cluster_stats()["cx_total"] == 1


async def test_h2_upstream_cold_burst_shares_one_connection(make_core, upstreams):
    app = await upstreams.asgi()
    # One worker thread: the burst's stream tasks all run before any connect completes, so
    # the outcome does not depend on how two workers happen to interleave.
    proxy = make_core(one_route([app.address], "http2"), workers=1)
    statuses = await hold_concurrently(proxy, app, 30)
    assert statuses == [200] * 30
    assert len(app.clients) == 1, f"{len(app.clients)} upstream connections for one burst"


async def test_h2_max_requests_overflow(make_core, upstreams, client):
    app = await upstreams.asgi()
    proxy = make_core(one_route([app.address], "http2",
                                cluster_extra={"circuitBreakers": {"maxRequests": 3}}))
    held: list[int] = []

    async def one() -> None:
        held.append((await client.get(proxy.url("/hold"))).status_code)

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            for i in range(3):
                n.start_soon(one)
                await eventually(lambda i=i: app.active == i + 1, what="held request")
            extra = [await client.get(proxy.url("/x")) for _ in range(3)]
            app.release.set()
    assert held == [200] * 3
    assert [(r.status_code, r.headers.get("x-envoy-overloaded")) for r in extra] == [
        (503, "true")] * 3
    assert proxy.cluster_stats()["rq_pending_overflow"] == 3


async def test_abandoned_response_does_not_return_its_connection(make_core, upstreams, client):
    release = trio.Event()

    async def stream_then_wait(ex: Exchange) -> None:
        if ex.path != "/stream":
            await echo(ex)
            return
        await ex.start(200, [])
        await ex.send(b"x" * 1000)
        await release.wait()
        await ex.send(b"tail")
        await ex.end()

    up = await upstreams.h1(stream_then_wait)
    proxy = make_core(one_route([up.address]))
    port = proxy.port()
    with trio.fail_after(10):
        async with await RawH2.connect(port) as h2c:
            sid = h2c.request("/stream", port)
            await h2c.flush()
            await h2c.until(lambda: sid in h2c.status)
            h2c.conn.reset_stream(sid)  # the client gives up mid-body
            await h2c.flush()
            await eventually(lambda: proxy.cluster_stats()["rq_active"] == 0,
                             what="the abandoned request to settle")
        release.set()
        # The half-read connection was dropped, not pooled: the next request opens another.
        r = await client.get(proxy.url("/next"))
    assert r.status_code == 200
    assert r.json()["conn"] == 1
    await eventually(lambda: proxy.cluster_stats()["cx_active"] == 1,
                     what="the abandoned upstream connection to close")


async def test_a_streamed_body_read_slowly_then_its_connection_is_reused(make_core, upstreams,
                                                                        client):
    # The upstream HTTP/1.1 connection has no task of its own: the response body moves only
    # as the client reads it. A large chunked body, read a little at a time, and a large
    # upload both arrive whole, and the connection goes back to the pool after each.
    size = 3 * 1024 * 1024 + 17
    data = pattern(size, seed=5)

    async def download_or_echo(ex: Exchange) -> None:
        if ex.path != "/download":
            await echo(ex)
            return
        await ex.start(200, [])  # no Content-Length: chunked
        for i in range(0, size, 64 * 1024):
            await ex.send(data[i:i + 64 * 1024])
        await ex.end()

    up = await upstreams.h1(download_or_echo)
    proxy = make_core(one_route([up.address]))
    with trio.fail_after(60):
        got = bytearray()
        async with client.stream("GET", proxy.url("/download")) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_bytes(4096):
                got += chunk
                await trio.lowlevel.checkpoint()
        assert sha256(bytes(got)) == sha256(data)
        upload = pattern(size, seed=6)
        r = await client.post(proxy.url("/upload"), content=upload)
        assert (r.json()["body_len"], r.json()["body_sha256"]) == (size, sha256(upload))
        r = await client.get(proxy.url("/next"))
    assert r.status_code == 200
    assert up.accepted == 1, f"{up.accepted} upstream connections for 3 sequential requests"
    assert proxy.cluster_stats()["cx_active"] == 1


async def test_idle_upstream_connection_is_closed(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address], cluster_extra={"idleTimeoutMs": 200}))
    assert (await client.get(proxy.url("/"))).status_code == 200
    assert up.open == 1
    await eventually(lambda: up.open == 0, timeout=2, what="the idle upstream connection to close")


async def test_idle_downstream_http_connection_is_closed(make_core, upstreams):
    up = await upstreams.h1()
    doc = one_route([up.address])
    doc["listeners"][0]["idleTimeoutMs"] = 200
    proxy = make_core(doc)
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port())
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        with trio.fail_after(5):
            while b'"conn"' not in reply:
                reply += await stream.receive_some(65536)
        assert reply.startswith(b"HTTP/1.1 200")
        # Keep-alive, no further request: the proxy closes after the idle timeout.
        with trio.fail_after(2):
            while await stream.receive_some(65536):
                pass
