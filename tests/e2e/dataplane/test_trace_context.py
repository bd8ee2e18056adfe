"""The W3C `traceparent` the proxy starts for a request, as the upstream, the routes and the
access log see it. A context that is not recorded is written by hyper's HTTP/1.1 encoder
without a header-map entry unless a route or the access log reads `traceparent`: these tests
pin what must not change either way (one header upstream, the same head on every attempt, the
routes and the log seeing our value)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .support import (
    Exchange,
    cluster,
    echo,
    http_listener,
    one_route,
    prefix,
    route,
    snapshot,
    table,
    vhost,
)
from .test_request_lifecycle import wait_for_lines

NEW_UNSAMPLED = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-00$")


def unsampled(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with tracing on at 0% (W3C; no collector): every new trace is unrecorded."""
    return {**doc, "tracing": {"serviceName": "edge", "samplingPercent": 0}}


def fail_first_then_echo() -> Callable[[Exchange], Awaitable[None]]:
    """An upstream handler that answers its first request 503 and echoes every later one."""
    answered = 0

    async def handle(ex: Exchange) -> None:
        nonlocal answered
        answered += 1
        if answered == 1:
            await ex.body()
            await ex.respond(503)
        else:
            await echo(ex)

    return handle


async def test_a_new_context_goes_upstream_once_and_a_retry_resends_the_same_head(
    make_core, upstreams
):
    up = await upstreams.h1(fail_first_then_echo())
    proxy = make_core(unsampled(one_route(
        [up.address], retry={"maxRetries": 1, "retryOn": ["5xx"]})))
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(proxy.url("/orders?id=7"), content=b"hello",
                              headers={"x-custom": "1"})
        assert r.status_code == 200
        # A GET without a body, and a caller's own context, on the same upstream connection.
        caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        r = await client.get(proxy.url("/caller"), headers={"traceparent": caller})
        assert r.status_code == 200
    first, retry, with_caller = up.seen
    [value] = first.header_all("traceparent")
    assert NEW_UNSAMPLED.match(value), value
    # The retry sends the head the first attempt sent: same headers, same order, same
    # context (the span id of an unrecorded request is drawn once), same framing.
    assert retry.headers == first.headers
    assert (retry.method, retry.target) == (first.method, first.target) == ("POST", "/orders?id=7")
    assert first.header("content-length") == "5"
    assert first.header("transfer-encoding") is None
    # A caller's context continues in place: its trace, a new span id, its decision.
    [continued] = with_caller.header_all("traceparent")
    assert continued.split("-")[1] == caller.split("-")[1]
    assert continued.split("-")[3] == "00" and continued != caller


async def test_routes_that_match_traceparent_see_the_proxys_context(make_core, upstreams):
    traced, rest = await upstreams.h1(name="traced"), await upstreams.h1(name="rest")
    doc = snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [
            route("has-context", "traced", match=prefix(
                "/", headers=[{"kind": "prefix", "name": "traceparent", "value": "00-"}])),
            route("other", "rest", match=prefix("/")),
        ]))},
        [cluster("traced", [traced.address]), cluster("rest", [rest.address])],
    )
    proxy = make_core(unsampled(doc))
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(proxy.url("/"))
    assert r.status_code == 200 and r.json()["server"] == "traced"
    [seen] = traced.seen
    [value] = seen.header_all("traceparent")
    assert NEW_UNSAMPLED.match(value), value
    assert rest.seen == []


async def test_an_access_log_that_prints_traceparent_sees_the_proxys_context(
    make_core, upstreams, tmp_path
):
    up = await upstreams.h1()
    log = tmp_path / "access.log"
    doc = unsampled(one_route([up.address]))
    doc["listeners"][0]["accessLog"] = {"path": str(log), "format": {"json": [
        {"key": "tp", "value": "%REQ(TRACEPARENT)%"}]}}
    proxy = make_core(doc)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(proxy.url("/"))).status_code == 200
    [line] = await wait_for_lines(log, 1)
    [seen] = up.seen
    assert json.loads(line)["tp"] == seen.header("traceparent")
    assert len(seen.header_all("traceparent")) == 1


async def test_an_http2_upstream_gets_the_proxys_context_in_its_header_block(
    make_core, upstreams
):
    app = await upstreams.asgi()
    proxy = make_core(unsampled(one_route([app.address], "http2")))
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(proxy.url("/h2"))
    assert r.status_code == 200
    doc = r.json()
    assert doc["http_version"] == "2"
    [value] = [v for k, v in doc["headers"] if k == "traceparent"]
    assert NEW_UNSAMPLED.match(value), value


NEW_SAMPLED = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def sampled(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with tracing on at 100% (W3C; no collector): every request is recorded."""
    return {**doc, "tracing": {"serviceName": "edge", "samplingPercent": 100}}


async def test_a_recorded_requests_attempts_each_send_their_own_span_once(
    make_core, upstreams
):
    # A recorded request's attempts are CLIENT spans of one trace: each attempt sends its own
    # span as the parent, once, to an HTTP/1.1 upstream (out of the header map) and to an
    # HTTP/2 one (in its header block).
    up = await upstreams.h1(fail_first_then_echo())
    proxy = make_core(sampled(one_route(
        [up.address], retry={"maxRetries": 1, "retryOn": ["5xx"]})))
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(proxy.url("/orders?id=7"), content=b"hello")
        assert r.status_code == 200
    first, retry = up.seen
    contexts = []
    for seen in (first, retry):
        [value] = seen.header_all("traceparent")
        m = NEW_SAMPLED.match(value)
        assert m, value
        contexts.append(m.groups())
    assert contexts[0][0] == contexts[1][0] and contexts[0][1] != contexts[1][1]
    # Everything else of the head is the same on both attempts.
    without = [[(k, v) for k, v in s.headers if k != "traceparent"] for s in (first, retry)]
    assert without[0] == without[1]

    app = await upstreams.asgi()
    proxy = make_core(sampled(one_route([app.address], "http2")))
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(proxy.url("/h2"))
    assert r.status_code == 200
    [value] = [v for k, v in r.json()["headers"] if k == "traceparent"]
    assert NEW_SAMPLED.match(value), value
