"""User-space instructions per proxied request under callgrind (benches/README.md, issue 13).

`python benches/macro/callgrind_ir.py [--requests N]`, from the repository root, with the
freshly built `_core.abi3.so` in `python/meshplane`. Starts the bench upstream nginx
(`upstream_nginx_conf`: `return 200` of the bench body) and a bare Core
(`core_child.py`, one HTTP/1.1 cluster) under `valgrind --tool=callgrind --instr-atstart=no`;
then for h1 (`h2load --h1 -c50`) and h2c (`h2load -c10 -m10`, HTTP/2 downstream, HTTP/1.1
upstream): 2,000 requests of warm-up, instrumentation on for N requests (default 5,000), off,
dump; prints the dump's total Ir / N. Needs valgrind, nginx and h2load. Not a test.

`--loads h1tls` (or `--tls`, which adds it to the default loads): HTTP/1.1 over TLS 1.3 through
a STRICT TLS listener (the `openssl` CLI makes a self-signed ECDSA P-256 certificate, as
run.py does), `h2load --h1 -c50` over https with `--tls13-ciphers` in OpenSSL's default order
(AES-256-GCM first: what wrk, an OpenSSL client, offers in the tls-keepalive scenario; rustls
follows the client's order). Every h2load run opens 50 new connections, so each measured load
includes 50 full handshakes; h1tls therefore measures two loads (N and 3N requests) and prints
(Ir(3N) - Ir(N)) / 2N: the per-request cost with the handshakes subtracted.

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
from bench_tls import make_certificate  # noqa: E402

# OpenSSL's default TLS 1.3 order (wrk's offer); h2load's own default puts AES-128-GCM first.
OPENSSL_TLS13 = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
LOADS = {"h1": ["--h1", "-c50"], "h2c": ["-c10", "-m10"], "h1tls": ["--h1", "-c50"]}


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
    ap.add_argument("--loads", default="h1,h2c",
                    help="comma-separated subset of h1,h2c,h1tls (default: h1,h2c)")
    ap.add_argument("--tls", action="store_true", help="add h1tls to --loads")
    ap.add_argument("--tls13-ciphers", default=OPENSSL_TLS13,
                    help="h2load's TLS 1.3 offer in h1tls (default: OpenSSL's order, as wrk)")
    args = ap.parse_args()
    loads = [x for x in args.loads.split(",") if x] + (["h1tls"] if args.tls else [])
    unknown = set(loads) - set(LOADS)
    if unknown:
        ap.error(f"unknown loads: {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="callgrind-ir-"))
    tls = None
    if "h1tls" in loads:
        files = make_certificate("openssl", work)
        tls = (0, files.cert, files.key)
    h1, h2 = _free_port(), _free_port()
    (work / "nginx.conf").write_text(upstream_nginx_conf(work, h1, h2))
    nginx = subprocess.Popen(["nginx", "-p", str(work), "-c", str(work / "nginx.conf")])
    _wait_port(h1)
    snap = work / "snapshot.json"
    snap.write_text(json.dumps(meshplane_snapshot(h1, None, two_listeners=False, version="ir",
                                                     tls=tls)))
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH") or str(HERE.parent.parent / "python"))
    out = work / "callgrind.out"
    core = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         sys.executable, str(HERE / "core_child.py"), str(snap)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert core.stdout is not None
        ports = json.loads(core.stdout.readline())["listeners"]
        pid = str(core.pid)
        dumps = 0

        def measure(name: str, argv: list[str], requests: int) -> Path:
            nonlocal dumps
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
            r = subprocess.run([*argv, "-n", str(requests)], check=True, capture_output=True,
                               text=True)
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True,
                           capture_output=True)
            subprocess.run(["callgrind_control", "-d", name, pid], check=True,
                           capture_output=True)
            if f"{requests} succeeded" not in r.stdout:
                raise RuntimeError(f"h2load: not every request succeeded:\n{r.stdout}")
            dumps += 1
            return Path(f"{out}.{dumps}")

        for name in loads:
            argv = ["h2load", *LOADS[name], "-t1"]
            if name == "h1tls":
                argv += [f"--tls13-ciphers={args.tls13_ciphers}",
                         f"https://127.0.0.1:{ports['h1tls']}/"]
            else:
                argv.append(f"http://127.0.0.1:{ports['h1']}/")
            subprocess.run([*argv, "-n", "2000"], check=True, capture_output=True)
            dump = measure(name, argv, args.requests)
            if name == "h1tls":
                big = measure(name + "-3n", argv, 3 * args.requests)
                per = (_total(big) - _total(dump)) / (2 * args.requests)
                line = (f"{name}: {per:,.0f} Ir/request (handshakes subtracted; "
                        f"{_total(dump) / args.requests:,.0f} with them)")
                dump = big
            else:
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
