"""`meshplane rollout` against real proxies following the store, real upstreams and real
traffic, on both stores: a rollout whose new node answers well completes; one whose new node
answers 5xx is rolled back, and says why. The analysis reads the counters the proxies report;
the test awaits the command's exit and the proxies' convergence, and asserts no timing."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane.drivers.follow import follow
from meshplane.lifecycle.versions import ConfigVersions
from meshplane.store import open_store

from ..asgi import serve_asgi
from ..waiting import eventually, until_set
from .mesh import GATEWAY, MESH, app, mesh, who
from .test_follow import apply

MESHPLANE = [sys.executable, "-m", "meshplane.cli"]


async def rollout_with_traffic(store_url: str, tmp_path: Path, nursery: trio.Nursery,
                               v2_status: int) -> tuple[int, str, list[str]]:
    ports = {"v1": await serve_asgi(nursery, app("v1")),
             "v2": await serve_asgi(nursery, app("v2", v2_status))}
    await apply(tmp_path, store_url, mesh(ports, {"v1": 1}), "v1 only")
    proxy = await nursery.start(partial(follow, store_url, MESH, GATEWAY, proxy_id="edge",
                                        heartbeat=0.1, admin="127.0.0.1:0"))
    answers: list[str] = []
    stop = trio.Event()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        async def traffic() -> None:
            for _ in until_set(stop):
                answers.append(await who(client, proxy.port(8080)))

        async with trio.open_nursery() as load:
            load.start_soon(traffic)
            done = await trio.run_process(
                [*MESHPLANE, "rollout", "web-router/web", "--to", "v2", "--steps", "50,100",
                 "--interval", "0.5s", "--max-5xx", "1%", "--max-p99", "5s", "--store", store_url,
                 "--mesh", MESH], capture_stdout=True, capture_stderr=True, check=False)
            stop.set()
    return done.returncode, done.stdout.decode() + done.stderr.decode(), answers


async def desired_weights(store_url: str) -> tuple[int, dict[str, int]]:
    async with open_store(store_url) as store:
        version, doc = await ConfigVersions(store, MESH).get()
    route = next(e for e in doc["resources"] if e["kind"] == "Route")
    return version.number, {t["virtualNode"]: t["weight"]
                            for t in route["spec"]["httpRoute"]["action"]["weightedTargets"]}


async def test_a_healthy_rollout_completes(store_url: str, tmp_path: Path, nursery: trio.Nursery) -> None:
    code, out, answers = await rollout_with_traffic(store_url, tmp_path, nursery, 200)
    assert code == 0, out
    assert "step 50%: version 2" in out and "step 100%: version 3" in out and "completed" in out
    assert await desired_weights(store_url) == (3, {"v1": 0, "v2": 100})
    assert set(answers) <= {"v1", "v2"} and "v2" in answers
    async with open_store(store_url) as store:
        history = await ConfigVersions(store, MESH).history()
    assert [v.message for v in history[1:]] == ["rollout web-router/web to v2: 50%",
                                                "rollout web-router/web to v2: 100%"]


async def test_a_failing_rollout_rolls_back_and_says_why(
    store_url: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    code, out, answers = await rollout_with_traffic(store_url, tmp_path, nursery, 503)
    assert code == 7, out
    assert "step 50%: version 2" in out and "step 100%" not in out
    assert "5xx rate" in out and "rolled back" in out
    number, weights = await desired_weights(store_url)
    assert (number, weights) == (3, {"v1": 1})
    async with open_store(store_url) as store:
        versions = ConfigVersions(store, MESH)
        history = await versions.history()
        assert history[-1].rollback_of == 1 and history[-1].hash == history[0].hash
        assert "5xx rate" in history[-1].message

        async def back_on_v1() -> bool:
            return {r.running for r in await versions.reports()} == {3}

        await eventually(back_on_v1, timeout=30, what="the proxy to run the rolled-back version")
    assert "503" in answers


def test_rollout_help_documents_exit_codes() -> None:
    from meshplane.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["rollout"].format_help()  # type: ignore[attr-defined]
    assert "--dry-run" in text and "7 rollout rolled back" in " ".join(text.split())
