#!/usr/bin/env python3
"""Registry benchmark: the embedded SQLite store and a real etcd, measured in one run.

    PYTHONPATH=python python3 benches/registry/run.py [--stores sqlite,etcd] [--samples 30]
        [--instances 10000] [--watchers 50] [--idle 5] [--out registry.json]

For each store:
- register → first routed request: a real gateway (`meshplane.Proxy`) whose virtual node uses
  `awsCloudMap`, a real upstream (hypercorn); each sample registers an instance into an empty
  service and times until a request through the proxy first reaches it (requests sent back to
  back, so the figure includes up to one request's time), then deregisters and waits for 503;
- 10,000 instances: registration rate (16 concurrent writers) and the time until the watching
  proxy's cluster holds all of them (`/clusters` registry endpoints);
- CPU of an idle watch: process CPU seconds per wall second of one `Store.watch` with no change,
  and of 20 (one proxy watching 20 services);
- fan-out: 50 watchers (each its own store client, as 50 proxies would be) on one service;
  one registration; time until each has seen it (p50, p99, max).

etcd comes from Debian's etcd-server, started on free loopback ports with its data in a
temporary directory (the tests' helper). Figures are for reading as orders of magnitude and
ratios between the two stores in one run, never as test assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trio  # noqa: E402
from meshplane import Proxy  # noqa: E402
from meshplane.registry import Registry  # noqa: E402
from meshplane.store import open_store  # noqa: E402

from tests.e2e.asgi import serve_asgi  # noqa: E402
from tests.e2e.registry.etcd import ETCD, EtcdCluster  # noqa: E402
from tests.e2e.registry.test_cloud_map_proxy import NS, SVC, app_named, attrs, config  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 50) * 1000, 2), "p99_ms": round(pct(values, 99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2), "n": len(values)}


async def register_to_routed(url: str, samples: int) -> dict[str, Any]:
    out: list[float] = []
    async with trio.open_nursery() as nursery:
        port = await serve_asgi(nursery, app_named("bench"))
        async with open_store(url) as store, Proxy(config(url)) as proxy, \
                httpx.AsyncClient(trust_env=False, timeout=10) as client:
            registry = Registry(store)
            target = f"http://127.0.0.1:{proxy.port(8080)}/"
            for i in range(samples):
                t0 = time.perf_counter()
                await registry.register(NS, SVC, f"i-{i}", attrs(port, "blue"))
                with trio.fail_after(30):
                    while (await client.get(target)).status_code != 200:
                        pass
                out.append(time.perf_counter() - t0)
                await registry.deregister(NS, SVC, f"i-{i}")
                with trio.fail_after(30):
                    while (await client.get(target)).status_code != 503:
                        pass
        nursery.cancel_scope.cancel()
    return ms(out)


async def many_instances(url: str, count: int) -> dict[str, Any]:
    async with open_store(url) as store, Proxy(config(url), admin="127.0.0.1:0") as proxy:
        registry = Registry(store)
        await registry.create_service(NS, SVC)
        t0 = time.perf_counter()
        send, receive = trio.open_memory_channel[int](0)

        async def writer() -> None:
            async for i in receive:
                await registry.register(NS, SVC, f"i-{i:05d}", {
                    "AWS_INSTANCE_IPV4": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                    "AWS_INSTANCE_PORT": "8080", "version": "blue"})

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(writer)
            async with send:
                for i in range(count):
                    await send.send(i)
        registered = time.perf_counter() - t0

        def endpoints() -> int:
            return int(proxy.stats()["registry"]["clusters"]["blue"]["endpoints"])

        with trio.fail_after(300):
            while endpoints() < count:
                await trio.sleep(0.01)
        watched = time.perf_counter() - t0
        return {"instances": count, "register_s": round(registered, 2),
                "registrations_per_s": round(count / registered), "all_in_proxy_s": round(watched, 2)}


async def idle_watch_cpu(url: str, seconds: float, watches: int = 1) -> dict[str, Any]:
    async with open_store(url) as store:
        _, rev = await store.range("/idle/")

        async def watch(i: int) -> None:
            async with aclosing(store.watch(f"/idle/{i}/", rev)) as changes:
                async for _ in changes:
                    pass

        async with trio.open_nursery() as nursery:
            for i in range(watches):
                nursery.start_soon(watch, i)
            await trio.sleep(0.5)  # let the watch settle before measuring (a benchmark, not a test)
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            await trio.sleep(seconds)
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            nursery.cancel_scope.cancel()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"watches": watches, "cpu_percent_of_one_core": round(100 * cpu / (t1 - t0), 2),
            "seconds": seconds}


async def fan_out(url: str, watchers: int) -> dict[str, Any]:
    stores = [open_store(url) for _ in range(watchers)]
    seen: list[float] = []
    try:
        writer = Registry(stores[0])
        await writer.create_service(NS, "fan")
        _, rev = await stores[0].range(writer.instances_prefix(NS, "fan"))
        ready = 0
        all_ready = trio.Event()

        async def watch(store: Any) -> None:
            nonlocal ready
            async with aclosing(Registry(store).watch(NS, "fan", rev)) as changes:
                ready += 1
                if ready == watchers:
                    all_ready.set()
                async for _ in changes:
                    seen.append(time.perf_counter())
                    return

        async with trio.open_nursery() as nursery:
            for store in stores:
                nursery.start_soon(watch, store)
            await all_ready.wait()
            await trio.sleep(0.5)  # etcd: let the watch streams be created before the change
            t0 = time.perf_counter()
            await writer.register(NS, "fan", "one", {"AWS_INSTANCE_IPV4": "10.0.0.1"})
        return {"watchers": watchers, **ms([t - t0 for t in seen])}
    finally:
        for store in stores:
            await store.aclose()


async def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "register_to_first_routed": await register_to_routed(url, args.samples),
        "many_instances": await many_instances(url, args.instances),
        "idle_watch": await idle_watch_cpu(url, args.idle),
        "idle_watches_20_services": await idle_watch_cpu(url, args.idle, 20),
        "fan_out": await fan_out(url, args.watchers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="sqlite,etcd")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--out", metavar="FILE")
    args = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            if kind == "sqlite":
                url = f"sqlite://{Path(tmp) / 'bench.db'}"
                results["sqlite"] = trio.run(bench, url, args)
            elif kind == "etcd":
                if ETCD is None:
                    results["etcd"] = "skipped: no etcd binary"
                    continue
                (Path(tmp) / "etcd").mkdir()
                cluster = EtcdCluster(Path(tmp) / "etcd").start()
                try:
                    results["etcd"] = trio.run(bench, cluster.url, args)
                finally:
                    cluster.stop()
            print(json.dumps({kind: results.get(kind)}, indent=2), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
