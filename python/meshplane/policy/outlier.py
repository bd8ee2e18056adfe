"""Outlier detection (passive health) as sans-I/O decisions (envoy-semantics §2, appmesh §3.1).

Owns: `OutlierPolicy` (Envoy's parameters and defaults, and the App Mesh mapping) and
`OutlierDetector`, which turns the core's events into `Eject` / `Uneject` decisions. The core
counts consecutive errors per host and reports the moment a counter reaches its threshold
(`on_consecutive`); a Trio driver calls `on_interval` every `policy.interval` with the success
counts of the interval just finished and applies the decisions. Every random draw comes from an
injected `random.Random`; every method takes `now`. Must not import trio, `meshplane._core` or
`meshplane.config`.

Deliberate differences, and choices where the references are silent:

- App Mesh-derived policies (`OutlierPolicy.from_appmesh`) set `always_eject_one_host`: App Mesh
  documents `maxEjectionPercent` with "at least one host is ejectable regardless" (appmesh
  §3.1), which is Envoy's `always_eject_one_host`. Without it a 2-host cluster with 10% could
  never eject. `OutlierPolicy()` built directly keeps Envoy's default (False).
- App Mesh-derived policies set `enforcing_success_rate` and
  `enforcing_local_origin_success_rate` to 0 unless the extension sets them: App Mesh documents
  outlier detection as consecutive server errors only (`maxServerErrors`), and Envoy's
  default-on success-rate ejection surprises users (istio/istio#25220). Success rate is still
  computed and counted under `ejections_detected_success_rate`. Direct construction keeps
  Envoy's 100.
- A host ejected by success rate in a sweep is not also evaluated for failure percentage in
  that sweep (Envoy would count a second detection and hit the "already ejected" case).
- `consecutive_local_origin_failure` events are ignored unless
  `split_external_local_origin_errors` is on (Envoy only tracks that counter in split mode).
- Failure percentage compares `100 * failed >= threshold * total` in integers, exact at the
  boundary (Envoy compares doubles; the results differ only on a rounding tie).
- Envoy's deprecated counters (`ejections_total`, `ejections_consecutive_5xx`,
  `ejections_success_rate`) are not kept.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

from meshplane.policy._errors import PolicyError
from meshplane.policy._outlier_policy import CONSECUTIVE_KINDS, EjectionReason, OutlierPolicy

__all__ = [
    "CLEAN_STATE", "CONSECUTIVE_KINDS", "Decision", "Eject", "EjectionReason", "EjectionState",
    "OutlierDetector",
    "OutlierPolicy", "Sample", "Uneject",
]

K = TypeVar("K", bound=Hashable)
_R = EjectionReason
_MS: Final = 1000


# --- decisions and inputs -------------------------------------------------------------------


@dataclass(frozen=True)
class Eject(Generic[K]):
    """Mark `key` FAILED_OUTLIER_CHECK. `until` is the earliest time a sweep will uneject it
    (the actual uneject happens at the first `on_interval` at or after `until`)."""

    key: K
    reason: EjectionReason
    until: float


@dataclass(frozen=True)
class Uneject(Generic[K]):
    """Clear FAILED_OUTLIER_CHECK on `key` and reset its consecutive-error counters."""

    key: K


# What the detector returns: apply each in order (the core sets or clears FAILED_OUTLIER_CHECK).
Decision: TypeAlias = Eject[K] | Uneject[K]


@dataclass(frozen=True)
class Sample:
    """One host's outcomes over the interval just finished, as the core's `Sample` reports
    them: `success`/`total` for externally caused outcomes (all outcomes unless the policy
    splits local-origin errors), `local_success`/`local_total` for locally originated ones
    (connect failures, timeouts, resets) in split mode."""

    success: int
    total: int
    local_success: int = 0
    local_total: int = 0

    def __post_init__(self) -> None:
        for ok, total, name in (
            (self.success, self.total, "success"),
            (self.local_success, self.local_total, "local_success"),
        ):
            if not 0 <= ok <= total:
                raise PolicyError("out_of_range", name, f"expected 0 <= {ok} <= total {total}")


@dataclass(frozen=True)
class EjectionState:
    """What `OutlierDetector.state` reports for one host."""

    ejected: bool
    reason: EjectionReason | None
    ejected_until: float | None
    num_ejections: int
    backoff: int
    last_ejection: float | None
    last_unejection: float | None
    success_rate: float | None
    local_origin_success_rate: float | None


CLEAN_STATE: Final[EjectionState] = EjectionState(
    ejected=False, reason=None, ejected_until=None, num_ejections=0, backoff=0,
    last_ejection=None, last_unejection=None, success_rate=None, local_origin_success_rate=None,
)
"""`OutlierDetector.state` of a host that is as new (every host not in `marked()`)."""


class _Monitor:
    """Envoy's DetectorHostMonitor, minus the counters the core keeps."""

    __slots__ = (
        "backoff", "ejected_until", "last_ejection", "last_unejection", "num_ejections",
        "reason", "success_rates",
    )

    def __init__(self) -> None:
        self.reason: EjectionReason | None = None  # set while ejected
        self.ejected_until = 0.0
        self.num_ejections = 0
        self.backoff = 0
        self.last_ejection: float | None = None
        self.last_unejection: float | None = None
        self.success_rates: dict[bool, float | None] = {False: None, True: None}

    def clean(self) -> bool:
        """As new: never ejected, no backoff, no success rate this interval (`CLEAN_STATE`
        but for the last ejection and unejection times, which follow from never ejected)."""
        rates = self.success_rates
        return (
            self.reason is None and self.num_ejections == 0 and self.backoff == 0
            and rates[False] is None and rates[True] is None
        )


# --- the detector ---------------------------------------------------------------------------


class OutlierDetector(Generic[K]):
    """Envoy's outlier DetectorImpl for one cluster, as events in and decisions out."""

    def __init__(self, policy: OutlierPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._hosts: dict[K, _Monitor] = {}
        self._active = 0
        self._overflow = 0
        self._enforced: dict[EjectionReason, int] = dict.fromkeys(EjectionReason, 0)
        self._detected: dict[EjectionReason, int] = dict.fromkeys(EjectionReason, 0)
        # (mean, ejection threshold) of the last sweep per origin; -1 when not computed, as
        # Envoy's /clusters `success_rate_average` / `success_rate_ejection_threshold`.
        self._sr_summary: dict[bool, tuple[float, float]] = {False: (-1.0, -1.0), True: (-1.0, -1.0)}
        # Hosts that may not be clean (`clean`): every host that is not is here.
        # NOTE: so a view of 10,000 hosts needs an entry only for these (`marked`); the rest
        # share the clean one. A dict per host was ~25 ms of the Trio loop per stats read.
        self._marked: set[K] = set()
        self._keys: tuple[K, ...] | None = ()  # the hosts as a tuple; None: to be made

    def set_hosts(self, keys: Iterable[K]) -> None:
        """Make the host set exactly `keys`. New hosts start clean; a removed host is forgotten
        and, if ejected, leaves `ejections_active` (no decision: the host is gone)."""
        wanted = dict.fromkeys(keys)
        for key in [k for k in self._hosts if k not in wanted]:
            if self._hosts.pop(key).reason is not None:
                self._active -= 1
            self._marked.discard(key)
            self._keys = None
        for key in wanted:
            if key not in self._hosts:
                self._hosts[key] = _Monitor()
                self._keys = None

    def on_consecutive(self, key: K, kind: str, now: float) -> list[Decision[K]]:
        """A consecutive-error counter of `key` just reached its threshold: eject at once.

        `kind` is "consecutive_5xx", "consecutive_gateway_failure" or
        "consecutive_local_origin_failure" (the last only counts in split mode). Events for
        unknown or already ejected hosts are ignored, as Envoy ignores them. The core resets
        the counter that fired after sending the event.
        """
        try:
            reason = EjectionReason(kind)
        except ValueError:
            reason = None
        if reason is None or reason not in CONSECUTIVE_KINDS:
            raise PolicyError("unknown_event", "kind", f"expected one of {sorted(CONSECUTIVE_KINDS)}, got {kind!r}")
        if reason is _R.CONSECUTIVE_LOCAL_ORIGIN_FAILURE and not self.policy.split_external_local_origin_errors:
            return []
        monitor = self._hosts.get(key)
        if monitor is None or monitor.reason is not None:
            return []
        self._detected[reason] += 1
        return self._eject(key, monitor, reason, now)

    def on_interval(self, samples: Mapping[K, Sample], now: float) -> list[Decision[K]]:
        """The interval sweep: uneject hosts whose time is up, success-rate and
        failure-percentage ejections over `samples` (the interval just finished; hosts missing
        from it had no traffic), then backoff decay. Decisions come in that order."""
        out: list[Decision[K]] = []
        marked = self._marked = set()  # made anew as the rates are cleared
        for key, monitor in self._hosts.items():
            monitor.success_rates = {False: None, True: None}
            if monitor.reason is not None and now >= monitor.ejected_until:
                self._uneject(monitor, now)
                out.append(Uneject(key))
            if monitor.num_ejections or monitor.backoff:  # ever ejected: never clean again
                marked.add(key)
        out += self._statistical_ejections(samples, now, local_origin=False)
        if self.policy.split_external_local_origin_errors:
            out += self._statistical_ejections(samples, now, local_origin=True)
        for monitor in self._hosts.values():
            if (
                monitor.reason is None
                and monitor.last_unejection is not None
                and now - monitor.last_unejection >= self.policy.interval
                and monitor.backoff > 0
            ):
                monitor.backoff -= 1
        return out

    def on_active_health_success(self, key: K, now: float) -> list[Decision[K]]:
        """An active health check of `key` passed and the host is not failed by active HC:
        uneject it now (Envoy's `successful_active_health_check_uneject_host`)."""
        monitor = self._hosts.get(key)
        if (
            monitor is None
            or monitor.reason is None
            or not self.policy.successful_active_health_check_uneject_host
        ):
            return []
        self._uneject(monitor, now)
        return [Uneject(key)]

    def state(self, key: K) -> EjectionState:
        """`key`'s ejection state. KeyError if not a host."""
        m = self._hosts[key]
        return EjectionState(
            ejected=m.reason is not None,
            reason=m.reason,
            ejected_until=m.ejected_until if m.reason is not None else None,
            num_ejections=m.num_ejections,
            backoff=m.backoff,
            last_ejection=m.last_ejection,
            last_unejection=m.last_unejection,
            success_rate=m.success_rates[False],
            local_origin_success_rate=m.success_rates[True],
        )

    def hosts(self) -> list[K]:
        """Every host of the set, in the order they were added."""
        return list(self._hosts)

    def keys(self) -> tuple[K, ...]:
        """`hosts()` as a tuple: the same object until hosts come or go (no copy per call)."""
        if self._keys is None:
            self._keys = tuple(self._hosts)
        return self._keys

    def marked(self) -> list[K]:
        """The hosts whose `state` may not be `clean` (every one that is not is among them):
        O(those), not O(hosts)."""
        return [k for k in self._marked if not self._hosts[k].clean()]

    def ejected(self) -> list[K]:
        """The hosts ejected now."""
        return [k for k, m in self._hosts.items() if m.reason is not None]

    def stats(self) -> dict[str, int]:
        """Counters and the `ejections_active` gauge, named as Envoy's
        `cluster.<c>.outlier_detection.*` stats."""
        out = {
            "ejections_active": self._active,
            "ejections_overflow": self._overflow,
            "ejections_enforced_total": sum(self._enforced.values()),
        }
        out.update({f"ejections_enforced_{r.value}": n for r, n in self._enforced.items()})
        out.update({f"ejections_detected_{r.value}": n for r, n in self._detected.items()})
        return out

    def success_rate_summary(self) -> dict[str, float]:
        """The last sweep's success-rate mean and ejection threshold, -1 when not computed
        (Envoy's `/clusters` `success_rate_average`, `success_rate_ejection_threshold` and
        their `local_origin_` twins)."""
        out: dict[str, float] = {}
        for local, prefix in ((False, ""), (True, "local_origin_")):
            mean, threshold = self._sr_summary[local]
            out[f"{prefix}success_rate_average"] = mean
            out[f"{prefix}success_rate_ejection_threshold"] = threshold
        return out

    # --- Envoy's ejectHost / unejectHost and the statistical passes ---------------------------

    def _eject(self, key: K, monitor: _Monitor, reason: EjectionReason, now: float) -> list[Decision[K]]:
        p = self.policy
        # Integer form of `(active + 1) * 100 / total <= max_ejection_percent`: exact.
        within_cap = (self._active + 1) * 100 <= p.max_ejection_percent * len(self._hosts)
        if not (within_cap or (p.always_eject_one_host and self._active == 0)):
            self._overflow += 1
            return []
        if not self._roll(p.enforcing(reason)):
            return []
        self._active += 1
        self._enforced[reason] += 1
        self._marked.add(key)
        monitor.reason = reason
        monitor.num_ejections += 1
        monitor.last_ejection = now
        jitter_ms = round(p.max_ejection_time_jitter * _MS)
        jitter = (self._rng.getrandbits(64) % (jitter_ms + 1)) / _MS if jitter_ms > 0 else 0.0
        base, cap = p.base_ejection_time, p.effective_max_ejection_time
        if monitor.backoff * base < cap + base:
            monitor.backoff += 1
        monitor.ejected_until = now + min(base * monitor.backoff, cap) + jitter
        return [Eject(key, reason, monitor.ejected_until)]

    def _uneject(self, monitor: _Monitor, now: float) -> None:
        monitor.reason = None
        monitor.last_unejection = now
        self._active -= 1

    def _roll(self, percent: int) -> bool:
        # Envoy's runtime featureEnabled: `random % 100 < percent`. No draw when the outcome is
        # certain, so default policies consume no randomness.
        if percent >= 100 or percent <= 0:
            return percent >= 100
        return self._rng.getrandbits(64) % 100 < percent

    def _statistical_ejections(
        self, samples: Mapping[K, Sample], now: float, local_origin: bool
    ) -> list[Decision[K]]:
        p = self.policy
        self._sr_summary[local_origin] = (-1.0, -1.0)
        n_hosts = len(self._hosts)
        if n_hosts < p.success_rate_minimum_hosts and n_hosts < p.failure_percentage_minimum_hosts:
            return []
        counted: list[tuple[K, int, int]] = []  # (key, ok, total) of hosts in service with traffic
        for key, monitor in self._hosts.items():
            sample = samples.get(key)
            if monitor.reason is not None or sample is None:
                continue
            ok, total = _counts(sample, local_origin)
            if total == 0:
                continue
            counted.append((key, ok, total))
            if total >= min(p.success_rate_request_volume, p.failure_percentage_request_volume):
                monitor.success_rates[local_origin] = 100.0 * ok / total
                self._marked.add(key)
        out = self._success_rate_pass(
            [(k, 100.0 * ok / t) for k, ok, t in counted if t >= p.success_rate_request_volume],
            local_origin, now,
        )
        out += self._failure_percentage_pass(
            [(k, ok, t) for k, ok, t in counted if t >= p.failure_percentage_request_volume],
            local_origin, now,
        )
        return out

    def _success_rate_pass(
        self, rates: list[tuple[K, float]], local_origin: bool, now: float
    ) -> list[Decision[K]]:
        p = self.policy
        if not rates or len(rates) < p.success_rate_minimum_hosts:
            return []
        mean = math.fsum(rate for _, rate in rates) / len(rates)
        stdev = math.sqrt(math.fsum((rate - mean) ** 2 for _, rate in rates) / len(rates))
        threshold = mean - (p.success_rate_stdev_factor / 1000.0) * stdev
        self._sr_summary[local_origin] = (mean, threshold)
        reason = _R.LOCAL_ORIGIN_SUCCESS_RATE if local_origin else _R.SUCCESS_RATE
        out: list[Decision[K]] = []
        for key, rate in rates:
            if rate < threshold:
                self._detected[reason] += 1
                out += self._eject(key, self._hosts[key], reason, now)
        return out

    def _failure_percentage_pass(
        self, counts: list[tuple[K, int, int]], local_origin: bool, now: float
    ) -> list[Decision[K]]:
        p = self.policy
        if not counts or len(counts) < p.failure_percentage_minimum_hosts:
            return []
        reason = _R.LOCAL_ORIGIN_FAILURE_PERCENTAGE if local_origin else _R.FAILURE_PERCENTAGE
        out: list[Decision[K]] = []
        for key, ok, total in counts:
            monitor = self._hosts[key]
            # `100 - sr >= threshold` in integers: exact at the boundary. A host the success-rate
            # pass just ejected is not looked at again.
            if monitor.reason is None and 100 * (total - ok) >= p.failure_percentage_threshold * total:
                self._detected[reason] += 1
                out += self._eject(key, monitor, reason, now)
        return out


def _counts(sample: Sample, local_origin: bool) -> tuple[int, int]:
    if local_origin:
        return sample.local_success, sample.local_total
    return sample.success, sample.total
