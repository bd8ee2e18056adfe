"""The retry budget: how many retries a cluster may have in flight (envoy-semantics §4, §5).

Owns `RetryBudget`, the reference model of the arithmetic the Rust core enforces on every retry
(the core never calls back into Python; it mirrors this model, and the property tests hold the
model to its invariants). Must not import trio, `meshplane._core` or `meshplane.config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meshplane.policy._appmesh import as_int
from meshplane.policy._errors import PolicyError


@dataclass(frozen=True)
class RetryBudget:
    """Envoy's `retry_budget` circuit breaker: concurrent retries are limited to
    `budget_percent` of the active plus pending requests, but never below
    `min_retry_concurrency` (defaults 20% and 3, as Envoy's).

    `limit` evaluates `budget_percent / 100.0 * (active + pending)` in IEEE doubles and
    truncates, in the same order as Envoy's C++ and the core's Rust, so all three agree to the
    request (for example 29% of 100 requests allows 28, because 0.29 * 100 < 29 in doubles).
    """

    budget_percent: float = 20.0
    min_retry_concurrency: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.budget_percent, bool) or not (
            math.isfinite(self.budget_percent) and 0.0 <= self.budget_percent <= 100.0
        ):
            raise PolicyError("out_of_range", "budget_percent", f"expected 0..100, got {self.budget_percent!r}")
        as_int(self.min_retry_concurrency, "min_retry_concurrency", lo=0, hi=2**32 - 1)

    def limit(self, active_requests: int, pending_requests: int) -> int:
        """The most retries that may be in flight with this many active and pending requests."""
        load = active_requests + pending_requests
        return max(int(self.budget_percent / 100.0 * load), self.min_retry_concurrency)

    def allows(self, active_retries: int, active_requests: int, pending_requests: int) -> bool:
        """Whether one more retry may start while `active_retries` are in flight."""
        return active_retries < self.limit(active_requests, pending_requests)
