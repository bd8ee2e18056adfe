"""Sidecar mode end to end: two meshplane proxies, each serving one virtual node.

    client ──► web's sidecar, outbound listener (Host: checkout.apps.local)
                 └─ routes of checkout-router ──► checkout's sidecar, inbound listener
                                                     └─► the checkout application

The applications are real HTTP servers (hypercorn); ports are bound on 0 and read back, and
readiness is awaited, never slept for.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane import Proxy

from .asgi import lifespan, serve_asgi

pytestmark = pytest.mark.e2e


def app_named(name: str) -> Any:
    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        body = json.dumps({"app": name, "path": scope["path"], "host": headers.get("host"),
                           "xff": headers.get("x-forwarded-for"),
                           "request_id": headers.get("x-request-id")}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    return app


async def start_app(nursery: trio.Nursery, name: str) -> int:
    return await serve_asgi(nursery, app_named(name))


def resources(checkout_inbound: int) -> list[dict[str, Any]]:
    return [
        {"kind": "VirtualNode", "name": "web", "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"static": {"endpoints": ["127.0.0.1:1"]}},
            "backends": [{"virtualService": {"virtualServiceName": "checkout.apps.local"}}]}},
        {"kind": "VirtualService", "name": "checkout.apps.local",
         "spec": {"provider": {"virtualRouter": {"virtualRouterName": "checkout-router"}}}},
        {"kind": "VirtualRouter", "name": "checkout-router",
         "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
        {"kind": "Route", "name": "api", "virtualRouterName": "checkout-router", "spec": {
            "httpRoute": {"match": {"prefix": "/api/"},
                          "action": {"weightedTargets": [{"virtualNode": "checkout", "weight": 1}]}}}},
        {"kind": "VirtualNode", "name": "checkout", "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"static": {"endpoints": [f"127.0.0.1:{checkout_inbound}"]}}}},
    ]


async def test_outbound_routes_by_service_name_to_the_callee_sidecar_and_its_app(
    nursery: trio.Nursery,
) -> None:
    checkout_app = await start_app(nursery, "checkout")
    # The checkout sidecar binds its inbound listener on an ephemeral port; the web sidecar's
    # view of the mesh then lists that address as checkout's endpoint.
    checkout_side = {"mesh": "m", "resources": resources(1), "proxy": {
        "node": "checkout", "bind": "127.0.0.1", "app": f"127.0.0.1:{checkout_app}",
        "ports": {8080: 0}, "outbound": "127.0.0.1:0"}}
    async with Proxy(checkout_side, admin="127.0.0.1:0") as checkout:
        checkout_inbound = checkout.ports["inbound/checkout/8080"]
        web_side = {"mesh": "m", "resources": resources(checkout_inbound), "proxy": {
            "node": "web", "bind": "127.0.0.1", "app": "127.0.0.1:9",
            "ports": {8080: 0}, "outbound": "127.0.0.1:0"}}
        async with Proxy(web_side, admin="127.0.0.1:0") as web:
            await exercise(web.ports["outbound/web"])
            web_stats = web.stats()
        checkout_stats = checkout.stats()
    assert web_stats["clusters"]["checkout"]["rq_2xx"] == 2
    assert checkout_stats["listeners"]["inbound/checkout/8080"]["rq_2xx"] == 2


async def exercise(outbound: int) -> None:
    """Requests as the web application makes them: to its sidecar's outbound listener."""
    async with httpx.AsyncClient() as client:
        # The application calls its dependency by virtual service name, through its sidecar.
        r = await client.get(f"http://127.0.0.1:{outbound}/api/cart",
                             headers={"host": "checkout.apps.local"})
        assert r.status_code == 200, r.text
        seen = r.json()
        assert seen["app"] == "checkout"
        assert seen["path"] == "/api/cart"
        assert seen["host"] == "checkout.apps.local"
        assert seen["request_id"]  # generated at the first hop, kept at the second
        # Host with the router listener's port selects the same virtual host.
        r = await client.get(f"http://127.0.0.1:{outbound}/api/x",
                             headers={"host": "checkout.apps.local:8080"})
        assert r.status_code == 200 and r.json()["app"] == "checkout"
        # No route on the service for this path; an unknown service has no virtual host.
        assert (await client.get(f"http://127.0.0.1:{outbound}/other",
                                 headers={"host": "checkout.apps.local"})).status_code == 404
        assert (await client.get(f"http://127.0.0.1:{outbound}/api/x",
                                 headers={"host": "unknown.apps.local"})).status_code == 404
