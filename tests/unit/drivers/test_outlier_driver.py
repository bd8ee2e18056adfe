"""`OutlierEjections` without sockets: a fake core records decisions; time is a fake clock."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
from meshplane.config.resilience import ResilienceTarget
from meshplane.drivers.outlier import OutlierEjections

HOSTS = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")


@dataclass(frozen=True)
class Outlier:
    """What the core's `OutlierEvent` carries (the `_bridge.OutlierEvent` protocol)."""

    cluster: str
    host: str
    type: str
    kind: str = "outlier"


class FakeCore:
    def __init__(self) -> None:
        self.ejected: dict[str, bool] = {}
        self.samples: dict[str, dict[str, list[int]]] = {}

    def set_host_ejected(self, cluster: str, address: str, ejected: bool) -> None:
        self.ejected[address] = ejected

    def take_outlier_samples(self) -> dict[str, dict[str, list[int]]]:
        out, self.samples = self.samples, {}
        return out


def target(name: str = "c", interval_s: int = 10, **ext: Any) -> ResilienceTarget:
    od = {"maxServerErrors": 5, "interval": {"unit": "s", "value": interval_s},
          "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 50}
    return ResilienceTarget(name, "n", 80, "http", HOSTS, "n", outlier_detection=od,
                            outlier_extension=ext)


def test_consecutive_event_ejects_and_the_sweep_returns_the_host() -> None:
    core, now = FakeCore(), [100.0]
    ejections = OutlierEjections(core, clock=lambda: now[0])
    ejections.retarget([target()])
    ejections.on_event(Outlier("c", HOSTS[0], "consecutive_5xx"))
    assert core.ejected == {HOSTS[0]: True}
    state = ejections.hosts()["c"][HOSTS[0]]
    assert state["reason"] == "consecutive_5xx" and state["ejected_for_s"] == 30.0
    now[0] = 125.0
    ejections.sweep()
    now[0] = 131.0
    ejections.sweep()
    assert core.ejected == {HOSTS[0]: False}
    assert ejections.stats()["c"]["ejections_enforced_consecutive_5xx"] == 1


def test_samples_are_kept_per_cluster_until_its_own_sweep() -> None:
    core, now = FakeCore(), [0.0]
    ejections = OutlierEjections(core, clock=lambda: now[0])
    ejections.retarget([target("fast", 1, enforcingFailurePercentage=100,
                               failurePercentageMinimumHosts=3, failurePercentageRequestVolume=10),
                        target("slow", 5, enforcingFailurePercentage=100,
                               failurePercentageMinimumHosts=3, failurePercentageRequestVolume=10)])
    for second in range(1, 6):
        # Each second the core reports 4 requests per host; HOSTS[0] of "slow" fails them all.
        core.samples = {
            "fast": {h: [4, 4, 0, 0] for h in HOSTS},
            "slow": {h: [0 if h == HOSTS[0] else 4, 4, 0, 0] for h in HOSTS},
        }
        now[0] = float(second)
        ejections.sweep()
        # Below the request volume (10) in any one second: only the 5 s sweep sees 20.
        assert core.ejected == ({HOSTS[0]: True} if second == 5 else {})


def test_active_health_success_unejects_and_retarget_releases() -> None:
    core = FakeCore()
    ejections = OutlierEjections(core, clock=lambda: 0.0)
    ejections.retarget([target()])
    ejections.on_event(Outlier("c", HOSTS[1], "consecutive_5xx"))
    ejections.on_active_health_success("c", HOSTS[1])
    assert core.ejected == {HOSTS[1]: False}
    ejections.on_event(Outlier("c", HOSTS[2], "consecutive_5xx"))
    ejections.retarget([])  # outlier detection removed: ejected hosts come back
    assert core.ejected[HOSTS[2]] is False and ejections.stats() == {}


class RefusingCore(FakeCore):
    """Refuses the first `refusals` verdicts, as a core with a bug would."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def set_host_ejected(self, cluster: str, address: str, ejected: bool) -> None:
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("the core refused")
        super().set_host_ejected(cluster, address, ejected)


async def test_an_exception_is_logged_at_error_counted_and_ejection_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # trio's own (mock) clock: the sweeper task sleeps on it, so the test can wait for it.
    core = RefusingCore(refusals=0)
    ejections = OutlierEjections(core)
    od = {"maxServerErrors": 5, "interval": {"unit": "s", "value": 10},
          "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 100}
    ejections.retarget([ResilienceTarget("c", "n", 80, "http", HOSTS, "n", outlier_detection=od)])
    detector = ejections._clusters["c"].detector
    decide = detector.on_consecutive

    def broken_once(*args: Any) -> Any:
        monkeypatch.setattr(detector, "on_consecutive", decide)
        raise ValueError("a bug in the detector")

    monkeypatch.setattr(detector, "on_consecutive", broken_once)
    send, receive = trio.open_memory_channel[Any](10)

    async def deliver(host: str) -> None:
        await send.send(Outlier("c", host, "consecutive_5xx"))
        await trio.testing.wait_all_tasks_blocked()

    with caplog.at_level(logging.DEBUG, logger="meshplane.outlier"):
        async with trio.open_nursery() as nursery:
            await nursery.start(ejections.run, receive)
            await deliver(HOSTS[0])  # the detector raises
            core.refusals = 1
            await deliver(HOSTS[1])  # the core refuses the ejection
            assert core.ejected == {} and ejections.errors == 2
            await deliver(HOSTS[2])
            await deliver(HOSTS[0])
            assert core.ejected == {HOSTS[2]: True, HOSTS[0]: True}
            nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[0] for r in errors if r.exc_info] == [ValueError, RuntimeError]
    assert "a bug in the detector" in errors[0].getMessage()
    assert f"set_host_ejected(c, {HOSTS[1]}, True)" in errors[1].getMessage()
    assert ejections.errors == 2


def test_a_failing_sweep_is_counted_and_retried_at_the_next_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    core, now = FakeCore(), [0.0]
    ejections = OutlierEjections(core, clock=lambda: now[0])
    ejections.retarget([target("c", 1)])
    cluster = ejections._clusters["c"]
    calls: list[float] = []

    def on_interval(samples: Any, at: float) -> list[Any]:
        calls.append(at)
        if len(calls) == 1:
            raise ValueError("a bug in the sweep")
        return []

    monkeypatch.setattr(cluster.detector, "on_interval", on_interval)
    with caplog.at_level(logging.ERROR, logger="meshplane.outlier"):
        now[0] = 1.0
        ejections.sweep()
        ejections.sweep()  # the same instant: not due again, the failure did not loop
        now[0] = 2.0
        ejections.sweep()
    assert calls == [1.0, 2.0] and ejections.errors == 1
    assert len(caplog.records) == 1 and "the sweep of cluster c" in caplog.records[0].getMessage()


def test_releasing_a_cluster_the_core_no_longer_has_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    core = RefusingCore(refusals=0)
    ejections = OutlierEjections(core, clock=lambda: 0.0)
    ejections.retarget([target()])
    ejections.on_event(Outlier("c", HOSTS[0], "consecutive_5xx"))
    assert core.ejected == {HOSTS[0]: True}
    core.refusals = 1  # the new snapshot has no cluster "c": the core refuses the return
    with caplog.at_level(logging.ERROR, logger="meshplane.outlier"):
        ejections.retarget([])
    assert ejections.errors == 0 and caplog.records == [] and ejections.stats() == {}


def test_sparse_view_is_hosts_with_the_clean_entry_shared() -> None:
    """`sparse()` says what `hosts()` says, with an entry only for hosts that are not as new
    (ejected once, backed off, or with a success rate this interval); the keys tuple is the
    same object until hosts come or go."""
    core, now = FakeCore(), [100.0]
    ejections = OutlierEjections(core, clock=lambda: now[0])
    ejections.retarget([target(), target("d", successRateMinimumHosts=2, successRateRequestVolume=5)])

    def expanded() -> dict[str, dict[str, dict[str, Any]]]:
        return {c: {k: entries.get(k, clean) for k in keys}
                for c, (keys, clean, entries) in ejections.sparse().items()}

    def settled(view: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
        # `ejected_until` is on the wall clock, which moves between two copies.
        return {c: {k: {f: v for f, v in h.items() if f != "ejected_until"} for k, h in hosts.items()}
                for c, hosts in view.items()}

    sparse = ejections.sparse()
    assert {c: entries for c, (_, _, entries) in sparse.items()} == {"c": {}, "d": {}}  # all as new
    assert settled(expanded()) == settled(ejections.hosts())
    ejections.on_event(Outlier("c", HOSTS[1], "consecutive_5xx"))
    core.samples = {"d": {HOSTS[0]: [5, 5, 0, 0], HOSTS[2]: [4, 5, 0, 0]}}
    now[0] = 111.0
    ejections.sweep()  # "d" gets success rates for two hosts
    sparse = ejections.sparse()
    assert set(sparse["c"][2]) == {HOSTS[1]} and set(sparse["d"][2]) == {HOSTS[0], HOSTS[2]}
    assert sparse["d"][2][HOSTS[2]]["success_rate"] == 80.0
    assert settled(expanded()) == settled(ejections.hosts())
    keys = sparse["c"][0]
    assert ejections.sparse()["c"][0] is keys  # no host came or went
    now[0] = 131.0
    ejections.sweep()  # HOSTS[1] returns (ejected before: not as new); "d"'s rates are cleared
    sparse = ejections.sparse()
    assert core.ejected == {HOSTS[1]: False}
    assert set(sparse["c"][2]) == {HOSTS[1]} and sparse["c"][2][HOSTS[1]]["num_ejections"] == 1
    assert sparse["d"][2] == {}
    assert settled(expanded()) == settled(ejections.hosts())
    ejections.set_endpoints("c", [HOSTS[0], HOSTS[2], "10.0.0.9:80"])  # HOSTS[1] goes
    sparse = ejections.sparse()
    assert sparse["c"][0] is not keys and set(sparse["c"][0]) == {HOSTS[0], HOSTS[2], "10.0.0.9:80"}
    assert sparse["c"][2] == {}
    assert settled(expanded()) == settled(ejections.hosts())
