"""`follow()`: a proxy that runs its mesh's desired config version from the store.

`meshplane run --store URL --mesh M (--gateway G | --node N)`. The proxy reads the desired
version, starts on it, then watches the `desired` key: each new version is loaded, validated,
compiled and applied atomically (`Proxy.apply`, no failed request). A version that cannot be
applied (invalid for this proxy, refused by the core, its document missing) leaves the running
version serving; the reason goes to the log and to this proxy's report, so `meshplane status`
shows it. The report (`ProxyReport`: running and last-seen desired version, error, health,
per-cluster request counters for `meshplane rollout`) is rewritten on every change and every
`heartbeat` seconds. Losing the store changes nothing that serves: the watch is re-opened with
backoff and the desired version re-read, so nothing applied meanwhile is missed. On exit the
report says STOPPED (best effort, bounded).

Imports trio, the store, `meshplane.lifecycle`, config and runtime (the top of the library).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from contextlib import aclosing
from typing import Any

import trio

from meshplane._bridge import TaskStatus, collapse_groups
from meshplane.config import MeshConfig, from_dict
from meshplane.errors import ConfigError, MeshplaneError
from meshplane.lifecycle.versions import ConfigVersions, ProxyReport, UnknownVersion, Version
from meshplane.store import StoreError, WatchExpired, open_store

__all__ = ["Follower", "follow"]

log = logging.getLogger("meshplane.follow")

BACKOFF_S = (0.1, 5.0)
STOP_REPORT_S = 2.0


def config_of(doc: Mapping[str, Any], proxy: Mapping[str, Any], version: Version) -> MeshConfig:
    """The MeshConfig this proxy runs for version document `doc`. Validates: off the loop."""
    source = f"mesh {version.mesh} version {version.number}"
    return from_dict({"mesh": doc.get("mesh"), "proxy": dict(proxy),
                      "resources": doc.get("resources") or []}, source)


def cluster_counters(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What `meshplane rollout` reads of a proxy: per cluster, requests, 5xx, errors and the
    latency histogram (counters only grow; the reader takes differences)."""
    out: dict[str, dict[str, Any]] = {}
    for name, c in (stats.get("clusters") or {}).items():
        hist = c.get("rq_time_ms") or {}
        out[name] = {"rq_total": c.get("rq_total", 0), "rq_5xx": c.get("rq_5xx", 0),
                     "bounds": hist.get("bounds", []), "counts": hist.get("counts", [])}
    return out


class Follower:
    """The state `follow` reports; one per proxy."""

    def __init__(self, versions: ConfigVersions, proxy: Mapping[str, Any], proxy_id: str) -> None:
        self.versions = versions
        self.proxy_settings = dict(proxy)
        self.id = proxy_id
        self.target = (f"gateway/{proxy['gateway']}" if proxy.get("gateway")
                       else f"node/{proxy.get('node')}")
        self.running: Version | None = None
        self.desired_seen: int | None = None
        self.error: dict[str, Any] | None = None
        self.proxy: Any = None  # the running meshplane.Proxy
        self.state = "STARTING"
        self.changed = trio.Event()

    async def report(self) -> ProxyReport:
        health: dict[str, Any] = {}
        admin = None
        if self.proxy is not None:
            try:
                health = {"state": self.proxy.state,
                          "clusters": cluster_counters(await self.proxy.core_stats(hosts=False))}
            except Exception as exc:  # the core stopped under us: say so rather than fail
                health = {"state": self.proxy.state, "error": str(exc)}
            if self.proxy.admin_address is not None:
                host, port = self.proxy.admin_address
                admin = f"{host}:{port}"
        return ProxyReport(
            id=self.id, mesh=self.versions.mesh, target=self.target,
            running=self.running.number if self.running else None,
            running_hash=self.running.hash if self.running else None,
            desired_seen=self.desired_seen, state=self.state, heartbeat=time.time(),
            error=self.error, health=health, admin=admin, pid=os.getpid(),
            host=socket.gethostname(),
        )

    async def load(self, version: Version) -> MeshConfig:
        doc = await self.versions.document(version.hash)
        return await trio.to_thread.run_sync(config_of, doc, self.proxy_settings, version)

    async def try_apply(self, version: Version) -> None:
        """Apply `version`; on any failure keep the running one and record why."""
        self.desired_seen = version.number
        try:
            config = await self.load(version)
            await self.proxy.apply(config)
        except (ConfigError, UnknownVersion) as exc:
            reason = "; ".join(str(p) for p in exc.problems) if isinstance(exc, ConfigError) else str(exc)
            self._reject(version, reason)
        except StoreError:
            raise
        except Exception as exc:  # a bug: still never take the running version down
            log.exception("applying version %d failed", version.number)
            self._reject(version, f"{type(exc).__name__}: {exc}")
        else:
            self.running, self.error = version, None
            log.info("running version %d (%s)", version.number, version.hash[:12])
        self.changed.set()

    def _reject(self, version: Version, reason: str) -> None:
        kept = self.running.number if self.running else None
        log.error("cannot apply version %d of mesh %s, keeping version %s: %s",
                  version.number, version.mesh, kept, reason)
        self.error = {"version": version.number, "reason": reason}

    async def watch(self) -> None:
        """Follow the desired key until cancelled; store losses are retried with backoff."""
        store = self.versions.store
        delay = BACKOFF_S[0]
        while True:
            try:
                desired, revision = await self.versions.desired()
                if desired is not None and desired.number != (self.running and self.running.number) \
                        and desired.number != (self.error or {}).get("version"):
                    await self.try_apply(desired)
                delay = BACKOFF_S[0]
                async with aclosing(store.watch(self.versions.desired_key, revision)) as changes:
                    async for _ in changes:
                        desired, _ = await self.versions.desired()
                        if desired is not None and desired.number != self.desired_seen:
                            await self.try_apply(desired)
            except WatchExpired:
                continue
            except StoreError as exc:  # unreachable, or refused: keep serving, try again
                log.warning("store lost (%s); serving version %s, retrying in %.1f s", exc,
                            self.running.number if self.running else None, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])

    async def heartbeat(self, interval: float) -> None:
        """Write the report every `interval` seconds and whenever something changed."""
        while True:
            self.changed = trio.Event()
            try:
                await self.versions.report(await self.report())
            except StoreError as exc:
                log.warning("cannot report to the store: %s", exc)
            with trio.move_on_after(interval):
                await self.changed.wait()


async def follow(
    store_url: str | None,
    mesh: str,
    proxy: Mapping[str, Any],
    *,
    proxy_id: str | None = None,
    heartbeat: float = 5.0,
    workers: int = 1,
    admin: str | None = None,
    drain_ms: int = 5000,
    task_status: TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a proxy on mesh `mesh`'s desired version until cancelled (see the module docstring).

    `proxy` is the config's `proxy` section (gateway or node, bind, ports, ...). Reports the
    running `Proxy` with `task_status.started`. Raises `MeshplaneError` if the mesh has no
    desired version yet and ConfigError if this proxy cannot run the desired version at start.
    """
    from meshplane.runtime import Proxy

    target = proxy.get("gateway") or proxy.get("node") or "proxy"
    proxy_id = proxy_id or f"{target}-{socket.gethostname()}-{os.getpid()}"
    async with open_store(store_url) as store:
        versions = ConfigVersions(store, mesh)
        follower = Follower(versions, proxy, proxy_id)
        desired, _ = await versions.desired()
        if desired is None:
            raise MeshplaneError(f"mesh {mesh} has no desired version in {store.url}: "
                                 "`meshplane apply` one first")
        config = await follower.load(desired)
        async with Proxy(config, workers=workers, admin=admin, drain_ms=drain_ms,
                         store=store.url) as running:
            follower.proxy, follower.running, follower.desired_seen = running, desired, desired.number
            follower.state = "LIVE"
            try:
                with collapse_groups():
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(follower.heartbeat, heartbeat)
                        nursery.start_soon(follower.watch)
                        task_status.started(running)
                        await trio.sleep_forever()
            finally:
                follower.state = "STOPPED"
                with trio.move_on_after(STOP_REPORT_S) as scope:
                    scope.shield = True
                    try:
                        await versions.report(await follower.report())
                    except StoreError as exc:
                        log.warning("cannot report STOPPED to the store: %s", exc)
