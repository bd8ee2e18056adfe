"""Property tests: random valid routes compile in priority order; files round-trip; and no
mutation of a valid file makes loading or compiling fail with anything but ConfigError."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshplane.config import compile_snapshot, from_dict, load_text
from meshplane.errors import ConfigError

from .builders import gateway_doc, node, route, sidecar_doc
from .snapshot_contract import assert_valid_snapshot

segment = st.text(alphabet="abcxyz019-", min_size=1, max_size=6)
prefixes = st.lists(segment, min_size=0, max_size=3).map(lambda parts: "/" + "/".join(parts))
matches: st.SearchStrategy[dict[str, Any]] = st.one_of(
    prefixes.map(lambda p: {"prefix": p}),
    prefixes.map(lambda p: {"path": {"exact": p}}),
    prefixes.map(lambda p: {"path": {"regex": p + ".*"}}),
    st.just({}),
)
route_specs = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 1000)), matches, st.integers(0, 100)),
    min_size=1,
    max_size=12,
)


def doc_with_routes(specs: list[tuple[int | None, dict[str, Any], int]]) -> dict[str, Any]:
    doc = gateway_doc()
    doc["resources"] = [r for r in doc["resources"] if r["kind"] != "Route"]
    for i, (priority, match, weight) in enumerate(specs):
        body = {
            "match": match,
            "action": {"weightedTargets": [{"virtualNode": "v1", "weight": weight or 1}]},
        }
        doc["resources"].append(route(f"r{i:02d}", "r", body, priority=priority))
    return doc


RANK = {"exact": 0, "regex": 1, "prefix": 2, None: 3}


@given(route_specs)
@settings(max_examples=150, deadline=None)
def test_compiled_routes_respect_priorities_then_specificity(
    specs: list[tuple[int | None, dict[str, Any], int]],
) -> None:
    snapshot = json.loads(compile_snapshot(from_dict(doc_with_routes(specs)), version="p"))
    assert_valid_snapshot(snapshot)
    compiled = snapshot["routeTables"]["service/svc.local"]["virtualHosts"][0]["routes"]
    by_name = {f"r/r{i:02d}": spec for i, spec in enumerate(specs)}
    assert sorted(r["name"] for r in compiled) == sorted(by_name)
    keys = []
    for r in compiled:
        priority = by_name[r["name"]][0]
        path = r["match"].get("path")
        kind = path["kind"] if path else None
        length = len(path["value"]) if kind == "prefix" else 0
        keys.append((priority is None, priority or 0, RANK[kind], -length, r["name"]))
    assert keys == sorted(keys)
    # every prioritised route precedes every unprioritised one, priorities never decrease
    priorities = [by_name[r["name"]][0] for r in compiled]
    seen_none = False
    for p in priorities:
        seen_none = seen_none or p is None
        assert not (seen_none and p is not None)
    numbered = [p for p in priorities if p is not None]
    assert numbered == sorted(numbered)


@given(route_specs, st.integers(0, 65535))
@settings(max_examples=50, deadline=None)
def test_yaml_round_trip_and_deterministic_compile(
    specs: list[tuple[int | None, dict[str, Any], int]], bound: int
) -> None:
    doc = doc_with_routes(specs)
    doc["proxy"]["ports"] = {8080: bound}
    cfg = from_dict(doc)
    again = load_text(yaml.safe_dump(cfg.to_native()), "round-trip.yaml")
    assert again.resources == cfg.resources and again.proxy == cfg.proxy
    assert compile_snapshot(again, version="x") == compile_snapshot(cfg, version="x")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def base_doc() -> dict[str, Any]:
    doc = sidecar_doc()
    doc["resources"] += [
        node("db", 5432, "tcp"),
        route(
            "grpc",
            "r",
            {
                "match": {"serviceName": "a.B"},
                "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 1}]},
                "retryPolicy": {
                    "maxRetries": 1,
                    "perRetryTimeout": {"unit": "ms", "value": 1},
                    "grpcRetryEvents": ["internal"],
                },
            },
            rtype="grpcRoute",
        ),
    ]
    return doc


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_mutation_escapes_as_anything_but_config_error(data: st.DataObject) -> None:
    for base in (base_doc(), gateway_doc()):
        doc = copy.deepcopy(base)
        where = data.draw(st.sampled_from(paths(doc)[1:]))
        value = data.draw(json_values)
        target = doc
        for key in where[:-1]:
            target = target[key]
        if data.draw(st.booleans()) and isinstance(target, dict):
            target.pop(where[-1])
        else:
            target[where[-1]] = value
        try:
            cfg = from_dict(doc, "fuzz.yaml")
        except ConfigError as exc:
            assert exc.problems and all(p.file == "fuzz.yaml" for p in exc.problems)
            continue
        assert_valid_snapshot(json.loads(compile_snapshot(cfg, version="f")))
