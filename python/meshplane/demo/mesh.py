"""The demo's mesh: a gateway, a canary router and two versions of one service.

    client ──► VirtualGateway "edge" (http, ephemeral port)
                 └ GatewayRoute "checkout" (prefix /) ──► VirtualService checkout.demo.local
                      └ VirtualRouter "checkout-router"
                           ├ Route "canary-header": header x-canary: true ──► checkout-v2
                           └ Route "split": 90 ──► checkout-v1, 10 ──► checkout-v2

Pure: builds the native config dict (docs/config.md) from the upstreams' bound ports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["GATEWAY_PORT", "SERVICE", "demo_config"]

SERVICE = "checkout.demo.local"
GATEWAY_PORT = 8080
APP_PORT = 8080


def _node(name: str, ports: Sequence[int]) -> dict[str, Any]:
    return {
        "kind": "VirtualNode",
        "name": name,
        "spec": {
            "listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}],
            "serviceDiscovery": {
                "static": {"endpoints": [f"127.0.0.1:{port}" for port in ports]}
            },
        },
    }


def _route(name: str, priority: int, match: dict[str, Any], targets: dict[str, int]) -> dict[str, Any]:
    return {
        "kind": "Route",
        "name": name,
        "virtualRouterName": "checkout-router",
        "spec": {
            "priority": priority,
            "httpRoute": {
                "match": match,
                "action": {"weightedTargets": [
                    {"virtualNode": node, "weight": weight} for node, weight in targets.items()
                ]},
            },
        },
    }


def demo_config(
    v1_ports: Sequence[int], v2_ports: Sequence[int], *, canary_weight: int = 10
) -> dict[str, Any]:
    """The native config of the demo gateway, its listener on an ephemeral port."""
    return {
        "mesh": "demo",
        "proxy": {"gateway": "edge", "ports": {GATEWAY_PORT: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge", "spec": {
                "listeners": [{"portMapping": {"port": GATEWAY_PORT, "protocol": "http"}}],
            }},
            {"kind": "GatewayRoute", "name": "checkout", "virtualGatewayName": "edge", "spec": {
                "httpRoute": {
                    "match": {"prefix": "/"},
                    "action": {"target": {"virtualService": {"virtualServiceName": SERVICE}}},
                },
            }},
            {"kind": "VirtualService", "name": SERVICE, "spec": {
                "provider": {"virtualRouter": {"virtualRouterName": "checkout-router"}},
            }},
            {"kind": "VirtualRouter", "name": "checkout-router", "spec": {
                "listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}],
            }},
            _route("canary-header", 0,
                   {"prefix": "/", "headers": [{"name": "x-canary", "match": {"exact": "true"}}]},
                   {"checkout-v2": 1}),
            _route("split", 10, {"prefix": "/"},
                   {"checkout-v1": 100 - canary_weight, "checkout-v2": canary_weight}),
            _node("checkout-v1", v1_ports),
            _node("checkout-v2", v2_ports),
        ],
    }
