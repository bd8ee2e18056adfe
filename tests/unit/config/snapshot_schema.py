"""A Python mirror of the snapshot schema in rust/src/config/mod.rs, for checking compiler output
without the compiled core: serde's `deny_unknown_fields`, required fields, enum tags and types,
then `Snapshot::check` (unique names, known references, parseable addresses)."""

from __future__ import annotations

import ipaddress
from typing import Any

U16, U32, U64 = 2**16 - 1, 2**32 - 1, 2**64 - 1


class SnapshotInvalid(AssertionError):
    pass


def fail(path: str, message: str) -> None:
    raise SnapshotInvalid(f"{path}: {message}")


def fields(obj: Any, path: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        fail(path, f"expected an object, got {obj!r}")
    for key in obj:
        if key not in required | optional:
            fail(f"{path}.{key}", "unknown field (deny_unknown_fields)")
    for key in required:
        if key not in obj:
            fail(f"{path}.{key}", "missing field")
    return obj


def uint(value: Any, path: str, top: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        fail(path, f"expected an integer 0..{top}, got {value!r}")


def string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        fail(path, f"expected a string, got {value!r}")


def socket_address(value: Any, path: str) -> None:
    string(value, path)
    host, _, port = value.rpartition(":")
    if host.startswith("["):
        if not host.endswith("]"):
            fail(path, "expected IP:PORT")
        host = host[1:-1]
        if ipaddress.ip_address(host).version != 6:
            fail(path, "expected IPv6 in brackets")
    elif ":" in host:
        fail(path, "IPv6 must be bracketed")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        fail(path, "expected IP:PORT")
    uint(int(port) if port.isdigit() else -1, path, U16)


def weighted(items: Any, path: str, clusters: set[str]) -> None:
    if not isinstance(items, list):
        fail(path, "expected a list")
    for i, item in enumerate(items):
        fields(item, f"{path}[{i}]", {"cluster", "weight"}, set())
        string(item["cluster"], f"{path}[{i}].cluster")
        uint(item["weight"], f"{path}[{i}].weight", U32)
        if item["cluster"] not in clusters:
            fail(f"{path}[{i}].cluster", f"unknown cluster {item['cluster']!r}")
    if items and all(i["weight"] == 0 for i in items):
        fail(path, "all weights are 0")


def tagged(value: Any, path: str, kinds: set[str]) -> None:
    fields(value, path, {"kind", "value"}, set())
    if value["kind"] not in kinds:
        fail(f"{path}.kind", f"expected one of {sorted(kinds)}")
    string(value["value"], f"{path}.value")


def header(h: Any, path: str) -> None:
    kind = str(h.get("kind")) if isinstance(h, dict) else ""
    extra = {
        "exact": {"value"},
        "prefix": {"value"},
        "suffix": {"value"},
        "regex": {"value"},
        "range": {"start", "end"},
        "present": set(),
    }
    if kind not in extra:
        fail(f"{path}.kind", f"unknown header rule {kind!r}")
    fields(h, path, {"name", "kind", *extra[kind]}, {"invert"})
    string(h["name"], f"{path}.name")
    if h["name"] != h["name"].lower():
        fail(f"{path}.name", "expected a lower-case header name")
    if "invert" in h and not isinstance(h["invert"], bool):
        fail(f"{path}.invert", "expected a bool")
    if kind == "range":
        for k in ("start", "end"):
            if not isinstance(h[k], int):
                fail(f"{path}.{k}", "expected an i64")


def match(m: Any, path: str) -> None:
    fields(m, path, set(), {"path", "hostname", "method", "scheme", "headers", "query", "port"})
    if "path" in m:
        tagged(m["path"], f"{path}.path", {"prefix", "exact", "regex"})
    if "hostname" in m:
        tagged(m["hostname"], f"{path}.hostname", {"exact", "suffix"})
    for key in ("method", "scheme"):
        if key in m:
            string(m[key], f"{path}.{key}")
    for i, h in enumerate(m.get("headers", [])):
        header(h, f"{path}.headers[{i}]")
    for i, q in enumerate(m.get("query", [])):
        fields(q, f"{path}.query[{i}]", {"name"}, {"exact"})
    if "port" in m:
        uint(m["port"], f"{path}.port", U16)


def retry(r: Any, path: str) -> None:
    fields(
        r,
        path,
        {"maxRetries"},
        {"perTryTimeoutMs", "retryOn", "retriableStatusCodes", "grpcRetryOn"},
    )
    uint(r["maxRetries"], f"{path}.maxRetries", U32)
    if "perTryTimeoutMs" in r:
        uint(r["perTryTimeoutMs"], f"{path}.perTryTimeoutMs", U64)
    allowed = {
        "5xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
    }
    for name in r.get("retryOn", []):
        if name not in allowed:
            fail(f"{path}.retryOn", f"unknown retry_on {name!r}")
    for name in r.get("grpcRetryOn", []):
        if name not in {
            "cancelled",
            "deadline-exceeded",
            "internal",
            "resource-exhausted",
            "unavailable",
        }:
            fail(f"{path}.grpcRetryOn", f"unknown gRPC status {name!r}")
    for code in r.get("retriableStatusCodes", []):
        uint(code, f"{path}.retriableStatusCodes", U16)


def certificate(c: Any, path: str) -> None:
    fields(c, path, {"certificateChain", "privateKey"}, {"serverNames"})
    string(c["certificateChain"], f"{path}.certificateChain")
    string(c["privateKey"], f"{path}.privateKey")


def validation(v: Any, path: str) -> None:
    fields(v, path, {"trust"}, {"subjectAlternativeNames"})
    string(v["trust"], f"{path}.trust")
    for san in v.get("subjectAlternativeNames", []):
        string(san, f"{path}.subjectAlternativeNames")


def listener_tls(t: Any, path: str) -> None:
    fields(t, path, {"mode", "certificates"}, {"validation"})
    if t["mode"] not in ("strict", "permissive", "disabled"):
        fail(f"{path}.mode", "expected strict, permissive or disabled")
    for i, c in enumerate(t["certificates"]):
        certificate(c, f"{path}.certificates[{i}]")
    if t.get("validation") is not None:
        validation(t["validation"], f"{path}.validation")


def access_log(a: Any, path: str) -> None:
    fields(a, path, {"path"}, {"format"})
    string(a["path"], f"{path}.path")
    fmt = a.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or len(fmt) != 1 or next(iter(fmt)) not in ("text", "json"):
        fail(f"{path}.format", "expected {text: str} or {json: [{key, value}]}")
    if "text" in fmt:
        string(fmt["text"], f"{path}.format.text")
    else:
        for i, item in enumerate(fmt["json"]):
            fields(item, f"{path}.format.json[{i}]", {"key", "value"}, set())
            string(item["key"], f"{path}.format.json[{i}].key")
            string(item["value"], f"{path}.format.json[{i}].value")


def upstream_tls(t: Any, path: str) -> None:
    fields(t, path, {"serverName"}, {"certificate", "validation"})
    string(t["serverName"], f"{path}.serverName")
    if t.get("certificate") is not None:
        certificate(t["certificate"], f"{path}.certificate")
    if t.get("validation") is not None:
        validation(t["validation"], f"{path}.validation")


def cluster(c: Any, path: str) -> None:
    fields(
        c,
        path,
        {"name", "protocol"},
        {
            "lb",
            "activeRequestBias",
            "endpoints",
            "connectTimeoutMs",
            "idleTimeoutMs",
            "circuitBreakers",
            "retryBudget",
            "outlierDetection",
            "tls",
        },
    )
    if c.get("tls") is not None:
        upstream_tls(c["tls"], f"{path}.tls")
    if "retryBudget" in c:
        fields(
            c["retryBudget"], f"{path}.retryBudget", set(), {"budgetPercent", "minRetryConcurrency"}
        )
    if c.get("outlierDetection") is not None:
        keys = {"consecutive5xx", "consecutiveGatewayFailure", "consecutiveLocalOriginFailure"}
        od = fields(
            c["outlierDetection"],
            f"{path}.outlierDetection",
            set(),
            keys | {"splitExternalLocalOriginErrors"},
        )
        for key in keys & set(od):
            if od[key] is not None:
                uint(od[key], f"{path}.outlierDetection.{key}", U32)
    if c["protocol"] not in ("http1", "http2", "tcp"):
        fail(f"{path}.protocol", "expected http1, http2 or tcp")
    if c.get("lb", "least_request") not in ("least_request", "round_robin", "random"):
        fail(f"{path}.lb", "unknown policy")
    if "activeRequestBias" in c and not isinstance(c["activeRequestBias"], float | int):
        fail(f"{path}.activeRequestBias", "expected a number")
    for i, e in enumerate(c.get("endpoints", [])):
        fields(e, f"{path}.endpoints[{i}]", {"address"}, {"weight"})
        socket_address(e["address"], f"{path}.endpoints[{i}].address")
        uint(e.get("weight", 1), f"{path}.endpoints[{i}].weight", U32)
    for key in ("connectTimeoutMs", "idleTimeoutMs"):
        if key in c:
            uint(c[key], f"{path}.{key}", U64)
    limits = c.get("circuitBreakers", {})
    fields(
        limits,
        f"{path}.circuitBreakers",
        set(),
        {"maxConnections", "maxPendingRequests", "maxRequests", "maxRetries"},
    )
    for key, value in limits.items():
        uint(value, f"{path}.circuitBreakers.{key}", U32)


def assert_valid_snapshot(doc: Any) -> None:
    """Raise SnapshotInvalid where the core's parser would refuse `doc`."""
    fields(doc, "", {"schema", "version"}, {"listeners", "routeTables", "clusters"})
    if doc["schema"] != 1:
        fail("schema", "unsupported schema")
    string(doc["version"], "version")
    names: set[str] = set()
    for i, c in enumerate(doc.get("clusters", [])):
        cluster(c, f"clusters[{i}]")
        if c["name"] in names:
            fail("clusters", "duplicate cluster name")
        names.add(c["name"])
    tables = doc.get("routeTables", {})
    listener_names: set[str] = set()
    for i, lst in enumerate(doc.get("listeners", [])):
        path = f"listeners[{i}]"
        fields(
            lst,
            path,
            {"name", "address", "protocol"},
            {
                "routeTable",
                "tcpClusters",
                "idleTimeoutMs",
                "maxRequestHeadersBytes",
                "requestHeadersTimeoutMs",
                "backlog",
                "tls",
                "accessLog",
            },
        )
        if lst.get("tls") is not None:
            listener_tls(lst["tls"], f"{path}.tls")
        if lst.get("accessLog") is not None:
            access_log(lst["accessLog"], f"{path}.accessLog")
        if lst["name"] in listener_names:
            fail(f"{path}.name", "duplicate listener name")
        listener_names.add(lst["name"])
        socket_address(lst["address"], f"{path}.address")
        if lst["protocol"] == "http":
            if lst.get("routeTable") not in tables:
                fail(f"{path}.routeTable", "missing or unknown route table")
        elif lst["protocol"] == "tcp":
            if not lst.get("tcpClusters"):
                fail(f"{path}.tcpClusters", "a tcp listener needs a cluster")
            weighted(lst["tcpClusters"], f"{path}.tcpClusters", names)
        else:
            fail(f"{path}.protocol", "expected http or tcp")
        if "idleTimeoutMs" in lst:
            uint(lst["idleTimeoutMs"], f"{path}.idleTimeoutMs", U64)
        if "requestHeadersTimeoutMs" in lst:
            uint(lst["requestHeadersTimeoutMs"], f"{path}.requestHeadersTimeoutMs", U64)
            if lst["requestHeadersTimeoutMs"] == 0:
                fail(f"{path}.requestHeadersTimeoutMs", "must be at least 1")
        if "backlog" in lst:
            uint(lst["backlog"], f"{path}.backlog", U32)
            if lst["backlog"] == 0:
                fail(f"{path}.backlog", "must be at least 1")
    route_names: set[str] = set()
    for tname, table in tables.items():
        fields(table, f"routeTables.{tname}", {"virtualHosts"}, set())
        for v, vh in enumerate(table["virtualHosts"]):
            vpath = f"routeTables.{tname}.virtualHosts[{v}]"
            fields(vh, vpath, {"name", "domains", "routes"}, set())
            for d in vh["domains"]:
                string(d, f"{vpath}.domains")
            for r, route in enumerate(vh["routes"]):
                path = f"{vpath}.routes[{r}]"
                fields(route, path, {"name", "action"}, {"match"})
                if route["name"] in route_names:
                    fail(f"{path}.name", "duplicate route name")
                route_names.add(route["name"])
                match(route.get("match", {}), f"{path}.match")
                action = fields(
                    route["action"],
                    f"{path}.action",
                    set(),
                    {"clusters", "routeTable", "rewrite", "timeoutMs", "idleTimeoutMs", "retry"},
                )
                if ("routeTable" in action) == bool(action.get("clusters")):
                    fail(f"{path}.action", "exactly one of clusters / routeTable")
                if "routeTable" in action and action["routeTable"] not in tables:
                    fail(f"{path}.action.routeTable", "unknown route table")
                weighted(action.get("clusters", []), f"{path}.action.clusters", names)
                if "rewrite" in action:
                    fields(
                        action["rewrite"],
                        f"{path}.action.rewrite",
                        set(),
                        {"prefix", "path", "host"},
                    )
                for key in ("timeoutMs", "idleTimeoutMs"):
                    if key in action:
                        uint(action[key], f"{path}.action.{key}", U64)
                if "retry" in action:
                    retry(action["retry"], f"{path}.action.retry")
