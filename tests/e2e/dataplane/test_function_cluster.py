"""Function clusters (snapshot `function`, docs/snapshot.md) and `unix:/path` endpoints, through
real sockets: the hosts are HTTP/1.1 servers (h11 on Trio) listening on Unix domain sockets, as
function instances do.

- each host serves one request at a time, however many arrive at once (and the same server
  behind an ordinary cluster does get several at once, so the check can fail);
- beyond `concurrency` (in flight + waiting) a request is throttled with Lambda's 429;
- a request that finds no idle instance waits, the core emits `InstanceWanted` through the
  wake-up bridge, and the instance added with `set_endpoints` serves it;
- after `instanceWaitMs` without an instance the request is answered 503.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from meshplane._bridge import EventBridge
from meshplane._core import CoreError, InstanceWantedEvent
from meshplane.admin.prometheus import parse, render_parts

from ..asgi import lifespan
from ..common import next_event, serve_h11
from ..waiting import eventually
from .support import (
    cluster,
    http_listener,
    prefix,
    route,
    snapshot,
    table,
    tcp_listener,
    vhost,
)


@dataclass
class Instance:
    """An HTTP/1.1 server on a Unix socket. Each request is held until `gate` is set, then
    answered 200 with the instance's name; it counts requests in progress at once."""

    path: str
    name: str
    gate: trio.Event = field(default_factory=trio.Event)
    crash: bool = False
    """Close each connection on its first request, unanswered (an instance that died)."""
    active: int = 0
    max_active: int = 0
    served: int = 0

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(self.path)
        sock.listen(128)
        task_status.started(self)
        await trio.serve_listeners(self._serve, [trio.SocketListener(sock)])

    async def _serve(self, stream: trio.SocketStream) -> None:
        await serve_h11(stream, partial(self._exchange, stream))

    async def _exchange(self, stream: trio.SocketStream, conn: h11.Connection,
                        request: h11.Request) -> None:
        if self.crash:
            await stream.aclose()
            return
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        answering = False
        try:
            while not isinstance(await next_event(conn, stream), h11.EndOfMessage):
                pass
            await self.gate.wait()
            # Done before the first response byte goes out: the core cannot have seen the
            # end of this response before it is counted done.
            answering = True
            self.active -= 1
            self.served += 1
            body = self.name.encode()
            await stream.send_all(conn.send(h11.Response(
                status_code=200, headers=[("content-length", str(len(body)))])))
            await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        finally:
            if not answering:
                self.active -= 1


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for socket paths (a Unix socket path is at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="mp-fn-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def start(nursery: trio.Nursery, sock_dir: Path, name: str) -> Instance:
    inst: Instance = await nursery.start(Instance(str(sock_dir / f"{name}.sock"), name).run)
    return inst


def function_doc(endpoints: list[str], *, concurrency: int | None, wait_ms: int = 30_000,
                 retry: bool = False, protocol: str = "http1",
                 timeout_ms: int = 60_000) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if concurrency is not None:
        extra["function"] = {"concurrency": concurrency, "instanceWaitMs": wait_ms}
    action: dict[str, Any] = {"timeoutMs": timeout_ms}
    if retry:
        action["retry"] = {"maxRetries": 2, "retryOn": ["connect-failure", "reset"]}
    return snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [route("r", "c", match=prefix("/"), **action)]))},
        [cluster("c", endpoints, protocol, **extra)],
    )


async def get(client: httpx.AsyncClient, url: str, out: list[httpx.Response]) -> None:
    out.append(await client.get(url))


async def test_each_instance_serves_one_request_at_a_time(make_core, nursery, sock_dir, client):
    a = await start(nursery, sock_dir, "a")
    b = await start(nursery, sock_dir, "b")
    proxy = make_core(function_doc([a.address, b.address], concurrency=10))
    url = proxy.url("/")
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        for _ in range(6):
            requests.start_soon(get, client, url, responses)
        # Two in flight (one per instance), four waiting for an instance.
        await eventually(lambda: a.active == 1 and b.active == 1
                         and proxy.cluster_stats()["rq_waiting"] == 4,
                         what="2 requests in flight and 4 waiting")
        stats = proxy.cluster_stats()
        assert stats["function"]["busy_hosts"] == 2
        assert stats["function"]["in_flight"] == 2
        assert all(h["busy"] for h in stats["hosts"].values())
        a.gate.set()
        b.gate.set()
    assert [r.status_code for r in responses] == [200] * 6
    assert (a.max_active, b.max_active) == (1, 1)
    assert a.served + b.served == 6
    stats = proxy.cluster_stats()
    assert (stats["rq_waiting"], stats["function"]["busy_hosts"], stats["rq_throttled"]) == (0, 0, 0)
    kinds = [e.kind for e in proxy.core.drain_events()]
    assert kinds.count("instance_wanted") == 4, kinds


async def test_an_ordinary_cluster_sends_an_instance_several_requests(make_core, nursery,
                                                                      sock_dir, client):
    """The control for the test above: the same server behind a cluster without `function`
    (a `unix:` endpoint of an ordinary cluster) gets requests concurrently."""
    a = await start(nursery, sock_dir, "a")
    proxy = make_core(function_doc([a.address], concurrency=None))
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        for _ in range(3):
            requests.start_soon(get, client, proxy.url("/"), responses)
        await eventually(lambda: a.active == 3, what="3 requests at the instance at once")
        a.gate.set()
    assert [r.status_code for r in responses] == [200] * 3
    assert [r.text for r in responses] == ["a"] * 3
    assert "function" not in proxy.cluster_stats()


async def test_the_concurrency_limit_throttles_with_lambdas_429(make_core, nursery, sock_dir,
                                                               client):
    a = await start(nursery, sock_dir, "a")
    proxy = make_core(function_doc([a.address], concurrency=2))
    url = proxy.url("/")
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        for _ in range(2):
            requests.start_soon(get, client, url, responses)
        await eventually(lambda: a.active == 1 and proxy.cluster_stats()["rq_waiting"] == 1,
                         what="one request in flight, one waiting")
        throttled = await client.get(url)
        assert throttled.status_code == 429
        assert throttled.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert throttled.headers["content-type"] == "application/json"
        assert throttled.json() == {"Type": "User", "message": "Rate Exceeded."}
        assert proxy.cluster_stats()["rq_throttled"] == 1
        a.gate.set()
    assert [r.status_code for r in responses] == [200, 200]
    stats = proxy.cluster_stats()
    assert stats["rq_throttled"] == 1
    assert stats["rq_codes"]["429"] == 1
    # Under the limit again: served.
    assert (await client.get(url)).status_code == 200


async def test_a_waiting_request_gets_the_instance_added_after_the_event(make_core, nursery,
                                                                        sock_dir, client):
    proxy = make_core(function_doc([], concurrency=5, wait_ms=60_000))
    bridge = EventBridge(proxy.core)
    wanted = bridge.subscribe("instance_wanted")
    await nursery.start(bridge.run)
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        requests.start_soon(get, client, proxy.url("/"), responses)
        with trio.fail_after(30):
            event = await wanted.receive()
        assert isinstance(event, InstanceWantedEvent)
        assert (event.kind, event.cluster, event.waiting, event.busy, event.hosts) == (
            "instance_wanted", "c", 1, 0, 0)
        assert responses == []
        inst = await start(nursery, sock_dir, "cold")
        inst.gate.set()
        proxy.core.set_endpoints("c", [(inst.address, 1)])
    assert [(r.status_code, r.text) for r in responses] == [(200, "cold")]
    stats = proxy.cluster_stats()
    assert stats["rq_waiting"] == 0
    assert stats["hosts"][inst.address]["rq_total"] == 1
    # Warm now: the next request is served at once, with no new event.
    assert (await client.get(proxy.url("/"))).text == "cold"
    assert not [e for e in proxy.core.drain_events() if e.kind == "instance_wanted"]


async def test_no_instance_within_instance_wait_ms_is_503(make_core, client):
    proxy = make_core(function_doc([], concurrency=5, wait_ms=50))
    r = await client.get(proxy.url("/"))
    assert r.status_code == 503
    assert "no healthy upstream" in r.text
    stats = proxy.cluster_stats()
    assert (stats["rq_instance_wait_timeout"], stats["rq_waiting"], stats["rq_throttled"]) == (
        1, 0, 0)
    assert stats["rq_codes"]["503"] == 1


async def test_the_route_timeout_covers_the_wait_for_an_instance(make_core, client):
    proxy = make_core(function_doc([], concurrency=5, wait_ms=60_000, timeout_ms=50))
    r = await client.get(proxy.url("/"))
    assert (r.status_code, r.text) == (504, "upstream request timeout\n")
    stats = proxy.cluster_stats()
    assert (stats["rq_timeout"], stats["rq_instance_wait_timeout"], stats["rq_waiting"]) == (1, 0, 0)


async def test_a_dead_socket_is_a_connect_failure_and_a_replaced_host_is_gone(
        make_core, nursery, sock_dir, client):
    a = await start(nursery, sock_dir, "a")
    a.gate.set()
    missing = f"unix:{sock_dir / 'nobody.sock'}"
    proxy = make_core(function_doc([missing], concurrency=5, wait_ms=60_000))
    r = await client.get(proxy.url("/"))
    assert r.status_code == 503
    assert proxy.cluster_stats()["cx_connect_fail"] == 1
    proxy.core.set_endpoints("c", [(a.address, 1)])
    assert (await client.get(proxy.url("/"))).text == "a"
    assert missing not in proxy.cluster_stats()["hosts"]


def test_unix_addresses_are_checked_where_endpoints_are_given(make_core):
    proxy = make_core(function_doc([], concurrency=1))
    with pytest.raises(CoreError, match="absolute"):
        proxy.core.set_endpoints("c", [("unix:relative.sock", 1)])
    with pytest.raises(CoreError, match="not a host"):
        proxy.core.set_host_health("c", "unix:/nowhere.sock", False)
    bad = function_doc(["unix:relative.sock"], concurrency=1)
    with pytest.raises(CoreError) as e:
        proxy.apply(bad)
    assert e.value.path == "clusters[0].endpoints[0].address"
    tcp = function_doc([], concurrency=1)
    tcp["clusters"][0]["protocol"] = "tcp"
    with pytest.raises(CoreError) as e:
        proxy.apply(tcp)
    assert e.value.path == "clusters[0].function"
    assert proxy.core.version() == "v1", "a refused apply changes nothing"


async def test_a_retry_leaves_a_dead_instance_for_another(make_core, nursery, sock_dir, client):
    dead = await start(nursery, sock_dir, "dead")
    dead.crash = True
    live = await start(nursery, sock_dir, "live")
    live.gate.set()
    proxy = make_core(function_doc([dead.address, live.address], concurrency=5, retry=True))
    r = await client.get(proxy.url("/"))
    assert (r.status_code, r.text) == (200, "live")
    stats = proxy.cluster_stats()
    assert stats["rq_retry"] == 1
    assert stats["hosts"][dead.address]["rq_error"] == 1
    assert (stats["function"]["in_flight"], stats["function"]["busy_hosts"]) == (0, 0)


async def test_http2_over_a_unix_socket(make_core, nursery, sock_dir, client):
    """hypercorn (h2c prior knowledge) on a Unix socket behind an http2 function cluster."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        seen.append(scope["http_version"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["http_version"].encode()})

    path = sock_dir / "h2.sock"
    config = HypercornConfig()
    config.bind = [f"unix:{path}"]
    config.accesslog = None
    config.errorlog = None
    await nursery.start(partial(hypercorn_serve, app, config))
    proxy = make_core(function_doc([f"unix:{path}"], concurrency=3, protocol="http2"))
    for _ in range(3):
        r = await client.get(proxy.url("/"))
        assert (r.status_code, r.text) == (200, "2")
    assert seen == ["2", "2", "2"]
    stats = proxy.cluster_stats()
    assert stats["cx_total"] == 1, "one HTTP/2 connection carried every request"
    assert stats["function"]["in_flight"] == 0


async def test_a_tcp_listener_proxies_to_a_unix_socket(make_core, nursery, sock_dir):
    path = str(sock_dir / "echo.sock")

    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data.upper())

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(8)
    nursery.start_soon(trio.serve_listeners, echo, [trio.SocketListener(sock)])
    proxy = make_core(snapshot([tcp_listener("l", "c")], {}, [cluster("c", [f"unix:{path}"], "tcp")]))
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port())
    async with stream:
        await stream.send_all(b"hello")
        got = b""
        with trio.fail_after(10):
            while got != b"HELLO":
                got += await stream.receive_some(64)
    assert proxy.cluster_stats()["hosts"][f"unix:{path}"]["cx_total"] == 1


async def test_an_unhealthy_instance_is_skipped_and_one_turning_healthy_serves_a_waiter(
        make_core, nursery, sock_dir, client):
    a = await start(nursery, sock_dir, "a")
    b = await start(nursery, sock_dir, "b")
    a.gate.set()
    b.gate.set()
    proxy = make_core(function_doc([a.address, b.address], concurrency=5, wait_ms=60_000))
    proxy.core.set_host_health("c", a.address, False)
    assert [(await client.get(proxy.url("/"))).text for _ in range(3)] == ["b"] * 3
    proxy.core.set_host_ejected("c", b.address, True)
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        requests.start_soon(get, client, proxy.url("/"), responses)
        await eventually(lambda: proxy.cluster_stats()["rq_waiting"] == 1,
                         what="the request waiting: no healthy instance")
        proxy.core.set_host_health("c", a.address, True)
    assert [(r.status_code, r.text) for r in responses] == [(200, "a")]
    assert a.served == 1


async def test_an_apply_that_adds_an_instance_serves_the_waiting_request(make_core, nursery,
                                                                        sock_dir, client):
    proxy = make_core(function_doc([], concurrency=5, wait_ms=60_000))
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        requests.start_soon(get, client, proxy.url("/"), responses)
        await eventually(lambda: proxy.cluster_stats()["rq_waiting"] == 1,
                         what="the request waiting for an instance")
        inst = await start(nursery, sock_dir, "applied")
        inst.gate.set()
        doc = function_doc([inst.address], concurrency=5, wait_ms=60_000)
        doc["version"] = "v2"
        proxy.apply(doc)
    assert [(r.status_code, r.text) for r in responses] == [(200, "applied")]
    assert proxy.cluster_stats()["function"]["in_flight"] == 0


async def test_update_endpoints_hands_a_unix_instance_to_a_waiter_and_retires_a_removed_one(
        make_core, nursery, sock_dir, client):
    """The delta API (`Core.update_endpoints`) keys hosts by their address, Unix sockets too:
    an instance added by a delta serves the waiting request; flags reach it by its `unix:`
    address; a delta that removes it leaves the other instance serving."""
    a = await start(nursery, sock_dir, "a")
    b = await start(nursery, sock_dir, "b")
    a.gate.set()
    b.gate.set()
    proxy = make_core(function_doc([], concurrency=5, wait_ms=60_000))
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        requests.start_soon(get, client, proxy.url("/"), responses)
        await eventually(lambda: proxy.cluster_stats()["rq_waiting"] == 1,
                         what="the request waiting for an instance")
        proxy.core.update_endpoints("c", [(a.address, 1)])
    assert [(r.status_code, r.text) for r in responses] == [(200, "a")]
    proxy.core.update_endpoints("c", [(b.address, 1)])
    proxy.core.set_host_ejected("c", a.address, True)
    assert [(await client.get(proxy.url("/"))).text for _ in range(3)] == ["b"] * 3
    proxy.core.set_host_ejected("c", a.address, False)
    proxy.core.update_endpoints("c", remove=[b.address])
    assert list(proxy.cluster_stats()["hosts"]) == [a.address]
    assert [(await client.get(proxy.url("/"))).text for _ in range(3)] == ["a"] * 3
    with pytest.raises(CoreError, match="not a host"):
        proxy.core.set_host_health("c", b.address, False)
    with pytest.raises(CoreError, match="absolute"):
        proxy.core.update_endpoints("c", [("unix:relative.sock", 1)])
    assert list(proxy.cluster_stats()["hosts"]) == [a.address]


async def test_the_core_writes_function_hosts_as_the_python_renderer_does(
        make_core, nursery, sock_dir, client):
    """`Core.host_metrics()` against `admin.prometheus.render` of a full `Core.stats()`, with
    an ordinary cluster sorting first (its hosts have no `busy`), a function cluster's host
    busy and one idle; `stats(hosts=False)` keeps the `function` section."""
    a = await start(nursery, sock_dir, "a")
    b = await start(nursery, sock_dir, "b")
    doc = function_doc([a.address, b.address], concurrency=5)
    doc["clusters"].insert(0, cluster("an-ordinary", ["127.0.0.1:1"]))
    proxy = make_core(doc)
    core = proxy.core

    def same_text() -> str:
        full, lean = core.stats(), core.stats(hosts=False)
        head, hosts, tail = render_parts(full)
        lean_head, lean_hosts, lean_tail = render_parts(lean)
        assert lean_hosts == ""
        assert lean["clusters"]["c"]["function"] == full["clusters"]["c"]["function"]
        assert lean["clusters"]["c"]["membership"] == {"total": 2, "healthy": 2}
        text = core.host_metrics().decode()
        assert text == hosts
        assert (lean_head, lean_tail) == (head, tail)
        return text

    text = same_text()
    assert text.count("meshplane_host_busy{") == 2
    assert 'meshplane_host_busy{cluster="an-ordinary"' not in text
    responses: list[httpx.Response] = []
    async with trio.open_nursery() as requests:
        requests.start_soon(get, client, proxy.url("/"), responses)
        await eventually(lambda: a.active + b.active == 1, what="one instance busy")
        samples = parse(same_text())
        busy = {labels[1][1]: v for (name, labels), v in samples.items()
                if name == "meshplane_host_busy"}
        assert sorted(busy.values()) == [0, 1]
        a.gate.set()
        b.gate.set()
    assert [r.status_code for r in responses] == [200]
    same_text()
