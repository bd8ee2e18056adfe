"""The Trio loop's longest task steps, by task, with the garbage collections inside them.

    PYTHONPATH=python python3 benches/control/steps.py probe              # probing alone, 3 s
    PYTHONPATH=python python3 benches/control/steps.py /clusters          # 3 GETs (scraper.py)
    PYTHONPATH=python python3 benches/control/steps.py lean               # 3 x stats(hosts=False)
    PYTHONPATH=python python3 benches/control/steps.py probe --hosts 1000 --top 5
    PYTHONPATH=python python3 benches/control/steps.py rate               # the probing's pace
    PYTHONPATH=python python3 benches/control/steps.py threads            # who ran while the loop was late
    PYTHONPATH=python python3 benches/control/steps.py threads --during /clusters   # ... with GETs

A real `Proxy` with N health-checked static hosts (`run.py`'s mesh: TCP probes every second,
all refused); after 1 s of probing, a Trio instrument records every task step over
`--threshold` ms of the Trio thread's CPU time, and `gc.callbacks` the collections (generation,
duration in ms) that ran inside each: what a stall of `run.py` is made of. Then, with `--census`,
how many objects the collector's oldest generation holds outside the frozen ones, by type, and
the CPU time of one full collection. `rate` instead samples the probing each second for 5 s:
due hosts queued, probes in flight, probes started per second, and the Trio thread's share of
a core (with 10,000 hosts at a 1 s interval, 10,000 probes/s keep up). `threads` sleeps 1 ms
at a time for 3 s while probing and, for each wake-up later than `--late` ms, prints how long
the Trio thread waited for a CPU and how much CPU each thread of the process used meanwhile
(Linux schedstat): whether the loop waited for a core or for the GIL, and whose (with
`--during PATH`, while `scraper.py` GETs PATH again and again, 50 ms apart). Prints text;
asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import sys
import threading
import time
from typing import Any

import trio
from meshplane import Proxy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Scraper, mesh  # noqa: E402


class Steps(trio.abc.Instrument):
    """Task steps over `threshold` seconds of thread CPU time, with the collections in them."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.on = False
        self.rows: list[tuple[float, float, str, list[tuple[int, float]]]] = []
        self.collections: list[tuple[int, float]] = []
        self._cpu = self._wall = self._gc_start = 0.0

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            self.collections.append((info["generation"], (time.thread_time() - self._gc_start) * 1000))

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.collections = []
        self._cpu, self._wall = time.thread_time(), time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        cpu = time.thread_time() - self._cpu
        if self.on and cpu > self.threshold:
            self.rows.append((cpu * 1000, (time.perf_counter() - self._wall) * 1000, task.name, self.collections))


def thread_times() -> dict[int, tuple[str, int, int]]:
    """Every thread of this process: tid -> (name, ns on a CPU, ns waiting for one), from
    /proc (Linux schedstat)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ran, waited, _ = f.read().split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (name, int(ran), int(waited))
    return out


async def late_threads(seconds: float, threshold: float) -> None:
    """Sleep 1 ms at a time for `seconds`; for each wake-up later than `threshold` ms, which
    threads ran meanwhile (ms on a CPU) and how long the Trio thread waited for a CPU."""
    me = threading.get_native_id()
    late: list[tuple[float, float, dict[str, float]]] = []
    totals: collections.Counter[str] = collections.Counter()
    before = thread_times()
    first = dict(before)
    end = time.perf_counter() + seconds
    own: list[float] = []  # the Trio thread's CPU between two wake-ups (ms): its batches
    while time.perf_counter() < end:
        start, cpu = time.perf_counter(), time.thread_time()
        await trio.sleep(0.001)
        lateness = (time.perf_counter() - start - 0.001) * 1000
        own.append((time.thread_time() - cpu) * 1000)
        now = thread_times()
        if lateness > threshold:
            ran: collections.Counter[str] = collections.Counter()
            for tid, (name, on_cpu, _) in now.items():
                was = before.get(tid, (name, 0, 0))[1]
                label = "Trio thread" if tid == me else name
                ran[label] += (on_cpu - was) / 1e6
            waited = (now[me][2] - before.get(me, ("", 0, 0))[2]) / 1e6
            late.append((lateness, waited, dict(ran)))
        before = now
    for tid, (name, on_cpu, _) in before.items():
        label = "Trio thread" if tid == me else name
        totals[label] += (on_cpu - first.get(tid, (name, 0, 0))[1]) / 1e6
    own.sort()
    print(f"the Trio thread's CPU between two wake-ups of a 1 ms sleep (what a quiet machine's "
          f"stall would be), ms: max {own[-1]:.2f}, p99 {own[int(len(own) * 0.99)]:.2f}, "
          f"p90 {own[int(len(own) * 0.9)]:.2f} ({len(own)} wake-ups)")
    print(f"CPU per thread over {seconds:g} s (ms): "
          + ", ".join(f"{k} {v:.0f}" for k, v in totals.most_common()))
    print(f"{len(late)} wake-ups later than {threshold:g} ms; the latest, with the Trio thread's "
          "wait for a CPU and what each thread ran meanwhile (ms):")
    for lateness, waited, ran in sorted(late, key=lambda r: r[0], reverse=True)[:10]:
        busy = ", ".join(f"{k} {v:.1f}" for k, v in sorted(ran.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        print(f"  late {lateness:6.2f}  Trio thread waited for a CPU {waited:5.2f}  ran: {busy}")


async def main(args: argparse.Namespace) -> None:
    steps = Steps(args.threshold / 1000)
    trio.lowlevel.add_instrument(steps)
    gc.callbacks.append(steps.gc_callback)
    async with Proxy(mesh(args.hosts, health=True), admin="127.0.0.1:0") as proxy:
        await trio.sleep(1.0)
        if args.what == "rate":
            health = proxy._resilience.health  # type: ignore[union-attr]
            for _ in range(5):
                attempts = sum(c.attempt for c in health._clusters.values())
                cpu, wall = time.thread_time(), time.perf_counter()
                await trio.sleep(1.0)
                done = sum(c.attempt for c in health._clusters.values()) - attempts
                wall = time.perf_counter() - wall
                print(f"queued {len(health._queue):5d}  in flight {health._in_flight:3d}  "
                      f"{done / wall:6.0f} probes/s  Trio thread {(time.thread_time() - cpu) / wall:4.0%} of a core")
            return
        if args.what == "threads":
            if not args.during:
                await late_threads(3.0, args.late)
                return
            assert proxy.admin_address is not None
            host, port = proxy.admin_address
            async with Scraper() as scraper, trio.open_nursery() as nursery:

                async def scrape() -> None:
                    while True:  # until cancelled, when the 3 s are up
                        await scraper.get(f"http://{host}:{port}{args.during}")
                        await trio.sleep(0.05)

                nursery.start_soon(scrape)
                await late_threads(3.0, args.late)
                nursery.cancel_scope.cancel()
            return
        steps.on = True
        if args.what == "probe":
            await trio.sleep(3.0)
        else:
            assert proxy.admin_address is not None
            host, port = proxy.admin_address
            async with Scraper() as scraper:
                for _ in range(3):
                    if args.what == "lean":
                        proxy.stats(hosts=False)
                    else:
                        await scraper.get(f"http://{host}:{port}{args.what}")
                    await trio.sleep(0.05)
        steps.on = False
        if args.census:
            old = gc.get_objects(generation=2)
            kinds = collections.Counter(type(o).__name__ for o in old).most_common(5)
            count = len(old)
            del old
            start = time.thread_time()
            gc.collect()
            took = (time.thread_time() - start) * 1000
            print(f"oldest generation, not frozen: {count} objects {kinds}; one full collection "
                  f"{took:.2f} ms CPU ({gc.get_freeze_count()} frozen)")
    gc.callbacks.remove(steps.gc_callback)
    print(f"{len(steps.rows)} task steps over {args.threshold:g} ms of CPU; the longest:")
    for cpu, wall, name, collected in sorted(steps.rows, reverse=True)[: args.top]:
        gcs = " ".join(f"gen{g} {ms:.2f} ms" for g, ms in collected)
        print(f"  {cpu:6.2f} ms CPU {wall:7.2f} ms wall  {name.rsplit('.', 2)[-2:]}  {gcs}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", help="probe | rate | threads | lean | an admin path such as /clusters")
    parser.add_argument("--late", type=float, default=3.0, help="threads: ms late to report")
    parser.add_argument("--during", default="", help="threads: GET this admin path again and again meanwhile")
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--threshold", type=float, default=1.0, help="ms of CPU time")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--census", action="store_true", help="count the oldest generation afterwards")
    trio.run(main, parser.parse_args())
