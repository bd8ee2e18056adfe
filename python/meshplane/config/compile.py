"""Compilation: a validated MeshConfig -> the snapshot document the core applies.

The schema is `rust/src/config/mod.rs` (serde camelCase, unknown fields refused). Names are
stable so that versions diff cleanly:
- cluster `<node>` (`<node>:<port>` when the node has several listeners); `local/<node>/<port>`
  for a sidecar's own application;
- route table `service/<vs>` (`service/<vs>:<port>` when the provider has several listeners),
  `gateway/<gw>/<port>`, `inbound/<node>/<port>`, `outbound/<node>`;
- route `<router>/<route>` (`<router>:<port>/<route>` for multi-listener routers; prefixed with
  the table when one router backs several services), `service/<vs>/default` for a node
  provider, `gateway/<gw>/<route>`, and `outbound/` + the service route name in a sidecar.
TLS settings come from `tls`; every listener carries the served node's or gateway's access log
(`logging`). docs/config.md lists the whole mapping. Output is JSON with
sorted keys. Imports only siblings; never validates (callers load through `from_dict` /
`load_*`, which do).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from meshplane.config.addresses import format_address, parse_address
from meshplane.config.functions import (
    INVOKE_LISTENER,
    INVOKE_TABLE,
    LATEST,
    TARGET_HEADER,
    FunctionTarget,
    cluster_document,
    weighted,
)
from meshplane.config.functions import resolve as resolve_functions
from meshplane.config.logging import access_log
from meshplane.config.model import DnsTarget, MeshConfig, Resource
from meshplane.config.resilience import (
    ResilienceTarget,
    apply_gateway_limits,
    circuit_breakers,
    cluster_fields,
)
from meshplane.config.resilience import targets as _resilience_targets
from meshplane.config.routes import (
    DEFAULT_TIMEOUT_MS,
    gateway_rewrite,
    grpc_match,
    http_match,
    ordered,
    retry_policy,
    route_action,
)
from meshplane.config.specs import ROUTE_PROTOCOL
from meshplane.config.tls import listener_tls, upstream_tls
from meshplane.config.topology import (
    backends,
    duration_ms,
    gateway_route_type,
    listener_spec,
    listeners,
    provider,
    provider_listeners,
    proxy_listeners,
    route_type,
    upstream_protocol,
)

SCHEMA = 1
CONNECT_TIMEOUT_MS = 5_000
Endpoints = Mapping[str, Sequence[tuple[str, int]]]
FunctionTargets = Mapping[tuple[str, str], list[FunctionTarget]]


def compile_snapshot(
    cfg: MeshConfig,
    *,
    version: str,
    endpoints: Endpoints | None = None,
    functions: FunctionTargets | None = None,
) -> bytes:
    """The snapshot document for `cfg` labelled `version`, as UTF-8 JSON with sorted keys.

    `endpoints` maps a cluster name to ("IP:PORT", weight) pairs for clusters discovered outside
    the file (DNS, Cloud Map; "unix:/PATH" for function instances); such a cluster without an
    entry has no endpoints. `functions` is `config.functions.resolve`'s answer (None: every
    function's `$LATEST` only, as without a store).
    """
    doc = compile_document(cfg, endpoints, functions=functions, resilience=False).document
    doc["version"] = version
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


class Compiled(NamedTuple):
    """`compile_document`'s result: one compilation, both of its uses."""

    document: dict[str, Any]
    """The snapshot document without its "version" (the caller labels it)."""
    resilience: list[ResilienceTarget]
    """What `resilience_targets` returns for the same config and endpoints."""


def compile_document(
    cfg: MeshConfig,
    endpoints: Endpoints | None = None,
    *,
    functions: FunctionTargets | None = None,
    resilience: bool = True,
) -> Compiled:
    """The snapshot document for `cfg` (no "version" key) and, unless `resilience` is False,
    its resilience targets, from one compilation (`endpoints` and `functions` as for
    `compile_snapshot`). `meshplane.Proxy` serializes the document itself, compactly, in one
    pass."""
    snapshot = _Snapshot(cfg, endpoints or {}, functions)
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "listeners": snapshot.listeners,
        "routeTables": snapshot.tables,
        "clusters": [snapshot.clusters[name] for name in sorted(snapshot.clusters)],
    }
    tracing = cfg.proxy.tracing
    if tracing is not None:
        # The served gateway or node names the service its spans come from; the Mesh's
        # propagation applies unless this proxy names its own.
        served = cfg.proxy.gateway if cfg.proxy.gateway is not None else cfg.proxy.node
        doc["tracing"] = {"serviceName": served or cfg.mesh, **mesh_tracing(cfg), **tracing}
    apply_gateway_limits(cfg, doc)
    return Compiled(doc, _targets(cfg, snapshot) if resilience and _watched(cfg) else [])


def _watched(cfg: MeshConfig) -> bool:
    return any(
        lst.get("healthCheck") or lst.get("outlierDetection")
        for node in cfg.of_kind("VirtualNode")
        for lst in node.spec.get("listeners") or []
    )


def _targets(cfg: MeshConfig, snapshot: _Snapshot) -> list[ResilienceTarget]:
    addresses = {
        name: [e["address"] for e in cluster["endpoints"]]
        for name, cluster in snapshot.clusters.items()
    }
    return _resilience_targets(cfg, snapshot.origins, addresses)


def mesh_tracing(cfg: MeshConfig) -> dict[str, Any]:
    """What the Mesh resource's `tracing` (an extension) sets for every proxy of the mesh."""
    mesh = next(iter(cfg.of_kind("Mesh")), None)
    return dict((mesh.spec if mesh else {}).get("tracing") or {})


def resilience_targets(
    cfg: MeshConfig, endpoints: Endpoints | None = None
) -> list[ResilienceTarget]:
    """The clusters of `cfg`'s snapshot the control layer health-checks or watches for
    outliers, with their endpoints ("IP:PORT"; `endpoints` as for `compile_snapshot`)."""
    if not _watched(cfg):  # skip compiling: nothing to probe or eject
        return []
    return _targets(cfg, _Snapshot(cfg, endpoints or {}))


def dns_targets(cfg: MeshConfig) -> list[DnsTarget]:
    """The clusters of `cfg`'s snapshot whose endpoints come from DNS, and what to resolve."""
    return _Snapshot(cfg, {}, static_endpoints=False).dns


def listener_names(cfg: MeshConfig) -> dict[str, int]:
    """Listener name -> declared port (App Mesh listener port, TCP backend port, outbound port)."""
    return dict(_Snapshot(cfg, {}, static_endpoints=False).declared)


# Canonical "IPv4:PORT" (four decimal octets without leading zeros, a port 1..65535): what
# `format_address(*parse_address(text))` returns unchanged, with no character JSON escapes.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_IPV4_PORT = rf"(?:{_OCTET}\.){{3}}{_OCTET}:{_PORT}"
_CANONICAL_LINES = re.compile(rf"(?:{_IPV4_PORT}\n)*{_IPV4_PORT}")


# NOTE: one regex pass over 10,000 addresses is ~2 ms of C that holds the GIL throughout (the
# interpreter cannot switch threads inside it), which a compile in a worker thread made the Trio
# loop wait for; a pass per `_CANONICAL_STEP` addresses lets it in between.
_CANONICAL_STEP = 1024

# NOTE: the regex is most of a compile of 10,000 static endpoints (~2.5 ms), and a config is
# compiled again with mostly the same addresses (every `Proxy.apply`, discovery changing one
# host). Addresses found canonical are remembered (the str objects themselves, whose hashes
# they cache), so a compile checks only the ones it has not seen: a set lookup each (~25 ns)
# instead of the regex (~250 ns). Bounded: emptied when `_KNOWN_LIMIT` would be passed (~8 MB
# of set at most, the strings being the config's own). A str is immutable, so an entry never
# goes stale; its equal strings are equally canonical.
_KNOWN_LIMIT = 1 << 18
_known_canonical: set[str] = set()


def _canonical(addresses: Sequence[Any]) -> bool:
    """Whether every item is a canonical "IPv4:PORT" string (checked a regex pass per step,
    for the items not already known canonical)."""
    if not addresses:
        return False
    known = _known_canonical
    for start in range(0, len(addresses), _CANONICAL_STEP):
        step = addresses[start : start + _CANONICAL_STEP]
        try:
            if known.issuperset(step):
                continue
            new = [a for a in step if a not in known]
            lines = "\n".join(new)  # TypeError unless every item is a str
        except TypeError:  # an unhashable item (an endpoint object), or not a str
            return False
        if lines.count("\n") != len(new) - 1 or _CANONICAL_LINES.fullmatch(lines) is None:
            return False
        if len(known) + len(new) > _KNOWN_LIMIT:
            known.clear()
        known.update(new)
    return True


class _EndpointList(list[dict[str, Any]]):
    """A cluster's endpoints of canonical addresses, which also carries its JSON text."""

    # NOTE: with 10,000 endpoints, parsing and formatting each address, then encoding each
    # {"address", "weight"} object, was most of a compile; a batch check and a join are not.
    def __init__(self, addresses: Sequence[str], weights: Sequence[int]) -> None:
        if weights.count(1) == len(weights):  # all(w == 1 ...), as one C loop
            super().__init__([{"address": a, "weight": 1} for a in addresses])
            self.json = '[{"address":"' + '","weight":1},{"address":"'.join(addresses) + '","weight":1}]'
        else:
            super().__init__(
                [{"address": a, "weight": w} for a, w in zip(addresses, weights, strict=True)]
            )
            self.json = "[" + ",".join(
                [f'{{"address":"{a}","weight":{w}}}' for a, w in zip(addresses, weights, strict=True)]
            ) + "]"


def snapshot_json(document: dict[str, Any]) -> bytes:
    """`document` as compact UTF-8 JSON with sorted keys (what `Core.apply` takes); equal
    documents give equal bytes."""
    token = uuid.uuid4().hex
    texts: dict[str, str] = {}
    clusters = []
    for i, cluster in enumerate(document.get("clusters") or []):
        endpoints = cluster.get("endpoints")
        if isinstance(endpoints, _EndpointList):
            key = f"{token}-{i}"
            texts[f'"{key}"'] = endpoints.json
            cluster = {**cluster, "endpoints": key}
        clusters.append(cluster)
    text = json.dumps({**document, "clusters": clusters}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)
    for key, value in texts.items():
        text = text.replace(key, value, 1)
    return text.encode()


class _Snapshot:
    """Builds the snapshot's parts; clusters and service route tables are added on first use."""

    def __init__(
        self,
        cfg: MeshConfig,
        endpoints: Endpoints,
        functions: FunctionTargets | None = None,
        *,
        static_endpoints: bool = True,
    ) -> None:
        self.cfg = cfg
        self.endpoints = endpoints
        # NOTE: False for the parts that never depend on static endpoints (DNS and registry
        # targets, listener names): 10,000 of them were most of each such walk.
        self.static_endpoints = static_endpoints
        self.functions = functions if functions is not None else resolve_functions(cfg, {})[0]
        self.listeners: list[dict[str, Any]] = []
        self.tables: dict[str, dict[str, Any]] = {}
        self.clusters: dict[str, dict[str, Any]] = {}
        self.dns: list[DnsTarget] = []
        self.origins: dict[str, tuple[str, int]] = {}  # node cluster -> (node, listener port)
        self.declared: dict[str, int] = {}
        # The client policy of the backend being compiled: clusters take their TLS from the
        # first backend that reaches them (App Mesh: backend clientPolicy, else backendDefaults).
        self.client_policy: dict[str, Any] | None = None
        # The virtual service being compiled: the TLS name of a static-endpoint node (tls.py).
        self.service: str | None = None
        mesh = next(iter(cfg.of_kind("Mesh")), None)
        self.ip_preference = ((mesh.spec if mesh else {}).get("serviceDiscovery") or {}).get(
            "ipPreference"
        )
        served = (
            cfg.get("VirtualGateway", cfg.proxy.gateway)
            if cfg.proxy.gateway is not None
            else cfg.get("VirtualNode", cfg.proxy.node or "")
        )
        # App Mesh: one access log for all of the proxy's listeners (ingress and egress).
        self.access_log = access_log(served)
        if cfg.proxy.gateway is not None:
            self._gateway(served)
        else:
            self._sidecar(served)
        if cfg.of_kind("Function"):
            self._function_invoke()

    # --- clusters -------------------------------------------------------------------------

    def node_targets(self, node_name: str, port: int | None, weight: int) -> list[dict[str, Any]]:
        """Weighted route clusters of a route target: the node's cluster, or a function node's
        clusters (an alias splitting between two versions has two)."""
        node = self.cfg.get("VirtualNode", node_name)
        ref = ((node.spec if node else {}).get("serviceDiscovery") or {}).get("function")
        if ref is None:
            return [{"cluster": self.node_cluster(node_name, port), "weight": weight}]
        return self.function_clusters(ref["functionName"], ref.get("qualifier", LATEST), weight)

    def function_clusters(self, name: str, qualifier: str, weight: int) -> list[dict[str, Any]]:
        targets = self.functions.get((name, qualifier)) or []
        for t in targets:
            if t.cluster not in self.clusters:
                self.clusters[t.cluster] = cluster_document(
                    t, list(self.endpoints.get(t.cluster, []))
                )
        return weighted(targets, weight)

    def _function_invoke(self) -> None:
        """The internal listener `FunctionService.invoke` sends raw invokes to: one route per
        (function, qualifier), chosen by the `x-meshplane-function: NAME:QUALIFIER` header,
        with no retry and the function's timeout (plus a margin) as the route's."""
        routes = []
        for (name, qualifier), targets in sorted(self.functions.items()):
            if not targets:
                continue
            clusters = self.function_clusters(name, qualifier, 1)
            timeout = max(int(t.settings["timeoutMs"]) for t in targets)
            routes.append({
                "name": f"{INVOKE_TABLE}/{name}:{qualifier}",
                "match": {"headers": [{"name": TARGET_HEADER, "kind": "exact",
                                       "value": f"{name}:{qualifier}"}]},
                "action": {"clusters": clusters, "timeoutMs": timeout + 5_000},
            })
        self.tables[INVOKE_TABLE] = {
            "virtualHosts": [{"name": INVOKE_TABLE, "domains": ["*"], "routes": routes}]
        }
        self.listeners.append({"name": INVOKE_LISTENER, "address": "127.0.0.1:0",
                               "protocol": "http", "routeTable": INVOKE_TABLE})
        self.declared[INVOKE_LISTENER] = 0

    def node_cluster(self, node_name: str, port: int | None) -> str:
        node = self.cfg.get("VirtualNode", node_name)
        assert node is not None, f"validated config refers to unknown node {node_name}"
        owned = listeners(node)
        port = owned[0][0] if port is None else port
        name = node_name if len(owned) == 1 else f"{node_name}:{port}"
        if name not in self.clusters:
            lst = listener_spec(node, port)
            balancing = node.spec.get("loadBalancing") or {}
            policy = balancing.get("policy", "least_request")
            cluster: dict[str, Any] = {
                "name": name,
                "protocol": upstream_protocol(lst["portMapping"]["protocol"]),
                "lb": policy,
                "endpoints": self._endpoints(node, port, name),
                "connectTimeoutMs": CONNECT_TIMEOUT_MS,
                **cluster_fields(lst),
            }
            if policy == "least_request":
                cluster["activeRequestBias"] = float(balancing.get("activeRequestBias", 1.0))
            tls = upstream_tls(node, port, self.client_policy, self.cfg.proxy.sds, self.service)
            if tls:
                cluster["tls"] = tls
            self.clusters[name] = cluster
            self.origins[name] = (node_name, port)
        return name

    def _endpoints(self, node: Resource, port: int, cluster: str) -> list[dict[str, Any]]:
        discovery = node.spec.get("serviceDiscovery") or {}
        if "static" in discovery:
            if not self.static_endpoints:
                return []
            given = discovery["static"]["endpoints"]
            if _canonical(given):
                return _EndpointList(given, [1] * len(given))
            out = []
            for ep in given:
                if isinstance(ep, str):
                    ip, ep_port = parse_address(ep, default_port=port)
                    weight = 1
                else:
                    ip, ep_port = parse_address(ep["address"], default_port=ep.get("port", port))
                    weight = ep.get("weight", 1)
                out.append({"address": format_address(ip, ep_port), "weight": weight})
            return out
        if "dns" in discovery:
            dns = discovery["dns"]
            self.dns.append(
                DnsTarget(
                    cluster,
                    dns["hostname"],
                    port,
                    dns.get("responseType", "LOADBALANCER"),
                    dns.get("ipPreference", self.ip_preference),
                )
            )
        found = sorted(self.endpoints.get(cluster, []))
        addresses = [address for address, _ in found]
        if _canonical(addresses) and all(type(w) is int for _, w in found):
            return _EndpointList(addresses, [w for _, w in found])
        resolved = []
        for address, weight in found:
            try:
                ip, ep_port = parse_address(address)
            except ValueError as exc:
                raise ValueError(f"endpoints[{cluster!r}]: {exc}") from None
            resolved.append({"address": format_address(ip, ep_port), "weight": int(weight)})
        return resolved

    # --- services -------------------------------------------------------------------------

    def service_table(self, vs_name: str, port: int | None) -> str:
        """The route table `service/<vs>[:port]` for callers of a virtual service."""
        vs = self.cfg.get("VirtualService", vs_name)
        owned = provider_listeners(self.cfg.index, vs) if vs else []
        port = owned[0][0] if port is None and owned else port
        table = f"service/{vs_name}" if len(owned) <= 1 else f"service/{vs_name}:{port}"
        if table not in self.tables:
            routes = self.service_routes(vs, port, table) if vs and owned else []
            self.tables[table] = {
                "virtualHosts": [{"name": vs_name, "domains": ["*"], "routes": routes}]
            }
        return table

    def service_routes(self, vs: Resource, port: int | None, table: str) -> list[dict[str, Any]]:
        """The routes callers of `vs` evaluate on the provider listener `port`."""
        self.service = vs.name
        kind, name = provider(vs) or ("", "")
        if kind == "VirtualNode":
            action = {
                "clusters": self.node_targets(name, port, 1),
                "timeoutMs": DEFAULT_TIMEOUT_MS,
                "retry": retry_policy(None),
            }
            return [{"name": f"{table}/default", "match": {}, "action": action}]
        router = self.cfg.get("VirtualRouter", name)
        owned = dict(listeners(router))
        protocol = owned.get(port or 0)
        prefix = name if len(owned) == 1 else f"{name}:{port}"
        sharing = [
            s for s in self.cfg.of_kind("VirtualService") if provider(s) == ("VirtualRouter", name)
        ]
        if len(sharing) > 1:
            prefix = f"{table}/{prefix}"
        entries = []
        for route in self.cfg.children("Route", name):
            rtype = route_type(route.spec) or ""
            body = route.spec[rtype]
            if ROUTE_PROTOCOL[rtype] != protocol or (body.get("match") or {}).get("port") not in (
                None,
                port,
            ):
                continue
            clusters = [
                c
                for t in body["action"]["weightedTargets"]
                for c in self.node_targets(t["virtualNode"], t.get("port"), t["weight"])
            ]
            match = grpc_match(body["match"]) if rtype == "grpcRoute" else http_match(body["match"])
            entry = {
                "name": f"{prefix}/{route.name}",
                "match": match,
                "action": route_action(body, clusters),
            }
            entries.append((route.spec.get("priority"), entry))
        return ordered(entries)

    def tcp_targets(self, vs: Resource, port: int) -> tuple[list[dict[str, Any]], int | None]:
        """Weighted clusters and idle timeout of the first TCP route of `vs` on `port`."""
        self.service = vs.name
        kind, name = provider(vs) or ("", "")
        if kind == "VirtualNode":
            return [{"cluster": self.node_cluster(name, port), "weight": 1}], None
        candidates = [
            (
                route.spec.get("priority") is None,
                route.spec.get("priority") or 0,
                route.name,
                route.spec["tcpRoute"],
            )
            for route in self.cfg.children("Route", name)
            if "tcpRoute" in route.spec
            and (route.spec["tcpRoute"].get("match") or {}).get("port") in (None, port)
        ]
        if not candidates:
            return [], None
        body = min(candidates, key=lambda c: c[:3])[
            3
        ]  # TCP matches only a port: priority, then name
        clusters = [
            {"cluster": self.node_cluster(t["virtualNode"], t.get("port")), "weight": t["weight"]}
            for t in body["action"]["weightedTargets"]
        ]
        idle = (body.get("timeout") or {}).get("idle")
        return clusters, duration_ms(idle) if idle else None

    # --- gateway mode ---------------------------------------------------------------------

    def _gateway(self, gw: Resource | None) -> None:
        assert gw is not None, "validated config names an unknown gateway"
        protocols = dict(listeners(gw))
        several = len(protocols) > 1
        self.client_policy = (gw.spec.get("backendDefaults") or {}).get("clientPolicy")
        for planned in proxy_listeners(self.cfg):
            port, protocol = planned.port, protocols[planned.port]
            entries = []
            for route in self.cfg.children("GatewayRoute", gw.name):
                rtype = gateway_route_type(route.spec) or ""
                body = route.spec[rtype]
                if ROUTE_PROTOCOL[rtype] != protocol or body["match"].get("port") not in (
                    None,
                    port,
                ):
                    continue
                target = body["action"]["target"]
                service = target["virtualService"]["virtualServiceName"]
                action: dict[str, Any] = {
                    "routeTable": self.service_table(service, target.get("port"))
                }
                rewrite = gateway_rewrite(rtype, body, service)
                if rewrite:
                    action["rewrite"] = rewrite
                match = (
                    grpc_match(body["match"]) if rtype == "grpcRoute" else http_match(body["match"])
                )
                name = (
                    f"gateway/{gw.name}:{port}/{route.name}"
                    if several
                    else f"gateway/{gw.name}/{route.name}"
                )
                entries.append(
                    (route.spec.get("priority"), {"name": name, "match": match, "action": action})
                )
            table = f"gateway/{gw.name}/{port}"
            self.tables[table] = {
                "virtualHosts": [{"name": gw.name, "domains": ["*"], "routes": ordered(entries)}]
            }
            tls = listener_tls(listener_spec(gw, port), self.cfg.proxy.sds)
            extra = {"tls": tls} if tls else {}
            self._listener(
                planned.name, planned.address, port, protocol="http", routeTable=table, **extra
            )

    # --- sidecar mode ---------------------------------------------------------------------

    def _sidecar(self, node: Resource | None) -> None:
        assert node is not None, "validated config names an unknown node"
        for planned in proxy_listeners(self.cfg):
            if planned.role == "inbound":
                self._inbound(node, planned.name, planned.address, planned.port)
            elif planned.role == "outbound":
                self._outbound(node, planned.name, planned.address, planned.port)
            else:
                vs = self.cfg.get("VirtualService", planned.services[0])
                self.client_policy = self._client_policy(node, planned.services[0])
                clusters, idle = self.tcp_targets(vs, planned.port) if vs else ([], None)
                if clusters:  # a TCP backend whose router has no tcp route carries nothing
                    extra = {"idleTimeoutMs": idle} if idle is not None else {}
                    self._listener(
                        planned.name,
                        planned.address,
                        planned.port,
                        protocol="tcp",
                        tcpClusters=clusters,
                        **extra,
                    )

    def _inbound(self, node: Resource, name: str, address: str, port: int) -> None:
        lst = listener_spec(node, port)
        protocol = lst["portMapping"]["protocol"]
        cluster = f"local/{node.name}/{port}"
        ip, app_port = parse_address(self.cfg.proxy.app_address(port))
        self.clusters[cluster] = {
            "name": cluster,
            "protocol": upstream_protocol(protocol),
            "lb": "least_request",
            "endpoints": [{"address": format_address(ip, app_port), "weight": 1}],
            "connectTimeoutMs": CONNECT_TIMEOUT_MS,
            "circuitBreakers": circuit_breakers(lst.get("connectionPool")),
        }
        timeout = (lst.get("timeout") or {}).get(protocol) or {}
        targets = [{"cluster": cluster, "weight": 1}]
        tls = listener_tls(lst, self.cfg.proxy.sds)
        extra: dict[str, Any] = {"tls": tls} if tls else {}
        if protocol == "tcp":
            if "idle" in timeout:
                extra["idleTimeoutMs"] = duration_ms(timeout["idle"])
            self._listener(name, address, port, protocol="tcp", tcpClusters=targets, **extra)
            return
        route = {
            "name": name,
            "match": {},
            "action": route_action({"timeout": timeout}, targets, retry=False),
        }
        self.tables[name] = {"virtualHosts": [{"name": name, "domains": ["*"], "routes": [route]}]}
        self._listener(name, address, port, protocol="http", routeTable=name, **extra)

    def _outbound(self, node: Resource, name: str, address: str, port: int) -> None:
        hosts = []
        for vs_name in dict.fromkeys(backends(node)):
            vs = self.cfg.get("VirtualService", vs_name)
            if vs is None:
                continue
            self.client_policy = self._client_policy(node, vs_name)
            owned = provider_listeners(self.cfg.index, vs)
            for svc_port, protocol in owned:
                if protocol == "tcp":
                    continue
                table = f"service/{vs_name}" if len(owned) == 1 else f"service/{vs_name}:{svc_port}"
                routes = [
                    {**r, "name": f"outbound/{r['name']}"}
                    for r in self.service_routes(vs, svc_port, table)
                ]
                single = len(owned) == 1
                domains = (
                    [vs_name, f"{vs_name}:{svc_port}"] if single else [f"{vs_name}:{svc_port}"]
                )
                hosts.append(
                    {
                        "name": vs_name if single else f"{vs_name}:{svc_port}",
                        "domains": domains,
                        "routes": routes,
                    }
                )
        self.tables[name] = {"virtualHosts": hosts}
        self._listener(name, address, port, protocol="http", routeTable=name)

    @staticmethod
    def _client_policy(node: Resource, vs_name: str) -> dict[str, Any] | None:
        """A backend's own clientPolicy, else the node's backendDefaults (App Mesh)."""
        for backend in node.spec.get("backends") or []:
            service = backend["virtualService"]
            if service["virtualServiceName"] == vs_name and service.get("clientPolicy"):
                return dict(service["clientPolicy"])
        return (node.spec.get("backendDefaults") or {}).get("clientPolicy")

    def _listener(self, name: str, address: str, declared: int, **fields: Any) -> None:
        if self.access_log is not None:
            fields["accessLog"] = dict(self.access_log)
        proxy = self.cfg.proxy
        if proxy.request_headers_timeout_ms is not None:
            fields["requestHeadersTimeoutMs"] = proxy.request_headers_timeout_ms
        if proxy.backlog is not None:
            fields["backlog"] = proxy.backlog
        self.listeners.append({"name": name, "address": address, **fields})
        self.declared[name] = declared
