"""The retry schedule of asynchronous invocations, and Lambda's destination record (sans-I/O).

Lambda (../shared/spec/lambda.md §6): a function error is retried up to
`maximumRetryAttempts` (0-2, default 2), about 1 minute before the first retry and 2 before
the second; throttles and system errors are retried with exponential backoff until the event
is `maximumEventAgeInSeconds` old (60-21,600, default 6 h). Then the event is finished: it
goes to the on-failure destination as a record (`destination_record`); a success optionally
to the on-success one. meshplane makes the delays settable (`AsyncRetryPolicy`), so a test or
an impatient user need not wait minutes.

`next_step` is the whole schedule as one pure function of the attempt's outcome, the event's
counters and the time; `expired` is the check at dequeue. Imports only the standard library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "AsyncRetryPolicy",
    "Condition",
    "EventState",
    "Outcome",
    "Step",
    "destination_record",
    "expired",
    "next_step",
]

Outcome = Literal["success", "function_error", "throttled", "system_error"]
"""How one attempt ended: the function ran and succeeded or failed (`X-Amz-Function-Error`),
or it never ran: throttled (429) or a system error (5xx, no instance)."""

Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded"]


@dataclass(frozen=True)
class AsyncRetryPolicy:
    """The numbers of a function's asynchronous retries (`config.event_invoke` reads them
    from the config); the defaults are Lambda's."""

    maximum_retry_attempts: int = 2
    maximum_event_age_s: float = 21_600
    retry_delays_s: tuple[float, ...] = (60.0, 120.0)
    throttle_backoff_s: tuple[float, float] = (1.0, 300.0)

    def retry_delay(self, retry: int) -> float:
        """Seconds before function-error retry number `retry` (1-based); the last configured
        delay repeats."""
        return self.retry_delays_s[min(retry, len(self.retry_delays_s)) - 1]

    def throttle_delay(self, n: int) -> float:
        """Seconds before the `n`-th (0-based) retry after a throttle or system error:
        INITIAL * 2**n, at most MAX."""
        initial, cap = self.throttle_backoff_s
        return min(cap, initial * math.pow(2, min(n, 62)))


@dataclass(frozen=True)
class EventState:
    """What the queue keeps about an event between attempts."""

    enqueued: float
    invoke_count: int = 0
    error_attempts: int = 0
    system_retries: int = 0


@dataclass(frozen=True)
class Step:
    """What to do with an event now: retry at `retry_at`, or finish with `condition` (then
    its record goes to the destination for that condition, if any). `state` is the event's
    updated counters."""

    state: EventState
    retry_at: float | None = None
    condition: Condition | None = None


def expired(config: AsyncRetryPolicy, state: EventState, now: float) -> Step | None:
    """At dequeue: an event older than the maximum age is not run (EventAgeExceeded)."""
    if now - state.enqueued > config.maximum_event_age_s:
        return Step(state, condition="EventAgeExceeded")
    return None


def next_step(config: AsyncRetryPolicy, state: EventState, outcome: Outcome, now: float) -> Step:
    """After an attempt ending in `outcome` at `now`: retry (when) or finish (how)."""
    ran = outcome in ("success", "function_error")
    state = EventState(state.enqueued, state.invoke_count + ran,
                       state.error_attempts + (outcome == "function_error"), state.system_retries)
    if outcome == "success":
        return Step(state, condition="Success")
    if outcome == "function_error":
        if state.error_attempts > config.maximum_retry_attempts:
            return Step(state, condition="RetriesExhausted")
        retry_at = now + config.retry_delay(state.error_attempts)
    else:
        retry_at = now + config.throttle_delay(state.system_retries)
        state = EventState(state.enqueued, state.invoke_count, state.error_attempts, state.system_retries + 1)
    if retry_at - state.enqueued > config.maximum_event_age_s:
        return Step(state, condition="EventAgeExceeded")
    return Step(state, retry_at=retry_at)


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

