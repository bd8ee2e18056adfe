"""The embedded store (real SQLite in a temporary file) against a dict model: puts, deletes,
compare-and-swaps and prefix ranges in any order agree with the model, revisions only grow,
and a change log replayed from any revision (`watch_changes`) ends in the same state."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshplane.store import SqliteStore

KEYS = st.sampled_from(["/a/1", "/a/2", "/a/10", "/b/1", "/ab"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.binary(max_size=4)),
        st.tuples(st.just("delete"), KEYS, st.just(b"")),
        st.tuples(st.just("put_if_absent"), KEYS, st.binary(max_size=4)),
        st.tuples(st.just("put_if_current"), KEYS, st.binary(max_size=4)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.sampled_from(["/a/", "/b/", "/"]))
def test_sqlite_store_matches_a_dict(ops: list[tuple[str, str, bytes]], prefix: str) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteStore(str(Path(tmp) / "s.db"), poll_interval=0.001)
            model: dict[str, bytes] = {}
            last_revision = 0
            touched = False  # a write under `prefix` happened: the watch has something to say
            _, start = await store.range(prefix)
            for op, key, value in ops:
                if op == "put":
                    rev = await store.put(key, value)
                    assert rev > last_revision
                    last_revision = rev
                    model[key] = value
                    touched |= key.startswith(prefix)
                elif op == "delete":
                    assert await store.delete(key) == (key in model)
                    touched |= key.startswith(prefix) and key in model
                    model.pop(key, None)
                elif op == "put_if_absent":
                    ok = await store.put_if(key, value, mod_revision=0)
                    assert ok == (key not in model)
                    if ok:
                        model[key] = value
                        touched |= key.startswith(prefix)
                else:
                    current = await store.get(key)
                    ok = await store.put_if(key, value, mod_revision=current.mod_revision if current else 0)
                    assert ok
                    model[key] = value
                    touched |= key.startswith(prefix)
            kvs, rev = await store.range(prefix)
            assert {kv.key: kv.value for kv in kvs} == {k: v for k, v in model.items() if k.startswith(prefix)}
            assert [kv.key for kv in kvs] == sorted(kv.key for kv in kvs)
            # Replaying the changes after `start` onto the state at `start` (empty) gives the
            # end state; everything was written before the watch starts, so one batch has it all.
            if touched:
                replayed: dict[str, bytes] = {}
                with trio.fail_after(10):
                    async for batch in store.watch_changes(prefix, start):
                        for change in batch:
                            if change.value is None:
                                replayed.pop(change.key, None)
                            else:
                                replayed[change.key] = change.value
                        break
                assert replayed == {k: v for k, v in model.items() if k.startswith(prefix)}
            await store.aclose()

    trio.run(run)
