"""Active health checking as sans-I/O decisions (envoy-semantics §3, appmesh §3.1 and §5).

Owns: `HealthCheckPolicy` (what to probe and how often; defined in `_health_policy`), `HostHealth` (Envoy's per-host state
machine, its transitions in `_TRANSITIONS`), `HealthChecker` (the state of every host of a
cluster plus a due-time heap that says whom to probe next) and the classifiers that turn a probe
response into a `ProbeResult`. A Trio driver sends the probes and feeds the results in; the
decisions (`Transition`) go to the core as host-health flags. Nothing here does I/O or reads a
clock: every method takes `now`, and every random draw comes from an injected `random.Random`.
Must not import trio, `meshplane._core` or `meshplane.config`.

Deliberate differences from Envoy / App Mesh (the reason follows each):

- `interval_jitter_percent` defaults to 10 (Envoy: 0; App Mesh has no jitter field). Thousands
  of hosts probed on one interval would otherwise march in step and load the upstreams in bursts.
- `initial_jitter` defaults to one interval (Envoy: 0, first probe at once). A new host set of
  5,000 hosts has its first probes spread over an interval instead of fired in one burst.
- No `no_traffic_interval`: probes run at `interval` whether or not the cluster has carried
  traffic (Envoy slows an idle cluster to 60 s). App Mesh users set `intervalMillis` and expect
  it honoured, and a sidecar should know its upstreams' health before the first request.
- A host's first result moves it out of "unknown" even when it fails, and that is reported as a
  `Transition` (`first_check=True`). In Envoy the host already carries FAILED_ACTIVE_HC, so
  nothing changes; the driver needs the event for cluster warming and the admin API.
- HTTP `retriable_statuses` (statuses that count like network failures) are not modelled.
- `path` defaults to "/" (App Mesh leaves it optional; Envoy requires one; CDK uses "/").
"""

from __future__ import annotations

import heapq
import itertools
import random
from array import array
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final, Generic, TypeVar

from meshplane.policy._health_policy import (
    ONLY_200,
    PROTOCOLS,
    HealthCheckPolicy,
    HealthProtocol,
    StatusRange,
)

__all__ = [
    "ONLY_200", "PROTOCOLS", "VIEW_ABSENT", "VIEW_NAMES", "HealthChecker", "HealthCheckPolicy",
    "HealthProtocol", "HealthState", "HostHealth", "ProbeResult", "StatusRange", "Transition",
    "classify_grpc_health", "classify_http_status",
]

K = TypeVar("K", bound=Hashable)


# --- results and classification -------------------------------------------------------------


class ProbeResult(StrEnum):
    """The outcome of one probe, as Envoy's health-check failure types.

    ACTIVE_FAILURE: the host answered, wrongly (unexpected HTTP status, gRPC not SERVING).
    NETWORK_FAILURE: connect failure, reset, GOAWAY, TCP connect refused.
    TIMEOUT: no answer within `timeout` (Envoy's NETWORK_TIMEOUT).
    """

    SUCCESS = "success"
    ACTIVE_FAILURE = "active_failure"
    NETWORK_FAILURE = "network_failure"
    TIMEOUT = "timeout"


def classify_http_status(status: int, expected: Sequence[StatusRange] = ONLY_200) -> ProbeResult:
    """SUCCESS if `status` lies in one of the half-open `expected` ranges, else ACTIVE_FAILURE."""
    ok = any(start <= status < end for start, end in expected)
    return ProbeResult.SUCCESS if ok else ProbeResult.ACTIVE_FAILURE


GRPC_OK: Final = 0
SERVING: Final = 1
"""`grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`."""


def classify_grpc_health(status_code: int, serving_status: int | str | None) -> ProbeResult:
    """SUCCESS iff grpc-status is OK (0) and the response says SERVING (1 or "SERVING").

    Anything else the server answered (NOT_SERVING, SERVICE_UNKNOWN, a non-OK grpc-status, no
    response message) is an ACTIVE_FAILURE; transport errors are the driver's NETWORK_FAILURE.
    """
    serving = serving_status in (SERVING, "SERVING")
    return ProbeResult.SUCCESS if status_code == GRPC_OK and serving else ProbeResult.ACTIVE_FAILURE


# --- the per-host state machine ---------------------------------------------------------------


class HealthState(StrEnum):
    """UNKNOWN until the first result (Envoy: FAILED_ACTIVE_HC set, never checked)."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class _Gate(Enum):
    NOW = "now"  # move to the target state on this result
    COUNT_HEALTHY = "count_healthy"  # ++num_healthy; move when it reaches healthy_threshold
    COUNT_UNHEALTHY = "count_unhealthy"  # ++num_unhealthy; move at unhealthy_threshold
    STAY = "stay"


_H, _U, _X = HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.UNKNOWN
_OK, _ACTIVE = ProbeResult.SUCCESS, ProbeResult.ACTIVE_FAILURE
_NET, _TIMEOUT = ProbeResult.NETWORK_FAILURE, ProbeResult.TIMEOUT

_TRANSITIONS: Final[Mapping[tuple[HealthState, ProbeResult], tuple[HealthState, _Gate]]] = {
    # First check ever: one success is enough (Envoy's first-check rule); a failure settles
    # "unknown" as unhealthy, after which recovery needs healthy_threshold successes.
    (_X, _OK): (_H, _Gate.NOW),
    (_X, _ACTIVE): (_U, _Gate.NOW),
    (_X, _NET): (_U, _Gate.NOW),
    (_X, _TIMEOUT): (_U, _Gate.NOW),
    (_U, _OK): (_H, _Gate.COUNT_HEALTHY),
    (_U, _ACTIVE): (_U, _Gate.STAY),
    (_U, _NET): (_U, _Gate.STAY),
    (_U, _TIMEOUT): (_U, _Gate.STAY),
    (_H, _OK): (_H, _Gate.STAY),
    # The host answered and said no: believe it at once. Network trouble may be ours or
    # transient, so it needs unhealthy_threshold in a row.
    (_H, _ACTIVE): (_U, _Gate.NOW),
    (_H, _NET): (_U, _Gate.COUNT_UNHEALTHY),
    (_H, _TIMEOUT): (_U, _Gate.COUNT_UNHEALTHY),
}


@dataclass(frozen=True)
class Transition:
    """A host's health changed at `at`. `first_check`: this was the host's first result."""

    previous: HealthState
    current: HealthState
    at: float
    first_check: bool

    @property
    def became_healthy(self) -> bool:
        """The host is healthy now (tell the core to clear FAILED_ACTIVE_HC)."""
        return self.current is HealthState.HEALTHY

    @property
    def became_unhealthy(self) -> bool:
        """The host is unhealthy now (tell the core to set FAILED_ACTIVE_HC)."""
        return self.current is HealthState.UNHEALTHY


class HostHealth:
    """Envoy's active-health-check session state for one host (envoy-semantics §3).

    Attributes are read-only to callers; only `on_result` changes them. `num_healthy` counts
    successes toward `healthy_threshold` while unhealthy, `num_unhealthy` network failures and
    timeouts toward `unhealthy_threshold` while healthy; a success zeroes `num_unhealthy`, any
    failure zeroes `num_healthy`. `change_pending` is Envoy's ChangePending for the last result.
    `active_hc_timeout` is Envoy's ACTIVE_HC_TIMEOUT: set by a timeout while unhealthy, cleared
    on recovery.
    """

    __slots__ = (
        "active_hc_timeout", "change_pending", "last_change", "last_check", "last_result",
        "num_healthy", "num_unhealthy", "policy", "state",
    )

    def __init__(self, policy: HealthCheckPolicy) -> None:
        self.policy = policy
        self.state = HealthState.UNKNOWN
        self.num_healthy = 0
        self.num_unhealthy = 0
        self.change_pending = False
        self.active_hc_timeout = False
        self.last_result: ProbeResult | None = None
        self.last_check: float | None = None
        self.last_change: float | None = None

    @property
    def failed_active_hc(self) -> bool:
        """Envoy's FAILED_ACTIVE_HC: set from creation until the host first passes."""
        return self.state is not HealthState.HEALTHY

    def on_result(self, result: ProbeResult, now: float) -> Transition | None:
        """Apply one probe result; return the state change it caused, if any."""
        previous = self.state
        target, gate = _TRANSITIONS[previous, result]
        if result is ProbeResult.SUCCESS:
            self.num_unhealthy = 0
        else:
            self.num_healthy = 0
        move = gate is _Gate.NOW
        if gate is _Gate.COUNT_HEALTHY:
            self.num_healthy += 1
            move = self.num_healthy >= self.policy.healthy_threshold
        elif gate is _Gate.COUNT_UNHEALTHY:
            self.num_unhealthy += 1
            move = self.num_unhealthy >= self.policy.unhealthy_threshold
        self.change_pending = not move and gate is not _Gate.STAY
        if move:
            self.state = target
        if self.state is HealthState.HEALTHY:
            self.active_hc_timeout = False
        elif result is ProbeResult.TIMEOUT:
            self.active_hc_timeout = True
        self.last_result = result
        self.last_check = now
        if not move:
            return None
        self.last_change = now
        return Transition(previous, target, now, first_check=previous is HealthState.UNKNOWN)

    def next_delay(self, rng: random.Random) -> float:
        """Seconds until this host's next probe, counted from the result just recorded.

        Before the first result: `rand % initial_jitter` (Envoy's initial jitter). After: the
        base interval for the last result (`HealthCheckPolicy.base_interval`), plus
        `rand % (interval_jitter_percent * base / 100)` and `rand % interval_jitter`, in whole
        milliseconds as Envoy computes them, and never less than 1 ms.
        """
        p = self.policy
        if self.last_result is None:
            spread = _ms(p.effective_initial_jitter)
            return (_draw(rng) % spread) / 1000 if spread > 0 else 0.0
        base = _ms(p.base_interval(self.last_result is ProbeResult.SUCCESS, self.change_pending))
        delay = base
        percent_mod = p.interval_jitter_percent * base // 100
        if percent_mod > 0:
            delay += _draw(rng) % percent_mod
        absolute = _ms(p.interval_jitter)
        if absolute > 0:
            delay += _draw(rng) % absolute
        return max(1, delay) / 1000

    def flags(self) -> str:
        """Envoy's `/clusters` health_flags spelling: `healthy` or `/failed_active_hc/...`."""
        if not self.failed_active_hc:
            return "healthy"
        return "/failed_active_hc" + ("/active_hc_timeout" if self.active_hc_timeout else "")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _draw(rng: random.Random) -> int:
    # Envoy draws a uint64 and takes it modulo the range; keep the same arithmetic.
    return rng.getrandbits(64)


# --- the per-host view in compact form ---------------------------------------------------------

VIEW_NAMES: Final[tuple[str | None, ...]] = (
    None, *(s.value for s in HealthState), *(r.value for r in ProbeResult)
)
"""The spellings `HealthChecker.pack` refers to by index: state and last result (None first)."""

VIEW_ABSENT: Final = 2**64 - 1
"""`HealthChecker.pack`'s first field for a key that is not a host (any more)."""

_ABSENT_RECORD: Final = (VIEW_ABSENT, 0, 0, 0, 0)

_VIEW_CODE: Final[dict[HealthState | ProbeResult | None, int]] = {
    None: 0, **{v: VIEW_NAMES.index(v.value) for v in (*HealthState, *ProbeResult)}
}

_UNKNOWN_RECORD: Final = array("Q", (_VIEW_CODE[HealthState.UNKNOWN], 0, 0, 0, 0))
"""A new host's record (`HealthChecker.pack` of a host without a result)."""


def _write_record(out: array[int], at: int, h: HostHealth) -> None:
    """`HealthChecker.pack`'s five numbers of `h`, written at `out[at:at + 5]`."""
    out[at] = _VIEW_CODE[h.state]
    out[at + 1] = _VIEW_CODE[h.last_result]
    out[at + 2] = h.num_healthy
    out[at + 3] = h.num_unhealthy
    # `flags()` says active_hc_timeout exactly when it is set and the host is not healthy.
    out[at + 4] = h.active_hc_timeout and h.state is not HealthState.HEALTHY


# --- many hosts -----------------------------------------------------------------------------


class HealthChecker(Generic[K]):
    """The health of every host of one cluster, and when each is next due for a probe.

    Scheduling is a heap of (due time, sequence, key) with lazy deletion: `due` pops only what
    is due, so a 5,000-host cluster at 1 s intervals costs O(log n) per probe, not a scan.
    A host returned by `due` is in flight and is not returned again until its result is
    `record`ed (the driver turns a missing answer into TIMEOUT after `policy.timeout`).
    """

    def __init__(self, policy: HealthCheckPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._hosts: dict[K, HostHealth] = {}
        self._scheduled: dict[K, tuple[float, int]] = {}  # absent: probe in flight
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._healthy = 0  # hosts whose state is HEALTHY (`count_healthy`)
        # The compact view (`view()`), kept as hosts come, go and get results: `_records`
        # holds `pack`'s five numbers of the host `_order[i]` at `5 * i`; `_slot` says where.
        # NOTE: packing 10,000 hosts at each read was ~2-3 ms of the Trio loop (every
        # `Proxy.stats()`); keeping it costs a slice assignment per result.
        self._order: list[K] = []
        self._slot: dict[K, int] = {}
        self._records: array[int] = array("Q")
        self._view_keys: tuple[K, ...] | None = ()  # `_order` as a tuple; None: to be made

    def set_hosts(self, keys: Iterable[K], now: float) -> None:
        """Make the host set exactly `keys`. New hosts start unknown; their first probe is due
        within `initial_jitter` of `now`. Removed hosts are forgotten, with their state."""
        wanted = dict.fromkeys(keys)
        for key in [k for k in self._hosts if k not in wanted]:
            if self._hosts.pop(key).state is HealthState.HEALTHY:
                self._healthy -= 1
            self._scheduled.pop(key, None)
            self._unview(key)
        for key in wanted:
            if key not in self._hosts:
                host = self._hosts[key] = HostHealth(self.policy)
                self._schedule(key, now + host.next_delay(self._rng))
                self._slot[key] = len(self._order)
                self._order.append(key)
                self._records.extend(_UNKNOWN_RECORD)
                self._view_keys = None
        self._compact()

    def due(self, now: float, limit: int | None = None) -> list[K]:
        """The hosts whose probe is due at `now`, earliest first; they are now in flight. With
        `limit`, at most that many (the earliest); the others stay scheduled, due as before."""
        out: list[K] = []
        heap = self._heap
        room = len(heap) if limit is None else limit
        while heap and heap[0][0] <= now and len(out) < room:
            _, seq, key = heapq.heappop(heap)
            entry = self._scheduled.get(key)
            if entry is not None and entry[1] == seq:
                del self._scheduled[key]
                out.append(key)
        return out

    def next_due(self) -> float | None:
        """When the earliest scheduled probe is due (for the driver's sleep), or None."""
        heap = self._heap
        while heap:
            due_at, seq, key = heap[0]
            entry = self._scheduled.get(key)
            if entry is not None and entry[1] == seq:
                return due_at
            heapq.heappop(heap)
        return None

    def record(self, key: K, result: ProbeResult, now: float) -> Transition | None:
        """Apply `key`'s probe result at `now` and schedule its next probe. A result for a host
        no longer in the set is dropped (returns None), as Envoy drops a removed host's session."""
        host = self._hosts.get(key)
        if host is None:
            return None
        transition = host.on_result(result, now)
        if transition is not None:
            if transition.previous is HealthState.HEALTHY:
                self._healthy -= 1
            if transition.current is HealthState.HEALTHY:
                self._healthy += 1
        _write_record(self._records, 5 * self._slot[key], host)
        self._schedule(key, now + host.next_delay(self._rng))
        self._compact()
        return transition

    def healthy(self, key: K) -> bool | None:
        """True/False once `key` has a result, None while unknown. KeyError if not a host."""
        state = self._hosts[key].state
        return None if state is HealthState.UNKNOWN else state is HealthState.HEALTHY

    def count_healthy(self) -> int:
        """How many hosts are healthy: what `snapshot()` counts, without its copy per host."""
        # NOTE: kept as the states change (`record`, `set_hosts`): counting 10,000 hosts took
        # ~1.2 ms of the Trio loop per stats read (every scrape), most of `stats(hosts=False)`.
        return self._healthy

    def host(self, key: K) -> HostHealth:
        """The state machine of `key` (read-only use). KeyError if not a host."""
        return self._hosts[key]

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, key: object) -> bool:
        return key in self._hosts

    def keys(self) -> list[K]:
        """The hosts, in `snapshot()`'s order (a copy)."""
        return list(self._hosts)

    def snapshot(self, keys: Iterable[K] | None = None) -> dict[K, dict[str, Any]]:
        """Per host, for the admin API: state, Envoy health flags, last result and check time,
        last change time, the consecutive counters, change pending, next due time (None while a
        probe is in flight). With `keys`, only those of them that are hosts now."""
        out: dict[K, dict[str, Any]] = {}
        hosts = self._hosts
        chosen = hosts.items() if keys is None else ((k, hosts[k]) for k in keys if k in hosts)
        for key, h in chosen:
            entry = self._scheduled.get(key)
            out[key] = {
                "state": h.state.value,
                "health_flags": h.flags(),
                "last_result": None if h.last_result is None else h.last_result.value,
                "last_check": h.last_check,
                "last_change": h.last_change,
                "num_healthy": h.num_healthy,
                "num_unhealthy": h.num_unhealthy,
                "change_pending": h.change_pending,
                "next_check": None if entry is None else entry[0],
            }
        return out

    def view(self) -> tuple[tuple[K, ...], array[int]]:
        """Every host in compact form, kept up to date (no copy, no work per host): `(keys,
        records)`, `pack`'s five numbers of `keys[i]` at `records[5 * i:]`, in an order of
        its own (not `keys()`'s). `keys` is the same tuple until hosts come or go (then a new
        one); `records` is this checker's own array, changed in place by every `record` and
        `set_hosts`: copy it (`bytes(records)`) to keep the view of this moment."""
        if self._view_keys is None:
            self._view_keys = tuple(self._order)
        return self._view_keys, self._records

    def pack(self, keys: Iterable[K], out: array[int]) -> None:
        """Append to `out` (an `array("Q")`) five numbers per key of `keys`, what the admin
        API shows of a host (`snapshot()`'s state, last_result, num_healthy, num_unhealthy,
        and whether its health flags say `active_hc_timeout`): state and last result as
        indexes into `VIEW_NAMES`, the counters, 1 or 0. A key that is not a host gets
        `VIEW_ABSENT` first and zeros. No object is made per host (the core reads `out`)."""
        hosts = self._hosts
        for key in keys:
            h = hosts.get(key)
            out.extend(_ABSENT_RECORD)
            if h is not None:
                _write_record(out, len(out) - 5, h)

    def _unview(self, key: K) -> None:
        """Take `key` out of the compact view: the last host moves into its place."""
        at = self._slot.pop(key)
        last = self._order.pop()
        if last != key:
            self._order[at] = last
            self._slot[last] = at
            self._records[5 * at : 5 * at + 5] = self._records[-5:]
        del self._records[-5:]
        self._view_keys = None

    def _schedule(self, key: K, at: float) -> None:
        seq = next(self._seq)
        self._scheduled[key] = (at, seq)
        heapq.heappush(self._heap, (at, seq, key))

    def _compact(self) -> None:
        # Results recorded while a host was still queued, and removed hosts, leave stale heap
        # entries; rebuild once they outnumber the live ones so the heap stays O(hosts).
        if len(self._heap) > 2 * len(self._scheduled) + 64:
            self._heap = [(at, seq, key) for key, (at, seq) in self._scheduled.items()]
            heapq.heapify(self._heap)
