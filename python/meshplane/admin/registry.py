"""The registry's part of the admin API: `/clusters` lines and `/stats` metrics.

Reads `stats["registry"]` (`CloudMapDiscovery.status()`): the store URL, whether it is
connected and since when it is not, and per Cloud Map cluster the service it follows and how
many instances and endpoints it has. Pure functions over that mapping; imports nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["registry_json", "registry_lines", "registry_metrics"]


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    import datetime  # here: an idle proxy never loads it (~0.3 MiB; benches/README.md)

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def registry_lines(stats: Mapping[str, Any]) -> list[str]:
    """`registry::...` lines, then `<cluster>::registry::<stat>::<value>` per Cloud Map cluster.
    A cluster with no instance says so (`no_instances`), so an empty cluster is never silent."""
    reg = stats.get("registry")
    if not isinstance(reg, Mapping):
        return []
    state = "connected" if reg.get("connected") else "disconnected"
    lines = [f"registry::store::{reg.get('store')}", f"registry::state::{state}"]
    if not reg.get("connected"):
        lines.append(f"registry::disconnected_since::{_iso(reg.get('disconnected_since'))}")
        lines.append(f"registry::last_error::{reg.get('last_error')}")
    for cname, c in sorted((reg.get("clusters") or {}).items()):
        attrs = ",".join(f"{k}={v}" for k, v in sorted(c["attributes"].items()))
        lines.append(f"{cname}::registry::service::{c['namespace']}/{c['service']}")
        lines.append(f"{cname}::registry::attributes::{attrs}")
        lines.append(f"{cname}::registry::instances::{c['instances']}")
        lines.append(f"{cname}::registry::endpoints::{c['endpoints']}")
        if not c["endpoints"]:
            lines.append(f"{cname}::registry::no_instances::virtual node {c['node']}: no instance "
                         f"of {c['namespace']}/{c['service']} matches")
    return lines


def registry_json(stats: Mapping[str, Any]) -> dict[str, Any] | None:
    reg = stats.get("registry")
    if not isinstance(reg, Mapping):
        return None
    out = dict(reg)
    out["disconnected_since_iso"] = _iso(reg.get("disconnected_since")) or None
    return out


def registry_metrics(stats: Mapping[str, Any]) -> str:
    """Prometheus lines: connection state, disconnected-since time, per-cluster endpoints."""
    reg = stats.get("registry")
    if not isinstance(reg, Mapping):
        return ""
    store = str(reg.get("store")).replace("\\", "\\\\").replace('"', '\\"')
    lines = [
        "# HELP meshplane_registry_connected 1 if the registry store is reachable",
        "# TYPE meshplane_registry_connected gauge",
        f'meshplane_registry_connected{{store="{store}"}} {1 if reg.get("connected") else 0}',
        "# HELP meshplane_registry_disconnected_since_seconds Unix time the store became unreachable, 0 when connected",
        "# TYPE meshplane_registry_disconnected_since_seconds gauge",
        f'meshplane_registry_disconnected_since_seconds{{store="{store}"}} '
        f'{reg.get("disconnected_since") or 0}',
        "# HELP meshplane_registry_updates_total registry updates applied",
        "# TYPE meshplane_registry_updates_total counter",
        f'meshplane_registry_updates_total{{store="{store}"}} {reg.get("updates", 0)}',
        "# HELP meshplane_registry_endpoints endpoints a Cloud Map cluster resolves to",
        "# TYPE meshplane_registry_endpoints gauge",
    ]
    for cname, c in sorted((reg.get("clusters") or {}).items()):
        lines.append(f'meshplane_registry_endpoints{{cluster="{cname}"}} {c["endpoints"]}')
    return "\n".join(lines) + "\n"
