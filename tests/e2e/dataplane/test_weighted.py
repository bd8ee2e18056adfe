"""Weighted traffic: a 90/10 split between clusters (statistical), endpoint weights within a
cluster under round robin (deterministic EDF), and zero weights that never receive traffic."""

from __future__ import annotations

import math
from collections import Counter

import httpx
import trio

from .support import cluster, http_listener, prefix, route, snapshot, table, vhost


async def drive(client: httpx.AsyncClient, url: str, total: int, concurrency: int = 8,
                timeout: float = 30) -> Counter[str]:
    """`total` GETs from `concurrency` tasks; count the answering server (x-server)."""
    seen: Counter[str] = Counter()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            r = await client.get(url)
            assert r.status_code == 200, r.text
            seen[r.headers["x-server"]] += 1

    with trio.fail_after(timeout):
        async with trio.open_nursery() as n:
            for _ in range(concurrency):
                n.start_soon(worker)
    assert sum(seen.values()) == total
    return seen


async def test_weighted_clusters_split_90_10(make_core, upstreams, client):
    a, b = await upstreams.h1(name="a"), await upstreams.h1(name="b")
    proxy = make_core(snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [route("r", [("ca", 90), ("cb", 10)], match=prefix("/"))]))},
        [cluster("ca", [a.address]), cluster("cb", [b.address])],
    ))
    n, p = 1000, 0.10
    seen = await drive(client, proxy.url("/"), n)
    sigma = math.sqrt(n * p * (1 - p))  # ≈ 9.5
    assert abs(seen["b"] - n * p) <= 4 * sigma, seen
    assert seen["a"] + seen["b"] == n
    clusters = proxy.stats()["clusters"]
    assert (clusters["ca"]["rq_total"], clusters["cb"]["rq_total"]) == (seen["a"], seen["b"])


async def test_endpoint_weights_round_robin(make_core, upstreams, client):
    ups = [await upstreams.h1(name=f"u{i}") for i in range(3)]
    weights = [3, 1, 2]
    proxy = make_core(snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [route("r", "c", match=prefix("/"))]))},
        [cluster("c", [(u.address, w) for u, w in zip(ups, weights, strict=True)],
                 lb="round_robin")],
    ))
    n = 300
    seen = await drive(client, proxy.url("/"), n, concurrency=4)
    # Weighted round robin (EDF) is deterministic up to its random starting phase: each host's
    # share is exact within a couple of picks.
    for u, w in zip(ups, weights, strict=True):
        assert abs(seen[u.name] - n * w / sum(weights)) <= 3, seen


async def test_zero_weight_targets_get_nothing(make_core, upstreams, client):
    live = [await upstreams.h1(name=f"live{i}") for i in range(2)]
    idle_endpoint = await upstreams.h1(name="zero-endpoint")
    idle_cluster = await upstreams.h1(name="zero-cluster")
    proxy = make_core(snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [route("r", [("c", 1), ("z", 0)], match=prefix("/"))]))},
        [
            cluster("c", [(live[0].address, 1), (live[1].address, 1), (idle_endpoint.address, 0)],
                    lb="least_request"),
            cluster("z", [idle_cluster.address]),
        ],
    ))
    seen = await drive(client, proxy.url("/"), 200)
    assert idle_endpoint.requests == 0 and idle_cluster.requests == 0, seen
    assert seen["live0"] > 0 and seen["live1"] > 0
    assert proxy.cluster_stats("z")["rq_total"] == 0

    # Unequal weights (EDF) with a zero: still never picked.
    proxy.apply(snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [route("r", "c", match=prefix("/"))]))},
        [cluster("c", [(live[0].address, 2), (live[1].address, 1), (idle_endpoint.address, 0)],
                 lb="round_robin")],
    ))
    seen = await drive(client, proxy.url("/"), 90)
    assert idle_endpoint.requests == 0
    assert abs(seen["live0"] - 60) <= 3, seen
