"""Building blocks of the data-plane end-to-end tests: snapshot documents, the proxy under test,
and upstream servers that count what they see.

- `H1Upstream`: a Trio/h11 HTTP/1.1 server whose handler has full control of each exchange
  (stream, stall, reset, write raw bytes); it counts connections and concurrent requests.
- `AsgiEcho`: an ASGI app served by hypercorn (HTTP/1.1 and h2c prior knowledge on one port).
- `TcpEcho`: a Trio TCP echo server (optional greeting, honours half-close).
- `GrpcUpstream`: a grpcio server with raw-bytes methods (no protobuf), in its own threads.

Everything binds 127.0.0.1 port 0 and reports the bound port through `task_status.started`;
nothing here sleeps to wait for readiness. The servers' listening and HTTP/1.1 connection loop
are `..common`'s, shared with the resilience and TLS packages. Imports only the compiled core
and test libraries.
"""

from __future__ import annotations

import hashlib
import json
import random
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import h11
import trio
from meshplane._core import Core

from ..asgi import lifespan, serve_asgi
from ..common import LOCALHOST, Reset, TcpServer, next_event, rst_close, serve_h11

__all__ = [
    "LOCALHOST", "AsgiEcho", "Exchange", "GrpcUpstream", "H1Upstream", "Handler", "Proxy",
    "RawH2", "Seen", "TcpEcho", "Targets", "Upstreams", "cluster", "echo", "http_listener",
    "one_route", "pattern", "prefix", "route", "sha256", "snapshot", "stop_core", "table",
    "tcp_listener", "vhost",
]

# ---------------------------------------------------------------------------------------------
# Snapshot documents (rust/src/config/mod.rs, serde camelCase)
# ---------------------------------------------------------------------------------------------

Targets = str | Sequence[tuple[str, int]]


def _targets(to: Targets) -> list[dict[str, Any]]:
    if isinstance(to, str):
        return [{"cluster": to, "weight": 1}]
    return [{"cluster": c, "weight": w} for c, w in to]


def snapshot(listeners: list[dict[str, Any]], tables: dict[str, Any],
             clusters: list[dict[str, Any]], version: str = "v1") -> dict[str, Any]:
    return {"schema": 1, "version": version, "listeners": listeners, "routeTables": tables,
            "clusters": clusters}


def http_listener(name: str = "l", table: str = "t", address: str = f"{LOCALHOST}:0",
                  **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": address, "protocol": "http", "routeTable": table, **extra}


def tcp_listener(name: str, to: Targets, address: str = f"{LOCALHOST}:0",
                 **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": address, "protocol": "tcp", "tcpClusters": _targets(to),
            **extra}


def table(*virtual_hosts: dict[str, Any]) -> dict[str, Any]:
    return {"virtualHosts": list(virtual_hosts)}


def vhost(name: str, routes: list[dict[str, Any]], domains: Sequence[str] = ("*",)) -> dict[str, Any]:
    return {"name": name, "domains": list(domains), "routes": routes}


def route(name: str, to: Targets | None = None, *, match: dict[str, Any] | None = None,
          next_table: str | None = None, **action: Any) -> dict[str, Any]:
    """A route to weighted clusters (`to`) or on into another table (`next_table`). `action`
    takes the remaining action fields (rewrite, timeoutMs, retry) as they are spelled."""
    act: dict[str, Any] = dict(action)
    if to is not None:
        act["clusters"] = _targets(to)
    if next_table is not None:
        act["routeTable"] = next_table
    return {"name": name, "match": match or {}, "action": act}


def prefix(value: str, **more: Any) -> dict[str, Any]:
    return {"path": {"kind": "prefix", "value": value}, **more}


def cluster(name: str, endpoints: Iterable[str | tuple[str, int]], protocol: str = "http1",
            **extra: Any) -> dict[str, Any]:
    eps = [{"address": e, "weight": 1} if isinstance(e, str) else {"address": e[0], "weight": e[1]}
           for e in endpoints]
    return {"name": name, "protocol": protocol, "endpoints": eps, **extra}


def one_route(endpoints: Iterable[str | tuple[str, int]], protocol: str = "http1", *,
              cluster_extra: dict[str, Any] | None = None, **action: Any) -> dict[str, Any]:
    """Listener "l" → table "t" → route "r" (every path) → cluster "c"."""
    return snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [route("r", "c", match=prefix("/"), **action)]))},
        [cluster("c", endpoints, protocol, **(cluster_extra or {}))],
    )


# ---------------------------------------------------------------------------------------------
# The proxy under test
# ---------------------------------------------------------------------------------------------


class Proxy:
    """A `Core` with one snapshot applied, and the addresses its listeners got."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def apply(self, doc: dict[str, Any]) -> str:
        return self.core.apply(json.dumps(doc).encode())

    def port(self, listener: str = "l") -> int:
        return self.core.listeners()[listener][1]

    def url(self, path: str = "/", listener: str = "l") -> str:
        return f"http://{LOCALHOST}:{self.port(listener)}{path}"

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    def cluster_stats(self, name: str = "c") -> dict[str, Any]:
        return self.core.stats()["clusters"][name]

    def host_stats(self, cluster_name: str, address: str) -> dict[str, Any]:
        return self.cluster_stats(cluster_name)["hosts"][address]


def stop_core(core: Core, drain_ms: int = 200, wait_s: float = 5.0) -> bool:
    """Shut the core down and wait (bounded) for its ("stopped", ...) event."""
    core.shutdown(drain_ms)
    fd = core.wakeup_fd()
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        if any(event.kind == "stopped" for event in core.drain_events()):
            return True
        select.select([fd], [], [], left)
    return False


# ---------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------


def pattern(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes, so both ends can hash the same body."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 upstream on Trio + h11
# ---------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    conn: int

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class Exchange:
    """One request/response on an `H1Upstream` connection, driven by the handler."""

    def __init__(self, server: H1Upstream, stream: trio.SocketStream, conn: h11.Connection,
                 request: h11.Request, conn_id: int) -> None:
        self.server = server
        self._stream = stream
        self._conn = conn
        self.seen = Seen(request.method.decode(), request.target.decode(),
                         [(k.decode().lower(), v.decode("latin-1")) for k, v in request.headers],
                         conn_id)

    @property
    def path(self) -> str:
        return self.seen.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.seen.target.partition("?")[2], keep_blank_values=True)

    async def _next(self) -> Any:
        return await next_event(self._conn, self._stream)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The request body as it arrives."""
        while self._conn.their_state is h11.SEND_BODY:
            ev = await self._next()
            if isinstance(ev, h11.Data):
                yield bytes(ev.data)
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def body(self) -> bytes:
        return b"".join([c async for c in self.chunks()])

    async def _send(self, event: Any) -> None:
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)

    async def start(self, status: int = 200, headers: Sequence[tuple[str, str]] = ()) -> None:
        hs = [("x-server", self.server.name), *headers]
        await self._send(h11.Response(status_code=status, headers=hs))

    async def send(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def respond(self, status: int = 200, headers: Sequence[tuple[str, str]] = (),
                      body: bytes = b"") -> None:
        await self.start(status, [("content-length", str(len(body))), *headers])
        if body:
            await self.send(body)
        await self.end()

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight to the socket, past h11 (garbage, half a response head)."""
        await self._stream.send_all(data)

    def reset(self) -> None:
        """Abort the connection with a TCP RST."""
        rst_close(self._stream.socket)
        raise Reset


Handler = Callable[[Exchange], Awaitable[None]]


async def echo(ex: Exchange) -> None:
    """Answer 200 with a JSON description of the request as received."""
    body = await ex.body()
    doc = {"server": ex.server.name, "method": ex.seen.method, "target": ex.seen.target,
           "path": ex.path, "headers": ex.seen.headers, "body_len": len(body),
           "body_sha256": sha256(body), "conn": ex.seen.conn}
    await ex.respond(200, [("content-type", "application/json")], json.dumps(doc).encode())


@dataclass
class H1Upstream(TcpServer):
    """An HTTP/1.1 server with counters; `handler` decides each exchange (default: `echo`)."""

    name: str
    handler: Handler = echo
    accepted: int = 0
    open: int = 0
    max_open: int = 0
    requests: int = 0
    active: int = 0
    max_active: int = 0
    seen: list[Seen] = field(default_factory=list)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn_id = self.accepted
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await serve_h11(stream, partial(self._exchange, stream, conn_id))
        finally:
            self.open -= 1

    async def _exchange(self, stream: trio.SocketStream, conn_id: int, conn: h11.Connection,
                        request: h11.Request) -> None:
        ex = Exchange(self, stream, conn, request, conn_id)
        self.seen.append(ex.seen)
        self.requests += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.handler(ex)
        finally:
            self.active -= 1
        async for _ in ex.chunks():  # what the handler left unread
            pass


# ---------------------------------------------------------------------------------------------
# hypercorn (HTTP/1.1 + h2c) upstream
# ---------------------------------------------------------------------------------------------


class AsgiEcho:
    """An ASGI app that echoes each request as JSON, with a few special paths:

    - `/download?size=N&seed=S`: N pseudo-random bytes (`pattern`), streamed in 64 KiB chunks.
    - `/hold`: waits until `release` is set before answering (for concurrency counts).
    Counts requests, concurrent requests, and distinct client (proxy-side) addresses, i.e.
    upstream connections.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self.clients: set[tuple[str, int]] = set()
        self.versions: list[str] = []
        self.release = trio.Event()

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return
        self.requests += 1
        self.clients.add(tuple(scope["client"]))
        self.versions.append(scope["http_version"])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self._http(scope, receive, send)
        finally:
            self.active -= 1

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        digest, size = hashlib.sha256(), 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            if not msg.get("more_body", False):
                break
        query = parse_qs(scope["query_string"].decode(), keep_blank_values=True)
        base = [(b"x-server", self.name.encode())]
        if scope["path"] == "/download":
            data = pattern(int(query["size"][0]), int(query.get("seed", ["0"])[0]))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*base, (b"content-type", b"application/octet-stream")]})
            for i in range(0, len(data), 65536):
                await send({"type": "http.response.body", "body": data[i:i + 65536],
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["path"] == "/hold":
            await self.release.wait()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        doc = {"server": self.name, "http_version": scope["http_version"],
               "method": scope["method"], "path": scope["path"],
               "query": scope["query_string"].decode(), "headers": headers,
               "body_len": size, "body_sha256": digest.hexdigest(),
               "client": list(scope["client"])}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*base, (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(doc).encode()})


# ---------------------------------------------------------------------------------------------
# TCP echo upstream
# ---------------------------------------------------------------------------------------------


@dataclass
class TcpEcho(TcpServer):
    """Echoes bytes; sends `greeting` first; on the client's EOF, finishes echoing then sends
    EOF itself (half-close honoured)."""

    name: str
    greeting: bytes = b""
    accepted: int = 0

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        try:
            if self.greeting:
                await stream.send_all(self.greeting)
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()


# ---------------------------------------------------------------------------------------------
# gRPC upstream (grpcio, raw bytes, no protobuf)
# ---------------------------------------------------------------------------------------------


class GrpcUpstream:
    """`/test.Echo/Unary`: b"echo:" + request, trailing metadata x-trailer=kept; the request
    b"missing" aborts with NOT_FOUND "no such widget". `/test.Echo/Stream`: request is a count
    N, answers N messages b"msg-i" then trailing metadata x-count=N. `/test.Echo/Flaky`: fails
    UNAVAILABLE (trailers-only) while `flaky[0] > 0`, decrementing it; `flaky` may be shared
    by several servers. Each server counts its calls in `calls`."""

    def __init__(self, flaky: list[int] | None = None) -> None:
        import grpc

        self._grpc = grpc
        self.flaky = flaky if flaky is not None else [0]
        self.calls = 0
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
            "Flaky": grpc.unary_unary_rpc_method_handler(self._flaky),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"{LOCALHOST}:0")
        self.server.start()

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def _unary(self, request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("x-trailer", "kept"),))
        if request == b"missing":
            context.abort(self._grpc.StatusCode.NOT_FOUND, "no such widget")
        return b"echo:" + request

    def _flaky(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        if self.flaky[0] > 0:
            self.flaky[0] -= 1
            context.abort(self._grpc.StatusCode.UNAVAILABLE, "try another")
        return b"ok:" + request

    def _stream(self, request: bytes, context: Any) -> Iterable[bytes]:
        n = int(request)
        for i in range(n):
            yield f"msg-{i}".encode()
        context.set_trailing_metadata((("x-count", str(n)),))

    def stop(self) -> None:
        self.server.stop(0)


# ---------------------------------------------------------------------------------------------
# Starting upstreams in the test's nursery
# ---------------------------------------------------------------------------------------------


class Upstreams:
    """Starts upstream servers in a nursery that lives as long as the test."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._count = 0

    def _name(self, name: str | None) -> str:
        self._count += 1
        return name or f"up{self._count}"

    async def h1(self, handler: Handler = echo, name: str | None = None) -> H1Upstream:
        up = H1Upstream(self._name(name), handler)
        return await self._nursery.start(up.run)

    async def asgi(self, name: str | None = None) -> AsgiEcho:
        app = AsgiEcho(self._name(name))
        app.port = await serve_asgi(self._nursery, app, keep_alive_timeout=120,
                                    h2_max_concurrent_streams=1000)
        return app

    async def tcp_echo(self, greeting: bytes = b"", name: str | None = None) -> TcpEcho:
        up = TcpEcho(self._name(name), greeting)
        return await self._nursery.start(up.run)


# ---------------------------------------------------------------------------------------------
# A raw HTTP/2 client (h2 state machine over a Trio stream)
# ---------------------------------------------------------------------------------------------


class RawH2:
    """Cleartext HTTP/2 with prior knowledge, driven frame by frame: for bursts written in one
    TCP segment and for malformed input. Use as `async with await RawH2.connect(port) as c`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        import h2.config
        import h2.connection

        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.status: dict[int, int] = {}
        self.ended: set[int] = set()
        self.terminated: Any = None  # h2.events.ConnectionTerminated, once received

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        return cls(await trio.open_tcp_stream(LOCALHOST, port))

    async def __aenter__(self) -> RawH2:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    def request(self, path: str, port: int, method: str = "GET") -> int:
        """Queue a body-less request; returns its stream id (nothing is sent yet)."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "http"),
                                     (":authority", f"{LOCALHOST}:{port}")], end_stream=True)
        return sid

    async def flush(self, extra: bytes = b"") -> None:
        """Send everything queued (plus raw `extra` bytes) in one write."""
        await self.stream.send_all(self.conn.data_to_send() + extra)

    async def pump(self) -> bool:
        """Read once and process the events; False at EOF."""
        import h2.events

        data = await self.stream.receive_some(65536)
        if not data:
            return False
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                self.status[ev.stream_id] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = ev
        await self.flush()
        return True

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            if not await self.pump():
                return
