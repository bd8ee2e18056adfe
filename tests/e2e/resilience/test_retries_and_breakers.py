"""Retries, the retry budget, circuit breakers and timeouts, end to end through App Mesh
configs: route `retryPolicy`, listener `connectionPool`, the `resilience.retryBudget`
extension and route `timeout.perRequest`. Upstreams misbehave for real: 503s, resets before
and after the response head, refused connects, stalls."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from meshplane import Proxy

from ..common import closed_port
from ..waiting import eventually
from .support import mesh

RETRY = {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 2000},
         "httpRetryEvents": ["server-error", "gateway-error"],
         "tcpRetryEvents": ["connection-error"]}
NO_RETRY = {**RETRY, "maxRetries": 0}


def cluster(proxy: Proxy) -> dict[str, Any]:
    return proxy.stats()["clusters"]["app"]  # type: ignore[no-any-return]


async def burst(client: httpx.AsyncClient, url: str, n: int, concurrency: int = 10) -> list[int]:
    statuses: list[int] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            statuses.append((await client.get(url)).status_code)

    async with trio.open_nursery() as nursery:
        for i in range(concurrency):
            nursery.start_soon(worker, n // concurrency + (i < n % concurrency))
    return statuses


async def test_retries_hide_one_failing_upstream_of_three(upstream, client) -> None:
    # Three clients at a time keep concurrent retries within the default budget's floor (3);
    # ten at a time need a larger floor: the budget is a share of the attempts in flight,
    # and a request waiting out its backoff holds a retry slot without adding load (Envoy's
    # arithmetic), so even 100% can refuse retries. The storm test shows what it refuses.
    roomy = {"resilience": {"retryBudget": {"budgetPercent": 100.0, "minRetryConcurrency": 1000}}}
    for mode, concurrency, listener in (("fail", 3, {}), ("drop", 3, {}), ("fail", 10, roomy)):
        ups = [await upstream(f"bad-{mode}", mode=mode), await upstream("ok1"), await upstream("ok2")]
        async with Proxy(mesh([u.address for u in ups], retry=RETRY, listener=listener)) as proxy:
            url = f"http://127.0.0.1:{proxy.port(8080)}/work"
            statuses = await burst(client, url, 120, concurrency=concurrency)
            assert statuses == [200] * 120, (mode, concurrency)
            assert ups[0].requests > 0, "the failing upstream was tried"
            stats = cluster(proxy)
            assert stats["rq_retry"] >= 1 and stats["rq_retry_success"] >= 1
            assert stats["rq_retry_overflow"] == 0


async def test_retries_hide_refused_connections(upstream, client) -> None:
    ups = [await upstream("ok1"), await upstream("ok2")]
    dead = f"127.0.0.1:{closed_port()}"
    async with Proxy(mesh([dead, *(u.address for u in ups)], retry=RETRY)) as proxy:
        statuses = await burst(client, f"http://127.0.0.1:{proxy.port(8080)}/work", 60, concurrency=3)
        assert statuses == [200] * 60
        assert cluster(proxy)["hosts"][dead]["cx_connect_fail"] >= 1


async def test_without_retries_the_failures_reach_clients(upstream, client) -> None:
    ups = [await upstream("bad", mode="fail"), await upstream("ok1"), await upstream("ok2")]
    async with Proxy(mesh([u.address for u in ups], retry=NO_RETRY)) as proxy:
        statuses = await burst(client, f"http://127.0.0.1:{proxy.port(8080)}/work", 60)
        assert statuses.count(503) == ups[0].requests > 0


async def test_a_reset_after_the_response_head_is_not_retried(upstream, client) -> None:
    ups = [await upstream("bad", mode="reset")]
    async with Proxy(mesh([u.address for u in ups], retry=RETRY)) as proxy:
        url = f"http://127.0.0.1:{proxy.port(8080)}/work"
        try:
            r = await client.get(url)
            failed = r.status_code != 200 or len(r.content) != 100
        except httpx.HTTPError:
            failed = True
        assert failed and ups[0].requests == 1, "headers were forwarded: no retry possible"
        await eventually(lambda: cluster(proxy)["hosts"][ups[0].address]["rq_error"] >= 1,
                         what="the reset counted")


async def run_storm(upstream: Any, client: httpx.AsyncClient, budget: dict[str, Any],
                    clients: int, per_client: int, max_retries: int) -> tuple[int, dict[str, Any]]:
    ups = [await upstream(f"down{i}", mode="fail") for i in range(3)]
    retry = {**RETRY, "maxRetries": max_retries}
    cfg = mesh([u.address for u in ups], retry=retry, listener={"resilience": {"retryBudget": budget}})
    async with Proxy(cfg) as proxy:
        statuses = await burst(client, f"http://127.0.0.1:{proxy.port(8080)}/work",
                               clients * per_client, concurrency=clients)
        assert set(statuses) == {503}
        return sum(u.requests for u in ups), cluster(proxy)


async def test_retry_storm_is_capped_by_the_budget(upstream, client) -> None:
    clients, per_client, max_retries = 30, 3, 5
    requests = clients * per_client
    # Budget off (100% of active requests, floor far above the load): every retry happens.
    unbounded, _ = await run_storm(upstream, client, {"budgetPercent": 100.0,
                                   "minRetryConcurrency": 100_000}, clients, per_client, max_retries)
    assert unbounded == requests * (1 + max_retries)
    # Envoy's default budget: concurrent retries <= max(20% of active requests, 3) = 6 here.
    budgeted, stats = await run_storm(upstream, client, {"budgetPercent": 20.0,
                                      "minRetryConcurrency": 3}, clients, per_client, max_retries)
    allowed_concurrent = max(int(0.2 * clients), 3)
    assert budgeted <= requests + per_client * allowed_concurrent * max_retries
    assert budgeted < unbounded / 2
    assert stats["rq_retry_overflow"] >= requests - per_client * allowed_concurrent * 2
    assert stats["rq_retry"] == budgeted - requests


async def test_circuit_breakers_trip_at_their_limits_and_recover(upstream, client) -> None:
    up = await upstream("slow", mode="hold")
    pool = {"http": {"maxConnections": 2, "maxPendingRequests": 1}}
    async with Proxy(mesh([up.address], retry=NO_RETRY, listener={"connectionPool": pool})) as proxy:
        url = f"http://127.0.0.1:{proxy.port(8080)}/work"
        results: list[httpx.Response] = []

        async def one() -> None:
            results.append(await client.get(url))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(one)
            await eventually(lambda: up.active == 2 and len(results) == 3, what="3 overflows")
            assert cluster(proxy)["rq_pending_active"] == 1
            overflowed = [r for r in results]
            assert {r.status_code for r in overflowed} == {503}
            assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflowed)
            assert cluster(proxy)["rq_pending_overflow"] == 3
            up.release.set()
        assert sorted(r.status_code for r in results) == [200, 200, 200, 503, 503, 503]
        up.mode = "ok"
        assert (await burst(client, url, 20, concurrency=2)) == [200] * 20


async def test_per_request_timeout_answers_504_and_counts_it(upstream, client) -> None:
    up = await upstream("stuck", mode="stall")
    async with Proxy(mesh([up.address], retry=NO_RETRY, timeout_ms=200)) as proxy:
        r = await client.get(f"http://127.0.0.1:{proxy.port(8080)}/work")
        # The proxy answered although the upstream never did: the timeout, not the upstream,
        # ended the request (one attempt, no retry).
        assert r.status_code == 504 and up.requests == 1
        stats = cluster(proxy)
        assert stats["rq_timeout"] == 1 and stats["hosts"][up.address]["rq_timeout"] == 1
