"""App Mesh route specs -> snapshot route entries: matches, actions, retries, ordering, rewrites.

The snapshot schema is `rust/src/config/mod.rs` (RouteSpec, RouteMatchSpec, HeaderRule,
RouteActionSpec, RetryPolicySpec, RewriteSpec). Functions here build one route at a time from a
validated spec; `compile` decides which routes go where. Imports only `topology`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meshplane.config.topology import duration_ms

DEFAULT_TIMEOUT_MS = 15_000  # App Mesh's route and listener request timeout
# App Mesh's hidden retry policy for routes without one (spec §5, roadmap #229).
DEFAULT_RETRY: dict[str, Any] = {
    "maxRetries": 2,
    "retryOn": ["connect-failure", "refused-stream", "retriable-status-codes", "reset"],
    "retriableStatusCodes": [503],
    "grpcRetryOn": ["unavailable"],
}
RETRY_ON = {
    "server-error": "5xx",
    "gateway-error": "gateway-error",
    "client-error": "retriable-4xx",
    "stream-error": "refused-stream",
    "connection-error": "connect-failure",  # tcpRetryEvents
}

Route = dict[str, Any]


def header_rule(header: dict[str, Any]) -> dict[str, Any]:
    """An App Mesh header/metadata matcher as a snapshot HeaderMatchSpec (name lowercased)."""
    rule: dict[str, Any] = {
        "name": header["name"].lower(),
        "invert": bool(header.get("invert", False)),
    }
    match = header.get("match")
    if not match:
        return {**rule, "kind": "present"}
    kind, value = next(iter(match.items()))
    if kind == "range":
        return {**rule, "kind": "range", "start": value["start"], "end": value["end"]}
    return {**rule, "kind": kind, "value": value}


def http_match(match: dict[str, Any]) -> dict[str, Any]:
    """An http/http2 route or gateway route match. `port` is consumed by the compiler (it picks
    the listener), not emitted: the snapshot's `port` is the local port of the connection."""
    out: dict[str, Any] = {}
    if "prefix" in match:
        out["path"] = {"kind": "prefix", "value": match["prefix"]}
    elif "path" in match:
        kind, value = next(iter(match["path"].items()))
        out["path"] = {"kind": kind, "value": value}
    _common(match, out, match.get("headers"))
    if "method" in match:
        out["method"] = match["method"]
    if "scheme" in match:
        out["scheme"] = match["scheme"]
    if match.get("queryParameters"):
        out["query"] = [
            {
                "name": q["name"],
                **({"exact": q["match"]["exact"]} if "exact" in (q.get("match") or {}) else {}),
            }
            for q in match["queryParameters"]
        ]
    return out


def grpc_match(match: dict[str, Any]) -> dict[str, Any]:
    """gRPC: service => path prefix "/<svc>/", service + method => exact "/<svc>/<method>"."""
    out: dict[str, Any] = {}
    service = match.get("serviceName")
    if service and match.get("methodName"):
        out["path"] = {"kind": "exact", "value": f"/{service}/{match['methodName']}"}
    elif service:
        out["path"] = {"kind": "prefix", "value": f"/{service}/"}
    _common(match, out, match.get("metadata"))
    return out


def _common(
    match: dict[str, Any], out: dict[str, Any], headers: list[dict[str, Any]] | None
) -> None:
    if "hostname" in match:  # gateway routes only
        kind, value = next(iter(match["hostname"].items()))
        out["hostname"] = {"kind": kind, "value": value}
    if headers:
        out["headers"] = [header_rule(h) for h in headers]


def retry_policy(policy: dict[str, Any] | None) -> dict[str, Any]:
    if policy is None:
        return {k: list(v) if isinstance(v, list) else v for k, v in DEFAULT_RETRY.items()}
    events = [*policy.get("httpRetryEvents", []), *policy.get("tcpRetryEvents", [])]
    out: dict[str, Any] = {
        "maxRetries": policy["maxRetries"],
        "perTryTimeoutMs": duration_ms(policy["perRetryTimeout"]),
        "retryOn": _unique(RETRY_ON[e] for e in events),
    }
    if policy.get("grpcRetryEvents"):
        out["grpcRetryOn"] = _unique(policy["grpcRetryEvents"])
    return out


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def route_action(
    body: dict[str, Any], clusters: list[dict[str, Any]], *, retry: bool = True
) -> dict[str, Any]:
    """Clusters plus the timeouts (`timeout.perRequest`, default 15 s; `timeout.idle`) and retry
    policy of a route body (or of a listener's `timeout.<protocol>` with retry=False)."""
    timeout = body.get("timeout") or {}
    action: dict[str, Any] = {"clusters": clusters}
    per_request = timeout.get("perRequest")
    action["timeoutMs"] = duration_ms(per_request) if per_request else DEFAULT_TIMEOUT_MS
    if "idle" in timeout:
        action["idleTimeoutMs"] = duration_ms(timeout["idle"])
    if retry:
        action["retry"] = retry_policy(body.get("retryPolicy"))
    return action


def gateway_rewrite(rtype: str, body: dict[str, Any], target_service: str) -> dict[str, str]:
    """App Mesh's gateway rewrites, defaults included (spec §4): a prefix match replaces the
    matched prefix with "/" unless `defaultPrefix: DISABLED` or `prefix.value`; exact/regex paths
    are kept unless `path.exact`; Host becomes the target service unless DISABLED."""
    match, rewrite = body["match"], body["action"].get("rewrite") or {}
    out: dict[str, str] = {}
    if rtype != "grpcRoute":
        prefix = rewrite.get("prefix") or {}
        if "prefix" in match and "value" in prefix:
            out["prefix"] = prefix["value"]
        elif (
            "prefix" in match
            and prefix.get("defaultPrefix") != "DISABLED"
            and match["prefix"] != "/"
        ):
            out["prefix"] = "/"
        if "path" in rewrite:
            out["path"] = rewrite["path"]["exact"]
    if (rewrite.get("hostname") or {}).get("defaultTargetHostname") != "DISABLED":
        out["host"] = target_service
    return out


def order_key(priority: int | None, route: Route) -> tuple[bool, int, int, int, str]:
    """Evaluation order: routes with a priority first (ascending), then by specificity (exact
    path > regex > longest prefix > no path), then by name."""
    path = route["match"].get("path")
    if path is None:
        rank, length = 3, 0
    else:
        rank = {"exact": 0, "regex": 1, "prefix": 2}[path["kind"]]
        length = len(path["value"]) if rank == 2 else 0
    return (priority is None, priority or 0, rank, -length, route["name"])


def ordered(entries: list[tuple[int | None, Route]]) -> list[Route]:
    return [route for priority, route in sorted(entries, key=lambda e: order_key(*e))]
