"""Progressive rollout (Flagger's canary analysis, on config versions): shift a route's weighted
targets to a node step by step, each step a new version, and roll back when the proxies' own
statistics for that node fail the analysis.

The steps and the analysis are pure (`lifecycle.rollout_plan`); this module is the loop on the
store: commit a step, await convergence, measure, decide. Each step is committed with
`based_on` the version the rollout made last, so a concurrent change by someone else stops the
rollout (it never overwrites theirs). Measuring reads the per-cluster counters every proxy of
the mesh reports with its heartbeat (`drivers.follow.cluster_counters`): requests, 5xx and the
latency histogram of the node's clusters, as differences over `interval`. Imports trio and the
store layer through `versions`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from meshplane.lifecycle.document import resources_of
from meshplane.lifecycle.rollout_plan import (
    Analysis,
    RolloutError,
    analyse,
    doc_targets,
    find_route,
    node_counters,
    plan_steps,
    with_weights,
)
from meshplane.lifecycle.versions import ConfigVersions, Version

__all__ = [
    "Analysis",
    "RolloutError",
    "RolloutResult",
    "analyse",
    "doc_targets",
    "find_route",
    "node_counters",
    "plan_steps",
    "run_rollout",
    "with_weights",
]


# -- the loop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutResult:
    completed: bool
    versions: list[int]  # the versions the rollout made, in order (a rollback included)
    reason: str = ""


async def _converged(versions: ConfigVersions, version: Version, *, timeout: float,
                     silent_after: float) -> None:
    """Wait until every live proxy of the mesh runs `version`; RolloutError if one rejects it
    or `timeout` passes."""
    with trio.move_on_after(timeout):
        while True:
            now = time.time()
            live = [r for r in await versions.reports()
                    if r.state == "LIVE" and now - r.heartbeat <= silent_after]
            for r in live:
                if r.error and r.error.get("version") == version.number:
                    raise RolloutError(f"proxy {r.id} rejected version {version.number}: "
                                       f"{r.error.get('reason')}")
            if all(r.running == version.number or r.running_hash == version.hash for r in live):
                return
            await trio.sleep(0.05)
    raise RolloutError(f"the proxies did not all run version {version.number} within {timeout:g} s")


async def run_rollout(
    versions: ConfigVersions, route: str, to: str, percents: Sequence[int], *,
    interval: float, max_5xx: float, max_p99_ms: float, min_requests: int = 1,
    converge_timeout: float = 60.0, silent_after: float = 30.0, author: str | None = None,
    say: Callable[[str], None] = print,
) -> RolloutResult:
    """Run the rollout (module docstring); returns whether it completed, else why it rolled
    back. Raises `ConcurrentApply` (stopped, not rolled back) if someone else changed the mesh."""
    start, doc = await versions.get()
    router, name, kind = find_route(doc, route)
    if ("VirtualNode", "", to) not in resources_of(doc):
        raise RolloutError(f"mesh {versions.mesh} has no VirtualNode {to!r}")
    targets = doc_targets(doc, router, name, kind)
    made: list[int] = []
    last = start
    for percent, weights in zip(percents, plan_steps(targets, to, percents), strict=True):
        step_doc = with_weights(doc, router, name, kind, weights)
        version, created = await versions.commit(
            step_doc, message=f"rollout {router}/{name} to {to}: {percent}%", author=author,
            based_on=last.number)
        if created:
            made.append(version.number)
        last = version
        say(f"step {percent}%: version {version.number} "
            f"({', '.join(f'{n}={w}' for n, w in weights.items())})")
        failure = None
        try:
            await _converged(versions, version, timeout=converge_timeout, silent_after=silent_after)
        except RolloutError as exc:
            failure = str(exc)
        if failure is None:
            before = node_counters(await versions.reports(), to)
            await trio.sleep(interval)
            result = analyse(before, node_counters(await versions.reports(), to),
                             max_5xx=max_5xx, max_p99_ms=max_p99_ms, min_requests=min_requests)
            p99 = "above every bucket" if math.isinf(result.p99_ms) else f"{result.p99_ms:g} ms"
            say(f"  analysis: {result.requests} requests to {to}, {result.errors_5xx} 5xx, "
                f"p99 {p99}" + (f": FAILED: {result.failure}" if result.failure else ": passed"))
            failure = result.failure
        if failure is not None:
            reason = f"step {percent}% failed: {failure}"
            back, _ = await versions.commit(
                doc, message=f"rollout {router}/{name} to {to} rolled back: {reason}",
                author=author, rollback_of=start.number, based_on=last.number)
            made.append(back.number)
            say(f"rolled back to version {start.number}'s config as version {back.number}: {reason}")
            return RolloutResult(False, made, reason)
    say(f"rollout of {router}/{name} to {to} completed: version {last.number}")
    return RolloutResult(True, made)
