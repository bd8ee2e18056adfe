"""ConfigWatch.check against a real file (no sockets, no core): a change that fails to load,
compile or apply, whatever the exception, is logged at error level and counted, and the watcher
goes on to apply the next change."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from meshplane.drivers.config_watch import ConfigWatch
from meshplane.errors import ConfigError, Problem


class Reloader:
    """Records the texts it was handed; raises what `fail` says for a text holding a key."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.fail: dict[str, BaseException] = {}

    async def __call__(self, text: str) -> str:
        for key, exc in self.fail.items():
            if key in text:
                raise exc
        self.applied.append(text)
        return f"v{len(self.applied)}"


@pytest.mark.parametrize(
    "error",
    [
        ConfigError([Problem("mesh.yaml", "", "", "mappings and lists nest deeper than 64 levels")]),
        RecursionError("maximum recursion depth exceeded"),
        MemoryError(),
        RuntimeError("a bug while compiling"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_any_failed_reload_keeps_watching(
    error: Exception, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("mesh: v1\n")
    watch = ConfigWatch(path)
    watch.mark_current()
    reload = Reloader()
    reload.fail["bad"] = error
    path.write_text("mesh: bad, bigger\n")
    with caplog.at_level(logging.INFO, logger="meshplane.config_watch"):
        assert await watch.check(reload) is None
        rejected = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(rejected) == 1 and "the running version keeps serving" in rejected[0].getMessage()
        assert str(path) in rejected[0].getMessage()
        assert watch.rejected == 1 and reload.applied == []
        path.write_text("mesh: v2, good\n")
        assert await watch.check(reload) == "v1"
    assert reload.applied == ["mesh: v2, good\n"]
