"""Render `Core.stats()` as Prometheus text exposition format 0.0.4. Pure: no I/O, no trio.

Names follow Envoy's `/stats/prometheus` with the `meshplane_` prefix and the object as a label
instead of in the name:

    meshplane_listener_downstream_<stat>{listener="..."}
    meshplane_route_<stat>{route="..."}
    meshplane_cluster_upstream_<stat>{cluster="..."}
    meshplane_host_<stat>{cluster="...",host="IP:PORT"}
    meshplane_cluster_health_check_<stat>{cluster="..."}      (active health checking)
    meshplane_cluster_outlier_detection_<stat>{cluster="..."} (outlier detection)
    meshplane_cluster_function_<stat>{cluster="..."}          (a function cluster's instances)
    meshplane_server_<stat>                  (top-level numbers, e.g. downstream_cx_open)
    meshplane_control_events_dropped_total{kind="..."}  (core events the Python bridge dropped)
    meshplane_control_driver_errors_total{driver="..."} (exceptions a control driver caught)
    meshplane_tracing_<counter>_total                   (the core's tracing counters)

`rq_<N>xx` counters become one family `..._rq_xx_total` with a `response_code_class="<N>"`
label, and the exact codes (`rq_codes: {"200": n}`) `..._rq_code_total{response_code="200"}`; histograms (`{"bounds", "counts", "sum", "count"}`, per-bucket counts with a trailing
+Inf bucket) become cumulative `_bucket{le=...}`, `_sum` and `_count`, and a histogram in
milliseconds (`*_ms`) is written in seconds (`*_seconds`, Prometheus' base unit); booleans
become 0/1 gauges. A stat whose name ends in `_active`, `_open` or `_connections`, or is
`healthy`, `weight` or another level named in `_GAUGES` (`rq_waiting`, a function cluster's
`busy_hosts`...), is a gauge (a level, not a count of events); other numbers are counters,
and a counter's name ends in `_total` (Prometheus' convention, checked by `promtool check
metrics`). Every family has a `# HELP` line. Strings and nested settings (a cluster's
`protocol`, `circuit_breakers`) are not stats and are left out. Keys the renderer does not know
are rendered by these same rules, so new core stats appear without a change here.

The same counters under Envoy's own names and labels are rendered by `admin.envoy_names`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "Families", "Labels", "add_histogram", "escape_label_value", "parse", "render",
           "render_parts"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_STATUS_CLASS = re.compile(r"^(?P<stem>.*?)_?(?P<cls>[1-5])xx$")
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_GAUGES = {"healthy", "weight", "failed_active_hc", "ejected", "busy", "rq_waiting",
           # a function cluster's `function` section (docs/stats.md)
           "concurrency", "instance_wait_ms", "busy_hosts", "idle_hosts", "in_flight"}
_GAUGE_SUFFIXES = ("_active", "_open", "_connections")
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?[ \t]+(?P<value>\S+)$")
_LABEL = re.compile(r'[ \t]*(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")

_SECTIONS = {"version", "listeners", "routes", "clusters", "access_logs", "control", "tracing",
             "functions"}
# Lambda's metrics per function, version and alias (`Proxy.stats()["functions"]`,
# docs/functions.md): key -> (family suffix, type, help).
_FUNCTION_METRICS = {
    "invocations": ("invocations_total", "counter", "invocations that ran (Lambda Invocations)"),
    "errors": ("errors_total", "counter", "invocations that ended in a function error (Errors)"),
    "throttles": ("throttles_total", "counter",
                  "requests refused at the reserved concurrency with 429 (Throttles)"),
    "cold_starts": ("cold_starts_total", "counter", "invocations that started an instance"),
    "crashes": ("crashes_total", "counter", "instances that ended without a word"),
    "provisioned_spillover_invocations": (
        "provisioned_concurrency_spillover_invocations_total", "counter",
        "invocations served by on-demand instances while provisioned ones were busy"),
    "concurrent_executions": ("concurrent_executions", "gauge",
                              "invocations running now (ConcurrentExecutions)"),
    "instances": ("instances", "gauge", "instances starting or warm"),
    "provisioned_concurrent_executions": (
        "provisioned_concurrent_executions", "gauge",
        "invocations running on provisioned instances (ProvisionedConcurrentExecutions)"),
    "provisioned_instances": ("provisioned_instances", "gauge", "provisioned instances warm"),
    "provisioned_concurrency_utilization": (
        "provisioned_concurrency_utilization", "gauge",
        "busy share of the provisioned instances (ProvisionedConcurrencyUtilization)"),
}
# The control layer's own counters (`Proxy.stats()["control"]`): section -> (family, label).
_CONTROL = {
    "events_dropped": ("meshplane_control_events_dropped_total", "kind"),
    "driver_errors": ("meshplane_control_driver_errors_total", "driver"),
}
_CONTROL_HELP = {
    "events_dropped": "core events the control layer's bridge dropped because a subscriber was full",
    "driver_errors": "exceptions a control-layer driver caught, logged and went on after",
}
# The core's tracing counters (`stats()["tracing"]`, docs/stats.md): key -> help.
_TRACING_HELP = {
    "spans_sampled": "spans recorded (sampled, or errors kept)",
    "spans_exported": "spans the OTLP collector accepted",
    "spans_dropped": "spans dropped because the export queue was full (the request did not wait)",
    "spans_export_failed": "spans dropped because their export request failed",
    "export_requests": "OTLP export requests sent",
    "export_failures": "OTLP export requests that failed",
}
# Nested per-cluster stats of the control layer (health checker, outlier detector), rendered as
# `meshplane_cluster_<section>_<stat>{cluster=...}` like Envoy's `cluster.<c>.<section>.<stat>`.
_CLUSTER_SECTIONS = ("health_check", "outlier_detection", "function")

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


class Families:
    """Samples grouped by metric family, in first-seen order (the format wants families whole),
    each family with one `# HELP` and one `# TYPE` line."""

    def __init__(self) -> None:
        self._types: dict[str, str] = {}
        self._help: dict[str, str] = {}
        self._samples: dict[str, list[tuple[str, Labels, float]]] = {}
        # NOTE: a scrape of 1,000 hosts is ~17,000 samples sharing a few thousand names and
        # label sets; sanitizing and escaping each once keeps a scrape in tens of milliseconds.
        self._names: dict[str, str] = {}
        self._labels: dict[Labels, str] = {}

    def _name(self, name: str) -> str:
        clean = self._names.get(name)
        if clean is None:
            clean = self._names[name] = _INVALID_NAME_CHARS.sub("_", name)
        return clean

    def add(self, family: str, kind: str, name: str, labels: Labels, value: float, help: str = "") -> None:
        family = self._name(family)
        if family not in self._types:
            self._types[family] = kind
            self._help[family] = help or family.replace("_", " ")
            self._samples[family] = []
        self._samples[family].append((self._name(name), labels, value))

    def _label_text(self, labels: Labels) -> str:
        text = self._labels.get(labels)
        if text is None:
            text = self._labels[labels] = _format_labels(labels)
        return text

    def text(self) -> str:
        lines: list[str] = []
        for family, kind in self._types.items():
            text = self._help[family].replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {family} {text}")
            lines.append(f"# TYPE {family} {kind}")
            lines.extend(f"{name}{self._label_text(labels)} {_format_number(value)}"
                         for name, labels, value in self._samples[family])
        return "\n".join(lines) + "\n" if lines else ""


def _is_histogram(value: Any) -> bool:
    return isinstance(value, Mapping) and "bounds" in value and "counts" in value


def add_histogram(out: Families, name: str, labels: Labels, hist: Mapping[str, Any], *,
                  scale: float = 1.0, help: str = "", le_last: bool = True) -> None:
    """A raw histogram as `<name>_bucket` (cumulative), `_sum`, `_count`; bounds and sum times
    `scale`. `le_last=False` puts `le` first among the labels (the order is not significant)."""
    bounds = list(hist.get("bounds") or [])
    counts = list(hist.get("counts") or [])
    total = hist.get("count")
    if total is None:
        total = sum(counts)

    def with_le(le: str) -> Labels:
        return labels + (("le", le),) if le_last else (("le", le),) + labels

    cumulative = 0
    for bound, count in zip(bounds, counts, strict=False):
        cumulative += count
        le = _format_number(round(float(bound) * scale, 9))
        out.add(name, "histogram", f"{name}_bucket", with_le(le), cumulative, help)
    out.add(name, "histogram", f"{name}_bucket", with_le("+Inf"), total, help)
    out.add(name, "histogram", f"{name}_sum", labels, float(hist.get("sum", 0.0)) * scale, help)
    out.add(name, "histogram", f"{name}_count", labels, total, help)


# What a stat means, for `# HELP`; a stat not listed gets its name as help text.
_HELP = {
    "rq_total": "requests", "rq_active": "requests in flight", "rq_xx": "responses by status class",
    "rq_code": "responses by exact status code",
    "rq_pending_active": "requests waiting for a connection", "rq_timeout": "requests that timed out",
    "rq_retry": "retries", "rq_retry_success": "retries that succeeded",
    "rq_retry_limit_exceeded": "requests not retried because the retry limit was reached",
    "rq_retry_overflow": "retries refused by the circuit breaker or retry budget",
    "rq_pending_overflow": "requests refused by the pending-request circuit breaker",
    "rq_reset": "requests reset by the upstream", "rq_error": "requests with no response (connect failure, reset, timeout)",
    "rq_retry_stale_connection": "requests sent again on a fresh connection after a stale pooled one",
    "rq_rejected": "requests refused before routing (400/431/501)", "no_route": "requests that matched no route",
    "rq_header_timeout": "connections closed because no complete request head arrived in time",
    "cx_total": "connections", "cx_active": "open connections", "cx_connect_fail": "connection attempts that failed",
    "cx_tls_fail": "upstream TLS handshakes that failed", "cx_overflow": "connections refused by the circuit breaker",
    "cx_none_healthy": "requests with no healthy host to send to", "cx_accept_error": "accept(2) failures",
    "retries_active": "retries in flight", "tls_handshakes": "TLS handshakes completed",
    "tls_handshake_error": "TLS handshakes that failed", "plaintext_cx": "plaintext connections on a PERMISSIVE listener",
    "rq_time": "request time, from the request's start to its response's last byte",
    "healthy": "1 if the host is healthy", "weight": "the host's load-balancing weight",
    "ejected": "1 if outlier detection has ejected the host", "failed_active_hc": "1 if active health checking failed the host",
    "idle_connections": "idle pooled connections", "downstream_cx_open": "downstream connections open",
    "rq_throttled": "requests throttled at a function cluster's concurrency limit (429)",
    "rq_waiting": "requests waiting for an idle function instance",
    "rq_instance_wait_timeout": "requests that waited instanceWaitMs for a function instance in vain (503)",
    "busy": "1 if the function instance is serving a request",
    "concurrency": "the function cluster's concurrency limit",
    "instance_wait_ms": "how long a request waits for a function instance, in ms",
    "busy_hosts": "function instances serving a request", "idle_hosts": "function instances not serving a request",
    "in_flight": "requests holding a function instance (concurrent executions)",
    "core_events_dropped": "events the core dropped because Python had not drained its queue",
}


def _help(scope: str, key: str) -> str:
    return f"{scope}: {_HELP.get(key, key.replace('_', ' '))}"


# (prefix, key) -> (kind, family, status class or "", help) for a number; computed once per name.
_NUMBER_RULES: dict[tuple[str, str], tuple[str, str, str, str]] = {}


def _number_rule(prefix: str, key: str) -> tuple[str, str, str, str]:
    rule = _NUMBER_RULES.get((prefix, key))
    if rule is not None:
        return rule
    scope = prefix.removeprefix("meshplane_").rstrip("_").replace("_", " ")
    status = _STATUS_CLASS.match(key)
    if status:
        rule = ("counter", f"{prefix}{status['stem']}_xx_total", status["cls"], _help(scope, f"{status['stem']}_xx"))
    elif key.endswith(_GAUGE_SUFFIXES) or key in _GAUGES:
        rule = ("gauge", f"{prefix}{key}", "", _help(scope, key))
    else:
        rule = ("counter", f"{prefix}{key}" if key.endswith("_total") else f"{prefix}{key}_total", "", _help(scope, key))
    if len(_NUMBER_RULES) < 10_000:  # bounded: keys are the core's stat names, a few hundred
        _NUMBER_RULES[(prefix, key)] = rule
    return rule


def _add_stats(out: Families, prefix: str, labels: Labels, stats: Mapping[str, Any], skip: set[str]) -> None:
    scope = prefix.removeprefix("meshplane_").rstrip("_").replace("_", " ")
    for key, value in stats.items():
        if key in skip:
            continue
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            kind, family, cls, help = _number_rule(prefix, key)
            sample_labels = labels + (("response_code_class", cls),) if cls else labels
            out.add(family, kind, family, sample_labels, value, help)
            continue
        if key == "rq_codes" and isinstance(value, Mapping):  # responses by exact status code
            family = f"{prefix}rq_code_total"
            for code, count in sorted(value.items()):
                out.add(family, "counter", family, labels + (("response_code", str(code)),), count,
                        _help(scope, "rq_code"))
            continue
        if _is_histogram(value):
            if key.endswith("_ms"):  # Prometheus' base unit is the second
                stem = key.removesuffix("_ms")
                add_histogram(out, f"{prefix}{stem}_seconds", labels, value, scale=0.001,
                              help=_help(scope, stem) + " in seconds")
            else:
                add_histogram(out, f"{prefix}{key}", labels, value, help=_help(scope, key))


def render(stats: Mapping[str, Any]) -> str:
    """The whole stats dict as Prometheus text (families grouped, one `# TYPE` line each)."""
    head, hosts, tail = render_parts(stats)
    return head + hosts + tail


def render_parts(stats: Mapping[str, Any]) -> tuple[str, str, str]:
    """`render(stats)` in three parts: the text before the `meshplane_host_*` families, those
    families, and the text after them. Stats taken without hosts (`Core.stats(hosts=False)`)
    give an empty middle, for which `Core.host_metrics()` is the same text."""
    out = Families()
    version = stats.get("version")
    if version is not None:
        out.add("meshplane_config_info", "gauge", "meshplane_config_info", (("version", str(version)),), 1,
                "the running config version (always 1)")
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
    host_families = Families()
    for name, cluster in clusters:
        for host, host_stats in sorted((cluster.get("hosts") or {}).items()):
            _add_stats(host_families, "meshplane_host_", (("cluster", name), ("host", host)), host_stats, set())
    # NOTE: the host families are a block of their own (no other section writes a
    # `meshplane_host_` family), which the core can write without a per-host Python object.
    head, hosts = out.text(), host_families.text()
    out = Families()
    for path, counts in sorted((stats.get("access_logs") or {}).items()):
        for result in ("written", "dropped"):
            out.add("meshplane_access_log_lines_total", "counter", "meshplane_access_log_lines_total",
                    (("path", path), ("result", result)), counts.get(result, 0),
                    "access log lines written, or dropped because the writer could not keep up")
    for key, value in sorted((stats.get("tracing") or {}).items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            family = f"meshplane_tracing_{key}_total"
            out.add(family, "counter", family, (), value, _TRACING_HELP.get(key, f"tracing {key}"))
    for name, doc in sorted((stats.get("functions") or {}).items()):
        _add_function(out, (("function", name), ("kind", "function"), ("qualifier", "")), doc)
        for kind, label in (("versions", "version"), ("aliases", "alias")):
            for qualifier, sub in sorted((doc.get(kind) or {}).items()):
                _add_function(out, (("function", name), ("kind", label),
                                    ("qualifier", qualifier)), sub)
    control = stats.get("control") or {}
    for section, (family, label) in _CONTROL.items():
        for name, count in sorted((control.get(section) or {}).items()):
            out.add(family, "counter", family, ((label, name),), count, _CONTROL_HELP[section])
    return head, hosts, out.text()


def _add_function(out: Families, labels: Labels, doc: Mapping[str, Any]) -> None:
    for key, (suffix, kind, help) in _FUNCTION_METRICS.items():
        value = doc.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            family = f"meshplane_function_{suffix}"
            out.add(family, kind, family, labels, value, help)
    for error_type, count in sorted((doc.get("error_types") or {}).items()):
        family = "meshplane_function_errors_by_type_total"
        out.add(family, "counter", family, (*labels, ("error_type", error_type)), count,
                "function errors by Lambda error type")
    for key, family, help in (
        ("duration_ms", "meshplane_function_duration_seconds",
         "invocation duration over the last 2048 invocations, by quantile (Duration)"),
        ("init_duration_ms", "meshplane_function_init_duration_seconds",
         "Init duration of cold starts over the last 2048, by quantile"),
    ):
        values = doc.get(key) or {}
        for quantile, value in sorted(values.items()):
            if quantile.startswith("p") and isinstance(value, int | float):
                q = str(int(quantile[1:]) / 100)
                out.add(family, "summary", family, (*labels, ("quantile", q)), value / 1000, help)
        if "count" in values:
            out.add(family, "summary", f"{family}_sum", labels, values.get("sum", 0) / 1000, help)
            out.add(family, "summary", f"{family}_count", labels, values["count"], help)


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
