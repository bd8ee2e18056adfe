"""`policy.async_retry`: the retry schedule of asynchronous invocations and the destination
record (pure)."""

from __future__ import annotations

from meshplane.policy.async_retry import (
    AsyncRetryPolicy,
    EventState,
    destination_record,
    expired,
    next_step,
)

T0 = 1_000_000.0


def test_function_error_retried_twice_then_retries_exhausted() -> None:
    c = AsyncRetryPolicy(retry_delays_s=(60.0, 120.0))
    s = EventState(T0)
    step = next_step(c, s, "function_error", T0 + 1)
    assert step.retry_at == T0 + 61 and step.state.invoke_count == 1
    step = next_step(c, step.state, "function_error", T0 + 61)
    assert step.retry_at == T0 + 181 and step.state.error_attempts == 2
    step = next_step(c, step.state, "function_error", T0 + 181)
    assert step.retry_at is None and step.condition == "RetriesExhausted"
    assert step.state.invoke_count == 3


def test_zero_retries_fails_at_once_and_success_finishes() -> None:
    c = AsyncRetryPolicy(maximum_retry_attempts=0)
    assert next_step(c, EventState(T0), "function_error", T0).condition == "RetriesExhausted"
    ok = next_step(c, EventState(T0), "success", T0)
    assert ok.condition == "Success" and ok.retry_at is None and ok.state.invoke_count == 1


def test_throttles_back_off_without_using_attempts_until_event_age() -> None:
    c = AsyncRetryPolicy(maximum_event_age_s=60, throttle_backoff_s=(1.0, 16.0))
    s, now, delays = EventState(T0), T0, []
    while True:
        step = next_step(c, s, "throttled", now)
        if step.retry_at is None:
            break
        delays.append(step.retry_at - now)
        s, now = step.state, step.retry_at
    assert delays[:6] == [1, 2, 4, 8, 16, 16]
    assert step.condition == "EventAgeExceeded" and step.state.error_attempts == 0
    assert step.state.invoke_count == 0  # the function never ran


def test_retry_after_max_age_is_event_age_exceeded() -> None:
    c = AsyncRetryPolicy(maximum_event_age_s=60, retry_delays_s=(90.0,))
    assert next_step(c, EventState(T0), "function_error", T0).condition == "EventAgeExceeded"


def test_expired_at_dequeue() -> None:
    c = AsyncRetryPolicy(maximum_event_age_s=60)
    assert expired(c, EventState(T0), T0 + 59) is None
    step = expired(c, EventState(T0, invoke_count=1), T0 + 61)
    assert step is not None and step.condition == "EventAgeExceeded"


def test_destination_record_shape() -> None:
    record = destination_record(
        request_id="r-1", function_arn="arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
        condition="RetriesExhausted", invoke_count=3, request_payload=b'{"n": 1}',
        response={"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled",
                  "payload": b'{"errorMessage": "boom", "errorType": "ValueError"}'},
        now=1_573_755_365.568)
    assert record == {
        "version": "1.0",
        "timestamp": "2019-11-14T18:16:05.568Z",
        "requestContext": {"requestId": "r-1",
                           "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": {"n": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "boom", "errorType": "ValueError"},
    }
    never_ran = destination_record(request_id="r", function_arn="a", condition="EventAgeExceeded",
                                   invoke_count=0, request_payload=b"{}", response=None, now=T0)
    assert "responseContext" not in never_ran and never_ran["requestContext"]["approximateInvokeCount"] == 0
