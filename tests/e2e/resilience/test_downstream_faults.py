"""A client's faults are the client's: an upload aborted mid-body and a malformed chunked body
are neither retried nor charged to the upstream host (no 5xx counted, no outlier outcome, no
ejection), however low the outlier threshold. The malformed body is answered 400 (Envoy: a
downstream protocol error); the aborted one gets no answer, there is nobody to read it."""

from __future__ import annotations

import trio
from meshplane import Proxy

from ..waiting import eventually
from .support import Upstream, mesh, outlier

ABORTS = 4
MALFORMED = 4


def host(proxy: Proxy, up: Upstream) -> dict[str, object]:
    return proxy.stats()["clusters"]["app"]["hosts"][up.address]  # type: ignore[no-any-return]


def idle(proxy: Proxy) -> bool:
    return all(listener["rq_active"] == 0 for listener in proxy.stats()["listeners"].values())


async def abort_upload(port: int, ups: list[Upstream]) -> None:
    """Declare 2000 body bytes, send 1000, and close once an upstream has the request head."""
    heads = sum(u.heads for u in ups)
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"POST /upload HTTP/1.1\r\nHost: svc.local\r\n"
                                  b"Content-Length: 2000\r\n\r\n" + b"a" * 1000)
            await eventually(lambda: sum(u.heads for u in ups) > heads,
                             what="the request head upstream")


async def malformed_chunk(port: int) -> bytes:
    """A chunked body whose second chunk-size line is not hex; everything the proxy answers."""
    out = b""
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(b"POST /upload HTTP/1.1\r\nHost: svc.local\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n"
                                  b"5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n")
            try:
                while chunk := await stream.receive_some(65536):
                    out += chunk
            except trio.BrokenResourceError:
                pass  # reset after the reply: what was read is kept
    return out


def config(ups: list[Upstream]) -> dict[str, object]:
    # No retryPolicy: App Mesh's default retries resets, which a client fault must not trigger.
    return mesh([u.address for u in ups],
                listener={"outlierDetection": outlier(2, interval_ms=50, ejection_ms=60_000)})


async def assert_hosts_not_charged(proxy: Proxy, ups: list[Upstream], faults: int) -> None:
    await eventually(lambda: idle(proxy), what="every request finished")
    for u in ups:
        h = host(proxy, u)
        assert h["rq_5xx"] == 0 and h["rq_error"] == 0, h
        assert not h["ejected"], h
    stats = proxy.stats()["clusters"]["app"]
    assert stats["rq_retry"] == 0 and stats["rq_5xx"] == 0
    assert stats["outlier_detection"]["ejections_active"] == 0
    # No upstream ever saw a whole request, so none answered one.
    assert sum(u.requests for u in ups) == 0
    assert sum(u.heads for u in ups) <= faults


async def test_aborted_uploads_are_not_charged_to_upstream_hosts(upstream, client) -> None:
    ups = [await upstream("a"), await upstream("b")]
    async with Proxy(config(ups)) as proxy:
        port = proxy.port(8080)
        for _ in range(ABORTS):
            await abort_upload(port, ups)
        await assert_hosts_not_charged(proxy, ups, ABORTS)
        r = await client.get(f"http://127.0.0.1:{port}/after")
        assert r.status_code == 200


async def test_a_malformed_chunked_body_is_400_and_not_charged(upstream, client) -> None:
    ups = [await upstream("a"), await upstream("b")]
    async with Proxy(config(ups)) as proxy:
        port = proxy.port(8080)
        for _ in range(MALFORMED):
            reply = await malformed_chunk(port)
            assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
            assert reply.endswith(b"bad request: malformed request body\n"), reply
        await assert_hosts_not_charged(proxy, ups, MALFORMED)
        r = await client.get(f"http://127.0.0.1:{port}/after")
        assert r.status_code == 200
