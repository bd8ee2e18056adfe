"""`EventBridge.dispatch` without the core: a subscriber that cannot keep up loses events, and
every loss is counted by kind (what /stats shows as `control.events_dropped`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from meshplane._bridge import EventBridge


class NoSource:
    def wakeup_fd(self) -> int:
        raise AssertionError("not used")

    def drain_events(self) -> Sequence[Any]:
        raise AssertionError("not used")


@dataclass
class Numbered:
    """An event as the core's typed events are: a `kind`, and here a number."""

    n: int
    kind: str = "outlier"


def test_drops_are_counted_by_kind_and_the_first_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    bridge = EventBridge(NoSource())
    outlier = bridge.subscribe("outlier", buffer=2)
    everything = bridge.subscribe("*", buffer=100)
    bridge.subscribe("stopped", buffer=1)
    assert bridge.dropped == {"outlier": 0, "stopped": 0}
    with caplog.at_level(logging.DEBUG, logger="meshplane.bridge"):
        bridge.dispatch([Numbered(i) for i in range(5)])
    assert bridge.dropped == {"outlier": 3, "stopped": 0}
    assert [outlier.receive_nowait().n for _ in range(2)] == [0, 1]
    assert [everything.receive_nowait().n for _ in range(5)] == [0, 1, 2, 3, 4]
    assert [(r.levelno, "'outlier'" in r.getMessage()) for r in caplog.records] == [(logging.WARNING, True)]
