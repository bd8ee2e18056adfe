"""The instances of every function cluster: spawned, made hosts, reaped, replaced (Trio driver).

To the core a function cluster's hosts are its warm instances, `unix:/PATH.sock`, one request
at a time each (the cluster's `function` field). The supervisor owns the rest of Lambda's
lifecycle (spec/lambda.md §3):

- **on demand**: when a request finds no idle instance the core queues it and emits
  `InstanceWanted{cluster, waiting, busy, hosts}`; the supervisor starts `waiting - starting`
  more instances, never more than the cluster's concurrency;
- **readiness**: an instance becomes a host (`Core.set_endpoints`) only after its `ready`
  report, that is after Init (imports and module code) ran;
- **idle reaping**: an on-demand instance idle for the function's `idleTimeout` is taken out
  of the host set first, then stopped;
- **provisioned concurrency**: that many instances per alias/version are started when the
  config is applied, kept warm, never reaped, and replaced when they end;
- **crashes, timeouts, memory**: an instance that reports `exit` (timeout, memory) is taken out
  at once; one that dies without a word (a crash) is taken out when its pipe closes, counted
  in `crashes`, and its in-flight invocation counted as a `Runtime.ExitError`. Nothing an
  instance does reaches the proxy: it is another process, and the core sees a reset or a
  refused connection, which its retry policy handles like any other host's.

Per cluster it keeps Lambda's metrics (`_metrics`); `stats()` rolls them up per function,
version and alias. Layer: a driver (trio, config); the core is any object with
`set_endpoints` (and `stats` for throttles).
"""

from __future__ import annotations

import array
import itertools
import json
import logging
import os
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from meshplane._bridge import Event, TaskStatus
from meshplane.config.functions import LATEST, FunctionTarget
from meshplane.functions._metrics import ClusterMetrics, summary
from meshplane.store import Store

__all__ = ["Instance", "Supervisor"]

log = logging.getLogger("meshplane.functions")
REAP_INTERVAL_S = 0.5
# How long instances of a cluster the config no longer has are kept once idle (see _retire).
RETIRE_GRACE_S = 5.0
# Lambda limits Init to 10 s for on-demand environments.
INIT_LIMIT_S = 10.0
LOG_LINES = 256
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
FORKSERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkserver.py")


class EndpointSink(Protocol):
    def set_endpoints(self, cluster: str, endpoints: Sequence[tuple[str, int]]) -> object: ...


@dataclass(eq=False)
class Instance:
    id: int
    cluster: str
    socket: str
    provisioned: bool
    state: str = "starting"  # starting | idle | busy | exiting | stopping | gone
    pid: int | None = None
    last_used: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)
    current: str | None = None  # request id in flight
    process: Any = None  # a spawned instance's trio Process; None when forked
    ended: bool = False  # its process is known to have ended (never signal its pid again)

    @property
    def serving(self) -> bool:
        return self.state in ("idle", "busy")


@dataclass(eq=False)
class Pool:
    target: FunctionTarget
    instances: dict[int, Instance] = field(default_factory=dict)
    metrics: ClusterMetrics = field(default_factory=ClusterMetrics)
    retired: bool = False
    retired_at: float = 0.0

    def count(self, *states: str) -> int:
        return sum(1 for i in self.instances.values() if i.state in states)

    def live(self) -> int:
        return self.count("starting", "idle", "busy")


class Supervisor:
    """Instances of the function clusters of the running config; see the module docstring.

    `store` and `mesh` are where published versions' code is read from. `workdir` holds the
    sockets and extracted code (a fresh temporary directory when None; removed on exit then).
    """

    def __init__(self, core: EndpointSink, *, store: Store | None = None, mesh: str = "",
                 workdir: str | None = None, region: str = "local") -> None:
        self._core = core
        self._store = store
        self._mesh = mesh
        self._own_workdir = workdir is None
        self._workdir = workdir
        self.region = region
        self.secret = secrets.token_hex(16)
        self.pools: dict[str, Pool] = {}
        self.targets: dict[tuple[str, str], list[FunctionTarget]] = {}
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._forkserver: Any = None
        self._fork_lock = trio.Lock()
        self._forkserver_started = False  # started with the first instance, never without
        # MESHPLANE_FUNCTIONS_FORKSERVER=0: spawn every instance (docs/functions.md).
        self.use_forkserver = os.environ.get("MESHPLANE_FUNCTIONS_FORKSERVER", "1") != "0"
        self._retired: list[Pool] = []
        self._unmatched: dict[str, Any] = {}
        # Every cluster served since the start, with its counters: an alias that moved on
        # keeps the invocations it had (Lambda's metrics are per alias, not per snapshot).
        self._history: dict[str, tuple[FunctionTarget, ClusterMetrics]] = {}
        self._throttles: dict[str, int] = {}
        self.logs: deque[tuple[str, str]] = deque(maxlen=LOG_LINES)
        self.errors = 0
        self.on_report: Callable[[str, dict[str, Any]], None] | None = None

    @property
    def workdir(self) -> str:
        """Sockets and extracted code; created on first use (no function, no directory)."""
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(prefix="mp-fn-")
        return self._workdir

    # --- config -----------------------------------------------------------------------------

    def endpoints(self) -> dict[str, list[tuple[str, int]]]:
        """cluster -> its serving instances, for compiling the next snapshot."""
        return {name: self._hosts(pool) for name, pool in self.pools.items()}

    def retarget(self, targets: Mapping[tuple[str, str], list[FunctionTarget]]) -> None:
        """Follow a newly applied config: new clusters get pools (and provisioned instances),
        clusters gone or with changed settings are drained and stopped, and every cluster's
        host set is pushed again (the apply may have raced an instance becoming ready)."""
        self.targets = dict(targets)
        wanted = {t.cluster: t for ts in targets.values() for t in ts}
        for name in [n for n in self._unmatched if n not in wanted]:
            del self._unmatched[name]
        for name, pool in list(self.pools.items()):
            new = wanted.get(name)
            if new is None or dict(new.settings) != dict(pool.target.settings):
                self._retire(name, pool)
            else:
                pool.target = new
        for name, target in wanted.items():
            if name not in self.pools:
                _, metrics = self._history.get(name, (target, ClusterMetrics()))
                self._history[name] = (target, metrics)
                self.pools[name] = Pool(target, metrics=metrics)
                # The core serves the new snapshot before this runs: a request may already
                # wait on the new cluster, its event having found no pool. Answer it now.
                event = self._unmatched.pop(name, None)
                if event is not None and self._nursery is not None:
                    self.wanted(event)
        for name, pool in self.pools.items():
            self._push(name, pool)
            self._provision(pool)

    def _retire(self, name: str, pool: Pool) -> None:
        """A cluster left the config (or changed settings). Requests routed by the previous
        snapshot may still wait in the core's old cluster for one of its instances: they are
        handed an instance when one is released, so the instances stay until they have been
        idle for `RETIRE_GRACE_S`, then stop. Instances still starting stop at once (they
        could join no host set)."""
        del self.pools[name]
        pool.retired = True
        pool.retired_at = time.monotonic()
        self._retired.append(pool)
        for inst in list(pool.instances.values()):
            if inst.state == "starting":
                self._stop(pool, inst)

    # --- running ----------------------------------------------------------------------------

    async def run(self, events: trio.MemoryReceiveChannel[Event], *,
                  task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Serve `instance_wanted` events and reap idle instances until cancelled; on
        cancellation every instance is killed and the work directory removed."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for pool in self.pools.values():
                    self._provision(pool)
                nursery.start_soon(self._reaper)
                task_status.started()
                async for event in events:
                    try:
                        self.wanted(event)
                    except Exception:
                        self.errors += 1
                        log.exception("handling %r failed", event)
        finally:
            self._nursery = None
            for pool in [*self.pools.values(), *self._retired]:
                for inst in pool.instances.values():
                    _kill(inst)
            if self._own_workdir and self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def wanted(self, event: Any) -> None:
        """The core has requests waiting for an instance of `event.cluster`."""
        pool = self.pools.get(event.cluster)
        if pool is None:
            self._unmatched[event.cluster] = event  # its pool may be on its way (retarget)
            log.debug("%s: %d waiting, no pool yet", event.cluster, event.waiting)
            return
        starting = pool.count("starting")
        room = pool.target.concurrency - pool.live()
        # Instances that became hosts after the core sent this event take waiters too: an
        # event read late must not start instances for requests already served.
        fresh = max(0, pool.count("idle", "busy") - int(event.hosts))
        log.debug("%s: %d waiting, %d busy, %d hosts; %d starting, %d new hosts, room for %d",
                  event.cluster, event.waiting, event.busy, event.hosts, starting, fresh, room)
        for _ in range(max(0, min(int(event.waiting) - starting - fresh, room))):
            self._spawn(pool, provisioned=False)

    def _provision(self, pool: Pool) -> None:
        if self._nursery is None or pool.retired:
            return
        kept = [i for i in pool.instances.values()
                if i.provisioned and i.state in ("starting", "idle", "busy")]
        for inst in kept[pool.target.provisioned:]:
            inst.provisioned = False  # no longer provisioned: reaped when idle, like any other
        for _ in range(pool.target.provisioned - len(kept)):
            self._spawn(pool, provisioned=True)

    async def _reaper(self) -> None:
        while True:
            await trio.sleep(REAP_INTERVAL_S)
            now = time.monotonic()
            for pool in list(self._retired):
                for inst in list(pool.instances.values()):
                    since = max(inst.last_used, pool.retired_at)
                    if inst.state == "idle" and now - since > RETIRE_GRACE_S:
                        self._stop(pool, inst)
                if not pool.instances:
                    self._retired.remove(pool)
            for pool in list(self.pools.values()):
                idle_s = pool.target.idle_ms / 1000
                for inst in list(pool.instances.values()):
                    if inst.state == "idle" and not inst.provisioned and now - inst.last_used > idle_s:
                        log.info("%s: instance %d idle for %.0f s, stopping", pool.target.cluster,
                                 inst.id, now - inst.last_used)
                        self._stop(pool, inst)
                    elif inst.state == "starting" and now - inst.started > INIT_LIMIT_S + 5:
                        log.warning("%s: instance %d not ready after %.0f s, killing",
                                    pool.target.cluster, inst.id, now - inst.started)
                        _kill(inst)

    # --- one instance -----------------------------------------------------------------------

    def _spawn(self, pool: Pool, *, provisioned: bool) -> None:
        assert self._nursery is not None
        number = next(self._ids)
        inst = Instance(number, pool.target.cluster,
                        os.path.join(self.workdir, f"{number}.sock"), provisioned)
        pool.instances[inst.id] = inst
        self._nursery.start_soon(self._instance, pool, inst)

    def _stop(self, pool: Pool, inst: Instance) -> None:
        """Take the instance out of the host set; it is killed once no invocation runs."""
        if inst.state in ("gone", "stopping"):
            return
        busy = inst.state == "busy"
        inst.state = "stopping"
        if not pool.retired:
            self._push(inst.cluster, pool)
        if not busy:
            _kill(inst)

    async def _instance(self, pool: Pool, inst: Instance) -> None:
        # NOTE: here, not at the top: a proxy without functions never loads the code catalog
        # nor the worker's module (benches/README.md, "Memory, fourth pass").
        from meshplane.functions.catalog import FunctionCatalogError, materialize

        target = pool.target
        crashed_request: str | None = None
        reason: str | None = None
        try:
            code_dir, layer_dirs = await materialize(
                self._store, self._mesh, target.function, target.settings,
                os.path.join(self.workdir, "code"))
            env = self._env(target, code_dir, layer_dirs, inst.provisioned)
            read_fd, output = await self._start(inst, env)
            if inst.state == "stopping":  # stopped while starting
                _kill(inst)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump_logs, inst, target, output)
                control = trio.lowlevel.FdStream(read_fd)
                async for message in _lines(control):
                    kind = message.get("e")
                    if kind == "ready":
                        if inst.state == "starting":
                            inst.state = "idle"
                            inst.last_used = time.monotonic()
                            self._push(inst.cluster, pool)
                    elif kind == "start":
                        if inst.state == "idle":
                            inst.state = "busy"
                        inst.current = message.get("id")
                        busy = pool.count("busy")
                        pool.metrics.peak_concurrency = max(pool.metrics.peak_concurrency, busy)
                    elif kind == "end":
                        inst.current = None
                        inst.last_used = time.monotonic()
                        pool.metrics.invoked(
                            float(message.get("durationMs") or 0.0), message.get("error"),
                            cold=bool(message.get("cold")), init_ms=message.get("initMs"),
                            provisioned_instance=inst.provisioned,
                            provisioned_configured=target.provisioned > 0)
                        if self.on_report is not None:
                            self.on_report(inst.cluster, message)
                        if inst.state == "busy":
                            inst.state = "idle"
                        elif inst.state == "stopping":
                            _kill(inst)
                    elif kind == "exit":
                        reason = str(message.get("reason"))
                        inst.state = "exiting"
                        self._push(inst.cluster, pool)
                crashed_request = inst.current
                # The control pipe closed: the process has ended (its output drains next).
                if inst.process is not None:
                    await inst.process.wait()
                inst.ended = True
        except FunctionCatalogError as exc:
            self.errors += 1
            log.error("%s: cannot start an instance: %s", target.cluster, exc)
        except OSError as exc:
            self.errors += 1
            log.error("%s: cannot start an instance: %s", target.cluster, exc)
        finally:
            was = inst.state
            inst.state = "gone"
            _kill(inst)  # cancelled (the proxy stops): the process must not outlive it
            pool.instances.pop(inst.id, None)
            if not pool.retired:
                self._push(inst.cluster, pool)
            try:
                os.unlink(inst.socket)
            except OSError:
                pass
        if was not in ("stopping",) and reason is None and inst.ended:
            code = inst.process.returncode if inst.process is not None else "unknown"
            pool.metrics.crashes += 1
            log.warning("%s: instance %d (pid %s) ended unexpectedly (exit status %s)",
                        target.cluster, inst.id, inst.pid, code)
            if crashed_request is not None:
                pool.metrics.invoked(0.0, "Runtime.ExitError", cold=False, init_ms=None,
                                     provisioned_instance=inst.provisioned,
                                     provisioned_configured=target.provisioned > 0)
        if inst.provisioned and not pool.retired:
            self._provision(pool)  # replace it

    async def _start(self, inst: Instance, env: dict[str, str]) -> tuple[int, Any]:
        """Start the instance's process: forked by the fork server when it runs, else spawned.
        Returns the control pipe's read end and a stream of its output."""
        from meshplane.functions.worker import SPEC_ENV

        if self.use_forkserver and not self._forkserver_started and self._nursery is not None:
            async with self._fork_lock:  # the first instance starts the fork server
                if not self._forkserver_started:
                    self._forkserver_started = True
                    await self._nursery.start(self._run_forkserver)
        read_fd, write_fd = os.pipe()
        try:
            server = self._forkserver
            if server is not None:
                out_r, out_w = os.pipe()
                try:
                    spec = json.loads(env.pop(SPEC_ENV))
                    request = json.dumps({"spec": spec, "socket": inst.socket, "env": env})
                    async with self._fork_lock:
                        await server.sendmsg([request.encode()], [(
                            socket.SOL_SOCKET, socket.SCM_RIGHTS,
                            array.array("i", [write_fd, out_w]))])
                        reply = await server.recv(4096)
                    if not reply:
                        raise OSError("the fork server ended")
                    inst.pid = int(json.loads(reply)["pid"])
                finally:
                    os.close(out_w)
                return read_fd, trio.lowlevel.FdStream(out_r)
            inst.process = await trio.lowlevel.open_process(
                [sys.executable, "-S", WORKER, inst.socket, str(write_fd)],
                pass_fds=(write_fd,), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            inst.pid = inst.process.pid
            assert inst.process.stdout is not None
            return read_fd, inst.process.stdout
        finally:
            os.close(write_fd)

    async def _run_forkserver(self, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the fork server (forkserver.py) while the supervisor runs; instances are
        spawned directly while it is not running (it failed to start, or ended)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
            env["PYTHONPATH"] = os.pathsep.join(_import_path())
            process = await trio.lowlevel.open_process(
                [sys.executable, "-S", FORKSERVER, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.warning("no fork server (%s): instances are spawned", exc)
            task_status.started()
            return
        finally:
            theirs.close()
        self._forkserver = trio.socket.from_stdlib_socket(ours)
        task_status.started()
        try:
            await process.wait()
            log.warning("the fork server ended (status %s): instances are spawned",
                        process.returncode)
        finally:
            self._forkserver = None
            ours.close()
            if process.returncode is None:
                process.kill()

    async def _pump_logs(self, inst: Instance, target: FunctionTarget, output: Any) -> None:
        buffer = b""
        prefix = f"{target.function}:{target.version}"
        async for chunk in output:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                self.logs.append((target.cluster, line))
                log.info("[%s #%d] %s", prefix, inst.id, line)

    def _env(self, target: FunctionTarget, code_dir: str, layer_dirs: list[str],
             provisioned: bool) -> dict[str, str]:
        from meshplane.functions.worker import SPEC_ENV

        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
        env["PYTHONPATH"] = os.pathsep.join(_import_path())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # Few malloc arenas: a worker's resident memory stays close to what it uses.
        env["MALLOC_ARENA_MAX"] = "2"
        settings = target.settings
        env[SPEC_ENV] = json.dumps({
            "name": target.function,
            "version": target.version,
            "qualifier": target.qualifier,
            "handler": settings["handler"],
            "codeDir": code_dir,
            "layerDirs": layer_dirs,
            "memoryMB": settings["memoryMB"],
            "timeoutMs": settings["timeoutMs"],
            "environment": settings.get("environment") or {},
            "region": self.region,
            "secret": self.secret,
            "logStream": f"{time.strftime('%Y/%m/%d')}/[{target.version}]{secrets.token_hex(8)}",
            "spawnedAt": time.time(),
            "provisioned": provisioned,
        })
        return env

    # --- host set ---------------------------------------------------------------------------

    @staticmethod
    def _hosts(pool: Pool) -> list[tuple[str, int]]:
        return [(f"unix:{i.socket}", 1) for i in pool.instances.values() if i.serving]

    def _push(self, name: str, pool: Pool) -> None:
        if pool.retired:  # its cluster is gone, or belongs to a new pool of the same name
            return
        try:
            self._core.set_endpoints(name, self._hosts(pool))
        except Exception as exc:  # the cluster is not in the running snapshot (yet)
            log.debug("set_endpoints(%s) refused: %s", name, exc)

    # --- observing --------------------------------------------------------------------------

    def stats(self, core_stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Lambda's metrics per function, with `versions` and `aliases` breakdowns."""
        clusters = (core_stats or {}).get("clusters") or {}
        by_function: dict[str, dict[str, list[tuple[ClusterMetrics, dict[str, int]]]]] = {}
        pools = {p.target.cluster: p for p in self._retired}
        pools.update(self.pools)
        for name, (t, metrics) in self._history.items():
            if name in clusters:  # the core's counter; kept once the cluster is gone
                self._throttles[name] = _throttles(clusters.get(name))
            pool = pools.get(name)
            instances = list(pool.instances.values()) if pool is not None else []
            live = {
                "busy": sum(1 for i in instances if i.state == "busy"),
                "instances": sum(1 for i in instances if i.state in ("starting", "idle", "busy")),
                "provisioned": sum(1 for i in instances if i.provisioned and i.serving),
                "provisioned_busy": sum(1 for i in instances
                                        if i.provisioned and i.state == "busy"),
                "throttles": self._throttles.get(name, 0),
            }
            entry = by_function.setdefault(t.function, {})
            part = (metrics, live)
            entry.setdefault("", []).append(part)
            entry.setdefault(f"v:{t.version}", []).append(part)
            if t.qualifier != LATEST and not t.qualifier.isdigit():
                entry.setdefault(f"a:{t.qualifier}", []).append(part)
        out: dict[str, Any] = {}
        for function, groups in sorted(by_function.items()):
            doc = summary(groups[""])
            doc["versions"] = {k[2:]: summary(v) for k, v in sorted(groups.items())
                               if k.startswith("v:")}
            doc["aliases"] = {k[2:]: summary(v) for k, v in sorted(groups.items())
                              if k.startswith("a:")}
            out[function] = doc
        return out

    def instances(self) -> list[dict[str, Any]]:
        return [
            {"cluster": pool.target.cluster, "function": pool.target.function,
             "qualifier": pool.target.qualifier, "version": pool.target.version,
             "id": i.id, "pid": i.pid, "state": i.state, "provisioned": i.provisioned,
             "socket": i.socket}
            for pool in self.pools.values() for i in pool.instances.values()
        ]


def _import_path() -> list[str]:
    """What an instance imports from: PYTHONPATH, then this interpreter's site-packages.

    Instances run with `python -S`: `site` (with the .pth files of an ordinary installation)
    costs 100+ ms of every cold start, while the directories it would add are listed here.
    Packages that rely on a .pth file's code are the price (docs/functions.md)."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    try:
        paths += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # a virtualenv's old site module
        paths += [p for p in sys.path if p.endswith("-packages")]
    return [os.path.abspath(p) for p in dict.fromkeys(paths) if os.path.isdir(p)]


def _throttles(cluster: Mapping[str, Any] | None) -> int:
    if not cluster:
        return 0
    for source in (cluster, cluster.get("function") or {}):
        value = source.get("rq_throttled") if isinstance(source, Mapping) else None
        if isinstance(value, int):
            return value
    return 0


def _kill(inst: Instance) -> None:
    process = inst.process
    if inst.ended or inst.pid is None or (process is not None and process.returncode is not None):
        return
    try:
        os.killpg(inst.pid, signal.SIGKILL)  # its own session: the worker and anything it started
    except (ProcessLookupError, PermissionError):
        try:  # a forked instance killed before its setsid()
            os.kill(inst.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


async def _lines(stream: trio.lowlevel.FdStream) -> Any:
    buffer = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
