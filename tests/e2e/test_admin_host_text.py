"""The admin API's per-host parts written by the core (`/stats?format=json`'s hosts, `/clusters`
text and JSON) against the Python renderers they replace, kept here as the reference: the bytes
must be identical, with the control layer's per-host view (health checks, outlier ejections,
odd strings and floats) and over a real admin socket with live health checks and traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

from meshplane import Proxy
from meshplane._core import HostTable
from meshplane.admin.registry import registry_json, registry_lines
from meshplane.admin.server import Response, clusters_json, clusters_text, json_parts
from meshplane.drivers.resilience import ResilienceView

from .asgi import serve_asgi
from .test_admin import GATEWAY_PORT, admin_url, mesh, upstream_app
from .waiting import eventually

pytestmark = pytest.mark.e2e

CLUSTER = "api-v1"


# -- the reference: the Python renderers from one dict per host (as before the core wrote them)


def _health_flags(host: Mapping[str, Any]) -> str:
    flags = host.get("health_flags")
    if isinstance(flags, str) and flags:
        return flags
    if isinstance(flags, list | tuple) and flags:
        return "".join(f"/{f}" for f in flags)
    if host.get("failed_active_hc") or host.get("ejected"):
        return ("/failed_active_hc" if host.get("failed_active_hc") else "") + (
            "/failed_outlier_check" if host.get("ejected") else ""
        )
    # NOTE: the core only knows healthy/unhealthy; active health checks are what mark a host.
    return "healthy" if host.get("healthy", True) else "/failed_active_hc"


def _unix_to_iso(value: Any) -> str:
    return datetime.fromtimestamp(float(value), tz=UTC).isoformat(timespec="milliseconds")


def _resilience_lines(prefix: str, host: Mapping[str, Any]) -> list[str]:
    """`/clusters` lines for what the health checker and outlier detector know of a host."""
    lines: list[str] = []
    hc = host.get("active_hc")
    if isinstance(hc, Mapping):
        lines.append(f"{prefix}::active_hc_state::{hc.get('state')}")
        if hc.get("last_result"):
            lines.append(f"{prefix}::active_hc_last_result::{hc['last_result']}")
    od = host.get("outlier")
    if isinstance(od, Mapping):
        lines.append(f"{prefix}::outlier_num_ejections::{od.get('num_ejections', 0)}")
        if od.get("ejected"):
            lines.append(f"{prefix}::outlier_ejection_reason::{od.get('reason')}")
            if od.get("ejected_until") is not None:
                lines.append(f"{prefix}::outlier_ejected_until::{_unix_to_iso(od['ejected_until'])}")
        if od.get("success_rate") is not None:
            lines.append(f"{prefix}::success_rate::{od['success_rate']:.1f}")
    return lines


def reference_clusters_text(stats: Mapping[str, Any]) -> str:
    """Envoy's `/clusters` text: `cluster::host::stat::value`, one line each."""
    lines: list[str] = []
    for cname, cluster in sorted((stats.get("clusters") or {}).items()):
        for addr, host in sorted((cluster.get("hosts") or {}).items()):
            for key, value in sorted(host.items()):
                if isinstance(value, int) and not isinstance(value, bool) and key != "weight":
                    lines.append(f"{cname}::{addr}::{key}::{value}")
            lines.append(f"{cname}::{addr}::health_flags::{_health_flags(host)}")
            lines += _resilience_lines(f"{cname}::{addr}", host)
            lines.append(f"{cname}::{addr}::weight::{host.get('weight', 1)}")
    lines += registry_lines(stats)
    return "\n".join(lines) + "\n" if lines else ""


def reference_clusters_json(stats: Mapping[str, Any]) -> dict[str, Any]:
    statuses = []
    for cname, cluster in sorted((stats.get("clusters") or {}).items()):
        hosts = []
        for addr, host in sorted((cluster.get("hosts") or {}).items()):
            counters = {k: v for k, v in host.items() if isinstance(v, int) and not isinstance(v, bool)}
            counters.pop("weight", None)
            entry: dict[str, Any] = {
                "address": addr,
                "stats": counters,
                "health_status": {
                    "healthy": bool(host.get("healthy", True)),
                    "failed_active_hc": bool(host.get("failed_active_hc", False)),
                    "ejected": bool(host.get("ejected", False)),
                    "flags": _health_flags(host),
                },
                "weight": host.get("weight", 1),
            }
            for key in ("active_hc", "outlier"):
                if isinstance(host.get(key), Mapping):
                    entry[key] = dict(host[key])
            if entry.get("outlier", {}).get("ejected_until") is not None:
                entry["outlier"]["ejected_until_iso"] = _unix_to_iso(entry["outlier"]["ejected_until"])
            hosts.append(entry)
        status: dict[str, Any] = {"name": cname, "host_statuses": hosts}
        for key in ("health_check", "outlier_detection"):
            if isinstance(cluster.get(key), Mapping):
                status[key] = dict(cluster[key])
        statuses.append(status)
    registry = registry_json(stats)
    return {"cluster_statuses": statuses, **({"registry": registry} if registry else {})}


def plain(stats: dict[str, Any]) -> dict[str, Any]:
    """`stats` with each cluster's `HostTable` as the dict of dicts it reads as."""
    if "clusters" not in stats:
        return stats
    clusters = {
        name: {**c, "hosts": c["hosts"].to_dict()} if isinstance(c.get("hosts"), HostTable) else c
        for name, c in (stats.get("clusters") or {}).items()
    }
    return {**stats, "clusters": clusters}


def reference_stats_json(stats: dict[str, Any]) -> bytes:
    body = Response.json(200, plain(stats)).body
    assert isinstance(body, bytes)
    return body


# -- the core's rendering, as the admin API assembles it


def joined(parts: tuple[bytes, ...]) -> bytes:
    return b"".join(parts)


def rendered(proxy: Proxy, view: ResilienceView | None) -> dict[str, bytes]:
    """The three admin bodies from the core's host text, with `view` as the control layer's."""
    core = proxy._core  # type: ignore[attr-defined]
    health, outliers = (view.hc_hosts, view.od_hosts) if view is not None else (None, None)
    lean = core.stats(False)
    if view is not None:
        view.annotate(lean)
        stats = view.annotate(core.stats_hosts_json(health, outliers, True))
    else:
        stats = core.stats_hosts_json(health, outliers, False)
    return {
        "stats": joined(json_parts(stats)),
        "clusters": joined(clusters_text(lean, core.clusters_text(health, outliers))),
        "clusters_json": joined(json_parts(clusters_json(lean, core.host_statuses_json(health, outliers)))),
    }


def reference(proxy: Proxy, view: ResilienceView | None) -> dict[str, bytes]:
    core = proxy._core  # type: ignore[attr-defined]
    stats = plain(core.stats())  # the hosts as dicts: `annotate` adds the view to them
    if view is not None:
        view.annotate(stats)
    return {
        "stats": reference_stats_json(stats),
        "clusters": reference_clusters_text(stats).encode(),
        "clusters_json": reference_stats_json(reference_clusters_json(stats)),
    }


def synthetic_view(hosts: list[str]) -> ResilienceView:
    """Every shape the drivers give a host: probed or not, timed out, ejected (with a time, a
    reason, rates) or not, and strings that JSON must escape."""
    first, second, third = hosts
    hc = {
        first: {"state": "healthy", "health_flags": "", "last_result": "success",
                "last_check": 12.5, "num_healthy": 3, "num_unhealthy": 0},
        second: {"state": "unhealthy", "health_flags": "/failed_active_hc/active_hc_timeout",
                 "last_result": "timeout", "num_healthy": 0, "num_unhealthy": 2},
        third: {"state": "unhealthy ✗ \"quoted\"\n", "health_flags": "/failed_active_hc",
                "last_result": None, "num_healthy": 0, "num_unhealthy": 1},
    }
    od = {
        first: {"ejected": True, "reason": "consecutive_5xx", "ejected_until": 1_780_000_000.1239,
                "ejected_for_s": 29.5, "num_ejections": 2, "backoff": 1, "success_rate": 12.25,
                "local_origin_success_rate": None},
        second: {"ejected": False, "reason": None, "ejected_until": None, "ejected_for_s": None,
                 "num_ejections": 0, "backoff": 0, "success_rate": 1e-05,
                 "local_origin_success_rate": 99.95},
    }
    return ResilienceView(
        hc_stats={CLUSTER: {"attempt": 7, "success": 3}},
        od_stats={CLUSTER: {"ejections_active": 1}},
        hc_hosts={CLUSTER: hc, "no-such-cluster": {"127.0.0.1:1": hc[first]}},
        od_hosts={CLUSTER: od},
    )


async def test_core_written_host_parts_equal_the_python_rendering(nursery: trio.Nursery) -> None:
    ok = await serve_asgi(nursery, upstream_app)
    config = mesh(ok)
    node = next(r for r in config["resources"] if r["name"] == CLUSTER)
    hosts = [f"127.0.0.1:{ok}", "127.0.0.1:1", "127.0.0.1:2"]
    node["spec"]["serviceDiscovery"] = {"static": {"endpoints": hosts}}
    async with Proxy(config, admin="127.0.0.1:0", drain_ms=200) as proxy:
        assert rendered(proxy, None) == reference(proxy, None)
        port = proxy.port(GATEWAY_PORT)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            statuses = {(await client.get("/x")).status_code for _ in range(12)}
        assert 200 in statuses  # some hosts answered: they have exact codes now
        proxy._core.set_host_ejected(CLUSTER, hosts[0], True)  # type: ignore[attr-defined]
        proxy._core.set_host_health(CLUSTER, hosts[1], False)  # type: ignore[attr-defined]
        view = synthetic_view(hosts)
        assert rendered(proxy, None) == reference(proxy, None)
        # The core's host tables carry the view as `annotate` adds it to the hosts' dicts.
        core = proxy._core  # type: ignore[attr-defined]
        tables = core.stats(True, view.hc_hosts, view.od_hosts, True)["clusters"][CLUSTER]["hosts"]
        dicts = view.annotate(plain(core.stats()))["clusters"][CLUSTER]["hosts"]
        assert isinstance(tables, HostTable) and tables.to_dict() == dicts and tables == dicts
        assert [tables[h] for h in hosts] == [dicts[h] for h in hosts]
        assert "outlier" in tables[hosts[0]] and "active_hc" in tables[hosts[1]]
        mine, theirs = rendered(proxy, view), reference(proxy, view)
        for key in mine:
            assert mine[key].decode() == theirs[key].decode(), key
        assert b"outlier_ejected_until::2026-05-28T20:26:40.123+00:00" in mine["clusters"]
        assert b"\\u2717" in mine["stats"] and b"/active_hc_timeout" in mine["clusters_json"]


async def test_admin_bodies_over_a_real_socket_equal_the_python_rendering(nursery: trio.Nursery) -> None:
    """Live health checks (one host refuses) and traffic; a GET is compared with the reference
    rendering of the stats read just before and after it, when those two agree."""
    ok = await serve_asgi(nursery, upstream_app)
    config = mesh(ok)
    node = next(r for r in config["resources"] if r["name"] == CLUSTER)
    node["spec"]["serviceDiscovery"] = {"static": {"endpoints": [f"127.0.0.1:{ok}", "127.0.0.1:1"]}}
    node["spec"]["listeners"][0]["healthCheck"] = {
        "protocol": "tcp", "intervalMillis": 5000, "timeoutMillis": 2000,
        "healthyThreshold": 2, "unhealthyThreshold": 2}
    node["spec"]["listeners"][0]["resilience"] = {"healthCheck": {"intervalMillis": 1000, "timeoutMillis": 500}}
    async with Proxy(config, admin="127.0.0.1:0", drain_ms=200) as proxy:
        def probed() -> bool:
            hosts = proxy.stats()["clusters"][CLUSTER]["hosts"]
            return all(h.get("active_hc", {}).get("last_result") for h in hosts.values())

        await eventually(probed, timeout=10, what="every host probed once")
        port = proxy.port(GATEWAY_PORT)
        async with httpx.AsyncClient() as client:
            for _ in range(6):
                await client.get(f"http://127.0.0.1:{port}/x")
            for path, render in [
                ("/stats?format=json", lambda s: reference_stats_json(s)),
                ("/clusters", lambda s: reference_clusters_text(s).encode()),
                ("/clusters?format=json", lambda s: reference_stats_json(reference_clusters_json(s))),
            ]:
                for _ in range(20):  # bounded: the drivers may change something mid-read
                    before = await proxy.read_stats()
                    got = await client.get(admin_url(proxy, path))
                    after = await proxy.read_stats()
                    if before == after:
                        break
                else:
                    raise AssertionError(f"the stats never held still around GET {path}")
                assert got.status_code == 200
                assert got.content.decode() == render(after).decode(), path


async def test_a_packed_health_view_renders_as_the_dict_per_host_view(nursery: trio.Nursery) -> None:
    """The health view in compact form (`ActiveHealthChecks.read_packed`, what the admin API
    passes) gives the core's renderers the same bytes as a dict per host: every state, a
    timeout, a key that is no longer checked (the core's host then has no view)."""
    import random
    from array import array

    from meshplane.policy import HealthChecker, HealthCheckPolicy, ProbeResult
    from meshplane.policy.health import VIEW_NAMES

    ok = await serve_asgi(nursery, upstream_app)
    config = mesh(ok)
    node = next(r for r in config["resources"] if r["name"] == CLUSTER)
    hosts = [f"127.0.0.1:{ok}", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    node["spec"]["serviceDiscovery"] = {"static": {"endpoints": hosts}}
    policy = HealthCheckPolicy("tcp", 5.0, 2.0, 2, 2, initial_jitter=0.0)
    checker: HealthChecker[str] = HealthChecker(policy, random.Random(5))
    checker.set_hosts(hosts, 0.0)
    checker.record(hosts[0], ProbeResult.SUCCESS, 1.0)
    checker.record(hosts[1], ProbeResult.TIMEOUT, 1.0)
    keys = checker.keys()
    records: array[int] = array("Q")
    checker.pack(keys, records)
    checker.set_hosts(hosts[:3], 2.0)  # hosts[3] is no longer checked: absent in a fresh pack
    records_now: array[int] = array("Q")
    checker.pack(keys, records_now)
    as_dicts = {CLUSTER: checker.snapshot()}
    packed = {CLUSTER: (keys, records_now.tobytes(), VIEW_NAMES)}
    async with Proxy(config, admin="127.0.0.1:0", drain_ms=200) as proxy:
        core = proxy._core  # type: ignore[attr-defined]
        core.set_host_health(CLUSTER, hosts[1], False)
        assert core.clusters_text(packed, None) == core.clusters_text(as_dicts, None)
        assert core.host_statuses_json(packed, None) == core.host_statuses_json(as_dicts, None)
        assert core.stats_hosts_json(packed, None, True) == core.stats_hosts_json(as_dicts, None, True)
        text = core.clusters_text(packed, None)
        assert b"active_hc_timeout" in text and f"{hosts[2]}::active_hc_state::unknown".encode() in text
        assert f"{hosts[3]}::active_hc".encode() not in text
        with pytest.raises(ValueError, match="8-byte numbers per key"):
            core.clusters_text({CLUSTER: (keys, records.tobytes()[:-8], VIEW_NAMES)}, None)


async def test_sparse_outlier_and_kept_health_views_render_as_the_dict_per_host_views(
    nursery: trio.Nursery,
) -> None:
    """The outlier view in sparse form (`OutlierEjections.sparse`: every key, the entry of a
    host as new, the others' entries) and the health view with its keys as a tuple (which
    the core keeps between calls, by the tuple) give every reader of the core what a dict per
    host gives: also when the same tuples come again, and when new tuples with other keys, in
    another order, follow them (nothing kept from the old ones is reused)."""
    import random

    from meshplane.policy import HealthChecker, HealthCheckPolicy, ProbeResult
    from meshplane.policy.health import VIEW_NAMES

    ok = await serve_asgi(nursery, upstream_app)
    config = mesh(ok)
    node = next(r for r in config["resources"] if r["name"] == CLUSTER)
    hosts = [f"127.0.0.1:{ok}", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    node["spec"]["serviceDiscovery"] = {"static": {"endpoints": hosts}}
    clean = {"ejected": False, "reason": None, "ejected_until": None, "ejected_for_s": None,
             "num_ejections": 0, "backoff": 0, "success_rate": None, "local_origin_success_rate": None}
    ejected = {**clean, "ejected": True, "reason": "consecutive_5xx", "ejected_until": 1767225600.5,
               "ejected_for_s": 29.5, "num_ejections": 1, "backoff": 1}
    rated = {**clean, "success_rate": 87.5}
    policy = HealthCheckPolicy("tcp", 5.0, 2.0, 2, 2, initial_jitter=0.0)
    checker: HealthChecker[str] = HealthChecker(policy, random.Random(5))
    checker.set_hosts(hosts[:3], 0.0)
    checker.record(hosts[0], ProbeResult.SUCCESS, 1.0)
    checker.record(hosts[1], ProbeResult.TIMEOUT, 1.0)

    def views(od_keys: tuple[str, ...], entries: dict[str, dict[str, Any]]) -> tuple[Any, Any, Any, Any]:
        hc_keys, records = checker.view()
        packed = {CLUSTER: (hc_keys, records.tobytes(), VIEW_NAMES)}
        sparse = {CLUSTER: (od_keys, clean, entries)}
        return (packed, sparse, {CLUSTER: checker.snapshot()},
                {CLUSTER: {k: entries.get(k, clean) for k in od_keys}})

    def same(core: Any, packed: Any, sparse: Any, hc_dicts: Any, od_dicts: Any) -> None:
        assert core.clusters_text(packed, sparse) == core.clusters_text(hc_dicts, od_dicts)
        assert core.host_statuses_json(packed, sparse) == core.host_statuses_json(hc_dicts, od_dicts)
        assert core.stats_hosts_json(packed, sparse, True) == core.stats_hosts_json(hc_dicts, od_dicts, True)
        table = core.stats(True, packed, sparse, True)["clusters"][CLUSTER]["hosts"]
        plain = core.stats(True, hc_dicts, od_dicts, True)["clusters"][CLUSTER]["hosts"]
        assert isinstance(table, HostTable) and table.to_dict() == plain.to_dict()
        assert {k: table[k] for k in hosts} == plain.to_dict()

    async with Proxy(config, admin="127.0.0.1:0", drain_ms=200) as proxy:
        core = proxy._core  # type: ignore[attr-defined]
        core.set_host_ejected(CLUSTER, hosts[1], True)
        # "10.9.9.9:1" is tracked but no host of the core; hosts[3] is not tracked at all.
        od_keys = (hosts[0], hosts[1], hosts[2], "10.9.9.9:1")
        first = views(od_keys, {hosts[1]: ejected, hosts[2]: rated})
        same(core, *first)
        same(core, *first)  # the same tuples again: the core's kept keys
        text = core.clusters_text(first[0], first[1])
        assert f"{hosts[0]}::outlier_num_ejections::0".encode() in text
        assert f"{hosts[3]}::outlier".encode() not in text
        # New tuples, other keys in another order, other records: nothing stale is read.
        checker.set_hosts([hosts[3], hosts[2], hosts[0]], 2.0)
        checker.record(hosts[3], ProbeResult.SUCCESS, 3.0)
        second = views((hosts[3], hosts[2], hosts[0]), {hosts[3]: ejected})
        assert second[0][CLUSTER][0] is not first[0][CLUSTER][0]
        same(core, *second)
        text = core.clusters_text(second[0], second[1])
        assert f"{hosts[1]}::outlier".encode() not in text
        assert f"{hosts[1]}::active_hc".encode() not in text
