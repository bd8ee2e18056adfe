"""Property tests of config versions: a semantic diff patched onto the old document gives the
new one, and version numbers never repeat, whatever sequence of applies and rollbacks (against
a reference model: the number is the count of versions made; a config equal to the desired
one makes none)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from meshplane.lifecycle.document import content_hash, diff, patch, resources_of
from meshplane.lifecycle.versions import ConfigVersions
from meshplane.store import SqliteStore

KINDS = ["Mesh", "VirtualService", "VirtualRouter", "Route", "VirtualNode", "VirtualGateway",
         "GatewayRoute"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text("ab", max_size=2),
                    st.floats(allow_nan=False, allow_infinity=False, width=16))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abcd"), inner, max_size=3)),
    max_leaves=12)


@st.composite
def entries(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    entry: dict[str, Any] = {"kind": kind, "name": draw(st.sampled_from(["x", "y", "z"]))}
    if kind == "Route":
        entry["virtualRouterName"] = draw(st.sampled_from(["r1", "r2"]))
    if kind == "GatewayRoute":
        entry["virtualGatewayName"] = draw(st.sampled_from(["g1", "g2"]))
    entry["spec"] = draw(st.dictionaries(st.sampled_from("abcd"), values, max_size=4))
    return entry


documents = st.builds(
    lambda mesh, es: {"mesh": mesh, "resources": list(resources_of({"resources": es}).values())},
    st.sampled_from(["m", "n"]), st.lists(entries(), max_size=6))


def canonical(doc: dict[str, Any]) -> dict[str, Any]:
    return {"mesh": doc["mesh"], "resources": sorted(
        resources_of(doc).values(), key=lambda e: content_hash(e))}


@given(documents, documents)
@example(  # 0.0 and -0.0: equal in Python, not in the canonical JSON the versions hash
    {"mesh": "m", "resources": [{"kind": "Route", "name": "z", "virtualRouterName": "r1",
                                 "spec": {"a": {"c": {"b": 0.0}}}}]},
    {"mesh": "m", "resources": [{"kind": "Mesh", "name": "x", "spec": {}},
                                {"kind": "Route", "name": "z", "virtualRouterName": "r1",
                                 "spec": {"a": {"c": {"b": -0.0}}}}]},
)
def test_diff_then_patch_round_trips(old: dict[str, Any], new: dict[str, Any]) -> None:
    changes = diff(old, new)
    assert canonical(patch(old, changes)) == canonical(new)
    assert (changes == []) == (canonical(old) == canonical(new))


@given(documents)
def test_a_document_has_no_diff_with_itself(doc: dict[str, Any]) -> None:
    assert diff(doc, doc) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.tuples(st.just("apply"), st.integers(0, 3)),
                          st.tuples(st.just("rollback"), st.integers(1, 6))), max_size=12))
def test_version_numbers_never_repeat(tmp_path: Path, steps: list[tuple[str, int]]) -> None:
    async def run() -> None:
        path = tmp_path / f"s-{abs(hash(tuple(steps)))}.db"
        path.unlink(missing_ok=True)
        async with SqliteStore(str(path)) as store:
            versions = ConfigVersions(store, "m")
            made: list[int] = []
            desired_hash = None
            for op, arg in steps:
                if op == "apply":
                    doc = {"mesh": "m", "resources": [{"kind": "Mesh", "name": "m",
                                                       "spec": {"n": arg}}]}
                    version, created = await versions.commit(doc)
                elif made and arg <= len(made):
                    version, created = await versions.rollback(arg)
                else:
                    continue
                assert created == (version.hash != desired_hash)
                if created:
                    assert version.number == len(made) + 1  # the reference model
                    made.append(version.number)
                desired_hash = version.hash
            history = [v.number for v in await versions.history()]
            assert history == made == list(range(1, len(made) + 1))

    trio.run(run)
