"""The Trio loop's longest stall per `Proxy.apply` of a changed 10,000-host config, with the two
apply-side measures of issue 13 switched on and off in one process (same build, same load):

- `switch`: the apply's Python work in worker threads runs with a 0.5 ms GIL switch interval
  (`meshplane.runtime._BRIEF_SWITCH_S`; off = 5 ms, Python's default);
- `regex`: canonical endpoint addresses are checked a regex pass per 1,024
  (`meshplane.config.compile._CANONICAL_STEP`; off = one pass over all);
- `nice` (only with both others: `both+nice`): that Python work runs in a thread of its own
  niced by 10 (`meshplane.runtime._APPLY_NICE`; off = 0, in Trio's worker thread).

    PYTHONPATH=python python3 benches/control/apply_stall.py [applies per mode, default 20] [rounds, default 2] [modes]

(`modes`: comma-separated, default all, e.g. `both,both+nice`.)

Prints, per mode and round, the median / p90 / max stall over the applies, and the same for an
idle 15 ms wait before each apply (the machine's own noise). Last, the floor any apply meets
here: the same idle waits while one thread of this process only burns CPU with the GIL
released (`hashlib` on 8 MB), as the core's apply and a compile do: what the OS scheduler
alone adds when the process wants both cores. Asserts nothing.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import meshplane.config.compile as compile_module  # noqa: E402
import meshplane.runtime as runtime  # noqa: E402
from meshplane import Proxy  # noqa: E402
from meshplane.config import from_dict  # noqa: E402
from run import Heartbeat, mesh  # noqa: E402

MODES = ("neither", "switch", "regex", "both", "both+nice")


def quantile(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))] * 1000


async def one(mode: str, applies: int) -> str:
    runtime._BRIEF_SWITCH_S = 0.0005 if mode in ("switch", "both", "both+nice") else 0.005
    compile_module._CANONICAL_STEP = 1024 if mode in ("regex", "both", "both+nice") else 10**9
    runtime._APPLY_NICE = 10 if mode == "both+nice" else 0
    configs = [from_dict(mesh(10000, offset=k), source="<bench>") for k in range(2)]
    beat = Heartbeat()
    stalls: list[float] = []
    idle: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        async with Proxy(mesh(10000), admin="127.0.0.1:0") as proxy:
            await trio.sleep(0.1)
            for k in range(applies):
                beat.reset()
                await trio.sleep(0.015)
                idle.append(beat.worst)
                beat.reset()
                await proxy.apply(configs[k % 2])
                stalls.append(beat.worst)
        nursery.cancel_scope.cancel()
    return (f"| {mode} | {quantile(stalls, .5):.2f} | {quantile(stalls, .9):.2f} | {quantile(stalls, 1):.2f} "
            f"| {quantile(idle, .5):.2f} | {quantile(idle, .9):.2f} | {quantile(idle, 1):.2f} |")


async def hog_floor(waits: int) -> str:
    stop = threading.Event()
    data = b"x" * (8 << 20)

    def hog() -> None:
        while not stop.is_set():
            hashlib.sha256(data).digest()  # the GIL is released while it hashes

    beat = Heartbeat()
    idle: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        thread = threading.Thread(target=hog)
        thread.start()
        try:
            for _ in range(waits):
                beat.reset()
                await trio.sleep(0.015)
                idle.append(beat.worst)
        finally:
            stop.set()
            thread.join()
        nursery.cancel_scope.cancel()
    return (f"| idle + a GIL-free CPU thread | | | | {quantile(idle, .5):.2f} | {quantile(idle, .9):.2f} "
            f"| {quantile(idle, 1):.2f} |")


def main() -> None:
    applies = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    modes = sys.argv[3].split(",") if len(sys.argv) > 3 else MODES
    print("| mode | apply stall p50 (ms) | p90 | max | idle 15 ms p50 | p90 | max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for _ in range(rounds):
        for mode in modes:
            print(trio.run(one, mode, applies))
    print(trio.run(hog_floor, applies))


if __name__ == "__main__":
    main()
