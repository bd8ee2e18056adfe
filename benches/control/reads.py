"""What the synchronous stats reads cost the calling thread (the Trio loop's, when called on it),
with 10,000 hosts: `Proxy.stats()` with every host TCP-health-checked and with outlier
detection on every host (CPU time of the calling thread, best and median of `--rounds`), and
`Core.host_metrics()` (wall time: it writes on two threads and the caller waits for both).

    PYTHONPATH=python python3 benches/control/reads.py
    PYTHONPATH=<package> python3 benches/control/reads.py --hosts 10000 --rounds 15

A real `Proxy` per part (`run.py`'s mesh; probes refused, no traffic); prints text, asserts
nothing. Compare packages by running it with each, interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import trio
from meshplane import Proxy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import mesh  # noqa: E402


def timed(fn: Callable[[], object], rounds: int, clock: Callable[[], float]) -> str:
    took = []
    for _ in range(rounds):
        start = clock()
        fn()
        took.append((clock() - start) * 1000)
    return f"best {min(took):.2f} ms, median {statistics.median(took):.2f} ms"


async def main(args: argparse.Namespace) -> None:
    cpu, wall = time.thread_time, time.perf_counter
    async with Proxy(mesh(args.hosts, health=True), admin="127.0.0.1:0") as proxy:
        await trio.sleep(2.5)  # every host probed at least once (initial jitter: one interval)
        print(f"Proxy.stats(), every host health-checked (CPU): {timed(proxy.stats, args.rounds, cpu)}")
    async with Proxy(mesh(args.hosts, outliers=True), admin="127.0.0.1:0") as proxy:
        print(f"Proxy.stats(), outlier detection on every host (CPU): {timed(proxy.stats, args.rounds, cpu)}")
        core = proxy._require_core()
        print(f"Core.host_metrics() (wall): {timed(core.host_metrics, args.rounds, wall)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=15)
    trio.run(main, parser.parse_args())
