"""Active health checking in Trio: probes every endpoint of every cluster whose node listener
has a `healthCheck`, and tells the core the moment a host's health changes.

`ActiveHealthChecks` owns one `HealthChecker` (sans-I/O state and schedule, with its jitter)
per cluster and one probe object per endpoint (`drivers.probes`; none is kept for TCP, whose
probe has no state between probes). Its `run` task sleeps until the earliest host is due,
starts the due probes (at most `max_concurrent` in flight and `PROBES_PER_STEP` per pass of the
Trio loop, taken off the schedules `DUE_PER_STEP` per cluster at a time; the rest wait their
turn), and for each result:

- a `Transition` goes to the core at once (`set_host_health`), first results included;
- a success on a host that is healthy goes to `on_success` (the outlier detector unejects it,
  Envoy's `successful_active_health_check_uneject_host`).

`retarget(targets)` (each apply) and `set_endpoints(cluster, keys)` (DNS changes) may be
called at any time, before or while `run` runs. A cluster whose policy is unchanged keeps
its hosts' state; a changed policy starts its hosts afresh (their first result is pushed); a
cluster that loses its health check has the hosts this driver failed marked healthy again.

A probe that raises (a bug, not a verdict on the host) or a core that refuses a verdict is
logged at error level and counted in `errors` (the admin API's `control.driver_errors`); the
probe counts as a network failure, so the host stays scheduled and is never silently left
unchecked.

Cost: one task per probe, h11/h2 state reused per connection, wake-ups batched to
`SCHEDULING_QUANTUM` (benches/python/bench_health.py measures 5,000 endpoints at 1 s).
Imports trio and `meshplane.config` types; `meshplane.policy` and `drivers.probes` (about
0.4 MiB resident) with the first health-checked cluster, so a proxy that checks none and has
no outlier detection never loads them (benches/README.md, "Memory, fourth pass").
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from meshplane._bridge import TaskStatus
from meshplane.config.addresses import parse_address
from meshplane.config.resilience import ResilienceTarget

if TYPE_CHECKING:
    from meshplane.drivers.probes import Probe, ProbeSpec
    from meshplane.policy import HealthChecker, HealthCheckPolicy, ProbeResult

__all__ = [
    "DUE_PER_STEP", "PROBES_PER_STEP", "SCHEDULING_QUANTUM", "ActiveHealthChecks", "ClusterHealth",
    "HealthSink", "PackedHosts",
]

log = logging.getLogger("meshplane.health")

SCHEDULING_QUANTUM = 0.005
"""Probes due within this many seconds of each other start in one wake-up of the scheduler."""

PROBES_PER_STEP = 8
"""Probes the scheduler starts per pass of the Trio loop; more due ones wait for the next pass."""
# NOTE: Trio runs every task made runnable since its last look at I/O and timers in one batch,
# without checking the clock in between. Starting 512 probes at once, and later handling
# their 512 answers that arrive together, made batches of 50-400 ms with 10,000 hosts; starting
# a few per pass bounds a batch to about twice this many probe steps. A probe that finds
# nothing started since is late by the passes it waited, never starved. With 10,000 hosts the
# Trio thread ran 6.5-8.3 ms of such a batch (16 per pass) between two wake-ups of a 1 ms sleep,
# and 3.8-4.5 ms with 8: the loop's stall while probing on a quiet machine, since nothing else
# in the process runs then (`benches/control/steps.py threads`). The price: fewer probes per
# second when the Trio thread is the bottleneck (about 20-30 % fewer on the 2-core machine).

DUE_PER_STEP = 64
"""Due hosts the scheduler takes from each cluster's schedule per pass, and only while fewer
than this many wait to start."""
# NOTE: after the loop was held up (a long scrape, a busy machine), a thousand hosts could be
# due at once; taking them all off the schedule in one step was 1-2 ms of the loop with
# 10,000 hosts (benches/README.md, control plane, fifth pass). Those left are due as before
# and taken in the next passes, earliest first.

OnSuccess = Callable[[str, str], None]

PackedHosts = tuple[Sequence[str], bytes, tuple[str | None, ...]]
"""One cluster's per-host view in compact form, `(keys, records, names)`: five native 8-byte
numbers per key (`HealthChecker.pack`) and the spellings they index (`VIEW_NAMES`). What the
core's `stats`, `clusters_text`, `host_statuses_json` and `stats_hosts_json` take in place of
a dict per host. Keys given as a tuple that the core has seen before are not read again (the
core keeps their index while it keeps the tuple)."""


class HealthSink(Protocol):
    """The part of `meshplane._core.Core` this driver uses."""

    def set_host_health(self, cluster: str, address: str, healthy: bool) -> None: ...


@dataclass
class ClusterHealth:
    """One cluster's checker, probes and counters (Envoy's `cluster.<c>.health_check.*`)."""

    name: str
    target: ResilienceTarget
    policy: HealthCheckPolicy
    spec: ProbeSpec
    checker: HealthChecker[str]
    probes: dict[str, Probe] = field(default_factory=dict)
    attempt: int = 0
    success: int = 0
    failure: int = 0
    network_failure: int = 0
    timeout: int = 0

    def stats(self) -> dict[str, int]:
        # NOTE: counted without `snapshot()`'s dict per host (10,000 of them per stats read).
        healthy = self.checker.count_healthy()
        return {
            "attempt": self.attempt,
            "success": self.success,
            "failure": self.failure,
            "network_failure": self.network_failure,
            "timeout": self.timeout,
            "healthy": healthy,
        }

    def close_probes(self, keys: Iterable[str] | None = None) -> None:
        for key in list(self.probes if keys is None else keys):
            probe = self.probes.pop(key, None)
            if probe is not None:
                probe.close()


def make_probe(spec: ProbeSpec, ip: str, port: int) -> Probe:
    """`drivers.probes.make_probe`, imported with the first probe (module docstring)."""
    from meshplane.drivers import probes

    return probes.make_probe(spec, ip, port)


def _policy(target: ResilienceTarget) -> HealthCheckPolicy:
    from meshplane.policy import HealthCheckPolicy

    assert target.health_check is not None
    return HealthCheckPolicy.from_appmesh(target.health_check, target.health_extension)


class ActiveHealthChecks:
    """Probes the endpoints of every health-checked cluster; see the module docstring.

    `core` takes the verdicts; `on_success(cluster, host)` hears every passing probe of a
    healthy host. `clock` is `trio.current_time` (tests may pass another); `rng` seeds the
    jitter.
    """

    def __init__(
        self,
        core: HealthSink,
        *,
        max_concurrent: int = 512,
        on_success: OnSuccess | None = None,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self._core = core
        self.max_concurrent = max_concurrent
        self._on_success = on_success
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._clusters: dict[str, ClusterHealth] = {}
        # The due hosts waiting to start, in order: the key and its cluster at the same place.
        # NOTE: two deques, not one of (cluster, key) pairs: with 10,000 hosts thousands of
        # pairs wait at once, each a new object the cyclic collector walks, young and then
        # old (benches/README.md, control plane, fifth pass).
        self._queue: deque[str] = deque()
        self._queue_clusters: deque[ClusterHealth] = deque()
        self._in_flight = 0
        self._more_due = False  # due hosts left on a schedule when the scheduler last looked
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._sleep_until = math.inf  # when the scheduler wakes next unless woken earlier
        self.errors = 0
        """Exceptions caught and logged at error level (the driver went on)."""

    def _error(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        log.error("health checking: %s failed (%s: %s); checking goes on", what,
                  type(exc).__name__, exc, exc_info=exc)

    # --- what to check -------------------------------------------------------------------

    def retarget(self, targets: Sequence[ResilienceTarget]) -> None:
        """Check exactly the clusters of `targets` that have a health check."""
        now = self._clock()
        wanted = {t.cluster: t for t in targets if t.health_check}
        for name in [n for n in self._clusters if n not in wanted]:
            self._drop(self._clusters.pop(name))
        if wanted:  # the first health check loads these (module docstring)
            from meshplane.drivers.probes import ProbeSpec
            from meshplane.policy import HealthChecker, PolicyError
        for name, target in wanted.items():
            current = self._clusters.get(name)
            try:
                policy = _policy(target)
            except PolicyError as exc:  # validation already refuses these; be safe anyway
                log.error("cluster %s: health check not started: %s", name, exc)
                continue
            spec = ProbeSpec(
                protocol=policy.protocol,
                path=policy.path,
                host=target.host,
                expected=policy.expected_statuses,
            )
            if current is not None and current.policy == policy and current.spec == spec:
                current.target = target
                self._set_hosts(current, target.endpoints, now)
                continue
            if current is not None:
                self._drop(current)
            checker: HealthChecker[str] = HealthChecker(policy, random.Random(self._rng.random()))
            cluster = ClusterHealth(name, target, policy, spec, checker)
            self._clusters[name] = cluster
            self._set_hosts(cluster, target.endpoints, now)
        self._wake.set()

    def set_endpoints(self, cluster: str, keys: Iterable[str]) -> None:
        """A discovered cluster's endpoints changed ("IP:PORT" keys)."""
        state = self._clusters.get(cluster)
        if state is not None:
            self._set_hosts(state, keys, self._clock())
            self._wake.set()

    def _set_hosts(self, cluster: ClusterHealth, keys: Iterable[str], now: float) -> None:
        keys = list(dict.fromkeys(keys))
        wanted = set(keys)
        cluster.close_probes([k for k in cluster.probes if k not in wanted])
        cluster.checker.set_hosts(keys, now)

    def _drop(self, cluster: ClusterHealth) -> None:
        """Stop checking `cluster`: close its probes and clear the flags this driver set."""
        from meshplane.policy.health import HealthState

        cluster.close_probes()
        for key, host in cluster.checker.snapshot().items():
            if host["state"] == HealthState.UNHEALTHY.value:
                self._tell_core(cluster.name, key, True, releasing=True)

    # --- running -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Probe until cancelled. Reports readiness once scheduling.

        Cancellation abandons the probes in flight (their results are not reported) and closes
        every probe connection; hosts keep the health last reported to the core.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                last = -math.inf
                while True:
                    now = self._clock()
                    last = now
                    more = False  # a cluster has due hosts left on its schedule
                    if len(self._queue) < DUE_PER_STEP:
                        for cluster in list(self._clusters.values()):
                            due = cluster.checker.due(now, DUE_PER_STEP)
                            self._queue.extend(due)
                            self._queue_clusters.extend(itertools.repeat(cluster, len(due)))
                            more = more or len(due) == DUE_PER_STEP
                    self._more_due = more
                    self._start_queued()
                    if (self._queue or more) and self._in_flight < self.max_concurrent:
                        await trio.sleep(0)  # the next PROBES_PER_STEP in the next pass
                        continue
                    wake_at = self._next_due()
                    self._sleep_until = (
                        math.inf if wake_at is None else max(wake_at, last + SCHEDULING_QUANTUM)
                    )
                    with trio.move_on_at(self._sleep_until):
                        await self._wake.wait()
                    self._wake = trio.Event()
        finally:
            self._nursery = None
            self._queue.clear()
            self._queue_clusters.clear()
            for cluster in self._clusters.values():
                cluster.close_probes()

    def _next_due(self) -> float | None:
        dues = [d for c in self._clusters.values() if (d := c.checker.next_due()) is not None]
        return min(dues) if dues else None

    def _start_queued(self) -> None:
        nursery = self._nursery
        started = 0
        while (nursery is not None and self._queue and self._in_flight < self.max_concurrent
               and started < PROBES_PER_STEP):
            started += 1
            cluster, key = self._queue_clusters.popleft(), self._queue.popleft()
            self._in_flight += 1
            nursery.start_soon(self._probe, cluster, key)

    async def _probe(self, cluster: ClusterHealth, key: str) -> None:
        from meshplane.policy.health import ProbeResult  # loaded with the cluster's checker

        try:
            try:
                result = await self._run_probe(cluster, key)
            except Exception as exc:
                # Recorded as a failure: unrecorded, the host would never be scheduled again.
                self._error(f"the probe of cluster {cluster.name} host {key}", exc)
                cluster.close_probes([key])
                result = ProbeResult.NETWORK_FAILURE
            try:
                self._record(cluster, key, result)
            except Exception as exc:
                self._error(f"recording the probe of cluster {cluster.name} host {key}", exc)
        finally:
            self._in_flight -= 1
            if self._queue or self._more_due:
                self._wake.set()  # a slot is free: the scheduler starts the next ones

    async def _run_probe(self, cluster: ClusterHealth, key: str) -> ProbeResult:
        from meshplane.policy.health import ProbeResult

        probe = cluster.probes.get(key)
        if probe is None:
            ip, port = parse_address(key)
            port = cluster.policy.port or port
            probe = make_probe(cluster.spec, ip, port)
            if cluster.spec.protocol != "tcp":
                cluster.probes[key] = probe
            # NOTE: a TCP probe keeps no state between probes (connect, close), so none is kept
            # per host: 10,000 long-lived objects the cyclic collector would walk at each
            # generation-2 collection (made after `gc.freeze()`, so not frozen): ~3-8 ms of the
            # Trio loop per collection, about once a second while probing (benches/README.md,
            # control plane, fifth pass). A new one per probe is the address parse, ~1.3 µs.
        cluster.attempt += 1
        result = ProbeResult.TIMEOUT
        with trio.move_on_after(cluster.policy.timeout):
            result = await probe.probe()
        if result is ProbeResult.TIMEOUT:
            probe.close()
        return result

    def _record(self, cluster: ClusterHealth, key: str, result: ProbeResult) -> None:
        from meshplane.policy.health import HealthState, ProbeResult

        if result is ProbeResult.SUCCESS:
            cluster.success += 1
        else:
            cluster.failure += 1
            if result is ProbeResult.NETWORK_FAILURE:
                cluster.network_failure += 1
            elif result is ProbeResult.TIMEOUT:
                cluster.network_failure += 1
                cluster.timeout += 1
        if self._clusters.get(cluster.name) is not cluster or key not in cluster.checker:
            cluster.close_probes([key])  # retargeted or removed while the probe ran: stale
            return
        transition = cluster.checker.record(key, result, self._clock())
        due = cluster.checker.next_due()
        if due is not None and due < self._sleep_until:
            self._wake.set()  # this host is now the earliest: the scheduler must not oversleep
        if transition is not None:
            self._tell_core(cluster.name, key, transition.became_healthy)
            log.info("cluster %s host %s is now %s (%s)", cluster.name, key,
                     transition.current.value, result.value)
        if result is ProbeResult.SUCCESS and self._on_success is not None:
            if cluster.checker.host(key).state is HealthState.HEALTHY:
                self._on_success(cluster.name, key)

    def _tell_core(self, cluster: str, key: str, healthy: bool, *, releasing: bool = False) -> None:
        try:
            self._core.set_host_health(cluster, key, healthy)
        except Exception as exc:
            if releasing:
                # Clearing the flags of a cluster the new snapshot no longer has (or no longer
                # has those hosts): its fresh host set starts healthy, so there is nothing to undo.
                log.debug("set_host_health(%s, %s, True) on release: %s", cluster, key, exc)
                return
            # Applies and endpoint changes retarget this driver in the same step as the core, so
            # the core refusing a host is not a race but a lost verdict: said and counted.
            self._error(f"set_host_health({cluster}, {key}, {healthy})", exc)

    # --- what is known -------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, int]]:
        """Per cluster: attempt, success, failure, network_failure (timeouts included, as in
        Envoy), timeout, and the `healthy` gauge."""
        return {name: c.stats() for name, c in self._clusters.items()}

    def hosts(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per cluster, per host: `HealthChecker.snapshot()` entries (state, health_flags,
        last_result, last_check, last_change, counters, next_check; times on `clock`)."""
        return {name: c.checker.snapshot() for name, c in self._clusters.items()}

    async def read_hosts(self, step: int = 1024) -> dict[str, dict[str, dict[str, Any]]]:
        """`hosts()`, copied `step` hosts per task step (a checkpoint between steps): with
        10,000 hosts the whole copy is ~16 ms, which one step would take from the Trio loop.
        Each host's entry is as it was at its own step (the checks go on meanwhile); hosts
        removed meanwhile are left out, hosts added meanwhile are not in it."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name, cluster in list(self._clusters.items()):
            keys = cluster.checker.keys()
            hosts: dict[str, dict[str, Any]] = {}
            for start in range(0, len(keys), step):
                hosts.update(cluster.checker.snapshot(keys[start : start + step]))
                await trio.lowlevel.checkpoint()
            out[name] = hosts
        return out

    def packed(self) -> dict[str, PackedHosts]:
        """`hosts()` in compact form (`PackedHosts`), copied now: the checker keeps it as hosts
        come, go and get results (`HealthChecker.view`), so the copy is the records' bytes
        (~0.05 ms for 10,000 hosts) and the same keys tuple until the hosts change: no object
        per host, nothing walked per host (the core keeps what it made of a keys tuple it saw
        before)."""
        if not self._clusters:  # nothing checked: no need to import the policy (~20 ms once)
            return {}
        from meshplane.policy.health import VIEW_NAMES  # loaded with the first checker

        out: dict[str, PackedHosts] = {}
        for name, cluster in self._clusters.items():
            keys, records = cluster.checker.view()
            out[name] = (keys, records.tobytes(), VIEW_NAMES)
        return out

    def policy(self, cluster: str) -> HealthCheckPolicy | None:
        state = self._clusters.get(cluster)
        return None if state is None else state.policy
