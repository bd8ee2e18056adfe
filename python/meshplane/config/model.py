"""The config model: App Mesh resources plus the `proxy` section of a meshplane file.

Pure data with lookups. A resource's `spec` is the App Mesh spec exactly as `describe-*` returns
it (camelCase keys, plain dicts and lists), plus meshplane's documented extension keys; the
loaders produce it and `validate` checks it before anything reads it. Treat specs as read-only.
Imports only the standard library and `addresses`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from meshplane.config.addresses import format_address

KINDS = (
    "Mesh",
    "VirtualService",
    "VirtualRouter",
    "Route",
    "VirtualNode",
    "VirtualGateway",
    "GatewayRoute",
    "Function",  # extension: a Lambda-style function (docs/functions.md)
)
# Routes and gateway routes live inside a router or a gateway; their names are unique per parent.
PARENT_KIND = {"Route": "VirtualRouter", "GatewayRoute": "VirtualGateway"}
PARENT_KEY = {"Route": "virtualRouterName", "GatewayRoute": "virtualGatewayName"}

DEFAULT_ADMIN = "127.0.0.1:9901"
DEFAULT_BIND = "0.0.0.0"
OUTBOUND_PORT = 15001  # App Mesh's egress listener port


@dataclass(frozen=True)
class Resource:
    """One App Mesh resource. `parent` names the router (Route) or gateway (GatewayRoute)."""

    kind: str
    name: str
    spec: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None

    @property
    def label(self) -> str:
        """How problems name this resource, e.g. `VirtualNode "checkout-v1"`."""
        base = f'{self.kind} "{self.name}"'
        if self.kind in PARENT_KIND and self.parent:
            return f'{base} ({PARENT_KIND[self.kind]} "{self.parent}")'
        return base

    def to_native(self) -> dict[str, Any]:
        """The resource as an entry of a meshplane file's `resources` list."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.kind in PARENT_KEY:
            out[PARENT_KEY[self.kind]] = self.parent
        out["spec"] = self.spec
        return out


class DnsTarget(NamedTuple):
    """A cluster whose endpoints come from DNS: what the discovery driver must resolve."""

    cluster: str
    hostname: str
    port: int
    response_type: str  # "LOADBALANCER" (first address only) | "ENDPOINTS" (every address)
    ip_preference: str | None  # App Mesh ipPreference, None = resolver default


@dataclass(frozen=True)
class ProxySettings:
    """The `proxy` section: which gateway or node this instance serves, and where it binds."""

    gateway: str | None = None
    node: str | None = None
    admin: str = DEFAULT_ADMIN
    bind: str = DEFAULT_BIND
    ports: Mapping[int, int] = field(default_factory=dict)
    app: str | Mapping[int, str] | None = None
    outbound: str | None = None
    # TLS secrets for `certificate.sds` / `trust.sds`: {"secretsDir": DIR, "secrets": {name:
    # {certificateChain, privateKey} | {trust}}}, as validated (config/tls.py resolves them).
    sds: Mapping[str, Any] | None = None
    # Every listener's request-headers timeout and listen(2) backlog; None = the core's
    # defaults (10 s, 1024).
    request_headers_timeout_ms: int | None = None
    backlog: int | None = None
    # Where the registry and config versions live (meshplane.store URL); None = --store,
    # MESHPLANE_STORE or the embedded default.
    store: str | None = None
    # Self-registration while serving: True, or {namespace, service, id, address, attributes,
    # ttl} overriding the served node's awsCloudMap defaults; None = off.
    register: bool | Mapping[str, Any] | None = None
    # Distributed tracing: {otlpEndpoint, samplingPercent, propagation, keepErrors,
    # serviceName, maxQueueSpans, maxBatchSpans, exportTimeoutMs, recentSpans}; None = off.
    tracing: Mapping[str, Any] | None = None

    def bound_port(self, declared: int) -> int:
        """The port a listener declared on `declared` actually binds (0 = ephemeral)."""
        return self.ports.get(declared, declared)

    def app_address(self, listener_port: int) -> str:
        """Where the local application listens for traffic of the node listener `listener_port`."""
        if isinstance(self.app, str):
            return self.app
        if isinstance(self.app, Mapping) and listener_port in self.app:
            return self.app[listener_port]
        return f"127.0.0.1:{listener_port}"

    def outbound_address(self) -> str:
        return self.outbound or format_address(self.bind, OUTBOUND_PORT)

    def to_native(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.gateway is not None:
            out["gateway"] = self.gateway
        if self.node is not None:
            out["node"] = self.node
        out["admin"] = self.admin
        out["bind"] = self.bind
        if self.ports:
            out["ports"] = dict(self.ports)
        if self.app is not None:
            out["app"] = self.app if isinstance(self.app, str) else dict(self.app)
        if self.outbound is not None:
            out["outbound"] = self.outbound
        if self.sds is not None:
            out["sds"] = dict(self.sds)
        if self.request_headers_timeout_ms is not None:
            out["requestHeadersTimeoutMs"] = self.request_headers_timeout_ms
        if self.backlog is not None:
            out["backlog"] = self.backlog
        if self.store is not None:
            out["store"] = self.store
        if self.register is not None:
            out["register"] = self.register if isinstance(self.register, bool) else dict(self.register)
        if self.tracing is not None:
            out["tracing"] = dict(self.tracing)
        return out


class ResourceIndex:
    """Lookups over a list of resources by kind, name and parent (first definition wins)."""

    def __init__(self, resources: tuple[Resource, ...] | list[Resource]) -> None:
        self.resources = tuple(resources)
        self._by_key: dict[tuple[str, str | None, str], Resource] = {}
        for r in self.resources:
            self._by_key.setdefault((r.kind, r.parent, r.name), r)

    def get(self, kind: str, name: str, parent: str | None = None) -> Resource | None:
        return self._by_key.get((kind, parent, name))

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def children(self, kind: str, parent: str) -> list[Resource]:
        """Routes of a router (`kind="Route"`) or gateway routes of a gateway."""
        return [r for r in self.resources if r.kind == kind and r.parent == parent]


@dataclass(frozen=True)
class MeshConfig:
    """A loaded, validated meshplane file. `source` is the file path or a label."""

    mesh: str
    proxy: ProxySettings
    resources: tuple[Resource, ...]
    source: str = "<dict>"

    @cached_property
    def index(self) -> ResourceIndex:
        return ResourceIndex(self.resources)

    def get(self, kind: str, name: str, parent: str | None = None) -> Resource | None:
        return self.index.get(kind, name, parent)

    def of_kind(self, kind: str) -> list[Resource]:
        return self.index.of_kind(kind)

    def children(self, kind: str, parent: str) -> list[Resource]:
        return self.index.children(kind, parent)

    def to_native(self) -> dict[str, Any]:
        return {
            "mesh": self.mesh,
            "proxy": self.proxy.to_native(),
            "resources": [r.to_native() for r in self.resources],
        }
