"""The demo's load driver: keep-alive HTTP/1.1 clients (trio sockets + h11) with a rate limit.

Clients connect only to 127.0.0.1. A shared `Pacer` spaces requests to at most `rps_limit` per
second across all clients and stops them after `max_requests`. `LoadRecorder` keeps what the
view shows: totals per version, errors, and client-side latencies (a recent window for the
live figures, a bounded uniform sample for the summary).
"""

from __future__ import annotations

import json
import random
from collections import Counter, deque
from dataclasses import dataclass, field

import h11
import trio

__all__ = ["LoadDriver", "LoadRecorder", "Pacer", "percentile"]

SAMPLE_SIZE = 100_000
WINDOW_S = 2.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class Pacer:
    """Spaces requests evenly at `rate` per second; optionally stops after `limit` requests."""

    def __init__(self, rate: float, limit: int | None = None) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self.remaining = limit

    async def wait(self) -> bool:
        """Sleep until this request's slot; False once the request budget is spent."""
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        now = float(trio.current_time())
        # Slots never lie in the past: a client that fell behind does not cause a burst.
        slot = max(self._next, now)
        self._next = slot + self._interval
        await trio.sleep_until(slot)
        return True


@dataclass
class LoadRecorder:
    """Client-side results of the demo's requests."""

    total: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    canary_requests: int = 0
    started_at: float = field(default_factory=trio.current_time)
    _recent: deque[tuple[float, float]] = field(default_factory=deque)
    _sample: list[float] = field(default_factory=list)
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    def record(self, latency_s: float, version: str | None, error: str | None, canary: bool) -> None:
        now = float(trio.current_time())
        self.total += 1
        self.canary_requests += canary
        if error is not None:
            self.errors[error] += 1
        if version is not None:
            self.by_version[version] += 1
        self._recent.append((now, latency_s))
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()
        # Reservoir sampling (Algorithm R): a uniform sample of every latency, bounded in size.
        if len(self._sample) < SAMPLE_SIZE:
            self._sample.append(latency_s)
        else:
            slot = self._rng.randrange(self.total)
            if slot < SAMPLE_SIZE:
                self._sample[slot] = latency_s

    def recent_rps(self) -> float:
        now = float(trio.current_time())
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()
        span = min(WINDOW_S, max(now - self.started_at, 1e-9))
        return len(self._recent) / span

    def percentiles_ms(self, recent: bool = True) -> tuple[float, float, float]:
        """p50, p90, p99 in milliseconds, of the last seconds or of the whole run."""
        values = sorted(lat for _, lat in self._recent) if recent else sorted(self._sample)
        p50, p90, p99 = (percentile(values, q) * 1000 for q in (50, 90, 99))
        return p50, p90, p99

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    @property
    def elapsed(self) -> float:
        return float(trio.current_time()) - self.started_at


async def _exchange(
    stream: trio.SocketStream, conn: h11.Connection, target: str, headers: list[tuple[str, str]]
) -> tuple[int, bytes]:
    request = h11.Request(method="GET", target=target, headers=[("host", "127.0.0.1"), *headers])
    await stream.send_all(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
    status, body = 0, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            raise trio.BrokenResourceError("connection closed before the response ended")


class LoadDriver:
    """`clients` keep-alive connections to 127.0.0.1:`port`, paced by `pacer`.

    About `canary_share` of requests carry `x-canary: true`. `run` returns when the pacer's
    budget is spent; cancel it to stop earlier (requests in flight are abandoned).
    """

    def __init__(
        self, port: int, recorder: LoadRecorder, pacer: Pacer, *, clients: int = 8,
        canary_share: float = 0.05, path: str = "/checkout",
    ) -> None:
        self.port = port
        self.recorder = recorder
        self.pacer = pacer
        self.clients = clients
        self.canary_share = canary_share
        self.path = path

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.clients):
                nursery.start_soon(self._client, random.Random())

    async def _client(self, rng: random.Random) -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            except OSError:
                if not await self.pacer.wait():
                    return
                self.recorder.record(0.0, None, "connect", False)
                continue
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                while True:
                    if not await self.pacer.wait():
                        return
                    if not await self._one(stream, conn, rng):
                        break  # reconnect
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        break
                    conn.start_next_cycle()

    async def _one(self, stream: trio.SocketStream, conn: h11.Connection, rng: random.Random) -> bool:
        canary = rng.random() < self.canary_share
        headers = [("x-canary", "true")] if canary else []
        start = trio.current_time()
        try:
            status, body = await _exchange(stream, conn, self.path, headers)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            self.recorder.record(trio.current_time() - start, None, type(exc).__name__, canary)
            return False
        latency = trio.current_time() - start
        version: str | None = None
        if status == 200:
            try:
                version = str(json.loads(body)["version"])
            except (ValueError, KeyError, TypeError):
                version = "?"
        self.recorder.record(latency, version, None if status == 200 else str(status), canary)
        return True
