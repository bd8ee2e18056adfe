"""Builders for meshplane.config tests: small valid configs to change one field at a time."""

from __future__ import annotations

from typing import Any

import pytest
from meshplane.config import from_dict
from meshplane.errors import ConfigError, Problem


def node(
    name: str,
    port: int = 8080,
    protocol: str = "http",
    endpoints: list[Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "kind": "VirtualNode",
        "name": name,
        "spec": {
            "listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
            "serviceDiscovery": {"static": {"endpoints": endpoints or ["127.0.0.1:9001"]}},
            **spec,
        },
    }


def service(
    name: str, *, router: str | None = None, node_name: str | None = None
) -> dict[str, Any]:
    provider = (
        {"virtualRouter": {"virtualRouterName": router}}
        if router
        else {"virtualNode": {"virtualNodeName": node_name}}
    )
    return {"kind": "VirtualService", "name": name, "spec": {"provider": provider}}


def router(name: str, port: int = 8080, protocol: str = "http") -> dict[str, Any]:
    return {
        "kind": "VirtualRouter",
        "name": name,
        "spec": {"listeners": [{"portMapping": {"port": port, "protocol": protocol}}]},
    }


def route(
    name: str,
    router_name: str,
    body: dict[str, Any],
    rtype: str = "httpRoute",
    priority: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {rtype: body}
    if priority is not None:
        spec["priority"] = priority
    return {"kind": "Route", "name": name, "virtualRouterName": router_name, "spec": spec}


def http_route(
    prefix: str = "/", targets: list[tuple[str, int]] | None = None, **extra: Any
) -> dict[str, Any]:
    targets = targets or [("v1", 1)]
    return {
        "match": {"prefix": prefix},
        "action": {"weightedTargets": [{"virtualNode": n, "weight": w} for n, w in targets]},
        **extra,
    }


def gateway_route(
    name: str,
    target: str,
    match: dict[str, Any] | None = None,
    rtype: str = "httpRoute",
    rewrite: dict[str, Any] | None = None,
    priority: int | None = None,
    gateway: str = "edge",
) -> dict[str, Any]:
    action: dict[str, Any] = {"target": {"virtualService": {"virtualServiceName": target}}}
    if rewrite is not None:
        action["rewrite"] = rewrite
    spec: dict[str, Any] = {
        rtype: {"match": match if match is not None else {"prefix": "/"}, "action": action}
    }
    if priority is not None:
        spec["priority"] = priority
    return {"kind": "GatewayRoute", "name": name, "virtualGatewayName": gateway, "spec": spec}


def gateway_doc() -> dict[str, Any]:
    """Gateway "edge" -> svc.local (router "r": one route to node v1)."""
    return {
        "mesh": "demo",
        "proxy": {"gateway": "edge", "bind": "127.0.0.1"},
        "resources": [
            {
                "kind": "VirtualGateway",
                "name": "edge",
                "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
            },
            gateway_route("all", "svc.local"),
            service("svc.local", router="r"),
            router("r"),
            route("default", "r", http_route()),
            node("v1"),
        ],
    }


def sidecar_doc() -> dict[str, Any]:
    """Node "web" (listener 8080, app on 9080) calling svc.local (router "r" -> v1)."""
    return {
        "mesh": "demo",
        "proxy": {"node": "web", "bind": "127.0.0.1", "app": "127.0.0.1:9080"},
        "resources": [
            node("web", backends=[{"virtualService": {"virtualServiceName": "svc.local"}}]),
            service("svc.local", router="r"),
            router("r"),
            route("default", "r", http_route()),
            node("v1"),
        ],
    }


def find(doc: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    return next(r for r in doc["resources"] if r["kind"] == kind and r["name"] == name)


def problems_of(doc: dict[str, Any], source: str = "mesh.yaml") -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        from_dict(doc, source)
    return info.value.problems
