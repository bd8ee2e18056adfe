"""Proxy header hygiene and streaming: hop-by-hop headers removed both ways, x-forwarded-for
appended, x-request-id generated or kept, and bodies streamed (not buffered) in both
directions, shown with events the other side waits on rather than with timing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from .support import Exchange, one_route

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def test_request_hop_by_hop_headers_do_not_reach_the_upstream(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    r = await client.get(proxy.url("/"), headers=[
        ("connection", "keep-alive, x-conn-named, upgrade"),
        ("x-conn-named", "secret"),
        ("keep-alive", "timeout=5"),
        ("te", "gzip"),
        ("upgrade", "websocket"),
        ("proxy-connection", "keep-alive"),
        ("x-app", "kept"),
    ])
    assert r.status_code == 200
    seen = up.seen[-1]
    names = {k for k, _ in seen.headers}
    leaked = names & {"x-conn-named", "keep-alive", "te", "upgrade", "proxy-connection"}
    assert not leaked, seen.headers
    assert all("x-conn-named" not in v for v in seen.header_all("connection"))
    assert seen.header("x-app") == "kept"

    # "TE: trailers" is end to end (gRPC needs it).
    await client.get(proxy.url("/"), headers={"te": "trailers"})
    assert up.seen[-1].header_all("te") == ["trailers"]


async def test_x_forwarded_for_is_appended(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    await client.get(proxy.url("/"))
    assert up.seen[-1].header_all("x-forwarded-for") == ["127.0.0.1"]
    assert up.seen[-1].header("x-forwarded-proto") == "http"
    await client.get(proxy.url("/"), headers={"x-forwarded-for": "10.0.0.1"})
    assert up.seen[-1].header_all("x-forwarded-for") == ["10.0.0.1, 127.0.0.1"]


async def test_x_request_id_generated_or_preserved(make_core, upstreams, client, h2_client):
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    ids = []
    for c in (client, client, h2_client):
        await c.get(proxy.url("/"))
        ids.append(up.seen[-1].header_all("x-request-id"))
    for one in ids:
        assert len(one) == 1 and UUID4.match(one[0]), one
    assert len({one[0] for one in ids}) == 3  # a fresh id per request

    await client.get(proxy.url("/"), headers={"x-request-id": "client-chosen-id"})
    assert up.seen[-1].header_all("x-request-id") == ["client-chosen-id"]


async def response_with_hop_by_hop(ex: Exchange) -> None:
    await ex.respond(200, [
        ("connection", "x-resp-private"),
        ("x-resp-private", "secret"),
        ("keep-alive", "timeout=99"),
        ("proxy-connection", "keep-alive"),
        ("x-app", "kept"),
    ], b"ok")


@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2"])
async def test_response_hop_by_hop_headers_are_stripped(make_core, upstreams, h2):
    up = await upstreams.h1(response_with_hop_by_hop)
    proxy = make_core(one_route([up.address]))
    async with httpx.AsyncClient(trust_env=False, timeout=10, http1=not h2, http2=h2) as c:
        r = await c.get(proxy.url("/"))
    assert (r.status_code, r.text) == (200, "ok")
    assert r.headers.get("x-app") == "kept"
    for name in ("x-resp-private", "keep-alive", "proxy-connection"):
        assert name not in r.headers, r.headers
    assert "x-resp-private" not in r.headers.get("connection", "")


@pytest.mark.parametrize("h2", [False, True], ids=["h1", "h2"])
async def test_response_body_is_streamed(make_core, upstreams, h2):
    release = trio.Event()
    finished = trio.Event()

    async def first_chunk_then_wait(ex: Exchange) -> None:
        await ex.start(200, [("content-type", "text/plain")])  # no length: chunked
        await ex.send(b"first;")
        await release.wait()
        await ex.send(b"second")
        await ex.end()
        finished.set()

    up = await upstreams.h1(first_chunk_then_wait)
    proxy = make_core(one_route([up.address]))
    async with httpx.AsyncClient(trust_env=False, timeout=10, http1=not h2, http2=h2) as c:
        with trio.fail_after(10):
            async with c.stream("GET", proxy.url("/")) as r:
                chunks = r.aiter_raw()
                # The upstream is still waiting for `release`: a buffering proxy would deliver
                # nothing yet and this read would time out.
                first = await chunks.__anext__()
                assert first == b"first;"
                assert not finished.is_set()
                release.set()
                rest = b"".join([c async for c in chunks])
    assert rest == b"second"


@pytest.mark.parametrize(("h2", "retry"), [(False, False), (True, False), (False, True)],
                         ids=["h1", "h2", "h1-with-retry-policy"])
async def test_request_body_is_streamed(make_core, upstreams, h2, retry):
    got_first = trio.Event()

    async def read_first_then_rest(ex: Exchange) -> None:
        chunks = ex.chunks()
        first = await chunks.__anext__()
        got_first.set()
        rest = b"".join([c async for c in chunks])
        await ex.respond(200, [], first + b"|" + rest)

    up = await upstreams.h1(read_first_then_rest)
    # With a retry policy the body is also copied for a replay; it must still stream.
    policy = {"retry": {"maxRetries": 1, "retryOn": ["5xx"]}} if retry else {}
    proxy = make_core(one_route([up.address], **policy))

    async def body() -> AsyncIterator[bytes]:
        yield b"part-one"
        # Sent only once the upstream has the first part: a proxy that buffered the request
        # body would never forward it and the upstream would never set `got_first`.
        await got_first.wait()
        yield b"part-two"

    async with httpx.AsyncClient(trust_env=False, timeout=10, http1=not h2, http2=h2) as c:
        with trio.fail_after(10):
            r = await c.post(proxy.url("/"), content=body())
    assert r.status_code == 200
    assert r.content.startswith(b"part-one|")
    assert r.content.replace(b"|", b"") == b"part-onepart-two"
