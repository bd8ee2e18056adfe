"""Property tests of meshplane.policy.health against small reference models written here.

`EnvoySession` transliterates Envoy's handleSuccess/handleFailure (flags and counters in
if/else form, envoy-semantics §3); the implementation keeps its transitions in a table. The
scheduler is checked against a dict of due times and a scan.
"""

from __future__ import annotations

import random
from array import array
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from meshplane.policy import HealthChecker, HealthCheckPolicy, HealthState, HostHealth, ProbeResult

OK = ProbeResult.SUCCESS
results = st.sampled_from(list(ProbeResult))
thresholds = st.integers(min_value=1, max_value=10)


class EnvoySession:
    """Envoy's ActiveHealthCheckSession, reduced to the flags and counters."""

    def __init__(self, healthy_threshold: int, unhealthy_threshold: int) -> None:
        self.h, self.u = healthy_threshold, unhealthy_threshold
        self.failed = True  # every host is created with FAILED_ACTIVE_HC
        self.first_check = True
        self.num_healthy = self.num_unhealthy = 0
        self.timeout_flag = False

    def handle(self, result: ProbeResult) -> tuple[str, bool]:
        """Returns (Changed | ChangePending | Unchanged, whether this was the first check)."""
        outcome = "unchanged"
        if result is OK:
            self.num_unhealthy = 0
            if self.failed:
                self.num_healthy += 0 if self.first_check else 1
                if self.first_check or self.num_healthy == self.h:
                    self.failed = False
                    self.timeout_flag = False
                    outcome = "changed"
                else:
                    outcome = "pending"
        else:
            self.num_healthy = 0
            if not self.failed:
                network = result in (ProbeResult.NETWORK_FAILURE, ProbeResult.TIMEOUT)
                if network:
                    self.num_unhealthy += 1
                if not network or self.num_unhealthy == self.u:
                    self.failed = True
                    outcome = "changed"
                else:
                    outcome = "pending"
            if result is ProbeResult.TIMEOUT and self.failed:
                self.timeout_flag = True
        first, self.first_check = self.first_check, False
        return outcome, first

    def state(self) -> HealthState:
        if self.first_check:
            return HealthState.UNKNOWN
        return HealthState.UNHEALTHY if self.failed else HealthState.HEALTHY


def make_policy(h: int = 2, u: int = 3, interval: float = 5.0, **kw: Any) -> HealthCheckPolicy:
    return HealthCheckPolicy("http", interval=interval, timeout=1.0, healthy_threshold=h,
                             unhealthy_threshold=u, **kw)


@given(thresholds, thresholds, st.lists(results, max_size=80))
def test_state_machine_matches_envoys_session(h: int, u: int, seq: list[ProbeResult]) -> None:
    host, ref = HostHealth(make_policy(h, u)), EnvoySession(h, u)
    for i, result in enumerate(seq):
        before = host.state
        transition = host.on_result(result, float(i))
        outcome, first = ref.handle(result)
        assert host.state is ref.state()
        assert (host.num_healthy, host.num_unhealthy) == (ref.num_healthy, ref.num_unhealthy)
        assert host.change_pending == (outcome == "pending")
        assert host.active_hc_timeout == ref.timeout_flag
        assert host.failed_active_hc == ref.failed
        # Envoy's Changed, plus the first result (which leaves "unknown" even on failure).
        if outcome == "changed" or first:
            assert transition is not None
            assert (transition.previous, transition.current, transition.first_check) == (
                before, host.state, first)
        else:
            assert transition is None


@given(
    st.integers(1, 300_000), st.integers(0, 100), st.integers(0, 5000), thresholds, thresholds,
    st.lists(results, max_size=20), st.integers(0, 2**32),
)
def test_next_delay_lies_within_envoys_jitter_bounds(
    interval_ms: int, pct: int, abs_ms: int, h: int, u: int, seq: list[ProbeResult], seed: int
) -> None:
    ms = interval_ms / 1000
    p = make_policy(h, u, interval=ms, interval_jitter_percent=pct, interval_jitter=abs_ms / 1000,
                    unhealthy_interval=2 * ms, healthy_edge_interval=3 * ms, unhealthy_edge_interval=4 * ms)
    host, rng = HostHealth(p), random.Random(seed)
    first = host.next_delay(rng)
    assert 0.0 <= first < interval_ms / 1000  # initial jitter: rand % one interval
    ref = EnvoySession(h, u)
    for i, result in enumerate(seq):
        host.on_result(result, float(i))
        outcome, _ = ref.handle(result)
        # Envoy's interval(): by the result just seen, the edge interval while a change is pending.
        pending = outcome == "pending"
        base = {(True, False): 1, (True, True): 3, (False, False): 2, (False, True): 4}[
            result is OK, pending] * interval_ms
        delay_ms = round(host.next_delay(rng) * 1000)
        assert base <= delay_ms
        assert delay_ms <= base + max(pct * base // 100 - 1, 0) + max(abs_ms - 1, 0)


Op = tuple[str, int | float | frozenset[int] | ProbeResult, ProbeResult]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 40).map(lambda n: n / 4), st.just(OK)),
        st.tuples(st.just("record"), st.integers(0, 7), results),
        st.tuples(st.just("set_hosts"), st.frozensets(st.integers(0, 7)), st.just(OK)),
    ),
    max_size=60,
)


@settings(max_examples=300)
@given(st.frozensets(st.integers(0, 7)), ops, st.integers(0, 2**32), thresholds, thresholds)
def test_checker_matches_a_scan_of_due_times(
    initial: frozenset[int], script: list[Op], seed: int, h: int, u: int
) -> None:
    p = make_policy(h, u, interval=2.0, interval_jitter_percent=25)
    checker: HealthChecker[int] = HealthChecker(p, random.Random(seed))
    now = 0.0
    due_at: dict[int, float] = {}  # the model: scheduled hosts; absent = in flight
    sessions: dict[int, EnvoySession] = {}

    def read_schedule(key: int) -> float:
        at = checker.snapshot()[key]["next_check"]
        assert at is not None
        return float(at)

    def set_hosts(keys: frozenset[int]) -> None:
        checker.set_hosts(sorted(keys), now)
        for gone in set(sessions) - keys:
            del sessions[gone]
            due_at.pop(gone, None)
        for new in sorted(keys - set(sessions)):
            sessions[new] = EnvoySession(h, u)
            due_at[new] = read_schedule(new)
            assert now <= due_at[new] < now + p.interval  # initial jitter: one interval

    set_hosts(initial)
    for op, arg, result in script:
        if op == "advance":
            assert isinstance(arg, float)
            now += arg
            got = checker.due(now)
            expected = {k for k, at in due_at.items() if at <= now}
            assert sorted(got) == sorted(expected) and len(got) == len(set(got))
            assert [due_at[k] for k in got] == sorted(due_at[k] for k in got)  # earliest first
            for k in got:
                del due_at[k]
            next_due = checker.next_due()
            assert next_due == (min(due_at.values()) if due_at else None)
        elif op == "record":
            assert isinstance(arg, int)
            transition = checker.record(arg, result, now)
            if arg not in sessions:
                assert transition is None
                continue
            outcome, first = sessions[arg].handle(result)
            assert (transition is not None) == (outcome == "changed" or first)
            at = read_schedule(arg)
            # interval 2 s (every edge and unhealthy interval defaults to it) plus up to 25%.
            assert now + 2.0 <= at < now + 2.5
            due_at[arg] = at
        else:
            assert isinstance(arg, frozenset)
            set_hosts(arg)
        for k, session in sessions.items():
            state = session.state()
            assert checker.healthy(k) == (None if state is HealthState.UNKNOWN else state is HealthState.HEALTHY)
        # the kept count agrees with the model's states after every operation
        assert checker.count_healthy() == sum(s.state() is HealthState.HEALTHY for s in sessions.values())
        # the kept compact view is every host exactly once, each record as `pack` makes it now
        keys, records = checker.view()
        assert sorted(keys) == sorted(sessions) and len(records) == 5 * len(keys)
        packed: array[int] = array("Q")
        checker.pack(keys, packed)
        assert records == packed
