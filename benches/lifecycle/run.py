#!/usr/bin/env python3
"""Config-lifecycle benchmark: the embedded SQLite store and a real etcd, measured in one run.

    PYTHONPATH=python python3 benches/lifecycle/run.py [--stores sqlite,etcd] [--proxies 10]
        [--samples 10] [--endpoints 10000] [--out lifecycle.json]

For each store:
- apply → all proxies running it: `--proxies` real gateways following the mesh
  (`meshplane.drivers.follow`, in this process), each sample one `ConfigVersions.commit` of a
  changed route weight, timed until every proxy's running config is that version (p50, p99, max);
- a `--endpoints`-endpoint config: `commit` alone (content hash, store writes), commit → one
  following proxy runs it (store read, validation, compile, core apply), and, for the ratio, `Proxy.apply` of the same config on a proxy that
  follows no store.

etcd comes from Debian's etcd-server, started on free loopback ports (the tests' helper).
Figures are orders of magnitude and ratios within one run, never test assertions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
from meshplane import Proxy  # noqa: E402
from meshplane.drivers.follow import follow  # noqa: E402
from meshplane.lifecycle.versions import ConfigVersions  # noqa: E402
from meshplane.store import open_store  # noqa: E402

from tests.e2e.lifecycle.mesh import GATEWAY, MESH, mesh  # noqa: E402
from tests.e2e.registry.etcd import ETCD, EtcdCluster  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 50) * 1000, 2), "p99_ms": round(pct(values, 99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2), "n": len(values)}


def runs(proxy: Any, number: int) -> bool:
    return str(proxy.config.source).endswith(f" version {number}")


async def until_all(proxies: list[Any], number: int) -> None:
    with trio.fail_after(60):
        while not all(runs(p, number) for p in proxies):
            await trio.sleep(0.001)


def big_mesh(endpoints: int, weight: int) -> dict[str, Any]:
    doc = mesh({"v1": 9001, "v2": 9002}, {"v1": weight, "v2": 100 - weight})
    for entry in doc["resources"]:
        if entry["kind"] == "VirtualNode" and entry["name"] == "v1":
            entry["spec"]["serviceDiscovery"]["static"]["endpoints"] = [
                f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:8080" for i in range(endpoints)]
    return doc


async def bench_store(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with open_store(url) as store, trio.open_nursery() as nursery:
        versions = ConfigVersions(store, MESH)
        await versions.commit(mesh({"v1": 9001, "v2": 9002}, {"v1": 100, "v2": 0}))
        proxies = [await nursery.start(partial(follow, url, MESH, GATEWAY, proxy_id=f"p{i}",
                                               heartbeat=5, admin="127.0.0.1:0"))
                   for i in range(args.proxies)]
        samples = []
        for i in range(args.samples):
            t0 = time.perf_counter()
            version, _ = await versions.commit(mesh({"v1": 9001, "v2": 9002},
                                                    {"v1": 99 - i % 50, "v2": 1 + i % 50}))
            await until_all(proxies, version.number)
            samples.append(time.perf_counter() - t0)
        out[f"apply_to_{args.proxies}_proxies_running"] = ms(samples)
        nursery.cancel_scope.cancel()
    # The big config with one following proxy, so the figure is one proxy's path (store read,
    # validate, compile, core apply), not ten proxies compiling at once on a small machine.
    async with open_store(url) as store, trio.open_nursery() as nursery:
        versions = ConfigVersions(store, MESH)
        proxies = [await nursery.start(partial(follow, url, MESH, GATEWAY, proxy_id="big",
                                               heartbeat=5, admin="127.0.0.1:0"))]
        commits, converge = [], []
        for i in range(3):
            doc = big_mesh(args.endpoints, 90 - i)
            t0 = time.perf_counter()
            version, _ = await versions.commit(doc)
            commits.append(time.perf_counter() - t0)
            await until_all(proxies[:1], version.number)
            converge.append(time.perf_counter() - t0)
        out[f"commit_{args.endpoints}_endpoints"] = ms(commits)
        out[f"commit_to_running_{args.endpoints}_endpoints"] = ms(converge)
        nursery.cancel_scope.cancel()
    return out


async def bench_direct(args: argparse.Namespace) -> dict[str, Any]:
    applies = []
    async with Proxy({**mesh({"v1": 9001, "v2": 9002}, {"v1": 1}), "proxy": GATEWAY},
                     admin="127.0.0.1:0") as proxy:
        for i in range(3):
            doc = {**big_mesh(args.endpoints, 90 - i), "proxy": GATEWAY}
            t0 = time.perf_counter()
            await proxy.apply(doc)
            applies.append(time.perf_counter() - t0)
    return {f"Proxy.apply_{args.endpoints}_endpoints_(no store)": ms(applies)}


async def main(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {"direct": await bench_direct(args)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stores.split(","):
            if name == "sqlite":
                results["sqlite"] = await bench_store(f"sqlite://{tmp}/store.db", args)
            elif name == "etcd" and ETCD:
                cluster = EtcdCluster(Path(tmp)).start()
                try:
                    results["etcd"] = await bench_store(cluster.url, args)
                finally:
                    cluster.stop()
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="sqlite,etcd")
    parser.add_argument("--proxies", type=int, default=10)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--endpoints", type=int, default=10000)
    parser.add_argument("--out")
    trio.run(main, parser.parse_args())
