"""Outlier detection end to end: a host answering 5xx is ejected the moment its
`maxServerErrors`-th consecutive failure is counted (an event through the wake-up bridge, not
the next sweep), comes back after `baseEjectionDuration`, `maxEjectionPercent` is never
exceeded, and the admin API says who is ejected, why and until when."""

from __future__ import annotations

import json

import httpx
from meshplane import Proxy
from meshplane._bridge import OutlierEvent

from ..waiting import eventually
from .support import Upstream, drive_until, mesh, outlier

NO_RETRY = {"maxRetries": 0, "perRetryTimeout": {"unit": "ms", "value": 1000},
            "httpRetryEvents": ["server-error"]}


def host(proxy: Proxy, up: Upstream) -> dict[str, object]:
    return proxy.stats()["clusters"]["app"]["hosts"][up.address]  # type: ignore[no-any-return]


async def test_consecutive_5xx_ejects_at_once_and_the_host_returns(upstream, client) -> None:
    ups = [await upstream("bad", mode="fail"), await upstream("good1"), await upstream("good2")]
    # A sweep interval longer than the test: no sweep runs, so an ejection can only come from
    # the core's event (what "at once" means), and the sweep count below proves it.
    cfg = mesh([u.address for u in ups], retry=NO_RETRY,
               listener={"outlierDetection": outlier(5, interval_ms=300_000, ejection_ms=300)})
    async with Proxy(cfg) as proxy:
        port = proxy.port(8080)
        url = f"http://127.0.0.1:{port}/work"
        outliers = proxy._resilience.outliers  # type: ignore[union-attr]
        sweeps = []
        monkey_sweep = outliers.sweep

        def counted_sweep(now: float | None = None) -> None:
            sweeps.append(now)
            monkey_sweep(now)

        outliers.sweep = counted_sweep  # type: ignore[method-assign]
        # Least-request on idle hosts spreads requests, so drive until the bad host has
        # answered exactly maxServerErrors times, checking after each response.
        for _ in range(100):
            if ups[0].requests >= 5:
                break
            await client.get(url)
            if ups[0].requests < 5:
                assert not host(proxy, ups[0])["ejected"], "ejected before the threshold"
        assert ups[0].requests == 5
        await eventually(lambda: host(proxy, ups[0])["ejected"], what="ejection after the 5th 5xx")
        assert outliers.events_handled == 1
        od = proxy.stats()["clusters"]["app"]["outlier_detection"]
        assert od["ejections_active"] == 1 and od["ejections_enforced_consecutive_5xx"] == 1
        assert host(proxy, ups[0])["outlier"]["reason"] == "consecutive_5xx"
        seen = ups[0].requests
        for _ in range(20):
            assert (await client.get(url)).status_code == 200
        assert ups[0].requests == seen

        assert sweeps == [], "the ejection came from the event, not from a sweep"

        # baseEjectionDuration (300 ms) is rounded up to the sweep grid, so use a fast sweep.
    cfg = mesh([u.address for u in ups], retry=NO_RETRY,
               listener={"outlierDetection": outlier(3, interval_ms=50, ejection_ms=300)})
    async with Proxy(cfg) as proxy:
        url = f"http://127.0.0.1:{proxy.port(8080)}/work"
        await drive_until(client, url, lambda: host(proxy, ups[0])["ejected"], what="ejection")
        # Ejected for baseEjectionDuration × the number of ejections, as the detector says.
        state = host(proxy, ups[0])["outlier"]
        assert state["reason"] == "consecutive_5xx"
        assert state["ejected_for_s"] <= 0.3 * state["num_ejections"]
        ups[0].mode = "ok"
        await eventually(lambda: not host(proxy, ups[0])["ejected"], what="return after the ejection time")
        od = proxy.stats()["clusters"]["app"]["outlier_detection"]
        assert od["ejections_active"] == 0 and host(proxy, ups[0])["outlier"]["reason"] is None
        before = ups[0].requests
        for _ in range(30):
            await client.get(url)
        assert ups[0].requests > before, "the returned host gets traffic again"


async def test_max_ejection_percent_is_never_exceeded(upstream, client) -> None:
    ups = [await upstream(f"u{i}", mode="fail") for i in range(4)]
    cfg = mesh([u.address for u in ups], retry=NO_RETRY,
               listener={"outlierDetection": outlier(2, interval_ms=50, ejection_ms=5000,
                                                      percent=50)})
    async with Proxy(cfg) as proxy:
        url = f"http://127.0.0.1:{proxy.port(8080)}/work"
        most = 0
        for _ in range(200):
            await client.get(url)
            stats = proxy.stats()["clusters"]["app"]
            ejected = sum(1 for h in stats["hosts"].values() if h["ejected"])
            most = max(most, ejected)
            assert ejected * 100 <= 50 * len(ups)
        assert most == 2
        assert stats["outlier_detection"]["ejections_overflow"] >= 1


async def test_admin_clusters_shows_why_and_until_when(upstream, client) -> None:
    ups = [await upstream("bad", mode="fail"), await upstream("good")]
    cfg = mesh([u.address for u in ups], retry=NO_RETRY,
               listener={"outlierDetection": outlier(2, interval_ms=100, ejection_ms=30_000)})
    async with Proxy(cfg) as proxy:
        url = f"http://127.0.0.1:{proxy.port(8080)}/work"
        await drive_until(client, url, lambda: host(proxy, ups[0])["ejected"], what="ejection")
        admin = "http://{}:{}".format(*proxy.admin_address)
        async with httpx.AsyncClient(trust_env=False) as c:
            text = (await c.get(f"{admin}/clusters")).text
            doc = json.loads((await c.get(f"{admin}/clusters?format=json")).text)
            prom = (await c.get(f"{admin}/stats")).text
        bad = ups[0].address
        assert f"app::{bad}::health_flags::/failed_outlier_check" in text
        assert f"app::{bad}::outlier_ejection_reason::consecutive_5xx" in text
        assert f"app::{bad}::outlier_ejected_until::" in text
        entry = next(h for c in doc["cluster_statuses"] if c["name"] == "app"
                     for h in c["host_statuses"] if h["address"] == bad)
        assert entry["health_status"]["flags"] == "/failed_outlier_check"
        assert entry["outlier"]["reason"] == "consecutive_5xx"
        assert 0 < entry["outlier"]["ejected_for_s"] <= 30
        assert 'meshplane_cluster_outlier_detection_ejections_active{cluster="app"} 1' in prom
        assert 'meshplane_cluster_outlier_detection_ejections_enforced_total{cluster="app"} 1' in prom


async def test_a_driver_exception_is_logged_counted_and_ejection_goes_on(upstream, client, caplog) -> None:
    ups = [await upstream("bad1", mode="fail"), await upstream("bad2", mode="fail"), await upstream("good")]
    cfg = mesh([u.address for u in ups], retry=NO_RETRY,
               listener={"outlierDetection": outlier(3, interval_ms=300_000, ejection_ms=30_000, percent=100)})
    async with Proxy(cfg) as proxy:
        outliers = proxy._resilience.outliers  # type: ignore[union-attr]
        handle = outliers.on_event
        failed: list[str] = []

        def fails_once(event: OutlierEvent) -> None:
            if not failed:
                failed.append(event.host)
                raise RuntimeError("a bug in the outlier driver")
            handle(event)

        outliers.on_event = fails_once  # type: ignore[method-assign]
        url = f"http://127.0.0.1:{proxy.port(8080)}/work"
        bad = {ups[0].address, ups[1].address}

        def ejected() -> set[str]:
            hosts = proxy.stats()["clusters"]["app"]["hosts"]
            return {address for address, h in hosts.items() if h["ejected"]}

        # The first event fails; the other bad host's event still ejects it.
        await drive_until(client, url, lambda: bool(failed) and bool(ejected()), what="an ejection after the failure")
        assert ejected() <= bad and failed[0] in bad
        admin = "http://{}:{}".format(*proxy.admin_address)
        async with httpx.AsyncClient(trust_env=False) as c:
            stats = (await c.get(f"{admin}/stats?format=json")).json()
            prom = (await c.get(f"{admin}/stats")).text
        assert stats["control"]["driver_errors"] == {"health_check": 0, "outlier_detection": 1,
                                                    "functions": 0}
        assert 'meshplane_control_driver_errors_total{driver="outlier_detection"} 1' in prom
    errors = [r for r in caplog.records if r.name == "meshplane.outlier" and r.levelname == "ERROR"]
    assert len(errors) == 1 and "a bug in the outlier driver" in errors[0].getMessage()
