"""The durable queue of asynchronous invocations: one SQLite file, synchronous and plain.

An event is a row from `put` until `delete`. `claim(now, limit)` takes up to `limit` due
events (`due <= now`, not leased) in one `BEGIN IMMEDIATE` transaction and leases them to the
calling process until `now + lease_s`, so two consumers (two proxies on one file) never run one
event at once; `reschedule` writes the counters after an attempt and releases the lease. A
process that dies holding leases loses them: the next `open` (any process) releases leases
whose owner pid is gone, and any lease lapses at its end anyway. Delivery is therefore at
least once, as Lambda's is: an event whose attempt was cut short by a crash runs again.

WAL mode and `synchronous=FULL`: an event is on disk when `put` returns (the 202 means queued).
No trio here: the consumer (`functions.async_invoke`) calls it through `trio.to_thread`.
Imports sqlite3 and `policy.async_retry`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from meshplane.policy.async_retry import EventState

__all__ = ["EventQueue", "QueuedEvent", "default_queue_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    qualifier TEXT,
    payload BLOB NOT NULL,
    enqueued REAL NOT NULL,
    due REAL NOT NULL,
    invoke_count INTEGER NOT NULL DEFAULT 0,
    error_attempts INTEGER NOT NULL DEFAULT 0,
    system_retries INTEGER NOT NULL DEFAULT 0,
    owner_pid INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_response TEXT
);
CREATE INDEX IF NOT EXISTS events_due ON events (due);
"""


def default_queue_path(store_url: str | None = None) -> str:
    """`functions-events.db` beside the embedded store's file when the store is SQLite, else in
    the embedded store's directory (~/.local/state/meshplane)."""
    from meshplane.store import default_path

    if store_url and store_url.startswith("sqlite://"):
        return os.path.join(os.path.dirname(os.path.abspath(store_url[len("sqlite://"):])),
                            "functions-events.db")
    return os.path.join(os.path.dirname(default_path()), "functions-events.db")


@dataclass(frozen=True)
class QueuedEvent:
    """One queued invocation. `last_response` is the last attempt's answer that ran the
    function (`statusCode`, `executedVersion`, `functionError`, `payload` as text), if any."""

    id: str
    function: str
    qualifier: str | None
    payload: bytes
    state: EventState
    last_response: dict[str, Any] | None = None


class EventQueue:
    """The queue in the SQLite file at `path` (created with its directory). Thread-safe: one
    connection behind a lock. `lease_s` bounds how long a claimed event stays invisible."""

    def __init__(self, path: str, *, lease_s: float = 960.0) -> None:
        self.path = os.path.abspath(path)
        self.lease_s = lease_s
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        self.release_dead_owners()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, event_id: str, function: str, qualifier: str | None, payload: bytes, now: float) -> None:
        """Queue an event, due at once."""
        with self._transaction() as db:
            db.execute("INSERT INTO events (id, function, qualifier, payload, enqueued, due)"
                       " VALUES (?, ?, ?, ?, ?, ?)", (event_id, function, qualifier, payload, now, now))

    def claim(self, now: float, limit: int) -> list[QueuedEvent]:
        """Lease up to `limit` due events to this process, oldest due first."""
        if limit <= 0:
            return []
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, function, qualifier, payload, enqueued, invoke_count, error_attempts,"
                " system_retries, last_response FROM events WHERE due <= ? AND lease_until <= ?"
                " ORDER BY due, enqueued LIMIT ?", (now, now, limit)).fetchall()
            db.executemany("UPDATE events SET owner_pid = ?, lease_until = ? WHERE id = ?",
                           [(os.getpid(), now + self.lease_s, r[0]) for r in rows])
        return [QueuedEvent(r[0], r[1], r[2], bytes(r[3]), EventState(r[4], r[5], r[6], r[7]),
                            json.loads(r[8]) if r[8] else None) for r in rows]

    def reschedule(self, event_id: str, state: EventState, due: float,
                   last_response: dict[str, Any] | None) -> None:
        """After an attempt: the event's new counters, when it is due again; lease released."""
        with self._transaction() as db:
            db.execute(
                "UPDATE events SET due = ?, invoke_count = ?, error_attempts = ?, system_retries = ?,"
                " owner_pid = 0, lease_until = 0, last_response = coalesce(?, last_response)"
                " WHERE id = ?",
                (due, state.invoke_count, state.error_attempts, state.system_retries,
                 json.dumps(last_response) if last_response is not None else None, event_id))

    def release(self, event_id: str) -> None:
        """Give up this process's lease on an event without recording an attempt (the
        consumer is stopping); it is due again at once."""
        with self._transaction() as db:
            db.execute("UPDATE events SET owner_pid = 0, lease_until = 0 WHERE id = ?", (event_id,))

    def delete(self, event_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM events WHERE id = ?", (event_id,))

    def next_due(self) -> float | None:
        """The earliest time an event becomes claimable (its due time or lease end), if any."""
        return self.summary()[0]

    def depth(self) -> tuple[int, float | None]:
        """(events queued, the oldest one's enqueue time)."""
        return self.summary()[1:]

    def summary(self) -> tuple[float | None, int, float | None]:
        """(`next_due()`, events queued, the oldest one's enqueue time) in one read."""
        with self._lock:
            when, count, oldest = self._db.execute(
                "SELECT min(max(due, lease_until)), count(*), min(enqueued) FROM events").fetchone()
        return (None if when is None else float(when)), int(count), (None if oldest is None else float(oldest))

    def release_dead_owners(self) -> int:
        """Release leases held by processes that no longer run; returns how many."""
        with self._transaction() as db:
            owners = [r[0] for r in db.execute(
                "SELECT DISTINCT owner_pid FROM events WHERE owner_pid != 0").fetchall()]
            dead = [pid for pid in owners if not _alive(pid)]
            released = 0
            for pid in dead:
                released += db.execute("UPDATE events SET owner_pid = 0, lease_until = 0"
                                       " WHERE owner_pid = ?", (pid,)).rowcount
        return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
