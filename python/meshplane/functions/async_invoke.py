"""Asynchronous invocation (`X-Amz-Invocation-Type: Event`): queue durably, run, retry, deliver.

`AsyncInvoker.submit` writes the event to the `EventQueue` (on disk before the caller gets its
202) and wakes the consumer; `AsyncInvoker.run` is the consumer task: it claims due events, at
most `parallelism` at once, invokes each through the same `FunctionInvoker` synchronous calls
use (so reserved concurrency and throttling are shared), and asks
what follows (`policy.async_retry.next_step`): a retry at a time (the event stays queued, so a restart resumes the schedule) or
the end, with the record sent to the on-success or on-failure destination (a directory: one
JSON file per record, written atomically; a function: a new asynchronous event, as Lambda
does). Counters use Lambda's metric names (`stats()`).

Cancellation: `run` stops claiming and cancels attempts in flight; their events keep their
lease until it lapses or the process is gone (`EventQueue`), then run again (at least once).
Imports trio, `config.event_invoke`, `policy.async_retry` and the other `functions` modules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

from meshplane._bridge import TaskStatus
from meshplane.config.event_invoke import Destination, EventInvokeConfig
from meshplane.functions.event_queue import EventQueue, QueuedEvent
from meshplane.functions.invocation import FunctionInvoker, InvocationResult, function_arn
from meshplane.functions.service import FunctionNotFound
from meshplane.policy.async_retry import (
    AsyncRetryPolicy,
    Outcome,
    Step,
    destination_record,
    expired,
    next_step,
)

__all__ = ["AsyncInvoker"]

log = logging.getLogger("meshplane.functions.async")

MAX_IDLE_WAIT_S = 30.0
"""Longest the consumer sleeps without looking at the queue (a lapsed lease, a clock step)."""


class AsyncInvoker:
    """The asynchronous invocation queue and its consumer; see the module docstring.

    `config_for(name)` returns a function's `EventInvokeConfig` and raises `FunctionNotFound`
    for a function that no longer exists (its events are dropped, counted)."""

    def __init__(
        self,
        invoker: FunctionInvoker,
        queue: EventQueue,
        config_for: Callable[[str], EventInvokeConfig],
        *,
        parallelism: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.invoker = invoker
        self.queue = queue
        self.config_for = config_for
        self.parallelism = parallelism
        self.clock = clock
        self._wake = trio.Event()
        self._running = 0
        self._counters: dict[str, Counter[str]] = {}
        # The queue's size as the consumer last read it: stats() never touches SQLite.
        self._depth: tuple[int, float | None] = (0, None)

    def _count(self, function: str, name: str, n: int = 1) -> None:
        self._counters.setdefault(function, Counter())[name] += n

    async def submit(self, function: str, qualifier: str | None, payload: bytes) -> str:
        """Queue one event for `function:qualifier`; returns its request id once it is on disk."""
        request_id = str(uuid.uuid4())
        await trio.to_thread.run_sync(self.queue.put, request_id, function, qualifier, payload, self.clock())
        self._count(function, "AsyncEventsReceived")
        depth, oldest = self._depth
        self._depth = (depth + 1, oldest if oldest is not None else self.clock())
        self._wake.set()
        return request_id

    async def run(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Consume the queue until cancelled; reports readiness at once."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                # A new Event before looking, so a submit during the claim is not missed.
                self._wake = trio.Event()
                free = self.parallelism - self._running
                if free <= 0:
                    await self._wake.wait()  # full: until an attempt ends
                    continue
                events = await trio.to_thread.run_sync(self.queue.claim, self.clock(), free)
                for event in events:
                    self._running += 1
                    nursery.start_soon(self._attempt, event)
                if len(events) == free:
                    continue  # full now; the next round waits
                due, depth, oldest = await trio.to_thread.run_sync(self.queue.summary)
                self._depth = (depth, oldest)
                wait = MAX_IDLE_WAIT_S if due is None else min(MAX_IDLE_WAIT_S, due - self.clock())
                if wait > 0:
                    with trio.move_on_after(wait):
                        await self._wake.wait()

    async def _attempt(self, event: QueuedEvent) -> None:
        try:
            await self._run_event(event)
        except trio.Cancelled:
            # Stopping: the event is due again at once for the next consumer (at least once:
            # the function may have run).
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.queue.release, event.id)
            raise
        except Exception:
            # NOTE: the event keeps its lease and runs again when it lapses (at least once).
            log.exception("async invocation %s of %s failed in meshplane", event.id, event.function)
        finally:
            self._running -= 1
            self._wake.set()

    async def _run_event(self, event: QueuedEvent) -> None:
        try:
            config = self.config_for(event.function)
            policy = retry_policy(config)
            response = event.last_response
            step = expired(policy, event.state, self.clock())
            if step is None:
                outcome, ran = await self._invoke(event)
                if ran is not None:
                    response = ran
                step = next_step(policy, event.state, outcome, self.clock())
        except FunctionNotFound as exc:
            log.warning("async event %s dropped: %s", event.id, exc)
            self._count(event.function, "AsyncEventsDropped")
            await trio.to_thread.run_sync(self.queue.delete, event.id)
            return
        if step.retry_at is not None:
            self._count(event.function, "AsyncRetries")
            await trio.to_thread.run_sync(self.queue.reschedule, event.id, step.state, step.retry_at, response)
            return
        await self._finish(event, step, response, config)

    async def _invoke(self, event: QueuedEvent) -> tuple[Outcome, dict[str, Any] | None]:
        """One attempt: its outcome and, when the function ran, the response to remember.
        FunctionNotFound passes through (the function or qualifier is gone)."""
        try:
            result = await self.invoker.invoke(event.function, event.qualifier, event.payload,
                                               invocation_type="RequestResponse", request_id=event.id)
        except FunctionNotFound:
            raise
        except Exception as exc:
            log.warning("async invocation %s of %s failed before the function ran: %r",
                        event.id, event.function, exc)
            return "system_error", None
        return _outcome(result), _response(result)

    async def _finish(self, event: QueuedEvent, step: Step, response: dict[str, Any] | None,
                      config: EventInvokeConfig) -> None:
        condition = step.condition or "RetriesExhausted"
        self._count(event.function, "AsyncEventsSucceeded" if condition == "Success" else "AsyncEventsFailed")
        dest = config.on_success if condition == "Success" else config.on_failure
        if condition != "Success" and dest is None:
            self._count(event.function, "AsyncEventsDropped")
            log.warning("async event %s of %s dropped (%s, no failure destination)",
                        event.id, event.function, condition)
        record = destination_record(
            request_id=event.id,
            function_arn=function_arn(event.function, event.qualifier or "$LATEST"),
            condition=condition,
            invoke_count=step.state.invoke_count,
            request_payload=event.payload,
            response=_decoded(response),
            now=self.clock(),
        )
        if dest is not None:
            try:
                await self._deliver(dest, event.id, record)
            except Exception as exc:
                self._count(event.function, "DestinationDeliveryFailures")
                log.error("async event %s of %s: delivery to %s failed: %s",
                          event.id, event.function, dest.describe(), exc)
            else:
                self._count(event.function, "DestinationDeliveries")
        await trio.to_thread.run_sync(self.queue.delete, event.id)

    async def _deliver(self, dest: Destination, request_id: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, indent=2).encode() + b"\n"
        if dest.kind == "directory":
            await trio.to_thread.run_sync(_write_record, dest.target, request_id, record["timestamp"], data)
            return
        name, _, qualifier = dest.target.partition(":")
        self.config_for(name)  # FunctionNotFound if the destination function is gone
        await self.submit(name, qualifier or None, data)

    def stats(self) -> dict[str, Any]:
        """Per function: Lambda's async counters (AsyncEventsReceived, AsyncEventsDropped,
        DestinationDeliveryFailures, ...); and the queue: depth, oldest event's age in ms
        (AsyncEventAge), attempts running now. The depth is as of the consumer's last look
        (plus events submitted since), so this never waits for the queue's file."""
        depth, oldest = self._depth
        return {
            "functions": {name: dict(c) for name, c in sorted(self._counters.items())},
            "queue": {"path": self.queue.path, "depth": depth, "running": self._running,
                      "oldest_age_ms": None if oldest is None else max(0.0, (self.clock() - oldest) * 1000)},
        }


def retry_policy(config: EventInvokeConfig) -> AsyncRetryPolicy:
    return AsyncRetryPolicy(config.maximum_retry_attempts, config.maximum_event_age_s,
                            config.retry_delays_s, config.throttle_backoff_s)


def _outcome(result: InvocationResult) -> Outcome:
    if result.function_error:
        return "function_error"
    if result.status == 429:
        return "throttled"
    if 200 <= result.status < 300:
        return "success"
    return "system_error"


def _response(result: InvocationResult) -> dict[str, Any] | None:
    """What the record keeps of an attempt that ran the function (JSON-safe)."""
    if not result.function_error and not 200 <= result.status < 300:
        return None
    return {"statusCode": 200, "executedVersion": result.executed_version or "$LATEST",
            "functionError": result.function_error,
            "payload": result.payload.decode("utf-8", "replace")}


def _decoded(response: dict[str, Any] | None) -> dict[str, Any] | None:
    if response is None:
        return None
    return {**response, "payload": str(response.get("payload", "")).encode()}


def _write_record(directory: str, request_id: str, timestamp: str, data: bytes) -> None:
    """`<directory>/<timestamp>-<request id>.json`, complete or absent (write, fsync, rename)."""
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"{timestamp.replace(':', '')}-{request_id}.json")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".record-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
