"""Malformed downstream input: each bad request gets its 4xx (or GOAWAY) and its connection
closed, request smuggling through Content-Length / Transfer-Encoding is impossible, other
connections on the same listener are unaffected, and the core keeps serving afterwards.

Observed statuses (hyper's HTTP/1.1 server): malformed request line 400; request head larger
than `maxRequestHeadersBytes` 431; differing duplicate Content-Length 400; Content-Length plus
Transfer-Encoding: chunked is accepted as chunked, the Content-Length dropped, and the
connection closed after the response (RFC 9112 §6.3).
"""

from __future__ import annotations

import h2.errors
import httpx
import pytest
import trio

from .support import H1Upstream, Proxy, RawH2, one_route

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def raw_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send `data` on a fresh connection and read until the proxy closes it."""
    out = bytearray()
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            try:
                await stream.send_all(data)
            except trio.BrokenResourceError:
                pass  # the proxy may answer and close before reading everything
            try:
                while chunk := await stream.receive_some(65536):
                    out += chunk
            except trio.BrokenResourceError:
                pass  # reset after the reply: what was read is kept
    return bytes(out)


def status_of(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:100]
    return int(reply[9:12])


async def still_serves(client: httpx.AsyncClient, proxy: Proxy, up: H1Upstream) -> None:
    before = up.requests
    r = await client.get(proxy.url("/after"))
    assert r.status_code == 200 and up.requests == before + 1


async def test_malformed_request_line_is_400_and_other_clients_keep_working(
        make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    listener = lambda: proxy.stats()["listeners"]["l"]  # noqa: E731
    assert (await client.get(proxy.url("/before"))).status_code == 200
    assert listener()["cx_total"] == 1

    for bad in (b"THIS IS NOT HTTP\r\n\r\n", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"):
        reply = await raw_exchange(proxy.port(), bad)  # returns only once the proxy closed
        assert status_of(reply) == 400

    # The keep-alive client still works, on its original connection.
    await still_serves(client, proxy, up)
    assert listener()["cx_total"] == 3
    assert up.requests == 2


async def test_oversized_request_head_is_431(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert status_of(await raw_exchange(proxy.port(), big)) == 431
    assert up.requests == 0
    await still_serves(client, proxy, up)


async def test_max_request_headers_bytes_is_configurable(make_core, upstreams, client):
    up = await upstreams.h1()
    doc = one_route([up.address])
    doc["listeners"][0]["maxRequestHeadersBytes"] = 16 * 1024
    proxy = make_core(doc)
    r = await client.get(proxy.url("/"), headers={"x-mid": "a" * 10_000})
    assert r.status_code == 200
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert status_of(await raw_exchange(proxy.port(), big)) == 431


async def test_content_length_with_transfer_encoding_cannot_smuggle(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    attack = (b"POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n0\r\n\r\n"
              b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await raw_exchange(proxy.port(), attack)
    status = status_of(reply)
    assert status in (200, 400)
    if status == 200:
        # Forwarded as chunked: the upstream got one request, never both framing headers,
        # exactly the chunked body; the proxy closed the connection after answering, so the
        # bytes after the chunked body were never read as a request.
        assert len(up.seen) == 1
        seen = up.seen[0]
        assert seen.target == "/front"
        assert not (seen.header("content-length") and seen.header("transfer-encoding"))
        assert b'"body_len": 5' in reply
        assert b"connection: close" in reply.lower()
    assert all(s.target != "/smuggled" for s in up.seen)
    await still_serves(client, proxy, up)


async def test_differing_duplicate_content_length_is_400(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    bad = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
           b"hello!")
    assert status_of(await raw_exchange(proxy.port(), bad)) == 400
    assert up.requests == 0
    # Transfer-Encoding that does not end in chunked cannot be framed: 400 too.
    bad = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello"
    assert status_of(await raw_exchange(proxy.port(), bad)) == 400
    assert up.requests == 0
    await still_serves(client, proxy, up)


async def test_rejected_requests_are_counted(make_core, upstreams):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    assert status_of(await raw_exchange(proxy.port(), b"NOT HTTP\r\n\r\n")) == 400
    stats = proxy.stats()["listeners"]["l"]
    assert stats["rq_rejected"] == 1
    assert stats["rq_4xx"] == 1


async def goaway_after(port: int, extra: bytes) -> int:
    """Open an HTTP/2 connection, write its preface + SETTINGS and then `extra`; the error code
    of the GOAWAY the proxy answers with."""
    with trio.fail_after(5):
        async with await RawH2.connect(port) as c:
            await c.flush(extra)
            await c.until(lambda: c.terminated is not None)
    assert c.terminated is not None, "connection closed without GOAWAY"
    return c.terminated.error_code


@pytest.mark.parametrize(("frames", "codes"), [
    # Not a frame at all: read as a frame header, its length is far over the maximum.
    pytest.param(b"this is not an HTTP/2 frame, just bytes",
                 {h2.errors.ErrorCodes.FRAME_SIZE_ERROR, h2.errors.ErrorCodes.PROTOCOL_ERROR},
                 id="garbage"),
    # HEADERS (type 1, END_STREAM|END_HEADERS) on stream 0, block ":method: GET".
    pytest.param(b"\x00\x00\x01\x01\x05\x00\x00\x00\x00\x82",
                 {h2.errors.ErrorCodes.PROTOCOL_ERROR}, id="headers-on-stream-0"),
    # DATA on stream 0.
    pytest.param(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd",
                 {h2.errors.ErrorCodes.PROTOCOL_ERROR}, id="data-on-stream-0"),
])
async def test_invalid_http2_frames_get_goaway(make_core, upstreams, h2_client, frames, codes):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    assert (await h2_client.get(proxy.url("/before"))).status_code == 200
    assert await goaway_after(proxy.port(), frames) in codes
    # The other HTTP/2 connection is unaffected.
    r = await h2_client.get(proxy.url("/after"))
    assert (r.status_code, r.http_version) == (200, "HTTP/2")
    assert proxy.stats()["listeners"]["l"]["cx_total"] == 2
    assert up.requests == 2


async def test_core_serves_after_every_kind_of_bad_input(make_core, upstreams, client, h2_client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    port = proxy.port()
    for bad in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n",
                H2_PREFACE + b"\xff" * 64):
        await raw_exchange(port, bad)
    # A client that connects and goes away without a byte.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.aclose()
    for c in (client, h2_client):
        r = await c.get(proxy.url("/ok"))
        assert r.status_code == 200
    assert up.requests == 2
