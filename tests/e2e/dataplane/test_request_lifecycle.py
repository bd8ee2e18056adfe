"""When a request's timers start and what a stale pooled connection costs.

- The route timeout and the per-try timeout start when the downstream request has been read
  completely (Envoy), so an upload slower than the route timeout still gets its answer; an
  upload that stalls is cut by the stream idle timeout instead (408).
- A request sent on a pooled keep-alive connection that the upstream had just closed is sent
  again once on a fresh connection, whatever the retry policy says, and the host is not
  charged a failure for it (pingora's reused-connection retry).

Uploads are trickled by a raw socket client in bounded chunks; nothing asserts a timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio

from ..waiting import eventually
from .support import Exchange, Handler, echo, one_route, pattern, sha256

UPLOAD_CHUNKS = 10
CHUNK = 1000


async def read_response(stream: trio.SocketStream) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a Content-Length body: (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        assert chunk, f"connection closed before a response head: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = next(int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                  if k.strip().lower() == "content-length")
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return status, body[:length]


async def trickled_upload(port: int, body: bytes, pause: float) -> tuple[int, bytes]:
    """POST `body` in `UPLOAD_CHUNKS` pieces with `pause` seconds between them."""
    with trio.fail_after(30):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            head = (f"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: {len(body)}\r\n\r\n")
            await stream.send_all(head.encode())
            step = len(body) // UPLOAD_CHUNKS
            for i in range(UPLOAD_CHUNKS):
                await trio.sleep(pause)  # pacing the upload, not waiting for readiness
                await stream.send_all(body[i * step:(i + 1) * step])
            return await read_response(stream)


async def test_route_and_per_try_timeouts_start_when_the_upload_ends(make_core, upstreams):
    up = await upstreams.h1()
    # 10 pieces 250 ms apart: the upload takes about 2.5 s, over both 1 s timeouts.
    proxy = make_core(one_route([up.address], timeoutMs=1000,
                                retry={"maxRetries": 1, "perTryTimeoutMs": 1000,
                                       "retryOn": ["reset"]}))
    body = pattern(UPLOAD_CHUNKS * CHUNK, seed=7)
    status, reply = await trickled_upload(proxy.port(), body, pause=0.25)
    assert status == 200, reply
    doc = json.loads(reply)
    assert doc["body_sha256"] == sha256(body)
    stats = proxy.cluster_stats()
    assert stats["rq_timeout"] == 0 and stats["rq_retry"] == 0
    assert up.requests == 1


async def test_a_stalled_upload_is_cut_by_the_stream_idle_timeout(make_core, upstreams):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address], timeoutMs=1000, idleTimeoutMs=300))
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port()) as stream:
            await stream.send_all(b"POST /upload HTTP/1.1\r\nHost: svc\r\n"
                                  b"Content-Length: 1000\r\n\r\n" + b"x" * 100)
            # ... and nothing more: the proxy must answer on its own.
            status, reply = await read_response(stream)
    assert (status, reply) == (408, b"stream timeout\n")
    host = proxy.host_stats("c", up.address)
    assert host["rq_error"] == 0 and host["rq_5xx"] == 0
    assert proxy.cluster_stats()["rq_timeout"] == 0


def one_answer_per_connection() -> tuple[set[int], Handler]:
    """A handler that answers the first request of each connection (keep-alive) and closes the
    connection (FIN, after reading the request) at the next one without answering: what a
    proxy sees when the upstream closed an idle keep-alive connection as it was reused."""
    answered: set[int] = set()

    async def handler(ex: Exchange) -> None:
        if ex.seen.conn in answered:
            await ex.body()
            return  # not answered: the server closes the connection gracefully
        answered.add(ex.seen.conn)
        await echo(ex)

    return answered, handler


async def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one(make_core, upstreams,
                                                                       client):
    answered, handler = one_answer_per_connection()
    up = await upstreams.h1(handler)
    # No retry policy at all: the reconnect does not depend on one.
    proxy = make_core(one_route([up.address]))
    first = await client.get(proxy.url("/first"))
    assert first.status_code == 200 and first.json()["conn"] == 0
    await eventually(lambda: proxy.host_stats("c", up.address)["idle_connections"] == 1,
                     what="the first connection back in the pool")

    second = await client.get(proxy.url("/second"))
    assert second.status_code == 200, second.text
    assert second.json()["conn"] == 1, "answered on a fresh connection"
    # A body is sent again too (the reused connection kept a copy).
    await eventually(lambda: proxy.host_stats("c", up.address)["idle_connections"] == 1,
                     what="the second connection back in the pool")
    body = pattern(5000, seed=3)
    third = await client.post(proxy.url("/third"), content=body)
    assert third.status_code == 200, third.text
    assert third.json()["conn"] == 2 and third.json()["body_sha256"] == sha256(body)

    assert up.accepted == 3 and answered == {0, 1, 2}
    stats = proxy.cluster_stats()
    assert stats["rq_retry_stale_connection"] == 2
    assert stats["rq_retry"] == 0 and stats["rq_5xx"] == 0
    host = proxy.host_stats("c", up.address)
    assert host["rq_error"] == 0 and host["rq_5xx"] == 0 and host["rq_2xx"] == 3


async def wait_for_lines(path: Path, count: int) -> list[str]:
    """The log's complete lines once there are at least `count` (bounded)."""
    with trio.fail_after(5):
        while True:
            text = path.read_text() if path.exists() else ""
            lines = text.splitlines()[: text.count("\n")]
            if len(lines) >= count:
                return lines
            await trio.sleep(0.01)  # polling interval, not a wait for readiness


async def test_client_faults_are_logged_as_the_clients(make_core, upstreams, tmp_path):
    """An upload the client aborts is logged `DC` with code 0 (nothing was answered); a
    malformed chunked body `DPE` with the 400 it got. Neither is charged to the host."""
    up = await upstreams.h1()
    log = tmp_path / "access.log"
    fmt = {"json": [{"key": "path", "value": "%REQ(:PATH)%"},
                    {"key": "code", "value": "%RESPONSE_CODE%"},
                    {"key": "flags", "value": "%RESPONSE_FLAGS%"},
                    {"key": "details", "value": "%RESPONSE_CODE_DETAILS%"}]}
    doc = one_route([up.address], retry={"maxRetries": 2, "retryOn": ["reset", "5xx"]})
    doc["listeners"][0]["accessLog"] = {"path": str(log), "format": fmt}
    proxy = make_core(doc)
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port()) as stream:
            await stream.send_all(b"POST /aborted HTTP/1.1\r\nHost: svc\r\n"
                                  b"Content-Length: 2000\r\n\r\n" + b"a" * 1000)
            await eventually(lambda: len(up.seen) == 1, what="the request head upstream")
        async with await trio.open_tcp_stream("127.0.0.1", proxy.port()) as stream:
            await stream.send_all(b"POST /malformed HTTP/1.1\r\nHost: svc\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n"
                                  b"5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n")
            status, _ = await read_response(stream)
    assert status == 400
    by_path = {r["path"]: r for r in map(json.loads, await wait_for_lines(log, 2))}
    assert by_path["/aborted"] == {"path": "/aborted", "code": 0, "flags": "DC",
                                   "details": "downstream_remote_disconnect"}
    assert by_path["/malformed"] == {"path": "/malformed", "code": 400, "flags": "DPE",
                                     "details": "downstream_protocol_error"}
    host = proxy.host_stats("c", up.address)
    assert host["rq_error"] == 0 and host["rq_5xx"] == 0
    assert proxy.cluster_stats()["rq_retry"] == 0
    assert up.requests <= 2 and all(s.target in ("/aborted", "/malformed") for s in up.seen)
