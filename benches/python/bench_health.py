"""What active health checking costs: 5,000 endpoints probed every second by the Trio driver.

    python benches/python/bench_health.py                 # HTTP/1.1, 5000 endpoints, 20 s
    python benches/python/bench_health.py --protocol tcp --seconds 10

A child process serves every endpoint (one plain `selectors` loop listening on N loopback
ports, answering each `GET /health` with a canned 200 on a kept-alive connection), so the
prober's process does nothing but probe. The prober is `meshplane.drivers.ActiveHealthChecks`
exactly as a proxy runs it (interval 1 s, App Mesh thresholds, Envoy-style jitter, connections
reused), with a stand-in for the core that only counts verdicts. After a warm-up of one
interval plus the initial jitter, it reports the prober process's CPU time (user + system,
`resource.getrusage`) per wall-clock second, and the probes per second it completed. The
target is under 0.5 (half of one core). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def serve(count: int) -> None:
    """The endpoints: `count` listening ports on 127.0.0.1, printed as JSON, served forever."""
    sel = selectors.DefaultSelector()
    ports = []
    for _ in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, None)
        ports.append(s.getsockname()[1])
    print(json.dumps(ports), flush=True)
    buffers: dict[int, bytes] = {}
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data is None:  # a listener
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, True)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                buffers.pop(id(sock), None)
                continue
            pending = buffers.get(id(sock), b"") + data
            answers = pending.count(b"\r\n\r\n")
            buffers[id(sock)] = pending[pending.rfind(b"\r\n\r\n") + 4 :] if answers else pending
            if answers:
                try:
                    sock.sendall(RESPONSE * answers)
                except OSError:
                    sel.unregister(sock)
                    sock.close()


class CountingCore:
    """Stands in for `meshplane._core.Core`: counts the verdicts it is told."""

    def __init__(self) -> None:
        self.verdicts = 0

    def set_host_health(self, cluster: str, address: str, healthy: bool) -> None:
        self.verdicts += 1


async def probe(ports: list[int], protocol: str, interval_ms: int, seconds: float) -> dict[str, float]:
    import trio
    from meshplane.config.resilience import ResilienceTarget
    from meshplane.drivers.health import ActiveHealthChecks

    core = CountingCore()
    checks = ActiveHealthChecks(core)
    health = {"protocol": protocol, "intervalMillis": interval_ms, "timeoutMillis": 2000,
              "healthyThreshold": 2, "unhealthyThreshold": 2, "path": "/health"}
    target = ResilienceTarget(
        cluster="bench", node="bench", port=8080, protocol="http",
        endpoints=tuple(f"127.0.0.1:{p}" for p in ports), host="bench.local",
        health_check=health,
    )
    async with trio.open_nursery() as nursery:
        checks.retarget([target])
        await nursery.start(checks.run)
        # Warm-up: the initial jitter spreads first probes over one interval; one more
        # interval lets every connection open and settle.
        await trio.sleep(2 * interval_ms / 1000)
        attempts0 = checks.stats()["bench"]["attempt"]
        usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await trio.sleep(seconds)
        usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        stats = checks.stats()["bench"]
        nursery.cancel_scope.cancel()
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    wall = wall1 - wall0
    return {
        "endpoints": len(ports),
        "interval_s": interval_ms / 1000,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cores_used": round(cpu / wall, 3),
        "probes_per_s": round((stats["attempt"] - attempts0) / wall, 1),
        "failures": stats["failure"],
        "healthy": stats["healthy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=5000)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--protocol", choices=("http", "tcp"), default="http")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    import trio

    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", str(args.endpoints)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        result = trio.run(probe, ports, args.protocol, args.interval_ms, args.seconds)
    finally:
        server.terminate()
        server.wait(10)
    result["protocol"] = args.protocol
    print(json.dumps(result))
    verdict = "under" if result["cores_used"] < 0.5 else "OVER"
    print(f"{result['endpoints']} endpoints every {result['interval_s']} s ({args.protocol}): "
          f"{result['probes_per_s']} probes/s, {result['cores_used']:.3f} of one core "
          f"({verdict} the 0.5 target)")


if __name__ == "__main__":
    main()
