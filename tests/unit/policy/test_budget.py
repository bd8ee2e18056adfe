"""meshplane.policy.budget: Envoy's retry-budget arithmetic (envoy-semantics §4, §5)."""

from __future__ import annotations

import pytest
from meshplane.policy import PolicyError, RetryBudget


def test_defaults_are_envoys() -> None:
    assert RetryBudget() == RetryBudget(budget_percent=20.0, min_retry_concurrency=3)


@pytest.mark.parametrize(
    ("budget", "active", "pending", "limit"),
    [
        (RetryBudget(), 0, 0, 3),  # the floor applies with no load
        (RetryBudget(), 10, 0, 3),  # 20% of 10 = 2 < 3
        (RetryBudget(), 15, 5, 4),  # pending requests count
        (RetryBudget(), 24, 0, 4),  # 4.8 truncates
        (RetryBudget(), 100, 50, 30),
        (RetryBudget(50.0, 0), 3, 0, 1),
        (RetryBudget(0.0, 0), 1000, 0, 0),  # no retries at all
        (RetryBudget(100.0, 3), 7, 1, 8),
        (RetryBudget(29.0, 0), 100, 0, 28),  # 0.29 * 100 is 28.999... in doubles, as in Envoy
    ],
)
def test_limit(budget: RetryBudget, active: int, pending: int, limit: int) -> None:
    assert budget.limit(active, pending) == limit


@pytest.mark.parametrize(("retries", "allowed"), [(0, True), (3, True), (4, False), (9, False)])
def test_allows_while_below_the_limit(retries: int, allowed: bool) -> None:
    assert RetryBudget().allows(retries, 20, 0) is allowed  # limit 4


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"budget_percent": -1.0}, "budget_percent"),
        ({"budget_percent": 100.5}, "budget_percent"),
        ({"budget_percent": float("nan")}, "budget_percent"),
        ({"min_retry_concurrency": -1}, "min_retry_concurrency"),
    ],
)
def test_validation(kw: dict[str, float], field: str) -> None:
    with pytest.raises(PolicyError) as err:
        RetryBudget(**kw)  # type: ignore[arg-type]
    assert err.value.field == field and err.value.code == "out_of_range"
