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
- Envoy's deprecated counters (`ejections_total`, `ejections_consecutive_5xx`,
  `ejections_success_rate`) are not kept.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Final, Generic, TypeAlias, TypeVar

from meshplane.policy._appmesh import as_bool, as_int, check_keys, duration, require
from meshplane.policy._errors import PolicyError

K = TypeVar("K", bound=Hashable)


class EjectionReason(StrEnum):
    """Envoy's ejection types, spelled as in its stat names (`ejections_enforced_<reason>`)."""

    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
    SUCCESS_RATE = "success_rate"
    LOCAL_ORIGIN_SUCCESS_RATE = "local_origin_success_rate"
    FAILURE_PERCENTAGE = "failure_percentage"
    LOCAL_ORIGIN_FAILURE_PERCENTAGE = "local_origin_failure_percentage"


R = EjectionReason
CONSECUTIVE_KINDS: Final = frozenset(
    {R.CONSECUTIVE_5XX, R.CONSECUTIVE_GATEWAY_FAILURE, R.CONSECUTIVE_LOCAL_ORIGIN_FAILURE}
)
_MS: Final = 1000


@dataclass(frozen=True)
class OutlierPolicy:
    """Envoy's outlier-detection parameters with Envoy's defaults (envoy-semantics §2 table).

    Times are seconds; `max_ejection_time` None means `max(300 s, base_ejection_time)`.
    `success_rate_stdev_factor` is in thousandths (1900 = 1.9). Percentages are 0..100.
    """

    consecutive_5xx: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float | None = None
    max_ejection_time_jitter: float = 0.0
    max_ejection_percent: int = 10
    always_eject_one_host: bool = False
    enforcing_consecutive_5xx: int = 100
    enforcing_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_local_origin_success_rate: int = 100
    failure_percentage_threshold: int = 85
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    successful_active_health_check_uneject_host: bool = True

    def __post_init__(self) -> None:
        # Annotations are strings here (PEP 563), so `f.type` is "int", "bool", "float", ...
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                as_bool(value, f.name)
            elif f.type == "int":
                hi = 100 if f.name in _PERCENT_FIELDS else None
                as_int(value, f.name, lo=1 if f.name in _THRESHOLD_FIELDS else 0, hi=hi)
        for name in ("interval", "base_ejection_time"):
            if not getattr(self, name) > 0:
                raise PolicyError("out_of_range", name, f"expected > 0 seconds, got {getattr(self, name)!r}")
        if not self.max_ejection_time_jitter >= 0:
            raise PolicyError("out_of_range", "max_ejection_time_jitter", "expected >= 0 seconds")
        if self.max_ejection_time is not None and not self.max_ejection_time >= self.base_ejection_time:
            # Envoy rejects such a config rather than silently capping below the base.
            raise PolicyError(
                "out_of_range", "max_ejection_time",
                f"expected >= base_ejection_time ({self.base_ejection_time}), got {self.max_ejection_time}",
            )

    @property
    def effective_max_ejection_time(self) -> float:
        """`max_ejection_time`, or Envoy's default `max(300 s, base_ejection_time)`."""
        if self.max_ejection_time is None:
            return max(300.0, self.base_ejection_time)
        return self.max_ejection_time

    def enforcing(self, reason: EjectionReason) -> int:
        """The `enforcing_*` percentage that applies to an ejection of this type."""
        return int(getattr(self, _ENFORCING[reason]))

    @classmethod
    def from_appmesh(
        cls, outlier_detection: Mapping[str, Any], extension: Mapping[str, Any] | None = None
    ) -> OutlierPolicy:
        """Build a policy from an App Mesh `outlierDetection` dict and meshplane's extension.

        App Mesh (all required): `maxServerErrors` → `consecutive_5xx`, `interval` and
        `baseEjectionDuration` Durations (`{"unit": "s"|"ms", "value": n}`) → seconds,
        `maxEjectionPercent` → `max_ejection_percent`. App Mesh-derived policies set
        `always_eject_one_host=True` and success-rate enforcement to 0 (module docstring).

        Extension keys, all optional, each the camelCase of a field: `maxEjectionDuration` and
        `maxEjectionJitter` (Durations); `alwaysEjectOneHost`, `splitExternalLocalOriginErrors`,
        `successfulActiveHealthCheckUnejectHost` (booleans); `consecutiveGatewayFailure`,
        `consecutiveLocalOriginFailure`, `successRateMinimumHosts`, `successRateRequestVolume`,
        `successRateStdevFactor`, `failurePercentageThreshold`, `failurePercentageMinimumHosts`,
        `failurePercentageRequestVolume` (integers); `enforcingConsecutive5xx`,
        `enforcingConsecutiveGatewayFailure`, `enforcingConsecutiveLocalOriginFailure`,
        `enforcingSuccessRate`, `enforcingLocalOriginSuccessRate`, `enforcingFailurePercentage`,
        `enforcingFailurePercentageLocalOrigin` (percentages 0..100). Gateway-failure and
        failure-percentage ejection are detected but not enforced until their `enforcing*` key
        is set, as in Envoy. Raises `PolicyError` on a missing, mistyped or unknown key.
        """
        od, where = outlier_detection, "outlierDetection"
        check_keys(od, _APPMESH_KEYS, where)
        ext = extension or {}
        check_keys(ext, _EXTENSION_KEYS, "extension")
        kwargs: dict[str, Any] = {
            "consecutive_5xx": as_int(require(od, "maxServerErrors", where), f"{where}.maxServerErrors", lo=1),
            "interval": duration(require(od, "interval", where), f"{where}.interval"),
            "base_ejection_time": duration(
                require(od, "baseEjectionDuration", where), f"{where}.baseEjectionDuration"
            ),
            "max_ejection_percent": as_int(
                require(od, "maxEjectionPercent", where), f"{where}.maxEjectionPercent", lo=0, hi=100
            ),
            "always_eject_one_host": True,
            "enforcing_success_rate": 0,
            "enforcing_local_origin_success_rate": 0,
        }
        for key, value in ext.items():
            name = _camel_to_field(key)
            field = f"extension.{key}"
            if key in _EXTENSION_DURATIONS:
                kwargs[_EXTENSION_DURATIONS[key]] = duration(value, field)
            elif _FIELD_TYPES[name] == "bool":
                kwargs[name] = as_bool(value, field)
            else:
                kwargs[name] = as_int(value, field)
        return cls(**kwargs)


_ENFORCING: Final = {
    R.CONSECUTIVE_5XX: "enforcing_consecutive_5xx",
    R.CONSECUTIVE_GATEWAY_FAILURE: "enforcing_consecutive_gateway_failure",
    R.CONSECUTIVE_LOCAL_ORIGIN_FAILURE: "enforcing_consecutive_local_origin_failure",
    R.SUCCESS_RATE: "enforcing_success_rate",
    R.LOCAL_ORIGIN_SUCCESS_RATE: "enforcing_local_origin_success_rate",
    R.FAILURE_PERCENTAGE: "enforcing_failure_percentage",
    R.LOCAL_ORIGIN_FAILURE_PERCENTAGE: "enforcing_failure_percentage_local_origin",
}
_PERCENT_FIELDS: Final = frozenset(
    {*_ENFORCING.values(), "max_ejection_percent", "failure_percentage_threshold"}
)
_THRESHOLD_FIELDS: Final = frozenset(
    {"consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure"}
)
_FIELD_TYPES: Final = {f.name: f.type for f in fields(OutlierPolicy)}
_APPMESH_KEYS: Final = frozenset({"maxServerErrors", "interval", "baseEjectionDuration", "maxEjectionPercent"})
_EXTENSION_DURATIONS: Final = {
    "maxEjectionDuration": "max_ejection_time",
    "maxEjectionJitter": "max_ejection_time_jitter",
}
# The App Mesh fields themselves and the Durations are not settable as plain camelCase keys.
_NOT_EXTENSIONS: Final = frozenset(
    {"consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent",
     "max_ejection_time", "max_ejection_time_jitter"}
)


def _field_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_CAMEL_FIELDS: Final = {_field_to_camel(n): n for n in _FIELD_TYPES if n not in _NOT_EXTENSIONS}
_EXTENSION_KEYS: Final = frozenset({*_CAMEL_FIELDS, *_EXTENSION_DURATIONS})


def _camel_to_field(key: str) -> str:
    return _CAMEL_FIELDS.get(key, key)


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

    def set_hosts(self, keys: Iterable[K]) -> None:
        """Make the host set exactly `keys`. New hosts start clean; a removed host is forgotten
        and, if ejected, leaves `ejections_active` (no decision: the host is gone)."""
        wanted = dict.fromkeys(keys)
        for key in [k for k in self._hosts if k not in wanted]:
            if self._hosts.pop(key).reason is not None:
                self._active -= 1
        for key in wanted:
            if key not in self._hosts:
                self._hosts[key] = _Monitor()

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
        if reason is R.CONSECUTIVE_LOCAL_ORIGIN_FAILURE and not self.policy.split_external_local_origin_errors:
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
        for key, monitor in self._hosts.items():
            monitor.success_rates = {False: None, True: None}
            if monitor.reason is not None and now >= monitor.ejected_until:
                self._uneject(monitor, now)
                out.append(Uneject(key))
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
        sr_hosts: list[tuple[K, float]] = []
        fp_hosts: list[tuple[K, float]] = []
        for key, monitor in self._hosts.items():
            sample = samples.get(key)
            if monitor.reason is not None or sample is None:
                continue
            ok, total = _counts(sample, local_origin)
            if total == 0:
                continue
            rate = 100.0 * ok / total
            if total >= min(p.success_rate_request_volume, p.failure_percentage_request_volume):
                monitor.success_rates[local_origin] = rate
            if total >= p.success_rate_request_volume:
                sr_hosts.append((key, rate))
            if total >= p.failure_percentage_request_volume:
                fp_hosts.append((key, rate))

        out: list[Decision[K]] = []
        sr_reason = R.LOCAL_ORIGIN_SUCCESS_RATE if local_origin else R.SUCCESS_RATE
        if sr_hosts and len(sr_hosts) >= p.success_rate_minimum_hosts:
            mean = math.fsum(rate for _, rate in sr_hosts) / len(sr_hosts)
            stdev = math.sqrt(math.fsum((rate - mean) ** 2 for _, rate in sr_hosts) / len(sr_hosts))
            threshold = mean - (p.success_rate_stdev_factor / 1000.0) * stdev
            self._sr_summary[local_origin] = (mean, threshold)
            for key, rate in sr_hosts:
                if rate < threshold:
                    self._detected[sr_reason] += 1
                    out += self._eject(key, self._hosts[key], sr_reason, now)
        fp_reason = R.LOCAL_ORIGIN_FAILURE_PERCENTAGE if local_origin else R.FAILURE_PERCENTAGE
        if fp_hosts and len(fp_hosts) >= p.failure_percentage_minimum_hosts:
            for key, _ in fp_hosts:
                monitor = self._hosts[key]
                ok, total = _counts(samples[key], local_origin)
                # `100 - sr >= threshold` in integers: exact, no rounding at the boundary.
                if monitor.reason is None and 100 * (total - ok) >= p.failure_percentage_threshold * total:
                    self._detected[fp_reason] += 1
                    out += self._eject(key, monitor, fp_reason, now)
        return out


def _counts(sample: Sample, local_origin: bool) -> tuple[int, int]:
    if local_origin:
        return sample.local_success, sample.local_total
    return sample.success, sample.total
