"""meshplane.policy.health against envoy-semantics §3 and appmesh §3.1/§5, example by example."""

from __future__ import annotations

import random

import pytest
from meshplane.policy import (
    HealthChecker,
    HealthCheckPolicy,
    HealthState,
    HostHealth,
    PolicyError,
    ProbeResult,
    Transition,
    classify_grpc_health,
    classify_http_status,
)

OK = ProbeResult.SUCCESS
ACTIVE = ProbeResult.ACTIVE_FAILURE
NET = ProbeResult.NETWORK_FAILURE
TIMEOUT = ProbeResult.TIMEOUT
H, U, X = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN

# appmesh §7.2, the listener's healthCheck.
APPMESH_HC = {"protocol": "http", "path": "/ping", "port": 8080, "intervalMillis": 5000,
              "timeoutMillis": 2000, "healthyThreshold": 2, "unhealthyThreshold": 3}


def policy(**kw: object) -> HealthCheckPolicy:
    base: dict[str, object] = {"protocol": "http", "interval": 5.0, "timeout": 2.0,
                               "healthy_threshold": 2, "unhealthy_threshold": 3}
    base.update(kw)
    return HealthCheckPolicy(**base)  # type: ignore[arg-type]


class FixedRandom(random.Random):
    """Every draw returns `value`, so jitter arithmetic can be checked exactly."""

    def __init__(self, value: int) -> None:
        super().__init__(0)
        self.value = value

    def getrandbits(self, k: int) -> int:
        return self.value


# --- policy -----------------------------------------------------------------------------------


def test_from_appmesh_maps_every_field() -> None:
    p = HealthCheckPolicy.from_appmesh(APPMESH_HC)
    assert (p.protocol, p.interval, p.timeout) == ("http", 5.0, 2.0)
    assert (p.healthy_threshold, p.unhealthy_threshold, p.path, p.port) == (2, 3, "/ping", 8080)


def test_defaults_only_200_is_healthy_and_jitter_is_on() -> None:
    p = HealthCheckPolicy.from_appmesh({k: v for k, v in APPMESH_HC.items() if k not in ("path", "port")})
    assert p.expected_statuses == ((200, 201),)
    assert p.interval_jitter_percent == 10 and p.interval_jitter == 0.0
    assert p.initial_jitter is None  # one interval
    assert p.path == "/" and p.port is None


def test_from_appmesh_extension_keys() -> None:
    p = HealthCheckPolicy.from_appmesh(APPMESH_HC, {
        "intervalJitterPercent": 0, "intervalJitterMillis": 250, "initialJitterMillis": 0,
        "unhealthyIntervalMillis": 10000, "unhealthyEdgeIntervalMillis": 1000,
        "healthyEdgeIntervalMillis": 2000, "expectedStatuses": [200, {"start": 204, "end": 205}],
    })
    assert (p.interval_jitter_percent, p.interval_jitter, p.initial_jitter) == (0, 0.25, 0.0)
    assert (p.unhealthy_interval, p.unhealthy_edge_interval, p.healthy_edge_interval) == (10.0, 1.0, 2.0)
    assert p.expected_statuses == ((200, 201), (204, 205))


@pytest.mark.parametrize(
    ("hc", "extension", "code", "field"),
    [
        ({k: v for k, v in APPMESH_HC.items() if k != "intervalMillis"}, None, "missing_field",
         "healthCheck.intervalMillis"),
        ({**APPMESH_HC, "healthyThreshold": True}, None, "invalid_type", "healthCheck.healthyThreshold"),
        ({**APPMESH_HC, "protocol": "udp"}, None, "out_of_range", "healthCheck.protocol"),
        ({**APPMESH_HC, "intervalMs": 5}, None, "unknown_key", "healthCheck.intervalMs"),
        (APPMESH_HC, {"jitter": 5}, "unknown_key", "extension.jitter"),
        (APPMESH_HC, {"expectedStatuses": [{"start": 200}]}, "missing_field",
         "extension.expectedStatuses[0].end"),
        (APPMESH_HC, {"expectedStatuses": [700]}, "out_of_range", "expected_statuses"),
        ({**APPMESH_HC, "intervalMillis": 0}, None, "out_of_range", "interval"),
    ],
)
def test_from_appmesh_rejects_bad_input_with_a_code(
    hc: dict[str, object], extension: dict[str, object] | None, code: str, field: str
) -> None:
    with pytest.raises(PolicyError) as err:
        HealthCheckPolicy.from_appmesh(hc, extension)
    assert (err.value.code, err.value.field) == (code, field)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"protocol": "udp"}, "protocol"),
        ({"interval": 0.0}, "interval"),
        ({"timeout": -1.0}, "timeout"),
        ({"healthy_threshold": 0}, "healthy_threshold"),
        ({"unhealthy_threshold": 0}, "unhealthy_threshold"),
        ({"interval_jitter_percent": -1}, "interval_jitter_percent"),
        ({"port": 70000}, "port"),
        ({"initial_jitter": -0.5}, "initial_jitter"),
        ({"unhealthy_edge_interval": 0.0}, "unhealthy_edge_interval"),
        ({"expected_statuses": ()}, "expected_statuses"),
        ({"expected_statuses": ((300, 200),)}, "expected_statuses"),
    ],
)
def test_policy_validation(kw: dict[str, object], field: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy(**kw)
    assert err.value.field == field and err.value.code == "out_of_range"


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected", "result"),
    [
        (200, ((200, 201),), OK),
        (201, ((200, 201),), ACTIVE),  # App Mesh §5: only 200 counts, not 2xx
        (204, ((200, 201),), ACTIVE),
        (503, ((200, 201),), ACTIVE),
        (204, ((200, 300),), OK),
        (300, ((200, 300),), ACTIVE),  # half-open
        (404, ((200, 201), (404, 405)), OK),
    ],
)
def test_classify_http_status(status: int, expected: tuple[tuple[int, int], ...], result: ProbeResult) -> None:
    assert classify_http_status(status, expected) is result


def test_classify_http_status_default_is_200_only() -> None:
    assert classify_http_status(200) is OK
    assert classify_http_status(299) is ACTIVE


@pytest.mark.parametrize(
    ("grpc_status", "serving", "result"),
    [
        (0, 1, OK),
        (0, "SERVING", OK),
        (0, 2, ACTIVE),  # NOT_SERVING
        (0, "NOT_SERVING", ACTIVE),
        (0, 3, ACTIVE),  # SERVICE_UNKNOWN
        (0, 0, ACTIVE),  # UNKNOWN
        (0, None, ACTIVE),  # no response message
        (14, 1, ACTIVE),  # UNAVAILABLE with a SERVING body still fails
        (12, None, ACTIVE),  # UNIMPLEMENTED: server has no health service
    ],
)
def test_classify_grpc_health(grpc_status: int, serving: int | str | None, result: ProbeResult) -> None:
    assert classify_grpc_health(grpc_status, serving) is result


# --- the state machine ----------------------------------------------------------------------

# (results fed in order, state after each result), healthy_threshold=2, unhealthy_threshold=3.
SEQUENCES = {
    "first check success is healthy at once": ([OK], [H]),
    "first check failure needs healthy_threshold": ([NET, OK, OK], [U, U, H]),
    "first check active failure, then recovery": ([ACTIVE, OK, OK, OK], [U, U, H, H]),
    "active failure marks unhealthy immediately": ([OK, ACTIVE], [H, U]),
    "grpc not serving / unexpected status is active": ([OK, OK, ACTIVE, OK, OK], [H, H, U, U, H]),
    "network failures need unhealthy_threshold": ([OK, NET, NET, NET], [H, H, H, U]),
    "timeouts need unhealthy_threshold": ([OK, TIMEOUT, TIMEOUT, TIMEOUT], [H, H, H, U]),
    "mixed network and timeout count together": ([OK, NET, TIMEOUT, NET], [H, H, H, U]),
    "a success resets the unhealthy count": ([OK, NET, NET, OK, NET, NET], [H, H, H, H, H, H]),
    "active failure short-circuits pending network": ([OK, NET, NET, ACTIVE], [H, H, H, U]),
    "a failure resets the healthy count": ([ACTIVE, OK, NET, OK, OK], [U, U, U, U, H]),
    "failures while unhealthy change nothing": ([NET, NET, NET, NET], [U, U, U, U]),
}


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_state_machine_sequences(name: str) -> None:
    results, states = SEQUENCES[name]
    host = HostHealth(policy())
    assert host.state is X and host.failed_active_hc
    for i, (result, state) in enumerate(zip(results, states, strict=True)):
        host.on_result(result, float(i))
        assert host.state is state, f"after result {i} ({result})"
    assert host.failed_active_hc == (host.state is not H)


def test_transitions_report_what_changed_and_when() -> None:
    host = HostHealth(policy())
    first = host.on_result(NET, 1.0)
    assert first == Transition(X, U, 1.0, first_check=True)
    assert first.became_unhealthy and not first.became_healthy
    assert host.on_result(OK, 2.0) is None  # pending: 1 of 2
    assert host.change_pending and host.num_healthy == 1
    back = host.on_result(OK, 3.0)
    assert back == Transition(U, H, 3.0, first_check=False) and back.became_healthy
    assert not host.change_pending and host.last_change == 3.0
    assert host.on_result(NET, 4.0) is None and host.change_pending and host.num_unhealthy == 1
    assert host.on_result(OK, 5.0) is None and not host.change_pending and host.num_unhealthy == 0
    assert host.last_change == 3.0 and host.last_check == 5.0 and host.last_result is OK


def test_first_success_does_not_count_toward_the_threshold() -> None:
    # Envoy's `first_check_ || ++num_healthy_ == threshold` short-circuits the increment.
    host = HostHealth(policy(healthy_threshold=5))
    t = host.on_result(OK, 0.0)
    assert t is not None and t.first_check and t.became_healthy
    assert host.num_healthy == 0


def test_timeout_flag_is_set_while_failed_and_cleared_on_recovery() -> None:
    host = HostHealth(policy(unhealthy_threshold=2, healthy_threshold=1))
    host.on_result(OK, 0.0)
    host.on_result(TIMEOUT, 1.0)
    assert not host.active_hc_timeout and host.flags() == "healthy"
    host.on_result(TIMEOUT, 2.0)
    assert host.active_hc_timeout and host.flags() == "/failed_active_hc/active_hc_timeout"
    host.on_result(OK, 3.0)
    assert not host.active_hc_timeout and host.flags() == "healthy"


# --- next interval and jitter ---------------------------------------------------------------


EDGE = policy(interval=5.0, unhealthy_interval=20.0, unhealthy_edge_interval=1.0,
              healthy_edge_interval=2.0, interval_jitter_percent=0, healthy_threshold=3,
              unhealthy_threshold=3)


@pytest.mark.parametrize(
    ("results", "delay"),
    [
        ([OK], 5.0),  # healthy, settled: interval
        ([OK, NET], 1.0),  # change to unhealthy pending: unhealthy_edge_interval
        ([OK, NET, NET, NET], 20.0),  # now unhealthy, settled: unhealthy_interval
        ([NET, OK], 2.0),  # change to healthy pending: healthy_edge_interval
        ([NET, OK, NET], 20.0),  # failure while unhealthy: no change pending
        ([NET, OK, OK, OK], 5.0),
    ],
)
def test_next_interval_uses_edge_intervals(results: list[ProbeResult], delay: float) -> None:
    host = HostHealth(EDGE)
    for i, r in enumerate(results):
        host.on_result(r, float(i))
    assert host.next_delay(random.Random(0)) == delay


def test_edge_intervals_default_to_interval_and_unhealthy_interval() -> None:
    p = policy(interval=5.0, unhealthy_interval=7.0, interval_jitter_percent=0)
    assert [p.base_interval(ok, pending) for ok in (True, False) for pending in (False, True)] == [
        5.0, 5.0, 7.0, 7.0]
    assert policy(interval=3.0).base_interval(False, True) == 3.0


@pytest.mark.parametrize(
    ("draw", "delay"),
    [(0, 5.0), (499, 5.499), (500, 5.0), (1234, 5.234)],  # rand % (10% of 5000 ms)
)
def test_interval_jitter_percent_is_rand_mod_percent_of_interval(draw: int, delay: float) -> None:
    host = HostHealth(policy(interval=5.0, interval_jitter_percent=10))
    host.on_result(OK, 0.0)
    assert host.next_delay(FixedRandom(draw)) == delay


def test_absolute_and_percent_jitter_both_apply() -> None:
    host = HostHealth(policy(interval=5.0, interval_jitter_percent=10, interval_jitter=0.3))
    host.on_result(OK, 0.0)
    assert host.next_delay(FixedRandom(450)) == (5000 + 450 + 150) / 1000


@pytest.mark.parametrize("seed", range(20))
def test_jitter_bounds(seed: int) -> None:
    rng = random.Random(seed)
    host = HostHealth(policy(interval=5.0, interval_jitter_percent=10))
    first = host.next_delay(rng)
    assert 0.0 <= first < 5.0  # initial jitter defaults to one interval
    host.on_result(OK, 0.0)
    for _ in range(200):
        assert 5.0 <= host.next_delay(rng) < 5.5


def test_initial_jitter_zero_probes_at_once_and_delay_never_below_1ms() -> None:
    host = HostHealth(policy(initial_jitter=0.0, interval=0.0004, interval_jitter_percent=0))
    assert host.next_delay(random.Random(1)) == 0.0
    host.on_result(OK, 0.0)
    assert host.next_delay(random.Random(1)) == 0.001


# --- many hosts -----------------------------------------------------------------------------


def test_checker_schedules_first_probes_within_initial_jitter() -> None:
    checker: HealthChecker[str] = HealthChecker(policy(interval=5.0), random.Random(7))
    checker.set_hosts(["a", "b", "c"], now=100.0)
    snap = checker.snapshot()
    assert all(100.0 <= s["next_check"] < 105.0 for s in snap.values())
    assert all(checker.healthy(k) is None for k in "abc")
    assert checker.due(99.9) == []
    assert sorted(checker.due(105.0)) == ["a", "b", "c"]
    assert checker.due(1000.0) == []  # in flight until recorded
    assert checker.next_due() is None


def test_checker_records_transitions_and_reschedules() -> None:
    checker: HealthChecker[str] = HealthChecker(policy(interval=5.0, interval_jitter_percent=0,
                                                       initial_jitter=0.0), random.Random(1))
    checker.set_hosts(["a", "b"], now=0.0)
    assert checker.due(0.0) == ["a", "b"]
    t = checker.record("a", OK, 0.5)
    assert t is not None and t.became_healthy and checker.healthy("a") is True
    t = checker.record("b", ACTIVE, 0.6)
    assert t is not None and t.became_unhealthy and checker.healthy("b") is False
    assert checker.next_due() == 5.5
    assert checker.due(5.55) == ["a"]
    assert checker.due(5.6) == ["b"]
    snap = checker.snapshot()
    assert snap["a"] == {
        "state": "healthy", "health_flags": "healthy", "last_result": "success",
        "last_check": 0.5, "last_change": 0.5, "num_healthy": 0, "num_unhealthy": 0,
        "change_pending": False, "next_check": None,
    }
    assert snap["b"]["state"] == "unhealthy" and snap["b"]["health_flags"] == "/failed_active_hc"


def test_count_healthy_counts_what_the_snapshot_shows() -> None:
    checker: HealthChecker[str] = HealthChecker(policy(interval=5.0, interval_jitter_percent=0,
                                                       initial_jitter=0.0), random.Random(1))
    checker.set_hosts(["a", "b", "c", "d"], now=0.0)

    def counted() -> int:
        return sum(1 for h in checker.snapshot().values() if h["state"] == "healthy")

    assert checker.count_healthy() == counted() == 0  # all unknown
    checker.record("a", OK, 0.5)
    checker.record("b", OK, 0.5)
    checker.record("c", ACTIVE, 0.5)
    assert checker.count_healthy() == counted() == 2
    checker.set_hosts(["b", "c", "d"], now=1.0)  # a healthy host goes
    assert checker.count_healthy() == counted() == 1


def test_snapshot_of_some_keys_skips_those_no_longer_hosts() -> None:
    checker: HealthChecker[str] = HealthChecker(policy(initial_jitter=0.0), random.Random(1))
    checker.set_hosts(["a", "b", "c"], now=0.0)
    checker.record("b", OK, 0.5)
    whole = checker.snapshot()
    assert checker.keys() == ["a", "b", "c"]
    assert checker.snapshot(["c", "b"]) == {"c": whole["c"], "b": whole["b"]}
    assert checker.snapshot(["gone", "a"]) == {"a": whole["a"]}
    assert checker.snapshot([]) == {}


def test_checker_set_hosts_adds_and_forgets() -> None:
    checker: HealthChecker[str] = HealthChecker(policy(initial_jitter=0.0), random.Random(1))
    checker.set_hosts(["a", "b"], now=0.0)
    checker.record("a", OK, 0.0)
    checker.set_hosts(["b", "c"], now=1.0)
    assert "a" not in checker and len(checker) == 2
    assert checker.record("a", OK, 2.0) is None  # late result for a removed host
    with pytest.raises(KeyError):
        checker.healthy("a")
    assert checker.due(1.0) == ["b", "c"]
    checker.set_hosts(["a", "b", "c"], now=3.0)
    assert checker.healthy("a") is None  # a returning host starts over, unknown


def test_checker_scales_to_5000_hosts_at_1s() -> None:
    n = 5000
    checker: HealthChecker[int] = HealthChecker(policy(interval=1.0, timeout=0.5), random.Random(3))
    checker.set_hosts(range(n), now=0.0)
    probes = [0] * n
    t = 0.0
    while t <= 10.0:
        for key in checker.due(t):
            probes[key] += 1
            checker.record(key, OK, t)
        t = round(t + 0.01, 2)
    # first probe in [0, 1), then every [1, 1.1) s: between 9 and 11 probes in 10 s.
    assert min(probes) >= 9 and max(probes) <= 11
    # Stale entries are compacted: the heap stays proportional to the host count.
    assert len(checker._heap) <= 2 * n + 64
    assert all(checker.healthy(k) for k in range(0, n, 97))


# --- the compact per-host view ----------------------------------------------------------------


def test_pack_says_what_snapshot_says_with_no_object_per_host() -> None:
    """Five numbers per key: state and last result (indexes into VIEW_NAMES), the consecutive
    counters, the active_hc_timeout flag; a key that is not a host is marked absent."""
    from array import array

    from meshplane.policy.health import VIEW_ABSENT, VIEW_NAMES

    checker: HealthChecker[str] = HealthChecker(policy(initial_jitter=0.0), random.Random(3))
    keys = [f"10.0.0.{i}:80" for i in range(6)]
    checker.set_hosts(keys, 0.0)
    script = {keys[1]: [OK], keys[2]: [OK, NET], keys[3]: [TIMEOUT], keys[4]: [ACTIVE, OK],
              keys[5]: [OK, TIMEOUT, TIMEOUT, TIMEOUT]}
    for key, results in script.items():
        for t, result in enumerate(results):
            checker.record(key, result, float(t))
    out: array[int] = array("Q")
    checker.pack([*keys, "10.9.9.9:1"], out)
    records = [out[i : i + 5] for i in range(0, len(out), 5)]
    assert records[-1].tolist() == [VIEW_ABSENT, 0, 0, 0, 0]
    snapshot = checker.snapshot()
    for key, record in zip(keys, records, strict=False):
        want = snapshot[key]
        state, result, healthy, unhealthy, timeout = record
        assert (VIEW_NAMES[state], VIEW_NAMES[result]) == (want["state"], want["last_result"])
        assert (healthy, unhealthy) == (want["num_healthy"], want["num_unhealthy"])
        assert bool(timeout) == ("active_hc_timeout" in want["health_flags"])
    assert {VIEW_NAMES[r[0]] for r in records[:-1]} == {"unknown", "healthy", "unhealthy"}
    assert any(r[4] for r in records)  # a timed-out unhealthy host


def test_view_is_kept_as_hosts_come_go_and_get_results() -> None:
    """`view()` is `pack` of its keys at every moment, with no work per read: the keys tuple
    stays the same object until hosts come or go; a removed host's place is taken by another;
    the records are the checker's own array, changed in place."""
    from array import array

    checker: HealthChecker[str] = HealthChecker(policy(initial_jitter=0.0), random.Random(5))
    assert checker.view() == ((), array("Q"))
    keys = [f"10.0.0.{i}:80" for i in range(5)]
    checker.set_hosts(keys, 0.0)

    def packed_now() -> array[int]:
        out: array[int] = array("Q")
        checker.pack(checker.view()[0], out)
        return out

    view_keys, records = checker.view()
    assert sorted(view_keys) == sorted(keys) and records == packed_now()
    checker.record(keys[1], OK, 1.0)
    checker.record(keys[3], TIMEOUT, 1.0)
    assert checker.view()[0] is view_keys  # results change records, not keys
    assert checker.view()[1] is records and records == packed_now()
    before = records.tolist()
    checker.record(keys[1], NET, 2.0)
    assert records.tolist() != before  # in place: a reader copies what it keeps
    checker.set_hosts([keys[0], keys[3], keys[4], "10.0.0.9:80"], 3.0)  # two gone, one new
    new_keys, records = checker.view()
    assert new_keys is not view_keys
    assert sorted(new_keys) == sorted([keys[0], keys[3], keys[4], "10.0.0.9:80"])
    assert records == packed_now()
    timed_out = new_keys.index(keys[3])
    assert records[5 * timed_out + 4] == 1  # keys[3]'s record moved with it
    checker.set_hosts([], 4.0)
    assert checker.view() == ((), array("Q"))


def test_due_with_a_limit_takes_the_earliest_and_leaves_the_rest_scheduled() -> None:
    checker: HealthChecker[str] = HealthChecker(policy(initial_jitter=1.0), random.Random(7))
    keys = [f"h{i}" for i in range(20)]
    checker.set_hosts(keys, now=0.0)
    scheduled = {k: v["next_check"] for k, v in checker.snapshot().items()}
    order = sorted(keys, key=lambda k: scheduled[k])
    first = checker.due(1.0, limit=8)
    assert first == order[:8]
    rest = checker.snapshot()
    assert all(rest[k]["next_check"] is None for k in first)  # in flight
    assert all(rest[k]["next_check"] == scheduled[k] for k in order[8:])  # due as before
    assert checker.next_due() == scheduled[order[8]]
    assert checker.due(1.0, limit=8) == order[8:16]
    assert checker.due(1.0) == order[16:]
    assert checker.due(1.0, limit=8) == []
