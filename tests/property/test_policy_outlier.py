"""Property tests of meshplane.policy.outlier against reference models written here.

`RefDetector` transliterates envoy-semantics §2 (Eject, uneject, decay, active-HC uneject) with
Envoy's own formulas (`(active + 1) * 100 / total` as a float, `min(base * backoff, max) <=
now - last_ejection`). Times are multiples of 0.5 s so both sides compute them exactly.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from meshplane.policy import Eject, EjectionReason, OutlierDetector, OutlierPolicy, Sample, Uneject
from meshplane.policy.outlier import CLEAN_STATE

KINDS = ["consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure"]
# Small grids on purpose: boundaries (`<=` on the cap, on the ejection time, on the decay
# interval, the backoff ceiling) are only exercised when values land on them exactly.
BASES = [0.5, 1.0, 2.0, 3.0, 5.0, 10.0]
PERCENTS = st.one_of(st.sampled_from([0, 10, 25, 34, 50, 75, 100]), st.integers(0, 100))
steps = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0])
# Few hosts often, so one host flaps through many ejections and reaches the backoff ceiling.
cluster_sizes = st.one_of(st.sampled_from([1, 2, 3, 4, 10]), st.integers(1, 12))


@st.composite
def policies(draw: st.DrawFn, jitter: bool = False, statistical: bool = False) -> OutlierPolicy:
    base = draw(st.sampled_from(BASES))
    kw: dict[str, Any] = {
        "interval": draw(st.sampled_from([0.5, 1.0, 2.0, 5.0])),
        "base_ejection_time": base,
        "max_ejection_time": draw(st.one_of(st.none(), st.sampled_from([1.0, 1.5, 2.0, 3.0, 4.0]).map(
            lambda k: base * k))),
        "max_ejection_percent": draw(PERCENTS),
        "always_eject_one_host": draw(st.booleans()),  # the App Mesh reading of the cap
        "split_external_local_origin_errors": draw(st.booleans()),
        "successful_active_health_check_uneject_host": draw(st.booleans()),
    }
    for name in ("enforcing_consecutive_5xx", "enforcing_consecutive_gateway_failure",
                 "enforcing_consecutive_local_origin_failure"):
        kw[name] = draw(st.sampled_from([0, 100, 100]) if not jitter else st.sampled_from([0, 50, 100, 100]))
    if jitter:
        kw["max_ejection_time_jitter"] = draw(st.sampled_from([0.0, 0.0, 0.5, 2.0, 10.0]))
    if statistical:
        kw["success_rate_minimum_hosts"] = draw(st.integers(1, 6))
        kw["success_rate_request_volume"] = draw(st.integers(1, 50))
        kw["failure_percentage_minimum_hosts"] = draw(st.integers(1, 6))
        kw["failure_percentage_request_volume"] = draw(st.integers(1, 50))
        kw["enforcing_failure_percentage"] = draw(PERCENTS)
        kw["enforcing_success_rate"] = draw(PERCENTS)
        kw["failure_percentage_threshold"] = draw(st.integers(0, 100))
    return OutlierPolicy(**kw)


@dataclass
class RefHost:
    ejected: bool = False
    backoff: int = 0
    last_ejection: float = 0.0
    last_unejection: float | None = None


class RefDetector:
    """envoy-semantics §2, consecutive ejections and the sweep's uneject and decay steps."""

    def __init__(self, p: OutlierPolicy, hosts: list[str]) -> None:
        self.p = p
        self.max = max(300.0, p.base_ejection_time) if p.max_ejection_time is None else p.max_ejection_time
        self.hosts = {h: RefHost() for h in hosts}

    def active(self) -> int:
        return sum(1 for m in self.hosts.values() if m.ejected)

    def consecutive(self, host: str, kind: str, now: float) -> list[Any]:
        m = self.hosts[host]
        if m.ejected or (kind == KINDS[2] and not self.p.split_external_local_origin_errors):
            return []
        ejected_percent = 100.0 * (self.active() + 1) / len(self.hosts)
        if not (ejected_percent <= self.p.max_ejection_percent
                or (self.p.always_eject_one_host and self.active() == 0)):
            return []
        enforcing = {KINDS[0]: self.p.enforcing_consecutive_5xx,
                     KINDS[1]: self.p.enforcing_consecutive_gateway_failure,
                     KINDS[2]: self.p.enforcing_consecutive_local_origin_failure}[kind]
        if enforcing == 0:
            return []
        m.ejected, m.last_ejection = True, now
        base = self.p.base_ejection_time
        if m.backoff * base < self.max + base:
            m.backoff += 1
        return [Eject(host, EjectionReason(kind), now + min(base * m.backoff, self.max))]

    def sweep(self, now: float) -> list[Any]:
        out: list[Any] = []
        base = self.p.base_ejection_time
        for host, m in self.hosts.items():
            if m.ejected and min(base * m.backoff, self.max) <= now - m.last_ejection:
                m.ejected, m.last_unejection = False, now
                out.append(Uneject(host))
        for m in self.hosts.values():
            if not m.ejected and m.last_unejection is not None and now - m.last_unejection >= self.p.interval:
                m.backoff = max(0, m.backoff - 1)
        return out

    def health_check_passed(self, host: str, now: float) -> list[Any]:
        m = self.hosts[host]
        if not m.ejected or not self.p.successful_active_health_check_uneject_host:
            return []
        m.ejected, m.last_unejection = False, now
        return [Uneject(host)]


events = st.lists(
    st.one_of(
        st.tuples(st.just("consecutive"), st.integers(0, 11), st.sampled_from(KINDS)),
        st.tuples(st.just("advance"), steps, st.just("")),
        st.tuples(st.just("sweep"), st.just(0), st.just("")),
        st.tuples(st.just("advance+sweep"), steps, st.just("")),
        st.tuples(st.just("hc"), st.integers(0, 11), st.just("")),
    ),
    min_size=5,
    max_size=100,
)


@settings(max_examples=600)
@given(policies(), cluster_sizes, events)
def test_detector_matches_the_reference_model(p: OutlierPolicy, n: int, script: list[Any]) -> None:
    hosts = [f"h{i}" for i in range(n)]
    det: OutlierDetector[str] = OutlierDetector(p, random.Random(0))
    det.set_hosts(hosts)
    ref = RefDetector(p, hosts)
    now = 0.0
    for op, arg, kind in script:
        if op.startswith("advance"):
            now += arg
            if op == "advance":
                continue
        if op.endswith("sweep"):
            got, want = det.on_interval({}, now), ref.sweep(now)
        elif op == "consecutive":
            host = hosts[arg % n]
            got, want = det.on_consecutive(host, kind, now), ref.consecutive(host, kind, now)
        else:
            host = hosts[arg % n]
            got, want = det.on_active_health_success(host, now), ref.health_check_passed(host, now)
        assert got == want
        for h in hosts:
            assert det.state(h).ejected == ref.hosts[h].ejected
            assert det.state(h).backoff == ref.hosts[h].backoff
        assert det.stats()["ejections_active"] == ref.active()


def sample_maps(n: int) -> st.SearchStrategy[dict[str, Sample]]:
    one = st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60), st.integers(0, 60)).map(
        lambda t: Sample(min(t[0], t[1]), t[1], min(t[2], t[3]), t[3]))
    return st.dictionaries(st.sampled_from([f"h{i}" for i in range(n)]), one, max_size=n)


# Samples may name hosts outside the cluster (up to h11): the detector ignores them.
mixed_events = st.lists(
    st.one_of(
        st.tuples(st.just("consecutive"), st.integers(0, 11), st.sampled_from(KINDS)),
        st.tuples(st.just("advance"), steps, st.just("")),
        st.tuples(st.just("sweep"), sample_maps(12), st.just("")),
        st.tuples(st.just("sweep"), st.just({}), st.just("")),
        st.tuples(st.just("hc"), st.integers(0, 11), st.just("")),
    ),
    min_size=5,
    max_size=60,
)


@settings(max_examples=300)
@given(policies(jitter=True, statistical=True), cluster_sizes, mixed_events, st.integers(0, 2**32))
def test_ejection_invariants(p: OutlierPolicy, n: int, script: list[Any], seed: int) -> None:
    """For any events, sweeps (with samples) and health-check passes:
    ejected hosts <= max(1 if always-eject-one, floor(max% * n / 100)); every Eject's length
    is min(base * backoff, max) plus jitter in [0, max_jitter]; no host is unejected by a sweep
    before its time, nor left ejected by a sweep after it; backoff <= ceil(max / base) + 1."""
    hosts = [f"h{i}" for i in range(n)]
    det: OutlierDetector[str] = OutlierDetector(p, random.Random(seed))
    det.set_hosts(hosts)
    base, cap = p.base_ejection_time, p.effective_max_ejection_time
    limit = max(1 if p.always_eject_one_host else 0, math.floor(p.max_ejection_percent * n / 100))
    reasons = [r.value for r in EjectionReason]
    until: dict[str, float] = {}
    backoff = dict.fromkeys(hosts, 0)
    last_unejection: dict[str, float] = {}
    now = 0.0
    for op, arg, kind in script:
        if op == "advance":
            now += arg
            continue
        if op == "consecutive":
            decisions = det.on_consecutive(hosts[arg % n], kind, now)
        elif op == "hc":
            decisions = det.on_active_health_success(hosts[arg % n], now)
        else:
            due = {h for h, t in until.items() if t <= now}
            decisions = det.on_interval(arg, now)
            assert due <= {d.key for d in decisions if isinstance(d, Uneject)}, "left ejected"
        for d in decisions:
            if isinstance(d, Eject):
                assert d.key not in until
                if backoff[d.key] * base < cap + base:
                    backoff[d.key] += 1
                length = d.until - now
                expected = min(base * backoff[d.key], cap)
                assert expected - 1e-9 <= length <= expected + p.max_ejection_time_jitter + 1e-9
                until[d.key] = d.until
            else:
                assert d.key in until
                if op == "sweep":
                    assert now >= until[d.key], "unejected early"
                del until[d.key]
                last_unejection[d.key] = now
        if op == "sweep":  # decay, mirrored from the rule
            for h in hosts:
                if h not in until and h in last_unejection and now - last_unejection[h] >= p.interval:
                    backoff[h] = max(0, backoff[h] - 1)
        assert set(det.ejected()) == set(until)
        assert len(until) <= limit
        stats = det.stats()
        assert stats["ejections_active"] == len(until)
        reasons = [r.value for r in EjectionReason]
        assert stats["ejections_enforced_total"] == sum(stats[f"ejections_enforced_{r}"] for r in reasons)
        assert all(stats[f"ejections_enforced_{r}"] <= stats[f"ejections_detected_{r}"] for r in reasons)
        for h in hosts:
            state = det.state(h)
            assert state.backoff == backoff[h] <= math.ceil(cap / base) + 1
            assert state.ejected_until == until.get(h)
        # the hosts not as new are exactly those `marked` lists (the sparse view's entries)
        assert sorted(det.marked()) == sorted(h for h in hosts if det.state(h) != CLEAN_STATE)
        assert det.keys() == tuple(hosts)


@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(100, 500)), min_size=5, max_size=30),
    st.integers(0, 3000),
)
def test_success_rate_ejects_exactly_the_hosts_below_mean_minus_factor_stdev(
    counts: list[tuple[int, int]], factor: int
) -> None:
    rates = [100.0 * min(ok, total) / total for ok, total in counts]
    mean, stdev = statistics.fmean(rates), statistics.pstdev(rates)
    threshold = mean - factor / 1000 * stdev
    # Within rounding of the threshold either answer is right; keep the clear cases.
    assume(all(r == threshold or abs(r - threshold) > 1e-9 for r in rates))
    p = OutlierPolicy(max_ejection_percent=100, success_rate_stdev_factor=factor)
    det: OutlierDetector[int] = OutlierDetector(p, random.Random(0))
    det.set_hosts(range(len(counts)))
    decisions = det.on_interval({i: Sample(min(ok, t), t) for i, (ok, t) in enumerate(counts)}, 10.0)
    assert {d.key for d in decisions} == {i for i, r in enumerate(rates) if r < threshold}
    assert all(isinstance(d, Eject) and d.reason is EjectionReason.SUCCESS_RATE for d in decisions)
