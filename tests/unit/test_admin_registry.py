"""The registry's `/clusters` lines and `/stats` metrics, from a `CloudMapDiscovery.status()`."""

from __future__ import annotations

from meshplane.admin.registry import registry_json, registry_lines, registry_metrics

STATUS = {
    "store": "etcd://10.0.0.5:2379", "connected": False, "disconnected_since": 0.0,
    "last_error": "store etcd://10.0.0.5:2379: unreachable (refused)", "updates": 3,
    "clusters": {
        "blue": {"node": "blue", "namespace": "apps.local", "service": "color",
                 "attributes": {"version": "blue"}, "instances": 2, "endpoints": 0},
    },
}


def test_lines_name_the_store_state_and_an_empty_node() -> None:
    lines = registry_lines({"registry": STATUS})
    assert lines[:4] == [
        "registry::store::etcd://10.0.0.5:2379",
        "registry::state::disconnected",
        "registry::disconnected_since::1970-01-01T00:00:00.000+00:00",
        "registry::last_error::store etcd://10.0.0.5:2379: unreachable (refused)",
    ]
    assert "blue::registry::attributes::version=blue" in lines
    assert "blue::registry::no_instances::virtual node blue: no instance of apps.local/color matches" in lines
    assert registry_lines({}) == [] and registry_metrics({}) == "" and registry_json({}) is None


def test_metrics_and_json() -> None:
    text = registry_metrics({"registry": STATUS})
    assert 'meshplane_registry_connected{store="etcd://10.0.0.5:2379"} 0' in text
    assert 'meshplane_registry_endpoints{cluster="blue"} 0' in text
    assert 'meshplane_registry_updates_total{store="etcd://10.0.0.5:2379"} 3' in text
    doc = registry_json({"registry": STATUS})
    assert doc is not None and doc["disconnected_since_iso"].startswith("1970-01-01T00:00:00")
