"""Active health checking end to end: a host failing its health checks stops receiving traffic
(the checker's state says why) and gets it back after healthyThreshold successes; TCP probes; the
admin API shows the state; the HTTP probe's request is the documented one.

The configs use App Mesh's minimum `intervalMillis` (5000) and `timeoutMillis` (2000) and the
documented `resilience.healthCheck` extension to run probes every 100 ms (docs/resilience.md).
"""

from __future__ import annotations

import httpx
from meshplane import Proxy

from ..waiting import eventually
from .support import Upstream, health_check, mesh

INTERVAL_MS = 100


def listener(protocol: str = "http", **kw: int) -> dict[str, object]:
    hc, ext = health_check(INTERVAL_MS, protocol=protocol, **kw)
    return {"healthCheck": hc, "resilience": {"healthCheck": ext}}


def host(proxy: Proxy, up: Upstream) -> dict[str, object]:
    return proxy.stats()["clusters"]["app"]["hosts"][up.address]  # type: ignore[no-any-return]


async def spread(client: httpx.AsyncClient, port: int, n: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        r = await client.get(f"http://127.0.0.1:{port}/work")
        key = r.text if r.status_code == 200 else str(r.status_code)
        seen[key] = seen.get(key, 0) + 1
    return seen


async def test_failing_host_leaves_and_returns_after_the_thresholds(upstream, client) -> None:
    ups = [await upstream(f"u{i}") for i in range(3)]
    async with Proxy(mesh([u.address for u in ups], listener=listener())) as proxy:
        port = proxy.port(8080)
        await eventually(lambda: all(u.health_requests >= 1 for u in ups), what="first probes")
        assert set(await spread(client, port, 30)) == {"u0", "u1", "u2"}

        ups[0].health = "fail"
        # An HTTP status other than the expected one is an ACTIVE failure, counted towards
        # unhealthyThreshold; the checker's own state says why the host left.
        await eventually(lambda: not host(proxy, ups[0])["healthy"], what="u0 marked unhealthy")
        assert host(proxy, ups[0])["failed_active_hc"] is True
        active = host(proxy, ups[0])["active_hc"]
        assert active["state"] == "unhealthy" and active["last_result"] == "active_failure"
        before = ups[0].requests
        seen = await spread(client, port, 40)
        assert ups[0].requests == before and set(seen) == {"u1", "u2"}

        ups[0].health = "ok"
        await eventually(lambda: host(proxy, ups[0])["healthy"], what="u0 healthy again")
        # Back after healthyThreshold (2) successes in a row.
        active = host(proxy, ups[0])["active_hc"]
        assert active["state"] == "healthy" and active["consecutive_healthy"] >= 2
        assert "u0" in await spread(client, port, 30)
        stats = proxy.stats()["clusters"]["app"]["health_check"]
        assert stats["attempt"] >= stats["success"] + stats["failure"] - 3
        assert stats["failure"] >= 1 and stats["healthy"] == 3


async def test_unreachable_and_stalled_hosts_need_unhealthy_threshold(upstream, client) -> None:
    ups = [await upstream(f"u{i}") for i in range(3)]
    async with Proxy(mesh([u.address for u in ups], listener=listener(unhealthy=3))) as proxy:
        await eventually(lambda: all(u.health_requests >= 2 for u in ups), what="probes")
        ups[1].health = "stall"  # past timeoutMillis (200 ms): TIMEOUT, counted to the threshold
        ups[2].stop()  # refused connects: NETWORK failures
        await eventually(lambda: not host(proxy, ups[1])["healthy"], timeout=3.0, what="u1 out")
        await eventually(lambda: not host(proxy, ups[2])["healthy"], timeout=3.0, what="u2 out")
        hc = proxy.stats()["clusters"]["app"]
        assert hc["health_check"]["timeout"] >= 3 and hc["health_check"]["network_failure"] >= 6
        assert hc["hosts"][ups[1].address]["health_flags"] == "/failed_active_hc/active_hc_timeout"
        # Two of three hosts unhealthy is below Envoy's 50% panic threshold: traffic goes to
        # every host rather than piling onto the one left.
        assert set(await spread(client, proxy.port(8080), 30)) >= {"u0", "u1"}
        ups[1].health = "ok"
        await eventually(lambda: host(proxy, ups[1])["healthy"], timeout=3.0, what="u1 back")
        await ups[2].restart()  # the dead host comes back on its port
        await eventually(lambda: host(proxy, ups[2])["healthy"], timeout=3.0, what="u2 back")
        assert "u2" in await spread(client, proxy.port(8080), 30)


async def test_tcp_connect_probes(upstream, client) -> None:
    ups = [await upstream(f"u{i}") for i in range(2)]
    async with Proxy(mesh([u.address for u in ups], listener=listener("tcp"))) as proxy:
        await eventually(lambda: all(u.accepted >= 2 for u in ups), what="tcp probes")
        assert all(u.health_requests == 0 for u in ups)  # connect only, no request
        ups[0].stop()
        await eventually(lambda: not host(proxy, ups[0])["healthy"], timeout=3.0, what="u0 out")
        assert host(proxy, ups[1])["healthy"]
