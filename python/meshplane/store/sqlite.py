"""`SqliteStore`: the embedded store, one SQLite file shared by every process on a machine.

Concurrency: WAL mode (readers never block the writer), every write in a `BEGIN IMMEDIATE`
transaction (writers of all processes serialize on SQLite's file lock, waiting up to
`busy_timeout`), and the store revision kept in the file, so two processes never hand out the
same revision. Leases expire by wall-clock time (`time.time()`, shared between processes): any
operation that finds an expired lease deletes it and its keys first. Watches share one poll of
the store revision every `poll_interval` seconds per store object, then read the change log
(revision, key) under their prefix; entries older than `CHANGE_LOG_KEEP` revisions are pruned,
and a watcher that fell further behind gets `WatchExpired`.

Blocking SQLite calls run in a worker thread (`trio.to_thread`), one at a time per store
object. Imports trio and `meshplane.store._base`; `sqlite3` (the module and libsqlite3, about
0.9 MiB resident) when the store is first used, so a proxy that creates the default store but
never reads it (no Cloud Map node, no registration, no functions) never loads it.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from meshplane.store._base import (
    Change,
    KeyValue,
    Store,
    StoreError,
    StoreUnavailable,
    WatchExpired,
    prefix_end,
)

if TYPE_CHECKING:
    import sqlite3

__all__ = ["SqliteStore"]

T = TypeVar("T")

CHANGE_LOG_KEEP = 100_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('lease', 0);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL,
    create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, rev INTEGER NOT NULL, key TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_rev ON changes (rev);
"""


class SqliteStore(Store):
    """The store in the SQLite file at `path` (created with its directory if missing)."""

    def __init__(self, path: str, *, poll_interval: float = 0.02, busy_timeout: float = 10.0) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = f"sqlite://{self.path}"
        self.poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._thread_lock = threading.Lock()
        self._lock = trio.Lock()
        self._known_revision = 0  # the highest store revision this object has seen
        self._polled: trio.Event | None = None  # set when the poll in progress is done
        self._next_poll = 0.0  # time.monotonic() before which nobody polls again

    # -- plumbing --------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            import sqlite3

            # NOTE: SQLite returns "database is locked" at once, without waiting out the busy
            # timeout, in some of the steps of opening a file that other connections are
            # opening at the same moment (switching a new file to WAL, recovering the WAL
            # index): eight processes applying to a fresh store met it. The open is retried
            # until the busy timeout has passed, as a locked write would have waited.
            deadline = time.monotonic() + self._busy_timeout
            pause = 0.005
            while True:
                db = None
                try:
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                    db = sqlite3.connect(
                        self.path, timeout=self._busy_timeout, isolation_level=None,
                        check_same_thread=False,
                    )
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
                    break
                except (OSError, sqlite3.Error) as exc:
                    if db is not None:
                        db.close()
                    locked = isinstance(exc, sqlite3.OperationalError) and (
                        "locked" in str(exc) or "busy" in str(exc)
                    )
                    if not locked or time.monotonic() + pause > deadline:
                        raise StoreUnavailable(self.url, f"cannot open: {exc}") from None
                    time.sleep(pause)  # a worker thread's (`_run`), never the Trio thread's
                    pause = min(pause * 2, 0.1)
            self._db = db
        return self._db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            import sqlite3  # first used here or in `_connect` (module docstring)

            with self._thread_lock:
                db = self._connect()
                try:
                    return fn(db)
                except sqlite3.OperationalError as exc:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise StoreUnavailable(self.url, str(exc)) from None
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise

        async with self._lock:
            result: T = await trio.to_thread.run_sync(call)
            return result

    @staticmethod
    def _write(db: sqlite3.Connection, body: Callable[[Callable[[str], int]], T]) -> T:
        """Run `body(log)` in one write transaction; `log(key)` records a change and returns
        the transaction's revision (one revision per transaction, as in etcd)."""
        db.execute("BEGIN IMMEDIATE")
        log = _ChangeLog(db)
        _expire(db, log, time.time())
        result = body(log)
        db.execute("COMMIT")
        return result

    def _read_prepare(self, db: sqlite3.Connection) -> None:
        # Expired leases are deleted before a read so that readers never see their keys.
        now = time.time()
        if db.execute("SELECT 1 FROM leases WHERE expires <= ? LIMIT 1", (now,)).fetchone():
            self._write(db, lambda log: None)

    # -- operations ------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        def op(db: sqlite3.Connection) -> KeyValue | None:
            self._read_prepare(db)
            row = db.execute("SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE key = ?",
                             (key,)).fetchone()
            return KeyValue(row[0], bytes(row[1]), *row[2:]) if row else None

        return await self._run(op)

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        def op(db: sqlite3.Connection) -> tuple[list[KeyValue], int]:
            self._read_prepare(db)
            db.execute("BEGIN")
            try:
                rows = db.execute(
                    "SELECT key, value, create_rev, mod_rev, lease FROM kv"
                    " WHERE key >= ? AND key < ? ORDER BY key", (prefix, prefix_end(prefix))
                ).fetchall()
                (rev,) = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            finally:
                db.execute("COMMIT")
            return [KeyValue(r[0], bytes(r[1]), *r[2:]) for r in rows], rev

        return await self._run(op)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return await self._run(lambda db: self._write(db, lambda log: self._put(db, log, key, value, lease)))

    async def put_if(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> bool:
        def body(db: sqlite3.Connection, log: Callable[[str], int]) -> bool:
            row = db.execute("SELECT mod_rev FROM kv WHERE key = ?", (key,)).fetchone()
            if (row[0] if row else 0) != mod_revision:
                return False
            self._put(db, log, key, value, lease)
            return True

        return await self._run(lambda db: self._write(db, lambda log: body(db, log)))

    def _put(self, db: sqlite3.Connection, log: Callable[[str], int], key: str, value: bytes,
             lease: int) -> int:
        if lease and not db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone():
            raise StoreError(self.url, f"lease {lease:x} not found (expired or revoked)")
        rev = log(key)
        db.execute(
            "INSERT INTO kv VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
            " value = excluded.value, mod_rev = excluded.mod_rev, lease = excluded.lease",
            (key, value, rev, rev, lease),
        )
        return rev

    async def delete(self, key: str) -> bool:
        def body(db: sqlite3.Connection, log: Callable[[str], int]) -> bool:
            if db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                log(key)
                return True
            return False

        return await self._run(lambda db: self._write(db, lambda log: body(db, log)))

    async def grant_lease(self, ttl: float) -> int:
        if ttl <= 0:
            raise StoreError(self.url, f"lease TTL must be positive, got {ttl}")

        def body(db: sqlite3.Connection, log: Callable[[str], int]) -> int:
            (lease,) = db.execute("SELECT value + 1 FROM meta WHERE name = 'lease'").fetchone()
            db.execute("UPDATE meta SET value = ? WHERE name = 'lease'", (lease,))
            db.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, time.time() + ttl))
            return int(lease)

        return await self._run(lambda db: self._write(db, lambda log: body(db, log)))

    async def keepalive(self, lease: int) -> bool:
        def body(db: sqlite3.Connection, log: Callable[[str], int]) -> bool:
            cur = db.execute("UPDATE leases SET expires = ? + ttl WHERE id = ?", (time.time(), lease))
            return cur.rowcount > 0

        return await self._run(lambda db: self._write(db, lambda log: body(db, log)))

    async def revoke(self, lease: int) -> None:
        def body(db: sqlite3.Connection, log: Callable[[str], int]) -> None:
            _drop_lease(db, log, lease)

        await self._run(lambda db: self._write(db, lambda log: body(db, log)))

    async def _revision_above(self, after: int) -> int:
        """Wait until the store revision exceeds `after`; returns it.

        One poll per `poll_interval` per store object, however many watches wait: the first
        waiter polls (the cheap query below) and the others wait for its result, so a proxy
        watching twenty services pays for one poll. Cancelling the polling waiter hands the
        polling to the next one.
        """
        def poll(db: sqlite3.Connection) -> int:
            # NOTE: the common case (nothing changed, no lease due) is one indexed query.
            rev, due = db.execute(
                "SELECT (SELECT value FROM meta WHERE name = 'revision'),"
                " (SELECT min(expires) FROM leases)"
            ).fetchone()
            if due is not None and due <= time.time():
                self._read_prepare(db)
                (rev,) = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            return int(rev)

        while self._known_revision <= after:
            if self._polled is not None:
                await self._polled.wait()
                continue
            wait = self._next_poll - time.monotonic()
            if wait > 0:
                await trio.sleep(wait)
                continue
            self._polled = trio.Event()
            try:
                self._known_revision = max(self._known_revision, await self._run(poll))
            finally:
                self._next_poll = time.monotonic() + self.poll_interval
                self._polled.set()
                self._polled = None
        return self._known_revision

    async def watch_changes(self, prefix: str, after: int) -> AsyncGenerator[list[Change], None]:
        end = prefix_end(prefix)

        def read(db: sqlite3.Connection, after: int) -> tuple[int, list[Change]]:
            """(the store revision, the changes under `prefix` after `after`)."""
            (oldest,) = db.execute("SELECT coalesce(min(rev), 0) FROM changes").fetchone()
            if oldest > after + 1:
                raise WatchExpired(self.url, f"change log pruned past revision {after}")
            db.execute("BEGIN")
            try:
                rows = db.execute(
                    "SELECT c.key, kv.value, c.rev FROM (SELECT key, max(rev) AS rev FROM changes"
                    " WHERE rev > ? AND key >= ? AND key < ? GROUP BY key) AS c"
                    " LEFT JOIN kv ON kv.key = c.key ORDER BY c.rev",
                    (after, prefix, end),
                ).fetchall()
                (rev,) = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            finally:
                db.execute("COMMIT")
            return int(rev), [Change(k, None if v is None else bytes(v), int(r)) for k, v, r in rows]

        while True:
            await self._revision_above(after)
            after, changes = await self._run(functools.partial(read, after=after))
            if changes:
                yield changes

    async def aclose(self) -> None:
        async with self._lock:
            with self._thread_lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None


def _drop_lease(db: sqlite3.Connection, log: Callable[[str], int], lease: int) -> None:
    keys = [k for (k,) in db.execute("SELECT key FROM kv WHERE lease = ?", (lease,))]
    for key in keys:
        log(key)
    db.execute("DELETE FROM kv WHERE lease = ?", (lease,))
    db.execute("DELETE FROM leases WHERE id = ?", (lease,))


class _ChangeLog:
    """The revision of one write transaction, allocated on its first change, and its log."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.revision = 0

    def __call__(self, key: str) -> int:
        db = self.db
        if not self.revision:
            (rev,) = db.execute("SELECT value + 1 FROM meta WHERE name = 'revision'").fetchone()
            db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (rev,))
            self.revision = int(rev)
            if rev % 1000 == 0:
                db.execute("DELETE FROM changes WHERE rev < ?", (rev - CHANGE_LOG_KEEP,))
        db.execute("INSERT INTO changes (rev, key) VALUES (?, ?)", (self.revision, key))
        return self.revision


def _expire(db: sqlite3.Connection, log: Callable[[str], int], now: float) -> None:
    """Delete expired leases and their keys (inside the caller's write transaction)."""
    for (lease,) in db.execute("SELECT id FROM leases WHERE expires <= ?", (now,)).fetchall():
        _drop_lease(db, log, lease)
