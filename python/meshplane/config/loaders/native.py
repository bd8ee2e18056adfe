"""The meshplane file (`mesh`, `proxy`, `resources`): dict -> MeshConfig, and resources -> dict.

`from_dict` checks the file's own structure, builds the model and validates it, raising one
ConfigError with every problem. `to_native` is its inverse for imported resources (what
`meshplane import` writes).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshplane.config.model import KINDS, PARENT_KEY, MeshConfig, ProxySettings, Resource
from meshplane.config.schema import (
    Bool,
    Either,
    Int,
    Issue,
    ListOf,
    NameMap,
    Num,
    Obj,
    PortMap,
    Str,
    check,
    port_key,
    show,
    suggest,
)
from meshplane.config.specs import NAME, PROPAGATION
from meshplane.config.validate import validate_config, validate_resources
from meshplane.errors import ConfigError, Problem

_ADDRESS = Str(1, None)
_PATH = Str(1, None)
# Where SDS secret names resolve to PEM files (docs/tls.md): a directory of <name>/cert.pem,
# key.pem, ca.pem, and/or explicit files per name.
SDS_MAPPING = Obj(
    {
        "secretsDir": _PATH,
        "secrets": NameMap(Obj({"certificateChain": _PATH, "privateKey": _PATH, "trust": _PATH})),
    }
)


class _CollectorUrl(Str):
    """An OTLP/HTTP collector's base URL, http or https (the core POSTs to `{url}/v1/traces`)."""

    def describe(self) -> str:
        return "an http:// or https:// URL such as http://127.0.0.1:4318"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:
        ok = isinstance(value, str) and any(
            value.startswith(scheme) and len(value) > len(scheme) for scheme in ("http://", "https://")
        )
        if not ok:
            self.mismatch(value, path, out)


# Distributed tracing (docs/config.md, "Tracing").
TRACING = Obj(
    {
        "otlpEndpoint": _CollectorUrl(),
        # TLS to an https:// collector: the CAs its certificate must chain to (default: the
        # system's bundle) and a client certificate for mutual TLS.
        "otlpTls": Obj({
            "trust": _PATH,
            "certificate": Obj({"certificateChain*": _PATH, "privateKey*": _PATH}),
        }),
        "samplingPercent": Num(0, 100),
        "propagation": PROPAGATION,
        "keepErrors": Bool(),
        "serviceName": Str(1, 255),
        "maxQueueSpans": Int(1, 1_000_000),
        "maxBatchSpans": Int(1, 100_000),
        "exportTimeoutMs": Int(1, 600_000),
        "recentSpans": Int(0, 100_000),
    }
)
PROXY = Obj(
    {
        "gateway": NAME,
        "node": NAME,
        "admin": _ADDRESS,
        "bind": _ADDRESS,
        "ports": PortMap(Int(0, 65535)),
        "app": Either((str, _ADDRESS), (dict, PortMap(_ADDRESS))),
        "outbound": _ADDRESS,
        "sds": SDS_MAPPING,
        # Every listener of this proxy (docs/config.md): Envoy's request_headers_timeout, and
        # the listen(2) backlog.
        "requestHeadersTimeoutMs": Int(1, 3_600_000),
        "backlog": Int(1, 65535),
        "store": _ADDRESS,
        "tracing": TRACING,
        # Register this proxy in the registry while it serves (docs/registry.md): true, or
        # what to register instead of the served node's awsCloudMap defaults.
        "register": Either(
            (bool, Bool()),
            (dict, Obj({
                "namespace": Str(1, 1024),
                "service": Str(1, 1024),
                "id": Str(1, 64),
                "address": _ADDRESS,
                "attributes": NameMap(Str(0, 1024)),
                "ttl": Int(1, 3600),
            })),
        ),
    }
)
_ANY_OBJECT = Obj({})
FILE = Obj({"mesh*": NAME, "proxy*": PROXY, "resources*": ListOf(_ANY_OBJECT)})
_ENTRY_KEYS = ("kind", "name", "spec", *PARENT_KEY.values())


@dataclass
class Imported:
    """App Mesh resources read from one or more files, with where each came from.

    `origins[i]` is the file `resources[i]` was read from; `meshes` lists each mesh name the
    files give (a Mesh resource, `meshName`, `MeshName`, `meshRef`) with where; `problems` refuse
    the import, `warnings` do not (fields dropped as Kubernetes would); `skipped` lists the files
    of a directory that hold no App Mesh resource."""

    resources: list[Resource] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    meshes: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, resource: Resource, origin: str) -> None:
        self.resources.append(resource)
        self.origins.append(origin)

    def mesh_names(self) -> list[str]:
        return sorted({name for name, _ in self.meshes})


def from_dict(doc: Any, source: str = "<dict>") -> MeshConfig:
    """Build and validate a MeshConfig from a parsed meshplane file; ConfigError lists every problem."""
    if not isinstance(doc, dict):
        raise ConfigError(
            [Problem(source, "", "", "expected a mapping with keys mesh, proxy, resources")]
        )
    shallow = {**doc, "resources": []} if isinstance(doc.get("resources"), list) else doc
    issues = check(FILE, shallow, "")  # entries are checked one by one below
    problems = [Problem(source, "", f, m) for f, m in issues]
    resources: list[Resource] = []
    entries = doc.get("resources")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        resource, entry_problems = parse_entry(entry, i, source)
        problems += entry_problems
        if resource is not None:
            resources.append(resource)
    if any(f in ("mesh", "proxy", "proxy.gateway", "proxy.node") for f, _ in issues):
        # No model without a mesh and a proxy target; the resources are still checked.
        raise ConfigError(problems + validate_resources(resources, source))
    bad = {f for f, _ in issues}
    cfg = MeshConfig(doc["mesh"], _proxy(doc["proxy"], bad), tuple(resources), source)
    problems += validate_config(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def parse_entry(entry: Any, index: int, source: str) -> tuple[Resource | None, list[Problem]]:
    where = f"resources[{index}]"
    if not isinstance(entry, dict):
        return None, [Problem(source, "", where, "expected an object with kind, name and spec")]
    raw_kind, name = entry.get("kind"), entry.get("name")
    kind = raw_kind if isinstance(raw_kind, str) and raw_kind in KINDS else None
    label = f'{kind} "{name}"' if kind and isinstance(name, str) else where
    issues: list[Issue] = []
    if kind is None:
        hint = suggest(raw_kind, list(KINDS)) if isinstance(raw_kind, str) else ""
        issues.append(("kind", f"expected one of {', '.join(KINDS)}, got {show(raw_kind)}{hint}"))
    if not isinstance(name, str) or not name:
        issues.append(("name", f"expected a non-empty string, got {show(name)}"))
    allowed = ("kind", "name", "spec", *([PARENT_KEY[kind]] if kind in PARENT_KEY else []))
    for key in entry:
        if key not in allowed:
            hint = suggest(str(key), list(allowed))
            issues.append(
                (
                    str(key),
                    f"unknown field{hint or ' (expected one of: ' + ', '.join(allowed) + ')'}",
                )
            )
    parent = None
    if kind in PARENT_KEY:
        parent = entry.get(PARENT_KEY[kind])
        if not isinstance(parent, str) or not parent:
            issues.append(
                (PARENT_KEY[kind], f"required: the name of the {kind}'s parent, got {show(parent)}")
            )
            parent = None
    spec = entry.get("spec", {})
    if not isinstance(spec, dict):
        issues.append(("spec", "expected an object"))
    if issues:
        return None, [Problem(source, label, f, m) for f, m in issues]
    return Resource(str(kind), str(name), copy.deepcopy(spec), parent), []


def _proxy(doc: dict[str, Any], bad: set[str]) -> ProxySettings:
    """ProxySettings from a `proxy` section; values already reported (`bad`) fall back to their
    defaults so that the rest is still checked."""

    def ok(key: str) -> bool:
        return key in doc and not any(
            f == f"proxy.{key}" or f.startswith(f"proxy.{key}.") for f in bad
        )

    app = doc["app"] if ok("app") else None
    if isinstance(app, dict):
        app = {port_key(k): v for k, v in app.items()}
    ports = {port_key(k): v for k, v in doc["ports"].items()} if ok("ports") else {}
    return ProxySettings(
        gateway=doc.get("gateway"),
        node=doc.get("node"),
        admin=doc["admin"] if ok("admin") else ProxySettings.admin,
        bind=doc["bind"] if ok("bind") else ProxySettings.bind,
        ports=ports,  # type: ignore[arg-type]
        app=app,
        outbound=doc["outbound"] if ok("outbound") else None,
        sds=doc["sds"] if ok("sds") else None,
        request_headers_timeout_ms=(
            doc["requestHeadersTimeoutMs"] if ok("requestHeadersTimeoutMs") else None
        ),
        backlog=doc["backlog"] if ok("backlog") else None,
        store=doc["store"] if ok("store") else None,
        register=doc["register"] if ok("register") and doc["register"] is not False else None,
        tracing=doc["tracing"] if ok("tracing") else None,
    )


_PROXY_KEYS = (
    "admin", "bind", "ports", "app", "outbound", "sds", "requestHeadersTimeoutMs", "backlog",
    "store", "register", "tracing",
)


def to_native(
    resources: Sequence[Resource],
    mesh: str,
    *,
    gateway: str | None = None,
    node: str | None = None,
    **proxy: Any,
) -> dict[str, Any]:
    """A meshplane file (as a dict) serving `gateway` or `node` with these resources.

    `proxy` takes the other `proxy` keys (admin, bind, ports, app, outbound, sds, store, register). A Mesh resource
    named differently is renamed to `mesh` when it is the only one, else dropped, so the file
    describes one mesh.
    """
    unknown = sorted(set(proxy) - set(_PROXY_KEYS))
    if unknown:
        raise TypeError(f"to_native() got unexpected proxy keys: {', '.join(unknown)}")
    section: dict[str, Any] = {}
    if gateway is not None:
        section["gateway"] = gateway
    if node is not None:
        section["node"] = node
    section.update({k: copy.deepcopy(proxy[k]) for k in _PROXY_KEYS if k in proxy})
    meshes = [r for r in resources if r.kind == "Mesh"]
    out: list[dict[str, Any]] = []
    for r in resources:
        if r.kind == "Mesh" and r.name != mesh:
            if len(meshes) != 1:
                continue
            r = Resource("Mesh", mesh, r.spec)
        out.append(copy.deepcopy(r.to_native()))
    return {"mesh": mesh, "proxy": section, "resources": out}
