"""A Function's asynchronous-invocation settings: `spec.eventInvokeConfig` (Lambda's
PutFunctionEventInvokeConfig, plus meshplane's delay settings): its shape, its checks, and
what it reads as.

    eventInvokeConfig:
      maximumRetryAttempts: 2          # 0-2 retries after a function error (Lambda's default 2)
      maximumEventAgeInSeconds: 21600  # 60-21,600: then the event is given up (EventAgeExceeded)
      retryDelaysSeconds: [60, 120]    # meshplane: before retry 1, 2 (Lambda: about 1 and 2 min)
      throttleBackoffSeconds: [1, 300] # meshplane: throttles/system errors back off INITIAL*2^n, at most MAX
      destinationConfig:
        onFailure: {directory: failed/}   # or {function: NAME[:QUALIFIER]}
        onSuccess: {function: audit:live}

`SHAPE` is checked with the rest of the Function (`specs.FUNCTION`); `check_event_invoke`
adds what a shape cannot say (backoff order, a destination function that exists);
`EventInvokeConfig.from_spec` reads a checked block, a relative directory taken from the
config file's directory. Like Lambda's, the setting belongs to the function, not to a
published version. Pure: imports only `schema`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from meshplane.config.schema import Int, ListOf, Num, Obj, Str

__all__ = ["SHAPE", "Destination", "EventInvokeConfig", "check_event_invoke"]

FIELD = "spec.eventInvokeConfig"
MAX_EVENT_AGE_S = 21_600
_DESTINATION = Obj({"function": Str(1, 193), "directory": Str(1, None)}, one_of=("function", "directory"))
SHAPE = Obj({
    "maximumRetryAttempts": Int(0, 2),
    "maximumEventAgeInSeconds": Int(60, MAX_EVENT_AGE_S),
    "retryDelaysSeconds": ListOf(Num(0.001, MAX_EVENT_AGE_S), 1, 10),
    "throttleBackoffSeconds": ListOf(Num(0.001, MAX_EVENT_AGE_S), 2, 2),
    "destinationConfig": Obj({"onSuccess": _DESTINATION, "onFailure": _DESTINATION}),
})
_TARGET = re.compile(r"^(?P<name>[A-Za-z0-9_-]{1,64})(:(\$LATEST|[A-Za-z0-9_-]{1,128}))?$")


@dataclass(frozen=True)
class Destination:
    """Where a record goes: another function (`kind` "function", `target` NAME[:QUALIFIER],
    invoked asynchronously with the record as its event) or a directory (`kind` "directory",
    an absolute path; one JSON file per record)."""

    kind: Literal["function", "directory"]
    target: str

    def describe(self) -> str:
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class EventInvokeConfig:
    """The settings of `spec.eventInvokeConfig`; the defaults are Lambda's."""

    maximum_retry_attempts: int = 2
    maximum_event_age_s: float = MAX_EVENT_AGE_S
    retry_delays_s: tuple[float, ...] = (60.0, 120.0)
    throttle_backoff_s: tuple[float, float] = (1.0, 300.0)
    on_success: Destination | None = None
    on_failure: Destination | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None, base_dir: str = "") -> EventInvokeConfig:
        """Read a block that passed `SHAPE` and `check_event_invoke` (None: the defaults); a
        relative destination directory is taken from `base_dir` (the config file's)."""
        if not spec:
            return cls()
        dests = spec.get("destinationConfig") or {}
        initial, cap = spec.get("throttleBackoffSeconds", (1, 300))
        return cls(
            maximum_retry_attempts=int(spec.get("maximumRetryAttempts", 2)),
            maximum_event_age_s=float(spec.get("maximumEventAgeInSeconds", MAX_EVENT_AGE_S)),
            retry_delays_s=tuple(float(d) for d in spec.get("retryDelaysSeconds", (60, 120))),
            throttle_backoff_s=(float(initial), float(cap)),
            on_success=_destination(dests.get("onSuccess"), base_dir),
            on_failure=_destination(dests.get("onFailure"), base_dir),
        )


def _destination(spec: Mapping[str, str] | None, base_dir: str) -> Destination | None:
    if not spec:
        return None
    if "directory" in spec:
        path = os.path.expanduser(spec["directory"])
        return Destination("directory", os.path.normpath(os.path.join(base_dir or os.getcwd(), path)))
    return Destination("function", spec["function"])


def check_event_invoke(spec: Mapping[str, Any] | None, graph: Any) -> list[tuple[str, str]]:
    """What `SHAPE` cannot say: (field path, what was expected) for each problem."""
    if not isinstance(spec, Mapping):
        return []
    out: list[tuple[str, str]] = []
    backoff = spec.get("throttleBackoffSeconds")
    if isinstance(backoff, list) and len(backoff) == 2 and all(isinstance(b, int | float) for b in backoff) \
            and backoff[0] > backoff[1]:
        out.append((f"{FIELD}.throttleBackoffSeconds",
                    f"expected [INITIAL, MAX] with INITIAL <= MAX, got {backoff}"))
    dests = spec.get("destinationConfig")
    for key in ("onSuccess", "onFailure"):
        dest = dests.get(key) if isinstance(dests, Mapping) else None
        target = dest.get("function") if isinstance(dest, Mapping) else None
        if not isinstance(target, str):
            continue
        path = f"{FIELD}.destinationConfig.{key}.function"
        match = _TARGET.match(target)
        if match is None:
            out.append((path, f"expected NAME or NAME:QUALIFIER (a version, an alias or $LATEST), "
                              f"got {target!r}"))
        elif graph.get("Function", match["name"]) is None:
            out.append((path, graph.unresolved("Function", match["name"])))
    return out
