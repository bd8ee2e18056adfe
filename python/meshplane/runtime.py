"""`Proxy` and `serve()`: one nursery that wires the core, the bridge, the drivers and admin.

    async with meshplane.Proxy("mesh.yaml") as proxy:
        print(proxy.ports, proxy.admin_address)
        await proxy.apply("mesh-v2.yaml")   # ConfigError ⇒ the running version keeps serving

Entering a `Proxy` loads and compiles the config, creates the core, applies the snapshot, and
starts (each with `nursery.start`, so readiness is awaited, never slept for) the event bridge,
the DNS refresh driver, the certificate watcher, active health checking and outlier
ejection (`drivers.resilience`, retargeted on each apply and DNS change) and the admin
server. Leaving it drains the core and waits for its "stopped" event before cancelling the
background tasks.

Layer: the top of the library; imports config, `_bridge`, drivers, admin and the compiled core.
Only the CLI and users import it.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from meshplane._bridge import Event, EventBridge, TaskStatus, collapse_groups
from meshplane._core import Core, CoreError, Text
from meshplane.admin.lambda_api import MAX_BODY_BYTES as LAMBDA_MAX_BODY
from meshplane.admin.lambda_api import LambdaAPI, serve_lambda_api, too_large
from meshplane.admin.server import serve_admin
from meshplane.config import (
    MeshConfig,
    ResilienceTarget,
    cloud_map_targets,
    dns_targets,
    from_dict,
    listener_names,
    load_file,
    load_text,
)
from meshplane.config.addresses import parse_address
from meshplane.config.compile import compile_document, snapshot_json
from meshplane.config.event_invoke import EventInvokeConfig
from meshplane.config.functions import INVOKE_LISTENER, FunctionTarget, config_dir
from meshplane.config.functions import resolve as resolve_functions
from meshplane.config.tls import tls_files
from meshplane.config.topology import listeners
from meshplane.drivers.cert_watch import CertWatch, observe
from meshplane.drivers.config_watch import ConfigWatch
from meshplane.drivers.discovery import DnsDiscovery
from meshplane.drivers.registry import CloudMapDiscovery
from meshplane.drivers.resilience import EndpointFanout, Resilience, ResilienceView
from meshplane.errors import ConfigError, Problem
from meshplane.functions.service import FunctionNotFound, FunctionService
from meshplane.functions.supervisor import Supervisor

if TYPE_CHECKING:
    # Imported when the config has functions (`_async_invocations`): sqlite3 and the queue
    # stay out of a proxy without functions.
    from meshplane.functions.async_invoke import AsyncInvoker
    from meshplane.registry import Registration
from meshplane.store import StoreError, open_store, resolve_url

__all__ = ["ConfigInput", "Proxy", "SelfRegistration", "load_config", "serve"]

log = logging.getLogger("meshplane.runtime")

ConfigInput = MeshConfig | str | os.PathLike[str] | Mapping[str, Any]
"""A loaded `MeshConfig`, a path to a YAML/JSON file, or the file's content as a dict."""

# Time allowed beyond the drain for the core to report "stopped" before we stop waiting.
STOP_GRACE_S = 2.0


@dataclasses.dataclass(frozen=True)
class SelfRegistration:
    """Register this proxy in the service registry while it serves (`meshplane run --register`).

    Callers reach a sidecar through its inbound listener, so the instance is that listener:
    `address` (default: `proxy.bind`; a wildcard bind needs an explicit address) and the bound
    port of the served node's first listener (a gateway's first listener). `namespace`,
    `service` and the attributes default to the served node's `awsCloudMap` selection, so the
    instance matches its own node; `attributes` are added on top. `instance_id` defaults to
    `<node>-<hostname>-<pid>`. The instance lives on a `ttl`-second lease kept alive by the
    proxy: it is deregistered before draining, and disappears after `ttl` if the process dies.
    """

    namespace: str | None = None
    service: str | None = None
    instance_id: str | None = None
    address: str | None = None
    attributes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ttl: float = 10.0

    @classmethod
    def from_config(cls, section: bool | Mapping[str, Any] | None) -> SelfRegistration | None:
        """From the config's `proxy.register` (True, a mapping, or None/False = off)."""
        if not section:
            return None
        if section is True:
            return cls()
        assert isinstance(section, Mapping)
        return cls(section.get("namespace"), section.get("service"), section.get("id"),
                   section.get("address"), dict(section.get("attributes") or {}),
                   float(section.get("ttl", 10)))


def load_config(config: ConfigInput) -> MeshConfig:
    """Load and validate `config`; raises ConfigError naming every problem."""
    if isinstance(config, MeshConfig):
        return config
    if isinstance(config, Mapping):
        return from_dict(dict(config), source="<dict>")
    return load_file(os.fspath(config))


def _load(config: ConfigInput, overrides: Mapping[int, int] | None) -> MeshConfig:
    """`load_config` with `port_overrides` applied. Reads files and validates: run it off the
    Trio loop."""
    return _with_ports(load_config(config), overrides)


def _compile(
    config: MeshConfig,
    endpoints: Mapping[str, Any],
    apply_number: int,
    functions: Mapping[tuple[str, str], list[FunctionTarget]] | None = None,
) -> tuple[str, dict[str, Any], bytes, list[ResilienceTarget]]:
    """Compile `config` into (content digest, snapshot labelled "<apply_number>-<digest>", the
    bytes for `Core.apply`, the resilience targets); `functions` as for `compile_snapshot`.
    CPU-bound: run it off the Trio loop."""
    document, targets = compile_document(config, endpoints, functions=functions)
    # NOTE: one compact serialization serves both the digest and the core; the label goes in
    # as the last member instead of serializing the document again.
    body = snapshot_json(document)
    digest = hashlib.sha256(body).hexdigest()[:12]
    # Version label: apply counter + content hash, so equal labels mean equal snapshots.
    document["version"] = label = f"{apply_number}-{digest}"
    data = b"%s,\"version\":%s}" % (body[:-1], json.dumps(label).encode())
    return digest, document, data, targets


def _core_stats(core: Core, hosts: bool, view: ResilienceView | None) -> dict[str, Any]:
    """`core.stats(hosts)`, each host table with the drivers' per-host `view` (when they run:
    then every host also has its `health_flags`)."""
    if not hosts or view is None:
        return core.stats(hosts)
    return core.stats(True, view.hc_hosts, view.od_hosts, True)


# NOTE: a thread that wants the GIL waits up to `sys.getswitchinterval()` (5 ms by default)
# before the holder is asked to let go. An apply's Python work in a worker thread (loading,
# walking and compiling a config of 10,000 endpoints: ~10 ms of bytecode) thus kept the Trio
# loop waiting a whole interval at each of its wake-ups; while such work runs the interval is
# `_BRIEF_SWITCH_S` (the holder lets go sooner; it pays a few more switches). Process-wide, as
# the interval is: the first such call sets it, the last one puts the previous value back (a
# change another party makes meanwhile is then undone).
_BRIEF_SWITCH_S = 0.0005
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.0


def _brief_switches(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` with the GIL switch interval at most `_BRIEF_SWITCH_S` (for worker threads)."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_saved, _BRIEF_SWITCH_S))
        _switch_users += 1
    try:
        return fn(*args)
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


# NOTE: the apply's Python work also runs at a lower CPU priority (`_APPLY_NICE`): on a busy
# machine the Trio thread, woken by a timer or a socket, then gets a core at once instead of
# waiting for the OS to preempt the compile. Linux applies `setpriority(PRIO_PROCESS, tid)` to
# that thread alone, and an unprivileged thread cannot raise its priority again, so the work
# runs in a thread of its own (started per call, ~0.1 ms) rather than in Trio's reused
# workers. Elsewhere (no per-thread niceness) it runs as is.
_APPLY_NICE = 10


def _background(fn: Callable[..., Any], *args: Any) -> Any:
    """`_brief_switches(fn, *args)` in a new thread niced by `_APPLY_NICE` (Linux), waited for
    here: for a worker thread. Returns what `fn` returns, raises what it raises."""
    if not _APPLY_NICE or not sys.platform.startswith("linux"):
        return _brief_switches(fn, *args)
    outcome: list[Any] = []

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _APPLY_NICE)
        except OSError:
            pass  # not allowed here: run at the usual priority
        try:
            outcome.append((True, _brief_switches(fn, *args)))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="meshplane-apply", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _with_ports(config: MeshConfig, overrides: Mapping[int, int] | None) -> MeshConfig:
    if not overrides:
        return config
    ports = {**config.proxy.ports, **overrides}
    return dataclasses.replace(config, proxy=dataclasses.replace(config.proxy, ports=ports))


class Proxy:
    """A running data plane for one config, used as `async with Proxy(config) as proxy:`.

    `config` is a `MeshConfig`, a path or a dict. `workers` is the number of core threads
    carrying traffic. `admin` is the admin API's "HOST:PORT" (port 0 = ephemeral; None = the
    config's `proxy.admin`, and no admin server if that is unset too). `port_overrides` maps
    a declared listener port to the port to bind instead (0 = ephemeral), on top of the
    config's `proxy.ports`. `drain_ms` is how long in-flight requests get on exit. `store`
    is the store URL that `awsCloudMap` nodes resolve against (None: the config's
    `proxy.store`, else `MESHPLANE_STORE`, else the embedded default); it is fixed at start.
    `register` registers the proxy itself in that registry while it serves (`SelfRegistration`;
    None: the config's `proxy.register`, if any).

    Cancellation: if the block is cancelled, or raises, the proxy still drains (shielded,
    bounded by `drain_ms` plus a short grace) before the exception propagates.
    """

    def __init__(
        self,
        config: ConfigInput,
        *,
        workers: int = 1,
        admin: str | None = "127.0.0.1:0",
        port_overrides: Mapping[int, int] | None = None,
        drain_ms: int = 5000,
        dns_interval: float = 5.0,
        store: str | None = None,
        register: SelfRegistration | None = None,
    ) -> None:
        self._input = config
        self._store_url = store
        self._register = register
        self.registration: Registration | None = None
        self._cloud_map: CloudMapDiscovery | None = None
        self._workers = workers
        self._admin = admin
        self._port_overrides = dict(port_overrides or {})
        self._drain_ms = drain_ms
        self._dns_interval = dns_interval
        self._state = "INITIALIZING"
        self._core: Core | None = None
        self._discovery: DnsDiscovery | None = None
        self._resilience: Resilience | None = None
        self._cert_watch: CertWatch | None = None
        self._bridge: EventBridge | None = None
        self._config: MeshConfig | None = None
        self._snapshot: dict[str, Any] | None = None
        self._digest: str | None = None
        self._applied = 0
        self._lock = trio.Lock()
        self._admin_address: tuple[str, int] | None = None
        self._invoke_api_address: tuple[str, int] | None = None
        self._context: Any = None
        self._store: Any = None
        self._supervisor: Supervisor | None = None
        self._functions: FunctionService | None = None
        self._async: AsyncInvoker | None = None
        self._catalog_revision = 0
        self._has_functions = trio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Proxy:
        if self._context is not None:
            raise RuntimeError("a Proxy can be entered only once")
        self._context = self._running()
        return await self._context.__aenter__()  # type: ignore[no-any-return]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._context.__aexit__(exc_type, exc, tb)  # type: ignore[no-any-return]

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Proxy]:
        config = await trio.to_thread.run_sync(_load, self._input, self._port_overrides)
        admin = self._admin if self._admin is not None else config.proxy.admin
        admin_address = parse_address(admin, min_port=0) if admin else None
        # The store is opened lazily: a config without Cloud Map nodes never touches it.
        store = open_store(resolve_url(self._store_url, config.proxy.store))
        self._store = store
        core = self._core = Core(self._workers)
        supervisor = self._supervisor = Supervisor(core, store=store, mesh=config.mesh)
        self._functions = FunctionService(supervisor, self._invoke_address)
        resilience = self._resilience = Resilience(core)
        self._discovery = DnsDiscovery(EndpointFanout(core, resilience), interval=self._dns_interval)
        self._cert_watch = CertWatch(core.reload_tls)
        self._cloud_map = CloudMapDiscovery(EndpointFanout(core, resilience), store)
        # The first apply runs before the nursery opens, so its ConfigError reaches the caller
        # as itself; the core has no listener yet and stops at once.
        try:
            async with self._lock:
                await self._apply(config)
        except BaseException:
            core.shutdown(0)
            await store.aclose()
            raise
        bridge = self._bridge = EventBridge(core)
        stopped = bridge.subscribe("stopped", buffer=1)
        outlier_events = bridge.subscribe("outlier", buffer=4096)
        instance_events = bridge.subscribe("instance_wanted", buffer=4096)
        with collapse_groups():
            async with trio.open_nursery() as nursery:
                frozen = False
                try:
                    await nursery.start(bridge.run)
                    await nursery.start(self._discovery.run)
                    await nursery.start(self._cloud_map.run)
                    await nursery.start(resilience.run, outlier_events)
                    await nursery.start(self._cert_watch.run)
                    await nursery.start(supervisor.run, instance_events)
                    nursery.start_soon(self._follow_functions)
                    await nursery.start(self._async_invocations,
                                        resolve_url(self._store_url, config.proxy.store))
                    lambda_api = LambdaAPI(self._functions, lambda: self._async)
                    if admin_address is not None:
                        self._admin_address = await nursery.start(partial(
                            serve_admin, self, *admin_address, lambda_api=lambda_api,
                            lambda_max_body=LAMBDA_MAX_BODY, too_large=too_large))
                    if config.proxy.invoke_api is not None:
                        self._invoke_api_address = await nursery.start(
                            serve_lambda_api, lambda_api,
                            *parse_address(config.proxy.invoke_api, min_port=0))
                    async with self._registered():
                        self._state = "LIVE"
                        # NOTE: what exists now (the config, the snapshot document, the
                        # drivers and their per-host state) lives as long as the proxy; moved
                        # out of the collector's sight, a generation-2 collection with 10,000
                        # hosts pauses the Trio loop for milliseconds instead of 50-200 ms
                        # (benches/README.md, control plane). Frozen objects are still freed
                        # by reference counting; only one that ends in a reference cycle waits
                        # for `gc.unfreeze()`, which runs when the proxy stops: a one-time,
                        # bounded cost (what was alive at start), never one per request or apply.
                        gc.freeze()
                        frozen = True
                        yield self
                finally:
                    if frozen:
                        gc.unfreeze()
                    self._state = "DRAINING"
                    await self._stop(core, stopped)
                    self._state = "STOPPED"
                    nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            await store.aclose()

    @asynccontextmanager
    async def _registered(self) -> AsyncIterator[None]:
        """Hold this proxy's own registration (if asked for) while the block runs."""
        spec, cloud_map = self._register, self._cloud_map
        if spec is None:
            spec = SelfRegistration.from_config(self.config.proxy.register)
        if spec is None or cloud_map is None:
            yield
            return
        namespace, service, instance_id, attributes = self._registration_of(spec)
        async with cloud_map.registry.registered(
            namespace, service, instance_id, attributes, ttl=spec.ttl
        ) as registration:
            self.registration = registration
            log.info("registered %s/%s/%s at %s:%s", namespace, service, instance_id,
                     attributes.get("AWS_INSTANCE_IPV4") or attributes.get("AWS_INSTANCE_IPV6"),
                     attributes["AWS_INSTANCE_PORT"])
            try:
                yield
            finally:
                self.registration = None
                log.info("deregistering %s/%s/%s", namespace, service, instance_id)

    def _registration_of(self, spec: SelfRegistration) -> tuple[str, str, str, dict[str, str]]:
        config = self.config
        served = config.proxy.node or config.proxy.gateway or "proxy"
        node = config.get("VirtualNode", config.proxy.node) if config.proxy.node else None
        cloud_map = (((node.spec if node else {}).get("serviceDiscovery") or {})
                     .get("awsCloudMap") or {})
        namespace = spec.namespace or cloud_map.get("namespaceName")
        service = spec.service or cloud_map.get("serviceName")
        if not namespace or not service:
            raise ConfigError([Problem(config.source, f"proxy {served}", "register",
                                       "give the namespace and service to register in (the "
                                       "served node has no serviceDiscovery.awsCloudMap)")])
        address = spec.address or config.proxy.bind
        if address in ("0.0.0.0", "::", ""):
            raise ConfigError([Problem(config.source, f"proxy {served}", "register",
                                       f"proxy.bind is {address!r}: give the address callers "
                                       "reach this proxy at")])
        resource = node or (config.get("VirtualGateway", config.proxy.gateway)
                            if config.proxy.gateway else None)
        owned = listeners(resource)
        if not owned:
            raise ConfigError([Problem(config.source, f"proxy {served}", "register",
                                       "the served node or gateway has no listener to register")])
        port = self.port(owned[0][0])
        family = "AWS_INSTANCE_IPV6" if ":" in address else "AWS_INSTANCE_IPV4"
        attributes = {a["key"]: a["value"] for a in cloud_map.get("attributes") or []}
        attributes.update(spec.attributes)
        attributes.update({family: address, "AWS_INSTANCE_PORT": str(port)})
        instance_id = spec.instance_id or f"{served}-{socket.gethostname()}-{os.getpid()}"
        return namespace, service, instance_id[:64], attributes

    async def _stop(self, core: Core, stopped: trio.MemoryReceiveChannel[Event]) -> None:
        """Drain the core and wait for its "stopped" event; shielded, and bounded in time."""
        with trio.move_on_after(self._drain_ms / 1000 + STOP_GRACE_S) as scope:
            scope.shield = True
            try:
                core.shutdown(self._drain_ms)
            except CoreError as exc:
                log.warning("core shutdown failed: %s", exc)
                return
            async for _ in stopped:
                return
        if scope.cancelled_caught:
            log.warning("the core did not report stopping within %d ms; stopping anyway",
                        self._drain_ms + int(STOP_GRACE_S * 1000))

    # -- config ------------------------------------------------------------------------------

    async def apply(self, config: ConfigInput) -> str:
        """Load, validate, compile and apply a new config; returns the version now running.

        Raises ConfigError (every problem named) and keeps the running version if the config
        is invalid or the core refuses the snapshot: the core never half-applies. Any other
        exception while loading or compiling (a bug) also leaves the running version serving
        and propagates. Applies are
        serialized. Applying a config that compiles to the running snapshot changes nothing.
        The admin address is fixed when the proxy starts and is not changed by `apply`.
        Cancellation while DNS names are being resolved abandons the apply.

        Loading, compiling and the core's apply run in worker threads, so the Trio loop keeps
        serving meanwhile; an apply is one transaction: cancelled before the core's apply
        starts, nothing changes; once it has started, it completes and is recorded, and the
        cancellation is delivered afterwards.
        """
        new = await trio.to_thread.run_sync(_background, _load, config, self._port_overrides)
        async with self._lock:
            return await self._apply(new)

    async def _apply(self, config: MeshConfig) -> str:
        core, discovery, cloud_map = self._require_core(), self._discovery, self._cloud_map
        assert discovery is not None and cloud_map is not None
        # Each walks the whole config (every static endpoint too): off the loop.
        targets, registry_targets = await trio.to_thread.run_sync(
            _background, lambda: (dns_targets(config), cloud_map_targets(config))
        )
        endpoints = await discovery.prepare(targets)
        endpoints.update(await cloud_map.prepare(registry_targets))
        functions = await self._prepare_functions(config)
        if self._supervisor is not None:
            endpoints.update(self._supervisor.endpoints())
        digest, snapshot, data, resilience = await trio.to_thread.run_sync(
            _background, _compile, config, endpoints, self._applied + 1, functions
        )
        if digest == self._digest and self.version is not None:
            self._config = config
            if self._supervisor is not None:
                self._supervisor.retarget(functions)
            # Health-check and outlier timing are not in the snapshot: they may still change.
            if self._resilience is not None:
                self._resilience.retarget(resilience)
            return self.version
        tls_seen = observe(tls_files(snapshot))  # before the core reads them: no change is lost
        try:
            # NOTE: not abandon_on_cancel: a cancelled apply waits for the core's answer, so the
            # bookkeeping below (no checkpoint in it) always matches what the core runs.
            version = await trio.to_thread.run_sync(core.apply, data)
        except CoreError as exc:
            problem = Problem(config.source, "snapshot", exc.path or "", str(exc))
            raise ConfigError([problem]) from exc
        # The core now runs the new version: record it before anything else can fail, so what
        # the admin API reports is what serves.
        self._applied += 1
        self._config, self._snapshot, self._digest = config, snapshot, digest
        try:
            if self._cert_watch is not None:
                self._cert_watch.retarget(tls_seen)
            if self._supervisor is not None:
                self._supervisor.retarget(functions)
            discovery.commit(targets, endpoints)
            cloud_map.commit(registry_targets, endpoints)
            if self._resilience is not None:
                self._resilience.retarget(resilience)
        except Exception:
            # A bug, not a config problem; the new version serves with the drivers still set
            # for the previous one. Said loudly rather than hidden behind a failed apply.
            log.exception("config %s from %s is running, but retargeting the drivers failed",
                          version, config.source)
        log.info("applied config %s from %s", version, config.source)
        return version

    async def _prepare_functions(
        self, config: MeshConfig
    ) -> dict[tuple[str, str], list[FunctionTarget]]:
        """The function targets of `config`: published versions and aliases read from the
        store (only when the config has functions), every qualifier resolved, every `$LATEST`
        code path present; ConfigError otherwise."""
        if not config.of_kind("Function"):
            return {}
        from meshplane.functions.catalog import load_catalog  # only a config with functions

        catalog, self._catalog_revision = await load_catalog(self._store, config.mesh)
        functions, problems = resolve_functions(config, catalog)
        found = [Problem(config.source, label, "", message) for label, message in problems]
        for fn in config.of_kind("Function"):
            for key, codes in (("code", [fn.spec["code"]]), ("layers", fn.spec.get("layers") or [])):
                for i, code in enumerate(codes):
                    path = code if isinstance(code, str) else code["path"]
                    resolved = functions[(fn.name, "$LATEST")][0].settings
                    full = resolved["code"]["path"] if key == "code" else resolved["layers"][i]["path"]
                    if not os.path.exists(full):
                        field = "spec.code" if key == "code" else f"spec.layers[{i}]"
                        found.append(Problem(config.source, fn.label, field,
                                             f"no such directory or zip file: {path} ({full})"))
        if found:
            raise ConfigError(found)
        self._has_functions.set()
        return functions

    async def _follow_functions(self) -> None:
        """Re-apply the running config when a version or alias of its mesh changes in the
        store (`meshplane fn publish` / `fn alias`), so traffic follows an alias at once."""
        await self._has_functions.wait()
        from meshplane.functions.catalog import prefix as catalog_prefix

        while True:
            try:
                async for _ in self._store.watch(catalog_prefix(self.config.mesh),
                                                 self._catalog_revision):
                    try:
                        await self.apply(self.config)
                    except ConfigError as exc:
                        log.error("functions changed in the store, but the config cannot follow:"
                                  " %s", exc)
            except StoreError as exc:
                log.warning("watching function versions: %s; retrying", exc)
                await trio.sleep(1.0)

    async def _async_invocations(
        self, store_url: str | None, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Once the config has functions: open the asynchronous invocations' queue (a SQLite
        file beside the store's, `store_url`) and run its consumer until the proxy stops.
        Started when the queue takes events if the first config has functions (so the admin
        API never sees it missing), at once otherwise. A queue that cannot be opened is logged;
        Event invocations then get 500 ServiceException."""
        if not self._has_functions.is_set():
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await self._has_functions.wait()
        # NOTE: imported here, not at the top: a proxy without functions never loads sqlite3
        # (about 1 MiB resident) nor the queue's modules.
        import sqlite3

        from meshplane.functions.async_invoke import AsyncInvoker
        from meshplane.functions.event_queue import EventQueue, default_queue_path

        queue_path = default_queue_path(store_url)
        try:
            queue = await trio.to_thread.run_sync(EventQueue, queue_path)
        except (OSError, sqlite3.Error) as exc:
            log.error("asynchronous invocation is unavailable: cannot open the event queue %s: %s",
                      queue_path, exc)
            task_status.started()
            return
        self._async = AsyncInvoker(self.functions, queue, self._event_invoke_config)
        try:
            await self._async.run(task_status=task_status)
        finally:
            self._async = None
            queue.close()

    def _event_invoke_config(self, name: str) -> EventInvokeConfig:
        """The running config's `eventInvokeConfig` of function `name`."""
        config = self.config
        fn = config.get("Function", name)
        if fn is None:
            raise FunctionNotFound(f"Function not found: {name}")
        return EventInvokeConfig.from_spec(fn.spec.get("eventInvokeConfig"), config_dir(config))

    def _invoke_address(self) -> tuple[str, int] | None:
        if self._core is None:
            return None
        return self._core.listeners().get(INVOKE_LISTENER)

    @property
    def functions(self) -> FunctionService:
        """The functions this proxy serves (`FunctionService.invoke`, stats, instances)."""
        if self._functions is None:
            raise RuntimeError("the proxy is not running; use `async with Proxy(...) as proxy:`")
        return self._functions

    # -- what is running ---------------------------------------------------------------------

    def _require_core(self) -> Core:
        if self._core is None:
            raise RuntimeError("the proxy is not running; use `async with Proxy(...) as proxy:`")
        return self._core

    @property
    def state(self) -> str:
        """"INITIALIZING", "LIVE" (serving), "DRAINING" or "STOPPED"."""
        return self._state

    @property
    def version(self) -> str | None:
        """The running snapshot's version label ("<n>-<sha256 prefix>")."""
        return self._snapshot["version"] if self._snapshot else None

    @property
    def config(self) -> MeshConfig:
        """The running config (as validated; after `port_overrides`)."""
        if self._config is None:
            raise RuntimeError("the proxy has no config yet")
        return self._config

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """The admin API's bound (host, port), or None when it is disabled."""
        return self._admin_address

    @property
    def invoke_api_address(self) -> tuple[str, int] | None:
        """The bound (host, port) of Lambda's Invoke API on its own listener
        (`proxy.invokeApi`), or None; it is also on the admin address."""
        return self._invoke_api_address

    def listener_addresses(self) -> dict[str, tuple[str, int]]:
        """Listener name -> bound (host, port)."""
        return self._require_core().listeners()

    @property
    def ports(self) -> dict[str, int]:
        """Listener name -> bound port, e.g. {"gateway/edge/8080": 40123}."""
        return {name: port for name, (_, port) in self.listener_addresses().items()}

    def port(self, declared: int) -> int:
        """The bound port of the gateway or inbound listener declared at port `declared`."""
        bound = self.ports
        matches = [n for n, p in listener_names(self.config).items() if p == declared and n in bound]
        matches.sort(key=lambda n: n.startswith("outbound/"))
        if not matches:
            raise KeyError(f"no listener declared at port {declared}; listeners: {sorted(bound)}")
        return bound[matches[0]]

    def stats(self, *, hosts: bool = True) -> dict[str, Any]:
        """A copy of every counter, gauge and histogram (see docs/stats.md for the shape),
        with the health checker's and outlier detector's view of each cluster and host, and
        the control layer's own losses under `control`: core events the bridge dropped (by
        kind) and exceptions each driver caught and went on after.

        Each cluster's `hosts` is a `meshplane._core.HostTable`: a read-only mapping of host
        name to that host's stats (with the control layer's `health_flags`, `active_hc`,
        `outlier`), copied by the core as numbers; a host's dict is made when it is read
        (`table[name]`, `.items()`, `.column(stat)`, `.to_dict()` for all of them as a plain
        dict, e.g. for `json.dumps`). So a copy of 10,000 hosts is ~2 ms, not ~100 ms of
        per-host dicts (docs/stats.md).

        `hosts=False` leaves each cluster's hosts out (it has `membership`: `total` and
        `healthy` host counts instead); `host_metrics()` has the hosts' Prometheus text."""
        view, merge = self._control_view(hosts=hosts)
        return self._with_functions(merge(_core_stats(self._require_core(), hosts, view)))

    async def read_stats(self, *, hosts: bool = True) -> dict[str, Any]:
        """`stats(hosts=hosts)`, taken in a worker thread: the core's copy and the control
        layer's view merged into it. Only the copy of that view (the drivers change it on the
        Trio thread) is made on the caller's thread, compact (no object per host: the health
        checker's kept view, the outlier detector's entries of hosts that are not as new)."""
        core = self._require_core()
        view, merge = (
            await self._read_control_view() if hosts else self._control_view(hosts=False)
        )
        stats: dict[str, Any] = await trio.to_thread.run_sync(
            lambda: merge(_core_stats(core, hosts, view))
        )
        return self._with_functions(stats)

    async def read_stats_hosts_json(self) -> dict[str, Any]:
        """`read_stats()`, where each cluster's "hosts" is bytes: that value as
        `/stats?format=json` writes it (`json.dumps(..., indent=2)` at its place, the control
        layer's per-host view included), written by the core with the GIL released
        (`Core.stats_hosts_json`), so no per-host Python object is made."""
        core, (view, merge) = self._require_core(), await self._read_control_view()
        health, outliers = (view.hc_hosts, view.od_hosts) if view is not None else (None, None)
        stats: dict[str, Any] = await trio.to_thread.run_sync(
            lambda: merge(core.stats_hosts_json(health, outliers, view is not None))
        )
        return self._with_functions(stats)

    async def read_clusters(self, *, as_json: bool = False) -> tuple[dict[str, Any], Any]:
        """What `/clusters` shows: `read_stats(hosts=False)` (the clusters' own counters and
        the control layer's view) and every host's part, written by the core with the GIL
        released: the `cluster::host::stat::value` lines (bytes, `Core.clusters_text`) or, with
        `as_json`, `[(cluster, its host_statuses as JSON text)]` (`Core.host_statuses_json`)."""
        core, (view, merge) = self._require_core(), await self._read_control_view()
        health, outliers = (view.hc_hosts, view.od_hosts) if view is not None else (None, None)
        hosts_of = core.host_statuses_json if as_json else core.clusters_text

        def read() -> tuple[dict[str, Any], Any]:
            return merge(core.stats(False)), hosts_of(health, outliers)

        stats, hosts = await trio.to_thread.run_sync(read)
        return self._with_functions(stats), hosts

    def _with_functions(self, stats: dict[str, Any]) -> dict[str, Any]:
        """`stats` with the functions' section (`Supervisor.stats`), made on the caller's
        thread: it reads the instance pools, which the Trio thread changes, and each function
        cluster's counters (not its hosts) in `stats`; O(instances), not O(hosts)."""
        if self._supervisor is not None and self._supervisor.pools:
            stats["functions"] = self._supervisor.stats(stats)
        if self._async is not None:
            stats["async_invocations"] = self._async.stats()
        if "control" in stats:
            stats["control"] = stats.pop("control")  # last, as before the functions came
        return stats

    async def _read_control_view(
        self,
    ) -> tuple[ResilienceView | None, Callable[[dict[str, Any]], dict[str, Any]]]:
        """`_control_view()` (its per-host views are compact: one step; kept async for the
        callers that awaited the copy in steps)."""
        await trio.lowlevel.checkpoint()
        return self._control_view()

    def _control_view(
        self, *, hosts: bool = True, view: ResilienceView | None = None
    ) -> tuple[ResilienceView | None, Callable[[dict[str, Any]], dict[str, Any]]]:
        """What the control layer adds to a `Core.stats()` copy, copied now: the resilience
        drivers' view (`view` if given; without its per-host part unless `hosts`: for a copy
        without hosts), and a function that adds it all, touching nothing else."""
        resilience = view
        if resilience is None and self._resilience is not None:
            resilience = self._resilience.view(hosts=hosts)
        extra: dict[str, Any] = {}
        if self._cloud_map is not None and self._cloud_map.connected is not None:
            extra["registry"] = self._cloud_map.status()
        extra["control"] = {
            "events_dropped": dict(self._bridge.dropped) if self._bridge is not None else {},
            "driver_errors": {
                **(self._resilience.errors() if self._resilience is not None else {}),
                **({"functions": self._supervisor.errors} if self._supervisor is not None else {}),
            },
        }

        def merge(stats: dict[str, Any]) -> dict[str, Any]:
            if resilience is not None:
                stats = resilience.annotate(stats)
            stats.update(extra)
            return stats

        return resilience, merge

    def host_metrics(self) -> bytes:
        """Every host's `meshplane_host_*` Prometheus families as UTF-8 text, written by the
        core (`Core.host_metrics()`): what `admin.prometheus.render` writes for the hosts of
        `stats()`, without a Python object per host."""
        return self._require_core().host_metrics()

    async def read_host_metrics(self) -> Text:
        """`host_metrics()` written in a worker thread and kept in the core (`meshplane._core.Text`), to be
        read in pieces (`piece(start, size)`): with 10,000 hosts the text is ~12 MB, whose
        writing would stop the Trio loop for tens of milliseconds and whose bytes object
        would be one more copy of it."""
        core = self._require_core()
        return await trio.to_thread.run_sync(core.host_metrics_text)

    async def core_stats(self, *, hosts: bool = True) -> dict[str, Any]:
        """The core's own counters (`Core.stats(hosts)`, without the control layer's
        annotations that `stats()` adds), taken in a worker thread (each cluster's hosts a
        `HostTable`; `meshplane.drivers.follow`'s heartbeat reads only the clusters:
        `hosts=False`)."""
        core = self._require_core()
        stats: dict[str, Any] = await trio.to_thread.run_sync(core.stats, hosts)
        return stats

    def recent_spans(self) -> list[dict[str, Any]]:
        """The core's most recent recorded spans, newest first (`Core.recent_spans()`;
        `proxy.tracing.recentSpans` of them are kept)."""
        return self._require_core().recent_spans()

    def tls_info(self) -> dict[str, Any]:
        """Certificates in use (`Core.tls_info()`: per listener and cluster, path, subject,
        SANs, not_after) and how certificate reloads went (docs/tls.md)."""
        info = self._require_core().tls_info()
        watch = self._cert_watch
        info["reload"] = {
            "files": watch.paths if watch else [],
            "reloads": watch.reloads if watch else 0,
            "failures": watch.failures if watch else 0,
            "last_error": watch.last_error if watch else None,
            "last_reload": watch.last_reload if watch else None,
        }
        return info

    def config_dump(self) -> dict[str, Any]:
        """{"version", "source", "config": the native config, "snapshot": the compiled document}."""
        config = self.config
        return {
            "version": self.version,
            "source": config.source,
            "config": config.to_native(),
            "snapshot": self._snapshot,
        }


async def serve(
    config: ConfigInput,
    *,
    watch: bool = False,
    workers: int = 1,
    admin: str | None = None,
    port_overrides: Mapping[int, int] | None = None,
    drain_ms: int = 5000,
    store: str | None = None,
    register: SelfRegistration | None = None,
    task_status: TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a proxy until cancelled; reports the running `Proxy` with `task_status.started`.

    With `watch=True` (`config` must then be a path) the file is polled every 0.5 s and each
    change applied; a change that fails in any way (invalid, over a limit, refused by the core,
    or an unexpected error) is logged at error level and the running version keeps serving.
    `admin` None uses the config's admin address; `store` and `register` as for `Proxy`. On
    cancellation the proxy drains, then returns.
    """
    watcher: ConfigWatch | None = None
    if watch:
        if isinstance(config, MeshConfig | Mapping):
            raise TypeError("watch=True needs the config as a file path")
        watcher = ConfigWatch(config)
        # Before loading: a change made while the proxy starts is then seen, not lost.
        watcher.mark_current()
    async with Proxy(
        config, workers=workers, admin=admin, port_overrides=port_overrides, drain_ms=drain_ms,
        store=store, register=register,
    ) as proxy:
        with collapse_groups():
            async with trio.open_nursery() as nursery:
                if watcher is not None:
                    path = watcher.path

                    async def reload(text: str) -> str:
                        return await proxy.apply(load_text(text, path))

                    await nursery.start(watcher.run, reload)
                task_status.started(proxy)
                await trio.sleep_forever()
