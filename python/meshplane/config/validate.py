"""Validation: every problem of a set of resources or of a whole meshplane file, all at once.

Three passes: each spec against its shape (`specs`), names (duplicates), then the rules of
`checks` on the resources whose shape is right (so a rule never reads a malformed spec). A
whole file adds the `proxy` section. Nothing here raises; callers decide. Imports only siblings
below `loaders` and `compile`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from meshplane.config.addresses import parse_address, parse_ip
from meshplane.config.checks import CHECKS, Graph, unresolved
from meshplane.config.model import KINDS, PARENT_KIND, MeshConfig, Resource, ResourceIndex
from meshplane.config.schema import check
from meshplane.config.specs import NAME, SPEC_OF_KIND
from meshplane.config.tls import unsupported
from meshplane.config.topology import backends, listeners, provider, proxy_listeners
from meshplane.errors import Problem


def validate_resources(resources: Sequence[Resource], file: str) -> list[Problem]:
    """Every problem of these resources taken as one mesh (specs, names, references)."""
    return _validate(resources, file)[0]


def _validate(resources: Sequence[Resource], file: str) -> tuple[list[Problem], Graph]:
    problems: list[Problem] = []
    valid: set[int] = set()
    for r in resources:
        if r.kind not in SPEC_OF_KIND:
            problems.append(Problem(file, r.label, "kind", f"expected one of {', '.join(KINDS)}"))
            continue
        issues = check(NAME, r.name, "name") if r.kind != "VirtualService" else []
        issues += check(SPEC_OF_KIND[r.kind], r.spec, "spec")
        if not issues:
            valid.add(id(r))
        problems += [Problem(file, r.label, f, m) for f, m in issues]
    problems += _duplicates(resources, file)
    graph = Graph(ResourceIndex(list(resources)), valid)
    for r in resources:
        if id(r) in valid and r.kind in CHECKS:
            problems += [Problem(file, r.label, f, m) for f, m in CHECKS[r.kind](r, graph)]
    return problems, graph


def _duplicates(resources: Iterable[Resource], file: str) -> list[Problem]:
    seen: set[tuple[str, str | None, str]] = set()
    out: list[Problem] = []
    for r in resources:
        key = (r.kind, r.parent, r.name)
        if key in seen:
            scope = f' in {PARENT_KIND[r.kind]} "{r.parent}"' if r.kind in PARENT_KIND else ""
            out.append(
                Problem(file, r.label, "name", f"duplicate name: another {r.kind}{scope} has it")
            )
        seen.add(key)
    return out


def validate_config(cfg: MeshConfig) -> list[Problem]:
    """Every problem of a meshplane file: its resources and its `proxy` section."""
    problems, graph = _validate(cfg.resources, cfg.source)
    file, proxy = cfg.source, cfg.proxy
    for mesh in cfg.of_kind("Mesh"):
        if mesh.name != cfg.mesh:
            problems.append(
                Problem(
                    file, mesh.label, "name", f'expected the mesh name "{cfg.mesh}" given in `mesh`'
                )
            )
    if (proxy.gateway is None) == (proxy.node is None):
        got = "both" if proxy.gateway is not None else "neither"
        problems.append(
            Problem(file, "", "proxy", f"expected exactly one of gateway, node, got {got}")
        )
        return problems
    problems += _check_addresses(cfg)
    tracing = proxy.tracing or {}
    if "otlpTls" in tracing and not str(tracing.get("otlpEndpoint", "")).startswith("https://"):
        problems.append(
            Problem(file, "", "proxy.tracing.otlpTls", "applies to an https:// otlpEndpoint only")
        )
    if proxy.gateway is not None:
        target = cfg.get("VirtualGateway", proxy.gateway)
        if target is None:
            problems.append(
                Problem(
                    file,
                    "",
                    "proxy.gateway",
                    unresolved("VirtualGateway", proxy.gateway, _names(cfg, "VirtualGateway")),
                )
            )
        for key in ("app", "outbound"):
            if getattr(proxy, key) is not None:
                problems.append(
                    Problem(file, "", f"proxy.{key}", "applies only to sidecar mode (proxy.node)")
                )
    else:
        target = cfg.get("VirtualNode", proxy.node or "")
        if target is None:
            problems.append(
                Problem(
                    file,
                    "",
                    "proxy.node",
                    unresolved("VirtualNode", proxy.node or "", _names(cfg, "VirtualNode")),
                )
            )
        elif graph.valid(target):
            problems += _check_sidecar(cfg, target)
    if target is not None and _plannable(cfg, graph, target):
        problems += _check_listeners(cfg, target)
        problems += [Problem(file, target.label, f, m) for f, m in unsupported(target, proxy.sds)]
    return problems


def _plannable(cfg: MeshConfig, graph: Graph, target: Resource) -> bool:
    """Whether every spec `proxy_listeners` reads passed its shape check."""
    if not graph.valid(target):
        return False
    for name in backends(target) if target.kind == "VirtualNode" else []:
        vs = cfg.get("VirtualService", name)
        if vs is not None and not graph.valid(vs):
            return False
        prov = provider(vs) if vs is not None else None
        if prov and cfg.get(*prov) is not None and not graph.valid(cfg.get(*prov)):
            return False
    return True


def _check_addresses(cfg: MeshConfig) -> list[Problem]:
    file, proxy = cfg.source, cfg.proxy
    out: list[Problem] = []

    def address(value: object, field: str, min_port: int = 0) -> None:
        try:
            parse_address(value, min_port=min_port)  # type: ignore[arg-type]
        except ValueError as exc:
            out.append(Problem(file, "", field, str(exc)))

    address(proxy.admin, "proxy.admin")
    try:
        parse_ip(proxy.bind)
    except ValueError as exc:
        out.append(Problem(file, "", "proxy.bind", str(exc)))
    if proxy.outbound is not None:
        address(proxy.outbound, "proxy.outbound")
    if isinstance(proxy.app, str):
        address(proxy.app, "proxy.app", 1)
    elif proxy.app is not None:
        for port, value in proxy.app.items():
            address(value, f"proxy.app.{port}", 1)
    return out


def _check_sidecar(cfg: MeshConfig, node: Resource) -> list[Problem]:
    file, out = cfg.source, []
    for i, name in enumerate(backends(node)):
        if cfg.get("VirtualService", name) is None:
            field = f"spec.backends[{i}].virtualService.virtualServiceName"
            out.append(
                Problem(
                    file,
                    node.label,
                    field,
                    unresolved("VirtualService", name, _names(cfg, "VirtualService")),
                )
            )
    if isinstance(cfg.proxy.app, dict):
        ports = {p for p, _ in listeners(node)}
        for port in cfg.proxy.app:
            if port not in ports:
                out.append(
                    Problem(
                        file,
                        "",
                        f"proxy.app.{port}",
                        f"expected a listener port of {node.label} ({_ports(ports)}), got {port}",
                    )
                )
    return out


def _check_listeners(cfg: MeshConfig, target: Resource) -> list[Problem]:
    """Port mapping keys, TCP backends sharing a port, and listeners colliding on an address."""
    file, proxy = cfg.source, cfg.proxy
    out: list[Problem] = []
    planned = proxy_listeners(cfg)
    declared = {pl.port for pl in planned if pl.role != "outbound"}
    for port in proxy.ports:
        if port not in declared:
            out.append(
                Problem(
                    file,
                    "",
                    f"proxy.ports.{port}",
                    f"expected a listener port of {target.label} or a TCP backend port "
                    f"({_ports(declared)}), got {port}",
                )
            )
    for pl in planned:
        if len(pl.services) > 1:
            names = ", ".join(f'"{s}"' for s in pl.services)
            out.append(
                Problem(
                    file,
                    target.label,
                    "spec.backends",
                    f"TCP virtual services {names} share port {pl.port}; TCP is routed by "
                    f"port only, so they cannot coexist (App Mesh behaves the same)",
                )
            )
    bound = [(pl.name, pl.address) for pl in planned]
    apps = [
        (f"the application of {pl.name}", proxy.app_address(pl.port))
        for pl in planned
        if pl.role == "inbound"
    ]
    pairs = [(a, b) for i, a in enumerate(bound) for b in bound[i + 1 :] + apps]
    for (name_a, addr_a), (name_b, addr_b) in pairs:
        if _collide(addr_a, addr_b):
            out.append(
                Problem(
                    file,
                    "",
                    "proxy.ports",
                    f"{name_a} ({addr_a}) and {name_b} ({addr_b}) use the same address; "
                    f"map one port elsewhere with proxy.ports or proxy.app",
                )
            )
    return out


def _collide(a: str, b: str) -> bool:
    try:
        (ip_a, port_a), (ip_b, port_b) = parse_address(a, min_port=0), parse_address(b, min_port=0)
    except ValueError:
        return False
    if port_a != port_b or port_a == 0:
        return False
    return ip_a == ip_b or any(ipaddress.ip_address(ip).is_unspecified for ip in (ip_a, ip_b))


def _names(cfg: MeshConfig, kind: str) -> list[str]:
    return [r.name for r in cfg.of_kind(kind)]


def _ports(ports: Iterable[int]) -> str:
    return ", ".join(str(p) for p in sorted(ports)) or "none"
