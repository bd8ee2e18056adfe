"""`admin.async_metrics`: the async invocation metrics in Prometheus text, lint-clean."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from meshplane.admin.async_metrics import async_metrics

STATS = {"async_invocations": {
    "functions": {"orders": {"AsyncEventsReceived": 3, "AsyncRetries": 2, "AsyncEventsFailed": 1,
                             "DestinationDeliveries": 1},
                  'we"ird': {"AsyncEventsReceived": 1, "DestinationDeliveryFailures": 1}},
    "queue": {"path": "/q.db", "depth": 2, "running": 1, "oldest_age_ms": 1500.0},
}}


def test_lines_per_function_and_for_the_queue() -> None:
    text = async_metrics(STATS)
    assert 'meshplane_function_async_events_total{function="orders",event="received"} 3' in text
    assert 'meshplane_function_async_events_total{function="orders",event="retried"} 2' in text
    assert 'meshplane_function_async_events_total{function="orders",event="dropped"} 0' in text
    assert 'meshplane_function_destination_deliveries_total{function="we\\"ird",result="failed"} 1' in text
    assert "meshplane_function_async_queue_events 2\n" in text
    assert "meshplane_function_async_event_age_seconds 1.500\n" in text
    assert async_metrics({}) == ""


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_finds_nothing_to_lint() -> None:
    out = subprocess.run(["promtool", "check", "metrics"], input=async_metrics(STATS), text=True,
                         capture_output=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
