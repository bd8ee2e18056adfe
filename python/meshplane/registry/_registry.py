"""`Registry`: Cloud Map's operations on a `meshplane.store.Store`.

Layout under `root` (default `/meshplane/registry/`), every name percent-encoded so that a `/` in
an instance id cannot cross a level:

    ns/<namespace>                       {"Name", "Type": "HTTP", "CreatedAt"}
    svc/<namespace>/<service>            {"Name", "NamespaceName", "CreatedAt"}
    inst/<namespace>/<service>/<id>      the instance (model.Instance.to_json), on its lease if any

Namespaces and services are created by the first registration in them (Cloud Map needs
CreateNamespace/CreateService first; a registry that has to be bootstrapped per service is a
chore on one machine) and stay when their last instance goes. Health changes are
compare-and-swap updates, so a concurrent re-registration is never overwritten by a stale copy.
Imports trio, `meshplane.store` and `registry.model`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote

import trio

from meshplane.registry.model import (
    HEALTH_STATUSES,
    INIT_HEALTH,
    Instance,
    RegistryError,
    discover,
    validate_attributes,
    validate_instance_id,
    validate_name,
)
from meshplane.store import Store, StoreError

__all__ = ["DEFAULT_ROOT", "Registration", "Registry"]

DEFAULT_ROOT = "/meshplane/registry/"
_CAS_ATTEMPTS = 20
_DECODE_INLINE_MAX = 500


def _q(name: str) -> str:
    return quote(name, safe="")


@dataclass(frozen=True)
class Registration:
    """A registered instance and the lease that carries it (0 = none)."""

    instance: Instance
    lease: int = 0
    revision: int = 0


class Registry:
    """The service registry in `store`; every method raises `StoreUnavailable` when the store
    cannot be reached and `RegistryError` (with Cloud Map's error code) for a bad request."""

    def __init__(self, store: Store, *, root: str = DEFAULT_ROOT) -> None:
        self.store = store
        self.root = root
        self._known: set[str] = set()  # namespace/service keys known to exist

    # -- keys ------------------------------------------------------------------------------

    def _ns_key(self, namespace: str) -> str:
        return f"{self.root}ns/{_q(namespace)}"

    def _svc_key(self, namespace: str, service: str) -> str:
        return f"{self.root}svc/{_q(namespace)}/{_q(service)}"

    def instances_prefix(self, namespace: str | None = None, service: str | None = None) -> str:
        prefix = f"{self.root}inst/"
        if namespace is not None:
            prefix += f"{_q(namespace)}/"
            if service is not None:
                prefix += f"{_q(service)}/"
        return prefix

    def _inst_key(self, namespace: str, service: str, instance_id: str) -> str:
        return self.instances_prefix(namespace, service) + _q(instance_id)

    # -- writes ----------------------------------------------------------------------------

    async def _ensure(self, key: str, doc: dict[str, object]) -> None:
        if key in self._known:
            return
        if await self.store.get(key) is None:
            await self.store.put_if(key, json.dumps(doc).encode(), mod_revision=0)
        self._known.add(key)

    async def create_namespace(self, namespace: str) -> None:
        validate_name("namespace", namespace)
        await self._ensure(self._ns_key(namespace),
                           {"Name": namespace, "Type": "HTTP", "CreatedAt": time.time()})

    async def create_service(self, namespace: str, service: str) -> None:
        await self.create_namespace(namespace)
        validate_name("service", service)
        await self._ensure(self._svc_key(namespace, service),
                           {"Name": service, "NamespaceName": namespace, "CreatedAt": time.time()})

    async def register(
        self,
        namespace: str,
        service: str,
        instance_id: str,
        attributes: Mapping[str, str],
        *,
        ttl: float | None = None,
    ) -> Registration:
        """RegisterInstance: create or replace the instance. With `ttl` (seconds) it lives on a
        lease that the caller must keep alive (`keepalive`, or use `registered`). A new
        instance starts HEALTHY unless `AWS_INIT_HEALTH_STATUS` says UNHEALTHY; a
        re-registered one keeps its health unless that attribute is given."""
        validate_instance_id(instance_id)
        attrs = validate_attributes(attributes)
        if ttl is not None and ttl <= 0:
            raise RegistryError("InvalidInput", f"TTL must be positive, got {ttl}")
        await self.create_service(namespace, service)
        key = self._inst_key(namespace, service, instance_id)
        previous = await self.store.get(key)
        health = attrs.get(INIT_HEALTH) or (
            Instance.from_json(json.loads(previous.value)).health if previous else "HEALTHY")
        instance = Instance(namespace, service, instance_id, attrs, health, ttl, time.time())
        lease = await self.store.grant_lease(ttl) if ttl is not None else 0
        revision = await self.store.put(key, json.dumps(instance.to_json()).encode(), lease=lease)
        if previous is not None and previous.lease and previous.lease != lease:
            # The old lease carried only this instance: let it go rather than expire later.
            try:
                await self.store.revoke(previous.lease)
            except StoreError:
                pass
        return Registration(instance, lease, revision)

    async def deregister(self, namespace: str, service: str, instance_id: str) -> None:
        """DeregisterInstance; raises RegistryError InstanceNotFound if it is not registered."""
        key = self._inst_key(namespace, service, instance_id)
        current = await self.store.get(key)
        if current is None:
            raise RegistryError("InstanceNotFound",
                                f"no instance {instance_id!r} in service {namespace}/{service}")
        await self.store.delete(key)
        if current.lease:
            try:
                await self.store.revoke(current.lease)
            except StoreError:
                pass

    async def set_health(self, namespace: str, service: str, instance_id: str, status: str) -> None:
        """UpdateInstanceCustomHealthStatus (HEALTHY | UNHEALTHY); keeps the instance's lease."""
        if status not in HEALTH_STATUSES:
            raise RegistryError("InvalidInput", f"status must be HEALTHY or UNHEALTHY, got {status!r}")
        key = self._inst_key(namespace, service, instance_id)
        for _ in range(_CAS_ATTEMPTS):
            current = await self.store.get(key)
            if current is None:
                raise RegistryError("InstanceNotFound",
                                    f"no instance {instance_id!r} in service {namespace}/{service}")
            instance = Instance.from_json(json.loads(current.value))
            if instance.health == status:
                return
            doc = json.dumps(replace(instance, health=status).to_json()).encode()
            if await self.store.put_if(key, doc, mod_revision=current.mod_revision,
                                       lease=current.lease):
                return
        raise RegistryError("ConcurrentModification", f"instance {instance_id!r} kept changing")

    async def keepalive(self, lease: int) -> bool:
        """Renew a registration's lease; False if it expired (the instance is gone)."""
        return await self.store.keepalive(lease)

    @asynccontextmanager
    async def registered(
        self, namespace: str, service: str, instance_id: str, attributes: Mapping[str, str],
        *, ttl: float = 10.0,
    ) -> AsyncIterator[Registration]:
        """Register on a `ttl` lease, keep it alive (every ttl/3) while the block runs, and
        deregister on exit. If the process dies, the lease expires and the instance goes.
        Cancellation of the block deregisters too (shielded, best effort)."""
        registration = await self.register(namespace, service, instance_id, attributes, ttl=ttl)
        lease = [registration.lease]  # the current lease: renewed, or replaced after expiry
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep, registration, ttl, lease)
            try:
                yield registration
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    try:
                        await self.store.revoke(lease[0])
                    except StoreError:
                        pass

    async def _keep(self, registration: Registration, ttl: float, lease: list[int]) -> None:
        i = registration.instance
        while True:
            await trio.sleep(ttl / 3)
            try:
                if not await self.keepalive(lease[0]):
                    # Expired while the store was away: register again on a new lease.
                    lease[0] = (await self.register(i.namespace, i.service, i.id, i.attributes,
                                                    ttl=ttl)).lease
            except StoreError:
                continue  # the store is away; the next beat retries

    # -- reads -----------------------------------------------------------------------------

    async def namespaces(self) -> list[str]:
        kvs, _ = await self.store.range(f"{self.root}ns/")
        return [json.loads(kv.value)["Name"] for kv in kvs]

    async def services(self, namespace: str | None = None) -> list[tuple[str, str]]:
        prefix = f"{self.root}svc/" + (f"{_q(namespace)}/" if namespace is not None else "")
        kvs, _ = await self.store.range(prefix)
        return [(d["NamespaceName"], d["Name"]) for d in (json.loads(kv.value) for kv in kvs)]

    async def instances(
        self, namespace: str | None = None, service: str | None = None
    ) -> tuple[list[Instance], int]:
        """Every instance (of a namespace, of a service) and the revision they were read at."""
        kvs, revision = await self.store.range(self.instances_prefix(namespace, service))

        def decode() -> list[Instance]:
            return [Instance.from_json(json.loads(kv.value)) for kv in kvs]

        # NOTE: decoding thousands of instances takes milliseconds: off the Trio thread then.
        if len(kvs) > _DECODE_INLINE_MAX:
            return await trio.to_thread.run_sync(decode), revision
        return decode(), revision

    async def discover(
        self,
        namespace: str,
        service: str,
        *,
        query: Mapping[str, str] | None = None,
        optional: Mapping[str, str] | None = None,
        health_status: str = "HEALTHY",
        max_results: int | None = 100,
    ) -> tuple[list[Instance], int]:
        """DiscoverInstances; raises NamespaceNotFound / ServiceNotFound like Cloud Map.
        Returns the instances and the revision (InstancesRevision) they were read at."""
        if await self.store.get(self._svc_key(namespace, service)) is None:
            if await self.store.get(self._ns_key(namespace)) is None:
                raise RegistryError("NamespaceNotFound", f"no namespace {namespace!r}")
            raise RegistryError("ServiceNotFound", f"no service {service!r} in namespace {namespace!r}")
        instances, revision = await self.instances(namespace, service)
        found = discover(instances, query=query, optional=optional,
                         health_status=health_status, max_results=max_results)
        return found, revision

    def watch(self, namespace: str, service: str, after: int) -> AsyncGenerator[int, None]:
        """Revisions at which the service's instances changed after `after` (see Store.watch)."""
        return self.store.watch(self.instances_prefix(namespace, service), after)

    async def watch_instances(
        self, namespace: str, service: str, after: int
    ) -> AsyncGenerator[list[tuple[str, Instance | None]], None]:
        """The service's instance changes after revision `after`, in batches of (instance id,
        the instance now, or None when it went). Raises as `Store.watch_changes` does."""
        prefix = self.instances_prefix(namespace, service)
        async with aclosing(self.store.watch_changes(prefix, after)) as batches:
            async for batch in batches:
                yield [
                    (unquote(c.key[len(prefix):]),
                     None if c.value is None else Instance.from_json(json.loads(c.value)))
                    for c in batch
                ]
