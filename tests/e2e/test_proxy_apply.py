"""`Proxy.apply` keeps the Trio loop free: loading, compiling and the core's apply run in worker
threads, and a cancelled apply is all or nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import trio
from meshplane import Proxy, runtime
from meshplane._core import Core

pytestmark = pytest.mark.e2e

GATEWAY = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"
PORTS = {8080: 0}


class CoreSpy:
    """The real core, with `apply` wrapped to note the thread it runs on (Core is final)."""

    def __init__(self, workers: int, threads: list[str]) -> None:
        self._core = Core(workers)
        self._threads = threads

    def apply(self, snapshot: bytes) -> str:
        self._threads.append(f"Core.apply:{threading.current_thread().name}")
        return self._core.apply(snapshot)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)


def noting(name: str, threads: list[str], fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        threads.append(f"{name}:{threading.current_thread().name}")
        return fn(*args, **kwargs)
    return wrapped


async def test_load_compile_and_apply_run_off_the_trio_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    monkeypatch.setattr(runtime, "Core", lambda workers: CoreSpy(workers, threads))
    monkeypatch.setattr(runtime, "load_config", noting("load", threads, runtime.load_config))
    monkeypatch.setattr(runtime, "compile_document", noting("compile", threads, runtime.compile_document))
    trio_thread = threading.current_thread().name
    async with Proxy(GATEWAY, admin="", port_overrides=PORTS, drain_ms=200) as proxy:
        started = list(threads)
        threads.clear()
        text = GATEWAY.read_text().replace("weight: 2}", "weight: 3}")
        assert text != GATEWAY.read_text()
        version = await proxy.apply(runtime.load_text(text, str(GATEWAY)))
        assert version.startswith("2-") and proxy.version == version
    names = [entry.split(":", 1)[0] for entry in started + threads]
    assert names == ["load", "compile", "Core.apply", "load", "compile", "Core.apply"]
    assert all(not entry.endswith(f":{trio_thread}") for entry in started + threads), (
        trio_thread, started, threads)


async def test_a_cancelled_apply_is_all_or_nothing() -> None:
    async with Proxy(GATEWAY, admin="", port_overrides=PORTS, drain_ms=200) as proxy:
        first = proxy.version
        text = GATEWAY.read_text().replace("weight: 2}", "weight: 3}")
        changed = runtime.load_text(text, str(GATEWAY))
        # Cancelled before it starts: nothing changes.
        with trio.CancelScope() as scope:
            scope.cancel()
            await proxy.apply(changed)
        assert scope.cancelled_caught and proxy.version == first
        # Whatever point a cancellation reaches, the proxy's record is the core's.
        for delay in (0.0, 0.001, 0.005, 0.02):
            with trio.move_on_after(delay):
                await proxy.apply(changed if proxy.version == first else runtime.load_config(GATEWAY))
            assert proxy.version == proxy._require_core().version()
