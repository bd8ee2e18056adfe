"""Watch a config file and hand each new content to a reload callback.

Why polling: a stat every 0.5 s is portable (Linux, macOS, containers with bind mounts and
Kubernetes ConfigMap symlink swaps, where inotify misses the change) and needs no extra
dependency. The file is re-read only when its mtime or size changes, and handed on only when the
SHA-256 of its bytes differs from the last one seen, so `touch` or an editor's rewrite of the
same bytes does nothing.

A rejected reload is logged at error level and the running version keeps serving; the watcher
goes on and tries again at the next change. That holds for any exception from loading,
compiling or applying the new text (a `ConfigError` lists every problem; anything else, a bug,
is logged with its traceback), never only for `ConfigError`: one bad file must not take every
listener down. Cancellation is not caught. Imports trio, `meshplane._bridge` and
`meshplane.errors` only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable

import trio

from meshplane._bridge import TaskStatus
from meshplane.errors import ConfigError

__all__ = ["ConfigWatch"]

log = logging.getLogger("meshplane.config_watch")

Reload = Callable[[str], Awaitable[str]]
"""Takes the file's new text, applies it and returns the version now running."""


class ConfigWatch:
    """Polls one file and calls `reload(text)` when its content changes."""

    def __init__(self, path: str | os.PathLike[str], *, interval: float = 0.5) -> None:
        self.path = os.fspath(path)
        self.interval = interval
        self._stamp: tuple[int, int] | None = None
        self._digest: str | None = None
        self.rejected = 0
        """Changes that were not applied (the running version kept serving)."""

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _read(self) -> tuple[str, str] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return None
        return data.decode("utf-8", errors="replace"), hashlib.sha256(data).hexdigest()

    def mark_current(self) -> None:
        """Take the file's present content as the one already running (call before `run`)."""
        self._stamp = self._stat()
        read = self._read()
        self._digest = read[1] if read else None

    async def check(self, reload: Reload) -> str | None:
        """Look once; `reload` if the content changed. Returns the new version, or None."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return None
        self._stamp = stamp
        read = self._read()
        if read is None:
            return None
        text, digest = read
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            version = await reload(text)
        except ConfigError as exc:
            self.rejected += 1
            log.error("%s changed but was rejected; the running version keeps serving.\n%s", self.path, exc)
            return None
        except Exception as exc:
            # Not a config problem but a failure while loading, compiling or applying it (a bug,
            # or MemoryError): still refuse this version and keep serving the running one.
            self.rejected += 1
            log.error("%s changed but could not be applied (%s: %s); the running version keeps serving",
                      self.path, type(exc).__name__, exc, exc_info=exc)
            return None
        log.info("%s changed: now running version %s", self.path, version)
        return version

    async def run(self, reload: Reload, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Poll every `interval` seconds and `reload` each change, until cancelled.

        Cancellation during a reload cancels that reload; the core never half-applies, so the
        previous version keeps serving.
        """
        if self._digest is None:
            self.mark_current()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            await self.check(reload)
