"""Resilience figures: ejection and recovery times, failed-request shares, and what health
checking plus outlier detection cost in proxied throughput.

    python benches/macro/bench_resilience.py                 # everything (~2 minutes)
    python benches/macro/bench_resilience.py --skip-throughput
    python benches/macro/bench_resilience.py --json out.json

1. **Ejection / recovery** (in process, `meshplane.Proxy` in gateway mode, three Trio
   upstreams, eight clients looping): the time from one upstream starting to answer 503 to
   its ejection (consecutive 5xx, `maxServerErrors: 5`), and from its recovery (right after
   the ejection) to the first client request it serves again, with outlier detection alone
   (`baseEjectionDuration` 5 s, sweep `interval` 1 s) and with active health checks as well
   (every 250 ms by the `resilience.healthCheck` extension; a passing check unejects).
2. **Failed requests during a single-upstream failure**: one of three upstreams answers 503
   for 3 s under the same load; the share of client requests that failed, with and without
   retries (App Mesh's implicit default policy vs `maxRetries: 0`), with and without outlier
   detection.
3. **Throughput cost** (subprocesses: nginx as three upstreams, `meshplane run`, wrk): the
   same 3-endpoint cluster with health checks (every 100 ms, 10× App Mesh's fastest) and
   outlier detection on vs off, alternating off/on pairs in one run; the figure is the median
   of the pairs' on/off ratios.

Not a test: it asserts nothing and prints a table (and JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))

LOCAL = "127.0.0.1"


# --- a switchable upstream -------------------------------------------------------------------


class Upstream:
    """HTTP/1.1 on Trio: answers 200 (mode "ok") or 503 (mode "fail") to every request,
    `/health` included; counts the 200s and 503s it sent."""

    def __init__(self, name: str) -> None:
        self.name, self.mode, self.port = name, "ok", 0
        self.ok = self.failed = 0

    @property
    def address(self) -> str:
        return f"{LOCAL}:{self.port}"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                health = head.split(b" ", 2)[1] == b"/health"
                if self.mode == "ok":
                    self.ok += not health
                    reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                else:
                    self.failed += not health
                    reply = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nfail"
                await stream.send_all(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


def mesh(endpoints: list[str], *, outlier: dict[str, Any] | None = None,
         health: bool = False, retries: bool = True, hc_interval_ms: int = 250) -> dict[str, Any]:
    listener: dict[str, Any] = {"portMapping": {"port": 8080, "protocol": "http"}}
    if outlier:
        listener["outlierDetection"] = outlier
    if health:
        listener["healthCheck"] = {"protocol": "http", "path": "/health", "intervalMillis": 5000,
                                   "timeoutMillis": 2000, "healthyThreshold": 2,
                                   "unhealthyThreshold": 2}
        listener["resilience"] = {"healthCheck": {"intervalMillis": hc_interval_ms,
                                                  "timeoutMillis": 1000}}
    route: dict[str, Any] = {"match": {"prefix": "/"},
                             "action": {"weightedTargets": [{"virtualNode": "app", "weight": 1}]}}
    if not retries:
        route["retryPolicy"] = {"maxRetries": 0, "perRetryTimeout": {"unit": "s", "value": 1},
                                "httpRetryEvents": ["server-error"]}
    return {
        "mesh": "bench",
        "proxy": {"gateway": "edge", "bind": LOCAL, "ports": {8080: 0}, "admin": f"{LOCAL}:0"},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge",
             "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"target": {
                 "virtualService": {"virtualServiceName": "svc.local"}}}}}},
            {"kind": "VirtualService", "name": "svc.local",
             "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}},
            {"kind": "VirtualRouter", "name": "r",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "Route", "name": "default", "virtualRouterName": "r",
             "spec": {"httpRoute": route}},
            {"kind": "VirtualNode", "name": "app",
             "spec": {"listeners": [listener],
                      "serviceDiscovery": {"static": {"endpoints": endpoints}}}},
        ],
    }


def outlier_detection(base_s: int = 5, interval_s: int = 1) -> dict[str, Any]:
    return {"maxServerErrors": 5, "interval": {"unit": "s", "value": interval_s},
            "baseEjectionDuration": {"unit": "s", "value": base_s}, "maxEjectionPercent": 50}


class Load:
    """`clients` tasks looping GET through the proxy; counts 2xx and failures."""

    def __init__(self, port: int, clients: int = 8) -> None:
        self.port, self.clients = port, clients
        self.ok = self.failed = 0
        self.running = True

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(trust_env=False, timeout=10, limits=limits) as client:
            async with trio.open_nursery() as nursery:
                for _ in range(self.clients):
                    nursery.start_soon(self._loop, client)
                task_status.started()

    async def _loop(self, client: Any) -> None:
        url = f"http://{LOCAL}:{self.port}/work"
        while self.running:
            try:
                r = await client.get(url)
                ok = r.status_code == 200
            except Exception:
                ok = False
            self.ok += ok
            self.failed += not ok


async def _until(predicate: Any, timeout: float = 60.0) -> float:
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.001)
    return trio.current_time() - start


async def eject_and_return(health: bool) -> dict[str, float]:
    from meshplane import Proxy

    async with trio.open_nursery() as nursery:
        ups = [Upstream(f"u{i}") for i in range(3)]
        for up in ups:
            await nursery.start(up.run)
        cfg = mesh([u.address for u in ups], outlier=outlier_detection(), health=health)
        async with Proxy(cfg) as proxy:
            def host() -> dict[str, Any]:
                return proxy.stats()["clusters"]["app"]["hosts"][ups[0].address]  # type: ignore[no-any-return]

            load = Load(proxy.port(8080))
            await nursery.start(load.run)
            await _until(lambda: ups[0].ok > 50)
            ups[0].mode = "fail"
            # Out of the healthy set by whichever comes first: the consecutive-5xx ejection
            # or (with health checks) a failed probe.
            to_eject = await _until(lambda: not host()["healthy"])
            how = "ejected" if host()["ejected"] else "failed_active_hc"
            failed_before = ups[0].failed
            # Requests already dispatched to it finish first: they are not "traffic back".
            await _until(lambda: host()["rq_active"] == 0)
            ups[0].mode = "ok"
            served = ups[0].ok
            to_return = await _until(lambda: ups[0].ok > served)
            load.running = False
        nursery.cancel_scope.cancel()
    return {"to_ejection_ms": round(to_eject * 1000, 1), "failures_seen_by_upstream": failed_before,
            "to_traffic_back_ms": round(to_return * 1000, 1), "removed_by": how}


async def failure_share(retries: bool, outlier: bool, seconds: float = 3.0) -> dict[str, Any]:
    from meshplane import Proxy

    async with trio.open_nursery() as nursery:
        ups = [Upstream(f"u{i}") for i in range(3)]
        for up in ups:
            await nursery.start(up.run)
        ups[0].mode = "fail"
        od = outlier_detection(base_s=30, interval_s=10) if outlier else None
        async with Proxy(mesh([u.address for u in ups], outlier=od, retries=retries)) as proxy:
            load = Load(proxy.port(8080))
            await nursery.start(load.run)
            await trio.sleep(seconds)
            load.running = False
            total = load.ok + load.failed
        nursery.cancel_scope.cancel()
    return {"retries": retries, "outlier_detection": outlier, "requests": total,
            "failed": load.failed, "failed_share_pct": round(100 * load.failed / max(1, total), 3)}


# --- throughput with resilience on vs off ------------------------------------------------------


def throughput(seconds: int, rounds: int) -> dict[str, Any]:
    import subprocess

    import yaml
    from bench_configs import BODY, nginx_common, nginx_http_common
    from bench_load import parse_wrk, wrk_argv
    from bench_procs import Processes, await_ready, free_port, http_get_ok, meshplane_cli

    wrk, nginx = shutil.which("wrk"), shutil.which("nginx") or "/usr/sbin/nginx"
    if wrk is None or not Path(nginx).exists():
        return {"skipped": "needs wrk and nginx"}
    work = Path(tempfile.mkdtemp(prefix="mp-resilience-"))
    procs = Processes(work)
    try:
        ports = [free_port() for _ in range(3)]
        body = BODY.replace("\n", "\\n")
        servers = "\n".join(
            f"    server {{ listen {LOCAL}:{p}; location / {{ return 200 \"{body}\"; }} }}"
            for p in ports
        )
        (work / "nginx.conf").write_text(
            nginx_common(work) + f"http {{\n{nginx_http_common(work)}\n{servers}\n}}\n")
        procs.start("nginx", [nginx, "-p", str(work), "-c", str(work / "nginx.conf")], cpus={1})
        rps: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(rounds):
            for label in ("off", "on"):
                port, admin = free_port(), free_port()
                on = label == "on"
                cfg = mesh([f"{LOCAL}:{p}" for p in ports], outlier=outlier_detection(30, 10) if on
                           else None, health=on, hc_interval_ms=100)
                cfg["proxy"].update(ports={8080: port}, admin=f"{LOCAL}:{admin}")
                path = work / f"{label}{i}.yaml"
                path.write_text(yaml.safe_dump(cfg))
                proc = procs.start(f"meshplane-{label}{i}", [*meshplane_cli(), "run", str(path)],
                                   cpus={0})

                if not await_ready(lambda port=port: http_get_ok(port), proc):  # type: ignore[misc]
                    return {"error": "meshplane did not start: "
                                     + procs.stderr_tail(f"meshplane-{label}{i}")}
                time.sleep(1.0)  # let the first health checks and connections settle
                argv = wrk_argv(wrk, threads=1, connections=32, duration=seconds, port=port)
                if shutil.which("taskset"):  # wrk beside nginx on core 1; meshplane on core 0
                    argv = ["taskset", "-c", "1", *argv]
                out = subprocess.run(argv, capture_output=True, text=True).stdout
                result = parse_wrk(out)
                rps[label].append(float(result["rps"] or 0.0))
                procs.stop(proc)
                procs.forget(proc)
        # Each round is an off/on pair run back to back; the median of the pairs' ratios is
        # the figure (other load on a shared machine moves both runs of a pair alike).
        ratio = statistics.median(b / a for a, b in zip(rps["off"], rps["on"], strict=True) if a)
        return {"rps_off": rps["off"], "rps_on": rps["on"], "ratio_on_off": round(ratio, 4),
                "cost_pct": round(100 * (1 - ratio), 2), "wrk": "-t1 -c32", "seconds": seconds}
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


async def in_process(repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for health in (False, True):
        runs = [await eject_and_return(health) for _ in range(repeat)]
        out["outlier+health_check" if health else "outlier_only"] = {
            key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "removed_by"
        } | {"runs": runs}
    out["failure_share"] = [
        await failure_share(retries, outlier)
        for retries in (False, True) for outlier in (False, True)
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="off/on pairs")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = trio.run(in_process, args.repeat)
    if not args.skip_throughput:
        report["throughput"] = throughput(args.seconds, args.rounds)
    for mode in ("outlier_only", "outlier+health_check"):
        r = report[mode]
        print(f"{mode:22} failing -> ejected {r['to_ejection_ms']:8.1f} ms   "
              f"recovered -> traffic back {r['to_traffic_back_ms']:8.1f} ms")
    for r in report["failure_share"]:
        print(f"retries={r['retries']!s:5} outlier={r['outlier_detection']!s:5} "
              f"failed {r['failed']:5} of {r['requests']:6} = {r['failed_share_pct']:.3f}%")
    if "throughput" in report:
        print("throughput:", json.dumps(report["throughput"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
