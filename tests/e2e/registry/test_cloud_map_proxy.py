"""Cloud Map discovery end to end: real proxies (`meshplane.Proxy`) whose virtual nodes use
`serviceDiscovery.awsCloudMap`, real upstream HTTP servers registered in a real store (the
embedded SQLite store and etcd), changes pushed to the core with `set_endpoints`.

    client ──► gateway edge ──► color-router ──► node blue  (attribute version=blue)
                                       └─ x-version: green ──► node green (version=green)

Waiting for a change to reach the proxy is a bounded loop over real requests (`until`), never a
fixed sleep.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane import Proxy
from meshplane.registry import Registry
from meshplane.store import open_store

from ..asgi import lifespan, serve_asgi
from .etcd import EtcdCluster

NS, SVC = "apps.local", "color"


def app_named(name: str) -> Any:
    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"app": name}).encode()})
    return app


def cloud_map_node(name: str, version: str) -> dict[str, Any]:
    return {"kind": "VirtualNode", "name": name, "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"awsCloudMap": {
            "namespaceName": NS, "serviceName": SVC,
            "attributes": [{"key": "version", "value": version}]}}}}


def config(store_url: str) -> dict[str, Any]:
    return {"mesh": "m", "proxy": {"gateway": "edge", "ports": {8080: 0}, "store": store_url},
            "resources": [
        {"kind": "VirtualGateway", "name": "edge",
         "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
        {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge", "spec": {
            "httpRoute": {"match": {"prefix": "/"},
                          "action": {"target": {"virtualService": {"virtualServiceName": "color.apps.local"}}}}}},
        {"kind": "VirtualService", "name": "color.apps.local",
         "spec": {"provider": {"virtualRouter": {"virtualRouterName": "color-router"}}}},
        {"kind": "VirtualRouter", "name": "color-router",
         "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
        {"kind": "Route", "name": "green", "virtualRouterName": "color-router", "spec": {
            "priority": 1,
            "httpRoute": {"match": {"prefix": "/", "headers": [{"name": "x-version", "match": {"exact": "green"}}]},
                          "action": {"weightedTargets": [{"virtualNode": "green", "weight": 1}]}}}},
        {"kind": "Route", "name": "default", "virtualRouterName": "color-router", "spec": {
            "priority": 2,
            "httpRoute": {"match": {"prefix": "/"},
                          "action": {"weightedTargets": [{"virtualNode": "blue", "weight": 1}]}}}},
        cloud_map_node("blue", "blue"),
        cloud_map_node("green", "green"),
    ]}


def attrs(port: int, version: str) -> dict[str, str]:
    return {"AWS_INSTANCE_IPV4": "127.0.0.1", "AWS_INSTANCE_PORT": str(port), "version": version}


async def who(client: httpx.AsyncClient, proxy: Proxy, version: str | None = None) -> str:
    headers = {"x-version": version} if version else {}
    r = await client.get(f"http://127.0.0.1:{proxy.port(8080)}/", headers=headers)
    return str(r.json()["app"]) if r.status_code == 200 else str(r.status_code)


async def until(probe: Callable[[], Awaitable[Any]], expected: Any, *, limit_s: float = 10) -> None:
    """Re-run `probe` (real requests) until it returns `expected`; bounded, fails with the last value."""
    last: Any = None
    with trio.move_on_after(limit_s):
        while (last := await probe()) != expected:
            await trio.sleep(0.01)
        return
    raise AssertionError(f"expected {expected!r}, still {last!r} after {limit_s}s")


async def admin_get(client: httpx.AsyncClient, proxy: Proxy, path: str) -> httpx.Response:
    assert proxy.admin_address is not None
    host, port = proxy.admin_address
    return await client.get(f"http://{host}:{port}{path}")


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        yield c


async def test_register_routes_traffic_and_attributes_split_versions(
    store_url: str, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    blue_port = await serve_asgi(nursery, app_named("blue-1"))
    green_port = await serve_asgi(nursery, app_named("green-1"))
    async with open_store(store_url) as store, Proxy(config(store_url)) as proxy:
        registry = Registry(store)
        # Nothing registered: a 503 that /clusters explains by node name.
        assert await who(client, proxy) == "503"
        text = (await admin_get(client, proxy, "/clusters")).text
        assert "blue::registry::no_instances::virtual node blue" in text
        assert "registry::state::connected" in text

        await registry.register(NS, SVC, "blue-1", attrs(blue_port, "blue"))
        await until(lambda: who(client, proxy), "blue-1")
        # The green node selects only version=green: blue's instance is not its endpoint.
        assert await who(client, proxy, "green") == "503"
        await registry.register(NS, SVC, "green-1", attrs(green_port, "green"))
        await until(lambda: who(client, proxy, "green"), "green-1")
        for _ in range(20):
            assert await who(client, proxy) == "blue-1"
            assert await who(client, proxy, "green") == "green-1"

        stats = (await admin_get(client, proxy, "/clusters?format=json")).json()["registry"]
        assert stats["connected"] is True
        assert stats["clusters"]["green"]["endpoints"] == 1
        assert stats["clusters"]["green"]["instances"] == 2
        metrics = (await admin_get(client, proxy, "/stats")).text
        assert 'meshplane_registry_endpoints{cluster="blue"} 1' in metrics

        # Deregistration moves traffic away; the node is empty again and says so.
        await registry.deregister(NS, SVC, "blue-1")
        await until(lambda: who(client, proxy), "503")
        text = (await admin_get(client, proxy, "/clusters")).text
        assert "blue::registry::no_instances" in text


async def test_unhealthy_instances_are_dropped_and_all_unhealthy_fails_open(
    store_url: str, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    a_port = await serve_asgi(nursery, app_named("a"))
    b_port = await serve_asgi(nursery, app_named("b"))
    async with open_store(store_url) as store, Proxy(config(store_url)) as proxy:
        registry = Registry(store)
        await registry.register(NS, SVC, "a", attrs(a_port, "blue"))
        await registry.register(NS, SVC, "b", attrs(b_port, "blue"))
        await registry.set_health(NS, SVC, "a", "UNHEALTHY")

        async def only_b() -> bool:
            return {await who(client, proxy) for _ in range(10)} == {"b"}

        await until(only_b, True)
        # Every instance unhealthy: App Mesh's fail-open, all of them serve again.
        await registry.set_health(NS, SVC, "b", "UNHEALTHY")

        async def both() -> bool:
            return {await who(client, proxy) for _ in range(30)} == {"a", "b"}

        await until(both, True)


async def test_lease_expiry_and_deregistration_move_traffic_away_without_failed_requests(
    store_url: str, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    stable_port = await serve_asgi(nursery, app_named("stable"))
    other_port = await serve_asgi(nursery, app_named("other"))
    async with trio.open_nursery() as doomed:
        leased_port = await serve_asgi(doomed, app_named("leased"))
        async with open_store(store_url) as store, Proxy(config(store_url)) as proxy:
            registry = Registry(store)
            await registry.register(NS, SVC, "stable", attrs(stable_port, "blue"))
            await registry.register(NS, SVC, "leased", attrs(leased_port, "blue"), ttl=1)
            statuses: list[str] = []

            async def seen() -> set[str]:
                got = [await who(client, proxy) for _ in range(20)]
                statuses.extend(got)
                return set(got)

            await until(seen, {"leased", "stable"})
            # The process behind "leased" dies: its server is gone and nobody renews its lease.
            # Until the lease expires, App Mesh's default retry (connect-failure) covers it.
            doomed.cancel_scope.cancel()
            statuses.clear()
            await until(seen, {"stable"}, limit_s=30)
            assert set(statuses) <= {"leased", "stable"}, statuses

            # A graceful deregistration moves traffic away without a failed request too.
            await registry.register(NS, SVC, "other", attrs(other_port, "blue"))
            await until(seen, {"stable", "other"})
            statuses.clear()
            await registry.deregister(NS, SVC, "stable")
            await until(seen, {"other"})
            assert set(statuses) <= {"stable", "other"}, statuses


async def test_two_proxies_see_the_same_change(
    store_url: str, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    port = await serve_asgi(nursery, app_named("shared"))
    async with (open_store(store_url) as store, Proxy(config(store_url)) as p1,
                Proxy(config(store_url)) as p2):
        await Registry(store).register(NS, SVC, "shared", attrs(port, "blue"))
        await until(lambda: who(client, p1), "shared")
        await until(lambda: who(client, p2), "shared")


async def test_store_outage_keeps_endpoints_and_reports_disconnected(
    tmp_path: Path, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    from .etcd import ETCD, SKIP_REASON

    if ETCD is None:
        pytest.skip(SKIP_REASON)
    cluster = EtcdCluster(tmp_path).start()
    try:
        port = await serve_asgi(nursery, app_named("survivor"))
        late_port = await serve_asgi(nursery, app_named("late"))
        async with open_store(cluster.url) as store, Proxy(config(cluster.url)) as proxy:
            registry = Registry(store)
            await registry.register(NS, SVC, "survivor", attrs(port, "blue"))
            await until(lambda: who(client, proxy), "survivor")

            await trio.to_thread.run_sync(cluster.members[0].stop)

            async def disconnected() -> bool:
                reg = (await admin_get(client, proxy, "/clusters?format=json")).json()["registry"]
                return reg["connected"] is False and reg["disconnected_since"] is not None

            await until(disconnected, True)
            # The last endpoints keep serving: no request fails because the store is away.
            for _ in range(20):
                assert await who(client, proxy) == "survivor"
            text = (await admin_get(client, proxy, "/clusters")).text
            assert "registry::state::disconnected" in text and "registry::disconnected_since::" in text

            await trio.to_thread.run_sync(cluster.restart, cluster.members[0])
            await registry.register(NS, SVC, "late", attrs(late_port, "green"))
            await until(lambda: who(client, proxy, "green"), "late", limit_s=30)
            reg = (await admin_get(client, proxy, "/clusters?format=json")).json()["registry"]
            assert reg["connected"] is True
    finally:
        cluster.stop()


async def test_three_member_etcd_cluster_survives_losing_a_member(
    tmp_path: Path, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    from .etcd import ETCD, SKIP_REASON

    if ETCD is None:
        pytest.skip(SKIP_REASON)
    cluster = await trio.to_thread.run_sync(lambda: EtcdCluster(tmp_path, size=3).start())
    try:
        first = await serve_asgi(nursery, app_named("first"))
        second = await serve_asgi(nursery, app_named("second"))
        async with open_store(cluster.url) as store, Proxy(config(cluster.url)) as proxy:
            registry = Registry(store)
            await registry.register(NS, SVC, "first", attrs(first, "blue"))
            await until(lambda: who(client, proxy), "first")
            # Lose the member both clients talk to first (the URL's first endpoint).
            await trio.to_thread.run_sync(cluster.members[0].stop)
            for _ in range(10):
                assert await who(client, proxy) == "first"
            # The two survivors keep a quorum: writes go on, and the proxy's watch follows them.
            await registry.register(NS, SVC, "second", attrs(second, "green"))
            await until(lambda: who(client, proxy, "green"), "second", limit_s=30)
            found, _ = await registry.discover(NS, SVC)
            assert sorted(i.id for i in found) == ["first", "second"]
    finally:
        cluster.stop()


async def test_apply_switches_a_node_to_cloud_map_and_back(
    store_url: str, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    static_port = await serve_asgi(nursery, app_named("static"))
    registered_port = await serve_asgi(nursery, app_named("registered"))
    static = config(store_url)
    for r in static["resources"]:
        if r["name"] == "blue" and r["kind"] == "VirtualNode":
            r["spec"]["serviceDiscovery"] = {"static": {"endpoints": [f"127.0.0.1:{static_port}"]}}
    async with open_store(store_url) as store, Proxy(static) as proxy:
        await Registry(store).register(NS, SVC, "r", attrs(registered_port, "blue"))
        assert await who(client, proxy) == "static"
        await proxy.apply(config(store_url))
        assert await who(client, proxy) == "registered"  # read during the apply: no wait
        await proxy.apply(static)
        assert await who(client, proxy) == "static"
        # Back on Cloud Map, the watch follows changes again.
        await proxy.apply(config(store_url))
        await Registry(store).deregister(NS, SVC, "r")
        await until(lambda: who(client, proxy), "503")


async def test_proxy_starts_while_the_store_is_down_and_catches_up(
    tmp_path: Path, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    from .etcd import ETCD, SKIP_REASON

    if ETCD is None:
        pytest.skip(SKIP_REASON)
    cluster = EtcdCluster(tmp_path)  # ports chosen, not started yet
    try:
        port = await serve_asgi(nursery, app_named("late-store"))
        async with Proxy(config(cluster.url)) as proxy:
            assert await who(client, proxy) == "503"
            reg = (await admin_get(client, proxy, "/clusters?format=json")).json()["registry"]
            assert reg["connected"] is False and cluster.url in reg["last_error"]
            await trio.to_thread.run_sync(cluster.start)
            async with open_store(cluster.url) as store:
                await Registry(store).register(NS, SVC, "x", attrs(port, "blue"))
            await until(lambda: who(client, proxy), "late-store", limit_s=30)
    finally:
        cluster.stop()
