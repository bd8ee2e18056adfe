"""Waiting in end-to-end tests: one bounded poll, shared by every e2e package.

Readiness is awaited where the code reports it (`nursery.start`, a printed line); `eventually`
is for effects nothing announces (a counter the core updates, a file a writer thread flushes,
a host's health flag). It polls a cheap predicate, sync or async, and fails the test with
`what` once `timeout` seconds pass. It returns nothing: how long something took is never a
test assertion (docs/architecture.md), only whether it happened. `until_set` bounds the
background traffic loops that run until the test sets an event.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

__all__ = ["MAX_TRAFFIC_REQUESTS", "eventually", "until_set"]

POLL_S = 0.005
"""Between two looks at the predicate: a polling interval, not a wait for readiness."""


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 5.0,
    what: str = "condition",
    poll: float = POLL_S,
) -> None:
    """Poll `predicate` until it returns something true; AssertionError after `timeout` s."""
    with trio.move_on_after(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


MAX_TRAFFIC_REQUESTS = 20_000
"""Most requests one traffic loop of a test sends, whatever else stops it."""


def until_set(stop: trio.Event, *, cap: int = MAX_TRAFFIC_REQUESTS) -> Iterator[int]:
    """0, 1, 2, ... while `stop` is not set, at most `cap` of them: the bound of a test's
    background traffic loop (`for _ in until_set(stop): await client.get(url)`)."""
    for i in range(cap):
        if stop.is_set():
            return
        yield i
