"""Functions through the mesh: HTTP through a gateway → route → function-discovered node → a
real worker process; Lambda's execution rules as a client sees them, and the proxy surviving
every failure of an instance."""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane import Proxy
from meshplane.config import load_file
from meshplane.config.functions import latest_settings
from meshplane.functions import FunctionNotFound, publish, set_alias
from meshplane.store import open_store

from ..waiting import eventually

# --- helpers ----------------------------------------------------------------------------------


@asynccontextmanager
async def running(path: Path, store: str) -> AsyncIterator[tuple[Proxy, httpx.AsyncClient]]:
    async with Proxy(path, admin="127.0.0.1:0", store=store, drain_ms=200) as proxy:
        base = f"http://127.0.0.1:{proxy.port(8080)}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            yield proxy, client


def fn_stats(proxy: Proxy) -> dict[str, Any]:
    return proxy.stats().get("functions", {}).get("fn", {})


async def publish_with(path: Path, store: str, **env: str) -> str:
    """Set the Function's environment in the file, publish it, return the version."""
    doc = json.loads(path.read_text())
    fn = next(r for r in doc["resources"] if r["kind"] == "Function")
    fn["spec"]["environment"] = {"variables": env}
    path.write_text(json.dumps(doc, indent=1))
    cfg = load_file(str(path))
    async with open_store(store) as s:
        version, created = await publish(s, cfg.mesh, "fn", latest_settings(cfg, cfg.get("Function", "fn")))
    assert created
    return version


async def alias(store: str, name: str, version: str, weights: dict[str, float] | None = None) -> None:
    async with open_store(store) as s:
        await set_alias(s, "fnmesh", "fn", name, version, weights)


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("forkserver", ["1", "0"])
async def test_http_through_a_gateway_to_a_function(
    deploy: Callable[..., Path], store_url: str, forkserver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHPLANE_FUNCTIONS_FORKSERVER", forkserver)
    path = deploy({"handler": "app.echo"})
    async with running(path, store_url) as (proxy, client):
        r = await client.get("/hello/world?a=1&a=2", headers={"cookie": "k=v"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["event"]["rawPath"] == "/hello/world"
        assert doc["event"]["queryStringParameters"] == {"a": "1,2"}
        assert doc["event"]["cookies"] == ["k=v"]
        assert doc["version"] == "$LATEST" and doc["calls"] == 1
        # Forked by the fork server, or spawned by the proxy itself.
        assert (doc["ppid"] == os.getpid()) == (forkserver == "0")
        # Warm reuse: the same instance answers the next sequential request.
        again = (await client.get("/")).json()
        assert again["pid"] == doc["pid"] and again["calls"] == 2
        stats = fn_stats(proxy)
        assert stats["invocations"] == 2 and stats["cold_starts"] == 1 and stats["errors"] == 0
        assert stats["versions"]["$LATEST"]["invocations"] == 2
        assert stats["duration_ms"]["p50"] is not None and stats["init_duration_ms"]["count"] == 1
        # The same numbers on the admin API, JSON and Prometheus.
        assert proxy.admin_address is not None
        admin = f"http://{proxy.admin_address[0]}:{proxy.admin_address[1]}"
        doc = (await client.get(f"{admin}/stats?format=json")).json()
        assert doc["functions"]["fn"]["invocations"] == 2
        text = (await client.get(f"{admin}/stats")).text
        assert 'meshplane_function_invocations_total{function="fn",kind="function",qualifier=""} 2' in text
        assert 'meshplane_function_cold_starts_total{function="fn",kind="version",qualifier="$LATEST"} 1' in text


async def test_alias_weights_split_invocations(deploy: Callable[..., Path], store_url: str) -> None:
    path = deploy({"handler": "app.version_tag"}, qualifier="live")
    one = await publish_with(path, store_url, TAG="one")
    two = await publish_with(path, store_url, TAG="two")
    await alias(store_url, "live", one, {two: 0.3})
    n, p = 400, 0.3
    async with running(path, store_url) as (proxy, client):
        seen = {"one": 0, "two": 0}
        for _ in range(n):
            r = await client.get("/")
            assert r.status_code == 200, r.text
            seen[r.text] += 1
        # Binomial(400, 0.3): mean 120, sd 9.2; 6 sd either side fails ~1 run in 10^9.
        sd = math.sqrt(n * p * (1 - p))
        assert abs(seen["two"] - n * p) <= 6 * sd, seen
        stats = fn_stats(proxy)
        assert stats["aliases"]["live"]["invocations"] == n
        assert stats["versions"][two]["invocations"] == seen["two"]


async def test_publish_and_shift_traffic_without_a_failed_request(
    deploy: Callable[..., Path], store_url: str
) -> None:
    path = deploy({"handler": "app.version_tag"}, qualifier="live")
    one = await publish_with(path, store_url, TAG="one")
    await alias(store_url, "live", one)
    async with running(path, store_url) as (proxy, client):
        results: list[tuple[int, str]] = []
        done = trio.Event()

        async def load() -> None:
            async with httpx.AsyncClient(base_url=client.base_url, timeout=30) as c:
                for _ in range(5000):
                    if done.is_set():
                        return
                    r = await c.get("/")
                    results.append((r.status_code, r.text))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(load)
            await eventually(lambda: len(results) >= 20, 20, "traffic on version 1")
            two = await publish_with(path, store_url, TAG="two")
            await alias(store_url, "live", one, {two: 0.5})
            await eventually(lambda: any(t == "two" for _, t in results), 20, "the canary")
            await alias(store_url, "live", two)
            mark = len(results)
            await eventually(lambda: len(results) > mark + 30 and all(
                t == "two" for _, t in results[-20:]), 20, "all traffic on version 2")
            done.set()
        failed = [(s, t) for s, t in results if s != 200]
        assert not failed, failed[:5]
        assert {t for _, t in results} == {"one", "two"}


async def held_request(client: httpx.AsyncClient, release: Path, statuses: list[int]) -> None:
    """GET / on the `app.hold` function, which runs until `release` exists."""
    r = await client.get("/", params={"until": str(release)})
    statuses.append(r.status_code)


async def test_throttled_at_reserved_concurrency(deploy: Callable[..., Path], store_url: str,
                                                 tmp_path: Path) -> None:
    path = deploy({"handler": "app.hold", "reservedConcurrency": 2})
    release = tmp_path / "release"
    async with running(path, store_url) as (proxy, client):
        statuses: list[int] = []
        held = partial(held_request, client, release, statuses)

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(held)
            await eventually(lambda: fn_stats(proxy).get("concurrent_executions") == 2, 20,
                             "two invocations running")
            r = await client.get("/")
            assert r.status_code == 429
            assert r.headers["x-amzn-errortype"] == "TooManyRequestsException"
            assert r.json() == {"Type": "User", "message": "Rate Exceeded."}
            release.touch()
        assert statuses == [200, 200]
        assert fn_stats(proxy)["throttles"] >= 1
        assert (await client.get("/", params={"until": str(release)})).status_code == 200


async def test_reserved_concurrency_is_the_functions_across_its_versions(
    deploy: Callable[..., Path], store_url: str, tmp_path: Path
) -> None:
    # Lambda reserves concurrency for the function: $LATEST (through the mesh) and version 1
    # (invoked directly) draw on the same 2.
    path = deploy({"handler": "app.hold", "reservedConcurrency": 2})
    version = await publish_with(path, store_url, TAG="v")
    release = tmp_path / "release"
    async with running(path, store_url) as (proxy, client):
        statuses: list[int] = []
        held = partial(held_request, client, release, statuses)

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(held)
            await eventually(lambda: fn_stats(proxy).get("concurrent_executions") == 2, 20,
                             "two invocations of $LATEST running")
            r = await admin_invoke(proxy, version)
            assert r.status_code == 429, r.text
            assert r.headers["x-amzn-errortype"] == "TooManyRequestsException"
            release.touch()
        assert statuses == [200, 200]
        r = await admin_invoke(proxy, version)
        assert r.status_code == 200 and r.headers.get("x-amz-executed-version") == version


async def admin_invoke(proxy: Proxy, qualifier: str) -> httpx.Response:
    host, port = proxy.admin_address
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=30) as admin:
        return await admin.post("/2015-03-31/functions/fn/invocations",
                                params={"Qualifier": qualifier}, content=b"{}")


async def test_provisioned_instances_answer_the_first_request_warm(
    deploy: Callable[..., Path], store_url: str
) -> None:
    path = deploy({"handler": "app.echo",
                   "provisionedConcurrency": [{"qualifier": "1", "count": 2}]}, qualifier="1")
    await publish_with(path, store_url, TAG="p")
    async with running(path, store_url) as (proxy, client):
        await eventually(lambda: fn_stats(proxy).get("provisioned_instances") == 2, 20,
                         "two provisioned instances ready")
        r = await client.get("/")
        assert r.status_code == 200
        assert r.json()["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
        stats = fn_stats(proxy)
        assert stats["cold_starts"] == 0 and stats["invocations"] == 1
        reports = [line for _, line in proxy.functions.supervisor.logs
                   if line.startswith("REPORT RequestId: ")]
        assert len(reports) == 1 and "Init Duration" not in reports[0]
        assert stats["provisioned_spillover_invocations"] == 0


async def test_timeout_recycles_the_instance(deploy: Callable[..., Path], store_url: str) -> None:
    path = deploy({"handler": "app.slow", "timeout": {"unit": "s", "value": 1}})
    async with running(path, store_url) as (proxy, client):
        r = await client.get("/", params={"s": "30"})
        assert r.status_code == 502
        assert r.json()["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in r.json()["errorMessage"]
        r = await client.get("/", params={"s": "0"})
        assert r.status_code == 200 and r.text == "slept"
        stats = fn_stats(proxy)
        assert stats["error_types"] == {"Sandbox.Timedout": 1} and stats["cold_starts"] == 2


async def test_memory_limit(deploy: Callable[..., Path], store_url: str) -> None:
    path = deploy({"handler": "app.hog", "memorySize": 128})
    async with running(path, store_url) as (proxy, client):
        r = await client.get("/")
        assert r.status_code == 502
        assert r.json()["errorType"] == "Runtime.ExitError"
        assert r.json()["errorMessage"].endswith("signal: killed")
        assert fn_stats(proxy)["error_types"] == {"Runtime.ExitError": 1}
        await eventually(lambda: fn_stats(proxy)["instances"] == 0, 10, "the instance gone")


async def test_handler_exception_is_a_502_with_the_error_payload(
    deploy: Callable[..., Path], store_url: str
) -> None:
    path = deploy({"handler": "app.boom"})
    async with running(path, store_url) as (proxy, client):
        r = await client.get("/oops")
        assert r.status_code == 502
        doc = r.json()
        assert doc["errorType"] == "ValueError" and doc["errorMessage"] == "bad input: /oops"
        assert doc["stackTrace"] and doc["requestId"]
        assert fn_stats(proxy)["errors"] == 1 and fn_stats(proxy)["invocations"] == 1


async def test_a_crashing_instance_is_replaced_and_the_proxy_survives(
    deploy: Callable[..., Path], store_url: str
) -> None:
    path = deploy({"handler": "app.crash"})
    async with running(path, store_url) as (proxy, client):
        first = await client.get("/")
        assert first.status_code == 200
        r = await client.get("/crash")
        assert r.status_code in (502, 503)
        after = await client.get("/")
        assert after.status_code == 200 and after.text != first.text  # a new process
        stats = fn_stats(proxy)
        assert stats["crashes"] >= 1 and stats["error_types"].get("Runtime.ExitError", 0) >= 1
        assert proxy.state == "LIVE"


async def test_invoke_through_the_core(deploy: Callable[..., Path], store_url: str) -> None:
    path = deploy({"handler": "app.raw"})
    async with running(path, store_url) as (proxy, _client):
        inv = await proxy.functions.invoke("fn", None, b'{"x": 1}')
        assert inv.status == 200 and inv.function_error is None
        assert json.loads(inv.payload)["got"] == {"x": 1}
        assert inv.executed_version == "$LATEST" and inv.log_tail
        assert (await proxy.functions.invoke("fn:$LATEST", invocation_type="DryRun")).status == 204
        with pytest.raises(FunctionNotFound):
            await proxy.functions.invoke("nope")
        with pytest.raises(FunctionNotFound):
            await proxy.functions.invoke("fn", "7")
        # The invocation went through the core: its invoke route counted it.
        routes = proxy.stats()["routes"]
        assert any(name.startswith("functions/invoke/fn:$LATEST") for name in routes)


async def test_the_example_serves(store_url: str) -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "functions.yaml"
    async with Proxy(example, admin="127.0.0.1:0", store=store_url, port_overrides={8080: 0},
                     drain_ms=200) as proxy:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy.port(8080)}") as client:
            r = await client.get("/hello", params={"name": "mesh"}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["message"] == "hello, mesh" and r.json()["version"] == "$LATEST"


async def test_idle_instances_are_reaped_and_provisioned_ones_kept(
    deploy: Callable[..., Path], store_url: str
) -> None:
    path = deploy({"handler": "app.echo", "idleTimeout": {"unit": "s", "value": 1},
                   "provisionedConcurrency": [{"qualifier": "1", "count": 1}]})
    await publish_with(path, store_url, TAG="p")
    async with running(path, store_url) as (proxy, client):
        assert (await client.get("/")).status_code == 200  # $LATEST: one on-demand instance
        stats = fn_stats(proxy)
        assert stats["versions"]["$LATEST"]["instances"] == 1
        await eventually(lambda: fn_stats(proxy)["versions"]["$LATEST"]["instances"] == 0, 15,
                         "the idle $LATEST instance reaped")
        # The provisioned instance of version 1 is never reaped; killed, it is replaced.
        provisioned = [i for i in proxy.functions.supervisor.instances() if i["provisioned"]]
        assert len(provisioned) == 1 and provisioned[0]["state"] in ("starting", "idle")
        await eventually(lambda: fn_stats(proxy)["versions"]["1"]["provisioned_instances"] == 1,
                         15, "the provisioned instance ready")
        os.kill(provisioned[0]["pid"], 9)
        await eventually(lambda: any(
            i["provisioned"] and i["pid"] != provisioned[0]["pid"] and i["state"] == "idle"
            for i in proxy.functions.supervisor.instances()), 15, "a replacement")
        assert fn_stats(proxy)["versions"]["1"]["crashes"] == 1
