"""Snapshot applies while traffic flows: hot applies lose no request and take effect at once,
an invalid snapshot changes nothing (an address in use included: what the apply had bound is
closed again), unchanged listeners keep their sockets and connections, a listener whose address
is unchanged keeps its socket through a protocol or name change, and a removed listener stops
accepting (after finishing what it had in flight)."""

from __future__ import annotations

import errno
import json
import socket
from typing import Any

import httpx
import pytest
import trio
from meshplane._core import Core, CoreError, StoppedEvent

from ..common import closed_port
from ..waiting import eventually, until_set
from .support import (
    Exchange,
    H1Upstream,
    Handler,
    Proxy,
    TcpEcho,
    cluster,
    echo,
    http_listener,
    one_route,
    prefix,
    route,
    snapshot,
    stop_core,
    table,
    tcp_listener,
    vhost,
)


def routing(ups: dict[str, H1Upstream], weights: list[tuple[str, int]], *,
            green_endpoints: list[str] | None = None, extra_listener: bool = False,
            version: str = "v1") -> dict[str, Any]:
    listeners = [http_listener("l")]
    if extra_listener:
        listeners.append(http_listener("extra"))
    return snapshot(
        listeners,
        {"t": table(vhost("vh", [route("r", weights, match=prefix("/"))]))},
        [cluster("blue", [ups["blue"].address]),
         cluster("green", green_endpoints or [ups["green"].address])],
        version=version,
    )


def echo_after(gate: trio.Event) -> Handler:
    """A handler that holds each request until `gate` is set, then echoes it."""

    async def gated(ex: Exchange) -> None:
        await gate.wait()
        await echo(ex)

    return gated


async def make_upstreams(upstreams: Any) -> dict[str, H1Upstream]:
    return {n: await upstreams.h1(name=n) for n in ("blue", "green", "red")}


async def test_hot_apply_under_load_loses_nothing(make_core, upstreams):
    ups = await make_upstreams(upstreams)
    proxy = make_core(routing(ups, [("blue", 1)]))
    url = proxy.url("/")
    done = 0
    failures: list[str] = []
    final_applied = False
    after_final: list[str] = []
    stop = trio.Event()

    async def worker(h2: bool) -> None:
        nonlocal done
        async with httpx.AsyncClient(trust_env=False, timeout=10, http1=not h2, http2=h2) as c:
            for _ in until_set(stop):
                started_after_final = final_applied
                try:
                    r = await c.get(url)
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                done += 1
                if started_after_final:
                    after_final.append(r.headers["x-server"])

    plans = [
        dict(weights=[("blue", 1)]),
        dict(weights=[("green", 1)]),
        dict(weights=[("blue", 1), ("green", 1)], extra_listener=True),
        dict(weights=[("blue", 1), ("green", 3)], green_endpoints=[ups["red"].address]),
        dict(weights=[("green", 1)], green_endpoints=[ups["green"].address, ups["red"].address],
             extra_listener=True),
    ]
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            for h2 in (False, False, True):
                n.start_soon(worker, h2)
            for i in range(20):
                # Pace applies by traffic, not by the clock: some requests between each.
                target = done + 10
                await eventually(lambda t=target: done >= t or bool(failures),
                                 what="traffic between applies")
                proxy.apply(routing(ups, version=f"v{i + 2}", **plans[i % len(plans)]))
            proxy.apply(routing(ups, [("green", 1)], version="final"))
            final_applied = True
            await eventually(lambda: len(after_final) >= 30 or bool(failures),
                             what="requests after the final apply")
            stop.set()
    assert failures == []
    assert proxy.core.version() == "final"
    # Every request that started after the last apply saw the new routing.
    assert set(after_final) == {"green"}
    assert all(u.requests > 0 for u in ups.values())  # every routing was really used
    assert "extra" not in proxy.core.listeners()


def port_in_use() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


async def test_invalid_snapshot_changes_nothing(make_core, upstreams, client):
    ups = await make_upstreams(upstreams)
    good = routing(ups, [("blue", 1)], version="good")
    proxy = make_core(good)
    port = proxy.port()
    holder, busy = port_in_use()

    def bad_regex() -> dict[str, Any]:
        doc = routing(ups, [("green", 1)], version="bad")
        doc["routeTables"]["t"]["virtualHosts"][0]["routes"][0]["match"] = {
            "path": {"kind": "regex", "value": "/(unclosed"}}
        return doc

    def unknown_cluster() -> dict[str, Any]:
        return routing(ups, [("nope", 1)], version="bad")

    def unknown_field() -> dict[str, Any]:
        doc = routing(ups, [("green", 1)], version="bad")
        doc["clusters"][0]["surprise"] = True
        return doc

    def bind_conflict() -> dict[str, Any]:
        doc = routing(ups, [("green", 1)], version="bad")
        doc["listeners"].append(http_listener("ghost", address=f"127.0.0.1:{busy}"))
        return doc

    cases = [
        (bad_regex(), "routeTables.t.virtualHosts[0].routes[0].match.path.value"),
        (unknown_cluster(), "routeTables.t.virtualHosts[0].routes[0].action.clusters[0].cluster"),
        (unknown_field(), "line 1 column"),
        (bind_conflict(), "listeners[1].address"),
    ]
    try:
        for doc, path in cases:
            with pytest.raises(CoreError) as info:
                proxy.apply(doc)
            assert info.value.kind == "config"
            assert info.value.path is not None and info.value.path.startswith(path), (
                info.value.path, str(info.value))
            assert proxy.core.version() == "good"
            assert proxy.core.listeners() == {"l": ("127.0.0.1", port)}
            r = await client.get(proxy.url("/"))
            assert r.headers["x-server"] == "blue"
        with pytest.raises(CoreError) as info:
            proxy.core.apply(b'{"schema": 1, "version": ')
        assert info.value.path.startswith("line 1")
    finally:
        holder.close()
    assert ups["green"].requests == 0
    assert proxy.core.version() == "good"


async def tcp_round_trip(port: int, data: bytes) -> bytes:
    """Send `data` through 127.0.0.1:`port`, half-close, and read everything that comes back."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            await stream.send_eof()
            got = b""
            while chunk := await stream.receive_some(65536):
                got += chunk
            return got


def http_and_tcp(ups: dict[str, H1Upstream], echo_up: TcpEcho,
                 listeners: list[dict[str, Any]], version: str) -> dict[str, Any]:
    """`listeners` routed to "blue" (http) or the TCP echo server "echo" (tcp)."""
    return snapshot(
        listeners,
        {"t": table(vhost("vh", [route("r", "blue", match=prefix("/"))]))},
        [cluster("blue", [ups["blue"].address]),
         cluster("echo", [echo_up.address], protocol="tcp")],
        version=version,
    )


async def test_apply_that_cannot_bind_starts_nothing(make_core, upstreams, client):
    # The new version turns "l" into a TCP listener, adds "fresh" on a free port (bound first)
    # and "ghost" on a port a real socket holds: the apply fails, "fresh" is closed again, and
    # "l" still serves HTTP on the old version.
    ups = await make_upstreams(upstreams)
    echo_up = await upstreams.tcp_echo()
    proxy = make_core(http_and_tcp(ups, echo_up, [http_listener("l")], "good"))
    port = proxy.port()
    holder, busy = port_in_use()
    fresh = closed_port()
    doc = http_and_tcp(ups, echo_up, [
        tcp_listener("l", "echo"),
        tcp_listener("fresh", "echo", address=f"127.0.0.1:{fresh}"),
        http_listener("ghost", address=f"127.0.0.1:{busy}"),
    ], "bad")
    try:
        with pytest.raises(CoreError) as info:
            proxy.apply(doc)
    finally:
        holder.close()
    assert info.value.path == "listeners[2].address"
    assert "cannot bind" in str(info.value)
    assert proxy.core.version() == "good"
    assert proxy.core.listeners() == {"l": ("127.0.0.1", port)}
    assert connect_refused(fresh)
    r = await client.get(proxy.url("/"))
    assert (r.status_code, r.headers["x-server"]) == (200, "blue")
    assert echo_up.accepted == 0
    # With the port free again, the same document applies.
    assert proxy.apply(doc) == "bad"
    assert await tcp_round_trip(fresh, b"fresh") == b"fresh"
    r = await client.get(f"http://127.0.0.1:{busy}/")
    assert (r.status_code, r.headers["x-server"]) == (200, "blue")


async def test_protocol_change_keeps_the_socket(make_core, upstreams, client):
    ups = await make_upstreams(upstreams)
    echo_up = await upstreams.tcp_echo()
    proxy = make_core(http_and_tcp(ups, echo_up, [http_listener("l")], "v1"))
    port = proxy.port()
    assert (await client.get(proxy.url("/"))).headers["x-server"] == "blue"

    # Same name, same address ("127.0.0.1:0"), http -> tcp: the ephemeral port stays.
    proxy.apply(http_and_tcp(ups, echo_up, [tcp_listener("l", "echo")], "v2"))
    assert proxy.core.listeners() == {"l": ("127.0.0.1", port)}
    assert await tcp_round_trip(port, b"GET / HTTP/1.1\r\n\r\n") == b"GET / HTTP/1.1\r\n\r\n"
    assert echo_up.accepted == 1

    # tcp -> http, and a new name on the now fixed address.
    fixed = f"127.0.0.1:{port}"
    proxy.apply(http_and_tcp(ups, echo_up, [http_listener("renamed", address=fixed)], "v3"))
    assert proxy.core.listeners() == {"renamed": ("127.0.0.1", port)}
    async with httpx.AsyncClient(trust_env=False, timeout=10) as fresh_client:
        r = await fresh_client.get(f"http://{fixed}/")
    assert (r.status_code, r.headers["x-server"]) == (200, "blue")
    assert proxy.stats()["listeners"]["renamed"]["cx_total"] == 1

    # Two listeners on fixed addresses trade them: each socket serves the other's protocol.
    other = closed_port()
    proxy.apply(http_and_tcp(ups, echo_up, [
        http_listener("a", address=fixed),
        tcp_listener("b", "echo", address=f"127.0.0.1:{other}"),
    ], "v4"))
    proxy.apply(http_and_tcp(ups, echo_up, [
        tcp_listener("a", "echo", address=f"127.0.0.1:{other}"),
        http_listener("b", address=fixed),
    ], "v5"))
    assert proxy.core.listeners() == {"a": ("127.0.0.1", other), "b": ("127.0.0.1", port)}
    assert await tcp_round_trip(other, b"traded") == b"traded"
    async with httpx.AsyncClient(trust_env=False, timeout=10) as fresh_client:
        r = await fresh_client.get(f"http://{fixed}/")
    assert (r.status_code, r.headers["x-server"]) == (200, "blue")


async def test_protocol_change_lets_the_request_in_flight_finish(make_core, upstreams):
    gate = trio.Event()
    gated = echo_after(gate)
    up = await upstreams.h1(gated, name="blue")
    echo_up = await upstreams.tcp_echo()
    ups = {"blue": up}
    proxy = make_core(http_and_tcp(ups, echo_up, [http_listener("l")], "v1"))
    port = proxy.port()
    results: list[tuple[int, str]] = []

    async def in_flight() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
            r = await c.get(f"http://127.0.0.1:{port}/slow")
            results.append((r.status_code, r.headers.get("connection", "")))

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(in_flight)
            await eventually(lambda: up.active == 1, what="the in-flight request")
            proxy.apply(http_and_tcp(ups, echo_up, [tcp_listener("l", "echo")], "v2"))
            # New connections are TCP at once, while the HTTP request is still held.
            assert await tcp_round_trip(port, b"now tcp") == b"now tcp"
            assert up.active == 1
            gate.set()
    # The HTTP connection finished its request, then was closed (it drains).
    assert results == [(200, "close")]


async def test_failed_apply_leaves_no_stats_behind(make_core, upstreams):
    ups = await make_upstreams(upstreams)
    proxy = make_core(routing(ups, [("blue", 1)], version="good"))
    before = proxy.stats()
    holder, busy = port_in_use()
    doc = routing(ups, [("green", 1)], version="bad")
    doc["listeners"].append(http_listener("ghost", address=f"127.0.0.1:{busy}"))
    doc["routeTables"]["t"]["virtualHosts"][0]["routes"][0]["name"] = "ghost-route"
    try:
        with pytest.raises(CoreError):
            proxy.apply(doc)
    finally:
        holder.close()
    after = proxy.stats()
    assert set(after["listeners"]) == set(before["listeners"]) == {"l"}
    assert set(after["routes"]) == set(before["routes"]) == {"r"}


async def test_unchanged_listener_keeps_port_and_connections(make_core, upstreams, client):
    ups = await make_upstreams(upstreams)
    proxy = make_core(routing(ups, [("blue", 1)]))
    port = proxy.port()
    assert (await client.get(proxy.url("/"))).headers["x-server"] == "blue"
    proxy.apply(routing(ups, [("green", 1)], extra_listener=True, version="v2"))
    assert proxy.port() == port
    r = await client.get(proxy.url("/"))
    assert r.headers["x-server"] == "green"
    # Same downstream connection: the listener accepted only one.
    assert proxy.stats()["listeners"]["l"]["cx_total"] == 1


def connect_refused(port: int) -> bool:
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
    except OSError as e:
        return e.errno == errno.ECONNREFUSED
    finally:
        s.close()
    return False


async def test_removed_listener_stops_accepting_after_draining(make_core, upstreams):
    gate = trio.Event()
    gated = echo_after(gate)
    up = await upstreams.h1(gated)
    doc = snapshot([http_listener("l"), http_listener("extra")],
                   {"t": table(vhost("vh", [route("r", "c", match=prefix("/"))]))},
                   [cluster("c", [up.address])])
    proxy: Proxy = make_core(doc)
    extra = proxy.port("extra")
    results: list[int] = []

    async def in_flight() -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
            results.append((await c.get(f"http://127.0.0.1:{extra}/slow")).status_code)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(in_flight)
            await eventually(lambda: up.active == 1, what="the in-flight request")
            doc["listeners"] = doc["listeners"][:1]
            proxy.apply(doc)
            assert set(proxy.core.listeners()) == {"l"}
            await eventually(lambda: connect_refused(extra), what="the removed listener to close")
            gate.set()
    assert results == [200]  # the request in flight on the removed listener finished


async def test_shutdown_drains_in_flight_then_reports_stopped(upstreams):
    gate = trio.Event()
    gated = echo_after(gate)
    up = await upstreams.h1(gated)
    core = Core(2)
    events: list[Any] = []
    try:
        core.apply(json.dumps(one_route([up.address])).encode())
        port = core.listeners()["l"][1]
        results: list[int] = []

        async def in_flight() -> None:
            async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
                results.append((await c.get(f"http://127.0.0.1:{port}/")).status_code)

        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                n.start_soon(in_flight)
                await eventually(lambda: up.active == 1, what="the in-flight request")
                core.shutdown(5000)
                await eventually(lambda: connect_refused(port), what="the listener to close")
                assert core.drain_events() == []  # still draining
                gate.set()
            # The bridge's way: wait on the wake-up fd, then drain.
            while not events:
                await trio.lowlevel.wait_readable(core.wakeup_fd())
                events = core.drain_events()
        assert results == [200]
        assert events == [StoppedEvent(clean=True, open=0)]
    finally:
        if not events:
            stop_core(core)


async def test_dropped_events_are_counted_by_the_core(make_core, upstreams, client):
    # Nothing is dropped while Python drains; the method and the stats key are the same count.
    up = await upstreams.h1()
    proxy = make_core(one_route([up.address]))
    assert (await client.get(proxy.url("/"))).status_code == 200
    assert proxy.core.events_dropped() == proxy.stats()["core_events_dropped"] == 0
