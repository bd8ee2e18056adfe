"""`functions.event_queue`: the durable queue on a real SQLite file (no trio)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from meshplane.functions.event_queue import EventQueue, default_queue_path
from meshplane.policy.async_retry import EventState

T0 = 1_000_000.0


def test_put_claim_reschedule_delete(tmp_path: Path) -> None:
    q = EventQueue(str(tmp_path / "q.db"), lease_s=100)
    q.put("a", "f", None, b'{"n": 1}', T0)
    q.put("b", "f", "live", b'{"n": 2}', T0 + 1)
    assert q.depth() == (2, T0)
    claimed = q.claim(T0 + 1, 10)
    assert [e.id for e in claimed] == ["a", "b"] and claimed[1].qualifier == "live"
    assert claimed[0].payload == b'{"n": 1}' and claimed[0].state == EventState(T0)
    # Leased: nobody else gets them until the lease ends.
    assert q.claim(T0 + 2, 10) == []
    assert q.next_due() == T0 + 1 + 100
    q.reschedule("a", EventState(T0, 1, 1, 0), T0 + 60, {"statusCode": 200, "payload": "x"})
    assert q.claim(T0 + 59, 10) == []
    again = q.claim(T0 + 60, 1)
    assert [e.id for e in again] == ["a"] and again[0].state == EventState(T0, 1, 1, 0)
    assert again[0].last_response == {"statusCode": 200, "payload": "x"}
    q.delete("a")
    q.delete("b")
    assert q.depth() == (0, None) and q.next_due() is None


def test_claim_limit_and_due_order(tmp_path: Path) -> None:
    q = EventQueue(str(tmp_path / "q.db"))
    for i in range(5):
        q.put(f"e{i}", "f", None, b"{}", T0 + 4 - i)
    assert [e.id for e in q.claim(T0 + 10, 2)] == ["e4", "e3"]
    assert q.claim(T0 + 10, 0) == []


def test_events_survive_reopen_and_lapsed_leases_return(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    q = EventQueue(path, lease_s=5)
    q.put("a", "f", None, b"{}", T0)
    assert len(q.claim(T0, 1)) == 1
    q.close()
    q2 = EventQueue(path, lease_s=5)
    assert q2.claim(T0 + 1, 1) == []  # still leased by this (living) process
    assert [e.id for e in q2.claim(T0 + 5, 1)] == ["a"]


def test_leases_of_a_dead_process_are_released_on_open(tmp_path: Path) -> None:
    path = str(tmp_path / "q.db")
    EventQueue(path).put("a", "f", None, b"{}", T0)
    code = ("import sys; from meshplane.functions.event_queue import EventQueue\n"
            f"q = EventQueue({path!r}, lease_s=10_000); print(len(q.claim({T0}, 5)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "1"
    q = EventQueue(path)  # the claiming process has exited
    assert [e.id for e in q.claim(T0, 5)] == ["a"]


def test_default_path_beside_a_sqlite_store(tmp_path: Path) -> None:
    assert default_queue_path(f"sqlite://{tmp_path}/s/store.db") == f"{tmp_path}/s/functions-events.db"
    assert default_queue_path("etcd://127.0.0.1:2379").endswith("meshplane/functions-events.db")
