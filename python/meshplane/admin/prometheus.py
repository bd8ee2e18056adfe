"""Render `Core.stats()` as Prometheus text exposition format 0.0.4. Pure: no I/O, no trio.

Names follow Envoy's `/stats/prometheus` with the `meshplane_` prefix and the object as a label
instead of in the name:

    meshplane_listener_downstream_<stat>{listener="..."}
    meshplane_route_<stat>{route="..."}
    meshplane_cluster_upstream_<stat>{cluster="..."}
    meshplane_host_<stat>{cluster="...",host="IP:PORT"}
    meshplane_cluster_health_check_<stat>{cluster="..."}      (active health checking)
    meshplane_cluster_outlier_detection_<stat>{cluster="..."} (outlier detection)
    meshplane_server_<stat>                  (top-level numbers, e.g. downstream_cx_open)
    meshplane_control_events_dropped_total{kind="..."}  (core events the Python bridge dropped)
    meshplane_control_driver_errors_total{driver="..."} (exceptions a control driver caught)

`rq_<N>xx` counters become one family `..._rq_xx` with a `response_code_class="<N>"` label;
histograms (`{"bounds", "counts", "sum", "count"}`, per-bucket counts with a trailing +Inf
bucket) become cumulative `_bucket{le=...}`, `_sum` and `_count`; booleans become 0/1 gauges.
A stat whose name ends in `_active`, `_open` or `_connections`, or is `healthy` or `weight`, is
a gauge (a level, not a count of events); other numbers are counters. Strings and nested
settings (a cluster's `protocol`, `circuit_breakers`) are not stats and are left out. Keys the renderer does not know are rendered by these same rules, so new core stats
appear without a change here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "escape_label_value", "parse", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STATUS_CLASS = re.compile(r"^(?P<stem>.*?)_?(?P<cls>[1-5])xx$")
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_GAUGES = {"healthy", "weight", "failed_active_hc", "ejected"}
_GAUGE_SUFFIXES = ("_active", "_open", "_connections")
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?[ \t]+(?P<value>\S+)$")
_LABEL = re.compile(r'[ \t]*(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")

_SECTIONS = {"version", "listeners", "routes", "clusters", "access_logs", "control"}
# The control layer's own counters (`Proxy.stats()["control"]`): section -> (family, label).
_CONTROL = {
    "events_dropped": ("meshplane_control_events_dropped_total", "kind"),
    "driver_errors": ("meshplane_control_driver_errors_total", "driver"),
}
# Nested per-cluster stats of the control layer (health checker, outlier detector), rendered as
# `meshplane_cluster_<section>_<stat>{cluster=...}` like Envoy's `cluster.<c>.<section>.<stat>`.
_CLUSTER_SECTIONS = ("health_check", "outlier_detection")

Labels = tuple[tuple[str, str], ...]


def escape_label_value(value: str) -> str:
    """Escape a label value: backslash, double quote and newline, as the format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
    return "{" + inner + "}"


class _Families:
    """Samples grouped by metric family, in first-seen order (the format wants families whole)."""

    def __init__(self) -> None:
        self._types: dict[str, str] = {}
        self._samples: dict[str, list[tuple[str, Labels, float]]] = {}

    def add(self, family: str, kind: str, name: str, labels: Labels, value: float) -> None:
        family = _INVALID_NAME_CHARS.sub("_", family)
        name = _INVALID_NAME_CHARS.sub("_", name)
        self._types.setdefault(family, kind)
        self._samples.setdefault(family, []).append((name, labels, value))

    def text(self) -> str:
        lines: list[str] = []
        for family, kind in self._types.items():
            lines.append(f"# TYPE {family} {kind}")
            for name, labels, value in self._samples[family]:
                lines.append(f"{name}{_format_labels(labels)} {_format_number(value)}")
        return "\n".join(lines) + "\n" if lines else ""


def _is_histogram(value: Any) -> bool:
    return isinstance(value, Mapping) and "bounds" in value and "counts" in value


def _add_histogram(out: _Families, name: str, labels: Labels, hist: Mapping[str, Any]) -> None:
    bounds = list(hist.get("bounds") or [])
    counts = list(hist.get("counts") or [])
    total = hist.get("count")
    if total is None:
        total = sum(counts)
    cumulative = 0
    for bound, count in zip(bounds, counts, strict=False):
        cumulative += count
        out.add(name, "histogram", f"{name}_bucket", labels + (("le", _format_number(float(bound))),), cumulative)
    out.add(name, "histogram", f"{name}_bucket", labels + (("le", "+Inf"),), total)
    out.add(name, "histogram", f"{name}_sum", labels, hist.get("sum", 0.0))
    out.add(name, "histogram", f"{name}_count", labels, total)


def _add_stats(out: _Families, prefix: str, labels: Labels, stats: Mapping[str, Any], skip: set[str]) -> None:
    for key, value in stats.items():
        if key in skip:
            continue
        if _is_histogram(value):
            _add_histogram(out, f"{prefix}{key}", labels, value)
            continue
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float):
            continue
        status = _STATUS_CLASS.match(key)
        if status:
            name = f"{prefix}{status['stem']}_xx"
            out.add(name, "counter", name, labels + (("response_code_class", status["cls"]),), value)
            continue
        kind = "gauge" if key.endswith(_GAUGE_SUFFIXES) or key in _GAUGES else "counter"
        out.add(f"{prefix}{key}", kind, f"{prefix}{key}", labels, value)


def render(stats: Mapping[str, Any]) -> str:
    """The whole stats dict as Prometheus text (families grouped, one `# TYPE` line each)."""
    out = _Families()
    version = stats.get("version")
    if version is not None:
        out.add("meshplane_config_info", "gauge", "meshplane_config_info", (("version", str(version)),), 1)
    server = {k: v for k, v in stats.items() if k not in _SECTIONS}
    _add_stats(out, "meshplane_server_", (), server, set())
    for name, listener in sorted((stats.get("listeners") or {}).items()):
        _add_stats(out, "meshplane_listener_downstream_", (("listener", name),), listener, set())
    for name, route in sorted((stats.get("routes") or {}).items()):
        _add_stats(out, "meshplane_route_", (("route", name),), route, set())
    clusters = sorted((stats.get("clusters") or {}).items())
    for name, cluster in clusters:
        _add_stats(out, "meshplane_cluster_upstream_", (("cluster", name),), cluster, {"hosts"})
    for section in _CLUSTER_SECTIONS:  # the control layer's health_check / outlier_detection
        for name, cluster in clusters:
            if isinstance(cluster.get(section), Mapping):
                _add_stats(out, f"meshplane_cluster_{section}_", (("cluster", name),), cluster[section], set())
    for name, cluster in clusters:
        for host, host_stats in sorted((cluster.get("hosts") or {}).items()):
            _add_stats(out, "meshplane_host_", (("cluster", name), ("host", host)), host_stats, set())
    for path, counts in sorted((stats.get("access_logs") or {}).items()):
        for result in ("written", "dropped"):
            out.add("meshplane_access_log_lines_total", "counter", "meshplane_access_log_lines_total",
                    (("path", path), ("result", result)), counts.get(result, 0))
    control = stats.get("control") or {}
    for section, (family, label) in _CONTROL.items():
        for name, count in sorted((control.get(section) or {}).items()):
            out.add(family, "counter", family, ((label, name),), count)
    return out.text()


def _parse_labels(text: str, line: str) -> Labels:
    labels: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"malformed labels in {line!r}")
        value = _ESCAPE.sub(lambda e: "\n" if e[1] == "n" else e[1], m["value"])
        labels.append((m["key"], value))
        pos = m.end()
    return tuple(sorted(labels))


def parse(text: str) -> dict[tuple[str, Labels], float]:
    """The samples of an exposition text: (name, sorted labels) -> value. Inverse of `render`.

    For tests and tools that read `/stats`. Raises ValueError on a line that is not a sample,
    a comment or blank.
    """
    samples: dict[tuple[str, Labels], float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"not a sample line: {line!r}")
        labels = _parse_labels(m["labels"] or "", line)
        samples[(m["name"], labels)] = float(m["value"])
    return samples
