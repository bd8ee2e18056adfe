"""A real Prometheus scrapes a real proxy's admin API; PromQL answers match the proxy's /stats.

Prometheus and promtool come from Debian's `prometheus` package (./dev installs it); without
them these tests skip, saying so. Prometheus listens on a loopback port found free by binding 0,
keeps its TSDB in tmp_path and is stopped at the end of the test; its readiness is awaited on
/-/ready and its first scrapes with a bounded poll.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane import Proxy

from .asgi import serve_asgi
from .test_admin import GATEWAY_PORT, admin_url, mesh, upstream_app
from .waiting import eventually

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
REQUESTS = 7
# promtool's lint findings that Envoy's own spelling triggers (Envoy adds no `_total` to its
# counters and has a `membership_total` gauge); meshplane's names must trigger none.
ENVOY_SPELLING = ('counter metrics should have "_total" suffix', 'non-counter metrics should not have "_total" suffix')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def upstream_port(nursery: trio.Nursery) -> int:
    return await serve_asgi(nursery, upstream_app)


@pytest.fixture
async def proxy(upstream_port: int) -> AsyncIterator[Proxy]:
    async with Proxy(mesh(upstream_port), admin="127.0.0.1:0", drain_ms=500) as running:
        port = running.port(GATEWAY_PORT)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(REQUESTS):
                assert (await client.get("/items")).status_code == 200
        yield running


@pytest.fixture
def prometheus(tmp_path: Path, proxy: Proxy) -> Iterator[str]:
    """A Prometheus scraping the proxy's /stats/prometheus every second; yields its base URL."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    assert proxy.admin_address is not None
    host, admin_port = proxy.admin_address
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: meshplane\n"
        "    metrics_path: /stats/prometheus\n"
        f"    static_configs: [{{targets: ['{host}:{admin_port}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def query(client: httpx.AsyncClient, base: str, promql: str) -> list[dict[str, Any]]:
    response = await client.get(f"{base}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def scalar(client: httpx.AsyncClient, base: str, promql: str) -> float | None:
    result = await query(client, base, promql)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def median_bucket(hist: dict[str, Any]) -> tuple[float, float]:
    """The bounds (ms) of the bucket holding the median of a raw histogram of REQUESTS."""
    cumulative, at = 0, len(hist["bounds"])
    for i, count in enumerate(hist["counts"]):
        cumulative += count
        if cumulative >= REQUESTS / 2:
            at = i
            break
    return (0.0 if at == 0 else hist["bounds"][at - 1]), hist["bounds"][at]


async def test_promtool_accepts_the_exposition_and_lints_only_envoys_spelling(proxy: Proxy) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    async with httpx.AsyncClient() as client:
        text = (await client.get(admin_url(proxy, "/stats/prometheus"))).text
    assert "envoy_cluster_upstream_rq_total" in text and "meshplane_cluster_upstream_rq_total" in text
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    findings = [line for line in (result.stdout + result.stderr).decode().splitlines() if line.strip()]
    # A parse error is reported as "error while linting: ..."; lint findings as "<name> <problem>".
    assert not any("error" in line and not line.startswith("envoy_") for line in findings), findings
    for line in findings:
        name, _, problem = line.partition(" ")
        assert name.startswith("envoy_"), f"meshplane's own name fails promtool's lint: {line}"
        assert problem in ENVOY_SPELLING, line


async def test_prometheus_scrapes_envoy_and_meshplane_names_with_the_proxys_values(
    proxy: Proxy, prometheus: str,
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:

        async def ready() -> bool:
            try:
                return (await client.get(f"{prometheus}/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, timeout=60, what="Prometheus to be ready", poll=0.1)
        raw = (await client.get(admin_url(proxy, "/stats?format=json"))).json()
        cluster = raw["clusters"]["api-v1"]
        listener = raw["listeners"][f"gateway/edge/{GATEWAY_PORT}"]
        assert cluster["rq_total"] == REQUESTS and listener["rq_2xx"] == REQUESTS

        upstream_rq = 'envoy_cluster_upstream_rq_total{envoy_cluster_name="api-v1"}'
        gateway_hcm = ('envoy_http_conn_manager_prefix="ingress",appmesh_virtual_gateway="edge",'
                       f'appmesh_mesh="shop",appmesh_listener_port="{GATEWAY_PORT}"')
        downstream_time = f"envoy_http_downstream_rq_time_count{{{gateway_hcm}}}"

        async def scraped() -> bool:
            # A request's downstream time is recorded when its response stream has ended.
            return (await scalar(client, prometheus, upstream_rq) == REQUESTS
                    and await scalar(client, prometheus, downstream_time) == REQUESTS)

        await eventually(scraped, timeout=60, what="a scrape with the proxy's counters", poll=0.2)

        assert await scalar(client, prometheus, 'up{job="meshplane"}') == 1
        assert await scalar(client, prometheus,
                            'envoy_cluster_upstream_rq{envoy_cluster_name="api-v1",envoy_response_code="200"}'
                            ) == cluster["rq_codes"]["200"] == REQUESTS
        assert await scalar(client, prometheus,
                            'envoy_cluster_upstream_rq_xx{envoy_cluster_name="api-v1",envoy_response_code_class="2"}'
                            ) == cluster["rq_2xx"]
        assert await scalar(client, prometheus,
                            'sum(envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="ingress",'
                            'envoy_response_code_class="2"})') == listener["rq_2xx"]
        assert await scalar(client, prometheus,
                            'envoy_http_downstream_rq_total{appmesh_virtual_gateway="edge",appmesh_mesh="shop",'
                            f'appmesh_listener_port="{GATEWAY_PORT}"}}') == listener["rq_total"]
        assert await scalar(client, prometheus, 'envoy_cluster_membership_healthy{envoy_cluster_name="api-v1"}') == 1
        assert await scalar(client, prometheus,
                            'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="api-v1"}') == REQUESTS
        assert await scalar(client, prometheus,
                            'meshplane_cluster_upstream_rq_xx_total{cluster="api-v1",response_code_class="2"}'
                            ) == cluster["rq_2xx"]

        # The histogram is whole: the median from Envoy's buckets (milliseconds) lies inside the
        # bucket the proxy's own counts put it in, and meshplane's (seconds) says the same.
        hist = cluster["rq_time_ms"]
        low, high = median_bucket(hist)
        p50_ms = await scalar(client, prometheus,
                              'histogram_quantile(0.5, envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="api-v1"})')
        p50_s = await scalar(client, prometheus,
                             'histogram_quantile(0.5, meshplane_cluster_upstream_rq_time_seconds_bucket{cluster="api-v1"})')
        assert p50_ms is not None and low <= p50_ms <= high
        assert p50_s is not None and abs(p50_s * 1000 - p50_ms) < 1e-6 * max(1.0, p50_ms)

        # The connection manager's downstream request time (Envoy's http.<prefix>.
        # downstream_rq_time): every request counted, its sum and median the proxy's own.
        raw = (await client.get(admin_url(proxy, "/stats?format=json"))).json()
        down = raw["listeners"][f"gateway/edge/{GATEWAY_PORT}"]["rq_time_ms"]
        assert down["count"] == REQUESTS and down["sum"] > 0
        assert await scalar(client, prometheus, f"envoy_http_downstream_rq_time_sum{{{gateway_hcm}}}") == (
            pytest.approx(down["sum"]))
        assert await scalar(client, prometheus, f'envoy_http_downstream_rq_time_bucket{{{gateway_hcm},le="+Inf"}}'
                            ) == REQUESTS
        low, high = median_bucket(down)
        down_p50 = await scalar(client, prometheus,
                                f"histogram_quantile(0.5, envoy_http_downstream_rq_time_bucket{{{gateway_hcm}}})")
        assert down_p50 is not None and low <= down_p50 <= high
        assert await scalar(client, prometheus,
                            f'meshplane_listener_downstream_rq_time_seconds_count{{listener="gateway/edge/{GATEWAY_PORT}"}}'
                            ) == REQUESTS
