"""A small mesh for the lifecycle tests: gateway `edge` -> router `web-router` -> route `web`
with weighted targets over nodes `v1` and `v2`, each a static endpoint (a real upstream that
answers its own name, or 500 when told to fail)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from ..asgi import lifespan

MESH = "shop"
GATEWAY = {"gateway": "edge", "bind": "127.0.0.1", "ports": {8080: 0}}


def app(name: str, status: int = 200) -> Any:
    async def serve(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"app": name}).encode()})
    return serve


def node(name: str, port: int) -> dict[str, Any]:
    return {"kind": "VirtualNode", "name": name, "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"static": {"endpoints": [f"127.0.0.1:{port}"]}}}}


def mesh(ports: dict[str, int], weights: dict[str, int], *, gateway: bool = True) -> dict[str, Any]:
    """The version document: `weights` node -> weight on route `web`."""
    resources: list[dict[str, Any]] = [
        {"kind": "VirtualService", "name": "web.shop.local",
         "spec": {"provider": {"virtualRouter": {"virtualRouterName": "web-router"}}}},
        {"kind": "VirtualRouter", "name": "web-router",
         "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
        {"kind": "Route", "name": "web", "virtualRouterName": "web-router", "spec": {
            "httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [
                {"virtualNode": n, "weight": w} for n, w in weights.items()]}}}},
        *(node(n, p) for n, p in ports.items()),
    ]
    if gateway:
        resources += [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge", "spec": {
                "httpRoute": {"match": {"prefix": "/"},
                              "action": {"target": {"virtualService": {
                                  "virtualServiceName": "web.shop.local"}}}}}},
        ]
    return {"mesh": MESH, "resources": resources}


def file_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` as a meshplane file (what `meshplane apply FILE` reads)."""
    return {**doc, "proxy": dict(GATEWAY)}


async def who(client: httpx.AsyncClient, port: int) -> str:
    r = await client.get(f"http://127.0.0.1:{port}/")
    return str(r.json()["app"]) if r.status_code == 200 else str(r.status_code)
