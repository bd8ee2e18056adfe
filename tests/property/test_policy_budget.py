"""Property tests of meshplane.policy.RetryBudget, the model the core's retry check mirrors
(rust/src/cluster: `(budget_percent / 100.0 * load) as u32`, at least min_retry_concurrency)."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st
from meshplane.policy import RetryBudget

budgets = st.builds(
    RetryBudget,
    budget_percent=st.one_of(st.integers(0, 100).map(float),
                             st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False)),
    min_retry_concurrency=st.integers(0, 1000),
)
load = st.integers(0, 10**7)


@given(budgets, load, load, load, load)
def test_limit_is_monotone_in_load_and_depends_only_on_the_sum(
    b: RetryBudget, a1: int, p1: int, a2: int, p2: int
) -> None:
    if a1 + p1 <= a2 + p2:
        assert b.limit(a1, p1) <= b.limit(a2, p2)
    assert b.limit(a1, p1) == b.limit(a1 + p1, 0) == b.limit(0, a1 + p1)


@given(budgets, load, load)
def test_limit_is_at_least_min_concurrency_and_the_budget_within_rounding(
    b: RetryBudget, active: int, pending: int
) -> None:
    limit = b.limit(active, pending)
    assert limit >= b.min_retry_concurrency
    exact = math.floor(Fraction(b.budget_percent) / 100 * (active + pending))
    # Two double roundings (÷100, ×load) can move a result sitting on an integer by one.
    assert max(exact - 1, b.min_retry_concurrency) <= limit <= max(exact + 1, b.min_retry_concurrency)


@given(budgets, st.integers(0, 10**6), load, load)
def test_allows_exactly_while_below_the_limit(b: RetryBudget, retries: int, active: int, pending: int) -> None:
    assert b.allows(retries, active, pending) == (retries < b.limit(active, pending))
