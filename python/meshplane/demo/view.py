"""What the demo shows: a live `rich` display on a terminal, plain lines otherwise, a summary.

Client-side figures (rate, split per version, latency percentiles, errors) come from the
`LoadRecorder`; per-host figures (active requests, totals, health) from the proxy's stats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from meshplane.demo.load import LoadRecorder

__all__ = ["DemoView"]

REFRESH_S = 0.25
PLAIN_EVERY_S = 1.0

Stats = Callable[[], Mapping[str, Any]]


def _split(recorder: LoadRecorder) -> list[tuple[str, int, float]]:
    answered = sum(recorder.by_version.values()) or 1
    return [(v, n, 100.0 * n / answered) for v, n in sorted(recorder.by_version.items())]


def _hosts(stats: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    return [
        (cluster, host, hstats)
        for cluster, cstats in sorted((stats.get("clusters") or {}).items())
        for host, hstats in sorted((cstats.get("hosts") or {}).items())
    ]


class DemoView:
    """Renders the demo's figures; `run` refreshes them until cancelled."""

    def __init__(self, recorder: LoadRecorder, stats: Stats, *, header: str,
                 console: Console | None = None) -> None:
        self.recorder = recorder
        self.stats = stats
        self.header = header
        self.console = console or Console()
        if not self.console.is_terminal:
            # NOTE: rich assumes 80 columns off a terminal, which truncates host addresses.
            self.console.width = 120

    def _tables(self, final: bool) -> Group:
        r = self.recorder
        p50, p90, p99 = r.percentiles_ms(recent=not final)
        rate = r.total / max(r.elapsed, 1e-9) if final else r.recent_rps()
        head = Table.grid(padding=(0, 2))
        head.add_row(
            f"[bold]{'summary' if final else 'live'}[/]", f"{r.elapsed:6.1f} s",
            f"requests [bold]{r.total}[/]", f"{rate:7.1f} req/s", f"errors [bold]{r.error_total}[/]",
            f"x-canary {r.canary_requests}",
        )
        versions = Table(title="responses by version", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("version", "responses", "share"):
            versions.add_column(column, justify="right")
        for version, count, share in _split(r):
            versions.add_row(version, str(count), f"{share:5.1f} %")
        latency = Table(title=f"latency (client side, {'whole run' if final else 'last 2 s'})",
                        title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("p50", "p90", "p99"):
            latency.add_column(column, justify="right")
        latency.add_row(*(f"{v:.2f} ms" for v in (p50, p90, p99)))
        hosts = Table(title="upstream hosts (proxy stats)", title_justify="left", box=box.SIMPLE_HEAD)
        hosts.add_column("cluster", no_wrap=True, min_width=11)
        hosts.add_column("host", no_wrap=True, min_width=15)
        for column in ("active", "total", "2xx", "5xx", "err", "healthy"):
            hosts.add_column(column, justify="right")
        for cluster, host, h in _hosts(self.stats()):
            hosts.add_row(cluster, host, str(h.get("rq_active", 0)), str(h.get("rq_total", 0)),
                          str(h.get("rq_2xx", 0)), str(h.get("rq_5xx", 0)), str(h.get("rq_error", 0)),
                          "yes" if h.get("healthy", True) else "[red]no[/]")
        parts: list[Any] = [self.header, head, versions, latency, hosts]
        if r.errors:
            errors = Table(title="errors", title_justify="left", box=box.SIMPLE_HEAD)
            errors.add_column("kind")
            errors.add_column("count", justify="right")
            for kind, count in r.errors.most_common():
                errors.add_row(kind, str(count))
            parts.append(errors)
        return Group(*parts)

    def plain_line(self) -> str:
        r = self.recorder
        p50, p90, p99 = r.percentiles_ms()
        split = " ".join(f"{v}={share:.1f}%" for v, _, share in _split(r))
        return (f"t={r.elapsed:.1f}s rps={r.recent_rps():.0f} requests={r.total} {split} "
                f"p50={p50:.2f}ms p90={p90:.2f}ms p99={p99:.2f}ms errors={r.error_total}")

    async def run(self) -> None:
        """Refresh ~4x/s on a terminal, print a line per second otherwise; until cancelled."""
        if self.console.is_terminal:
            with Live(self._tables(False), console=self.console, refresh_per_second=4,
                      transient=True) as live:
                while True:
                    await trio.sleep(REFRESH_S)
                    live.update(self._tables(False))
        else:
            self.console.print(self.header, highlight=False)
            while True:
                await trio.sleep(PLAIN_EVERY_S)
                print(self.plain_line(), flush=True)

    def summary(self) -> None:
        """Print the final tables and one plain `requests=` line a script can read."""
        self.console.print(self._tables(True))
        r = self.recorder
        split = " ".join(f"{v}={n}" for v, n, _ in _split(r))
        print(f"summary: requests={r.total} {split} errors={r.error_total}", flush=True)
