"""Outlier detection in Trio: ejects hosts the moment the core reports a consecutive-failure
run, sweeps every interval for success-rate / failure-percentage outliers and for ejections
whose time is up, and tells the core each decision (`set_host_ejected`).

`OutlierEjections` owns one `OutlierDetector` (sans-I/O, `meshplane.policy.outlier`) per
cluster whose node listener has `outlierDetection`. Its `run` task has two parts:

- events: the core pushes an OutlierEvent (cluster, host, type) through the wake-up bridge when a
  counter reaches its threshold; `on_consecutive` decides at once, so a consecutive-5xx
  ejection lands within milliseconds of the failing response, not at the next sweep;
- sweeps: per cluster every `policy.interval`, `core.take_outlier_samples()` (which resets
  the core's interval counters of every cluster, so samples are accumulated here per cluster
  until that cluster's own sweep) -> `on_interval` -> unejections and statistical ejections.

`retarget(targets)` / `set_endpoints(cluster, keys)` may be called at any time. A cluster
whose policy changes, or that loses outlier detection, has its ejected hosts returned first.
`hosts()` (or `sparse()`, without a dict per host) and `stats()` feed the admin API.

An exception while handling an event, sweeping a cluster or telling the core is logged at
error level and counted in `errors` (the admin API's `control.driver_errors`), and the driver
goes on: one failure must not silently end ejection for every cluster. Imports trio,
`meshplane.config` types and `meshplane._bridge`; `meshplane.policy` with the first cluster
that has outlier detection (as `drivers.health` does: a proxy without either never loads it).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from meshplane._bridge import Event, OutlierEvent, TaskStatus
from meshplane.config.resilience import ResilienceTarget

if TYPE_CHECKING:
    from meshplane.policy import (
        Decision,
        EjectionState,
        OutlierDetector,
        OutlierPolicy,
        Sample,
    )

__all__ = ["ClusterOutliers", "OutlierCore", "OutlierEjections", "SparseHosts"]

log = logging.getLogger("meshplane.outlier")

SparseHosts = tuple[Sequence[str], dict[str, Any], dict[str, dict[str, Any]]]
"""One cluster's per-host view in sparse form, `(keys, clean, entries)`: every host's key,
the entry of a host that is as new, and the entries of the others (`OutlierEjections.sparse`).
A key without an entry has `clean`. What the core's `stats`, `clusters_text`,
`host_statuses_json` and `stats_hosts_json` take in place of a dict per host."""


class OutlierCore(Protocol):
    """The part of `meshplane._core.Core` this driver uses."""

    def set_host_ejected(self, cluster: str, address: str, ejected: bool) -> None: ...

    def take_outlier_samples(self) -> dict[str, dict[str, list[int]]]: ...


@dataclass
class ClusterOutliers:
    """One cluster's detector, next sweep time and the samples gathered since its last sweep."""

    name: str
    policy: OutlierPolicy
    detector: OutlierDetector[str]
    next_sweep: float
    samples: dict[str, list[int]] = field(default_factory=dict)

    def add_samples(self, hosts: Mapping[str, Sequence[int]]) -> None:
        for host, counts in hosts.items():
            acc = self.samples.setdefault(host, [0, 0, 0, 0])
            for i, n in enumerate(counts[:4]):
                acc[i] += int(n)

    def take_samples(self) -> dict[str, Sample]:
        from meshplane.policy import PolicyError, Sample

        out = {}
        for host, (ok, total, local_ok, local_total) in self.samples.items():
            try:
                out[host] = Sample(ok, total, local_ok, local_total)
            except PolicyError:  # counters read mid-update can be off by one; skip that host
                continue
        self.samples = {}
        return out


def _policy(target: ResilienceTarget) -> OutlierPolicy:
    from meshplane.policy import OutlierPolicy

    assert target.outlier_detection is not None
    return OutlierPolicy.from_appmesh(target.outlier_detection, target.outlier_extension)


class OutlierEjections:
    """Passive health for every cluster with outlier detection; see the module docstring."""

    def __init__(
        self,
        core: OutlierCore,
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self._core = core
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._clusters: dict[str, ClusterOutliers] = {}
        self._wake = trio.Event()
        self.events_handled = 0
        self.errors = 0
        """Exceptions caught and logged at error level (the driver went on)."""

    def _error(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        log.error("outlier detection: %s failed (%s: %s); detection goes on", what,
                  type(exc).__name__, exc, exc_info=exc)

    # --- what to watch -------------------------------------------------------------------

    def retarget(self, targets: Sequence[ResilienceTarget]) -> None:
        """Watch exactly the clusters of `targets` that have outlier detection."""
        now = self._clock()
        wanted = {t.cluster: t for t in targets if t.outlier_detection}
        for name in [n for n in self._clusters if n not in wanted]:
            self._release(self._clusters.pop(name))
        if wanted:  # the first cluster with outlier detection loads the policy (module docstring)
            from meshplane.policy import OutlierDetector, PolicyError
        for name, target in wanted.items():
            try:
                policy = _policy(target)
            except PolicyError as exc:  # validation refuses these; be safe anyway
                log.error("cluster %s: outlier detection not started: %s", name, exc)
                continue
            current = self._clusters.get(name)
            if current is not None and current.policy == policy:
                current.detector.set_hosts(target.endpoints)
                continue
            if current is not None:
                self._release(current)
            detector: OutlierDetector[str] = OutlierDetector(policy, random.Random(self._rng.random()))
            detector.set_hosts(target.endpoints)
            self._clusters[name] = ClusterOutliers(name, policy, detector, now + policy.interval)
        self._wake.set()

    def set_endpoints(self, cluster: str, keys: Iterable[str]) -> None:
        state = self._clusters.get(cluster)
        if state is not None:
            state.detector.set_hosts(list(dict.fromkeys(keys)))

    def _release(self, cluster: ClusterOutliers) -> None:
        for key in cluster.detector.ejected():
            self._tell_core(cluster.name, key, False, releasing=True)

    # --- decisions -----------------------------------------------------------------------

    def on_event(self, event: OutlierEvent) -> None:
        """One outlier event from the core: eject now if the detector agrees."""
        self.events_handled += 1
        cluster = self._clusters.get(event.cluster)
        if cluster is None:
            return
        from meshplane.policy import PolicyError  # loaded with the cluster's detector

        try:
            decisions = cluster.detector.on_consecutive(event.host, event.type, self._clock())
        except PolicyError as exc:
            log.warning("ignoring outlier event %r: %s", event, exc)
            return
        self._apply(cluster, decisions)

    def on_active_health_success(self, cluster: str, key: str) -> None:
        """An active health check of a healthy host passed: uneject it now (Envoy)."""
        state = self._clusters.get(cluster)
        if state is not None and key in state.detector.ejected():
            self._apply(state, state.detector.on_active_health_success(key, self._clock()))

    def sweep(self, now: float | None = None) -> None:
        """Sweep every cluster whose interval is up (gathering the core's samples first)."""
        now = self._clock() if now is None else now
        due = [c for c in self._clusters.values() if c.next_sweep <= now]
        if not due:
            return
        self._gather()
        for cluster in due:
            try:
                self._apply(cluster, cluster.detector.on_interval(cluster.take_samples(), now))
            except Exception as exc:
                self._error(f"the sweep of cluster {cluster.name}", exc)
            # Advanced even after a failure, so a failing sweep is retried next interval, not in
            # a busy loop.
            cluster.next_sweep = max(cluster.next_sweep + cluster.policy.interval, now)

    def _gather(self) -> None:
        try:
            samples = self._core.take_outlier_samples()
        except Exception as exc:
            self._error("take_outlier_samples()", exc)
            return
        for name, hosts in samples.items():
            cluster = self._clusters.get(name)
            if cluster is not None:
                cluster.add_samples(hosts)

    def _apply(self, cluster: ClusterOutliers, decisions: Sequence[Decision[str]]) -> None:
        from meshplane.policy.outlier import Eject  # loaded with the cluster's detector

        for decision in decisions:
            ejected = isinstance(decision, Eject)
            self._tell_core(cluster.name, decision.key, ejected)
            if isinstance(decision, Eject):
                log.info("cluster %s host %s ejected (%s) for %.1f s", cluster.name, decision.key,
                         decision.reason.value, decision.until - self._clock())
            else:
                log.info("cluster %s host %s returned from ejection", cluster.name, decision.key)

    def _tell_core(self, cluster: str, key: str, ejected: bool, *, releasing: bool = False) -> None:
        try:
            self._core.set_host_ejected(cluster, key, ejected)
        except Exception as exc:
            if releasing:
                # Returning the hosts of a cluster the new snapshot no longer has (or no longer
                # has them): its fresh host set starts unejected, so there is nothing to undo.
                log.debug("set_host_ejected(%s, %s, False) on release: %s", cluster, key, exc)
                return
            # Applies and endpoint changes retarget this driver in the same step as the core, so
            # the core refusing a host is not a race but a lost verdict: said and counted.
            self._error(f"set_host_ejected({cluster}, {key}, {ejected})", exc)

    # --- running -------------------------------------------------------------------------

    async def run(
        self,
        events: trio.MemoryReceiveChannel[Event],
        *,
        task_status: TaskStatus = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handle `events` (the bridge's "outlier" subscription) and sweep, until cancelled or
        the channel closes. Reports readiness once both parts run. Cancellation leaves hosts as
        last reported to the core (ejections in force stay in force)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._sweeper)
            task_status.started()
            async with events:
                async for event in events:
                    if event.kind == "outlier":
                        try:
                            self.on_event(cast(OutlierEvent, event))
                        except Exception as exc:
                            self._error(f"handling the event {event!r}", exc)
            nursery.cancel_scope.cancel()

    async def _sweeper(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.sweep()
            nexts = [c.next_sweep for c in self._clusters.values()]
            with trio.move_on_at(min(nexts) if nexts else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()

    # --- what is known -------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, int]]:
        """Per cluster, Envoy's `outlier_detection.*` counters and the `ejections_active` gauge."""
        return {name: c.detector.stats() for name, c in self._clusters.items()}

    def hosts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per cluster, per host: ejected, reason, until (Unix time) and the seconds left,
        num_ejections, backoff and the last interval's success rates."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name, cluster in self._clusters.items():
            out[name] = self._entries(cluster, cluster.detector.hosts())
        return out

    def sparse(self) -> dict[str, SparseHosts]:
        """`hosts()` in sparse form (`SparseHosts`), copied now: an entry only for the hosts
        that are not as new (`OutlierDetector.marked`), the one entry all the others share,
        and every host's key (the same tuple until hosts come or go). O(hosts not as new),
        not O(hosts): with 10,000 hosts a dict each was ~25 ms of the Trio loop."""
        if not self._clusters:
            return {}
        from meshplane.policy.outlier import CLEAN_STATE  # loaded with the first detector

        clean = self._entry(CLEAN_STATE, 0.0, 0.0)
        return {
            name: (c.detector.keys(), clean, self._entries(c, c.detector.marked()))
            for name, c in self._clusters.items()
        }

    def _entries(self, cluster: ClusterOutliers, keys: list[str]) -> dict[str, dict[str, Any]]:
        now = self._clock()
        to_unix = time.time() - now
        hosts: dict[str, dict[str, Any]] = {}
        for key in keys:
            try:
                st = cluster.detector.state(key)
            except KeyError:  # removed since `keys` was taken
                continue
            hosts[key] = self._entry(st, now, to_unix)
        return hosts

    @staticmethod
    def _entry(st: EjectionState, now: float, to_unix: float) -> dict[str, Any]:
        until = st.ejected_until
        return {
            "ejected": st.ejected,
            "reason": None if st.reason is None else st.reason.value,
            "ejected_until": None if until is None else round(until + to_unix, 3),
            "ejected_for_s": None if until is None else round(max(0.0, until - now), 3),
            "num_ejections": st.num_ejections,
            "backoff": st.backoff,
            "success_rate": st.success_rate,
            "local_origin_success_rate": st.local_origin_success_rate,
        }

    def policy(self, cluster: str) -> OutlierPolicy | None:
        state = self._clusters.get(cluster)
        return None if state is None else state.policy
