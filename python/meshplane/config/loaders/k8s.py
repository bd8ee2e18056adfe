"""Kubernetes custom resources of the App Mesh controller (`appmesh.k8s.aws/v1beta2`, and the
legacy `v1beta1` best-effort), usually mixed with other Kubernetes objects, which are ignored.

v1beta2 names follow the controller: `spec.awsName`, else `<name>_<namespace>` (VirtualService:
`<name>.<namespace>`, Mesh: `<name>`). References (`virtualNodeRef: {name, namespace}`, default
namespace = the referring object's) resolve to the same names; `*ARN` references to the ARN's
last segment. Routes come out of `VirtualRouter.spec.routes[]`. A GatewayRoute joins the
VirtualGateway whose selectors match it, or the only gateway read. Controller-only keys
(podSelector, meshRef, ...) are dropped and k8s spellings renamed (hostName, certificateARN).
A VirtualNode's `backendGroups` expand into backends from the BackendGroup objects read; a
v1beta1 router without listeners takes its first target node's first listener. `read` takes
the documents of several files at once (references resolve across them) and, unless strict,
prunes spec fields the schema does not know, as the API server does, with a warning each.
"""

from __future__ import annotations

import copy
from typing import Any

from meshplane.config.loaders.native import Imported
from meshplane.config.model import Resource
from meshplane.config.schema import prune, suggest
from meshplane.config.specs import SPEC_OF_KIND
from meshplane.errors import Problem

GROUP = "appmesh.k8s.aws/"
KINDS = ("Mesh", "VirtualNode", "VirtualService", "VirtualRouter", "VirtualGateway", "GatewayRoute")
DROPPED = (
    "awsName",
    "podSelector",
    "meshRef",
    "namespaceSelector",
    "gatewayRouteSelector",
    "virtualGatewayRef",
    "serviceAccountName",
    "meshName",
    "routes",
)
RENAMED = {
    "hostName": "hostname",
    "certificateARN": "certificateArn",
    "certificateAuthorityARNs": "certificateAuthorityArns",
}
# reference key -> (referenced kind, key it becomes)
REFS = {
    "virtualServiceRef": ("VirtualService", "virtualServiceName"),
    "virtualServiceARN": ("VirtualService", "virtualServiceName"),
    "virtualRouterRef": ("VirtualRouter", "virtualRouterName"),
    "virtualRouterARN": ("VirtualRouter", "virtualRouterName"),
    "virtualNodeRef": ("VirtualNode", "virtualNodeName"),
    "virtualNodeARN": ("VirtualNode", "virtualNodeName"),
}


def _dict(value: Any) -> dict[Any, Any]:
    """`value` if it is a mapping, else {}: a wrong type is the validator's to report, so the
    loader reads past it rather than crash on it."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def is_k8s(docs: list[Any]) -> bool:
    return any(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs)


class _Objects:
    """The App Mesh objects of the file and the names App Mesh knows them by."""

    def __init__(self, docs: list[Any]) -> None:
        self.objects = [
            d
            for d in docs
            if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith(GROUP)
        ]
        self.namespace_labels = {
            _meta(d, "name"): _dict(_dict(d.get("metadata")).get("labels"))
            for d in docs
            if isinstance(d, dict) and d.get("kind") == "Namespace"
        }
        self.by_key = {(str(d.get("kind")), _namespace(d), _meta(d, "name")): d for d in self.objects}

    def aws_name(self, obj: dict[str, Any]) -> str:
        spec = _dict(obj.get("spec"))
        if spec.get("awsName"):
            return str(spec["awsName"])
        return default_name(str(obj.get("kind")), _meta(obj, "name"), _namespace(obj))

    def ref(self, kind: str, ref: Any, namespace: str) -> str:
        if isinstance(ref, str):  # an ARN: arn:aws:appmesh:...:mesh/m/virtualNode/name
            return ref.rsplit("/", 1)[-1]
        name = str(_dict(ref).get("name", ""))
        ns = str(_dict(ref).get("namespace") or namespace)
        obj = self.by_key.get((kind, ns, name))
        return self.aws_name(obj) if obj is not None else default_name(kind, name, ns)


def default_name(kind: str, name: str, namespace: str) -> str:
    if kind == "Mesh":
        return name
    return f"{name}.{namespace}" if kind == "VirtualService" else f"{name}_{namespace}"


def _meta(obj: dict[str, Any], key: str) -> str:
    return str(_dict(obj.get("metadata")).get(key, ""))


def _namespace(obj: dict[str, Any]) -> str:
    return _meta(obj, "namespace") or "default"


def load(docs: list[Any], source: str) -> tuple[list[Resource], list[Problem]]:
    """The App Mesh resources of one file's documents, unpruned; `read` reads several files."""
    found = Imported()
    read(docs, [source] * len(docs), found, strict=True)
    return found.resources, found.problems


def read(docs: list[Any], sources: list[str], found: Imported, *, strict: bool = False) -> None:
    """Add the App Mesh resources of `docs` (from one or several files: `sources[i]` is where
    `docs[i]` was read) to `found`. References resolve across all of them. Unless `strict`, spec
    fields the CRD schema does not know are dropped with a warning each, as the API server
    prunes them; `strict` keeps them for validation to refuse."""
    objs = _Objects(docs)
    where = {id(d): s for d, s in zip(docs, sources, strict=True)}
    legacy_routers: set[str] = set()
    for obj in objs.objects:
        kind, version = obj.get("kind"), str(obj.get("apiVersion"))[len(GROUP) :]
        source = where.get(id(obj), sources[0] if sources else "<string>")
        if kind == "BackendGroup":
            continue  # expanded into the backends of the nodes that name it
        if kind not in KINDS:
            found.problems.append(
                Problem(
                    source,
                    f'{kind} "{_meta(obj, "name")}"',
                    "kind",
                    f"not an App Mesh resource kind the importer knows (expected one of "
                    f"{', '.join((*KINDS, 'BackendGroup'))})",
                )
            )
            continue
        if not isinstance(obj.get("spec", {}), dict):
            found.problems.append(
                Problem(source, f'{kind} "{_meta(obj, "name")}"', "spec", "expected an object")
            )
            continue
        mesh = _mesh_of(obj, version)
        if mesh:
            found.meshes.append((mesh, f'{source}: {kind} "{_meta(obj, "name")}"'))
        if version == "v1beta1":
            made = _legacy(obj)
            legacy_routers |= {
                r.name for r in made if r.kind == "VirtualRouter" and not r.spec.get("listeners")
            }
            paths = ["spec"] * len(made)
        else:
            made, paths = _current(obj, objs, source, found.problems)
        for resource, path in zip(made, paths, strict=True):
            if not strict:
                resource = _pruned(resource, path, source, found)
            found.add(resource, source)
    _infer_legacy_listeners(found, legacy_routers)


def _mesh_of(obj: dict[str, Any], version: str) -> str | None:
    """The mesh an object names: a Mesh its own name, v1beta2 `meshRef`, v1beta1 `meshName`."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Mesh":
        return str(spec.get("awsName") or _meta(obj, "name")) or None
    ref = spec.get("meshRef") if version != "v1beta1" else None
    if isinstance(ref, dict) and ref.get("name"):
        return str(ref["name"])
    name = spec.get("meshName")
    return str(name) if isinstance(name, str) and name else None


def _pruned(resource: Resource, path: str, source: str, found: Imported) -> Resource:
    spec, dropped = prune(SPEC_OF_KIND[resource.kind], resource.spec, path)
    for field in dropped:
        found.warnings.append(
            Problem(
                source,
                resource.label,
                field,
                "dropped: the CRD schema has no such field, so Kubernetes pruned it "
                "(--strict refuses it instead)",
            )
        )
    return Resource(resource.kind, resource.name, spec, resource.parent) if dropped else resource


def _infer_legacy_listeners(found: Imported, routers: set[str]) -> None:
    """The v1beta1 controller gave a router without listeners the first listener of the node its
    first route's first target names."""
    for i, router in enumerate(found.resources):
        if router.kind != "VirtualRouter" or router.name not in routers:
            continue
        routes = [r for r in found.resources if r.kind == "Route" and r.parent == router.name]
        target = next(
            (
                t.get("virtualNode")
                for r in routes
                for rtype in ("httpRoute", "http2Route", "grpcRoute", "tcpRoute")
                for t in ((r.spec.get(rtype) or {}).get("action") or {}).get("weightedTargets")
                or []
                if isinstance(t, dict)
            ),
            None,
        )
        node = next(
            (r for r in found.resources if r.kind == "VirtualNode" and r.name == target), None
        )
        listeners = (node.spec.get("listeners") or []) if node is not None else []
        if listeners and isinstance(listeners[0], dict) and "portMapping" in listeners[0]:
            spec = {**router.spec, "listeners": [{"portMapping": listeners[0]["portMapping"]}]}
            found.resources[i] = Resource("VirtualRouter", router.name, spec)


def _current(
    obj: dict[str, Any], objs: _Objects, source: str, problems: list[Problem]
) -> tuple[list[Resource], list[str]]:
    """The resources of one v1beta2 object and the field path each spec came from."""
    kind, ns, spec = str(obj["kind"]), _namespace(obj), _dict(obj.get("spec"))
    name = objs.aws_name(obj)
    if kind == "VirtualNode" and "backendGroups" in spec:
        spec = _with_backend_groups(obj, objs, source, problems)
    out = [
        Resource(
            kind,
            name,
            _convert(spec, objs, ns),
            _gateway_of(obj, objs) if kind == "GatewayRoute" else None,
        )
    ]
    paths = ["spec"]
    if kind == "VirtualRouter":
        for i, route in enumerate(_list(spec.get("routes"))):
            if isinstance(route, dict):
                body = {k: v for k, v in route.items() if k != "name"}
                out.append(
                    Resource("Route", str(route.get("name", "")), _convert(body, objs, ns), name)
                )
                paths.append(f"spec.routes[{i}]")
    return out, paths


def _with_backend_groups(
    node: dict[str, Any], objs: _Objects, source: str, problems: list[Problem]
) -> dict[str, Any]:
    """The node's spec with each BackendGroup it names expanded into `backends`, as the
    controller did: a group lists virtual services (`virtualservices: [{name, namespace}]`);
    the group name "*" stands for every VirtualService of its namespace."""
    spec = {k: v for k, v in (node.get("spec") or {}).items() if k != "backendGroups"}
    backends = list(spec.get("backends") or [])
    ns = _namespace(node)
    seen = {
        objs.ref("VirtualService", (b.get("virtualService") or {}).get("virtualServiceRef"), ns)
        for b in backends
        if isinstance(b, dict) and isinstance(b.get("virtualService"), dict)
    }
    groups = (node.get("spec") or {}).get("backendGroups")
    if not isinstance(groups, list):
        problems.append(
            Problem(
                source,
                f'VirtualNode "{objs.aws_name(node)}"',
                "spec.backendGroups",
                "expected a list of {name, namespace} naming BackendGroups",
            )
        )
        groups = []
    for i, ref in enumerate(groups):
        if not isinstance(ref, dict) or not ref.get("name"):
            problems.append(
                Problem(
                    source,
                    f'VirtualNode "{objs.aws_name(node)}"',
                    f"spec.backendGroups[{i}]",
                    "expected {name, namespace} naming a BackendGroup",
                )
            )
            continue
        group_ns = str(ref.get("namespace") or ns)
        if ref["name"] == "*":
            members = [
                {"name": _meta(o, "name"), "namespace": group_ns}
                for o in objs.objects
                if o.get("kind") == "VirtualService" and _namespace(o) == group_ns
            ]
        else:
            wanted = f"{group_ns}/{ref['name']}"
            group = objs.by_key.get(("BackendGroup", group_ns, str(ref["name"])))
            if group is None:
                known = [
                    f"{_namespace(o)}/{_meta(o, 'name')}"
                    for o in objs.objects
                    if o.get("kind") == "BackendGroup"
                ]
                problems.append(
                    Problem(
                        source,
                        f'VirtualNode "{objs.aws_name(node)}"',
                        f"spec.backendGroups[{i}]",
                        f'no BackendGroup "{wanted}" in the imported files{suggest(wanted, known)}',
                    )
                )
                continue
            gspec = group.get("spec") or {}
            listed = gspec.get("virtualservices") or gspec.get("virtualServices") or []
            members = [
                {"name": str(m.get("name", "")), "namespace": str(m.get("namespace") or group_ns)}
                for m in listed
                if isinstance(m, dict)
            ]
        for member in members:
            vs = objs.ref("VirtualService", member, group_ns)
            if vs not in seen:
                seen.add(vs)
                backends.append({"virtualService": {"virtualServiceRef": member}})
    spec["backends"] = backends
    return spec


def _convert(value: Any, objs: _Objects, ns: str, in_targets: bool = False) -> Any:
    """A CRD spec in App Mesh's shape: refs resolved, controller keys dropped, keys renamed."""
    if isinstance(value, list):
        return [_convert(v, objs, ns, in_targets) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for raw_key, item in value.items():
        key = str(raw_key)
        if key in DROPPED:
            continue
        if key in REFS:
            kind, new_key = REFS[key]
            if in_targets and kind == "VirtualNode":
                new_key = "virtualNode"  # weightedTargets[] name the node as `virtualNode`
            out[new_key] = objs.ref(kind, item, ns)
        else:
            out[RENAMED.get(key, key)] = _convert(item, objs, ns, key == "weightedTargets")
    return out


def _gateway_of(route: dict[str, Any], objs: _Objects) -> str | None:
    spec = _dict(route.get("spec"))
    if spec.get("virtualGatewayRef"):
        return objs.ref("VirtualGateway", spec["virtualGatewayRef"], _namespace(route))
    gateways = [o for o in objs.objects if o.get("kind") == "VirtualGateway"]
    ns_labels = objs.namespace_labels.get(_namespace(route))
    route_labels = _dict(_dict(route.get("metadata")).get("labels"))
    matching = [
        g
        for g in gateways
        if ns_labels is not None
        and _selects(_dict(g.get("spec")).get("namespaceSelector"), ns_labels)
        and _selects(_dict(g.get("spec")).get("gatewayRouteSelector", {}), route_labels)
    ]
    chosen = matching if matching else gateways
    return objs.aws_name(chosen[0]) if len(chosen) == 1 else None


def _selects(selector: Any, labels: dict[str, Any]) -> bool:
    """Label-selector semantics: absent selects nothing, empty selects all (matchLabels only)."""
    if selector is None:
        return False
    wanted = _dict(_dict(selector).get("matchLabels"))
    return all(str(labels.get(k)) == str(v) for k, v in wanted.items())


# --- v1beta1 (legacy controller) ------------------------------------------------------------


def _legacy_name(name: str, namespace: str) -> str:
    """The legacy controller's names for nodes, routers and routes: "foo" -> "foo-<ns>",
    "foo.other" -> "foo-other"."""
    return name.replace(".", "-") if "." in name else f"{name}-{namespace}"


def _legacy(obj: dict[str, Any]) -> list[Resource]:
    kind, ns, name = str(obj["kind"]), _namespace(obj), _meta(obj, "name")
    spec = {k: v for k, v in _dict(obj.get("spec")).items() if k != "meshName"}
    if kind == "Mesh":
        return [Resource("Mesh", name, {k: v for k, v in spec.items() if k == "egressFilter"})]
    if kind == "VirtualNode":
        discovery = spec.get("serviceDiscovery")
        if isinstance(discovery, dict):
            discovery = {("awsCloudMap" if k == "cloudMap" else k): v for k, v in discovery.items()}
            spec["serviceDiscovery"] = discovery
        return [Resource("VirtualNode", _legacy_name(name, ns), _convert_legacy(spec))]
    if kind != "VirtualService":
        return []
    router_spec = _dict(spec.get("virtualRouter"))
    router = _legacy_name(str(router_spec.get("name") or name), ns)
    out = [
        Resource(
            "VirtualService", name, {"provider": {"virtualRouter": {"virtualRouterName": router}}}
        ),
        Resource("VirtualRouter", router, {k: v for k, v in router_spec.items() if k != "name"}),
    ]
    types = {"http": "httpRoute", "http2": "http2Route", "grpc": "grpcRoute", "tcp": "tcpRoute"}
    for route in _list(spec.get("routes")):
        if not isinstance(route, dict):
            continue
        body: dict[str, Any] = {
            (types[k] if k in types else k): copy.deepcopy(v) for k, v in route.items() if k != "name"
        }
        for rtype in types.values():
            for target in _list(_dict(_dict(body.get(rtype)).get("action")).get("weightedTargets")):
                if isinstance(target, dict) and "virtualNodeName" in target:
                    node = str(target.pop("virtualNodeName"))
                    # The legacy controller namespaced http and tcp targets only; http2 and grpc
                    # manifests spell the App Mesh name out ("red-<ns>").
                    target["virtualNode"] = (
                        _legacy_name(node, ns) if rtype in ("httpRoute", "tcpRoute") else node
                    )
        out.append(Resource("Route", _legacy_name(str(route.get("name", "")), ns), body, router))
    return out


def _convert_legacy(value: Any) -> Any:
    if isinstance(value, list):
        return [_convert_legacy(v) for v in value]
    if isinstance(value, dict):
        return {RENAMED.get(k, k): _convert_legacy(v) for k, v in value.items()}
    return value
