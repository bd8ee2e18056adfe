"""`Core.stats()` under Envoy's Prometheus names and labels, so App Mesh/Envoy dashboards and
alerts work unchanged. Pure: no I/O, no trio; imports only `admin.prometheus`.

Envoy turns a stat name into a Prometheus family by tag extraction (its
`source/common/config/well_known_names.cc`): the object moves into a label whose name is the
tag's (`envoy.cluster_name` -> `envoy_cluster_name`), what is left becomes the family, prefixed
`envoy_`. So `cluster.api.upstream_rq_2xx` is
`envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="api"}` and
`cluster.api.upstream_rq_503` is `envoy_cluster_upstream_rq{envoy_response_code="503",...}`.
Envoy's spelling is kept exactly: no `_total` added to its counters, histograms in
milliseconds, no per-host families (Envoy has none either; hosts are in `/clusters`).

meshplane's objects map to Envoy's as App Mesh configured Envoy:

- a cluster is `envoy_cluster_name="<cluster>"`;
- a listener is `envoy_listener_address="<IP>_<PORT>"` (its bound address, as Envoy spells it);
- a listener's HTTP connection manager is `envoy_http_conn_manager_prefix="ingress"` (inbound and
  gateway listeners) or `"egress"` (the outbound listener), with App Mesh's dimensions
  `appmesh_mesh`, `appmesh_virtual_node` / `appmesh_virtual_gateway` and, on ingress,
  `appmesh_listener_protocol` and `appmesh_listener_port` (App Mesh's multi-listener labels),
  so two ingress listeners stay two series.

The table of names is in docs/stats.md ("Envoy names").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshplane.admin.prometheus import Families, Labels, add_histogram

__all__ = ["EnvoyContext", "render_envoy"]

_CLUSTER = "envoy_cluster_name"
_CLASS = "envoy_response_code_class"
_HCM = "envoy_http_conn_manager_prefix"
_LISTENER = "envoy_listener_address"

# meshplane cluster stat -> Envoy `cluster.<name>.<stat>` (counter unless in _GAUGES).
_CLUSTER_STATS = {
    "rq_total": "upstream_rq_total",
    "rq_active": "upstream_rq_active",
    "rq_pending_active": "upstream_rq_pending_active",
    "rq_timeout": "upstream_rq_timeout",
    "rq_retry": "upstream_rq_retry",
    "rq_retry_success": "upstream_rq_retry_success",
    "rq_retry_limit_exceeded": "upstream_rq_retry_limit_exceeded",
    "rq_retry_overflow": "upstream_rq_retry_overflow",
    "rq_pending_overflow": "upstream_rq_pending_overflow",
    "rq_reset": "upstream_rq_rx_reset",
    "cx_total": "upstream_cx_total",
    "cx_active": "upstream_cx_active",
    "cx_connect_fail": "upstream_cx_connect_fail",
    "cx_overflow": "upstream_cx_overflow",
    "cx_none_healthy": "upstream_cx_none_healthy",
    "cx_tls_fail": "ssl_connection_error",
}
# meshplane listener stat -> Envoy `listener.<address>.<stat>`.
_LISTENER_STATS = {
    "cx_total": "downstream_cx_total",
    "cx_active": "downstream_cx_active",
    "tls_handshakes": "ssl_handshake",
    "tls_handshake_error": "ssl_connection_error",
}
# meshplane listener stat -> Envoy `http.<prefix>.<stat>` (the HTTP connection manager).
_HCM_STATS = {
    "cx_total": "downstream_cx_total",
    "cx_active": "downstream_cx_active",
    "rq_total": "downstream_rq_total",
    "rq_active": "downstream_rq_active",
    "no_route": "no_route",
    "rq_header_timeout": "downstream_rq_header_timeout",
}
# meshplane health checker stat -> Envoy `cluster.<name>.health_check.<stat>`.
_HEALTH_STATS = ("attempt", "success", "failure", "network_failure", "healthy")
_GAUGES = {"upstream_rq_active", "upstream_rq_pending_active", "upstream_cx_active",
           "downstream_cx_active", "downstream_rq_active", "health_check_healthy",
           "outlier_detection_ejections_active", "membership_total", "membership_healthy",
           "membership_degraded", "membership_excluded", "active_clusters"}


@dataclass(frozen=True)
class EnvoyContext:
    """What the stats alone do not say: the mesh, each listener's bound address and protocol."""

    mesh: str | None = None
    addresses: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    protocols: Mapping[str, str] = field(default_factory=dict)


def _address(host: str, port: int) -> str:
    # Envoy's `listener.<address>.` tag: `0.0.0.0_8080`, `[__1]_8080` for IPv6 (colons are
    # not allowed in a stat name segment and become `_`).
    if ":" in host:
        host = "[" + host.replace(":", "_") + "]"
    return f"{host}_{port}"


def _hcm_labels(name: str, ctx: EnvoyContext) -> Labels:
    """Envoy's connection-manager prefix and App Mesh's dimensions for one meshplane listener."""
    parts = name.split("/")
    labels: list[tuple[str, str]] = []
    if ctx.mesh:
        labels.append(("appmesh_mesh", ctx.mesh))
    kind = parts[0]
    if kind == "outbound" and len(parts) >= 2:
        labels.append(("appmesh_virtual_node", parts[1]))
        return (*labels, (_HCM, "egress"))
    if kind in ("inbound", "gateway") and len(parts) >= 3:
        labels.append(("appmesh_virtual_node" if kind == "inbound" else "appmesh_virtual_gateway", parts[1]))
        labels.append(("appmesh_listener_protocol", ctx.protocols.get(name, "http")))
        labels.append(("appmesh_listener_port", parts[2]))
        return (*labels, (_HCM, "ingress"))
    return (*labels, (_HCM, name))  # not a name meshplane makes: the name itself as the prefix


def _classes(out: Families, family: str, labels: Labels, stats: Mapping[str, Any], help: str) -> None:
    for cls in "12345":
        value = stats.get(f"rq_{cls}xx")
        if isinstance(value, int | float):
            out.add(family, "counter", family, ((_CLASS, cls), *labels), value, help)


def _add(out: Families, family: str, labels: Labels, value: Any, help: str, stat: str) -> None:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int | float):
        out.add(family, "gauge" if stat in _GAUGES else "counter", family, labels, value, help)


def _host_healthy(host: Mapping[str, Any]) -> bool:
    return bool(host.get("healthy", True)) and not host.get("ejected") and not host.get("failed_active_hc")


def _listeners(out: Families, stats: Mapping[str, Any], ctx: EnvoyContext) -> None:
    listeners = sorted((stats.get("listeners") or {}).items())
    for name, listener in listeners:
        where = ctx.addresses.get(name)
        if where is None:
            continue
        labels: Labels = ((_LISTENER, _address(*where)),)
        for ours, envoy in _LISTENER_STATS.items():
            _add(out, f"envoy_listener_{envoy}", labels, listener.get(ours),
                 f"Envoy listener.<address>.{envoy}", envoy)
        hcm = _hcm_labels(name, ctx)
        _classes(out, "envoy_listener_http_downstream_rq_xx", (*hcm, *labels), listener,
                 "Envoy listener.<address>.http.<prefix>.downstream_rq_<N>xx")
    for name, listener in listeners:
        if listener.get("rq_total") is None and listener.get("rq_2xx") is None:
            continue  # a TCP listener has no HTTP connection manager
        hcm = _hcm_labels(name, ctx)
        for ours, envoy in _HCM_STATS.items():
            _add(out, f"envoy_http_{envoy}", hcm, listener.get(ours), f"Envoy http.<prefix>.{envoy}", envoy)
        _classes(out, "envoy_http_downstream_rq_xx", hcm, listener, "Envoy http.<prefix>.downstream_rq_<N>xx")
        hist = listener.get("rq_time_ms")
        if isinstance(hist, Mapping):
            add_histogram(out, "envoy_http_downstream_rq_time", hcm, hist,
                          help="Envoy http.<prefix>.downstream_rq_time, milliseconds")


def _clusters(out: Families, stats: Mapping[str, Any]) -> None:
    clusters = sorted((stats.get("clusters") or {}).items())
    out.add("envoy_cluster_manager_active_clusters", "gauge", "envoy_cluster_manager_active_clusters", (),
            len(clusters), "Envoy cluster_manager.active_clusters")
    for name, cluster in clusters:
        labels: Labels = ((_CLUSTER, name),)
        for ours, envoy in _CLUSTER_STATS.items():
            _add(out, f"envoy_cluster_{envoy}", labels, cluster.get(ours), f"Envoy cluster.<name>.{envoy}", envoy)
        _classes(out, "envoy_cluster_upstream_rq_xx", labels, cluster, "Envoy cluster.<name>.upstream_rq_<N>xx")
        codes = cluster.get("rq_codes")
        if isinstance(codes, Mapping):
            for code, count in sorted(codes.items()):
                out.add("envoy_cluster_upstream_rq", "counter", "envoy_cluster_upstream_rq",
                        (("envoy_response_code", str(code)), *labels), count,
                        "Envoy cluster.<name>.upstream_rq_<code>")
        hist = cluster.get("rq_time_ms")
        if isinstance(hist, Mapping):
            add_histogram(out, "envoy_cluster_upstream_rq_time", labels, hist,
                          help="Envoy cluster.<name>.upstream_rq_time, milliseconds")
        membership = cluster.get("membership")  # stats taken without hosts (Core.stats)
        if isinstance(membership, Mapping):
            total, healthy = int(membership["total"]), int(membership["healthy"])
        else:
            hosts = list((cluster.get("hosts") or {}).values())
            total, healthy = len(hosts), sum(1 for h in hosts if _host_healthy(h))
        for stat, value in (("membership_total", total), ("membership_healthy", healthy),
                            ("membership_degraded", 0), ("membership_excluded", 0)):
            _add(out, f"envoy_cluster_{stat}", labels, value, f"Envoy cluster.<name>.{stat}", stat)
        hc = cluster.get("health_check")
        if isinstance(hc, Mapping):
            for stat in _HEALTH_STATS:
                _add(out, f"envoy_cluster_health_check_{stat}", labels, hc.get(stat),
                     f"Envoy cluster.<name>.health_check.{stat}", f"health_check_{stat}")
        od = cluster.get("outlier_detection")
        if isinstance(od, Mapping):
            for stat, value in od.items():
                _add(out, f"envoy_cluster_outlier_detection_{stat}", labels, value,
                     f"Envoy cluster.<name>.outlier_detection.{stat}", f"outlier_detection_{stat}")


def render_envoy(stats: Mapping[str, Any], ctx: EnvoyContext | None = None) -> str:
    """The stats under Envoy's Prometheus names (text format 0.0.4, `# HELP` and `# TYPE`)."""
    out = Families()
    _listeners(out, stats, ctx or EnvoyContext())
    _clusters(out, stats)
    return out.text()
