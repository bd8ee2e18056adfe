"""Metric scrape time with 1,000 hosts: GET /stats/prometheus on a real proxy's admin port.

    python3 benches/python/bench_scrape.py [--hosts 1000] [--scrapes 50]

A proxy runs one gateway in front of a cluster of N static hosts (10.x addresses nothing needs
to answer: scraping reads counters, it sends no traffic). The bench times whole scrapes over
HTTP/1.1 (connect, request, the full body read), as Prometheus does, and, in the same run, the
JSON form (`/stats?format=json`) and the rendering alone, so the figures read as ratios. It
prints medians and p90s, the body size and the number of samples. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import httpx
import trio
from meshplane import Proxy
from meshplane.admin.envoy_names import EnvoyContext, render_envoy
from meshplane.admin.prometheus import render


def config(hosts: int) -> dict[str, Any]:
    endpoints = [f"10.{i // 250 // 250 % 250}.{i // 250 % 250}.{i % 250 + 1}:8080" for i in range(hosts)]
    return {
        "mesh": "bench",
        "proxy": {"gateway": "edge", "admin": "127.0.0.1:0", "bind": "127.0.0.1", "ports": {8080: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge", "spec": {
                "httpRoute": {"match": {"prefix": "/"},
                              "action": {"target": {"virtualService": {"virtualServiceName": "api.bench.local"}}}}}},
            {"kind": "VirtualService", "name": "api.bench.local", "spec": {
                "provider": {"virtualNode": {"virtualNodeName": "api"}}}},
            {"kind": "VirtualNode", "name": "api", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"static": {"endpoints": endpoints}}}},
        ],
    }


def summary(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{name:<44} median {statistics.median(ordered) * 1000:8.2f} ms   p90 {p90 * 1000:8.2f} ms"


async def main(hosts: int, scrapes: int) -> None:
    async with Proxy(config(hosts), admin="127.0.0.1:0") as proxy:
        assert proxy.admin_address is not None
        host, port = proxy.admin_address
        base = f"http://{host}:{port}"
        results: dict[str, list[float]] = {"prom": [], "json": [], "render": []}
        body = ""
        for _ in range(scrapes):
            for kind, path in (("prom", "/stats/prometheus"), ("json", "/stats?format=json")):
                async with httpx.AsyncClient() as client:  # a new connection per scrape, as Prometheus
                    start = time.perf_counter()
                    response = await client.get(base + path)
                    results[kind].append(time.perf_counter() - start)
                    if kind == "prom":
                        body = response.text
            stats = proxy.stats()
            ctx = EnvoyContext("bench", proxy.listener_addresses())
            start = time.perf_counter()
            render(stats)
            render_envoy(stats, ctx)
            results["render"].append(time.perf_counter() - start)
        series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        hosts_seen = len(proxy.stats()["clusters"]["api"]["hosts"])
        print(f"{hosts_seen} hosts, {scrapes} scrapes each; /stats/prometheus: {len(body) / 1024:.0f} KiB, "
              f"{series} samples")
        print(summary("GET /stats/prometheus (whole scrape)", results["prom"]))
        print(summary("GET /stats?format=json (same stats, JSON)", results["json"]))
        print(summary("render only (meshplane + Envoy names)", results["render"]))
        ratio = statistics.median(results["prom"]) / statistics.median(results["json"])
        print(f"scrape / JSON ratio: {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args()
    trio.run(main, args.hosts, args.scrapes)
