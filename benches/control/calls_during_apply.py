"""How long the Trio thread waits in `Core.set_endpoints`, `Core.update_endpoints` and
`Core.reload_tls` while `Proxy.apply` of a changed 10,000-host config runs (issue 13: nothing
the loop runs blocks it for more than 5 ms).

    PYTHONPATH=python python3 benches/control/calls_during_apply.py [applies, default 10]

A task calls each of the three in turn on the loop, as the discovery drivers and the
certificate watcher do (one host of a small second cluster swapped, whole list and delta;
a reload of a snapshot without TLS files), as fast as it can while the apply runs; prints the
median, p90 and longest single call per kind, in microseconds, how many calls were made and
how many took over 0.5 ms. A core that waits for the apply shows the core's apply in those (one
per kind and apply, about the core's part of the apply long); a loaded machine adds preempted
calls of any kind. Asserts nothing.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from meshplane import Proxy  # noqa: E402
from meshplane.config import from_dict  # noqa: E402
from run import mesh  # noqa: E402


def with_small_cluster(doc: dict[str, Any]) -> dict[str, Any]:
    """`mesh(...)` plus node `small` (two static hosts) behind service small.bench.local,
    routed from /small."""
    doc["resources"] += [
        {"kind": "GatewayRoute", "name": "small", "virtualGatewayName": "edge",
         "spec": {"priority": 0, "httpRoute": {"match": {"prefix": "/small"}, "action": {
             "target": {"virtualService": {"virtualServiceName": "small.bench.local"}}}}}},
        {"kind": "VirtualService", "name": "small.bench.local",
         "spec": {"provider": {"virtualNode": {"virtualNodeName": "small"}}}},
        {"kind": "VirtualNode", "name": "small",
         "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                  "serviceDiscovery": {"static": {"endpoints": ["10.9.0.1:80", "10.9.0.2:80"]}}}},
    ]
    return doc


def quantile(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))] * 1e6


async def main(applies: int) -> None:
    configs = [from_dict(with_small_cluster(mesh(10000, offset=k)), source="<bench>") for k in range(2)]
    took: dict[str, list[float]] = {"set_endpoints": [], "update_endpoints": [], "reload_tls": []}
    async with Proxy(with_small_cluster(mesh(10000)), admin="127.0.0.1:0") as proxy:
        core = proxy._require_core()
        whole = [[("10.9.0.1:80", 1), ("10.9.0.3:80", 1)], [("10.9.0.1:80", 1), ("10.9.0.2:80", 1)]]
        calls = [
            ("set_endpoints", lambda k: core.set_endpoints("small", whole[k % 2])),
            ("update_endpoints", lambda k: core.update_endpoints(
                "small", [("10.9.0.4:80", 1)] if k % 2 else [], [] if k % 2 else ["10.9.0.4:80"])),
            ("reload_tls", lambda k: core.reload_tls()),
        ]
        for k in range(applies):
            done = trio.Event()

            async def apply(k: int = k, done: trio.Event = done) -> None:
                await proxy.apply(configs[k % 2])
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(apply)
                n = 0
                while not done.is_set():
                    name, call = calls[n % 3]
                    start = time.perf_counter()
                    call(n)
                    took[name].append(time.perf_counter() - start)
                    n += 1
                    await trio.sleep(0)
    print("| call, during `Proxy.apply` of 10,000 hosts | calls | median (µs) | p90 (µs) | longest (µs) "
          "| over 0.5 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in took.items():
        print(f"| `Core.{name}` | {len(values)} | {quantile(values, .5):.1f} | {quantile(values, .9):.1f} "
              f"| {quantile(values, 1):.1f} | {sum(v > 0.0005 for v in values)} |")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 10)
