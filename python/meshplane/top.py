"""`meshplane top [ADMIN_ADDRESS]`: a live terminal view of a running meshplane, as `top` is for
processes.

Every second it reads the admin API's `/stats?format=json` and shows, per listener, route and
cluster, the request rate, success ratio, p50/p99 latency, requests in flight and retries, and
every host that is ejected or unhealthy, with why. Keys: `s` (or `>`) next sort column, `<`
previous, `r` reverse, `q` quit; Ctrl-C (SIGINT) and SIGTERM quit too, with status 0. When the proxy cannot be reached it says so
and keeps trying.

Layers: `Sample`/`TopModel` are sans-I/O (stats dicts and timestamps in, rows out); `render`
turns rows into rich renderables; `run_top` is the Trio driver (HTTP/1.1 over h11, the keys,
`rich.live.Live`). Imports trio, h11, rich and the standard library; not the compiled core, so
`top` runs anywhere the package is installed, against a proxy on another host too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["SORT_KEYS", "Row", "TopModel", "fetch_stats", "parse_address", "render", "run_top"]

SORT_KEYS = ("rate", "success", "p50", "p99", "active", "retries", "name")
WINDOW = 10
"""Snapshots kept: rates use the last second, success ratio and latency the last 10 s."""


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT`, `PORT` or `http://HOST:PORT/` -> (host, port); default 127.0.0.1:9901."""
    text = text.strip().removeprefix("http://").rstrip("/")
    if not text:
        return "127.0.0.1", 9901
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not an admin address: {text!r} (expected HOST:PORT)")
    return host, int(port)


async def fetch_stats(host: str, port: int, timeout: float = 2.0) -> dict[str, Any]:
    """GET /stats?format=json over one HTTP/1.1 connection (h11), within `timeout` seconds."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method="GET", target="/stats?format=json",
                                  headers=[("host", f"{host}:{port}"), ("connection", "close")])
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status, body = 0, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    if status != 200:
        raise OSError(f"/stats answered {status}")
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise OSError("/stats?format=json did not return an object")
    return doc


@dataclass(frozen=True)
class Sample:
    at: float
    stats: Mapping[str, Any]


@dataclass
class Row:
    """One listener, route or cluster as shown; None where there is nothing to show yet."""

    kind: str
    name: str
    rate: float | None = None
    success: float | None = None
    p50: float | None = None
    p99: float | None = None
    active: int | None = None
    retries: int | None = None
    hosts: str = ""
    why: str = ""

    def key(self, column: str) -> Any:
        if column == "name":
            return self.name
        value = getattr(self, column)
        return -math.inf if value is None else value


@dataclass
class UnhealthyHost:
    cluster: str
    host: str
    flags: str
    why: str


def _num(section: Mapping[str, Any] | None, key: str) -> float:
    value = (section or {}).get(key, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def _responses(section: Mapping[str, Any] | None) -> tuple[float, float]:
    """(all responses, 5xx) of a stats section."""
    total = sum(_num(section, f"rq_{c}xx") for c in "12345")
    return total, _num(section, "rq_5xx")


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile of a per-bucket histogram, interpolated inside its bucket as Prometheus'
    `histogram_quantile` does; the highest bound when it falls in the overflow bucket."""
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    rank, cumulative = q * total, 0.0
    for i, count in enumerate(counts):
        if cumulative + count >= rank and count > 0:
            if i >= len(bounds):
                return float(bounds[-1])
            low = 0.0 if i == 0 else float(bounds[i - 1])
            return low + (float(bounds[i]) - low) * (rank - cumulative) / count
        cumulative += count
    return float(bounds[-1])


def _hist_delta(new: Any, old: Any) -> tuple[list[float], list[float]] | None:
    if not isinstance(new, Mapping):
        return None
    bounds = list(new.get("bounds") or [])
    counts = [float(c) for c in new.get("counts") or []]
    if isinstance(old, Mapping) and list(old.get("bounds") or []) == bounds:
        counts = [c - float(o) for c, o in zip(counts, old.get("counts") or [], strict=False)]
    return bounds, counts


def _failed_hc(host: Mapping[str, Any]) -> bool:
    # The core reports an ejected host as not healthy too; only the flag says health checks failed.
    return bool(host.get("failed_active_hc")) or (not host.get("healthy", True) and not host.get("ejected"))


def _why(host: Mapping[str, Any]) -> str:
    reasons = []
    od = host.get("outlier")
    if host.get("ejected"):
        reason = od.get("reason") if isinstance(od, Mapping) else None
        left = od.get("ejected_for_s") if isinstance(od, Mapping) else None
        text = f"ejected ({reason})" if reason else "ejected"
        reasons.append(text + (f" {left:.0f}s left" if isinstance(left, int | float) else ""))
    hc = host.get("active_hc")
    if _failed_hc(host):
        last = hc.get("last_result") if isinstance(hc, Mapping) else None
        reasons.append(f"failed health check ({last})" if last else "failed health check")
    return ", ".join(reasons)


@dataclass
class TopModel:
    """Successive stats snapshots in, rows out. Pure: the caller says what time it is."""

    window: int = WINDOW
    samples: deque[Sample] = field(default_factory=deque)

    def add(self, stats: Mapping[str, Any], at: float) -> None:
        self.samples.append(Sample(at, stats))
        while len(self.samples) > self.window + 1:
            self.samples.popleft()

    def _pair(self, section: str, name: str, back: int) -> tuple[Mapping[str, Any], Mapping[str, Any] | None, float]:
        newest = self.samples[-1]
        cur = (newest.stats.get(section) or {}).get(name) or {}
        if len(self.samples) < 2:
            return cur, None, 0.0
        old = self.samples[max(0, len(self.samples) - 1 - back)]
        return cur, (old.stats.get(section) or {}).get(name), newest.at - old.at

    def _row(self, kind: str, section: str, name: str) -> Row:
        cur, prev, dt = self._pair(section, name, 1)
        row = Row(kind, name)
        if prev is not None and dt > 0:
            row.rate = max(0.0, (_num(cur, "rq_total") - _num(prev, "rq_total")) / dt)
        wcur, wold, _ = self._pair(section, name, self.window)
        total, errors = _responses(wcur)
        if wold is not None:
            old_total, old_errors = _responses(wold)
            total, errors = total - old_total, errors - old_errors
        row.success = None if total <= 0 else 1.0 - errors / total
        if "rq_active" in cur:
            row.active = int(_num(cur, "rq_active"))
        if "rq_retry" in cur:
            row.retries = int(_num(cur, "rq_retry"))
        delta = _hist_delta(cur.get("rq_time_ms"), (wold or {}).get("rq_time_ms"))
        if delta is not None:
            row.p50, row.p99 = quantile(0.5, *delta), quantile(0.99, *delta)
        hosts = cur.get("hosts")
        if isinstance(hosts, Mapping):
            bad = [_why(h) for h in hosts.values() if _why(h)]
            row.hosts = f"{len(hosts) - len(bad)}/{len(hosts)}"
            ejected = sum(1 for h in hosts.values() if h.get("ejected"))
            failed = sum(1 for h in hosts.values() if _failed_hc(h))
            parts = ([f"{ejected} ejected"] if ejected else []) + ([f"{failed} failed hc"] if failed else [])
            row.why = ", ".join(parts)
        return row

    def rows(self, kind: str, sort: str = "rate", reverse: bool = False) -> list[Row]:
        """`kind` is listeners, routes or clusters; sorted by `sort`, largest first (names A-Z)."""
        if not self.samples:
            return []
        names = sorted((self.samples[-1].stats.get(kind) or {}).keys())
        rows = [self._row(kind, kind, name) for name in names]
        descending = sort != "name"
        rows.sort(key=lambda r: r.key(sort), reverse=descending != reverse)
        return rows

    def unhealthy_hosts(self) -> list[UnhealthyHost]:
        if not self.samples:
            return []
        out = []
        for cname, cluster in sorted((self.samples[-1].stats.get("clusters") or {}).items()):
            for addr, host in sorted((cluster.get("hosts") or {}).items()):
                why = _why(host)
                if why:
                    out.append(UnhealthyHost(cname, addr, str(host.get("health_flags", "")), why))
        return out


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _fmt_int(v: int | None) -> str:
    return "-" if v is None else str(v)


def _table(title: str, rows: list[Row], sort: str, *, latency: bool, hosts: bool) -> Table:
    table = Table(title=title, title_justify="left", expand=True, header_style="bold")
    columns = [("name", "NAME"), ("rate", "RQ/S"), ("success", "SUCCESS"), ("p50", "P50 MS"),
               ("p99", "P99 MS"), ("active", "ACTIVE"), ("retries", "RETRIES")]
    if not latency:
        columns = [c for c in columns if c[0] not in ("p50", "p99", "retries")]
    for key, label in columns:
        mark = "*" if key == sort else ""
        table.add_column(label + mark, justify="left" if key == "name" else "right",
                         no_wrap=key != "name", ratio=3 if key == "name" else 1)
    if hosts:
        table.add_column("HOSTS OK", justify="right")
        table.add_column("EJECTED / UNHEALTHY", ratio=2)
    for row in rows:
        cells = [row.name, _fmt_rate(row.rate), _fmt_pct(row.success), _fmt_ms(row.p50),
                 _fmt_ms(row.p99), _fmt_int(row.active), _fmt_int(row.retries)]
        if not latency:
            cells = [cells[0], cells[1], cells[2], cells[5]]
        style = "red" if row.success is not None and row.success < 0.99 else None
        if hosts:
            cells += [row.hosts, row.why]
        table.add_row(*cells, style=style)
    return table


def render(model: TopModel, address: str, sort: str, reverse: bool, frames: int,
           error: str | None) -> Group:
    """The whole screen: a header line, then the listener, route, cluster and host tables."""
    latest = model.samples[-1].stats if model.samples else {}
    order = f"sort: {sort}{' (reversed)' if reverse else ''}"
    header = Text(f"meshplane top - {address}  version {latest.get('version', '?')}  {order}  "
                  f"refresh #{frames}  [s/</>] sort  [r] reverse  [q] quit", style="bold")
    parts: list[Any] = [header]
    if error is not None:
        parts.append(Text(f"cannot reach meshplane admin at {address}: {error}; retrying every second",
                          style="bold red"))
    if model.samples:
        parts.append(_table("Listeners", model.rows("listeners", sort, reverse), sort, latency=False, hosts=False))
        parts.append(_table("Routes", model.rows("routes", sort, reverse), sort, latency=False, hosts=False))
        parts.append(_table("Clusters", model.rows("clusters", sort, reverse), sort, latency=True, hosts=True))
        bad = model.unhealthy_hosts()
        hosts = Table(title="Ejected or unhealthy hosts", title_justify="left", expand=True, header_style="bold")
        for label in ("CLUSTER", "HOST", "FLAGS", "WHY"):
            hosts.add_column(label)
        for h in bad:
            hosts.add_row(h.cluster, h.host, h.flags, h.why, style="red")
        if not bad:
            hosts.add_row("-", "none", "", "")
        parts.append(hosts)
    return Group(*parts)


@dataclass
class _ViewState:
    sort: str
    reverse: bool = False
    frames: int = 0


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[bool]:
    """Keys without Enter and without echo while inside; the terminal restored on the way out."""
    try:
        import termios
        import tty
    except ImportError:  # pragma: no cover - not a POSIX terminal
        yield False
        return
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_top(address: str, *, sort: str = "rate", interval: float = 1.0, once: bool = False,
                  console: Console | None = None) -> int:
    """Show the live view until `q` or Ctrl-C (exit status 0). With `once`, print one frame and
    return 1 if the proxy could not be reached. Cancellation restores the terminal."""
    host, port = parse_address(address)
    shown = f"{host}:{port}"
    console = console or Console()
    model = TopModel()
    state = _ViewState(sort if sort in SORT_KEYS else "rate")

    async def poll() -> str | None:
        try:
            model.add(await fetch_stats(host, port), time.monotonic())
            return None
        except (OSError, trio.TooSlowError, h11.ProtocolError, ValueError) as exc:
            return str(exc) or type(exc).__name__

    error: str | None = None
    if once:
        error = await poll()
        if error is None and interval > 0:
            await trio.sleep(interval)  # a second sample, so rates can be shown
            error = await poll()
        console.print(render(model, shown, state.sort, False, 1, error))
        return 0 if error is None else 1

    stdin = sys.stdin.fileno()
    with _cbreak(stdin) as keys, Live(console=console, auto_refresh=False, screen=True,
                                      transient=False) as live:
        quit_event = trio.Event()

        async def read_keys() -> None:
            stream = trio.lowlevel.FdStream(os.dup(stdin))
            async with stream:
                while not quit_event.is_set():
                    data = await stream.receive_some(64)
                    if not data:
                        return
                    for ch in data.decode(errors="ignore"):
                        current = SORT_KEYS.index(state.sort)
                        if ch in "qQ":
                            quit_event.set()
                        elif ch in "s>":
                            state.sort = SORT_KEYS[(current + 1) % len(SORT_KEYS)]
                        elif ch == "<":
                            state.sort = SORT_KEYS[(current - 1) % len(SORT_KEYS)]
                        elif ch in "rR":
                            state.reverse = not state.reverse
                    redraw()

        def redraw() -> None:
            live.update(render(model, shown, state.sort, state.reverse, state.frames, error), refresh=True)

        async def quit_on_interrupt() -> None:
            # Ctrl-C quits like `q`: a clean exit, not a KeyboardInterrupt through the nursery.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    quit_event.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(quit_on_interrupt)
            if keys:
                nursery.start_soon(read_keys)

            async def refresh() -> None:
                nonlocal error
                while True:
                    error = await poll()
                    state.frames += 1
                    redraw()
                    await trio.sleep(interval)

            nursery.start_soon(refresh)
            await quit_event.wait()
            nursery.cancel_scope.cancel()
    return 0
