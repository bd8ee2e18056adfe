"""Reading the mesh graph out of validated specs: listeners, providers, route types, durations.

Shared by cross-resource validation and by compilation so that both see the same topology.
Assumes the specs read passed their shape check. Imports only `model`, `specs` and `addresses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshplane.config.addresses import format_address, parse_address
from meshplane.config.model import MeshConfig, Resource, ResourceIndex
from meshplane.config.specs import GATEWAY_ROUTE_TYPES, ROUTE_PROTOCOL, ROUTE_TYPES

Listener = tuple[int, str]  # (port, protocol)


def listeners(resource: Resource | None) -> list[Listener]:
    """(port, protocol) of each listener of a node, router or gateway, in declaration order."""
    if resource is None:
        return []
    return [
        (lst["portMapping"]["port"], lst["portMapping"]["protocol"])
        for lst in resource.spec.get("listeners") or []
    ]


def listener_spec(resource: Resource, port: int) -> dict[str, Any]:
    for lst in resource.spec.get("listeners") or []:
        if lst["portMapping"]["port"] == port:
            return dict(lst)
    return {}


def route_type(spec: dict[str, Any]) -> str | None:
    """The route type key of a Route or GatewayRoute spec (httpRoute, http2Route, ...)."""
    for key in ROUTE_TYPES:
        if key in spec:
            return key
    return None


def route_protocol(spec: dict[str, Any]) -> str | None:
    key = route_type(spec)
    return ROUTE_PROTOCOL[key] if key else None


def gateway_route_type(spec: dict[str, Any]) -> str | None:
    return next((k for k in GATEWAY_ROUTE_TYPES if k in spec), None)


def provider(vs: Resource) -> tuple[str, str] | None:
    """("VirtualNode" | "VirtualRouter", name) of a virtual service's provider, if it has one."""
    prov = vs.spec.get("provider") or {}
    if "virtualNode" in prov:
        return "VirtualNode", prov["virtualNode"]["virtualNodeName"]
    if "virtualRouter" in prov:
        return "VirtualRouter", prov["virtualRouter"]["virtualRouterName"]
    return None


def provider_listeners(index: ResourceIndex, vs: Resource) -> list[Listener]:
    """The listeners callers of a virtual service reach: those of its router or node."""
    prov = provider(vs)
    return listeners(index.get(*prov)) if prov else []


def backends(node: Resource) -> list[str]:
    return [b["virtualService"]["virtualServiceName"] for b in node.spec.get("backends") or []]


def duration_ms(duration: dict[str, Any]) -> int:
    value = int(duration["value"])
    return value * 1000 if duration["unit"] == "s" else value


def upstream_protocol(protocol: str) -> str:
    """Node listener protocol -> snapshot cluster protocol."""
    return {"http": "http1", "http2": "http2", "grpc": "http2"}.get(protocol, "tcp")


@dataclass(frozen=True)
class PlannedListener:
    """A listener the proxy will open: the one enumeration that compile, validation and
    `listener_names` share."""

    name: str
    address: str  # "IP:PORT" as bound (port from proxy.ports)
    port: int  # declared port (App Mesh listener port, backend port or the outbound port)
    protocol: str  # snapshot listener protocol: "http" | "tcp"
    role: str  # "gateway" | "inbound" | "outbound" | "outbound-tcp"
    services: tuple[str, ...] = ()  # outbound-tcp: the TCP virtual services reached on `port`


def proxy_listeners(cfg: MeshConfig) -> list[PlannedListener]:
    """Every listener of the proxy `cfg.proxy` describes (gateway mode or sidecar mode)."""
    proxy = cfg.proxy
    out: list[PlannedListener] = []
    if proxy.gateway is not None:
        gw = cfg.get("VirtualGateway", proxy.gateway)
        for port, _ in listeners(gw):
            address = format_address(proxy.bind, proxy.bound_port(port))
            out.append(
                PlannedListener(f"gateway/{proxy.gateway}/{port}", address, port, "http", "gateway")
            )
        return out
    node = cfg.get("VirtualNode", proxy.node or "")
    if node is None:
        return out
    for port, protocol in listeners(node):
        address = format_address(proxy.bind, proxy.bound_port(port))
        kind = "tcp" if protocol == "tcp" else "http"
        out.append(PlannedListener(f"inbound/{node.name}/{port}", address, port, kind, "inbound"))
    outbound = proxy.outbound_address()
    out.append(
        PlannedListener(f"outbound/{node.name}", outbound, _port_of(outbound), "http", "outbound")
    )
    tcp_ports: dict[int, list[str]] = {}
    for name in backends(node):
        vs = cfg.get("VirtualService", name)
        for port, protocol in provider_listeners(cfg.index, vs) if vs else []:
            if protocol == "tcp" and name not in tcp_ports.setdefault(port, []):
                tcp_ports[port].append(name)
    for port, services in sorted(tcp_ports.items()):
        address = format_address(proxy.bind, proxy.bound_port(port))
        out.append(
            PlannedListener(
                f"outbound/{node.name}/tcp/{port}",
                address,
                port,
                "tcp",
                "outbound-tcp",
                tuple(services),
            )
        )
    return out


def _port_of(address: str) -> int:
    try:
        return parse_address(address, min_port=0)[1]
    except ValueError:
        return 0
