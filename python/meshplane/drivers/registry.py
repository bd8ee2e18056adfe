"""Cloud Map discovery: clusters of `awsCloudMap` virtual nodes, fed from the service registry.

Owns `CloudMapDiscovery`, the last endpoints of every registry-backed cluster, which the runtime
compiles into each snapshot (`prepare`, `commit`) and refreshes in place with `set_endpoints`
(`run`): one task per watched (namespace, service) reads the service once, then applies the
store watch's changes to its copy and pushes the clusters whose endpoints changed (a service
of more than 500 instances at most once per 50 ms, or four times what a push takes, while it churns). Nothing is recompiled.

Faults: a store that cannot be reached leaves every cluster with its last endpoints; `status()`
says the registry is disconnected and since when, and each watcher retries with exponential
backoff (0.1 s to 5 s). A cluster whose selection has no instance is logged by name, once per
change, and shown by `status()` (the admin API's /clusters), never a silent 503.

Imports trio, `meshplane.store` and config types, and `meshplane.registry` when the registry is
first used (a Cloud Map node, a registration): a proxy without either never loads it. The core
is any object with `set_endpoints`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

import trio

from meshplane._bridge import TaskStatus, collapse_groups
from meshplane.config.cloudmap import CloudMapTarget
from meshplane.store import Store, StoreError, WatchExpired

if TYPE_CHECKING:
    from meshplane.registry import Instance, Registry

__all__ = ["CloudMapDiscovery"]

log = logging.getLogger("meshplane.registry")

Endpoints = list[tuple[str, int]]
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.1, 5.0
# Services bigger than this push at most once per window while their instances churn.
BATCH_ABOVE, BATCH_WINDOW_S = 500, 0.05


class EndpointSink(Protocol):
    def set_endpoints(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> object: ...


def _select(target: CloudMapTarget, instances: Sequence[Instance]) -> Endpoints:
    from meshplane.registry import endpoints

    return endpoints(instances, attributes=dict(target.attributes), port=target.port,
                     ip_preference=target.ip_preference)


class CloudMapDiscovery:
    """The registry-backed endpoints of the running config, kept fresh; see the module docstring."""

    def __init__(self, sink: EndpointSink, store: Store) -> None:
        self._sink = sink
        self.store = store
        self._registry: Registry | None = None
        self._targets: dict[str, CloudMapTarget] = {}
        self._endpoints: dict[str, Endpoints] = {}
        self._instances: dict[tuple[str, str], int] = {}  # (ns, svc) -> instances last read
        self._empty: set[str] = set()
        self._changed = trio.Event()
        self.connected: bool | None = None  # None: not used yet
        self.disconnected_since: float | None = None
        self.last_error: str | None = None
        self.updates = 0

    @property
    def registry(self) -> Registry:
        """The service registry in `store` (made, and `meshplane.registry` imported, on first
        use: about 0.1 MiB resident that a proxy without Cloud Map nodes never needs)."""
        if self._registry is None:
            from meshplane.registry import Registry

            self._registry = Registry(self.store)
        return self._registry

    # -- state -----------------------------------------------------------------------------

    def _up(self) -> None:
        if self.connected is False:
            log.warning("registry store %s reachable again", self.store.url)
        self.connected, self.disconnected_since, self.last_error = True, None, None

    def _down(self, exc: BaseException) -> None:
        if self.connected is not False:
            self.disconnected_since = time.time()
            log.warning("registry store unreachable; keeping the last endpoints: %s", exc)
        self.connected, self.last_error = False, str(exc)

    def _report_empty(self, target: CloudMapTarget, eps: Endpoints) -> None:
        if eps and target.cluster in self._empty:
            self._empty.discard(target.cluster)
            log.info("cluster %s (Cloud Map %s/%s) has instances again", target.cluster,
                     target.namespace, target.service)
        elif not eps and target.cluster not in self._empty:
            self._empty.add(target.cluster)
            attrs = ", ".join(f"{k}={v}" for k, v in target.attributes) or "none"
            log.warning(
                "cluster %s of virtual node %s has no endpoints: Cloud Map service %s/%s has no "
                "instance with an address matching attributes [%s]; requests to it get 503",
                target.cluster, target.node, target.namespace, target.service, attrs)

    def status(self) -> dict[str, Any]:
        """For the admin API: the store, its connection state, and each registry cluster."""
        return {
            "store": self.store.url,
            "connected": self.connected,
            "disconnected_since": self.disconnected_since,
            "last_error": self.last_error,
            "updates": self.updates,
            "clusters": {
                t.cluster: {
                    "node": t.node, "namespace": t.namespace, "service": t.service,
                    "attributes": dict(t.attributes),
                    "instances": self._instances.get((t.namespace, t.service), 0),
                    "endpoints": len(self._endpoints.get(t.cluster, [])),
                }
                for t in self._targets.values()
            },
        }

    # -- apply -----------------------------------------------------------------------------

    async def prepare(self, targets: Sequence[CloudMapTarget]) -> dict[str, Endpoints]:
        """Endpoints for `targets` read from the registry; if the store cannot be reached, the
        last known endpoints of targets unchanged from the running config (others get none)."""
        result: dict[str, Endpoints] = {}
        services = sorted({(t.namespace, t.service) for t in targets})
        try:
            for ns, svc in services:
                instances, _ = await self.registry.instances(ns, svc)
                self._instances[(ns, svc)] = len(instances)
                for t in targets:
                    if (t.namespace, t.service) == (ns, svc):
                        result[t.cluster] = _select(t, instances)
            if services:
                self._up()
        except StoreError as exc:
            self._down(exc)
            for t in targets:
                known = self._targets.get(t.cluster) == t
                result[t.cluster] = self._endpoints.get(t.cluster, []) if known else []
        for t in targets:
            self._report_empty(t, result.get(t.cluster, []))
        return result

    def commit(self, targets: Sequence[CloudMapTarget], eps: Mapping[str, Endpoints]) -> None:
        """Record what the core now runs; watchers follow the new set of services."""
        self._targets = {t.cluster: t for t in targets}
        self._endpoints = {c: list(eps.get(c, [])) for c in self._targets}
        self._changed.set()

    def _push(self, ns: str, svc: str, instances: Sequence[Instance]) -> None:
        self._instances[(ns, svc)] = len(instances)
        for target in list(self._targets.values()):
            if (target.namespace, target.service) != (ns, svc):
                continue
            new = _select(target, instances)
            self._report_empty(target, new)
            if new == self._endpoints.get(target.cluster):
                continue
            try:
                self._sink.set_endpoints(target.cluster, new)
            except Exception as exc:  # the core refusing one cluster must not stop discovery
                log.warning("set_endpoints(%s) failed: %s", target.cluster, exc)
                continue
            self._endpoints[target.cluster] = new
            self.updates += 1
            shown = [a for a, _ in new[:5]] + (["..."] if len(new) > 5 else [])
            log.info("cluster %s: %d endpoints %s", target.cluster, len(new), shown)

    # -- run -------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Watch every service the running config uses until cancelled; follows `commit`."""
        task_status.started()
        while True:
            services = self._services()
            async with trio.open_nursery() as nursery:
                for ns, svc in services:
                    nursery.start_soon(self._follow, ns, svc)
                # An apply that keeps the same services keeps the watches (and their copies).
                while self._services() == services:
                    self._changed = trio.Event()
                    await self._changed.wait()
                nursery.cancel_scope.cancel()

    def _services(self) -> list[tuple[str, str]]:
        return sorted({(t.namespace, t.service) for t in self._targets.values()})

    async def _follow(self, ns: str, svc: str) -> None:
        backoff = MIN_BACKOFF_S

        def reset() -> None:
            nonlocal backoff
            backoff = MIN_BACKOFF_S

        while True:
            try:
                await self._follow_once(ns, svc, reset)
            except WatchExpired as exc:
                log.info("watch of %s/%s restarts from a fresh read: %s", ns, svc, exc)
            except StoreError as exc:
                self._down(exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _follow_once(self, ns: str, svc: str, connected: Callable[[], None]) -> None:
        """Read the service, push it, then apply its changes as they come (until an error)."""
        instances, revision = await self.registry.instances(ns, svc)
        self._up()
        connected()
        state = {i.id: i for i in instances}
        self._push(ns, svc, instances)
        dirty = trio.Event()

        async def pusher() -> None:
            nonlocal dirty
            took = 0.0
            while True:
                await dirty.wait()
                if len(state) > BATCH_ABOVE:
                    # NOTE: recomputing a big service costs milliseconds (about 15 ms for
                    # 10,000 instances): let a burst of changes (a fleet registering) coalesce,
                    # so pushing takes at most about a fifth of the Trio thread.
                    await trio.sleep(max(BATCH_WINDOW_S, 4 * took))
                dirty = trio.Event()
                started = time.perf_counter()
                self._push(ns, svc, list(state.values()))
                took = time.perf_counter() - started

        # A lost watch ends this nursery with the store's error; as itself, not as a group
        # (trio's strict exception groups), so `_follow` backs off and reconnects.
        with collapse_groups():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pusher)
                async with aclosing(self.registry.watch_instances(ns, svc, revision)) as batches:
                    async for batch in batches:
                        for instance_id, instance in batch:
                            if instance is None:
                                state.pop(instance_id, None)
                            else:
                                state[instance_id] = instance
                        dirty.set()
