"""AWS CLI / API JSON: describe-* envelopes, create-* inputs, bare `{"spec": ...}`, or lists.

The kind comes from the envelope key (`{"virtualNode": {...}}`), else from the `*Name` keys
(`routeName` => Route), else from the spec's shape, with the file name as a tie-breaker
(`colorteller-vg.json`). A resource without a name takes the file's stem, as the walkthroughs
passed names on the command line.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from meshplane.config.model import PARENT_KEY, Resource
from meshplane.config.schema import suggest
from meshplane.errors import Problem

ENVELOPE = {
    "mesh": "Mesh",
    "virtualService": "VirtualService",
    "virtualRouter": "VirtualRouter",
    "route": "Route",
    "virtualNode": "VirtualNode",
    "virtualGateway": "VirtualGateway",
    "gatewayRoute": "GatewayRoute",
}
# Most specific first: a Route input also carries virtualRouterName.
NAME_KEYS = (
    ("gatewayRouteName", "GatewayRoute"),
    ("routeName", "Route"),
    ("virtualNodeName", "VirtualNode"),
    ("virtualServiceName", "VirtualService"),
    ("virtualGatewayName", "VirtualGateway"),
    ("virtualRouterName", "VirtualRouter"),
    ("meshName", "Mesh"),
)
NAME_KEY_OF = {kind: key for key, kind in NAME_KEYS}
# describe-* output and create-* input keys that carry nothing the data plane needs.
IGNORED = ("meshName", "meshOwner", "resourceOwner", "metadata", "status", "clientToken", "tags")
FILE_HINTS = {
    "vn": "VirtualNode",
    "node": "VirtualNode",
    "vr": "VirtualRouter",
    "router": "VirtualRouter",
    "vs": "VirtualService",
    "service": "VirtualService",
    "vg": "VirtualGateway",
    "vgw": "VirtualGateway",
    "gw": "VirtualGateway",
    "gateway": "VirtualGateway",
    "route": "Route",
    "gwroute": "GatewayRoute",
    "gatewayroute": "GatewayRoute",
}


def load(docs: list[Any], source: str) -> tuple[list[Resource], list[Problem]]:
    items: list[Any] = []
    for doc in docs:
        items.extend(doc if isinstance(doc, list) else [doc])
    stem = PurePath(source).name.split(".")[0]
    resources: list[Resource] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        where = f"[{i}]" if len(items) > 1 else ""
        default_name = stem if len(items) == 1 else f"{stem}-{i}"
        resource, issues = _resource(item, default_name, stem)
        label = resource.label if resource else ""
        problems += [
            Problem(source, label, ".".join(filter(None, (where, f))), m) for f, m in issues
        ]
        if resource is not None:
            resources.append(resource)
    return resources, problems


def _resource(
    item: Any, default_name: str, stem: str
) -> tuple[Resource | None, list[tuple[str, str]]]:
    if not isinstance(item, dict):
        return None, [("", "expected an App Mesh resource object")]
    kind: str | None = None
    if (
        len(item) == 1
        and next(iter(item)) in ENVELOPE
        and isinstance(next(iter(item.values())), dict)
    ):
        key = next(iter(item))
        kind, item = ENVELOPE[key], item[key]
    kind = (
        kind
        or next((k for key, k in NAME_KEYS if key in item), None)
        or infer_kind(item.get("spec"), stem)
    )
    if kind is None:
        return None, [
            (
                "",
                "cannot tell which App Mesh resource this is: expected a describe-* envelope "
                '(e.g. {"virtualNode": {...}}), a *Name key (e.g. "virtualNodeName") or a spec',
            )
        ]
    issues: list[tuple[str, str]] = []
    allowed = {
        "spec",
        NAME_KEY_OF[kind],
        *IGNORED,
        *([PARENT_KEY[kind]] if kind in PARENT_KEY else []),
    }
    for key in item:
        if key not in allowed:
            issues.append((str(key), f"unknown field{suggest(str(key), sorted(allowed))}"))
    name = item.get(NAME_KEY_OF[kind], default_name)
    parent = item.get(PARENT_KEY[kind]) if kind in PARENT_KEY else None
    spec = item.get("spec", {})
    if not isinstance(name, str) or not isinstance(spec, dict):
        return None, [
            *issues,
            (
                "spec" if isinstance(name, str) else NAME_KEY_OF[kind],
                "expected a string name and an object spec",
            ),
        ]
    return Resource(kind, name, spec, parent if isinstance(parent, str) else None), issues


def infer_kind(spec: Any, stem: str) -> str | None:
    """The kind of a bare spec, from its keys; the file name decides between look-alikes."""
    if not isinstance(spec, dict):
        return None
    hint = next((FILE_HINTS[t] for t in re.split(r"[-_.]", stem.lower()) if t in FILE_HINTS), None)
    routes = [
        spec[k]
        for k in ("httpRoute", "http2Route", "grpcRoute", "tcpRoute")
        if isinstance(spec.get(k), dict)
    ]
    if routes:
        gateway = any(isinstance(r.get("action"), dict) and "target" in r["action"] for r in routes)
        return "GatewayRoute" if gateway else "Route"
    if "provider" in spec:
        return "VirtualService"
    discovery = spec.get("serviceDiscovery")
    if "backends" in spec or (
        isinstance(discovery, dict) and set(discovery) & {"dns", "awsCloudMap", "static"}
    ):
        return "VirtualNode"
    if "egressFilter" in spec or ("serviceDiscovery" in spec and not spec.get("listeners")):
        return "Mesh"
    listeners = spec.get("listeners")
    if isinstance(listeners, list):
        keys = {k for lst in listeners if isinstance(lst, dict) for k in lst}
        if keys & {"outlierDetection", "timeout"}:
            return "VirtualNode"
        if hint in ("VirtualGateway", "VirtualRouter", "VirtualNode"):
            return hint
        return "VirtualRouter" if keys <= {"portMapping"} else "VirtualGateway"
    return hint


def mesh_names(docs: list[Any]) -> list[str]:
    """The `meshName` values of the items (describe-* output and create-* input carry it)."""
    names = []
    for doc in docs:
        for item in doc if isinstance(doc, list) else [doc]:
            if isinstance(item, dict) and len(item) == 1 and next(iter(item)) in ENVELOPE:
                item = next(iter(item.values()))
            name = item.get("meshName") if isinstance(item, dict) else None
            if isinstance(name, str) and name:
                names.append(name)
    return names
