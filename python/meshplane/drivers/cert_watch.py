"""Watch the certificate, key and trust files of the running snapshot; reload them on change.

The core reads TLS material when a snapshot is applied and again on `Core.reload_tls()`, which
re-reads every file of the running snapshot and swaps the new material in (new handshakes use
it, established connections keep theirs; a bad file changes nothing and is named in the
error). This driver decides *when* to call it.

Why polling: a stat of each file every 0.5 s is portable (Linux, macOS, containers with bind
mounts, Kubernetes Secret volumes whose `..data` symlink is swapped, where inotify on the file
misses the change) and needs no dependency; a handful of files makes it cheap. A file is hashed
only when its mtime or size changes, and a reload happens only when some file's SHA-256
differs from the last one seen, so `touch` or a rewrite of the same bytes does nothing.

A rotation usually rewrites two files (certificate, then key). The poll may fall between them:
the reload then fails (key and certificate do not match), the error is logged, the old material
keeps serving, and the next change (the key) is retried. Writing each file to a temporary name
and renaming it over the old one avoids reading half a file. While a watched file is missing
nothing is reloaded. Imports trio and the standard library only; the reload is a callable
(`Core.reload_tls`) so that this module needs neither the core nor the runtime.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import trio

from meshplane._bridge import TaskStatus

__all__ = ["CertWatch", "FileState", "observe"]

log = logging.getLogger("meshplane.cert_watch")

POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class FileState:
    """What a watched file looked like: (mtime_ns, size) and the SHA-256 of its bytes; both None
    when it could not be read."""

    stamp: tuple[int, int] | None
    digest: str | None


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def observe(paths: Iterable[str]) -> dict[str, FileState]:
    """The present state of each file. Take it *before* the core reads the files (`apply`), so
    that a change made in between is seen as a change afterwards."""
    out = {}
    for path in paths:
        stamp = _stat(path)
        out[path] = FileState(stamp, _digest(path) if stamp is not None else None)
    return out


class CertWatch:
    """Polls the TLS files of the running snapshot and calls `reload()` when their content
    changes. `reload` raises on a bad file (the core then keeps the old material).

    `reloads`, `failures`, `last_error` and `last_reload` (unix seconds) say how it went, for the
    admin API.
    """

    def __init__(self, reload: Callable[[], object], *, interval: float = POLL_INTERVAL_S) -> None:
        self._reload = reload
        self.interval = interval
        self._files: dict[str, FileState] = {}
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_reload: float | None = None

    @property
    def paths(self) -> list[str]:
        return sorted(self._files)

    def retarget(self, files: Mapping[str, FileState]) -> None:
        """Watch these files (those of a snapshot just applied), as `observe` saw them before the
        core read them. A failed reload's error is cleared: the new snapshot loaded its files."""
        self._files = dict(files)
        self.last_error = None

    def check(self) -> bool | None:
        """Look once. Returns True if material was reloaded, False if a reload failed, None if
        nothing needed one."""
        changed = []
        for path, old in self._files.items():
            stamp = _stat(path)
            if stamp == old.stamp:
                continue
            digest = _digest(path) if stamp is not None else None
            self._files[path] = FileState(stamp, digest)
            if digest is not None and digest != old.digest:
                changed.append(path)
        missing = [path for path, state in self._files.items() if state.digest is None]
        if not changed:
            return None
        if missing:
            log.warning(
                "TLS files changed (%s) but %s cannot be read; keeping the current certificates "
                "until it can",
                ", ".join(changed),
                ", ".join(missing),
            )
            return None
        try:
            count = self._reload()
        except Exception as exc:  # the core's CoreError names the file; anything else too
            self.failures += 1
            self.last_error = str(exc)
            log.error(
                "TLS files changed (%s) but the new material was rejected; the previous "
                "certificates keep serving. Will retry on the next change. %s",
                ", ".join(changed),
                exc,
            )
            return False
        self.reloads += 1
        self.last_error = None
        self.last_reload = time.time()
        log.info("TLS files changed (%s): reloaded %s TLS contexts", ", ".join(changed), count)
        return True

    async def run(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Poll every `interval` seconds until cancelled. A reload is one synchronous call (it
        reads the files; it does not wait for a core apply in progress), so cancellation never
        leaves it half done."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            self.check()
