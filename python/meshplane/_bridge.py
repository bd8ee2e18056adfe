"""The Trio side of the wake-up bridge between the Rust core and Python.

Rust threads never call into Python: they queue events and write a byte to a socket
(`rust/src/notify.rs`). One Trio task, `EventBridge.run`, waits for that socket to become readable,
drains the queue with `Core.drain_events()` and hands each event to the subscribers of its kind.
This is Trio's own wake-up socketpair pattern (`trio/_core/_wakeup_socketpair.py`).

Layer: above `config` and `policy`, below `drivers`. Imports trio but not the compiled core: the
core is any object with `wakeup_fd()` and `drain_events()` (see `EventSource`), so tests can feed
the bridge from a plain pipe.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeAlias

import trio

__all__ = [
    "Event",
    "EventBridge",
    "EventSource",
    "InstanceWantedEvent",
    "OutlierEvent",
    "TaskStatus",
    "collapse_groups",
    "single_error",
]

log = logging.getLogger("meshplane.bridge")

class Event(Protocol):
    """One event from the core (`meshplane._core.OutlierEvent`, `InstanceWantedEvent`,
    `StoppedEvent`): a typed value whose `kind` ("outlier", "instance_wanted", "stopped")
    subscribers select it by."""

    @property
    def kind(self) -> str: ...


class OutlierEvent(Event, Protocol):
    """`meshplane._core.OutlierEvent`: a host reached a consecutive-failure threshold."""

    @property
    def cluster(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def type(self) -> str: ...


class InstanceWantedEvent(Event, Protocol):
    """`meshplane._core.InstanceWantedEvent`: a request of a function cluster waits for an
    instance (kind "instance_wanted")."""

    @property
    def cluster(self) -> str: ...
    @property
    def waiting(self) -> int: ...
    @property
    def busy(self) -> int: ...
    @property
    def hosts(self) -> int: ...


TaskStatus: TypeAlias = trio.TaskStatus[Any]
"""What `nursery.start` passes as `task_status`."""


class EventSource(Protocol):
    """The part of `meshplane._core.Core` the bridge uses."""

    def wakeup_fd(self) -> int: ...

    # Sequence (covariant), so the core's list[OutlierEvent | ... | StoppedEvent] satisfies it.
    def drain_events(self) -> Sequence[Event]: ...


class EventBridge:
    """Dispatches the core's events to Trio subscribers, by kind.

    Each subscriber gets a bounded channel. The bridge never waits for a subscriber: when one's
    buffer is full the event is dropped for that subscriber and counted in `dropped[kind]`, so a
    slow consumer can't stall the others or make the core's queue grow. The first drop of each
    kind is logged at warning level; every drop is counted (the admin API's /stats shows the
    counts as `control.events_dropped`).
    """

    def __init__(self, source: EventSource, *, buffer: int = 256) -> None:
        self._source = source
        self._buffer = buffer
        self._subscribers: dict[str, list[trio.MemorySendChannel[Event]]] = {}
        self.dropped: dict[str, int] = {}
        """Events not delivered because a subscriber's buffer was full, by kind (0 for every
        kind subscribed to, so the counters exist before the first drop)."""

    def subscribe(
        self, kind: str, *, buffer: int | None = None
    ) -> trio.MemoryReceiveChannel[Event]:
        """A channel that receives every later event of `kind` ("*" for every kind).

        Close the returned channel to unsubscribe. `buffer` (default: the bridge's) bounds how
        many undelivered events it holds; more are dropped and counted.
        """
        size = self._buffer if buffer is None else buffer
        send, receive = trio.open_memory_channel[Event](max(1, size))
        self._subscribers.setdefault(kind, []).append(send)
        if kind != "*":
            self.dropped.setdefault(kind, 0)
        return receive

    def dispatch(self, events: Sequence[Event]) -> None:
        """Hand `events` to their subscribers without blocking."""
        for event in events:
            kind = event.kind
            for key in (kind, "*"):
                subscribers = self._subscribers.get(key)
                if not subscribers:
                    continue
                for send in list(subscribers):
                    try:
                        send.send_nowait(event)
                    except trio.WouldBlock:
                        count = self.dropped[kind] = self.dropped.get(kind, 0) + 1
                        if count == 1:
                            log.warning("a subscriber to %r events cannot keep up: events dropped "
                                        "(further drops are counted in /stats, control.events_dropped)",
                                        kind)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        subscribers.remove(send)

    async def run(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Wait for the wake-up fd, drain, dispatch; forever.

        Reports readiness once it is waiting. On cancellation it stops waiting and closes
        every subscriber channel, so subscribers see end-of-channel rather than hang; events
        queued but not yet drained stay in the core.
        """
        fd = self._source.wakeup_fd()
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(fd)
                self.dispatch(self._source.drain_events())
        finally:
            for subscribers in self._subscribers.values():
                for send in subscribers:
                    send.close()
            self._subscribers.clear()
            lost = {kind: n for kind, n in self.dropped.items() if n}
            if lost:
                log.warning("core events dropped for slow subscribers: %s", lost)


def single_error(exc: BaseException) -> BaseException:
    """The one error inside a (nested) exception group, or `exc` itself when there are several."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@contextmanager
def collapse_groups() -> Iterator[None]:
    """Re-raise a group holding a single error as that error.

    Wrap a nursery that encloses user code with this, so `async with Proxy(...)` raises the
    `ConfigError` or `ValueError` the body raised, with or without trio's strict exception
    groups (the default from trio 0.25 on). Groups of several errors pass unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        error = single_error(group)
        if error is group:
            raise
        raise error from None
