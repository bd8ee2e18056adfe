"""`functions.async_invoke`: the consumer over a real SQLite queue, driven by a scripted
function runtime (each call's answer fixed in advance), with delays of milliseconds."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio
from meshplane.config.event_invoke import Destination, EventInvokeConfig
from meshplane.functions.async_invoke import AsyncInvoker
from meshplane.functions.event_queue import EventQueue
from meshplane.functions.service import FunctionNotFound


@dataclass(frozen=True)
class Result:
    status: int
    payload: bytes
    function_error: str | None = None
    executed_version: str = "$LATEST"
    log_tail: str = ""


ERROR = Result(200, b'{"errorMessage": "boom", "errorType": "ValueError"}', "Unhandled")


class Scripted:
    """Answers each function's calls from its script (the last answer repeats); records calls."""

    def __init__(self, scripts: dict[str, list[Result | Exception]]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, str | None, bytes, str]] = []
        self.request_ids: list[str | None] = []

    async def invoke(self, name: str, qualifier: str | None, payload: bytes, *, invocation_type: str,
                     client_context: str | None = None, request_id: str | None = None):
        if name not in self.scripts:
            raise FunctionNotFound(f"Function not found: {name}")
        self.calls.append((name, qualifier, payload, invocation_type))
        self.request_ids.append(request_id)
        script = self.scripts[name]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def configs(by_name: dict[str, EventInvokeConfig]) -> Callable[[str], EventInvokeConfig]:
    def config_for(name: str) -> EventInvokeConfig:
        if name not in by_name:
            raise FunctionNotFound(f"Function not found: {name}")
        return by_name[name]

    return config_for


async def wait_for(predicate: Callable[[], object], what: str) -> None:
    with trio.move_on_after(10):
        while not predicate():
            await trio.sleep(0.005)
        return
    raise AssertionError(f"timed out waiting for {what}")


FAST = {"retry_delays_s": (0.01, 0.02), "throttle_backoff_s": (0.005, 0.02)}


async def test_function_error_retried_twice_then_failure_directory(tmp_path: Path) -> None:
    dlq = tmp_path / "dlq"
    runtime = Scripted({"f": [ERROR]})
    config = EventInvokeConfig(**FAST, on_failure=Destination("directory", str(dlq)))
    invoker = AsyncInvoker(runtime, EventQueue(str(tmp_path / "q.db")), configs({"f": config}))
    async with trio.open_nursery() as nursery:
        await nursery.start(invoker.run)
        request_id = await invoker.submit("f", "live", b'{"order": 7}')
        await wait_for(lambda: dlq.exists() and any(dlq.glob("*.json")), "the failure record")
        await wait_for(lambda: invoker.stats()["queue"]["depth"] == 0, "the event to leave the queue")
        nursery.cancel_scope.cancel()
    [path] = list(dlq.glob("*.json"))
    record = json.loads(path.read_text())
    assert request_id in path.name
    assert record["requestContext"] == {
        "requestId": request_id, "functionArn": "arn:aws:lambda:local:000000000000:function:f:live",
        "condition": "RetriesExhausted", "approximateInvokeCount": 3}
    assert record["requestPayload"] == {"order": 7}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorMessage"] == "boom"
    assert [c[:3] for c in runtime.calls] == [("f", "live", b'{"order": 7}')] * 3
    stats = invoker.stats()
    assert stats["functions"]["f"]["AsyncEventsReceived"] == 1
    assert stats["functions"]["f"]["AsyncRetries"] == 2
    assert stats["functions"]["f"]["DestinationDeliveries"] == 1
    assert stats["queue"]["depth"] == 0


async def test_throttles_retried_then_success_goes_to_a_function(tmp_path: Path) -> None:
    ok = Result(200, b'{"done": true}', executed_version="3")
    runtime = Scripted({"f": [OSError("the proxy is stopping"), Result(503, b"no instance"),
                              Result(429, b""), ok],
                        "audit": [Result(200, b"null")]})
    f_config = EventInvokeConfig(**FAST, on_success=Destination("function", "audit"))
    invoker = AsyncInvoker(runtime, EventQueue(str(tmp_path / "q.db")),
                           configs({"f": f_config, "audit": EventInvokeConfig()}))
    async with trio.open_nursery() as nursery:
        await nursery.start(invoker.run)
        request_id = await invoker.submit("f", None, b"[1, 2]")
        await wait_for(lambda: any(c[0] == "audit" for c in runtime.calls), "the success record")
        nursery.cancel_scope.cancel()
    assert [c[0] for c in runtime.calls] == ["f", "f", "f", "f", "audit"]
    assert runtime.request_ids[:4] == [request_id] * 4  # the handler sees the event's id
    record = json.loads(runtime.calls[-1][2])
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["approximateInvokeCount"] == 1  # throttled calls never ran
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "3"}
    assert record["responsePayload"] == {"done": True}


async def test_queued_events_survive_the_consumer_and_run_when_it_returns(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    runtime = Scripted({"f": [Result(200, b"1")]})
    first = AsyncInvoker(runtime, EventQueue(path), configs({"f": EventInvokeConfig()}))
    for i in range(3):
        await first.submit("f", None, json.dumps({"i": i}).encode())  # no consumer running
    assert first.stats()["queue"]["depth"] == 3
    second = AsyncInvoker(runtime, EventQueue(path), configs({"f": EventInvokeConfig()}))
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        await wait_for(lambda: second.stats()["queue"]["depth"] == 0, "the queue to drain")
        nursery.cancel_scope.cancel()
    assert sorted(json.loads(c[2])["i"] for c in runtime.calls) == [0, 1, 2]
    assert all(c[3] == "RequestResponse" for c in runtime.calls)


async def test_events_of_a_removed_function_are_dropped_and_counted(tmp_path: Path) -> None:
    runtime = Scripted({})
    invoker = AsyncInvoker(runtime, EventQueue(str(tmp_path / "q.db")), configs({}))
    async with trio.open_nursery() as nursery:
        await nursery.start(invoker.run)
        await invoker.submit("gone", None, b"{}")
        await wait_for(lambda: invoker.stats()["queue"]["depth"] == 0, "the event to go")
        nursery.cancel_scope.cancel()
    assert invoker.stats()["functions"]["gone"]["AsyncEventsDropped"] == 1
    assert runtime.calls == []


async def test_parallelism_bounds_attempts_in_flight(tmp_path: Path) -> None:
    running = 0
    most = 0
    release = trio.Event()

    class Slow:
        async def invoke(self, name, qualifier, payload, *, invocation_type, client_context=None,
                         request_id=None):
            nonlocal running, most
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1
            return Result(200, b"null")

    invoker = AsyncInvoker(Slow(), EventQueue(str(tmp_path / "q.db")), configs({"f": EventInvokeConfig()}),
                           parallelism=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(invoker.run)
        for _ in range(8):
            await invoker.submit("f", None, b"{}")
        await wait_for(lambda: running == 3, "three attempts in flight")
        release.set()
        await wait_for(lambda: invoker.stats()["queue"]["depth"] == 0, "the queue to drain")
        nursery.cancel_scope.cancel()
    assert most == 3


async def test_an_attempt_cut_short_by_shutdown_runs_again(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    entered = trio.Event()

    class Stuck:
        async def invoke(self, name, qualifier, payload, *, invocation_type, client_context=None,
                         request_id=None):
            entered.set()
            await trio.sleep_forever()

    first = AsyncInvoker(Stuck(), EventQueue(path), configs({"f": EventInvokeConfig()}))
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        request_id = await first.submit("f", None, b'{"x": 1}')
        await entered.wait()
        nursery.cancel_scope.cancel()  # the proxy stops mid-invocation
    # The lease was given back: the next consumer runs the event at once (at least once).
    runtime = Scripted({"f": [Result(200, b"null")]})
    second = AsyncInvoker(runtime, EventQueue(path), configs({"f": EventInvokeConfig()}))
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        await wait_for(lambda: runtime.calls, "the event to run again")
        nursery.cancel_scope.cancel()
    assert runtime.request_ids == [request_id] and runtime.calls[0][2] == b'{"x": 1}'
