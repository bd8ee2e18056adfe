"""meshplane.policy.outlier against envoy-semantics §2 and appmesh §3.1, example by example."""

from __future__ import annotations

import random
from typing import Any

import pytest
from meshplane.policy import (
    Eject,
    EjectionReason,
    OutlierDetector,
    OutlierPolicy,
    PolicyError,
    Sample,
    Uneject,
)

C5XX = "consecutive_5xx"
GW = "consecutive_gateway_failure"
LOCAL = "consecutive_local_origin_failure"
R = EjectionReason

# appmesh §7.2, the listener's outlierDetection.
APPMESH_OD = {"maxServerErrors": 5, "interval": {"unit": "s", "value": 10},
              "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 50}


class FixedRandom(random.Random):
    """Every draw returns the next of `values` (the last one repeats)."""

    def __init__(self, *values: int) -> None:
        super().__init__(0)
        self.values = list(values)

    def getrandbits(self, k: int) -> int:
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]


def detector(n: int, rng: random.Random | None = None, **kw: Any) -> OutlierDetector[str]:
    d: OutlierDetector[str] = OutlierDetector(OutlierPolicy(**kw), rng or random.Random(0))
    d.set_hosts(f"h{i}" for i in range(n))
    return d


# --- policy -----------------------------------------------------------------------------------

ENVOY_DEFAULTS = {
    "consecutive_5xx": 5, "interval": 10.0, "base_ejection_time": 30.0, "max_ejection_time": None,
    "max_ejection_time_jitter": 0.0, "max_ejection_percent": 10, "always_eject_one_host": False,
    "enforcing_consecutive_5xx": 100, "enforcing_success_rate": 100,
    "success_rate_minimum_hosts": 5, "success_rate_request_volume": 100,
    "success_rate_stdev_factor": 1900, "consecutive_gateway_failure": 5,
    "enforcing_consecutive_gateway_failure": 0, "split_external_local_origin_errors": False,
    "consecutive_local_origin_failure": 5, "enforcing_consecutive_local_origin_failure": 100,
    "enforcing_local_origin_success_rate": 100, "failure_percentage_threshold": 85,
    "enforcing_failure_percentage": 0, "enforcing_failure_percentage_local_origin": 0,
    "failure_percentage_minimum_hosts": 5, "failure_percentage_request_volume": 50,
    "successful_active_health_check_uneject_host": True,
}


@pytest.mark.parametrize(("name", "value"), sorted(ENVOY_DEFAULTS.items()))
def test_defaults_are_envoys(name: str, value: object) -> None:
    assert getattr(OutlierPolicy(), name) == value


def test_max_ejection_time_defaults_to_max_of_300s_and_base() -> None:
    assert OutlierPolicy().effective_max_ejection_time == 300.0
    assert OutlierPolicy(base_ejection_time=400.0).effective_max_ejection_time == 400.0
    assert OutlierPolicy(max_ejection_time=60.0).effective_max_ejection_time == 60.0


def test_from_appmesh_maps_fields_and_sets_always_eject_one() -> None:
    p = OutlierPolicy.from_appmesh(APPMESH_OD)
    assert (p.consecutive_5xx, p.interval, p.base_ejection_time, p.max_ejection_percent) == (5, 10.0, 30.0, 50)
    assert p.always_eject_one_host is True
    assert p.enforcing_success_rate == 0 and p.enforcing_local_origin_success_rate == 0
    assert p.enforcing_consecutive_5xx == 100


def test_from_appmesh_durations_in_ms() -> None:
    p = OutlierPolicy.from_appmesh({**APPMESH_OD, "interval": {"unit": "ms", "value": 1500},
                                    "baseEjectionDuration": {"unit": "ms", "value": 250}})
    assert (p.interval, p.base_ejection_time) == (1.5, 0.25)


def test_from_appmesh_extension_keys() -> None:
    p = OutlierPolicy.from_appmesh(APPMESH_OD, {
        "maxEjectionDuration": {"unit": "s", "value": 120},
        "maxEjectionJitter": {"unit": "ms", "value": 500},
        "alwaysEjectOneHost": False,
        "consecutiveGatewayFailure": 3, "enforcingConsecutiveGatewayFailure": 100,
        "enforcingSuccessRate": 100, "successRateStdevFactor": 1000,
        "enforcingFailurePercentage": 100, "failurePercentageThreshold": 50,
        "splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailure": 2,
        "enforcingLocalOriginSuccessRate": 50, "enforcingFailurePercentageLocalOrigin": 10,
        "successfulActiveHealthCheckUnejectHost": False,
    })
    assert (p.max_ejection_time, p.max_ejection_time_jitter, p.always_eject_one_host) == (120.0, 0.5, False)
    assert (p.consecutive_gateway_failure, p.enforcing_consecutive_gateway_failure) == (3, 100)
    assert (p.enforcing_success_rate, p.success_rate_stdev_factor) == (100, 1000)
    assert (p.enforcing_failure_percentage, p.failure_percentage_threshold) == (100, 50)
    assert p.split_external_local_origin_errors and p.consecutive_local_origin_failure == 2
    assert (p.enforcing_local_origin_success_rate, p.enforcing_failure_percentage_local_origin) == (50, 10)
    assert p.successful_active_health_check_uneject_host is False


@pytest.mark.parametrize(
    ("od", "extension", "code", "field"),
    [
        ({k: v for k, v in APPMESH_OD.items() if k != "maxServerErrors"}, None, "missing_field",
         "outlierDetection.maxServerErrors"),
        ({**APPMESH_OD, "interval": {"unit": "m", "value": 1}}, None, "out_of_range",
         "outlierDetection.interval.unit"),
        ({**APPMESH_OD, "interval": 10}, None, "invalid_type", "outlierDetection.interval"),
        ({**APPMESH_OD, "maxEjectionPercent": 101}, None, "out_of_range",
         "outlierDetection.maxEjectionPercent"),
        ({**APPMESH_OD, "maxServerErrors": 0}, None, "out_of_range", "outlierDetection.maxServerErrors"),
        ({**APPMESH_OD, "interval": {"unit": "s", "value": 0}}, None, "out_of_range", "interval"),
        (APPMESH_OD, {"consecutive5xx": 3}, "unknown_key", "extension.consecutive5xx"),
        (APPMESH_OD, {"maxEjectionPercent": 3}, "unknown_key", "extension.maxEjectionPercent"),
        (APPMESH_OD, {"alwaysEjectOneHost": 1}, "invalid_type", "extension.alwaysEjectOneHost"),
        (APPMESH_OD, {"enforcingSuccessRate": 101}, "out_of_range", "enforcing_success_rate"),
        (APPMESH_OD, {"maxEjectionDuration": {"unit": "s", "value": 10}}, "out_of_range",
         "max_ejection_time"),  # Envoy rejects max < base
    ],
)
def test_from_appmesh_rejects_bad_input_with_a_code(
    od: dict[str, Any], extension: dict[str, Any] | None, code: str, field: str
) -> None:
    with pytest.raises(PolicyError) as err:
        OutlierPolicy.from_appmesh(od, extension)
    assert (err.value.code, err.value.field) == (code, field)


# --- consecutive ejections, the cap and enforcement -----------------------------------------


def test_consecutive_event_ejects_immediately() -> None:
    d = detector(10, max_ejection_percent=10)
    assert d.on_consecutive("h3", C5XX, now=5.0) == [Eject("h3", R.CONSECUTIVE_5XX, 35.0)]
    s = d.state("h3")
    assert (s.ejected, s.reason, s.ejected_until, s.num_ejections, s.backoff) == (
        True, R.CONSECUTIVE_5XX, 35.0, 1, 1)
    assert d.stats()["ejections_active"] == 1
    assert d.stats()["ejections_enforced_consecutive_5xx"] == 1
    assert d.stats()["ejections_detected_consecutive_5xx"] == 1
    # An event for an ejected host is ignored, not even counted as detected.
    assert d.on_consecutive("h3", C5XX, now=6.0) == []
    assert d.stats()["ejections_detected_consecutive_5xx"] == 1


@pytest.mark.parametrize(
    ("hosts", "max_percent", "always_one", "ejections"),
    [
        (9, 10, False, 0),  # default 10%: clusters of < 10 hosts never eject
        (10, 10, False, 1),  # (0 + 1) * 100 / 10 = 10 <= 10
        (20, 10, False, 2),
        (19, 10, False, 1),  # 2 * 100 / 19 = 10.5 > 10
        (2, 10, True, 1),  # 50% of a 2-host cluster: ejected once, as App Mesh promises
        (2, 10, False, 0),
        (2, 0, True, 1),
        (4, 50, True, 2),
        (3, 100, False, 3),
    ],
)
def test_max_ejection_percent_cap(hosts: int, max_percent: int, always_one: bool, ejections: int) -> None:
    d = detector(hosts, max_ejection_percent=max_percent, always_eject_one_host=always_one)
    decisions = [x for i in range(hosts) for x in d.on_consecutive(f"h{i}", C5XX, now=1.0)]
    assert len(decisions) == ejections == len(d.ejected())
    stats = d.stats()
    assert stats["ejections_active"] == ejections
    assert stats["ejections_overflow"] == hosts - ejections
    assert stats["ejections_detected_consecutive_5xx"] == hosts


def test_appmesh_two_host_cluster_ejects_one_host() -> None:
    p = OutlierPolicy.from_appmesh({**APPMESH_OD, "maxEjectionPercent": 10})
    d: OutlierDetector[str] = OutlierDetector(p, random.Random(0))
    d.set_hosts(["a", "b"])
    assert d.on_consecutive("a", C5XX, 0.0) == [Eject("a", R.CONSECUTIVE_5XX, 30.0)]
    assert d.on_consecutive("b", C5XX, 0.0) == []
    assert d.stats()["ejections_overflow"] == 1


def test_gateway_failures_are_detected_but_not_enforced_by_default() -> None:
    d = detector(10)
    assert d.on_consecutive("h0", GW, 0.0) == []
    stats = d.stats()
    assert stats["ejections_detected_consecutive_gateway_failure"] == 1
    assert stats["ejections_enforced_consecutive_gateway_failure"] == 0
    assert stats["ejections_overflow"] == 0 and not d.state("h0").ejected


@pytest.mark.parametrize(("draw", "enforced"), [(0, True), (49, True), (50, False), (149, True), (199, False)])
def test_enforcement_roll_is_random_mod_100_below_percent(draw: int, enforced: bool) -> None:
    d = detector(10, FixedRandom(draw), enforcing_consecutive_gateway_failure=50)
    assert bool(d.on_consecutive("h0", GW, 0.0)) is enforced
    assert d.stats()["ejections_enforced_total"] == int(enforced)


def test_overflow_is_counted_before_the_enforcement_roll() -> None:
    d = detector(10, FixedRandom(99), enforcing_consecutive_5xx=50)
    d.on_consecutive("h0", C5XX, 0.0)  # roll 99: not enforced, nothing ejected
    assert d.stats()["ejections_overflow"] == 0 and d.ejected() == []


def test_jitter_is_rand_mod_jitter_ms_plus_one() -> None:
    d = detector(10, FixedRandom(1234), max_ejection_time_jitter=5.0)
    [eject] = d.on_consecutive("h0", C5XX, 10.0)
    assert isinstance(eject, Eject) and eject.until == 10.0 + 30.0 + 1.234
    d2 = detector(10, FixedRandom(5001 + 7), max_ejection_time_jitter=5.0)
    [eject2] = d2.on_consecutive("h0", C5XX, 10.0)
    assert isinstance(eject2, Eject) and eject2.until == 40.007


def test_local_origin_events_only_count_in_split_mode() -> None:
    assert detector(10).on_consecutive("h0", LOCAL, 0.0) == []
    d = detector(10, split_external_local_origin_errors=True)
    assert d.on_consecutive("h0", LOCAL, 0.0) == [Eject("h0", R.CONSECUTIVE_LOCAL_ORIGIN_FAILURE, 30.0)]


def test_unknown_event_kind_and_unknown_host() -> None:
    d = detector(10)
    with pytest.raises(PolicyError) as err:
        d.on_consecutive("h0", "success_rate", 0.0)
    assert err.value.code == "unknown_event"
    with pytest.raises(PolicyError):
        d.on_consecutive("h0", "5xx", 0.0)
    assert d.on_consecutive("nope", C5XX, 0.0) == []


# --- unejection, backoff and decay ----------------------------------------------------------


def _sweeps_until_uneject(d: OutlierDetector[str], key: str, now: float, interval: float) -> float:
    for _ in range(10_000):
        now += interval
        if Uneject(key) in d.on_interval({}, now):
            return now
    raise AssertionError(f"{key} was not unejected within 10,000 sweeps")


def test_uneject_happens_at_the_first_sweep_at_or_after_the_ejection_time() -> None:
    d = detector(10)
    d.on_consecutive("h0", C5XX, 3.0)  # until 33
    assert d.on_interval({}, 10.0) == []
    assert d.on_interval({}, 30.0) == []
    assert d.on_interval({}, 33.0) == [Uneject("h0")]  # boundary: <= counts
    s = d.state("h0")
    assert not s.ejected and s.last_unejection == 33.0 and s.ejected_until is None
    assert d.stats()["ejections_active"] == 0


def test_flapping_host_ejection_lengths_grow_by_base_up_to_max() -> None:
    # envoy-semantics §2: 30, 60, 90, ..., 300 s, then stays at 300.
    d = detector(10)
    now, lengths = 0.0, []
    for _ in range(13):
        [eject] = d.on_consecutive("h0", C5XX, now)
        assert isinstance(eject, Eject)
        lengths.append(eject.until - now)
        now = _sweeps_until_uneject(d, "h0", now, 10.0)
    assert lengths == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300]
    assert d.state("h0").backoff == 11  # max / base + 1: stops growing
    assert d.state("h0").num_ejections == 13


def test_backoff_decays_one_step_per_good_interval_back_to_base() -> None:
    d = detector(10)
    now = 0.0
    for _ in range(12):
        d.on_consecutive("h0", C5XX, now)
        now = _sweeps_until_uneject(d, "h0", now, 10.0)
    assert d.state("h0").backoff == 11
    backoffs = []
    for _ in range(12):
        now += 10.0
        d.on_interval({}, now)
        backoffs.append(d.state("h0").backoff)
    assert backoffs == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    [eject] = d.on_consecutive("h0", C5XX, now)
    assert isinstance(eject, Eject) and eject.until - now == 30.0


def test_no_decay_at_the_sweep_that_unejects() -> None:
    d = detector(10)
    d.on_consecutive("h0", C5XX, 0.0)
    d.on_consecutive("h0", C5XX, 0.0)  # ignored: already ejected
    d.on_interval({}, 30.0)
    assert d.state("h0").backoff == 1  # now - last_unejection = 0 < interval
    d.on_interval({}, 35.0)
    assert d.state("h0").backoff == 1  # 5 s < interval
    d.on_interval({}, 40.0)
    assert d.state("h0").backoff == 0


def test_max_ejection_time_caps_non_multiples_of_base() -> None:
    d = detector(10, base_ejection_time=40.0, max_ejection_time=100.0)
    now, lengths = 0.0, []
    for _ in range(5):
        [eject] = d.on_consecutive("h0", C5XX, now)
        assert isinstance(eject, Eject)
        lengths.append(eject.until - now)
        now = _sweeps_until_uneject(d, "h0", now, 10.0)
    assert lengths == [40, 80, 100, 100, 100]
    assert d.state("h0").backoff == 4  # 3 * 40 < 140, 4 * 40 >= 140


def test_active_health_success_unejects_immediately() -> None:
    d = detector(10)
    d.on_consecutive("h0", C5XX, 0.0)
    assert d.on_active_health_success("h1", 1.0) == []  # not ejected
    assert d.on_active_health_success("h0", 2.0) == [Uneject("h0")]
    assert d.state("h0").last_unejection == 2.0 and d.stats()["ejections_active"] == 0
    assert d.on_interval({}, 40.0) == []  # nothing left to uneject


def test_active_health_success_uneject_can_be_disabled() -> None:
    d = detector(10, successful_active_health_check_uneject_host=False)
    d.on_consecutive("h0", C5XX, 0.0)
    assert d.on_active_health_success("h0", 2.0) == []


def test_removing_an_ejected_host_frees_its_slot() -> None:
    d = detector(10)
    d.on_consecutive("h0", C5XX, 0.0)
    d.set_hosts([f"h{i}" for i in range(1, 11)])
    assert d.stats()["ejections_active"] == 0
    assert d.on_consecutive("h1", C5XX, 0.0) != []


# --- success rate and failure percentage ----------------------------------------------------


def test_success_rate_ejects_the_one_outlier_of_five() -> None:
    # rates 100, 100, 100, 100, 50: mean 90, population stdev 20, threshold 90 - 1.9 * 20 = 52.
    d = detector(5, max_ejection_percent=20)
    samples = {f"h{i}": Sample(100, 100) for i in range(4)} | {"h4": Sample(50, 100)}
    assert d.on_interval(samples, 10.0) == [Eject("h4", R.SUCCESS_RATE, 40.0)]
    assert d.success_rate_summary()["success_rate_average"] == 90.0
    assert d.success_rate_summary()["success_rate_ejection_threshold"] == pytest.approx(52.0)
    assert d.state("h0").success_rate == 100.0 and d.state("h4").success_rate == 50.0
    assert d.stats()["ejections_detected_success_rate"] == 1


def test_success_rate_threshold_is_strict() -> None:
    # Identical rates: stdev 0, threshold == mean, and nobody is strictly below it.
    d = detector(5, max_ejection_percent=100)
    assert d.on_interval({f"h{i}": Sample(90, 100) for i in range(5)}, 10.0) == []
    # rates 100 x4, 52.5: mean 90.5, stdev 19, threshold 90.5 - 36.1 = 54.4 > 52.5: ejected;
    # with stdev factor 2.5 the threshold drops below 52.5 and nobody is.
    samples = {f"h{i}": Sample(200, 200) for i in range(4)} | {"h4": Sample(105, 200)}
    assert [x.key for x in detector(5, max_ejection_percent=100).on_interval(samples, 1.0)] == ["h4"]
    assert detector(5, max_ejection_percent=100, success_rate_stdev_factor=2500).on_interval(samples, 1.0) == []


@pytest.mark.parametrize(
    ("samples", "why"),
    [
        ({f"h{i}": Sample(100, 100) for i in range(3)} | {"h3": Sample(0, 100)}, "4 valid hosts < 5"),
        ({f"h{i}": Sample(100, 100) for i in range(4)} | {"h4": Sample(0, 99)}, "outlier volume < 100"),
        ({f"h{i}": Sample(100, 100) for i in range(4)}, "host missing from samples"),
    ],
)
def test_success_rate_needs_minimum_hosts_and_volume(samples: dict[str, Sample], why: str) -> None:
    d = detector(5, max_ejection_percent=100)
    assert d.on_interval(samples, 10.0) == [], why
    assert d.success_rate_summary()["success_rate_average"] == -1.0


def test_success_rate_skips_ejected_hosts() -> None:
    d = detector(6, max_ejection_percent=100)
    d.on_consecutive("h5", C5XX, 0.0)
    samples = {f"h{i}": Sample(100, 100) for i in range(4)} | {"h4": Sample(0, 100), "h5": Sample(0, 100)}
    assert d.on_interval(samples, 10.0) == [Eject("h4", R.SUCCESS_RATE, 40.0)]


def test_success_rate_detected_but_not_enforced_for_appmesh_policies() -> None:
    p = OutlierPolicy.from_appmesh({**APPMESH_OD, "maxEjectionPercent": 100})
    d: OutlierDetector[str] = OutlierDetector(p, random.Random(0))
    d.set_hosts(f"h{i}" for i in range(5))
    samples = {f"h{i}": Sample(100, 100) for i in range(4)} | {"h4": Sample(50, 100)}
    assert d.on_interval(samples, 10.0) == []
    assert d.stats()["ejections_detected_success_rate"] == 1
    assert d.stats()["ejections_enforced_success_rate"] == 0


@pytest.mark.parametrize(("failures", "ejected"), [(85, True), (84, False), (100, True)])
def test_failure_percentage(failures: int, ejected: bool) -> None:
    d = detector(5, max_ejection_percent=100, enforcing_failure_percentage=100, enforcing_success_rate=0)
    samples = {f"h{i}": Sample(50, 50) for i in range(4)} | {"h4": Sample(100 - failures, 100)}
    decisions = d.on_interval(samples, 10.0)
    assert (Eject("h4", R.FAILURE_PERCENTAGE, 40.0) in decisions) is ejected
    assert d.stats()["ejections_detected_failure_percentage"] == int(ejected)


def test_failure_percentage_does_not_re_eject_a_success_rate_ejection() -> None:
    d = detector(5, max_ejection_percent=100, enforcing_failure_percentage=100)
    samples = {f"h{i}": Sample(100, 100) for i in range(4)} | {"h4": Sample(0, 100)}
    assert d.on_interval(samples, 10.0) == [Eject("h4", R.SUCCESS_RATE, 40.0)]
    assert d.stats()["ejections_detected_failure_percentage"] == 0


def test_local_origin_success_rate_in_split_mode() -> None:
    d = detector(5, max_ejection_percent=100, split_external_local_origin_errors=True)
    samples = {f"h{i}": Sample(100, 100, 100, 100) for i in range(4)} | {"h4": Sample(100, 100, 10, 100)}
    assert d.on_interval(samples, 10.0) == [Eject("h4", R.LOCAL_ORIGIN_SUCCESS_RATE, 40.0)]
    assert d.state("h4").local_origin_success_rate == 10.0
    # Without split mode the local-origin pair is not looked at.
    assert detector(5, max_ejection_percent=100).on_interval(samples, 10.0) == []


def test_sweep_unejects_before_it_ejects_and_respects_the_cap() -> None:
    d = detector(10, max_ejection_percent=10)
    d.on_consecutive("h9", C5XX, 0.0)
    samples = {f"h{i}": Sample(100, 100) for i in range(8)} | {"h8": Sample(0, 100)}
    # The freed slot lets the success-rate ejection through in the same sweep.
    assert d.on_interval(samples, 30.0) == [Uneject("h9"), Eject("h8", R.SUCCESS_RATE, 60.0)]


def test_sample_validation() -> None:
    with pytest.raises(PolicyError):
        Sample(5, 4)
    with pytest.raises(PolicyError):
        Sample(0, 0, -1, 0)


def test_stats_use_envoys_names() -> None:
    reasons = ["consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
               "success_rate", "local_origin_success_rate", "failure_percentage",
               "local_origin_failure_percentage"]
    expected = {"ejections_active", "ejections_overflow", "ejections_enforced_total"}
    expected |= {f"ejections_{kind}_{r}" for kind in ("enforced", "detected") for r in reasons}
    assert set(detector(3).stats()) == expected
