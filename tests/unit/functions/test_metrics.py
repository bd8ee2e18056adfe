"""Lambda's metrics: roll-up of cluster counters and their Prometheus families."""

from __future__ import annotations

from meshplane.admin.prometheus import parse, render
from meshplane.functions._metrics import ClusterMetrics, percentile, summary


def test_summary_and_exposition() -> None:
    a, b = ClusterMetrics(), ClusterMetrics()
    for ms in (1.0, 2.0, 3.0, 4.0):
        a.invoked(ms, None, cold=ms == 1.0, init_ms=80.0 if ms == 1.0 else None,
                  provisioned_instance=False, provisioned_configured=True)
    b.invoked(10.0, "Sandbox.Timedout", cold=False, init_ms=None, provisioned_instance=True,
              provisioned_configured=True)
    doc = summary([(a, {"busy": 1, "instances": 2, "provisioned": 0, "throttles": 3}),
                   (b, {"busy": 1, "instances": 1, "provisioned": 1, "provisioned_busy": 1})])
    assert doc["invocations"] == 5 and doc["errors"] == 1 and doc["throttles"] == 3
    assert doc["error_types"] == {"Sandbox.Timedout": 1}
    assert doc["provisioned_spillover_invocations"] == 4
    assert doc["concurrent_executions"] == 2 and doc["provisioned_concurrency_utilization"] == 1.0
    assert doc["duration_ms"]["p50"] == 3.0 and doc["duration_ms"]["sum"] == 20.0
    assert doc["init_duration_ms"]["count"] == 1 and doc["init_duration_ms"]["p50"] == 80.0
    doc["versions"] = {"1": summary([(a, {})])}
    doc["aliases"] = {"live": summary([(b, {})])}
    samples = parse(render({"functions": {"resize": doc}}))
    fn = (("function", "resize"), ("kind", "function"), ("qualifier", ""))
    assert samples[("meshplane_function_invocations_total", fn)] == 5
    assert samples[("meshplane_function_throttles_total", fn)] == 3
    assert samples[("meshplane_function_duration_seconds", (*fn, ("quantile", "0.5")))] == 0.003
    assert samples[("meshplane_function_duration_seconds_count", fn)] == 5
    alias = (("function", "resize"), ("kind", "alias"), ("qualifier", "live"))
    assert samples[("meshplane_function_errors_by_type_total",
                    (("error_type", "Sandbox.Timedout"), *alias))] == 1


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.99) == 5.0
    assert percentile(list(map(float, range(101))), 0.99) == 99.0
