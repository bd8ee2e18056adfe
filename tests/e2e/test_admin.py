"""The admin API and `Proxy` over real sockets: a hypercorn upstream, the core, httpx clients.

Ports are bound on 0 and read back; readiness is awaited (`nursery.start`), never slept for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import h11
import httpx
import trio
from meshplane import ConfigError, Proxy, serve
from meshplane.admin.prometheus import parse

from .asgi import lifespan, serve_asgi
from .waiting import eventually

pytestmark = pytest.mark.e2e

GATEWAY_PORT = 8080


async def upstream_app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """A tiny ASGI service that names itself and echoes the path and Host it received."""
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    body = json.dumps({"service": "api", "path": scope["path"], "host": headers.get("host")}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def upstream_port(nursery: trio.Nursery) -> int:
    return await serve_asgi(nursery, upstream_app)


def mesh(upstream: int, *, weight_v2: int = 0, discovery: dict[str, Any] | None = None) -> dict[str, Any]:
    """A gateway -> virtual service -> router -> node config in front of the upstream."""
    node_port = upstream if discovery else 8080
    sd = discovery or {"static": {"endpoints": [f"127.0.0.1:{upstream}"]}}
    targets = [{"virtualNode": "api-v1", "weight": 100 - weight_v2}]
    if weight_v2:
        targets.append({"virtualNode": "api-v2", "weight": weight_v2})
    nodes = [
        {"kind": "VirtualNode", "name": name, "spec": {
            "listeners": [{"portMapping": {"port": node_port, "protocol": "http"}}],
            "serviceDiscovery": sd,
        }}
        for name in ("api-v1", "api-v2")
    ]
    return {
        "mesh": "shop",
        "proxy": {"gateway": "edge", "admin": "127.0.0.1:0", "bind": "127.0.0.1", "ports": {GATEWAY_PORT: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge", "spec": {
                "listeners": [{"portMapping": {"port": GATEWAY_PORT, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "api", "virtualGatewayName": "edge", "spec": {
                "httpRoute": {"match": {"prefix": "/"},
                              "action": {"target": {"virtualService": {"virtualServiceName": "api.shop.local"}}}}}},
            {"kind": "VirtualService", "name": "api.shop.local", "spec": {
                "provider": {"virtualRouter": {"virtualRouterName": "api-router"}}}},
            {"kind": "VirtualRouter", "name": "api-router", "spec": {
                "listeners": [{"portMapping": {"port": node_port, "protocol": "http"}}]}},
            {"kind": "Route", "name": "all", "virtualRouterName": "api-router", "spec": {
                "httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": targets}}}},
            *nodes,
        ],
    }


@pytest.fixture
async def proxy(upstream_port: int) -> AsyncIterator[Proxy]:
    async with Proxy(mesh(upstream_port), admin="127.0.0.1:0", drain_ms=500) as running:
        yield running


def admin_url(proxy: Proxy, path: str) -> str:
    assert proxy.admin_address is not None
    host, port = proxy.admin_address
    return f"http://{host}:{port}{path}"


async def get_through(proxy: Proxy, n: int, path: str = "/items") -> list[httpx.Response]:
    port = proxy.port(GATEWAY_PORT)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        return [await client.get(path) for _ in range(n)]


async def admin_get(proxy: Proxy, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(admin_url(proxy, path))


async def raw_exchange(proxy: Proxy, data: bytes) -> bytes:
    """Send raw bytes to the admin port and read until the server closes the connection."""
    assert proxy.admin_address is not None
    stream = await trio.open_tcp_stream(*proxy.admin_address)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


async def test_requests_flow_through_the_gateway(proxy: Proxy) -> None:
    responses = await get_through(proxy, 3)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].json()["service"] == "api"
    assert set(proxy.ports) >= {f"gateway/edge/{GATEWAY_PORT}"}
    assert proxy.port(GATEWAY_PORT) == proxy.ports[f"gateway/edge/{GATEWAY_PORT}"] != 0


async def test_ready(proxy: Proxy) -> None:
    response = await admin_get(proxy, "/ready")
    assert (response.status_code, response.text) == (200, "LIVE\n")
    assert proxy.state == "LIVE"


async def test_stats_is_prometheus_text_that_counts_our_requests(proxy: Proxy) -> None:
    await get_through(proxy, 5)
    response = await admin_get(proxy, "/stats")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)

    def total(name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in samples.items()
                   if n == name and all((k, val) in ls for k, val in labels.items()))

    assert total("meshplane_cluster_upstream_rq_total") == 5
    assert total("meshplane_cluster_upstream_rq_xx_total", response_code_class="2") == 5
    assert total("meshplane_cluster_upstream_rq_time_seconds_count") == 5
    assert total("meshplane_host_rq_total") == 5
    assert total("meshplane_config_info", version=proxy.version or "") == 1
    raw = await admin_get(proxy, "/stats?format=json")
    assert raw.headers["content-type"] == "application/json"
    assert sum(c.get("rq_total", 0) for c in raw.json()["clusters"].values()) == 5
    # The control layer's own losses: nothing dropped or failed, and the counters are there.
    assert raw.json()["control"] == {
        "events_dropped": {"outlier": 0, "stopped": 0, "instance_wanted": 0},
        "driver_errors": {"health_check": 0, "outlier_detection": 0, "functions": 0},
    }
    assert total("meshplane_control_events_dropped_total", kind="outlier") == 0
    assert ("meshplane_control_driver_errors_total", (("driver", "outlier_detection"),)) in samples


async def test_stats_count_the_events_the_core_dropped(proxy: Proxy) -> None:
    # The core's event queue drops events past 65,536 unread ones; the count is a counter.
    response = await admin_get(proxy, "/stats")
    assert "# TYPE meshplane_server_core_events_dropped_total counter\n" in response.text
    assert parse(response.text)[("meshplane_server_core_events_dropped_total", ())] == 0
    raw = (await admin_get(proxy, "/stats?format=json")).json()
    assert raw["core_events_dropped"] == 0


async def test_clusters_shows_the_hosts(proxy: Proxy, upstream_port: int) -> None:
    await get_through(proxy, 2)
    text = (await admin_get(proxy, "/clusters")).text
    host = f"127.0.0.1:{upstream_port}"
    lines = [line for line in text.splitlines() if f"::{host}::" in line]
    assert any(line.endswith("::health_flags::healthy") for line in lines), text
    assert any("::weight::" in line for line in lines), text
    assert any(line.endswith("::rq_active::0") for line in lines), text
    rq_total = sum(int(line.rsplit("::", 1)[1]) for line in lines if "::rq_total::" in line)
    assert rq_total == 2, text
    doc = (await admin_get(proxy, "/clusters?format=json")).json()
    hosts = [h for c in doc["cluster_statuses"] for h in c["host_statuses"]]
    assert {h["address"] for h in hosts} == {host}
    assert all(h["health_status"]["healthy"] for h in hosts)


async def test_config_dump_shows_the_running_version(proxy: Proxy) -> None:
    doc = (await admin_get(proxy, "/config_dump")).json()
    assert doc["version"] == proxy.version
    assert doc["snapshot"]["version"] == proxy.version
    assert doc["source"] == "<dict>"
    assert doc["config"]["mesh"] == "shop"
    assert {r["kind"] for r in doc["config"]["resources"]} >= {"VirtualGateway", "VirtualNode"}


async def test_listeners(proxy: Proxy) -> None:
    text = (await admin_get(proxy, "/listeners")).text
    port = proxy.port(GATEWAY_PORT)
    assert f"gateway/edge/{GATEWAY_PORT}::127.0.0.1:{port}\n" in text
    doc = (await admin_get(proxy, "/listeners?format=json")).json()
    names = {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in doc["listener_statuses"]}
    assert names[f"gateway/edge/{GATEWAY_PORT}"] == port


async def test_methods_and_unknown_paths(proxy: Proxy) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/ready", "/stats", "/clusters", "/config_dump", "/listeners"):
            response = await client.post(admin_url(proxy, path), content=b"x")
            assert response.status_code == 405, path
            assert response.headers["allow"] == "GET, HEAD"
        assert (await client.get(admin_url(proxy, "/nope"))).status_code == 404
        head = await client.head(admin_url(proxy, "/ready"))
        assert head.status_code == 200 and head.content == b""
        help_text = (await client.get(admin_url(proxy, "/"))).text
        assert "/config_dump" in help_text


async def test_malformed_requests_get_400_and_the_server_keeps_serving(proxy: Proxy) -> None:
    for garbage in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nno-colon-here\r\n\r\n", b"\x16\x03\x01\x00\xff\r\n\r\n"):
        reply = await raw_exchange(proxy, garbage)
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        assert b"connection: close" in reply.lower()
    # A client that disconnects mid-request must not hurt the server either.
    assert proxy.admin_address is not None
    stream = await trio.open_tcp_stream(*proxy.admin_address)
    await stream.send_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n")
    await stream.aclose()
    response = await admin_get(proxy, "/ready")
    assert response.status_code == 200


async def test_keep_alive_serves_several_requests_on_one_connection(proxy: Proxy) -> None:
    assert proxy.admin_address is not None
    stream = await trio.open_tcp_stream(*proxy.admin_address)
    conn = h11.Connection(h11.CLIENT)
    statuses = []
    async with stream:
        for path in ("/ready", "/listeners", "/ready"):
            request = h11.Request(method="GET", target=path, headers=[("host", "admin")])
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            with trio.fail_after(10):
                event = None
                while not isinstance(event, h11.EndOfMessage):
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        statuses.append(event.status_code)
                    elif isinstance(event, h11.ConnectionClosed):
                        raise AssertionError(f"the admin server closed the connection after {statuses}")
            conn.start_next_cycle()
    assert statuses == [200, 200, 200]


async def test_apply_of_an_invalid_config_raises_and_keeps_the_old_version(
    proxy: Proxy, upstream_port: int
) -> None:
    before = proxy.version
    broken = mesh(upstream_port)
    broken["resources"][1]["spec"]["httpRoute"]["action"]["target"]["virtualService"][
        "virtualServiceName"] = "missing.shop.local"
    with pytest.raises(ConfigError) as info:
        await proxy.apply(broken)
    assert info.value.problems and "missing.shop.local" in str(info.value)
    assert proxy.version == before
    assert [r.status_code for r in await get_through(proxy, 2)] == [200, 200]
    assert (await admin_get(proxy, "/config_dump")).json()["version"] == before


async def test_apply_that_fails_unexpectedly_keeps_the_old_version(
    proxy: Proxy, upstream_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meshplane.runtime

    def broken(*args: object, **kwargs: object) -> object:
        raise RecursionError("a bug while compiling")

    before = proxy.version
    monkeypatch.setattr(meshplane.runtime, "compile_document", broken)
    with pytest.raises(RecursionError):
        await proxy.apply(mesh(upstream_port, weight_v2=30))
    assert proxy.version == before
    assert [r.status_code for r in await get_through(proxy, 2)] == [200, 200]
    monkeypatch.undo()
    assert (await proxy.apply(mesh(upstream_port, weight_v2=30))) != before


async def test_apply_of_a_new_config_changes_the_version_and_keeps_serving(
    proxy: Proxy, upstream_port: int
) -> None:
    first = proxy.version
    assert first is not None and first.startswith("1-")
    second = await proxy.apply(mesh(upstream_port, weight_v2=50))
    assert second.startswith("2-") and second != first == first
    assert proxy.version == second
    # The same config again compiles to the same snapshot: nothing changes.
    assert await proxy.apply(mesh(upstream_port, weight_v2=50)) == second
    assert [r.status_code for r in await get_through(proxy, 4)] == [200] * 4


async def test_dns_discovery_resolves_endpoints(upstream_port: int) -> None:
    dns = {"dns": {"hostname": "localhost", "responseType": "ENDPOINTS", "ipPreference": "IPv4_ONLY"}}
    async with Proxy(mesh(upstream_port, discovery=dns), admin=None, drain_ms=200) as proxy:
        assert proxy.admin_address is not None  # the config's admin (127.0.0.1:0)
        assert [r.status_code for r in await get_through(proxy, 2)] == [200, 200]
        hosts = {h for c in proxy.stats()["clusters"].values() for h in c.get("hosts", {})}
        assert f"127.0.0.1:{upstream_port}" in hosts


async def test_exit_drains_and_closes_the_listeners(upstream_port: int) -> None:
    async with Proxy(mesh(upstream_port), admin="127.0.0.1:0", drain_ms=500) as proxy:
        port = proxy.port(GATEWAY_PORT)
        await get_through(proxy, 1)
    assert proxy.state == "STOPPED"
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_serve_with_watch_applies_changes_and_survives_bad_ones(
    nursery: trio.Nursery, upstream_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshplane")
    path = tmp_path / "mesh.json"
    path.write_text(json.dumps(mesh(upstream_port)))
    proxy: Proxy = await nursery.start(partial(serve, path, watch=True, admin="127.0.0.1:0"))
    first = proxy.version

    def until(condition: Callable[[], bool]) -> Awaitable[None]:
        # Waiting on an observable effect of the 0.5 s poll, with a deadline.
        return eventually(condition, timeout=10, what="the watcher to act", poll=0.05)

    path.write_text(json.dumps(mesh(upstream_port, weight_v2=20)))
    await until(lambda: proxy.version != first)
    second = proxy.version
    assert second is not None and second.startswith("2-")

    path.write_text("resources: [ {kind: VirtualGateway, name: edge, spec: 7} ]\nmesh: shop\n")
    await until(lambda: any("rejected" in r.getMessage() for r in caplog.records))
    assert proxy.version == second
    assert [r.status_code for r in await get_through(proxy, 2)] == [200, 200]
