"""`meshplane apply | history | diff` as subprocesses, and concurrent applies, on both stores:
identical configs make no version, concurrent applies never interleave (exactly one wins per
desired version; losers are told to retry and change nothing), an unreachable store changes
nothing, invalid files are named with resource and field."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from meshplane.lifecycle.document import content_hash
from meshplane.lifecycle.versions import ConcurrentApply, ConfigVersions
from meshplane.store import open_store

from .mesh import file_doc, mesh

MESHPLANE = [sys.executable, "-m", "meshplane.cli"]


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([*MESHPLANE, *args], capture_stdout=True, capture_stderr=True,
                                  check=False)


def write(tmp_path: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


async def test_apply_history_diff_and_identical_configs(store_url: str, tmp_path: Path) -> None:
    one = write(tmp_path, "one.json", file_doc(mesh({"v1": 9001, "v2": 9002}, {"v1": 90, "v2": 10})))
    two = write(tmp_path, "two.json", file_doc(mesh({"v1": 9001, "v2": 9002}, {"v1": 50, "v2": 50})))
    first = await cli("apply", one, "--store", store_url, "-m", "first", "--author", "ci")
    assert first.returncode == 0, first.stderr.decode()
    assert "version 1" in first.stdout.decode()
    again = await cli("apply", one, "--store", store_url, "--format", "json")
    assert json.loads(again.stdout) == {**json.loads(again.stdout), "version": 1, "created": False}

    preview = await cli("diff", two, "--store", store_url, "--exit-code")
    assert preview.returncode == 6
    assert ("spec.httpRoute.action.weightedTargets[0].weight: 90 -> 50"
            in preview.stdout.decode()), preview.stdout.decode()
    assert (await cli("apply", two, "--store", store_url, "-m", "even")).returncode == 0

    history = await cli("history", "--store", store_url, "--mesh", "shop", "--format", "json")
    found = json.loads(history.stdout)
    assert found["desired"] == 2
    assert [(v["number"], v["author"] == "ci", v["message"]) for v in found["versions"]] == [
        (1, True, "first"), (2, False, "even")]
    changes = json.loads((await cli("diff", "1", "2", "--store", store_url, "--mesh", "shop",
                                    "--format", "json")).stdout)["changes"]
    assert changes == [{"op": "changed", "kind": "Route", "name": "web", "parent": "web-router",
                        "fields": [
                            {"path": "spec.httpRoute.action.weightedTargets[0].weight", "old": 90, "new": 50},
                            {"path": "spec.httpRoute.action.weightedTargets[1].weight", "old": 10, "new": 50}]}]
    stale = await cli("apply", one, "--store", store_url, "--expect-version", "1")
    assert stale.returncode == 4 and "retry" in stale.stderr.decode()


async def test_concurrent_applies_never_interleave(store_url: str) -> None:
    writers = 8
    outcomes: list[int | str] = []

    async def writer(i: int) -> None:
        async with open_store(store_url) as store:
            doc = {"mesh": "shop", "resources": [{"kind": "Mesh", "name": "shop", "spec": {"i": i}}]}
            try:
                version, created = await ConfigVersions(store, "shop").commit(doc)
                assert created and version.hash == content_hash(doc)
                outcomes.append(version.number)
            except ConcurrentApply as exc:
                assert "retry" in str(exc)
                outcomes.append("conflict")

    async with trio.open_nursery() as nursery:
        for i in range(writers):
            nursery.start_soon(writer, i)
    won = sorted(n for n in outcomes if isinstance(n, int))
    assert len(outcomes) == writers and won == list(range(1, len(won) + 1))
    async with open_store(store_url) as store:
        versions = ConfigVersions(store, "shop")
        assert [v.number for v in await versions.history()] == won
        desired, _ = await versions.desired()
        assert desired is not None and desired.number == won[-1]


async def test_an_unreachable_store_fails_apply_and_changes_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        path = write(tmp_path, "one.json", file_doc(mesh({"v1": 9001}, {"v1": 1})))
        done = await cli("apply", path, "--store", f"etcd://127.0.0.1:{port}")
    assert done.returncode == 5
    err = done.stderr.decode()
    assert f"127.0.0.1:{port}" in err and "nothing was changed" in err and "Traceback" not in err


async def test_an_invalid_file_is_named_and_nothing_is_stored(store_url: str, tmp_path: Path) -> None:
    doc = mesh({"v1": 9001}, {"v1": 1, "missing": 1})
    path = write(tmp_path, "bad.json", file_doc(doc))
    done = await cli("apply", path, "--store", store_url)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert path in err and 'Route "web"' in err and "weightedTargets" in err and "missing" in err
    machine = await cli("apply", path, "--store", store_url, "--format", "json")
    assert machine.returncode == 1
    (problem,) = json.loads(machine.stdout)["problems"]
    assert (problem["file"], problem["resource"]) == (path, 'Route "web" (VirtualRouter "web-router")')
    async with open_store(store_url) as store:
        assert await ConfigVersions(store, "shop").history() == []


async def test_a_noncompliant_apply_exits_3_and_stores_nothing(store_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "policies.yaml"
    policy.write_text("policies:\n  - use: route-timeout\n")
    path = write(tmp_path, "one.json", file_doc(mesh({"v1": 9001}, {"v1": 1})))
    done = await cli("apply", path, "--store", store_url, "--policy", str(policy), "--format", "sarif")
    assert done.returncode == 3, done.stderr.decode()
    (result,) = json.loads(done.stdout)["runs"][0]["results"]
    assert result["ruleId"] == "route-timeout" and 'Route "web"' in result["message"]["text"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == path
    async with open_store(store_url) as store:
        assert await ConfigVersions(store, "shop").history() == []


async def test_run_mesh_needs_a_target_and_no_file(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 's.db'}"
    no_target = await cli("run", "--mesh", "shop", "--store", url)
    assert no_target.returncode == 1 and "--gateway NAME or --node NAME" in no_target.stderr.decode()
    both = await cli("run", "x.yaml", "--mesh", "shop", "--gateway", "edge", "--store", url)
    assert both.returncode == 1 and "give no FILE" in both.stderr.decode()
    empty = await cli("run", "--mesh", "shop", "--gateway", "edge", "--store", url)
    assert empty.returncode == 1 and "has no desired version" in empty.stderr.decode()
    assert "Traceback" not in (no_target.stderr + both.stderr + empty.stderr).decode()
