"""Active health checking and outlier ejection of one proxy, wired together.

`Resilience` holds the two drivers (`ActiveHealthChecks`, `OutlierEjections`), routes an
active-health success to the outlier detector (Envoy unejects such a host), retargets both on
each apply and on each discovered endpoint change, runs both in one task, and annotates the
core's stats with what they know for the admin API (`annotate`). `EndpointFanout` is the
discovery driver's sink: the core first, then both drivers. Imports trio, the two drivers and
`meshplane._bridge`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import trio

from meshplane._bridge import Event, TaskStatus
from meshplane.config.resilience import ResilienceTarget
from meshplane.drivers.health import ActiveHealthChecks, HealthSink, PackedHosts
from meshplane.drivers.outlier import OutlierCore, OutlierEjections, SparseHosts

__all__ = ["EndpointFanout", "Resilience", "ResilienceView", "health_flags"]


class ResilienceCore(HealthSink, OutlierCore, Protocol):
    pass


class EndpointSink(Protocol):
    def set_endpoints(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> object: ...


class Resilience:
    """Both drivers for `core`; see the module docstring."""

    def __init__(self, core: ResilienceCore, *, max_concurrent_probes: int = 512) -> None:
        self.outliers = OutlierEjections(core)
        self.health = ActiveHealthChecks(
            core,
            max_concurrent=max_concurrent_probes,
            on_success=self.outliers.on_active_health_success,
        )

    def retarget(self, targets: Sequence[ResilienceTarget]) -> None:
        self.outliers.retarget(targets)
        self.health.retarget(targets)

    def set_endpoints(self, cluster: str, keys: Sequence[str]) -> None:
        self.outliers.set_endpoints(cluster, keys)
        self.health.set_endpoints(cluster, keys)

    async def run(
        self,
        outlier_events: trio.MemoryReceiveChannel[Event],
        *,
        task_status: TaskStatus = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run both drivers until cancelled; ready once both are."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.outliers.run, outlier_events)
            await nursery.start(self.health.run)
            task_status.started()

    def errors(self) -> dict[str, int]:
        """Exceptions each driver caught, logged at error level and went on after."""
        return {"health_check": self.health.errors, "outlier_detection": self.outliers.errors}

    def annotate(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Add to a `Core.stats()` copy, in place: per cluster `health_check` and
        `outlier_detection` counters; per host `health_flags` (Envoy's spelling), `active_hc`
        (state, last result, consecutive counts) and `outlier` (ejected, reason, until)."""
        return self.view().annotate(stats)

    def view(self, *, hosts: bool = True) -> ResilienceView:
        """What `annotate` adds, copied now: take it on the Trio thread (the drivers change
        their state there), apply it to a `Core.stats()` copy anywhere. The per-host parts
        are in compact form: the health checker's kept view (`ActiveHealthChecks.packed`)
        and the outlier detector's entries of the hosts that are not as new
        (`OutlierEjections.sparse`), so no dict is made per host and the copy is not
        O(hosts) of Python work; `annotate` makes each host's part where it runs.
        `hosts=False` leaves the per-host state out (empty), for stats without hosts
        (`Core.stats(hosts=False)`), to which `annotate` adds none."""
        if not hosts:
            return ResilienceView(self.health.stats(), self.outliers.stats(), {}, {})
        return ResilienceView(self.health.stats(), self.outliers.stats(), self.health.packed(),
                              self.outliers.sparse())


class ResilienceView(NamedTuple):
    """The drivers' per-cluster counters and per-host state at one moment (`Resilience.view`)."""

    hc_stats: dict[str, dict[str, int]]
    od_stats: dict[str, dict[str, int]]
    hc_hosts: Mapping[str, Mapping[str, dict[str, Any]] | PackedHosts]
    """Per cluster: per host, as `ActiveHealthChecks.hosts()`, or in compact form
    (`ActiveHealthChecks.packed()`, what `Resilience` gives)."""
    od_hosts: Mapping[str, Mapping[str, dict[str, Any]] | SparseHosts]
    """Per cluster: per host, as `OutlierEjections.hosts()`, or in sparse form
    (`OutlierEjections.sparse()`, what `Resilience` gives)."""

    def annotate(self, stats: dict[str, Any]) -> dict[str, Any]:
        """`Resilience.annotate` with this copy; touches nothing but `stats` and the copy.
        Hosts given as dicts get the per-host view here; a `HostTable` (`Core.stats(True,
        hc_hosts, od_hosts, True)`, what `Proxy.stats()` takes) carries it already."""
        hc_stats, od_stats, hc_hosts, od_hosts = self
        for name, cluster in (stats.get("clusters") or {}).items():
            if name in hc_stats:
                cluster["health_check"] = hc_stats[name]
            if name in od_stats:
                cluster["outlier_detection"] = od_stats[name]
            hosts = cluster.get("hosts")
            if not isinstance(hosts, dict):  # none, a `HostTable`, or text (`hosts_json`)
                continue
            health = hc_hosts.get(name, {})
            timeouts = _active_hc(hosts, health) if isinstance(health, tuple) else None
            outliers = _entries(od_hosts.get(name, {}))
            for key, host in hosts.items():
                od = outliers(key)
                timeout = False
                if timeouts is not None:
                    timeout = key in timeouts
                elif (hc := health.get(key)) is not None:  # type: ignore[union-attr]
                    host["active_hc"] = {
                        "state": hc["state"],
                        "last_result": hc["last_result"],
                        "consecutive_healthy": hc["num_healthy"],
                        "consecutive_unhealthy": hc["num_unhealthy"],
                    }
                    timeout = "active_hc_timeout" in hc.get("health_flags", "")
                if od is not None:
                    host["outlier"] = od
                host["health_flags"] = _flags(host, timeout)
        return stats


def _entries(
    view: Mapping[str, dict[str, Any]] | SparseHosts,
) -> Callable[[str], dict[str, Any] | None]:
    """A host's outlier entry (None: not tracked) from a view in either form."""
    if not isinstance(view, tuple):
        return view.get
    keys, clean, entries = view
    tracked = set(keys)

    def entry(key: str) -> dict[str, Any] | None:
        found = entries.get(key)
        if found is None and key in tracked:
            return dict(clean)
        return found

    return entry


def _active_hc(hosts: dict[str, dict[str, Any]], packed: PackedHosts) -> set[str]:
    """Give each host of `hosts` that `packed` has its `active_hc` (first of what `annotate`
    adds); returns the keys whose flags say `active_hc_timeout`."""
    from meshplane.policy.health import VIEW_ABSENT  # loaded with the first checker

    keys, data, names = packed
    records = memoryview(data).cast("Q")
    timeouts: set[str] = set()
    for i, key in enumerate(keys):
        host = hosts.get(key)
        at = i * 5
        if host is None or records[at] == VIEW_ABSENT:
            continue
        host["active_hc"] = {
            "state": names[records[at]],
            "last_result": names[records[at + 1]],
            "consecutive_healthy": records[at + 2],
            "consecutive_unhealthy": records[at + 3],
        }
        if records[at + 4]:
            timeouts.add(key)
    return timeouts


def health_flags(host: dict[str, Any], hc: dict[str, Any] | None = None) -> str:
    """Envoy's `/clusters` health_flags: `healthy`, or `/failed_active_hc`,
    `/active_hc_timeout`, `/failed_outlier_check` as they apply (the core's flags decide)."""
    return _flags(host, hc is not None and "active_hc_timeout" in hc.get("health_flags", ""))


def _flags(host: dict[str, Any], timeout: bool) -> str:
    flags = ""
    if host.get("failed_active_hc"):
        flags += "/failed_active_hc"
        if timeout:
            flags += "/active_hc_timeout"
    if host.get("ejected"):
        flags += "/failed_outlier_check"
    if not flags and not host.get("healthy", True):
        flags = "/failed_active_hc"
    return flags or "healthy"


class EndpointFanout:
    """A discovery sink: endpoints go to the core, then to the resilience drivers.

    Discovery hands over a cluster's whole list; the core is sent only what changed since the
    list this fanout last pushed (`Core.update_endpoints`: O(changes) in the core, not
    O(hosts)), made against the version that list went into (`base_version`). An apply in
    between sets the hosts its snapshot lists, so the core refuses such a stale delta and the
    whole list is sent instead (`Core.set_endpoints`). A list that repeats an address, and a
    core without `update_endpoints`, always go whole. Hosts that a delta adds go after the
    others (a whole list sets the order). Neither call waits for an apply in progress: a delta
    is then refused and the whole list goes, which the core makes right after the apply (it
    returns no version then, so the next change goes whole too)."""

    def __init__(self, core: EndpointSink, resilience: Resilience) -> None:
        self._core = core
        self._resilience = resilience
        # cluster -> (the version the pushed list went into, address -> weight)
        self._pushed: dict[str, tuple[str, dict[str, int]]] = {}

    def set_endpoints(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> None:
        new = dict(endpoints)
        if len(new) != len(endpoints) or not self._delta(cluster, new):
            version = self._core.set_endpoints(cluster, endpoints)
            if isinstance(version, str) and len(new) == len(endpoints):
                self._pushed[cluster] = (version, new)
            else:
                self._pushed.pop(cluster, None)
        self._resilience.set_endpoints(cluster, [address for address, _ in endpoints])

    def _delta(self, cluster: str, new: dict[str, int]) -> bool:
        """Send `new` as a change to the pushed list; False if it must go whole."""
        pushed = self._pushed.get(cluster)
        update = getattr(self._core, "update_endpoints", None)
        if pushed is None or update is None:
            return False
        version, old = pushed
        upsert = [(address, weight) for address, weight in new.items() if old.get(address) != weight]
        remove = [address for address in old if address not in new]
        if not update(cluster, upsert, remove, base_version=version):
            return False  # an apply landed since the last push
        self._pushed[cluster] = (version, new)
        return True
