"""An apply's Python work in worker threads runs with a brief GIL switch interval, which is put
back afterwards, also when the work raises or several such calls overlap."""

from __future__ import annotations

import sys
import threading

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

from meshplane import runtime


def test_the_interval_is_brief_during_the_call_and_restored_after() -> None:
    before = sys.getswitchinterval()
    seen = runtime._brief_switches(sys.getswitchinterval)
    assert seen <= runtime._BRIEF_SWITCH_S < before
    assert sys.getswitchinterval() == before

    def fail() -> None:
        raise ValueError("compile failed")

    with pytest.raises(ValueError):
        runtime._brief_switches(fail)
    assert sys.getswitchinterval() == before


def test_overlapping_calls_restore_only_when_the_last_ends() -> None:
    before = sys.getswitchinterval()
    first_in, first_may_end = threading.Event(), threading.Event()
    seen: dict[str, float] = {}

    def first() -> None:
        first_in.set()
        assert first_may_end.wait(10)
        seen["first at end"] = sys.getswitchinterval()

    def second() -> None:
        seen["second"] = sys.getswitchinterval()

    worker = threading.Thread(target=runtime._brief_switches, args=(first,))
    worker.start()
    try:
        assert first_in.wait(10)
        runtime._brief_switches(second)  # ends while `first` still runs
        seen["between"] = sys.getswitchinterval()
    finally:
        first_may_end.set()
        worker.join(10)
    assert not worker.is_alive()
    assert seen["second"] <= runtime._BRIEF_SWITCH_S
    assert seen["between"] <= runtime._BRIEF_SWITCH_S  # `first` is still running then
    assert seen["first at end"] <= runtime._BRIEF_SWITCH_S
    assert sys.getswitchinterval() == before
