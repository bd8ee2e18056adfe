"""Soak: minutes of mixed traffic through `meshplane run --watch` with injected faults.

    python benches/soak/soak.py                      # ten minutes
    python benches/soak/soak.py --duration 120 --json soak.json

Not a test (it asserts nothing and is not run by CI); it reports what a long run under faults
does to the proxy. Needs the test extras (httpx) and the built core.

Set-up: three upstream processes (benches/soak/upstream.py), one `meshplane run --watch` in
gateway mode in front of them (retries, outlier detection with `maxServerErrors: 5`, a 2 s route
timeout), every port bound on 0 and read back. Then, at once:

- traffic: `--clients` clients, about `--rps` requests per second in all, GET and POST (bodies
  up to 64 KiB); 2% of them ask the upstream to reset the connection, 1% to stall past the
  route timeout (these are "faulted" requests and are counted apart);
- faults, one every `--fault-every` seconds, in turn: an upstream killed (SIGKILL) and restarted
  on its port 3 s later; a 5xx storm (one upstream answers 503 for 5 s); a config apply (the
  watched file rewritten with other endpoint weights); a burst of hostile clients (uploads
  aborted mid-body, malformed chunked bodies, garbage, 100 KiB headers, silent connections);
- watch: `/clusters` every second (an increase of `outlier_num_ejections` on a host that was
  neither killed nor storming within the last 3 s is an ejection of a healthy host, reported with
  the faults just before it; note that the faulted requests' resets and stalls are the upstream's
  doing, so they count against the host they reach, as in Envoy) and the proxy's RSS every 5 s;
  a proxy exit is a crash.

Reports: requests by outcome (clean and faulted), failed clean requests with their statuses,
ejections (of faulty and of healthy hosts), RSS over time, crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

HERE = Path(__file__).parent
LOCAL = "127.0.0.1"


class UpstreamProc:
    """One upstream process; `kill` and `start` again on the same port."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.faulty_until = 0.0  # monotonic: killed or storming until then (plus grace)

    @property
    def address(self) -> str:
        return f"{LOCAL}:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "upstream.py"), str(self.port)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.match(r"listening (\d+)", line)
        if not m:
            raise SystemExit(f"soak: upstream {self.index} did not start: {line!r}")
        self.port = int(m.group(1))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def config(upstreams: list[UpstreamProc], weights: list[int]) -> dict[str, Any]:
    endpoints = [{"address": LOCAL, "port": u.port, "weight": w} for u, w in zip(upstreams, weights, strict=True)]
    return {
        "mesh": "soak",
        "proxy": {"gateway": "edge", "admin": f"{LOCAL}:0", "bind": LOCAL, "ports": {8080: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge", "spec": {"httpRoute": {
                "match": {"prefix": "/"},
                "action": {"target": {"virtualService": {"virtualServiceName": "app.soak.local"}}}}}},
            {"kind": "VirtualService", "name": "app.soak.local",
             "spec": {"provider": {"virtualRouter": {"virtualRouterName": "app"}}}},
            {"kind": "VirtualRouter", "name": "app",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "Route", "name": "app", "virtualRouterName": "app", "spec": {"httpRoute": {
                "match": {"prefix": "/"},
                "action": {"weightedTargets": [{"virtualNode": "app", "weight": 1}]},
                "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 1500},
                                "httpRetryEvents": ["gateway-error", "server-error"],
                                "tcpRetryEvents": ["connection-error"]},
                "timeout": {"perRequest": {"unit": "s", "value": 2}}}}},
            {"kind": "VirtualNode", "name": "app", "spec": {
                "listeners": [{
                    "portMapping": {"port": 8080, "protocol": "http"},
                    "outlierDetection": {"maxServerErrors": 5, "interval": {"unit": "s", "value": 1},
                                         "baseEjectionDuration": {"unit": "s", "value": 5},
                                         "maxEjectionPercent": 50}}],
                "serviceDiscovery": {"static": {"endpoints": endpoints}}}},
        ],
    }


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.cfg_path = workdir / "soak.yaml"
        self.upstreams = [UpstreamProc(i) for i in range(3)]
        self.proxy: subprocess.Popen[str] | None = None
        self.listener = ""
        self.admin = ""
        self.outcomes: Counter[str] = Counter()
        self.clean_failures: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.hostile: Counter[str] = Counter()
        self.ejections_faulty = 0
        self.ejections_healthy: list[str] = []
        self.rss: list[tuple[float, int]] = []
        self.crashes = 0
        self.timeline: list[tuple[float, str]] = []  # (seconds, what): faults and ejections
        self.start = time.monotonic()

    # --- the proxy -------------------------------------------------------------------------

    def write_config(self, weights: list[int]) -> None:
        tmp = self.cfg_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config(self.upstreams, weights)))
        os.replace(tmp, self.cfg_path)

    def start_proxy(self) -> None:
        self.proxy = subprocess.Popen(
            [sys.executable, "-m", "meshplane.cli", "run", "--watch", str(self.cfg_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proxy.stdout is not None
        for _ in range(200):
            line = self.proxy.stdout.readline()
            if not line:
                raise SystemExit("soak: meshplane run exited at start")
            if m := re.match(r"listener \S+ (\S+)", line):
                self.listener = m.group(1)
            if m := re.match(r"admin http://(\S+)/", line):
                self.admin = m.group(1)
            if self.listener and self.admin:
                break
        else:
            raise SystemExit("soak: no listener/admin lines from meshplane run")
        # Keep draining its output so it never blocks on a full pipe.
        stdout = self.proxy.stdout
        import threading

        threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()

    # --- tasks -----------------------------------------------------------------------------

    def left(self) -> float:
        return self.args.duration - (time.monotonic() - self.start)

    async def client(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        pause = self.args.clients / self.args.rps
        while self.left() > 0:
            roll = rng.random()
            headers = {}
            kind = "clean"
            if roll < 0.02:
                headers["x-soak-fault"], kind = "reset", "faulted"
            elif roll < 0.03:
                headers["x-soak-fault"], kind = "stall", "faulted"
            try:
                if rng.random() < 0.3:
                    body = os.urandom(rng.randrange(1, 64 * 1024))
                    r = await http.post(f"http://{self.listener}/upload", content=body, headers=headers)
                else:
                    r = await http.get(f"http://{self.listener}/item/{rng.randrange(1000)}", headers=headers)
                outcome = str(r.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            self.outcomes[f"{kind} {outcome}"] += 1
            if kind == "clean" and outcome != "200":
                self.clean_failures[outcome] += 1
            await trio.sleep(pause * rng.uniform(0.5, 1.5))

    async def set_mode(self, up: UpstreamProc, mode: str) -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            try:
                await http.put(f"http://{up.address}/__mode", content=mode)
            except httpx.HTTPError:
                pass

    async def hostile_burst(self, rng: random.Random) -> None:
        host, port = self.listener.rsplit(":", 1)
        attacks = {
            "aborted upload": b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000,
            "malformed chunked": b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
            "garbage": os.urandom(512),
            "huge header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n",
            "silent": b"",
        }
        for _ in range(20):
            name = rng.choice(list(attacks))
            try:
                with trio.move_on_after(2):
                    stream = await trio.open_tcp_stream(host, int(port))
                    async with stream:
                        if attacks[name]:
                            await stream.send_all(attacks[name])
                        if name == "silent":
                            await trio.sleep(1)
                        else:
                            with trio.move_on_after(1):
                                await stream.receive_some(4096)
                self.hostile[name] += 1
            except (OSError, trio.BrokenResourceError):
                self.hostile[f"{name} (closed by the proxy)"] += 1

    async def faults_loop(self, rng: random.Random) -> None:
        order = ["kill", "storm", "apply", "hostile"]
        n = 0
        while self.left() > self.args.fault_every:
            await trio.sleep(self.args.fault_every)
            fault = order[n % len(order)]
            n += 1
            self.faults[fault] += 1
            up = rng.choice(self.upstreams)
            target = f" {up.address}" if fault in ("kill", "storm") else ""
            self.timeline.append((time.monotonic() - self.start, f"{fault}{target}"))
            if fault == "kill":
                up.faulty_until = time.monotonic() + 6
                up.kill()
                await trio.sleep(3)
                await trio.to_thread.run_sync(up.start)
            elif fault == "storm":
                up.faulty_until = time.monotonic() + 8
                await self.set_mode(up, "fail")
                await trio.sleep(5)
                await self.set_mode(up, "ok")
            elif fault == "apply":
                self.write_config([rng.randrange(1, 5) for _ in self.upstreams])
            else:
                await self.hostile_burst(rng)

    async def watch(self) -> None:
        seen: dict[str, int] = {}
        by_port = {u.port: u for u in self.upstreams}
        last_rss = 0.0
        async with httpx.AsyncClient(timeout=5) as http:
            while self.left() > 0:
                if self.proxy is not None and self.proxy.poll() is not None:
                    self.crashes += 1
                    return
                try:
                    text = (await http.get(f"http://{self.admin}/clusters")).text
                except httpx.HTTPError:
                    text = ""
                for m in re.finditer(r"^(\S+?)::(\S+):(\d+)::outlier_num_ejections::(\d+)$", text, re.M):
                    key, count = f"{m.group(1)}::{m.group(2)}:{m.group(3)}", int(m.group(4))
                    new = count - seen.get(key, 0)
                    seen[key] = count
                    if new > 0:
                        up = by_port.get(int(m.group(3)))
                        at = time.monotonic() - self.start
                        if up is not None and up.faulty_until + 3 >= time.monotonic():
                            self.ejections_faulty += new
                            self.timeline.append((at, f"ejected {key} (faulty)"))
                        else:
                            self.ejections_healthy.append(f"{key} at {at:.0f}s")
                            self.timeline.append((at, f"ejected {key} (neither killed nor storming)"))
                now = time.monotonic()
                if now - last_rss >= 5 and self.proxy is not None:
                    last_rss = now
                    self.rss.append((now - self.start, rss_kib(self.proxy.pid)))
                await trio.sleep(1)

    async def run(self) -> None:
        for up in self.upstreams:
            up.start()
        self.write_config([1, 1, 1])
        self.start_proxy()
        rng = random.Random(self.args.seed)
        limits = httpx.Limits(max_connections=self.args.clients)
        async with httpx.AsyncClient(timeout=10, limits=limits) as http, trio.open_nursery() as nursery:
            for i in range(self.args.clients):
                nursery.start_soon(self.client, http, random.Random(self.args.seed + i))
            nursery.start_soon(self.faults_loop, rng)
            nursery.start_soon(self.watch)

    def stop(self) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.send_signal(signal.SIGINT)
            try:
                self.proxy.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
        for up in self.upstreams:
            up.kill()

    def report(self) -> dict[str, Any]:
        clean = sum(v for k, v in self.outcomes.items() if k.startswith("clean "))
        rss = [kib for _, kib in self.rss]
        return {
            "duration_s": self.args.duration,
            "requests": dict(sorted(self.outcomes.items())),
            "clean_requests": clean,
            "clean_failed": sum(self.clean_failures.values()),
            "clean_failed_by_outcome": dict(self.clean_failures),
            "faults_injected": dict(self.faults),
            "hostile_connections": dict(self.hostile),
            "ejections_of_faulty_hosts": self.ejections_faulty,
            "ejections_of_healthy_hosts": self.ejections_healthy,
            "rss_kib": {"first": rss[0] if rss else None, "max": max(rss) if rss else None,
                        "last": rss[-1] if rss else None,
                        "median": statistics.median(rss) if rss else None},
            "rss_series": self.rss,
            "crashes": self.crashes,
            "timeline": [f"{t:6.1f}s {what}" for t, what in self.timeline],
        }


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rps", type=float, default=200.0, help="requests per second in all (about)")
    parser.add_argument("--fault-every", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", metavar="FILE", help="also write the report here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        soak = Soak(args, Path(tmp))
        try:
            trio.run(soak.run)
        finally:
            soak.stop()
    report = soak.report()
    summary = {k: v for k, v in report.items() if k not in ("rss_series", "timeline")}
    # The faults just before each ejection of a host that was neither killed nor storming.
    for i, line in enumerate(report["timeline"]):
        if "neither" in line:
            summary.setdefault("before_healthy_ejections", []).append(report["timeline"][max(0, i - 4): i + 1])
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
