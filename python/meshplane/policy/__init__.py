"""meshplane.policy: the decisions of the control layer, as sans-I/O objects.

Owns the logic that decides, not the code that acts: active health checking
(`HealthChecker`, `HostHealth`, `HealthCheckPolicy`; envoy-semantics §3), outlier detection
(`OutlierDetector`, `OutlierPolicy`; envoy-semantics §2), the retry budget (`RetryBudget`;
the model the Rust core mirrors) and the retry schedule of asynchronous function invocations
(`policy.async_retry`; lambda.md §6). Each object takes events and timestamps and returns decisions;
nothing here sends a probe, reads a clock, sleeps or touches the core. Randomness (jitter,
enforcement rolls) comes from an injected `random.Random`, so every test is reproducible.
Trio drivers (`meshplane.drivers`) wrap these objects and carry the decisions to the core.

Layering: imports only the standard library and `meshplane.errors`. It must not import trio,
`meshplane._core` or `meshplane.config` (App Mesh dicts arrive already loaded, and
`from_appmesh` reads them as plain mappings), so it works without the compiled core.
Deviations from Envoy and App Mesh are listed in the docstrings of `health` and `outlier`.
"""

from __future__ import annotations

from meshplane.policy._errors import PolicyError
from meshplane.policy.budget import RetryBudget
from meshplane.policy.health import (
    HealthChecker,
    HealthCheckPolicy,
    HealthState,
    HostHealth,
    ProbeResult,
    Transition,
    classify_grpc_health,
    classify_http_status,
)
from meshplane.policy.outlier import (
    Decision,
    Eject,
    EjectionReason,
    EjectionState,
    OutlierDetector,
    OutlierPolicy,
    Sample,
    Uneject,
)

__all__ = [
    "Decision",
    "Eject",
    "EjectionReason",
    "EjectionState",
    "HealthCheckPolicy",
    "HealthChecker",
    "HealthState",
    "HostHealth",
    "OutlierDetector",
    "OutlierPolicy",
    "PolicyError",
    "ProbeResult",
    "RetryBudget",
    "Sample",
    "Transition",
    "Uneject",
    "classify_grpc_health",
    "classify_http_status",
]
