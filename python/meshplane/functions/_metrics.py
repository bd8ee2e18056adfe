"""Lambda's metrics per function cluster, and their roll-up per function, version and alias.

Pure counters fed by the supervisor from the instances' reports (spec/lambda.md §8):
Invocations, Errors (by error type), Throttles (the core's `rq_throttled` of the cluster),
Duration (p50/p99 over the last `WINDOW` invocations), ConcurrentExecutions (now and peak),
ProvisionedConcurrentExecutions, ProvisionedConcurrencyUtilization,
ProvisionedConcurrencySpilloverInvocations, cold starts and Init Duration. Imports only the
standard library.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

WINDOW = 2048


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q * (len(ordered) - 1)))))
    return ordered[rank]


@dataclass
class ClusterMetrics:
    invocations: int = 0
    errors: int = 0
    error_types: dict[str, int] = field(default_factory=dict)
    cold_starts: int = 0
    spillover: int = 0
    crashes: int = 0
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    init_durations: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    peak_concurrency: int = 0
    duration_total_ms: float = 0.0
    init_total_ms: float = 0.0

    def invoked(self, duration_ms: float, error: str | None, *, cold: bool, init_ms: float | None,
                provisioned_instance: bool, provisioned_configured: bool) -> None:
        self.invocations += 1
        self.durations.append(duration_ms)
        self.duration_total_ms += duration_ms
        if error is not None:
            self.errors += 1
            self.error_types[error] = self.error_types.get(error, 0) + 1
        if cold:
            self.cold_starts += 1
            if init_ms is not None:
                self.init_durations.append(init_ms)
                self.init_total_ms += init_ms
        if provisioned_configured and not provisioned_instance:
            self.spillover += 1


def summary(parts: Iterable[tuple[ClusterMetrics, dict[str, int]]]) -> dict[str, Any]:
    """One metrics document from clusters' metrics and live levels (`busy`, `instances`,
    `provisioned`, `provisioned_busy`, `throttles`)."""
    out: dict[str, Any] = {
        "invocations": 0, "errors": 0, "throttles": 0, "cold_starts": 0, "crashes": 0,
        "provisioned_spillover_invocations": 0, "concurrent_executions": 0,
        "max_concurrent_executions": 0, "instances": 0, "provisioned_concurrent_executions": 0,
        "provisioned_instances": 0, "error_types": {},
    }
    durations: list[float] = []
    inits: list[float] = []
    duration_sum = init_sum = 0.0
    init_count = 0
    for metrics, live in parts:
        out["invocations"] += metrics.invocations
        out["errors"] += metrics.errors
        out["cold_starts"] += metrics.cold_starts
        out["crashes"] += metrics.crashes
        out["provisioned_spillover_invocations"] += metrics.spillover
        out["max_concurrent_executions"] += metrics.peak_concurrency
        for kind, n in metrics.error_types.items():
            out["error_types"][kind] = out["error_types"].get(kind, 0) + n
        durations += metrics.durations
        inits += metrics.init_durations
        duration_sum += metrics.duration_total_ms
        init_sum += metrics.init_total_ms
        init_count += metrics.cold_starts
        out["throttles"] += live.get("throttles", 0)
        out["concurrent_executions"] += live.get("busy", 0)
        out["instances"] += live.get("instances", 0)
        out["provisioned_instances"] += live.get("provisioned", 0)
        out["provisioned_concurrent_executions"] += live.get("provisioned_busy", 0)
    # Quantiles over the recent window; `sum` and `count` since the start (a summary's).
    out["duration_ms"] = {"p50": percentile(durations, 0.5), "p99": percentile(durations, 0.99),
                          "sum": duration_sum, "count": out["invocations"]}
    out["init_duration_ms"] = {"p50": percentile(inits, 0.5), "p99": percentile(inits, 0.99),
                               "max": max(inits, default=None), "sum": init_sum,
                               "count": init_count}
    provisioned = out["provisioned_instances"]
    out["provisioned_concurrency_utilization"] = (
        out["provisioned_concurrent_executions"] / provisioned if provisioned else None)
    return out
