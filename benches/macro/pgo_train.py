"""The training load of the release wheel's profile-guided build (`.ci/build-wheel`).

Run with an interpreter that has an *instrumented* meshplane installed (built with
`-Cprofile-generate=DIR`); every process that loaded it writes its counts into DIR when it exits.
It drives the paths users run, so that the optimising build lays out and inlines for them
(hot paths) and keeps the rest compact:

1. Data plane: a bare Core (`core_child.py` with the macro benchmark's snapshot: stats,
   weighted least request and outlier counting on, as by default) in front of nginx:
   HTTP/1.1 keep-alive (`wrk -c50`), cleartext HTTP/2 to HTTP/1.1 and to HTTP/2 upstreams
   (`h2load -c10 -m10`), HTTP/1.1 over TLS (`wrk`), a connection per request.
2. Control plane: `benches/control/run.py` with N hosts: compile and apply, endpoint changes,
   health checks, stats and admin renders.

Fails (exit status 1) if a load sees errors or the Core does not exit cleanly: a profile from a
broken run would teach the compiler the wrong paths.

    python benches/macro/pgo_train.py [--seconds S] [--hosts N]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_load import h2load_argv, parse_h2load, parse_wrk, wrk_argv  # noqa: E402
from bench_procs import Processes, find_binary  # noqa: E402
from bench_targets import KIND_H1, KIND_H2, KIND_H2H2, KIND_TLS, Starter  # noqa: E402
from bench_tls import make_certificate  # noqa: E402

TOOLS = ("nginx", "wrk", "h2load", "openssl")


def run_loads(bins: dict[str, str], ports: dict[str, int], seconds: int, work: Path) -> None:
    """Each load in turn; SystemExit if one fails or sees an error."""
    log = work / "h2load.log"
    wrk = partial(wrk_argv, bins["wrk"], threads=1, duration=seconds)
    h2 = partial(h2load_argv, bins["h2load"], clients=10, streams=10, duration=seconds, log=log)
    runs: list[tuple[str, list[str], Callable[[str], dict[str, Any]]]] = [
        ("HTTP/1.1 keep-alive", wrk(connections=50, port=ports[KIND_H1]), parse_wrk),
        ("h2c to HTTP/1.1", h2(port=ports[KIND_H2]), lambda t: parse_h2load(t, log)),
        ("h2c to h2c", h2(port=ports[KIND_H2H2]), lambda t: parse_h2load(t, log)),
        ("HTTP/1.1 over TLS", wrk(connections=50, port=ports[KIND_TLS], scheme="https"),
         parse_wrk),
        ("a connection per request",
         wrk(connections=10, port=ports[KIND_H1], headers=["Connection: close"]), parse_wrk),
    ]
    for name, argv, parse in runs:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
        r = parse(out)
        if r.get("error") or r["errors"]:
            raise SystemExit(f"pgo_train: {name} failed ({' '.join(argv)}):\n{out[-2000:]}")
        print(f"pgo_train: {name}: {r['rps']:,.0f} req/s", flush=True)


def data_plane(seconds: int) -> None:
    found = {k: find_binary(None, k) for k in TOOLS}
    missing = [k for k, v in found.items() if v is None]
    if missing:
        raise SystemExit(f"pgo_train: {', '.join(missing)} not found (Debian: apt-get install "
                         "nginx wrk nghttp2-client openssl)")
    bins: dict[str, str] = {k: v for k, v in found.items() if v is not None}
    work = Path(tempfile.mkdtemp(prefix="meshplane-pgo-"))
    procs = Processes(work)
    starter = Starter(procs, {**bins, "haproxy": None, "envoy": None}, None)
    starter.tls = make_certificate(bins["openssl"], work)
    try:
        starter.start_upstream()
        t = starter.start_target("meshplane")
        if t.error or t.proc is None:
            raise SystemExit(f"pgo_train: the Core did not start: {t.error}")
        for kind in (KIND_H2, KIND_H2H2, KIND_TLS):
            if kind in t.unsupported:
                raise SystemExit(f"pgo_train: no {kind} port: {t.unsupported[kind]}")
        run_loads(bins, t.ports, seconds, work)
        # The profile is written when the process exits: it must exit, and cleanly.
        t.proc.send_signal(signal.SIGTERM)
        code = t.proc.wait(timeout=60)
        procs.forget(t.proc)
        if code != 0:
            raise SystemExit(f"pgo_train: the Core exited with {code}")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def control_plane(hosts: int) -> None:
    argv = [sys.executable, str(HERE.parent / "control" / "run.py"), "--rounds", "1",
            "--sizes", str(hosts), "--probe-seconds", "2"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"pgo_train: {' '.join(argv)} failed ({r.returncode}):\n"
                         f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    print(f"pgo_train: control plane with {hosts} hosts done", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=5, help="seconds per data-plane load")
    ap.add_argument("--hosts", type=int, default=2000,
                    help="hosts in the control-plane phase (0 = skip it)")
    args = ap.parse_args()
    data_plane(args.seconds)
    if args.hosts:
        control_plane(args.hosts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
