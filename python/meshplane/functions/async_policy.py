"""Asynchronous invocation policy, sans-I/O: the event-invoke config, what to do after each
attempt, and the destination record.

Lambda (../shared/spec/lambda.md §6): a function error is retried up to
`maximumRetryAttempts` (0-2, default 2), about 1 minute before the first retry and 2 before
the second; throttles and system errors are retried with exponential backoff until the event
is `maximumEventAgeInSeconds` old (60-21,600, default 6 h). Then the event goes to the
on-failure destination as a record (`destination_record`); a success optionally to the
on-success one. meshplane makes the delays settable (`retryDelaysSeconds`,
`throttleBackoffSeconds`) so a test or a impatient user need not wait minutes.

`EventInvokeConfig.from_spec(spec, where)` reads a Function's `eventInvokeConfig` block and
raises `ConfigError` naming every bad field; `next_step` is the whole retry schedule as one
pure function of the attempt's outcome, the event's counters and the time.
Imports only `meshplane.errors`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from meshplane.errors import ConfigError, Problem

__all__ = [
    "Destination",
    "EventInvokeConfig",
    "Outcome",
    "Step",
    "destination_record",
    "next_step",
]

Outcome = Literal["success", "function_error", "throttled", "system_error"]
"""How one attempt ended: the function ran and succeeded or failed (`X-Amz-Function-Error`),
or it never ran: throttled (429) or a system error (5xx, no instance)."""

Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded"]

MAX_RETRY_ATTEMPTS = 2
MIN_EVENT_AGE_S = 60
MAX_EVENT_AGE_S = 21_600


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
    """A function's asynchronous-invocation settings (Lambda's PutFunctionEventInvokeConfig,
    plus meshplane's delay settings)."""

    maximum_retry_attempts: int = MAX_RETRY_ATTEMPTS
    maximum_event_age_s: float = MAX_EVENT_AGE_S
    retry_delays_s: tuple[float, ...] = (60.0, 120.0)
    throttle_backoff_s: tuple[float, float] = (1.0, 300.0)
    on_success: Destination | None = None
    on_failure: Destination | None = None

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any] | None,
        *,
        file: str = "",
        resource: str = "",
        path: str = "spec.eventInvokeConfig",
    ) -> EventInvokeConfig:
        """The config in a Function's `eventInvokeConfig` (None: the defaults); `ConfigError`
        naming `file`, `resource` and each bad field under `path`."""
        if spec is None:
            return cls()
        problems: list[Problem] = []

        def bad(field_path: str, what: str) -> None:
            problems.append(Problem(file, resource, f"{path}.{field_path}", what))

        if not isinstance(spec, Mapping):
            raise ConfigError([Problem(file, resource, path, "expected an object")])
        known = {"maximumRetryAttempts", "maximumEventAgeInSeconds", "retryDelaysSeconds",
                 "throttleBackoffSeconds", "destinationConfig"}
        for key in sorted(set(spec) - known):
            bad(key, f"unknown field; expected one of {', '.join(sorted(known))}")
        retries = spec.get("maximumRetryAttempts", MAX_RETRY_ATTEMPTS)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRY_ATTEMPTS:
            bad("maximumRetryAttempts", f"expected an integer 0-{MAX_RETRY_ATTEMPTS}, got {retries!r}")
            retries = MAX_RETRY_ATTEMPTS
        age = spec.get("maximumEventAgeInSeconds", MAX_EVENT_AGE_S)
        if not _number(age) or not MIN_EVENT_AGE_S <= age <= MAX_EVENT_AGE_S:
            bad("maximumEventAgeInSeconds",
                f"expected {MIN_EVENT_AGE_S}-{MAX_EVENT_AGE_S} seconds, got {age!r}")
            age = MAX_EVENT_AGE_S
        delays = spec.get("retryDelaysSeconds", [60, 120])
        if (not isinstance(delays, list) or not delays
                or not all(_number(d) and 0 < d <= MAX_EVENT_AGE_S for d in delays)):
            bad("retryDelaysSeconds", f"expected a list of positive seconds, e.g. [60, 120], got {delays!r}")
            delays = [60, 120]
        backoff = spec.get("throttleBackoffSeconds", [1, 300])
        if (not isinstance(backoff, list) or len(backoff) != 2 or not all(_number(b) and b > 0 for b in backoff)
                or backoff[0] > backoff[1]):
            bad("throttleBackoffSeconds", f"expected [INITIAL, MAX] seconds with 0 < INITIAL <= MAX, got {backoff!r}")
            backoff = [1, 300]
        destinations: dict[str, Destination | None] = {"onSuccess": None, "onFailure": None}
        dest_spec = spec.get("destinationConfig") or {}
        if not isinstance(dest_spec, Mapping):
            bad("destinationConfig", "expected an object with onSuccess and/or onFailure")
            dest_spec = {}
        for key in sorted(set(dest_spec) - set(destinations)):
            bad(f"destinationConfig.{key}", "unknown field; expected onSuccess or onFailure")
        for key in destinations:
            if dest_spec.get(key) is not None:
                destinations[key] = _destination(dest_spec[key], f"destinationConfig.{key}", bad)
        if problems:
            raise ConfigError(problems)
        return cls(
            maximum_retry_attempts=retries,
            maximum_event_age_s=float(age),
            retry_delays_s=tuple(float(d) for d in delays),
            throttle_backoff_s=(float(backoff[0]), float(backoff[1])),
            on_success=destinations["onSuccess"],
            on_failure=destinations["onFailure"],
        )

    def retry_delay(self, retry: int) -> float:
        """Seconds before function-error retry number `retry` (1-based); the last configured
        delay repeats."""
        return self.retry_delays_s[min(retry, len(self.retry_delays_s)) - 1]

    def throttle_delay(self, n: int) -> float:
        """Seconds before the `n`-th (0-based) retry after a throttle or system error:
        INITIAL * 2**n, at most MAX."""
        initial, cap = self.throttle_backoff_s
        return min(cap, initial * math.pow(2, min(n, 62)))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _destination(spec: Any, path: str, bad: Any) -> Destination | None:
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in ("function", "directory"):
        bad(path, "expected {function: NAME[:QUALIFIER]} or {directory: PATH}")
        return None
    kind, target = next(iter(spec.items()))
    if not isinstance(target, str) or not target:
        bad(f"{path}.{kind}", "expected a non-empty string")
        return None
    if kind == "function":
        from meshplane.functions.invocation import LambdaError, split_function_name

        try:
            name, qualifier = split_function_name(target)
        except LambdaError as exc:
            bad(f"{path}.function", exc.message)
            return None
        target = f"{name}:{qualifier}" if qualifier else name
    return Destination(kind, target)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EventState:
    """What the queue keeps about an event between attempts."""

    enqueued: float
    invoke_count: int = 0
    error_attempts: int = 0
    system_retries: int = 0


@dataclass(frozen=True)
class Step:
    """What to do with an event now: `retry_at` (a time) or finish with `condition` (then send
    to a destination, if one is set for it). `state` is the event's updated counters."""

    state: EventState
    retry_at: float | None = None
    condition: Condition | None = None
    destinations: tuple[Destination, ...] = field(default=())


def expired(config: EventInvokeConfig, state: EventState, now: float) -> Step | None:
    """At dequeue: an event older than the maximum age is not run (EventAgeExceeded)."""
    if now - state.enqueued > config.maximum_event_age_s:
        return _finish(config, state, "EventAgeExceeded")
    return None


def next_step(config: EventInvokeConfig, state: EventState, outcome: Outcome, now: float) -> Step:
    """After an attempt ending in `outcome` at `now`: retry (when) or finish (how)."""
    ran = outcome in ("success", "function_error")
    state = EventState(state.enqueued, state.invoke_count + ran,
                       state.error_attempts + (outcome == "function_error"), state.system_retries)
    if outcome == "success":
        return _finish(config, state, "Success")
    if outcome == "function_error":
        if state.error_attempts > config.maximum_retry_attempts:
            return _finish(config, state, "RetriesExhausted")
        retry_at = now + config.retry_delay(state.error_attempts)
    else:
        retry_at = now + config.throttle_delay(state.system_retries)
        state = EventState(state.enqueued, state.invoke_count, state.error_attempts, state.system_retries + 1)
    if retry_at - state.enqueued > config.maximum_event_age_s:
        return _finish(config, state, "EventAgeExceeded")
    return Step(state, retry_at=retry_at)


def _finish(config: EventInvokeConfig, state: EventState, condition: Condition) -> Step:
    dest = config.on_success if condition == "Success" else config.on_failure
    return Step(state, condition=condition, destinations=(dest,) if dest else ())


def _json_or_text(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


def destination_record(
    *,
    request_id: str,
    function_arn: str,
    condition: Condition,
    invoke_count: int,
    request_payload: bytes,
    response: Mapping[str, Any] | None,
    now: float,
) -> dict[str, Any]:
    """Lambda's destination record. `response` is the last attempt's
    `{"statusCode", "executedVersion", "functionError"?, "payload": bytes}` (None when the
    function never ran, e.g. throttled until the event expired)."""
    stamp = datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": stamp,
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": _json_or_text(request_payload),
    }
    if response is not None:
        context: dict[str, Any] = {"statusCode": response["statusCode"],
                                   "executedVersion": response["executedVersion"]}
        if response.get("functionError"):
            context["functionError"] = response["functionError"]
        record["responseContext"] = context
        record["responsePayload"] = _json_or_text(response.get("payload"))
    return record


def delays_repr(delays: Sequence[float]) -> str:
    return ", ".join(f"{d:g}s" for d in delays)
