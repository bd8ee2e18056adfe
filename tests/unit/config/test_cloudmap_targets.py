"""`cloud_map_targets`: which clusters resolve against the registry, with what selection."""

from __future__ import annotations

from meshplane.config import CloudMapTarget, cloud_map_targets, from_dict


def node(name: str, discovery: dict, ports: tuple[int, ...] = (8080,)) -> dict:
    return {"kind": "VirtualNode", "name": name, "spec": {
        "listeners": [{"portMapping": {"port": p, "protocol": "http"}} for p in ports],
        "serviceDiscovery": discovery}}


def test_targets_carry_namespace_service_attributes_port_and_ip_preference() -> None:
    cfg = from_dict({"mesh": "m", "proxy": {"gateway": "edge", "store": "etcd://10.0.0.1:2379"}, "resources": [
        {"kind": "Mesh", "name": "m", "spec": {"serviceDiscovery": {"ipPreference": "IPv6_PREFERRED"}}},
        {"kind": "VirtualGateway", "name": "edge",
         "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
        {"kind": "GatewayRoute", "name": "a", "virtualGatewayName": "edge", "spec": {"httpRoute": {
            "match": {"prefix": "/a"}, "action": {"target": {"virtualService": {"virtualServiceName": "a.local"}}}}}},
        {"kind": "GatewayRoute", "name": "b", "virtualGatewayName": "edge", "spec": {"httpRoute": {
            "match": {"prefix": "/b"}, "action": {"target": {"virtualService": {"virtualServiceName": "b.local"}}}}}},
        {"kind": "VirtualService", "name": "a.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "a"}}}},
        {"kind": "VirtualService", "name": "b.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "b"}}}},
        node("a", {"awsCloudMap": {"namespaceName": "apps.local", "serviceName": "api-1.5",
                                   "attributes": [{"key": "ECS_TASK_DEFINITION_FAMILY", "value": "v2"}]}}),
        node("b", {"static": {"endpoints": ["127.0.0.1:9"]}}),
    ]})
    assert cfg.proxy.store == "etcd://10.0.0.1:2379"
    assert cfg.proxy.to_native()["store"] == "etcd://10.0.0.1:2379"
    assert cloud_map_targets(cfg) == [CloudMapTarget(
        "a", "a", "apps.local", "api-1.5", (("ECS_TASK_DEFINITION_FAMILY", "v2"),), 8080, "IPv6_PREFERRED")]


def test_a_proxy_store_that_is_not_a_string_is_a_problem() -> None:
    import pytest
    from meshplane.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        from_dict({"mesh": "m", "proxy": {"gateway": "edge", "store": 5}, "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}]}, "f.yaml")
    assert any(p.field == "proxy.store" and p.file == "f.yaml" for p in info.value.problems)


def test_proxy_register_section() -> None:
    import pytest
    from meshplane.errors import ConfigError

    base = {"mesh": "m", "resources": [node("a", {"awsCloudMap": {"namespaceName": "ns", "serviceName": "a"}})]}
    sidecar = {"node": "a", "app": "127.0.0.1:9000"}
    cfg = from_dict({**base, "proxy": {**sidecar, "register": True}})
    assert cfg.proxy.register is True and cfg.proxy.to_native()["register"] is True
    cfg = from_dict({**base, "proxy": {**sidecar, "register": {"address": "10.0.0.7", "ttl": 5,
                                                                    "attributes": {"zone": "a"}}}})
    assert cfg.proxy.register == {"address": "10.0.0.7", "ttl": 5, "attributes": {"zone": "a"}}
    assert from_dict({**base, "proxy": {**sidecar, "register": False}}).proxy.register is None
    with pytest.raises(ConfigError) as info:
        from_dict({**base, "proxy": {**sidecar, "register": {"ttl": 0, "idd": "x"}}}, "f.yaml")
    fields = {p.field for p in info.value.problems}
    assert "proxy.register.ttl" in fields and "proxy.register.idd" in fields
