"""Functions benchmark, all parts in one run (ratios, never absolute claims):

1. warm: GET /fn (a function doing a fixed computation) vs GET /plain (a plain HTTP upstream,
   plain_upstream.py, doing the same computation), both through the same gateway, alternated
   request by request on two keep-alive connections; p50 and p99 of each and their difference
   (target: the function within 1 ms of the plain upstream at p50);
2. cold start: the first invocation of each of N small functions through the core (the Invoke
   path), vs a warm invocation of the same function; and the instances' Init Duration (request
   for an instance to handler imported) (target: < 150 ms); then the same with the fork server
   off (every instance spawned), and a bare `python -S -c pass` for scale;
3. scaling: a function that takes 20 ms; 1 client for 2 s, 8 clients for 4 s, 1 client for 6 s
   (idleTimeout 2 s): the instance count and concurrent executions sampled every 250 ms.

    PYTHONPATH=python python3 benches/functions/bench_functions.py [--requests 2000] [--cold 10]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).resolve().parent

CODE = '''
import time

def work(event, context):
    total = 0
    for i in range(2000):
        total += i * i
    return {"statusCode": 200, "headers": {"content-type": "text/plain; charset=utf-8"},
            "body": str(total)}

def small(event, context):
    return {"ok": True}

def sleepy(event, context):
    time.sleep(0.02)
    return {"statusCode": 200, "body": "ok"}
'''


def config(root: Path, plain_port: int, cold: int) -> dict[str, Any]:
    def service(name: str, node: str) -> list[dict[str, Any]]:
        return [{"kind": "VirtualService", "name": f"{name}.local",
                 "spec": {"provider": {"virtualNode": {"virtualNodeName": node}}}}]

    def route(name: str, prefix: str) -> dict[str, Any]:
        return {"kind": "GatewayRoute", "name": name, "virtualGatewayName": "edge",
                "spec": {"httpRoute": {"match": {"prefix": prefix}, "action": {
                    "target": {"virtualService": {"virtualServiceName": f"{name}.local"}}}}}}

    def fn_node(name: str, function: str) -> dict[str, Any]:
        return {"kind": "VirtualNode", "name": name,
                "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                         "serviceDiscovery": {"function": {"functionName": function}}}}

    def function(name: str, handler: str, **spec: Any) -> dict[str, Any]:
        return {"kind": "Function", "name": name,
                "spec": {"handler": handler, "code": str(root / "code"), **spec}}

    return {
        "mesh": "bench", "proxy": {"gateway": "edge", "bind": "127.0.0.1", "ports": {8080: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            route("fn", "/fn"), route("plain", "/plain"), route("step", "/step"),
            *service("fn", "fn-node"), *service("plain", "plain-node"),
            *service("step", "step-node"),
            fn_node("fn-node", "work"), fn_node("step-node", "sleepy"),
            {"kind": "VirtualNode", "name": "plain-node",
             "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                      "serviceDiscovery": {"static": {"endpoints": [
                          f"127.0.0.1:{plain_port}"]}}}},
            function("work", "app.work"),
            function("sleepy", "app.sleepy", idleTimeout={"unit": "s", "value": 2}),
            *[function(f"cold{i}", "app.small") for i in range(cold)],
        ],
    }


class KeepAlive:
    """One keep-alive HTTP/1.1 connection, request by request (the client's cost is the same
    for both targets)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, path: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                      if k.lower() == "content-length")
        while len(self.buffer) < length:
            self.buffer += self.sock.recv(65536)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body


def warm(port: int, requests: int) -> dict[str, Any]:
    fn, plain = KeepAlive(port), KeepAlive(port)
    times: dict[str, list[float]] = {"fn": [], "plain": []}
    for i in range(requests + 200):
        for name, conn in (("fn", fn), ("plain", plain)) if i % 2 else (("plain", plain), ("fn", fn)):
            start = time.perf_counter()
            status, body = conn.get(f"/{name}")
            elapsed = (time.perf_counter() - start) * 1000
            assert status == 200, (name, status, body)
            if i >= 200:  # the first 200 warm both paths up
                times[name].append(elapsed)
    out: dict[str, Any] = {}
    for name, values in times.items():
        values.sort()
        out[name] = {"p50": statistics.median(values), "p99": values[int(len(values) * 0.99)]}
    out["p50_difference_ms"] = out["fn"]["p50"] - out["plain"]["p50"]
    out["p50_ratio"] = out["fn"]["p50"] / out["plain"]["p50"]
    return out


async def cold_starts(proxy: Any, count: int) -> dict[str, Any]:
    first, second = [], []
    for i in range(count):
        for into in (first, second):
            start = time.perf_counter()
            inv = await proxy.functions.invoke(f"cold{i}", None, b"{}")
            into.append((time.perf_counter() - start) * 1000)
            assert inv.status == 200 and inv.function_error is None, inv
    inits = [proxy.stats()["functions"][f"cold{i}"]["init_duration_ms"]["p50"] for i in range(count)]
    return {"first_invocation_ms_p50": statistics.median(first),
            "warm_invocation_ms_p50": statistics.median(second),
            "cold_start_ms_p50": statistics.median(a - b for a, b in zip(first, second, strict=True)),
            "init_duration_ms_p50": statistics.median(inits),
            "init_duration_ms_max": max(inits)}


async def scaling(proxy: Any, port: int) -> list[dict[str, Any]]:
    import httpx

    clients = 0
    timeline: list[dict[str, Any]] = []
    done: list[int] = [0]

    async def client(stop: trio.Event) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            while not stop.is_set():
                r = await c.get("/step")
                assert r.status_code == 200, r.text
                done[0] += 1

    async def sample(stop: trio.Event) -> None:
        start = time.monotonic()
        last = 0
        while not stop.is_set():
            stats = proxy.stats().get("functions", {}).get("sleepy", {})
            timeline.append({"t": round(time.monotonic() - start, 2), "clients": clients,
                             "instances": stats.get("instances", 0),
                             "busy": stats.get("concurrent_executions", 0),
                             "requests": done[0] - last})
            last = done[0]
            await trio.sleep(0.25)

    async with trio.open_nursery() as nursery:
        stop_all = trio.Event()
        nursery.start_soon(sample, stop_all)
        phases = [(1, 2.0), (8, 4.0), (1, 6.0)]
        running: list[trio.Event] = []
        for target, seconds in phases:
            while len(running) < target:
                ev = trio.Event()
                running.append(ev)
                nursery.start_soon(client, ev)
            while len(running) > target:
                running.pop().set()
            clients = target
            await trio.sleep(seconds)
        for ev in running:
            ev.set()
        stop_all.set()
    return timeline


async def main(args: argparse.Namespace) -> None:
    from meshplane import Proxy

    root = Path(tempfile.mkdtemp(prefix="mp-fn-bench-"))
    (root / "code").mkdir()
    (root / "code" / "app.py").write_text(CODE)
    plain = subprocess.Popen([sys.executable, str(HERE / "plain_upstream.py")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert plain.stdout is not None
        plain_port = int(plain.stdout.readline())
        doc = config(root, plain_port, args.cold)
        async with Proxy(doc, admin="", store=f"sqlite://{root / 'store.db'}",
                         drain_ms=200) as proxy:
            port = proxy.port(8080)
            result: dict[str, Any] = {"cpus": os.cpu_count()}
            result["warm"] = await trio.to_thread.run_sync(warm, port, args.requests)
            result["cold"] = await cold_starts(proxy, args.cold)
            result["scaling"] = await scaling(proxy, port)
        # The same cold starts with every instance spawned (no fork server), and what a bare
        # `python -S -c pass` costs on this machine now, for scale.
        os.environ["MESHPLANE_FUNCTIONS_FORKSERVER"] = "0"
        async with Proxy(doc, admin="", store=f"sqlite://{root / 'store.db'}",
                         drain_ms=200) as proxy:
            result["cold_spawned"] = await cold_starts(proxy, args.cold)
        bare = []
        for _ in range(args.cold):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-S", "-c", "pass"], check=True)
            bare.append((time.perf_counter() - start) * 1000)
        result["bare_interpreter_ms_p50"] = statistics.median(bare)
        print(json.dumps(result, indent=1))
    finally:
        plain.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--cold", type=int, default=10)
    trio.run(main, parser.parse_args())
