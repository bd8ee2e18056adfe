"""The async registry API (`meshplane.registry`) on both stores."""

from __future__ import annotations

import pytest
import trio
from meshplane.registry import Registry, RegistryError
from meshplane.store import Store

V1 = {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "8080", "ECS_TASK_DEFINITION_FAMILY": "v1"}
V2 = {"AWS_INSTANCE_IPV4": "10.0.0.2", "AWS_INSTANCE_PORT": "8080", "ECS_TASK_DEFINITION_FAMILY": "v2"}


async def test_register_discover_deregister(store: Store) -> None:
    registry = Registry(store)
    await registry.register("apps.local", "color", "i-1", V1)
    await registry.register("apps.local", "color", "i/2:x", V2)  # ids may hold / and :
    await registry.register("other.local", "api-1.5", "a", {"AWS_INSTANCE_IPV4": "10.1.0.1"})
    assert await registry.namespaces() == ["apps.local", "other.local"]
    assert await registry.services() == [("apps.local", "color"), ("other.local", "api-1.5")]
    found, rev1 = await registry.discover("apps.local", "color", query={"ECS_TASK_DEFINITION_FAMILY": "v2"})
    assert [i.id for i in found] == ["i/2:x"]
    await registry.deregister("apps.local", "color", "i/2:x")
    found, rev2 = await registry.discover("apps.local", "color")
    assert [i.id for i in found] == ["i-1"] and rev2 > rev1
    with pytest.raises(RegistryError) as info:
        await registry.deregister("apps.local", "color", "i/2:x")
    assert info.value.code == "InstanceNotFound"
    with pytest.raises(RegistryError) as info:
        await registry.discover("apps.local", "nope")
    assert info.value.code == "ServiceNotFound"
    with pytest.raises(RegistryError) as info:
        await registry.discover("nope.local", "color")
    assert info.value.code == "NamespaceNotFound"


async def test_custom_health_and_fallback(store: Store) -> None:
    registry = Registry(store)
    await registry.register("ns", "svc", "a", V1)
    await registry.register("ns", "svc", "b", {**V2, "AWS_INIT_HEALTH_STATUS": "UNHEALTHY"})
    healthy, _ = await registry.discover("ns", "svc")
    assert [i.id for i in healthy] == ["a"]
    await registry.set_health("ns", "svc", "a", "UNHEALTHY")
    assert (await registry.discover("ns", "svc"))[0] == []
    either, _ = await registry.discover("ns", "svc", health_status="HEALTHY_OR_ELSE_ALL")
    assert [i.id for i in either] == ["a", "b"]
    # Re-registering keeps the health it had.
    await registry.register("ns", "svc", "a", V1)
    unhealthy, _ = await registry.discover("ns", "svc", health_status="UNHEALTHY")
    assert [i.id for i in unhealthy] == ["a", "b"]


async def test_bad_input_is_refused_with_cloud_map_codes(store: Store) -> None:
    registry = Registry(store)
    for attrs in ({}, {"AWS_INSTANCE_IPV4": "not-an-ip"}, {**V1, "AWS_INSTANCE_PORT": "0"}):
        with pytest.raises(RegistryError) as info:
            await registry.register("ns", "svc", "a", attrs)
        assert info.value.code == "InvalidInput"
    with pytest.raises(RegistryError):
        await registry.register("ns", "svc", "bad id!", V1)
    with pytest.raises(RegistryError):
        await registry.set_health("ns", "svc", "a", "SICK")


async def test_ttl_registration_lives_while_kept_alive_and_goes_when_left(store: Store) -> None:
    registry = Registry(store)
    async with registry.registered("ns", "leased", "alive", V1, ttl=1) as reg:
        assert reg.lease != 0
        _, start = await registry.instances("ns", "leased")
        # The lease is alive and renewable while the block runs.
        for _ in range(3):
            assert await registry.keepalive(reg.lease)
        found, _ = await registry.discover("ns", "leased")
        assert [i.id for i in found] == ["alive"]
    # Leaving the block deregisters at once.
    assert (await registry.instances("ns", "leased"))[0] == []

    # A registration nobody keeps alive disappears when its lease expires.
    await registry.register("ns", "leased", "orphan", V2, ttl=1)
    _, rev = await registry.instances("ns", "leased")
    with trio.fail_after(20):
        async for _ in registry.watch("ns", "leased", rev):
            if not (await registry.instances("ns", "leased"))[0]:
                break
    assert (await registry.instances("ns", "leased"))[0] == []
