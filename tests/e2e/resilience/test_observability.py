"""Unhealthy and ejected hosts as an operator sees them: Envoy's health-check, outlier and
membership families in `/stats`, and `meshplane top --once` naming each bad host and why.

A real proxy with active health checks and outlier detection in front of real upstreams: one
fails its health checks, one answers 503 until it is ejected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import meshplane
import trio
from meshplane import Proxy
from meshplane.admin.prometheus import parse

from ..waiting import eventually
from .support import Upstream, drive_until, health_check, mesh, outlier

NO_RETRY = {"maxRetries": 0, "perRetryTimeout": {"unit": "ms", "value": 1000},
            "httpRetryEvents": ["server-error"]}
CLUSTER = (("envoy_cluster_name", "app"),)


def host(proxy: Proxy, up: Upstream) -> dict[str, object]:
    return proxy.stats()["clusters"]["app"]["hosts"][up.address]  # type: ignore[no-any-return]


async def test_envoy_families_and_top_show_unhealthy_and_ejected_hosts(upstream, client) -> None:
    sick, bad, good = (await upstream("sick", health="fail"), await upstream("bad", mode="fail"),
                       await upstream("good"))
    hc, ext = health_check(100)
    # The ejected host passes its health checks; Envoy's default would uneject it on the next
    # pass, so that is turned off to keep it ejected while the test looks.
    listener = {"healthCheck": hc,
                "resilience": {"healthCheck": ext,
                               "outlierDetection": {"successfulActiveHealthCheckUnejectHost": False}},
                "outlierDetection": outlier(3, interval_ms=300_000, ejection_ms=300_000, percent=50)}
    cfg = mesh([u.address for u in (sick, bad, good)], retry=NO_RETRY, listener=listener)
    async with Proxy(cfg, admin="127.0.0.1:0") as proxy:
        await eventually(lambda: not host(proxy, sick)["healthy"], what="sick marked unhealthy")
        url = f"http://127.0.0.1:{proxy.port(8080)}/work"
        await drive_until(client, url, lambda: bool(host(proxy, bad)["ejected"]), what="bad ejected")

        assert proxy.admin_address is not None
        address = "{}:{}".format(*proxy.admin_address)
        text = (await client.get(f"http://{address}/stats/prometheus")).text
        samples = parse(text)
        assert samples[("envoy_cluster_membership_total", CLUSTER)] == 3
        assert samples[("envoy_cluster_membership_healthy", CLUSTER)] == 1
        assert samples[("envoy_cluster_outlier_detection_ejections_active", CLUSTER)] == 1
        assert samples[("envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx", CLUSTER)] == 1
        assert samples[("envoy_cluster_health_check_failure", CLUSTER)] >= 1
        assert samples[("envoy_cluster_health_check_attempt", CLUSTER)] >= 1
        five = tuple(sorted(CLUSTER + (("envoy_response_code_class", "5"),)))
        assert samples[("envoy_cluster_upstream_rq_xx", five)] == proxy.stats()["clusters"]["app"]["rq_5xx"] >= 3

        env = {**os.environ, "PYTHONPATH": str(Path(meshplane.__file__).resolve().parent.parent),
               "COLUMNS": "220"}
        top = await trio.run_process([sys.executable, "-m", "meshplane.cli", "top", "--once", address],
                                     capture_stdout=True, capture_stderr=True, env=env, check=False)
        out = top.stdout.decode()
        assert top.returncode == 0, top.stderr
        sick_line = next(line for line in out.splitlines() if sick.address in line)
        bad_line = next(line for line in out.splitlines() if bad.address in line)
        assert "failed health check (active_failure)" in sick_line
        assert "ejected (consecutive_5xx)" in bad_line
        assert "1 ejected, 1 failed hc" in out and "1/3" in out
