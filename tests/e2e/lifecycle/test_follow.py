"""`meshplane apply` / `rollback` / `status` against real proxies that follow the store
(`meshplane.drivers.follow`, in process and as `meshplane run --mesh` subprocesses), in front
of real upstreams, on both stores. Convergence is awaited with `eventually` over real requests
and the store's own reports; nothing is slept for and no timing is asserted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane.drivers.follow import follow
from meshplane.lifecycle.versions import ConfigVersions
from meshplane.store import open_store

from ..asgi import serve_asgi
from ..test_cli import LineReader
from ..waiting import eventually, until_set
from .mesh import GATEWAY, MESH, app, file_doc, mesh, who

MESHPLANE = [sys.executable, "-m", "meshplane.cli"]


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([*MESHPLANE, *args], capture_stdout=True, capture_stderr=True,
                                  check=False)


async def apply(tmp_path: Path, store_url: str, doc: dict[str, Any], message: str = "") -> int:
    """`meshplane apply` of `doc` as a file; the version number it made desired."""
    path = tmp_path / f"mesh-{abs(hash(json.dumps(doc, sort_keys=True)))}.json"
    path.write_text(json.dumps(file_doc(doc)))
    done = await cli("apply", str(path), "--store", store_url, "-m", message, "--format", "json")
    assert done.returncode == 0, done.stderr.decode()
    return int(json.loads(done.stdout)["version"])


async def running(store_url: str) -> dict[str, int | None]:
    async with open_store(store_url) as store:
        return {r.id: r.running for r in await ConfigVersions(store, MESH).reports()}


async def test_proxies_converge_on_each_version_without_a_failed_request(
    store_url: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    ports = {"v1": await serve_asgi(nursery, app("v1")), "v2": await serve_asgi(nursery, app("v2"))}
    assert await apply(tmp_path, store_url, mesh(ports, {"v1": 1}), "v1 only") == 1
    proxies = [
        await nursery.start(partial(follow, store_url, MESH, GATEWAY, proxy_id=f"p{i}",
                                    heartbeat=0.2, admin="127.0.0.1:0"))
        for i in range(2)
    ]
    gw_ports = [p.port(8080) for p in proxies]
    failures: list[str] = []
    stop = trio.Event()

    async with httpx.AsyncClient(trust_env=False, timeout=10) as client, \
            httpx.AsyncClient(trust_env=False, timeout=10) as background:
        async def traffic() -> None:
            for i in until_set(stop):
                answer = await who(background, gw_ports[i % 2])
                if answer not in ("v1", "v2"):
                    failures.append(answer)

        async with trio.open_nursery() as load:
            load.start_soon(traffic)
            assert {await who(client, p) for p in gw_ports} == {"v1"}
            assert await apply(tmp_path, store_url, mesh(ports, {"v2": 1}), "v2 only") == 2

            async def all_on(answer: str, version: int) -> bool:
                return ({await who(client, p) for p in gw_ports} == {answer}
                        and set((await running(store_url)).values()) == {version})

            await eventually(lambda: all_on("v2", 2), timeout=30, what="both proxies on version 2")

            done = await cli("rollback", "--store", store_url, "--mesh", MESH)
            assert done.returncode == 0, done.stderr.decode()
            out = done.stdout.decode()
            assert "version 3" in out and "rollback to version 1" in out
            await eventually(lambda: all_on("v1", 3), timeout=30, what="both proxies on version 3")
            stop.set()

    status = await cli("status", "--store", store_url, "--mesh", MESH, "--format", "json")
    assert status.returncode == 0, status.stdout.decode()
    report = json.loads(status.stdout)
    assert report["desired"] == 3 and report["ok"] is True
    assert sorted((p["id"], p["running"]) for p in report["proxies"]) == [("p0", 3), ("p1", 3)]
    assert failures == []


async def test_a_version_a_proxy_cannot_run_keeps_the_running_one_and_shows_as_drift(
    store_url: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    ports = {"v1": await serve_asgi(nursery, app("v1"))}
    await apply(tmp_path, store_url, mesh(ports, {"v1": 1}))
    proxy = await nursery.start(partial(follow, store_url, MESH, GATEWAY, proxy_id="edge-1",
                                        heartbeat=0.2, admin="127.0.0.1:0"))
    # Valid as a mesh, but it has no gateway "edge" for this proxy to run.
    await apply(tmp_path, store_url, mesh(ports, {"v1": 1}, gateway=False), "drop the gateway")

    async def rejected() -> bool:
        async with open_store(store_url) as store:
            reports = await ConfigVersions(store, MESH).reports()
        return any(r.error and r.error["version"] == 2 for r in reports)

    await eventually(rejected, timeout=30, what="the proxy to report rejecting version 2")
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        assert await who(client, proxy.port(8080)) == "v1"
    status = await cli("status", "--store", store_url, "--mesh", MESH)
    out = status.stdout.decode()
    assert status.returncode == 6, out
    assert "edge-1" in out and "running=1" in out and "rejected version 2" in out
    assert 'VirtualGateway "edge"' in out or "proxy.gateway" in out


async def test_meshplane_run_follows_the_store_and_a_killed_proxy_goes_silent(
    store_url: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    ports = {"v1": await serve_asgi(nursery, app("v1")), "v2": await serve_asgi(nursery, app("v2"))}
    await apply(tmp_path, store_url, mesh(ports, {"v1": 1}))
    proc = await nursery.start(partial(
        trio.run_process,
        [*MESHPLANE, "run", "--store", store_url, "--mesh", MESH, "--gateway", "edge",
         "--bind", "127.0.0.1", "--port", "8080=0", "--id", "sub-1", "--heartbeat", "0.2s",
         "--log-level", "warning"],
        stdout=subprocess.PIPE, check=False))
    try:
        lines = LineReader(proc.stdout)
        port = int((await lines.until(r"^listener gateway/edge/8080 .*:(\d+)$"))[1])
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            assert await who(client, port) == "v1"
            await apply(tmp_path, store_url, mesh(ports, {"v2": 1}))

            async def on_v2() -> bool:
                return await who(client, port) == "v2"

            await eventually(on_v2, timeout=30, what="the subprocess proxy to run version 2")
        await eventually(lambda: _running_is(store_url, "sub-1", 2), timeout=30,
                         what="the report of version 2")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

        async def silent() -> bool:
            done = await cli("status", "--store", store_url, "--mesh", MESH, "--silent-after", "0.5s")
            return done.returncode == 6 and "silent" in done.stdout.decode()

        await eventually(silent, timeout=30, what="status to call the killed proxy silent")
    finally:
        if proc.returncode is None:
            proc.kill()


async def _running_is(store_url: str, proxy_id: str, version: int) -> bool:
    return (await running(store_url)).get(proxy_id) == version


async def test_a_stopped_proxy_says_so(store_url: str, tmp_path: Path) -> None:
    async with trio.open_nursery() as inner:
        upstream = await serve_asgi(inner, app("v1"))
        await apply(tmp_path, store_url, mesh({"v1": upstream}, {"v1": 1}))
        with trio.CancelScope() as scope:
            await inner.start(partial(follow, store_url, MESH, GATEWAY, proxy_id="bye",
                                      heartbeat=0.2, admin="127.0.0.1:0"))
            scope.cancel()
        inner.cancel_scope.cancel()
    async with open_store(store_url) as store:
        (report,) = await ConfigVersions(store, MESH).reports()
    assert (report.id, report.state, report.running) == ("bye", "STOPPED", 1)


async def test_a_sidecar_follows_the_mesh_too(store_url: str, tmp_path: Path, nursery: trio.Nursery) -> None:
    app_port = await serve_asgi(nursery, app("behind-sidecar"))
    ports = {"v1": app_port, "v2": app_port}
    await apply(tmp_path, store_url, mesh(ports, {"v1": 1}))
    sidecar = {"node": "v1", "bind": "127.0.0.1", "app": f"127.0.0.1:{app_port}",
               "ports": {8080: 0}, "outbound": "127.0.0.1:0"}
    proxy = await nursery.start(partial(follow, store_url, MESH, sidecar, proxy_id="v1-sidecar",
                                        heartbeat=0.2, admin="127.0.0.1:0"))
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        assert await who(client, proxy.port(8080)) == "behind-sidecar"
    await apply(tmp_path, store_url, mesh(ports, {"v1": 1, "v2": 1}))
    await eventually(lambda: _running_is(store_url, "v1-sidecar", 2), timeout=30,
                     what="the sidecar to run version 2")
    async with open_store(store_url) as store:
        (report,) = await ConfigVersions(store, MESH).reports()
    assert (report.target, report.state, report.error) == ("node/v1", "LIVE", None)
