"""A Function's asynchronous-invocation settings: `spec.eventInvokeConfig` (Lambda's
PutFunctionEventInvokeConfig, plus meshplane's delay settings), checked and read.

    eventInvokeConfig:
      maximumRetryAttempts: 2          # 0-2 retries after a function error (Lambda's default 2)
      maximumEventAgeInSeconds: 21600  # 60-21,600: then the event is given up (EventAgeExceeded)
      retryDelaysSeconds: [60, 120]    # meshplane: before retry 1, 2 (Lambda: about 1 and 2 min)
      throttleBackoffSeconds: [1, 300] # meshplane: throttles/system errors back off INITIAL*2^n, at most MAX
      destinationConfig:
        onFailure: {directory: /var/lib/app/failed}   # or {function: NAME[:QUALIFIER]}
        onSuccess: {function: audit:live}

`check_event_invoke(spec)` lists every problem as (field path, what was expected);
`EventInvokeConfig.from_spec` reads a block (raising `ConfigError` naming the file and
resource when it is bad). Pure: imports only `meshplane.errors`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from meshplane.errors import ConfigError, Problem

__all__ = ["Destination", "EventInvokeConfig", "check_event_invoke"]

FIELD = "spec.eventInvokeConfig"
MAX_RETRY_ATTEMPTS = 2
MIN_EVENT_AGE_S = 60
MAX_EVENT_AGE_S = 21_600
_KNOWN = ("maximumRetryAttempts", "maximumEventAgeInSeconds", "retryDelaysSeconds",
          "throttleBackoffSeconds", "destinationConfig")
_TARGET = re.compile(r"^[A-Za-z0-9_-]{1,64}(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$")


@dataclass(frozen=True)
class Destination:
    """Where a record goes: another function (`kind` "function", `target` NAME[:QUALIFIER],
    invoked asynchronously with the record as its event) or a directory (`kind` "directory",
    one JSON file per record)."""

    kind: Literal["function", "directory"]
    target: str

    def describe(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class EventInvokeConfig:
    """The settings of `spec.eventInvokeConfig`; the defaults are Lambda's."""

    maximum_retry_attempts: int = MAX_RETRY_ATTEMPTS
    maximum_event_age_s: float = MAX_EVENT_AGE_S
    retry_delays_s: tuple[float, ...] = (60.0, 120.0)
    throttle_backoff_s: tuple[float, float] = (1.0, 300.0)
    on_success: Destination | None = None
    on_failure: Destination | None = None

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any] | None, *, file: str = "", resource: str = "", path: str = FIELD
    ) -> EventInvokeConfig:
        """The config in `spec` (None: the defaults); `ConfigError` naming `file`, `resource`
        and each bad field under `path`."""
        if spec is None:
            return cls()
        issues = check_event_invoke(spec, path)
        if issues:
            raise ConfigError([Problem(file, resource, p, m) for p, m in issues])
        dests = spec.get("destinationConfig") or {}
        return cls(
            maximum_retry_attempts=spec.get("maximumRetryAttempts", MAX_RETRY_ATTEMPTS),
            maximum_event_age_s=float(spec.get("maximumEventAgeInSeconds", MAX_EVENT_AGE_S)),
            retry_delays_s=tuple(float(d) for d in spec.get("retryDelaysSeconds", (60, 120))),
            throttle_backoff_s=tuple(float(b) for b in spec.get("throttleBackoffSeconds", (1, 300))),  # type: ignore[arg-type]
            on_success=_destination(dests.get("onSuccess")),
            on_failure=_destination(dests.get("onFailure")),
        )


def _destination(spec: Mapping[str, str] | None) -> Destination | None:
    if not spec:
        return None
    kind, target = next(iter(spec.items()))
    return Destination(kind, target)  # type: ignore[arg-type]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_event_invoke(spec: Any, path: str = FIELD) -> list[tuple[str, str]]:
    """Every problem in an `eventInvokeConfig` block: (field path under `path`, what was
    expected)."""
    if not isinstance(spec, Mapping):
        return [(path, "expected an object")]
    out: list[tuple[str, str]] = []
    for key in sorted(set(spec) - set(_KNOWN)):
        out.append((f"{path}.{key}", f"unknown field; expected one of {', '.join(_KNOWN)}"))
    retries = spec.get("maximumRetryAttempts", MAX_RETRY_ATTEMPTS)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRY_ATTEMPTS:
        out.append((f"{path}.maximumRetryAttempts",
                    f"expected an integer 0-{MAX_RETRY_ATTEMPTS} (Lambda's limit), got {retries!r}"))
    age = spec.get("maximumEventAgeInSeconds", MAX_EVENT_AGE_S)
    if not _number(age) or not MIN_EVENT_AGE_S <= age <= MAX_EVENT_AGE_S:
        out.append((f"{path}.maximumEventAgeInSeconds",
                    f"expected {MIN_EVENT_AGE_S}-{MAX_EVENT_AGE_S} seconds (Lambda's limits), got {age!r}"))
    delays = spec.get("retryDelaysSeconds", [60, 120])
    if (not isinstance(delays, list) or not delays
            or not all(_number(d) and 0 < d <= MAX_EVENT_AGE_S for d in delays)):
        out.append((f"{path}.retryDelaysSeconds",
                    f"expected a list of positive seconds, e.g. [60, 120], got {delays!r}"))
    backoff = spec.get("throttleBackoffSeconds", [1, 300])
    if (not isinstance(backoff, list) or len(backoff) != 2
            or not all(_number(b) and b > 0 for b in backoff) or backoff[0] > backoff[1]):
        out.append((f"{path}.throttleBackoffSeconds",
                    f"expected [INITIAL, MAX] seconds with 0 < INITIAL <= MAX, got {backoff!r}"))
    dests = spec.get("destinationConfig") or {}
    if not isinstance(dests, Mapping):
        return [*out, (f"{path}.destinationConfig", "expected an object with onSuccess and/or onFailure")]
    for key in sorted(set(dests) - {"onSuccess", "onFailure"}):
        out.append((f"{path}.destinationConfig.{key}", "unknown field; expected onSuccess or onFailure"))
    for key in ("onSuccess", "onFailure"):
        dest = dests.get(key)
        where = f"{path}.destinationConfig.{key}"
        if dest is None:
            continue
        if not isinstance(dest, Mapping) or len(dest) != 1 or next(iter(dest)) not in ("function", "directory"):
            out.append((where, "expected {function: NAME[:QUALIFIER]} or {directory: PATH}"))
            continue
        kind, target = next(iter(dest.items()))
        if not isinstance(target, str) or not target:
            out.append((f"{where}.{kind}", "expected a non-empty string"))
        elif kind == "function" and not _TARGET.match(target):
            out.append((f"{where}.function", f"expected NAME or NAME:QUALIFIER (version, alias or "
                                             f"$LATEST), got {target!r}"))
    return out
