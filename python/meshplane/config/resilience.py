"""Resilience settings of a node listener -> the snapshot's cluster fields, and what the Trio
control layer needs to probe and eject (docs/resilience.md).

App Mesh puts `healthCheck`, `outlierDetection` and `connectionPool` on a VirtualNode listener;
meshplane adds the `resilience` extension block beside them (shape in `specs.RESILIENCE`):

- `cluster_fields(listener)`: the callers' cluster of that listener gets `outlierDetection` (the
  consecutive thresholds the core counts: `maxServerErrors` -> `consecutive5xx`, and the
  extension's gateway / local-origin thresholds), `circuitBreakers` (`connectionPool` plus the
  extension's `maxRetries`) and `retryBudget` (extension only; the core defaults to 20% / 3).
- `apply_gateway_limits(cfg, doc)`: a VirtualGateway listener's `connectionPool` caps every
  cluster that listener routes to (App Mesh: "destination-side"), the lower limit winning.
- `listener_issues(node)`: cross-field rules of the extension, for validation.
- `targets(...)`: per cluster, the App Mesh dicts and extension dicts that
  `HealthCheckPolicy.from_appmesh` / `OutlierPolicy.from_appmesh` take, and the endpoints.

Pure; imports only `model` and `topology` (never `meshplane.policy`, which sits above config).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshplane.config.model import MeshConfig, Resource
from meshplane.config.topology import duration_ms, listener_spec

__all__ = [
    "UNLIMITED",
    "ResilienceTarget",
    "apply_gateway_limits",
    "circuit_breakers",
    "cluster_fields",
    "listener_issues",
    "targets",
]

UNLIMITED = 2_147_483_647  # App Mesh's circuit breakers: effectively off unless connectionPool
U32_MAX = 2**32 - 1
# Envoy's default threshold for a consecutive detector the extension turns on without a number.
ENVOY_CONSECUTIVE_DEFAULT = 5
# Extension keys that are not `HealthCheckPolicy.from_appmesh` extension keys: they replace or
# complete the App Mesh `healthCheck` itself.
_HC_OVERRIDES = ("intervalMillis", "timeoutMillis", "port")

Issue = tuple[str, str]


def circuit_breakers(pool: Mapping[str, Any] | None, max_retries: int | None = None) -> dict[str, int]:
    """`connectionPool` (exactly one of http / http2 / grpc / tcp) as snapshot limits; what it
    does not set stays App Mesh's 2147483647. `max_retries` is the extension's breaker."""
    limits = {
        "maxConnections": UNLIMITED,
        "maxPendingRequests": UNLIMITED,
        "maxRequests": UNLIMITED,
        "maxRetries": UNLIMITED if max_retries is None else max_retries,
    }
    for values in (pool or {}).values():
        limits.update({k: v for k, v in values.items() if k in limits})
    return limits


def cluster_fields(lst: Mapping[str, Any]) -> dict[str, Any]:
    """The resilience fields of the callers' cluster of node listener `lst`."""
    ext = lst.get("resilience") or {}
    fields: dict[str, Any] = {
        "circuitBreakers": circuit_breakers(
            lst.get("connectionPool"), (ext.get("circuitBreakers") or {}).get("maxRetries")
        )
    }
    outlier = lst.get("outlierDetection")
    if outlier:
        fields["outlierDetection"] = outlier_thresholds(outlier, ext.get("outlierDetection") or {})
    if "retryBudget" in ext:
        budget = ext["retryBudget"]
        fields["retryBudget"] = {
            "budgetPercent": float(budget.get("budgetPercent", 20.0)),
            "minRetryConcurrency": int(budget.get("minRetryConcurrency", 3)),
        }
    return fields


def outlier_thresholds(outlier: Mapping[str, Any], ext: Mapping[str, Any]) -> dict[str, Any]:
    """What the core counts for App Mesh `outlierDetection` plus its extension.

    The gateway-failure counter runs only when the extension names its threshold or enforces
    it (Envoy detects it by default but enforces 0%, so counting it would be wasted work);
    the local-origin counter runs in split mode only, as in Envoy.
    """
    out: dict[str, Any] = {"consecutive5xx": min(outlier["maxServerErrors"], U32_MAX)}
    if "consecutiveGatewayFailure" in ext or ext.get("enforcingConsecutiveGatewayFailure"):
        out["consecutiveGatewayFailure"] = ext.get(
            "consecutiveGatewayFailure", ENVOY_CONSECUTIVE_DEFAULT
        )
    if ext.get("splitExternalLocalOriginErrors"):
        out["splitExternalLocalOriginErrors"] = True
        out["consecutiveLocalOriginFailure"] = ext.get(
            "consecutiveLocalOriginFailure", ENVOY_CONSECUTIVE_DEFAULT
        )
    return out


def _tighter(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: min(a.get(k, UNLIMITED), b.get(k, UNLIMITED)) for k in {*a, *b}}


def apply_gateway_limits(cfg: MeshConfig, doc: dict[str, Any]) -> None:
    """Cap the clusters each gateway listener reaches with that listener's `connectionPool`.

    In place, on a compiled snapshot document. Clusters are found by following the listener's
    route table through `routeTable` actions; a cluster reached from several listeners takes
    the lowest limit of each kind. Does nothing in sidecar mode.
    """
    gw_name = cfg.proxy.gateway
    gw = cfg.get("VirtualGateway", gw_name) if gw_name else None
    if gw is None:
        return
    clusters = {c["name"]: c for c in doc.get("clusters", [])}
    tables = doc.get("routeTables", {})
    for listener in doc.get("listeners", []):
        port = _declared_port(listener["name"])
        pool = listener_spec(gw, port).get("connectionPool") if port is not None else None
        if not pool:
            continue
        limits = {k: v for k, v in circuit_breakers(pool).items() if v != UNLIMITED}
        for name in _reachable_clusters(tables, listener.get("routeTable")):
            if name in clusters:
                current = clusters[name].get("circuitBreakers") or circuit_breakers(None)
                clusters[name]["circuitBreakers"] = _tighter(current, limits)


def _declared_port(listener_name: str) -> int | None:
    tail = listener_name.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _reachable_clusters(tables: Mapping[str, Any], start: str | None) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    pending = [start] if start else []
    while pending:
        table = pending.pop()
        if table in seen or table not in tables:
            continue
        seen.add(table)
        for vhost in tables[table].get("virtualHosts", []):
            for route in vhost.get("routes", []):
                action = route.get("action", {})
                if action.get("routeTable"):
                    pending.append(action["routeTable"])
                out += [c["cluster"] for c in action.get("clusters", []) if c["cluster"] not in out]
    return out


# --- validation ---------------------------------------------------------------------------------


def listener_issues(node: Resource) -> list[Issue]:
    """Rules of the `resilience` extension on each listener of a shape-valid VirtualNode."""
    out: list[Issue] = []
    for i, lst in enumerate(node.spec.get("listeners") or []):
        ext = lst.get("resilience") or {}
        base = f"spec.listeners[{i}].resilience"
        if "healthCheck" in ext and "healthCheck" not in lst:
            out.append((f"{base}.healthCheck", "applies only with the listener's healthCheck"))
        if "outlierDetection" in ext and "outlierDetection" not in lst:
            out.append(
                (f"{base}.outlierDetection", "applies only with the listener's outlierDetection")
            )
        for j, item in enumerate((ext.get("healthCheck") or {}).get("expectedStatuses") or []):
            if isinstance(item, dict) and not item["start"] < item["end"]:
                out.append(
                    (
                        f"{base}.healthCheck.expectedStatuses[{j}]",
                        f"expected start < end (half-open range), got start {item['start']}, end {item['end']}",
                    )
                )
        od, od_ext = lst.get("outlierDetection") or {}, ext.get("outlierDetection") or {}
        if od and "maxEjectionDuration" in od_ext:
            base_ms = duration_ms(od["baseEjectionDuration"])
            max_ms = duration_ms(od_ext["maxEjectionDuration"])
            if max_ms < base_ms:
                out.append(
                    (
                        f"{base}.outlierDetection.maxEjectionDuration",
                        f"expected at least baseEjectionDuration ({base_ms} ms), got {max_ms} ms",
                    )
                )
    return out


# --- what the control layer drives ------------------------------------------------------------


@dataclass(frozen=True)
class ResilienceTarget:
    """One cluster the control layer probes or watches for outliers.

    `health_check` is the App Mesh `healthCheck` with the extension's interval / timeout / port
    overrides applied (`port` present only when the extension sets one: otherwise each endpoint
    is probed on its own port, which is the listener port for discovered endpoints);
    `health_extension` holds the remaining extension keys for `HealthCheckPolicy.from_appmesh`.
    `outlier_detection` / `outlier_extension` are the inputs of `OutlierPolicy.from_appmesh`.
    `host` is the Host / :authority of HTTP and gRPC probes. `endpoints` are "IP:PORT" keys.
    """

    cluster: str
    node: str
    port: int
    protocol: str
    endpoints: tuple[str, ...]
    host: str
    health_check: Mapping[str, Any] | None = None
    health_extension: Mapping[str, Any] = field(default_factory=dict)
    outlier_detection: Mapping[str, Any] | None = None
    outlier_extension: Mapping[str, Any] = field(default_factory=dict)


def targets(
    cfg: MeshConfig,
    origins: Mapping[str, tuple[str, int]],
    endpoints: Mapping[str, Sequence[str]],
) -> list[ResilienceTarget]:
    """A target per cluster (`origins`: cluster -> (node, listener port)) whose listener has a
    `healthCheck` or an `outlierDetection`, with the cluster's endpoints, sorted by cluster."""
    out: list[ResilienceTarget] = []
    for cluster, (node_name, port) in sorted(origins.items()):
        node = cfg.get("VirtualNode", node_name)
        if node is None:
            continue
        lst = listener_spec(node, port)
        hc, od = lst.get("healthCheck"), lst.get("outlierDetection")
        if not hc and not od:
            continue
        ext = lst.get("resilience") or {}
        hc_ext = dict(ext.get("healthCheck") or {})
        health: dict[str, Any] | None = None
        if hc:
            health = {k: v for k, v in hc.items() if k != "port"}
            health.update({k: hc_ext.pop(k) for k in _HC_OVERRIDES if k in hc_ext})
        host = str(hc_ext.pop("host", node_name))
        out.append(
            ResilienceTarget(
                cluster=cluster,
                node=node_name,
                port=port,
                protocol=lst["portMapping"]["protocol"],
                endpoints=tuple(endpoints.get(cluster, ())),
                host=host,
                health_check=health,
                health_extension=hc_ext if hc else {},
                outlier_detection=dict(od) if od else None,
                outlier_extension=dict(ext.get("outlierDetection") or {}) if od else {},
            )
        )
    return out
