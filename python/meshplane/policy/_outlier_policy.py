"""`OutlierPolicy`: Envoy's outlier-detection parameters and the App Mesh mapping (appmesh §3.1).

Private: `meshplane.policy.outlier` re-exports it; the deviations from Envoy and App Mesh are listed
there. Imports only `_appmesh` and `_errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Final

from meshplane.policy._appmesh import as_bool, as_int, check_keys, duration, require
from meshplane.policy._errors import PolicyError


class EjectionReason(StrEnum):
    """Envoy's ejection types, spelled as in its stat names (`ejections_enforced_<reason>`)."""

    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
    SUCCESS_RATE = "success_rate"
    LOCAL_ORIGIN_SUCCESS_RATE = "local_origin_success_rate"
    FAILURE_PERCENTAGE = "failure_percentage"
    LOCAL_ORIGIN_FAILURE_PERCENTAGE = "local_origin_failure_percentage"


_R = EjectionReason
CONSECUTIVE_KINDS: Final = frozenset(
    {_R.CONSECUTIVE_5XX, _R.CONSECUTIVE_GATEWAY_FAILURE, _R.CONSECUTIVE_LOCAL_ORIGIN_FAILURE}
)


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
    _R.CONSECUTIVE_5XX: "enforcing_consecutive_5xx",
    _R.CONSECUTIVE_GATEWAY_FAILURE: "enforcing_consecutive_gateway_failure",
    _R.CONSECUTIVE_LOCAL_ORIGIN_FAILURE: "enforcing_consecutive_local_origin_failure",
    _R.SUCCESS_RATE: "enforcing_success_rate",
    _R.LOCAL_ORIGIN_SUCCESS_RATE: "enforcing_local_origin_success_rate",
    _R.FAILURE_PERCENTAGE: "enforcing_failure_percentage",
    _R.LOCAL_ORIGIN_FAILURE_PERCENTAGE: "enforcing_failure_percentage_local_origin",
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
