"""The native meshplane file: YAML and JSON, defaults, errors, and the to_native round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from meshplane.config import (
    MeshConfig,
    ProxySettings,
    Resource,
    from_dict,
    import_resources,
    load_file,
    load_text,
    to_native,
)
from meshplane.errors import ConfigError

from .builders import gateway_doc, sidecar_doc


def test_yaml_and_json_load_the_same_model(tmp_path: Path) -> None:
    doc = gateway_doc()
    doc["proxy"]["ports"] = {8080: 18080}
    as_yaml, as_json = tmp_path / "mesh.yaml", tmp_path / "mesh.json"
    as_yaml.write_text(yaml.safe_dump(doc))
    as_json.write_text(json.dumps(doc))  # JSON turns the port keys into strings
    a, b = load_file(as_yaml), load_file(str(as_json))
    assert a.resources == b.resources and a.proxy == b.proxy and a.mesh == b.mesh == "demo"
    assert a.proxy.ports == {8080: 18080}
    assert a.source == str(as_yaml)


def test_defaults_of_the_proxy_section() -> None:
    cfg = from_dict({**gateway_doc(), "proxy": {"gateway": "edge"}})
    assert cfg.proxy == ProxySettings(gateway="edge")
    assert cfg.proxy.admin == "127.0.0.1:9901" and cfg.proxy.bind == "0.0.0.0"
    assert cfg.proxy.bound_port(8080) == 8080
    side = from_dict(sidecar_doc()).proxy
    assert side.outbound_address() == "127.0.0.1:15001"
    assert side.app_address(8080) == "127.0.0.1:9080"
    assert ProxySettings(node="n", app={8080: "127.0.0.1:1"}).app_address(9090) == "127.0.0.1:9090"


def test_model_lookups() -> None:
    cfg = from_dict(gateway_doc())
    assert isinstance(cfg, MeshConfig)
    assert cfg.get("VirtualNode", "v1") == Resource("VirtualNode", "v1", cfg.resources[-1].spec)
    assert [r.name for r in cfg.children("Route", "r")] == ["default"]
    assert cfg.get("Route", "default", "r") is not None and cfg.get("Route", "default") is None
    assert cfg.get("Route", "default", "r").label == 'Route "default" (VirtualRouter "r")'  # type: ignore[union-attr]


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_text("mesh: demo\nproxy: {gateway: edge\nresources: []\n", "bad.yaml")
    (problem,) = info.value.problems
    assert problem.file == "bad.yaml"
    assert problem.message.startswith("invalid YAML at line 3, column")


def test_json_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        load_text('{"mesh": "demo",\n "proxy": {"gateway": "edge"}', "bad.json")
    assert info.value.problems[0].message.startswith("invalid JSON at line 2, column 30")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(info.value)


def test_other_shapes_are_pointed_to_import() -> None:
    with pytest.raises(ConfigError) as info:
        load_text('{"virtualNode": {"virtualNodeName": "n", "spec": {}}}', "node.json")
    assert "App Mesh JSON" in str(info.value) and "meshplane import" in str(info.value)


def test_to_native_round_trip(tmp_path: Path) -> None:
    cfg = from_dict(gateway_doc())
    assert from_dict(cfg.to_native()) == MeshConfig(cfg.mesh, cfg.proxy, cfg.resources, "<dict>")
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(gateway_doc()))
    resources = import_resources(path)
    doc = to_native(resources, "demo", gateway="edge", bind="127.0.0.1", ports={8080: 0})
    assert doc["proxy"] == {"gateway": "edge", "bind": "127.0.0.1", "ports": {8080: 0}}
    again = from_dict(yaml.safe_load(yaml.safe_dump(doc)))
    assert again.resources == cfg.resources


def test_to_native_keeps_one_mesh_and_refuses_unknown_proxy_keys() -> None:
    resources = [
        Resource("Mesh", "old", {"egressFilter": {"type": "ALLOW_ALL"}}),
        Resource("VirtualNode", "n", {}),
    ]
    doc = to_native(resources, "new", node="n")
    assert doc["resources"][0] == {
        "kind": "Mesh",
        "name": "new",
        "spec": {"egressFilter": {"type": "ALLOW_ALL"}},
    }
    two = to_native([*resources, Resource("Mesh", "other", {})], "other", node="n")
    assert [r["name"] for r in two["resources"] if r["kind"] == "Mesh"] == ["other"]
    with pytest.raises(TypeError):
        to_native(resources, "m", node="n", prots={})


def test_input_is_not_shared_with_the_model() -> None:
    doc = gateway_doc()
    cfg = from_dict(doc)
    doc["resources"][-1]["spec"]["listeners"][0]["portMapping"]["port"] = 1
    assert cfg.get("VirtualNode", "v1").spec["listeners"][0]["portMapping"]["port"] == 8080  # type: ignore[union-attr]
