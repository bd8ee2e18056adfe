"""`OutlierEjections` without sockets: a fake core records decisions; time is a fake clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
