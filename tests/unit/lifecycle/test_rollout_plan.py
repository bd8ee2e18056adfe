"""The pure parts of `meshplane rollout` and of the diff output: step weights, the documents of
each step, the analysis of reported counters, and how a diff reads. No store, no sockets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from meshplane._cli_lifecycle import parse_percent, render_diff
from meshplane.config.model import Resource
from meshplane.lifecycle.document import diff, document_of
from meshplane.lifecycle.rollout_plan import (
    RolloutError,
    analyse,
    doc_targets,
    find_route,
    plan_steps,
    with_weights,
)

BOUNDS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000]


def route_doc(targets: list[dict[str, object]]) -> dict[str, object]:
    return document_of("m", [
        Resource("VirtualRouter", "r", {"listeners": []}),
        Resource("Route", "web", {"httpRoute": {"match": {"prefix": "/"},
                                                "action": {"weightedTargets": targets}}}, "r"),
        Resource("VirtualNode", "v1", {}), Resource("VirtualNode", "v2", {}),
    ])


def test_steps_shift_weight_and_keep_the_others_proportions() -> None:
    current = {"a": 60, "b": 30, "new": 10}
    steps = plan_steps(current, "new", [25, 50, 100])
    assert steps == [{"a": 50, "b": 25, "new": 25}, {"a": 34, "b": 16, "new": 50},
                     {"a": 0, "b": 0, "new": 100}]
    with pytest.raises(RolloutError, match="1..100"):
        plan_steps(current, "new", [0])
    with pytest.raises(RolloutError, match="no target besides"):
        plan_steps({"new": 1}, "new", [50])


@given(st.dictionaries(st.sampled_from("abcd"), st.integers(0, 100), min_size=1),
       st.lists(st.integers(1, 99), min_size=1, max_size=5))
def test_every_step_sums_to_100(current: dict[str, int], percents: list[int]) -> None:
    if not any(w for n, w in current.items()):
        current = {**current, "a": 1}
    for percent, weights in zip(percents, plan_steps(current, "z", percents), strict=True):
        assert sum(weights.values()) == 100 and weights["z"] == percent
        assert min(weights.values()) >= 0


def test_step_documents_change_only_the_route_weights() -> None:
    doc = route_doc([{"virtualNode": "v1", "weight": 1}])
    router, name, kind = find_route(doc, "web")
    assert (router, name, kind) == ("r", "web", "httpRoute") == find_route(doc, "r/web")
    step = with_weights(doc, router, name, kind, {"v1": 90, "v2": 10})
    assert doc_targets(step, router, name, kind) == {"v1": 90, "v2": 10}
    assert render_diff(diff(doc, step)) == [
        '~ Route "web" (VirtualRouter "r")',
        '    spec.httpRoute.action.weightedTargets: [{"virtualNode": "v1", "weight": 1}] -> '
        '[{"virtualNode": "v1", "weight": 90}, {"virtualNode": "v2", "weight": 10}]',
    ]
    with pytest.raises(RolloutError, match="no route 'nope'"):
        find_route(doc, "nope")


def counters(total: int, errors: int, counts: list[int]) -> dict[str, dict[str, object]]:
    return {"v2": {"rq_total": total, "rq_5xx": errors, "bounds": BOUNDS, "counts": counts}}


def test_analysis_of_counter_growth() -> None:
    before = {"p/1": counters(100, 0, [0, 100] + [0] * 9)}
    calm = {"p/1": counters(300, 1, [0, 290, 10] + [0] * 8)}
    result = analyse(before, calm, max_5xx=0.01, max_p99_ms=500, min_requests=10)
    assert (result.requests, result.errors_5xx, result.p99_ms, result.failure) == (200, 1, 5.0, None)

    errors = {"p/1": counters(300, 20, [0, 300] + [0] * 9)}
    failed = analyse(before, errors, max_5xx=0.01, max_p99_ms=500, min_requests=10)
    assert failed.failure is not None and "5xx rate 10.00% (20 of 200)" in failed.failure

    slow = {"p/1": counters(300, 0, [0, 100] + [0] * 8 + [200])}
    late = analyse(before, slow, max_5xx=0.01, max_p99_ms=500, min_requests=10)
    assert math.isinf(late.p99_ms) and late.failure is not None and "p99" in late.failure

    idle = analyse(before, before, max_5xx=0.01, max_p99_ms=500, min_requests=1)
    assert idle.failure is not None and "not enough traffic" in idle.failure


def test_a_restarted_proxy_counts_from_zero() -> None:
    after = {"p/2": counters(5, 0, [0, 5] + [0] * 9)}  # a new pid: no baseline
    assert analyse({"p/1": counters(100, 0, [0, 100] + [0] * 9)}, after, max_5xx=0.01,
                   max_p99_ms=500, min_requests=1).requests == 5


def test_parse_percent() -> None:
    assert parse_percent("1%") == pytest.approx(0.01) and parse_percent("0.5") == 0.5
    with pytest.raises(Exception, match="percent"):
        parse_percent("150%")
