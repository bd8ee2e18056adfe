"""User-space instructions per proxied request under callgrind (benches/README.md, issue 13).

`python benches/macro/callgrind_ir.py [--requests N]`, from the repository root, with the
freshly built `_core.abi3.so` in `python/meshplane`. Starts the bench upstream nginx
(`upstream_nginx_conf`: `return 200` of the bench body) and a bare Core
(`core_child.py`, one HTTP/1.1 cluster) under `valgrind --tool=callgrind --instr-atstart=no`;
then for h1 (`h2load --h1 -c50`) and h2c (`h2load -c10 -m10`, HTTP/2 downstream, HTTP/1.1
upstream): 2,000 requests of warm-up, instrumentation on for N requests (default 5,000), off,
dump; prints the dump's total Ir / N. Needs valgrind, nginx and h2load. Not a test.

h2c varies by a few percent between runs: HPACK's dynamic table work depends on the values
sent (the `date` second, `x-envoy-upstream-service-time`'s milliseconds); `--no-hpack` also
prints the figure without `h2::hpack::table::Table::index` (callgrind_annotate).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_configs import meshplane_snapshot, upstream_nginx_conf  # noqa: E402

LOADS = {"h1": ["--h1", "-c50"], "h2c": ["-c10", "-m10"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def _hpack(dump: Path) -> int:
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "h2::hpack::table::Table::index" in line:
            return int(line.split()[0].replace(",", ""))
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000, help="measured requests per load")
    ap.add_argument("--no-hpack", action="store_true",
                    help="also print h2c without HPACK's Table::index")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="callgrind-ir-"))
    h1, h2 = _free_port(), _free_port()
    (work / "nginx.conf").write_text(upstream_nginx_conf(work, h1, h2))
    nginx = subprocess.Popen(["nginx", "-p", str(work), "-c", str(work / "nginx.conf")])
    _wait_port(h1)
    snap = work / "snapshot.json"
    snap.write_text(json.dumps(meshplane_snapshot(h1, None, two_listeners=False, version="ir")))
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or str(HERE.parent.parent / "python"))
    out = work / "callgrind.out"
    core = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, str(HERE / "core_child.py"), str(snap)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert core.stdout is not None
        port = next(iter(json.loads(core.stdout.readline())["listeners"].values()))
        url = f"http://127.0.0.1:{port}/"
        pid = str(core.pid)
        for n, (name, load) in enumerate(LOADS.items(), start=1):
            subprocess.run(["h2load", *load, "-t1", "-n", "2000", url], check=True,
                           capture_output=True)
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
            r = subprocess.run(["h2load", *load, "-t1", "-n", str(args.requests), url],
                               check=True, capture_output=True, text=True)
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True,
                           capture_output=True)
            subprocess.run(["callgrind_control", "-d", name, pid], check=True,
                           capture_output=True)
            if f"{args.requests} succeeded" not in r.stdout:
                raise RuntimeError(f"h2load: not every request succeeded:\n{r.stdout}")
            dump = Path(f"{out}.{n}")
            line = f"{name}: {_total(dump) / args.requests:,.0f} Ir/request"
            if name == "h2c" and args.no_hpack:
                no_hpack = (_total(dump) - _hpack(dump)) / args.requests
                line += f" ({no_hpack:,.0f} without HPACK's Table::index)"
            print(line, f"[{dump}]", flush=True)
    finally:
        core.terminate()
        core.wait(60)
        nginx.terminate()
        nginx.wait(10)


if __name__ == "__main__":
    main()
