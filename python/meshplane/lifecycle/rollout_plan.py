"""The pure half of `meshplane rollout`: which weights each step gives, the version document
of each step, and the judgement of the counters the proxies reported. No I/O: imports the
standard library, `meshplane.errors` and `lifecycle.document` only (no trio, no core)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshplane.errors import MeshplaneError
from meshplane.lifecycle.document import resources_of

__all__ = [
    "Analysis",
    "RolloutError",
    "analyse",
    "doc_targets",
    "find_route",
    "node_counters",
    "plan_steps",
    "with_weights",
]

ROUTE_TYPES = ("httpRoute", "http2Route", "grpcRoute", "tcpRoute")


class RolloutError(MeshplaneError):
    """The rollout cannot start (no such route or node, bad steps)."""


def find_route(doc: Mapping[str, Any], route: str) -> tuple[str, str, str]:
    """(router, route name, route type key) of ROUTE ("ROUTER/ROUTE" or a unique route name)."""
    router, _, name = route.rpartition("/")
    found = [(parent, n) for (kind, parent, n) in resources_of(doc)
             if kind == "Route" and n == name and (not router or parent == router)]
    if not found:
        raise RolloutError(f"mesh {doc.get('mesh')} has no route {route!r}")
    if len(found) > 1:
        raise RolloutError(f"several routers have a route {name!r}: give ROUTER/{name} "
                           f"({', '.join(p for p, _ in found)})")
    parent, name = found[0]
    spec = resources_of(doc)[("Route", parent, name)].get("spec") or {}
    kinds = [k for k in ROUTE_TYPES if isinstance(spec.get(k), dict)
             and isinstance(spec[k].get("action", {}).get("weightedTargets"), list)]
    if not kinds:
        raise RolloutError(f"route {parent}/{name} has no weighted targets")
    return parent, name, kinds[0]


def plan_steps(current: Mapping[str, int], to: str, percents: Sequence[int]) -> list[dict[str, int]]:
    """The weights of each step: `to` gets the step's percent, the other targets share the
    rest in proportion to their current weights (integers summing to 100)."""
    others = {n: w for n, w in current.items() if n != to}
    total = sum(others.values())
    steps = []
    for percent in percents:
        if not 0 < percent <= 100:
            raise RolloutError(f"--steps: {percent} is not a percent in 1..100")
        rest = 100 - percent
        weights = {n: (rest * w // total if total else 0) for n, w in others.items()}
        if total and others:  # hand the rounding remainder to the heaviest other target
            weights[max(others, key=lambda n: others[n])] += rest - sum(weights.values())
        elif rest:
            raise RolloutError(f"the route has no target besides {to} to keep {rest}% on")
        weights[to] = percent
        steps.append(weights)
    return steps


def with_weights(doc: Mapping[str, Any], router: str, route: str, kind: str,
                 weights: Mapping[str, int]) -> dict[str, Any]:
    """`doc` with route `router/route`'s weighted targets set to `weights` (targets not in
    `weights` are left out; a new target takes the first target's port, if any)."""
    out = copy.deepcopy(dict(doc))
    for entry in out["resources"]:
        if entry.get("kind") == "Route" and entry.get("virtualRouterName") == router \
                and entry.get("name") == route:
            targets = entry["spec"][kind]["action"]["weightedTargets"]
            by_node = {t["virtualNode"]: t for t in targets}
            new = []
            for node, weight in weights.items():
                target = dict(by_node.get(node) or {"virtualNode": node})
                if node not in by_node and targets and "port" in targets[0]:
                    target["port"] = targets[0]["port"]
                target["weight"] = weight
                new.append(target)
            entry["spec"][kind]["action"]["weightedTargets"] = new
    return out


# -- analysis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    requests: int
    errors_5xx: int
    p99_ms: float  # upper bound of the bucket holding the 99th percentile; inf: above all bounds
    failure: str | None  # why the step fails, None if it passes

    @property
    def ratio_5xx(self) -> float:
        return self.errors_5xx / self.requests if self.requests else 0.0


Counters = dict[str, dict[str, Any]]  # proxy key -> cluster -> counters


def node_counters(reports: Sequence[Any], node: str) -> Counters:
    """Per proxy (id and pid, so a restarted proxy starts afresh), the counters of `node`'s
    clusters (`node` and `node:PORT`)."""
    out: Counters = {}
    for r in reports:
        clusters = (r.health or {}).get("clusters") or {}
        mine = {c: v for c, v in clusters.items() if c == node or c.startswith(node + ":")}
        if mine:
            out[f"{r.id}/{r.pid}"] = mine
    return out


def analyse(before: Counters, after: Counters, *, max_5xx: float, max_p99_ms: float,
            min_requests: int) -> Analysis:
    """Judge the counters' growth from `before` to `after`."""
    requests = errors = 0
    bounds: list[float] = []
    counts: list[int] = []
    for proxy, clusters in after.items():
        for name, c in clusters.items():
            old = (before.get(proxy) or {}).get(name) or {}
            requests += max(0, c["rq_total"] - old.get("rq_total", 0))
            errors += max(0, c["rq_5xx"] - old.get("rq_5xx", 0))
            old_counts = old.get("counts") or [0] * len(c["counts"])
            delta = [max(0, a - b) for a, b in zip(c["counts"], old_counts, strict=False)]
            if not counts:
                bounds, counts = list(c["bounds"]), delta
            else:
                counts = [a + b for a, b in zip(counts, delta, strict=False)]
    p99 = _percentile(bounds, counts, 0.99)
    failure = None
    if requests < min_requests:
        failure = f"not enough traffic to judge: {requests} requests, need {min_requests}"
    elif requests and errors / requests > max_5xx:
        failure = (f"5xx rate {100 * errors / requests:.2f}% ({errors} of {requests}) is above "
                   f"{100 * max_5xx:g}%")
    elif p99 > max_p99_ms:
        shown = "above the largest bucket" if math.isinf(p99) else f"{p99:g} ms"
        failure = f"p99 latency {shown} is above {max_p99_ms:g} ms"
    return Analysis(requests, errors, p99, failure)


def _percentile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float:
    total = sum(counts)
    if not total:
        return 0.0
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= q * total:
            return float(bounds[i]) if i < len(bounds) else math.inf
    return math.inf


def doc_targets(doc: Mapping[str, Any], router: str, route: str, kind: str) -> dict[str, int]:
    spec = resources_of(doc)[("Route", router, route)]["spec"]
    return {t["virtualNode"]: int(t.get("weight", 0)) for t in spec[kind]["action"]["weightedTargets"]}

