"""Rules a shape cannot express: cross-field rules inside one resource and references between
resources (targets, providers, parents, protocols and ports that must agree).

Each `check_*` takes a resource whose spec already passed its shape check and returns
(field path, message) issues. A reference to a missing resource is reported with a message that
starts with `UNRESOLVED`, so tools can tell "defined elsewhere" apart from "wrong". Imports only
`model`, `specs`, `topology`, `addresses`, `logging`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from meshplane.config.addresses import parse_address, parse_ip
from meshplane.config.functions import check_function, check_function_node
from meshplane.config.logging import access_log_issues
from meshplane.config.model import PARENT_KEY, Resource, ResourceIndex
from meshplane.config.resilience import listener_issues
from meshplane.config.schema import suggest
from meshplane.config.specs import ROUTE_PROTOCOL
from meshplane.config.topology import (
    gateway_route_type,
    listeners,
    provider,
    provider_listeners,
    route_type,
)

Issue = tuple[str, str]
UNRESOLVED = "unresolved reference"
RESERVED_PREFIXES = ("/aws-appmesh", "/aws-app-mesh")
TYPE_OF_PROTOCOL = {v: k for k, v in ROUTE_PROTOCOL.items()}


def unresolved(kind: str, name: str, known: list[str] | None = None) -> str:
    hint = suggest(name, known) if known else ""
    return f'{UNRESOLVED}: no {kind} named "{name}" is defined{hint}'


class Graph:
    """The resources being validated, and which of them passed their shape check."""

    def __init__(self, index: ResourceIndex, valid: set[int]) -> None:
        self.index = index
        self._valid = valid

    def get(self, kind: str, name: str, parent: str | None = None) -> Resource | None:
        return self.index.get(kind, name, parent)

    def unresolved(self, kind: str, name: str) -> str:
        return unresolved(kind, name, [r.name for r in self.index.of_kind(kind)])

    def valid(self, resource: Resource | None) -> bool:
        return resource is not None and id(resource) in self._valid


# --- shared pieces --------------------------------------------------------------------------

# Shell and template placeholders left in a definition: `${VAR}`, `$VAR`, `{{ .Values.x }}`.
PLACEHOLDER = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_]\w*|\{\{[^}]*\}\}")
_DNS_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}\.?$){_DNS_LABEL}(\.{_DNS_LABEL})*\.?$")


def placeholder_issue(value: str) -> str | None:
    """A message when `value` still holds a placeholder that envsubst or a template engine was
    meant to fill; None otherwise."""
    found = PLACEHOLDER.search(value)
    if found is None:
        return None
    return (
        f'unsubstituted placeholder "{found.group(0)}" in "{value}": fill it in (envsubst, '
        "helm, your deploy tool) before loading"
    )


def host_name_issue(value: str) -> str | None:
    """A message when `value` is not a DNS host name (or holds a placeholder); None if it is."""
    problem = placeholder_issue(value)
    if problem is None and not _DNS_NAME.match(value):
        try:
            parse_ip(value)
        except ValueError:
            problem = f'expected a DNS host name (labels of letters, digits, "-", "_"), got "{value}"'
    return problem

_LOOKAROUND = ("(?=", "(?!", "(?<=", "(?<!", "(?>", "(?P=")


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` is not a valid RE2 expression, or None. Python's `re` checks the syntax;
    the constructs RE2 lacks (lookaround, backreferences, atomic groups) are refused by scan."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"expected a valid regular expression, got {pattern!r}: {exc}"
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt.isdigit() and nxt != "0":
                return f"backreferences (\\{nxt}) are not supported (RE2 syntax), in {pattern!r}"
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] in ("]", "^") else 1
            continue
        elif pattern.startswith(_LOOKAROUND, i):
            return f"lookaround, atomic groups and backreferences are not supported (RE2 syntax), in {pattern!r}"
        i += 1
    return None


def _check_path_match(match: dict[str, Any], base: str, out: list[Issue]) -> None:
    prefix = match.get("prefix")
    if isinstance(prefix, str) and not prefix.startswith("/"):
        out.append((f"{base}.prefix", f'expected a prefix starting with "/", got "{prefix}"'))
    path = match.get("path") or {}
    if "exact" in path and not path["exact"].startswith("/"):
        out.append(
            (f"{base}.path.exact", f'expected a path starting with "/", got "{path["exact"]}"')
        )
    if "regex" in path and (why := regex_problem(path["regex"])):
        out.append((f"{base}.path.regex", why))


def _check_headers(headers: list[dict[str, Any]], base: str, out: list[Issue]) -> None:
    for i, header in enumerate(headers):
        m = header.get("match") or {}
        if "regex" in m and (why := regex_problem(m["regex"])):
            out.append((f"{base}[{i}].match.regex", why))
        rng = m.get("range")
        if rng and rng["start"] >= rng["end"]:
            out.append(
                (
                    f"{base}[{i}].match.range",
                    f"expected start < end (half-open range), got start {rng['start']}, end {rng['end']}",
                )
            )


def _check_listener_ports(resource: Resource, out: list[Issue]) -> None:
    seen: dict[int, int] = {}
    for i, (port, _) in enumerate(listeners(resource)):
        if port in seen:
            out.append(
                (
                    f"spec.listeners[{i}].portMapping.port",
                    f"duplicate listener port {port} (also spec.listeners[{seen[port]}])",
                )
            )
        seen.setdefault(port, i)


def _check_parent(r: Resource, g: Graph, out: list[Issue]) -> Resource | None:
    """The router or gateway a Route or GatewayRoute belongs to, if defined."""
    parent_kind = "VirtualRouter" if r.kind == "Route" else "VirtualGateway"
    key = PARENT_KEY[r.kind]
    if not r.parent:
        out.append((key, f"{UNRESOLVED}: the {r.kind} names no {parent_kind} (set {key})"))
        return None
    parent = g.get(parent_kind, r.parent)
    if parent is None:
        out.append((key, g.unresolved(parent_kind, r.parent)))
    return parent if g.valid(parent) else None


def _check_listener_protocol(
    owner: Resource, protocol: str, port: int | None, rtype: str, base: str, out: list[Issue]
) -> None:
    """A route's type must equal the protocol of the owner's listener it applies to."""
    owned = listeners(owner)
    what = f'{owner.kind} "{owner.name}"'
    if not owned:
        out.append((base, f"{what} has no listeners, so this route can never apply"))
        return
    if port is not None:
        by_port = dict(owned)
        if port not in by_port:
            ports = ", ".join(str(p) for p, _ in owned)
            out.append(
                (f"{base}.match.port", f"expected a listener port of {what} ({ports}), got {port}")
            )
        elif by_port[port] != protocol:
            out.append(
                (
                    base,
                    f"expected {TYPE_OF_PROTOCOL[by_port[port]]} to match the {by_port[port]} "
                    f"listener {port} of {what}, got {rtype}",
                )
            )
        return
    if protocol not in {p for _, p in owned}:
        expected = " or ".join(sorted({TYPE_OF_PROTOCOL[p] for _, p in owned}))
        out.append(
            (base, f"expected {expected} to match the listener protocol of {what}, got {rtype}")
        )


# --- per kind -------------------------------------------------------------------------------


def check_virtual_node(r: Resource, g: Graph) -> list[Issue]:
    out: list[Issue] = []
    spec = r.spec
    _check_listener_ports(r, out)
    if spec.get("listeners") and "serviceDiscovery" not in spec:
        out.append(
            (
                "spec.serviceDiscovery",
                "required when the node has listeners: expected one of dns, awsCloudMap, static, "
                "function",
            )
        )
    _check_listener_blocks(spec.get("listeners") or [], ("connectionPool", "timeout"), out)
    out += listener_issues(r)
    out += access_log_issues(r)
    out += check_function_node(r, g)
    discovery = spec.get("serviceDiscovery") or {}
    if "dns" in discovery:
        problem = host_name_issue(discovery["dns"]["hostname"])
        if problem:
            out.append(("spec.serviceDiscovery.dns.hostname", problem))
    for key in ("namespaceName", "serviceName"):
        problem = placeholder_issue((discovery.get("awsCloudMap") or {}).get(key, ""))
        if problem:
            out.append((f"spec.serviceDiscovery.awsCloudMap.{key}", problem))
    static = discovery.get("static")
    if static:
        has_ports = bool(listeners(r))
        for j, ep in enumerate(static["endpoints"]):
            path = f"spec.serviceDiscovery.static.endpoints[{j}]"
            try:
                if isinstance(ep, str):
                    parse_address(ep, default_port=1 if has_ports else None)
                else:
                    path += ".address"
                    parse_ip(ep["address"])
                    if "port" not in ep and not has_ports:
                        raise ValueError(
                            "expected a port (the node has no listener port to default to)"
                        )
            except ValueError as exc:
                out.append((path, str(exc)))
    return out


def _check_listener_blocks(
    listeners: list[dict[str, Any]], keys: tuple[str, ...], out: list[Issue]
) -> None:
    """Protocol-keyed blocks (`connectionPool`, `timeout`) match the listener's protocol, and a
    health check's `port` is the listener's own."""
    for i, lst in enumerate(listeners):
        port, protocol = lst["portMapping"]["port"], lst["portMapping"]["protocol"]
        for key in keys:
            block = lst.get(key)
            if block and protocol not in block:
                out.append(
                    (
                        f"spec.listeners[{i}].{key}.{next(iter(block))}",
                        f"expected {key}.{protocol} to match the listener protocol {protocol}",
                    )
                )
        hc_port = (lst.get("healthCheck") or {}).get("port")
        if hc_port is not None and hc_port != port:
            out.append(
                (
                    f"spec.listeners[{i}].healthCheck.port",
                    f"expected the listener port {port}, got {hc_port}",
                )
            )


def check_virtual_router(r: Resource, g: Graph) -> list[Issue]:
    out: list[Issue] = []
    _check_listener_ports(r, out)
    return out


def check_virtual_gateway(r: Resource, g: Graph) -> list[Issue]:
    out: list[Issue] = []
    _check_listener_ports(r, out)
    _check_listener_blocks(r.spec["listeners"], ("connectionPool",), out)
    out += access_log_issues(r)
    return out


def check_virtual_service(r: Resource, g: Graph) -> list[Issue]:
    # Callers send the service name as Host, so a placeholder in it can never match.
    problem = placeholder_issue(r.name)
    out = [("name", problem)] if problem else []
    prov = provider(r)
    if prov and g.get(*prov) is None:
        key = "virtualNode" if prov[0] == "VirtualNode" else "virtualRouter"
        out.append((f"spec.provider.{key}.{key}Name", g.unresolved(*prov)))
    return out


def check_route(r: Resource, g: Graph) -> list[Issue]:
    out: list[Issue] = []
    rtype = route_type(r.spec) or "httpRoute"
    body, base, protocol = r.spec[rtype], f"spec.{rtype}", ROUTE_PROTOCOL[rtype]
    match = body.get("match") or {}
    router = _check_parent(r, g, out)
    if router is not None:
        _check_listener_protocol(router, protocol, match.get("port"), rtype, base, out)
    if rtype in ("httpRoute", "http2Route"):
        _check_path_match(match, f"{base}.match", out)
        _check_headers(match.get("headers") or [], f"{base}.match.headers", out)
    if rtype == "grpcRoute":
        if "methodName" in match and "serviceName" not in match:
            out.append(
                (
                    f"{base}.match.methodName",
                    "expected serviceName too: a method belongs to a service",
                )
            )
        _check_headers(match.get("metadata") or [], f"{base}.match.metadata", out)
    retry = body.get("retryPolicy")
    events = ("httpRetryEvents", "tcpRetryEvents") + (
        ("grpcRetryEvents",) if rtype == "grpcRoute" else ()
    )
    if retry is not None and not any(retry.get(e) for e in events):
        out.append((f"{base}.retryPolicy", f"expected at least one of {', '.join(events)}"))
    targets = body["action"]["weightedTargets"]
    if all(t["weight"] == 0 for t in targets):
        out.append(
            (f"{base}.action.weightedTargets", "expected at least one target with weight > 0")
        )
    for j, target in enumerate(targets):
        _check_target(target, protocol, rtype, f"{base}.action.weightedTargets[{j}]", g, out)
    return out


def _check_target(
    t: dict[str, Any], protocol: str, rtype: str, path: str, g: Graph, out: list[Issue]
) -> None:
    node = g.get("VirtualNode", t["virtualNode"])
    if node is None:
        out.append((f"{path}.virtualNode", g.unresolved("VirtualNode", t["virtualNode"])))
        return
    if not g.valid(node):
        return
    owned = listeners(node)
    what = f'VirtualNode "{node.name}"'
    ports = ", ".join(str(p) for p, _ in owned)
    if not owned:
        out.append((f"{path}.virtualNode", f"{what} has no listeners to send traffic to"))
        return
    port = t.get("port")
    if port is None and len(owned) > 1:
        out.append((f"{path}.port", f"required: {what} has several listeners ({ports})"))
        return
    by_port = dict(owned)
    port = owned[0][0] if port is None else port
    if port not in by_port:
        out.append((f"{path}.port", f"expected a listener port of {what} ({ports}), got {port}"))
    elif by_port[port] != protocol:
        out.append(
            (
                path,
                f"{what} listens with {by_port[port]} on port {port}; a {rtype} needs a {protocol} listener",
            )
        )


def check_gateway_route(r: Resource, g: Graph) -> list[Issue]:
    out: list[Issue] = []
    rtype = gateway_route_type(r.spec) or "httpRoute"
    body, base, protocol = r.spec[rtype], f"spec.{rtype}", ROUTE_PROTOCOL[rtype]
    match = body["match"]
    gateway = _check_parent(r, g, out)
    if gateway is not None:
        _check_listener_protocol(gateway, protocol, match.get("port"), rtype, base, out)
    if rtype == "grpcRoute":
        svc = match.get("serviceName", "")
        if svc.startswith(("aws.app-mesh", "aws.appmesh")):
            out.append(
                (
                    f"{base}.match.serviceName",
                    f'service names starting "aws.appmesh" are reserved, got "{svc}"',
                )
            )
        _check_headers(match.get("metadata") or [], f"{base}.match.metadata", out)
    else:
        _check_path_match(match, f"{base}.match", out)
        _check_headers(match.get("headers") or [], f"{base}.match.headers", out)
        prefix = match.get("prefix", "")
        if prefix.startswith(RESERVED_PREFIXES):
            out.append(
                (
                    f"{base}.match.prefix",
                    f'prefixes starting "/aws-appmesh" are reserved, got "{prefix}"',
                )
            )
        rewrite = body["action"].get("rewrite") or {}
        if "prefix" in rewrite and "prefix" not in match:
            out.append(
                (
                    f"{base}.action.rewrite.prefix",
                    "expected match.prefix: a prefix rewrite replaces the matched prefix",
                )
            )
    for key in ("exact", "suffix"):
        problem = placeholder_issue((match.get("hostname") or {}).get(key, ""))
        if problem:
            out.append((f"{base}.match.hostname.{key}", problem))
    target = body["action"]["target"]
    _check_gateway_target(target, f"{base}.action.target", g, out)
    return out


def _check_gateway_target(target: dict[str, Any], path: str, g: Graph, out: list[Issue]) -> None:
    name = target["virtualService"]["virtualServiceName"]
    vs = g.get("VirtualService", name)
    if vs is None:
        out.append(
            (f"{path}.virtualService.virtualServiceName", g.unresolved("VirtualService", name))
        )
        return
    prov = provider(vs) if g.valid(vs) else None
    if prov is None or not g.valid(g.get(*prov)):
        return
    owned = provider_listeners(g.index, vs)
    what = f'VirtualService "{name}" (provider {prov[0]} "{prov[1]}")'
    ports = ", ".join(str(p) for p, _ in owned)
    port = target.get("port")
    if not owned:
        out.append((path, f"{what} has no listeners to route to"))
    elif port is None and len(owned) > 1:
        out.append((f"{path}.port", f"required: {what} has several listeners ({ports})"))
    elif port is not None and port not in dict(owned):
        out.append((f"{path}.port", f"expected a listener port of {what} ({ports}), got {port}"))
    elif dict(owned)[port if port is not None else owned[0][0]] == "tcp":
        out.append((path, f"{what} is a TCP service; a gateway routes only http, http2 and grpc"))


CHECKS: dict[str, Callable[[Resource, Graph], list[Issue]]] = {
    "VirtualNode": check_virtual_node,
    "VirtualRouter": check_virtual_router,
    "VirtualGateway": check_virtual_gateway,
    "VirtualService": check_virtual_service,
    "Route": check_route,
    "GatewayRoute": check_gateway_route,
    "Function": check_function,
}
