"""pytest-benchmark: config compile and core apply with 10,000 endpoints, and the Python-side
cost of the pure pieces (route match and balancer pick through the bindings).

    python3 -m pytest benches/python -q --benchmark-columns=min,median,mean,ops

Not part of the test suite (pyproject's testpaths is tests/); timings are reported, never
asserted. The criterion benches in benches/rust measure the same pieces without Python.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from meshplane.config import compile_snapshot, from_dict

core = pytest.importorskip("meshplane._core", reason="the compiled core is not built")


def mesh_with_endpoints(n: int) -> dict[str, Any]:
    endpoints = [f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:8080" for i in range(1, n + 1)]
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
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                      "serviceDiscovery": {"static": {"endpoints": endpoints}}}},
        ],
    }


@pytest.fixture(scope="module")
def big_config() -> Any:
    return from_dict(mesh_with_endpoints(10_000), source="<bench>")


def test_compile_10k_endpoints(benchmark: Any, big_config: Any) -> None:
    snap = benchmark(lambda: compile_snapshot(big_config, version="bench"))
    assert len(json.loads(snap)["clusters"][0]["endpoints"]) == 10_000


def test_apply_10k_endpoints(benchmark: Any, big_config: Any) -> None:
    c = core.Core()
    snap = compile_snapshot(big_config, version="bench")
    try:
        benchmark(lambda: c.apply(snap))
        assert len(c.stats()["clusters"]["big"]["hosts"]) == 10_000
    finally:
        c.shutdown(0)


def route_table(n: int) -> str:
    routes = [
        {"name": f"r{i}", "match": {"path": {"kind": "prefix", "value": f"/svc{i}/"}},
         "action": {"clusters": [{"cluster": "c", "weight": 1}]}}
        for i in range(n)
    ]
    return json.dumps({"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": routes}]})


@pytest.mark.parametrize("n", [1, 100, 10_000])
def test_route_match_via_binding(benchmark: Any, n: int) -> None:
    table = core.RouteTable(route_table(n))
    got = benchmark(lambda: table.match("GET", f"/svc{n - 1}/items?x=1"))
    assert got == f"r{n - 1}"


@pytest.mark.parametrize("n", [10, 10_000])
def test_wlr_pick_via_binding(benchmark: Any, n: int) -> None:
    b = core.Balancer([1] * n, seed=1)
    assert benchmark(b.pick) is not None
