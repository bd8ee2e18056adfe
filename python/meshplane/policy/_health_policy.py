"""`HealthCheckPolicy`: what to probe and how often, and its App Mesh mapping (appmesh §3.1).

Private: `meshplane.policy.health` re-exports it; the deviations from Envoy and App Mesh are listed
there. Imports only `_appmesh` and `_errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from meshplane.policy._appmesh import as_int, as_str, check_keys, count, millis, require
from meshplane.policy._errors import PolicyError

HealthProtocol = Literal["http", "http2", "grpc", "tcp"]
StatusRange = tuple[int, int]
"""A half-open range of HTTP statuses `[start, end)`, as Envoy's `expected_statuses`."""

PROTOCOLS: Final = ("http", "http2", "grpc", "tcp")
ONLY_200: Final[tuple[StatusRange, ...]] = ((200, 201),)
"""Envoy's and App Mesh's default: only HTTP 200 is healthy (appmesh §5, roadmap #396)."""


def _positive(value: float, field: str) -> None:
    if not value > 0:
        raise PolicyError("out_of_range", field, f"expected > 0 seconds, got {value!r}")


def _non_negative(value: float, field: str) -> None:
    if not value >= 0:
        raise PolicyError("out_of_range", field, f"expected >= 0, got {value!r}")


@dataclass(frozen=True)
class HealthCheckPolicy:
    """How one cluster's hosts are probed. Times are seconds; `None` means "Envoy's default".

    `interval_jitter_percent` and `initial_jitter` are meshplane extensions with non-Envoy
    defaults (see the module docstring). `unhealthy_interval` defaults to `interval`,
    `unhealthy_edge_interval` to `unhealthy_interval`, `healthy_edge_interval` to `interval`,
    `initial_jitter` to `interval`. `port` None probes the endpoint's own port.

    Only what keeps the policy well-defined is checked here (positive times, thresholds >= 1,
    statuses inside [100, 600)); App Mesh's product ranges (`intervalMillis` 5000..300000, ...)
    are the config layer's to enforce, so a library user may probe every second.
    """

    protocol: HealthProtocol
    interval: float
    timeout: float
    healthy_threshold: int
    unhealthy_threshold: int
    path: str = "/"
    port: int | None = None
    interval_jitter_percent: int = 10
    interval_jitter: float = 0.0
    initial_jitter: float | None = None
    unhealthy_interval: float | None = None
    unhealthy_edge_interval: float | None = None
    healthy_edge_interval: float | None = None
    expected_statuses: tuple[StatusRange, ...] = ONLY_200

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise PolicyError("out_of_range", "protocol", f"expected one of {PROTOCOLS}, got {self.protocol!r}")
        _positive(self.interval, "interval")
        _positive(self.timeout, "timeout")
        as_int(self.healthy_threshold, "healthy_threshold", lo=1)
        as_int(self.unhealthy_threshold, "unhealthy_threshold", lo=1)
        as_int(self.interval_jitter_percent, "interval_jitter_percent", lo=0)
        if self.port is not None:
            as_int(self.port, "port", lo=1, hi=65535)
        _non_negative(self.interval_jitter, "interval_jitter")
        if self.initial_jitter is not None:
            _non_negative(self.initial_jitter, "initial_jitter")
        for name in ("unhealthy_interval", "unhealthy_edge_interval", "healthy_edge_interval"):
            value = getattr(self, name)
            if value is not None:
                _positive(value, name)
        if not self.expected_statuses:
            raise PolicyError("out_of_range", "expected_statuses", "expected at least one range")
        for start, end in self.expected_statuses:
            if not 100 <= start < end <= 600:
                raise PolicyError(
                    "out_of_range", "expected_statuses",
                    f"expected half-open ranges inside [100, 600), got [{start}, {end})",
                )

    @property
    def effective_initial_jitter(self) -> float:
        """`initial_jitter`, or meshplane's default of one interval."""
        return _given(self.initial_jitter, self.interval)

    def base_interval(self, last_ok: bool, change_pending: bool) -> float:
        """Envoy's next interval before jitter, for a cluster that has carried traffic.

        A failed probe waits `unhealthy_edge_interval` while a change to unhealthy is pending,
        else `unhealthy_interval`; a passed probe waits `healthy_edge_interval` while a change to
        healthy is pending, else `interval`.
        """
        unhealthy = _given(self.unhealthy_interval, self.interval)
        table = {
            (True, False): self.interval,
            (True, True): _given(self.healthy_edge_interval, self.interval),
            (False, False): unhealthy,
            (False, True): _given(self.unhealthy_edge_interval, unhealthy),
        }
        return table[last_ok, change_pending]

    @classmethod
    def from_appmesh(
        cls, health_check: Mapping[str, Any], extension: Mapping[str, Any] | None = None
    ) -> HealthCheckPolicy:
        """Build a policy from an App Mesh `healthCheck` dict and meshplane's extension dict.

        App Mesh keys (all of `protocol`, `intervalMillis`, `timeoutMillis`, `healthyThreshold`,
        `unhealthyThreshold` required; `path`, `port` optional). Extension keys, all optional:
        `intervalJitterPercent` (int, default 10), `intervalJitterMillis` (default 0),
        `initialJitterMillis` (default one interval), `unhealthyIntervalMillis`,
        `unhealthyEdgeIntervalMillis`, `healthyEdgeIntervalMillis`, and `expectedStatuses`: a
        list of status codes or Envoy ranges `{"start": 200, "end": 300}` (end exclusive).
        Raises `PolicyError` on a missing, mistyped or unknown key.
        """
        hc, where = health_check, "healthCheck"
        check_keys(hc, _APPMESH_HC_KEYS, where)
        protocol = as_str(require(hc, "protocol", where), f"{where}.protocol")
        if protocol not in PROTOCOLS:
            raise PolicyError("out_of_range", f"{where}.protocol", f"expected one of {PROTOCOLS}, got {protocol!r}")
        ext = extension or {}
        check_keys(ext, _EXTENSION_KEYS, "extension")
        kwargs: dict[str, Any] = {
            "protocol": protocol,
            "interval": millis(require(hc, "intervalMillis", where), f"{where}.intervalMillis"),
            "timeout": millis(require(hc, "timeoutMillis", where), f"{where}.timeoutMillis"),
            "healthy_threshold": as_int(require(hc, "healthyThreshold", where), f"{where}.healthyThreshold"),
            "unhealthy_threshold": as_int(
                require(hc, "unhealthyThreshold", where), f"{where}.unhealthyThreshold"
            ),
        }
        if "path" in hc:
            kwargs["path"] = as_str(hc["path"], f"{where}.path")
        if "port" in hc:
            kwargs["port"] = as_int(hc["port"], f"{where}.port", lo=1, hi=65535)
        for key, (name, convert) in _EXTENSION_FIELDS.items():
            if key in ext:
                kwargs[name] = convert(ext[key], f"extension.{key}")
        if "expectedStatuses" in ext:
            kwargs["expected_statuses"] = _status_ranges(ext["expectedStatuses"], "extension.expectedStatuses")
        return cls(**kwargs)


_APPMESH_HC_KEYS: Final = frozenset(
    {"protocol", "intervalMillis", "timeoutMillis", "healthyThreshold", "unhealthyThreshold", "path", "port"}
)
_EXTENSION_FIELDS: Final = {
    "intervalJitterPercent": ("interval_jitter_percent", count),
    "intervalJitterMillis": ("interval_jitter", millis),
    "initialJitterMillis": ("initial_jitter", millis),
    "unhealthyIntervalMillis": ("unhealthy_interval", millis),
    "unhealthyEdgeIntervalMillis": ("unhealthy_edge_interval", millis),
    "healthyEdgeIntervalMillis": ("healthy_edge_interval", millis),
}
_EXTENSION_KEYS: Final = frozenset({*_EXTENSION_FIELDS, "expectedStatuses"})


def _status_ranges(value: Any, field: str) -> tuple[StatusRange, ...]:
    if not isinstance(value, list | tuple):
        raise PolicyError("invalid_type", field, f"expected a list, got {value!r}")
    out: list[StatusRange] = []
    for i, item in enumerate(value):
        here = f"{field}[{i}]"
        if isinstance(item, Mapping):
            out.append((as_int(require(item, "start", here), f"{here}.start"),
                        as_int(require(item, "end", here), f"{here}.end")))
        else:
            code = as_int(item, here)
            out.append((code, code + 1))
    return tuple(out)


def _given(value: float | None, default: float) -> float:
    return default if value is None else value
