"""Syscalls, context switches and CPU per proxied request, counted by the kernel (benches/README.md,
"Batches without a clock").

    python benches/macro/syscalls.py [--rate N] [--duration S] TARGET...

TARGET is `haproxy` or a directory to put on PYTHONPATH for a bare meshplane Core
(`core_child.py`; e.g. `python`, or a copy of it holding another build's `_core.abi3.so`), so
builds can be compared with each other and with HAProxy in one run. Each target gets the bench
upstream (`upstream_nginx_conf`), one second of warm-up, then `perf stat` counts, for the
target's process only, `epoll_wait`, `recvfrom`, `sendto` and `writev` entries, context
switches and task-clock while `wrk -t1 -c50` (closed loop, the default) or the fixed-rate
`openloop` (`--rate N`, 50 connections; `cargo build --release --example openloop`) sends the
load. Counts are divided by the requests completed.

Counts hardly depend on what else the machine runs (unlike req/s or latency on a shared
2-core machine): a proxy that wakes, polls or switches more per request shows it here. Needs
`perf` (linux-perf, with the syscalls tracepoints: root), nginx, haproxy, wrk. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_configs import haproxy_conf, meshplane_snapshot, upstream_nginx_conf  # noqa: E402
from bench_procs import (  # noqa: E402
    Processes,
    await_ready,
    free_port,
    http_get_ok,
    read_line,
)

EVENTS = ("syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_recvfrom",
          "syscalls:sys_enter_sendto", "syscalls:sys_enter_writev", "context-switches",
          "task-clock")


def start_target(procs: Processes, work: Path, name: str, up1: int, up2: int) -> tuple[int, int]:
    """(pid, port) of a started target."""
    if name == "haproxy":
        h1, h2 = free_port(), free_port()
        (work / "haproxy.cfg").write_text(haproxy_conf(h1, h2, up1, up2))
        p = procs.start("haproxy", ["haproxy", "-f", str(work / "haproxy.cfg")])
        port = h1
    else:
        snap = work / "snapshot.json"
        snap.write_text(json.dumps(meshplane_snapshot(up1, up2)))
        env = dict(os.environ, PYTHONPATH=name)
        p = subprocess.Popen([sys.executable, str(HERE / "core_child.py"), str(snap)], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             start_new_session=True)
        procs.procs.append((name, p))
        m = read_line(p, r"^\{.*\}$", 30)
        if m is None:
            raise SystemExit(f"{name}: the Core child printed no listeners")
        port = json.loads(m[0])["listeners"]["h1"]
    if not await_ready(lambda: http_get_ok(port), p):
        raise SystemExit(f"{name}: no 200 on port {port}")
    return p.pid, port


def load(args: argparse.Namespace, port: int, duration: int) -> int:
    """Send the load; return the requests completed."""
    url = f"http://127.0.0.1:{port}/"
    if args.rate:
        out = subprocess.run([args.openloop, "--rate", str(args.rate), "--connections", "50",
                              "--duration", str(duration), "--timeout", "5", url],
                             capture_output=True, text=True, check=True).stdout
        return int(json.loads(out.strip().splitlines()[-1])["completed"])
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{duration}s", url],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"(\d+) requests in", out)
    if m is None:
        raise SystemExit(f"could not parse wrk's output: {out[-300:]}")
    return int(m[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", metavar="TARGET")
    ap.add_argument("--rate", type=int, default=0, help="fixed request rate (default: wrk's closed loop)")
    ap.add_argument("--duration", type=int, default=4, help="seconds of counted load (default: 4)")
    ap.add_argument("--openloop", default=str(HERE.parent.parent / "target/release/examples/openloop"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="meshplane-syscalls-"))
    procs = Processes(work)
    try:
        up1, up2 = free_port(), free_port()
        (work / "upstream").mkdir()
        (work / "upstream/nginx.conf").write_text(upstream_nginx_conf(work / "upstream", up1, up2))
        ng = procs.start("upstream", ["nginx", "-p", str(work / "upstream"), "-e",
                                      str(work / "upstream/error.log"), "-c",
                                      str(work / "upstream/nginx.conf")])
        if not await_ready(lambda: http_get_ok(up1), ng):
            raise SystemExit("the upstream nginx did not start")
        print(f"{'target':>32} " + " ".join(f"{e.split(':')[-1].replace('sys_enter_', ''):>14}"
                                          for e in EVENTS) + "  (per request; task-clock in µs)")
        for name in args.targets:
            pid, port = start_target(procs, work, name, up1, up2)
            load(args, port, 1)
            out = work / "perf.csv"
            stat = subprocess.Popen(["perf", "stat", "-x,", "-o", str(out), "-e", ",".join(EVENTS),
                                     "-p", str(pid)])
            try:
                requests = load(args, port, args.duration)
            finally:
                stat.send_signal(2)
                stat.wait()
            counts = {}
            for line in out.read_text().splitlines():
                f = line.split(",")
                if len(f) > 3 and f[2] in EVENTS:
                    counts[f[2]] = float(f[0]) if f[0][:1].isdigit() else 0.0
            per = [counts.get(e, 0.0) / max(requests, 1) * (1000 if e == "task-clock" else 1)
                   for e in EVENTS]
            print(f"{name[-32:]:>32} " + " ".join(f"{v:14.3f}" for v in per)
                  + f"  ({requests} requests)", flush=True)
            procs.stop(next(p for n, p in procs.procs if n == name))
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
