"""Upstream failures and what the client gets: local replies for connect failure (503), reset
before a response head (503), a response that is not HTTP (502), the route timeout (504), and
retries that turn a failed attempt into a success."""

from __future__ import annotations

import pytest
import trio

from ..common import closed_port
from ..waiting import eventually
from .support import Exchange, echo, one_route, pattern, sha256

APPMESH_DEFAULT_RETRY = {
    "maxRetries": 2,
    "retryOn": ["connect-failure", "refused-stream", "retriable-status-codes", "reset"],
    "retriableStatusCodes": [503],
}


async def test_upstream_down_is_503(make_core, client):
    dead = f"127.0.0.1:{closed_port()}"
    proxy = make_core(one_route([dead]))
    r = await client.get(proxy.url("/"))
    assert r.status_code == 503
    assert r.text.startswith("upstream connect error or disconnect/reset before headers")
    stats = proxy.cluster_stats()
    assert stats["cx_connect_fail"] == 1 and stats["rq_5xx"] == 1


async def test_upstream_reset_mid_head_is_503(make_core, upstreams, client):
    async def half_head_then_reset(ex: Exchange) -> None:
        await ex.send_raw(b"HTTP/1.1 200 OK\r\nContent-Le")
        ex.reset()

    up = await upstreams.h1(half_head_then_reset)
    proxy = make_core(one_route([up.address]))
    r = await client.get(proxy.url("/"))
    assert r.status_code == 503
    assert "reset" in r.text
    assert up.requests == 1
    assert proxy.host_stats("c", up.address)["rq_error"] == 1


async def test_upstream_garbage_is_502(make_core, upstreams, client):
    async def not_http(ex: Exchange) -> None:
        await ex.send_raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    up = await upstreams.h1(not_http)
    proxy = make_core(one_route([up.address]))
    r = await client.get(proxy.url("/"))
    assert r.status_code == 502
    assert r.text.startswith("bad upstream response")


async def stall(ex: Exchange) -> None:
    await trio.sleep_forever()  # cancelled when the test's nursery closes


async def test_route_timeout_is_504(make_core, upstreams, client):
    up = await upstreams.h1(stall)
    proxy = make_core(one_route([up.address], timeoutMs=300))
    with trio.fail_after(5):
        r = await client.get(proxy.url("/"))
    assert r.status_code == 504
    assert r.text == "upstream request timeout\n"
    assert proxy.cluster_stats()["rq_timeout"] == 1


async def test_route_timeout_covers_the_response_body(make_core, upstreams, client):
    async def head_then_stall(ex: Exchange) -> None:
        await ex.start(200, [("content-type", "text/plain")])
        await ex.send(b"partial")
        await trio.sleep_forever()

    up = await upstreams.h1(head_then_stall)
    proxy = make_core(one_route([up.address], timeoutMs=300))
    # Envoy: the route timeout runs "until upstream response complete"; once headers went
    # downstream the stream is reset, so the client's read ends with an error.
    with trio.fail_after(2):
        async with client.stream("GET", proxy.url("/")) as r:
            assert r.status_code == 200
            with pytest.raises(Exception):  # noqa: B017 - any transport error ends the read
                async for _ in r.aiter_raw():
                    pass


def fail_first(n_failures: int = 1):
    """A handler (shareable by several upstreams) that answers 503 to the first
    `n_failures` requests it sees in total, after reading their bodies, then echoes."""
    state = {"failures": 0}

    async def handler(ex: Exchange) -> None:
        if state["failures"] < n_failures:
            state["failures"] += 1
            await ex.body()
            await ex.respond(503, [], b"try again")
            return
        await echo(ex)

    return handler


async def test_retry_on_5xx_moves_to_another_host(make_core, upstreams, client):
    handler = fail_first()
    ups = [await upstreams.h1(handler, name=f"h{i}") for i in range(2)]
    proxy = make_core(one_route([u.address for u in ups],
                                retry={"maxRetries": 2, "retryOn": ["5xx"]}))
    body = pattern(10_000, seed=4)
    r = await client.post(proxy.url("/"), content=body)
    assert r.status_code == 200
    # The retry replayed the body the first attempt consumed.
    assert r.json()["body_sha256"] == sha256(body)
    assert sum(u.requests for u in ups) == 2
    stats = proxy.cluster_stats()
    assert stats["rq_retry"] == 1 and stats["rq_retry_success"] == 1


async def test_retry_on_5xx_single_host(make_core, upstreams, client):
    up = await upstreams.h1(fail_first())
    proxy = make_core(one_route([up.address], retry={"maxRetries": 2, "retryOn": ["5xx"]}))
    r = await client.get(proxy.url("/"))
    assert r.status_code == 200, r.text
    assert up.requests == 2
    stats = proxy.cluster_stats()
    assert stats["rq_retry"] == 1 and stats["rq_retry_success"] == 1


async def test_retries_exhausted_return_the_last_upstream_answer(make_core, upstreams, client):
    handler = fail_first(n_failures=100)
    ups = [await upstreams.h1(handler, name=f"h{i}") for i in range(3)]
    proxy = make_core(one_route([u.address for u in ups],
                                retry={"maxRetries": 2, "retryOn": ["5xx"]}))
    r = await client.get(proxy.url("/"))
    assert (r.status_code, r.text) == (503, "try again")  # the upstream's, not a local reply
    assert sorted(u.requests for u in ups) == [1, 1, 1]  # each try on another host
    stats = proxy.cluster_stats()
    assert stats["rq_retry"] == 2 and stats["rq_retry_limit_exceeded"] == 1


async def test_appmesh_default_retry_hides_a_dead_host(make_core, upstreams, client):
    live = await upstreams.h1()
    dead = f"127.0.0.1:{closed_port()}"
    proxy = make_core(one_route([dead, live.address], retry=APPMESH_DEFAULT_RETRY))
    statuses = []
    with trio.fail_after(30):
        for _ in range(100):
            statuses.append((await client.get(proxy.url("/"))).status_code)
    assert statuses == [200] * 100
    assert live.requests == 100
    stats = proxy.cluster_stats()
    assert stats["cx_connect_fail"] > 0
    assert stats["rq_retry"] == stats["cx_connect_fail"]
    assert proxy.host_stats("c", dead)["cx_connect_fail"] == stats["cx_connect_fail"]


async def test_appmesh_default_retry_on_reset(make_core, upstreams, client):
    resets = {"left": 1}

    async def reset_once(ex: Exchange) -> None:
        if resets["left"]:
            resets["left"] -= 1
            ex.reset()
        await echo(ex)

    ups = [await upstreams.h1(reset_once, name=f"h{i}") for i in range(2)]
    proxy = make_core(one_route([u.address for u in ups], retry=APPMESH_DEFAULT_RETRY))
    r = await client.get(proxy.url("/"))
    assert r.status_code == 200
    assert proxy.cluster_stats()["rq_retry"] == 1
    await eventually(lambda: sum(u.requests for u in ups) == 2)


async def test_per_try_timeout_is_retried_on_another_host(make_core, upstreams, client):
    stalled = await upstreams.h1(stall, name="stalled")
    fast = await upstreams.h1(name="fast")
    proxy = make_core(one_route([stalled.address, fast.address], retry={
        "maxRetries": 1, "perTryTimeoutMs": 200, "retryOn": ["reset"]}))
    with trio.fail_after(20):
        for _ in range(6):
            r = await client.get(proxy.url("/"))
            assert (r.status_code, r.headers["x-server"]) == (200, "fast")
    stats = proxy.cluster_stats()
    assert stats["rq_retry"] == stalled.requests
    assert proxy.host_stats("c", stalled.address)["rq_timeout"] == stalled.requests


async def test_an_exhausted_per_try_timeout_is_504_as_in_envoy(make_core, upstreams, client):
    ups = [await upstreams.h1(stall, name=f"stalled{i}") for i in range(2)]
    proxy = make_core(one_route([u.address for u in ups], retry={
        "maxRetries": 1, "perTryTimeoutMs": 200, "retryOn": ["reset"]}))
    with trio.fail_after(20):
        r = await client.get(proxy.url("/"))
    assert r.status_code == 504
    assert r.text == "upstream request timeout\n"
    assert proxy.cluster_stats()["rq_retry"] == 1
