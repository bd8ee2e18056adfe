"""meshplane.registry: a service registry in Cloud Map's manner, on a `meshplane.store`.

    from meshplane.registry import open_registry

    async with open_registry("etcd://10.0.0.5:2379") as registry:
        await registry.register("apps.local", "checkout", "task-1",
                                {"AWS_INSTANCE_IPV4": "10.0.1.7", "AWS_INSTANCE_PORT": "8080"})
        found, revision = await registry.discover("apps.local", "checkout",
                                                  query={"ECS_TASK_DEFINITION_FAMILY": "v2"})

Namespaces hold services, services hold instances with attributes and a custom health status
(HEALTHY | UNHEALTHY); an instance registered with a TTL lives on a store lease. `model` has the
pure semantics (DiscoverInstances filtering, App Mesh's endpoint choice), `Registry` the
operations. docs/registry.md describes both. Imports trio and `meshplane.store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from meshplane.registry._registry import DEFAULT_ROOT, Registration, Registry
from meshplane.registry.model import Instance, RegistryError, discover, endpoints
from meshplane.store import open_store

__all__ = [
    "DEFAULT_ROOT",
    "Instance",
    "Registration",
    "Registry",
    "RegistryError",
    "discover",
    "endpoints",
    "open_registry",
]


@asynccontextmanager
async def open_registry(store_url: str | None = None) -> AsyncIterator[Registry]:
    """The registry in the store `store_url` names (None: MESHPLANE_STORE, else the embedded
    default); the store is closed when the block ends."""
    async with open_store(store_url) as store:
        yield Registry(store)
