"""Cloud Map's DiscoverInstances filtering and App Mesh's endpoint choice against a small model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from meshplane.registry.model import Instance, discover, endpoints

KEYS = st.sampled_from(["family", "az", "stage"])
VALUES = st.sampled_from(["a", "b", "c"])
ATTRS = st.dictionaries(KEYS, VALUES, max_size=3)
HEALTH = st.sampled_from(["HEALTHY", "UNHEALTHY"])


@st.composite
def instance_sets(draw: st.DrawFn) -> list[Instance]:
    n = draw(st.integers(0, 8))
    out = []
    for i in range(n):
        attrs = {**draw(ATTRS), "AWS_INSTANCE_IPV4": f"10.0.0.{i + 1}"}
        out.append(Instance("ns", "svc", f"i-{i}", attrs, draw(HEALTH)))
    return out


def model_select(instances: list[Instance], query: dict[str, str], health: str) -> set[str]:
    """The reference: written from the spec's sentences, one at a time."""
    matching = [i for i in instances if all(k in i.attributes and i.attributes[k] == v
                                            for k, v in query.items())]
    healthy = [i for i in matching if i.health == "HEALTHY"]
    if health == "HEALTHY":
        chosen = healthy
    elif health == "UNHEALTHY":
        chosen = [i for i in matching if i.health == "UNHEALTHY"]
    elif health == "ALL":
        chosen = matching
    else:  # HEALTHY_OR_ELSE_ALL: fail open
        chosen = healthy if healthy else matching
    return {i.id for i in chosen}


@given(instance_sets(), ATTRS, st.sampled_from(["HEALTHY", "UNHEALTHY", "ALL", "HEALTHY_OR_ELSE_ALL"]))
def test_discover_matches_the_model(instances: list[Instance], query: dict[str, str], health: str) -> None:
    got = discover(instances, query=query, health_status=health)
    assert {i.id for i in got} == model_select(instances, query, health)
    assert [i.id for i in got] == sorted(i.id for i in got)


@given(instance_sets(), ATTRS, ATTRS)
def test_optional_parameters_only_narrow_when_something_matches(
    instances: list[Instance], query: dict[str, str], optional: dict[str, str]
) -> None:
    base = {i.id for i in discover(instances, query=query, health_status="ALL")}
    narrowed = {i.id for i in discover(instances, query={**query, **optional}, health_status="ALL")}
    got = {i.id for i in discover(instances, query=query, optional=optional, health_status="ALL")}
    assert got == ((base & narrowed) or base)


@given(instance_sets(), ATTRS)
def test_node_endpoints_are_matching_healthy_instances_else_all(
    instances: list[Instance], attributes: dict[str, str]
) -> None:
    got = endpoints(instances, attributes=attributes, port=8080)
    expected = model_select(instances, attributes, "HEALTHY_OR_ELSE_ALL")
    by_id = {i.id: i for i in instances}
    assert got == sorted((f"{by_id[i].attributes['AWS_INSTANCE_IPV4']}:8080", 1) for i in expected)
    if any(i.health == "HEALTHY" for i in instances if i.id in model_select(instances, attributes, "ALL")):
        assert all(by_id[i].health == "HEALTHY" for i in expected)


def test_ip_preference_and_instance_port() -> None:
    both = Instance("ns", "s", "a", {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_IPV6": "fd00::1",
                                     "AWS_INSTANCE_PORT": "9000"})
    v6 = Instance("ns", "s", "b", {"AWS_INSTANCE_IPV6": "fd00::2"})
    assert endpoints([both, v6], attributes={}, port=80) == [("10.0.0.1:9000", 1), ("[fd00::2]:80", 1)]
    assert endpoints([both, v6], attributes={}, port=80, ip_preference="IPv6_PREFERRED") == [
        ("[fd00::1]:9000", 1), ("[fd00::2]:80", 1)]
    assert endpoints([both, v6], attributes={}, port=80, ip_preference="IPv4_ONLY") == [("10.0.0.1:9000", 1)]
