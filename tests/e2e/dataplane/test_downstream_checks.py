"""The downstream request phase (rust/src/http/downstream.rs) and the listener's request-headers
timeout, through real sockets: what hyper lets through but RFC 9112 and Envoy refuse (Host
missing or repeated, Transfer-Encoding other than a lone chunked), the same header-count limit
on HTTP/1.1 and HTTP/2, x-forwarded-proto from the listener's scheme, and connections that
never finish a request head. (Content-Length with Transfer-Encoding: test_bad_input.py.)
"""

from __future__ import annotations

import pytest
import trio

from .support import one_route
from .test_bad_input import H2_PREFACE, raw_exchange, status_of, still_serves

CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"


async def test_http11_without_host_or_with_two_is_400(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    for bad in (b"GET / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"):
        reply = await raw_exchange(proxy.port(), bad)  # returns once the proxy closed
        assert status_of(reply) == 400, reply
        assert b"connection: close" in reply.lower()
    assert up.requests == 0
    # HTTP/1.0 has no Host requirement.
    reply = await raw_exchange(proxy.port(), b"GET /old HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 200") or status_of(reply) == 200, reply[:100]
    assert up.requests == 1
    await still_serves(client, proxy, up)
    assert proxy.stats()["listeners"]["l"]["rq_rejected"] == 2


@pytest.mark.parametrize("coding", [
    b"Transfer-Encoding: identity, chunked\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Transfer-Encoding: x-unknown, chunked\r\n",
])
async def test_transfer_encoding_other_than_a_lone_chunked_is_501(make_core, upstreams, client,
                                                                  coding):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    bad = b"POST / HTTP/1.1\r\nHost: x\r\n" + coding + b"\r\n" + CHUNKED_BODY
    reply = await raw_exchange(proxy.port(), bad)
    assert status_of(reply) == 501, reply
    assert up.requests == 0
    # A lone chunked is fine.
    ok = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    assert status_of(await raw_exchange(proxy.port(), ok + CHUNKED_BODY)) == 200
    await still_serves(client, proxy, up)


async def test_x_forwarded_proto_is_the_listeners_scheme(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    r = await client.get(proxy.url("/"), headers={"x-forwarded-proto": "https"})
    assert r.status_code == 200
    assert up.seen[-1].header_all("x-forwarded-proto") == ["http"]


@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2"])
async def test_header_count_limit_is_the_same_on_both_protocols(make_core, upstreams, client,
                                                                 h2_client, h2):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    c = h2_client if h2 else client
    many = [(f"x-h{i}", "v") for i in range(150)]
    r = await c.get(proxy.url("/many"), headers=many)
    assert r.status_code == 431
    assert r.http_version == ("HTTP/2" if h2 else "HTTP/1.1")
    assert up.requests == 0
    # Well under the limit (the client adds a few of its own).
    r = await c.get(proxy.url("/some"), headers=many[:80])
    assert r.status_code == 200
    assert up.requests == 1


async def closed_by_proxy(port: int, send: bytes) -> bytes:
    """Connect, send `send` (maybe nothing) and read until the proxy closes the connection."""
    out = bytearray()
    # Bounded: the request-headers timeout under test is 0.3 s; without it the proxy would
    # keep the connection for its 1-hour idle timeout.
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            if send:
                await stream.send_all(send)
            try:
                while chunk := await stream.receive_some(65536):
                    out += chunk
            except trio.BrokenResourceError:
                pass
    return bytes(out)


async def test_connections_without_a_complete_request_head_are_closed(make_core, upstreams,
                                                                     client, h2_client):
    up = await upstreams.h1()
    doc = one_route([up.address])
    doc["listeners"][0]["requestHeadersTimeoutMs"] = 300
    proxy = make_core(doc)
    port = proxy.port()
    # Nothing at all; half an HTTP/2 preface; an HTTP/1.1 head without its end.
    assert await closed_by_proxy(port, b"") == b""
    assert await closed_by_proxy(port, H2_PREFACE[:10]) == b""
    await closed_by_proxy(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert proxy.stats()["listeners"]["l"]["rq_header_timeout"] == 3
    assert up.requests == 0
    # Clients that send their requests are served, on both protocols.
    for c in (client, h2_client):
        assert (await c.get(proxy.url("/ok"))).status_code == 200
    assert up.requests == 2
