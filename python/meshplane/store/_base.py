"""The store interface: a revisioned key-value map with leases and prefix watches.

Both back-ends (`SqliteStore`, the embedded default; `EtcdStore`, etcd v3) implement `Store`
with etcd's semantics: every write bumps one store-wide revision; a key carries the revision it
was created and last modified at; a key attached to a lease disappears when the lease expires;
`put_if` is a compare-and-swap on a key's modification revision (0 = "must not exist").
`watch_changes(prefix, after)` yields batches of `Change`s (key, new value or None when
deleted) to keys under `prefix` after revision `after`, so a watcher of 10,000 keys applies
deltas instead of re-reading them all; `watch` reduces that to "changed at revision R" for
watchers that re-read. A watch that cannot continue from `after` (etcd compacted it, the
embedded change log was pruned) raises `WatchExpired`: re-read with `range`, watch again.

Imports only the standard library and `meshplane.errors`.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import NamedTuple

from meshplane.errors import MeshplaneError

__all__ = [
    "Change",
    "KeyValue",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WatchExpired",
    "prefix_end",
]


class StoreError(MeshplaneError):
    """A store refused an operation (bad URL, unknown lease, ...). `url` names the store."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(f"store {url}: {message}")


class StoreUnavailable(StoreError):
    """The store could not be reached (connection refused, timeout, stream lost)."""


class WatchExpired(StoreError):
    """A watch cannot resume from the revision asked for; re-read and watch again."""


class Change(NamedTuple):
    key: str
    value: bytes | None  # None: deleted (or its lease expired)
    revision: int


class KeyValue(NamedTuple):
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int  # 0 = no lease


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with `prefix` (etcd's range_end)."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return raw.decode("utf-8", errors="surrogateescape")
        raw.pop()
    return "\0"


class Store(abc.ABC):
    """A revisioned key-value store shared by meshplane processes; see the module docstring.

    Every method raises `StoreUnavailable` (one line naming the URL) when the store cannot be
    reached. Cancellation abandons the operation; a write may or may not have happened.
    """

    url: str

    @abc.abstractmethod
    async def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix`, sorted, and the store revision they were read at."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write `key`; returns the new store revision."""

    @abc.abstractmethod
    async def put_if(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> bool:
        """Write `key` only if its modification revision is `mod_revision` (0: only if absent)."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete `key`; False if it did not exist."""

    @abc.abstractmethod
    async def grant_lease(self, ttl: float) -> int:
        """A new lease that expires `ttl` seconds from now unless kept alive; its id."""

    @abc.abstractmethod
    async def keepalive(self, lease: int) -> bool:
        """Renew `lease` for its full TTL; False if it already expired (its keys are gone)."""

    @abc.abstractmethod
    async def revoke(self, lease: int) -> None:
        """End `lease` now, deleting its keys."""

    @abc.abstractmethod
    def watch_changes(self, prefix: str, after: int) -> AsyncGenerator[list[Change], None]:
        """Yield the changes to keys under `prefix` after revision `after`, in batches.

        A batch may coalesce several changes of one key (the last wins). Raises
        `StoreUnavailable` when the store is lost and `WatchExpired` when it cannot resume from
        `after`; the caller re-reads and watches again.
        """

    async def watch(self, prefix: str, after: int) -> AsyncGenerator[int, None]:
        """Yield a store revision each time a key under `prefix` changed after revision `after`
        (the changes themselves: `watch_changes`)."""
        async with aclosing(self.watch_changes(prefix, after)) as batches:
            async for batch in batches:
                yield max(c.revision for c in batch)

    async def aclose(self) -> None:  # noqa: B027 - optional for back-ends without resources
        """Release connections; the store is unusable afterwards."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
