"""Fixtures for the functions end-to-end tests: a gateway config whose route leads to a
function-discovered virtual node, written with its code into the test's directory, and a
store of its own per test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ..common import e2e_marker
from .handlers import write_code

HERE = Path(__file__).parent
pytest_collection_modifyitems = e2e_marker(HERE)


def mesh_doc(spec: dict[str, Any], qualifier: str | None = None,
             route: dict[str, Any] | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"functionName": "fn"}
    if qualifier:
        ref["qualifier"] = qualifier
    return {
        "mesh": "fnmesh",
        "proxy": {"gateway": "edge", "bind": "127.0.0.1", "ports": {8080: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge",
             "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {
                 "target": {"virtualService": {"virtualServiceName": "fn.local"}}}}}},
            {"kind": "VirtualService", "name": "fn.local",
             "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}},
            {"kind": "VirtualRouter", "name": "r",
             "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}},
            {"kind": "Route", "name": "default", "virtualRouterName": "r",
             "spec": {"httpRoute": route or {
                 "match": {"prefix": "/"},
                 "action": {"weightedTargets": [{"virtualNode": "fn-node", "weight": 1}]}}}},
            {"kind": "VirtualNode", "name": "fn-node",
             "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                      "serviceDiscovery": {"function": ref}}},
            {"kind": "Function", "name": "fn",
             "spec": {"code": {"path": "./code"}, "timeout": {"unit": "s", "value": 10},
                      **spec}},
        ],
    }


@pytest.fixture
def deploy(tmp_path: Path) -> Callable[..., Path]:
    """`deploy(spec, qualifier=None)` writes the function's code and mesh.yaml; returns the
    config's path (the store is `store_url`)."""

    def write(spec: dict[str, Any], qualifier: str | None = None, **kw: Any) -> Path:
        write_code(tmp_path)
        path = tmp_path / "mesh.yaml"
        path.write_text(json.dumps(mesh_doc(spec, qualifier, **kw), indent=1))
        return path

    return write


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'store.db'}"
