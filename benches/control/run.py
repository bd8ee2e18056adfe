"""Control-plane costs: compile and apply, one endpoint change, the Trio loop's longest stall,
and stats reads, with 100 / 1,000 / 10,000 hosts.

    python3 benches/control/run.py                       # sizes 100,1000,10000; ≈ 1 minute
    python3 benches/control/run.py --sizes 10000 --rounds 9 --probe-seconds 5

Everything runs in this one process on loopback, so the figures of one run read as ratios of
each other (read absolute numbers as orders of magnitude on a shared machine). Nothing here is
asserted; it prints a Markdown report.

1. **Compile and apply.** `Proxy`'s own compile step (`meshplane.runtime._compile`: the
   snapshot document and its bytes) and `Core.apply` of those bytes on a fresh core (every host
   new) and again on the same core with a new version (every host kept: the host-reuse path),
   median of `--rounds`; the last column is the calling thread's CPU time for both (apply runs
   on the calling thread), which a loaded machine inflates less than wall time.
2. **One endpoint change.** One host of an N-host cluster swapped for another, repeatedly:
   through `Core.set_endpoints` (the whole list, as DNS and registry discovery push it) and,
   where the core has it, `Core.update_endpoints` (the delta: add one, remove one). Flat
   across N means O(1).
3. **Loop stall.** A heartbeat task sleeps 1 ms at a time and records how late it wakes: the
   longest lateness is the longest time the Trio loop could run nothing (a task step that did
   not yield, or the GIL held by another thread). Measured in a real `Proxy` (admin API on) with
   N static hosts while: idle; applying a changed N-host config (`Proxy.apply`); active TCP
   health checks probe all N hosts every second (nothing listens there: every probe is refused,
   so every host turns unhealthy and the core is told); reading `Proxy.stats()` and GET
   /stats?format=json, /stats/prometheus and /clusters (text and JSON) on the admin port, from
   `scraper.py` in a process of its own (as Prometheus is): only the server's work is in this
   process, and the durations are the scraper's (request sent to last body byte read); then,
   with outlier detection on every host, `Proxy.stats()`, `await Proxy.read_stats()` and GET
   /clusters (the detector's per-host state joins those reads); then, with every host
   health-checked, `Proxy.stats(hosts=False)`, `await Proxy.read_stats()`,
   `Proxy.stats()`, GET /stats/prometheus and GET /clusters again (the checker's per-host state joins those
   reads). Beside each stall, the most CPU time one task step of the loop took (a Trio
   instrument): the loop's own work, which neither the machine's load nor the GIL inflates
   much.
4. **Stats read time** with N hosts: `Core.stats()`, `Proxy.stats()` and each admin GET.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from meshplane import Proxy
from meshplane._core import Core
from meshplane.config import from_dict
from meshplane.runtime import _compile


def address(i: int) -> str:
    return f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:9"


def mesh(hosts: int, *, health: bool = False, outliers: bool = False, offset: int = 0) -> dict[str, Any]:
    """Gateway edge -> service big.bench.local -> node big with `hosts` static endpoints
    (with `outliers`, outlier detection on them: 5 server errors in a row, 10 s sweeps)."""
    endpoints = [address(i + 1 + offset) for i in range(hosts)]
    listener: dict[str, Any] = {"portMapping": {"port": 8080, "protocol": "http"}}
    if outliers:
        listener["outlierDetection"] = {
            "maxServerErrors": 5, "interval": {"unit": "s", "value": 10},
            "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 10}
    if health:
        listener["healthCheck"] = {"protocol": "tcp", "intervalMillis": 5000, "timeoutMillis": 2000,
                                   "healthyThreshold": 2, "unhealthyThreshold": 2}
        listener["resilience"] = {"healthCheck": {"intervalMillis": 1000, "timeoutMillis": 500}}
    return {
        "mesh": "bench",
        "proxy": {"gateway": "edge", "bind": "127.0.0.1", "ports": {8080: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge",
             "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {
                 "target": {"virtualService": {"virtualServiceName": "big.bench.local"}}}}}},
            {"kind": "VirtualService", "name": "big.bench.local",
             "spec": {"provider": {"virtualNode": {"virtualNodeName": "big"}}}},
            {"kind": "VirtualNode", "name": "big",
             "spec": {"listeners": [listener], "serviceDiscovery": {"static": {"endpoints": endpoints}}}},
        ],
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def median_time(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this thread (steadier on a loaded machine)."""
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


# --- 1. compile and apply ---------------------------------------------------------------------


def compile_and_apply(sizes: list[int], rounds: int) -> list[str]:
    rows = ["| hosts | compile (ms) | apply, new hosts (ms) | apply, hosts kept (ms) | total, kept (ms) "
            "| total, kept, CPU time (ms) |",
            "|---:|---:|---:|---:|---:|---:|"]
    for n in sizes:
        config = from_dict(mesh(n), source="<bench>")
        _compile(config, {}, 1)  # warm-up: the first compile also builds caches
        compile_s, compile_cpu = median_time(lambda config=config: _compile(config, {}, 1), rounds)  # type: ignore[misc]
        fresh, kept, kept_cpu = [], [], []
        for r in range(rounds):
            first = _compile(config, {}, 2 * r + 1)[2]
            second = _compile(config, {}, 2 * r + 2)[2]
            core = Core()
            try:
                start = time.perf_counter()
                core.apply(first)
                fresh.append(time.perf_counter() - start)
                start, start_cpu = time.perf_counter(), time.thread_time()
                core.apply(second)
                kept.append(time.perf_counter() - start)
                kept_cpu.append(time.thread_time() - start_cpu)
            finally:
                core.shutdown(0)
        apply_kept = statistics.median(kept)
        rows.append(f"| {n:,} | {ms(compile_s)} | {ms(statistics.median(fresh))} | {ms(apply_kept)} "
                    f"| {ms(compile_s + apply_kept)} | {ms(compile_cpu + statistics.median(kept_cpu))} |")
    return rows


# --- 2. one endpoint change ---------------------------------------------------------------------


def endpoint_change(sizes: list[int], rounds: int) -> list[str]:
    has_delta = hasattr(Core, "update_endpoints")
    head = "| hosts | set_endpoints, whole list (µs) |" + (" update_endpoints, one host (µs) |" if has_delta else "")
    rows = [head, "|---:|---:|" + ("---:|" if has_delta else "")]
    changes = max(50, rounds * 20)
    for n in sizes:
        config = from_dict(mesh(n), source="<bench>")
        data = _compile(config, {}, 1)[2]
        core = Core()
        try:
            core.apply(data)
            base = [(address(i + 1), 1) for i in range(n)]
            spare = address(n + 1)
            whole = []
            for k in range(changes):
                endpoints = list(base)
                endpoints[k % n] = (spare, 1)  # one host swapped for another
                start = time.perf_counter()
                core.set_endpoints("big", endpoints)
                whole.append(time.perf_counter() - start)
            core.set_endpoints("big", base)
            row = f"| {n:,} | {us(statistics.median(whole))} |"
            if has_delta:
                delta = []
                for k in range(changes):
                    gone = base[k % n][0]
                    start = time.perf_counter()
                    core.update_endpoints("big", [(spare, 1)], [gone])  # type: ignore[attr-defined]
                    core.update_endpoints("big", [(gone, 1)], [spare])  # type: ignore[attr-defined]
                    delta.append((time.perf_counter() - start) / 2)
                row += f" {us(statistics.median(delta))} |"
            rows.append(row)
        finally:
            core.shutdown(0)
    return rows


# --- 3 and 4. the loop's longest stall, stats reads ----------------------------------------------


class StepCPU(trio.abc.Instrument):
    """`worst`: the most CPU time (of the Trio thread) one task step took since the last reset.
    Unlike the heartbeat's lateness it leaves out what the machine's other processes and
    this process's other threads (the GIL) cost the loop: what the loop's own work is."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._start = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._start = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.worst = max(self.worst, time.thread_time() - self._start)


class Heartbeat:
    """Sleeps `period` at a time; `worst` is the longest lateness since the last `reset`, and
    `steps.worst` the longest task step's CPU time (once `steps` is added as an instrument)."""

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        self.worst = 0.0
        self.steps = StepCPU()

    def reset(self) -> None:
        self.worst = 0.0
        self.steps.worst = 0.0

    def figure(self, worst: float) -> str:
        """The stall column: `worst` lateness / longest task step's CPU time, in ms."""
        return f"{ms(worst)} / {ms(self.steps.worst)}"

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            due = trio.current_time() + self.period
            await trio.sleep_until(due)
            self.worst = max(self.worst, trio.current_time() - due)


async def phase(beat: Heartbeat, work: Callable[[], Awaitable[object]], repeat: int) -> tuple[float, float]:
    """(longest stall, median duration of one `work`) over `repeat` runs."""
    await trio.sleep(0.05)
    beat.reset()
    took = []
    for _ in range(repeat):
        start = time.perf_counter()
        await work()
        took.append(time.perf_counter() - start)
        await trio.sleep(0.01)  # let the heartbeat see the loop again between runs
    return beat.worst, statistics.median(took)


class Scraper:
    """`scraper.py` in a subprocess: `get(url)` sends it the URL and awaits its line."""

    async def __aenter__(self) -> Scraper:
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scraper.py")
        self.process = await trio.lowlevel.open_process(
            [sys.executable, script], stdin=-1, stdout=-1)  # -1: subprocess.PIPE
        self.pending = b""
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.fail_after(10):
            await self.process.wait()

    async def get(self, url: str) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        await self.process.stdin.send_all(url.encode() + b"\n")
        while b"\n" not in self.pending:
            data = await self.process.stdout.receive_some()
            if not data:
                raise RuntimeError(f"scraper ended (exit {self.process.poll()}) on {url}")
            self.pending += data
        line, _, self.pending = self.pending.partition(b"\n")
        seconds, status, _size = line.split()
        if status != b"200":
            raise RuntimeError(f"GET {url}: {status.decode()}")
        return float(seconds)


async def loop_and_stats(n: int, rounds: int, probe_seconds: float) -> tuple[list[str], list[str]]:
    beat = Heartbeat()
    trio.lowlevel.add_instrument(beat.steps)
    stall_rows: list[str] = []
    read_rows: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        async with Proxy(mesh(n), admin="127.0.0.1:0") as proxy:
            assert proxy.admin_address is not None
            host, port = proxy.admin_address
            base = f"http://{host}:{port}"
            worst, _ = await phase(beat, lambda: trio.sleep(0.1), 5)
            stall_rows.append(f"| {n:,} | idle (0.5 s) | {beat.figure(worst)} | |")
            configs = [from_dict(mesh(n, offset=k % 2), source="<bench>") for k in range(2)]
            counter = iter(range(10**6))

            async def apply() -> None:
                await proxy.apply(configs[next(counter) % 2])

            worst, took = await phase(beat, apply, rounds)
            stall_rows.append(f"| {n:,} | `Proxy.apply`, one host changed | {beat.figure(worst)} | {ms(took)} |")

            core = proxy._require_core()
            reads: list[tuple[str, Callable[[], Awaitable[object]]]] = []

            async def sync(fn: Callable[[], object]) -> object:
                return fn()

            # Called on the loop, as a caller may: the loop stops for the whole copy.
            reads.append(("`Core.stats()` (on the loop)", lambda: sync(core.stats)))
            reads.append(("`Proxy.stats()` (on the loop)", lambda: sync(proxy.stats)))
            reads.append(("`Proxy.stats(hosts=False)` (on the loop)",
                          lambda: sync(lambda: proxy.stats(hosts=False))))
            if hasattr(proxy, "read_stats"):
                reads.append(("`await Proxy.read_stats()`", proxy.read_stats))
            if hasattr(proxy, "host_metrics"):
                reads.append(("`Proxy.host_metrics()`", lambda: sync(proxy.host_metrics)))
            if hasattr(proxy, "read_host_metrics"):
                reads.append(("`await Proxy.read_host_metrics()`", proxy.read_host_metrics))
            for name, read in reads:
                worst, took = await phase(beat, read, rounds)
                stall_rows.append(f"| {n:,} | {name} | {beat.figure(worst)} | {ms(took)} |")
                read_rows.append(f"| {n:,} | {name} | {ms(took)} |")
            # The scraper is another process (a new connection each GET, as Prometheus): only
            # the server's work is in this process; its duration is the scraper's own figure.
            async with Scraper() as scraper:
                for path in ("/stats?format=json", "/stats/prometheus", "/clusters",
                             "/clusters?format=json"):
                    durations: list[float] = []

                    async def get(path: str = path, durations: list[float] = durations) -> None:
                        durations.append(await scraper.get(base + path))

                    worst, _ = await phase(beat, get, rounds)
                    took = statistics.median(durations)
                    stall_rows.append(f"| {n:,} | GET {path} | {beat.figure(worst)} | {ms(took)} |")
                    read_rows.append(f"| {n:,} | GET {path} | {ms(took)} |")
        # Outlier detection on every host (no traffic: no host is ejected; the detector's
        # per-host view joins the stats reads).
        async with Proxy(mesh(n, outliers=True), admin="127.0.0.1:0") as proxy:
            assert proxy.admin_address is not None
            host, port = proxy.admin_address
            base = f"http://{host}:{port}"

            async def with_outliers() -> object:
                return proxy.stats()

            worst, took = await phase(beat, with_outliers, rounds)
            stall_rows.append(f"| {n:,} | with outlier detection: `Proxy.stats()` (on the loop) "
                              f"| {beat.figure(worst)} | {ms(took)} |")
            worst, took = await phase(beat, proxy.read_stats, rounds)
            stall_rows.append(f"| {n:,} | with outlier detection: `await Proxy.read_stats()` "
                              f"| {beat.figure(worst)} | {ms(took)} |")
            async with Scraper() as scraper:
                durations = []

                async def get_clusters(durations: list[float] = durations) -> None:
                    durations.append(await scraper.get(base + "/clusters"))

                worst, _ = await phase(beat, get_clusters, rounds)
                stall_rows.append(f"| {n:,} | with outlier detection: GET /clusters | {beat.figure(worst)} "
                                  f"| {ms(statistics.median(durations))} |")
        if probe_seconds > 0:
            async with Proxy(mesh(n, health=True), admin="127.0.0.1:0") as proxy:
                await trio.sleep(0.05)
                beat.reset()
                await trio.sleep(probe_seconds)
                stall_rows.append(f"| {n:,} | TCP health checks, 1 s interval ({probe_seconds:g} s) "
                                  f"| {beat.figure(beat.worst)} | |")
                # Stats reads while every host is checked (the checker's per-host state joins them).
                assert proxy.admin_address is not None
                host, port = proxy.admin_address
                base = f"http://{host}:{port}"

                async def lean() -> object:
                    return proxy.stats(hosts=False)

                worst, took = await phase(beat, lean, rounds)
                stall_rows.append(f"| {n:,} | with health checks: `Proxy.stats(hosts=False)` (on the loop) "
                                  f"| {beat.figure(worst)} | {ms(took)} |")
                worst, took = await phase(beat, proxy.read_stats, rounds)
                stall_rows.append(f"| {n:,} | with health checks: `await Proxy.read_stats()` "
                                  f"| {beat.figure(worst)} | {ms(took)} |")

                async def full() -> object:
                    return proxy.stats()

                worst, took = await phase(beat, full, rounds)
                stall_rows.append(f"| {n:,} | with health checks: `Proxy.stats()` (on the loop) "
                                  f"| {beat.figure(worst)} | {ms(took)} |")
                async with Scraper() as scraper:
                    for path in ("/stats/prometheus", "/clusters"):
                        durations = []

                        async def get(path: str = path, durations: list[float] = durations) -> None:
                            durations.append(await scraper.get(base + path))  # noqa: B023 (awaited now)

                        worst, _ = await phase(beat, get, rounds)
                        stall_rows.append(f"| {n:,} | with health checks: GET {path} | {beat.figure(worst)} "
                                          f"| {ms(statistics.median(durations))} |")
        nursery.cancel_scope.cancel()
    return stall_rows, read_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="host counts (comma-separated)")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions per figure (median)")
    parser.add_argument("--probe-seconds", type=float, default=3.0,
                        help="how long to watch the loop while health checks probe (0 = skip)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}; sizes {sizes}, rounds {args.rounds}\n")
    print("## Compile and apply\n")
    print("\n".join(compile_and_apply(sizes, args.rounds)))
    print("\n## One endpoint change\n")
    print("\n".join(endpoint_change(sizes, args.rounds)))
    stalls = ["| hosts | activity | longest loop stall / longest task step, CPU (ms) | median duration (ms) |",
              "|---:|---|---:|---:|"]
    reads = ["| hosts | read | median (ms) |", "|---:|---|---:|"]
    for n in sizes:
        s, r = trio.run(loop_and_stats, n, args.rounds, args.probe_seconds)
        stalls += s
        reads += r
    print("\n## Trio loop: longest stall (1 ms heartbeat)\n")
    print("\n".join(stalls))
    print("\n## Stats reads\n")
    print("\n".join(reads))


if __name__ == "__main__":
    main()
