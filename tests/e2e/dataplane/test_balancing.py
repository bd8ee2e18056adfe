"""Load balancing against live hosts: weighted least request favours the fast host under
concurrency, host health takes a host out (and panic puts it back), and `set_endpoints` swaps
membership while traffic flows."""

from __future__ import annotations

from collections import Counter

import httpx
import trio

from .support import Exchange, echo, one_route

SLOW_S = 0.2


async def slow(ex: Exchange) -> None:
    # The slow host's service time: the one deliberate delay of this module.
    await trio.sleep(SLOW_S)
    await echo(ex)


async def sequential(client: httpx.AsyncClient, url: str, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    with trio.fail_after(20):
        for _ in range(n):
            r = await client.get(url)
            assert r.status_code == 200, r.text
            seen[r.headers["x-server"]] += 1
    return seen


async def test_least_request_prefers_the_fast_host(make_core, upstreams, client):
    fast = await upstreams.h1(name="fast")
    slow_up = await upstreams.h1(slow, name="slow")
    proxy = make_core(one_route([fast.address, slow_up.address],
                                cluster_extra={"lb": "least_request"}))
    total, remaining = 400, 400
    seen: Counter[str] = Counter()
    url = proxy.url("/")

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            r = await client.get(url)
            assert r.status_code == 200
            seen[r.headers["x-server"]] += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            for _ in range(20):
                n.start_soon(worker)
    assert seen["fast"] + seen["slow"] == total
    # Power of two choices over 2 hosts: once the slow host has more requests in flight it
    # wins only when both samples are it (1/4), so about 3:1 (measured 2.3-3); round robin
    # would give exactly 1:1.
    assert seen["fast"] >= 1.5 * seen["slow"], seen
    assert slow_up.max_active >= 2  # there really was concurrency on the slow host


async def test_unhealthy_host_gets_no_traffic_and_panic_restores_it(make_core, upstreams,
                                                                    client):
    ups = [await upstreams.h1(name=f"h{i}") for i in range(3)]
    proxy = make_core(one_route([u.address for u in ups], cluster_extra={"lb": "round_robin"}))
    url = proxy.url("/")
    assert set(await sequential(client, url, 30)) == {"h0", "h1", "h2"}

    # 2 of 3 healthy (67% ≥ 50%): the unhealthy host is out.
    proxy.core.set_host_health("c", ups[0].address, False)
    assert proxy.host_stats("c", ups[0].address)["healthy"] is False
    before = ups[0].requests
    seen = await sequential(client, url, 60)
    assert ups[0].requests == before and seen == {"h1": 30, "h2": 30}

    # 1 of 3 healthy (33% < 50%): panic, every host takes traffic again (Envoy).
    proxy.core.set_host_health("c", ups[1].address, False)
    assert set(await sequential(client, url, 30)) == {"h0", "h1", "h2"}

    # Healthy again: back in rotation.
    proxy.core.set_host_health("c", ups[0].address, True)
    proxy.core.set_host_health("c", ups[1].address, True)
    assert set(await sequential(client, url, 30)) == {"h0", "h1", "h2"}


async def test_set_endpoints_swaps_membership_live(make_core, upstreams, client):
    u1, u2, u3 = [await upstreams.h1(name=n) for n in ("u1", "u2", "u3")]
    proxy = make_core(one_route([u1.address, u2.address], cluster_extra={"lb": "round_robin"}))
    url = proxy.url("/")
    assert set(await sequential(client, url, 20)) == {"u1", "u2"}

    proxy.core.set_endpoints("c", [(u3.address, 1)])
    assert set(proxy.cluster_stats()["hosts"]) == {u3.address}
    assert set(await sequential(client, url, 20)) == {"u3"}

    # A host that stays keeps its counters; one that comes back starts afresh.
    proxy.core.set_endpoints("c", [(u1.address, 1), (u3.address, 3)])
    seen = await sequential(client, url, 40)
    assert abs(seen["u3"] - 30) <= 2 and seen["u1"] + seen["u3"] == 40, seen
    assert proxy.host_stats("c", u3.address)["rq_total"] == 20 + seen["u3"]
    assert proxy.host_stats("c", u1.address)["rq_total"] == seen["u1"]


async def test_exactly_half_healthy_is_not_panic(make_core, upstreams, client):
    # Panic is 2·healthy < total (balance/mod.rs): 1 healthy of 2 is 50%, not panic.
    ups = [await upstreams.h1(name=f"h{i}") for i in range(2)]
    proxy = make_core(one_route([u.address for u in ups], cluster_extra={"lb": "least_request"}))
    proxy.core.set_host_health("c", ups[0].address, False)
    assert await sequential(client, proxy.url("/"), 40) == {"h1": 40}
    assert ups[0].requests == 0
