"""The admin HTTP/1.1 API on Trio + h11, and the small keep-alive server it runs on.

`serve_http(handler, host, port)` is a robust HTTP/1.1 server: keep-alive, bounded request
heads and bodies, an idle timeout, and no client can take it down (a malformed request gets
400 and a close; a handler that raises gets 500). `AdminAPI` is the handler for the admin
endpoints (docs/admin.md); the demo's upstream services reuse `serve_http` too.

Layer: imports trio, h11, `meshplane._bridge`, `admin.prometheus`, `admin.certs`,
`admin.async_metrics` and `config.tls`; not `meshplane.runtime`.
It serves any object with the `AdminView` protocol, which `meshplane.Proxy` implements.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import h11
import trio

from meshplane._bridge import TaskStatus
from meshplane.admin.async_metrics import async_metrics
from meshplane.admin.certs import certs_document, tls_metrics
from meshplane.admin.envoy_names import EnvoyContext, render_envoy
from meshplane.admin.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from meshplane.admin.prometheus import render_parts as render_prometheus_parts
from meshplane.admin.registry import registry_json, registry_lines, registry_metrics
from meshplane.config.tls import trust_files

__all__ = ["AdminAPI", "AdminView", "Request", "Response", "serve_admin", "serve_http"]

log = logging.getLogger("meshplane.admin")

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 60.0
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
LAMBDA_PREFIX = "/2015-03-31/"


@dataclass(frozen=True)
class Request:
    """One request as a handler sees it; header names are lower-case."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


# A body at least this big is written after the head, not copied onto it.
_SEPARATE_BODY_BYTES = 64 * 1024


class Pieces(Protocol):
    """A body part kept elsewhere (`meshplane._core.Text`), read in pieces of bounded size."""

    def __len__(self) -> int: ...

    def piece(self, start: int, size: int) -> bytes: ...


@dataclass(frozen=True)
class Response:
    """One answer. `body` is bytes, or a tuple of parts sent one after the other (a large body
    in parts, never joined): byte strings, or `Pieces` read a bounded piece at a time."""

    status: int
    body: bytes | tuple[bytes | Pieces, ...] = b""
    content_type: str = TEXT
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def text(cls, status: int, text: str, **kw: Any) -> Response:
        return cls(status, text.encode(), **kw)

    @classmethod
    def json(cls, status: int, doc: Any) -> Response:
        return cls(status, (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode(), JSON)


Handler = Callable[[Request], Awaitable[Response]]

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


TooLarge = Callable[[Request], Response]
"""Builds the answer to a request whose body passed the limit, from its head (empty body)."""


def _too_large(request: Request) -> Response:
    return Response.text(413, "request body too large\n", headers=[("connection", "close")])


@dataclass(frozen=True)
class _Limits:
    max_body: int = MAX_BODY_BYTES
    too_large: TooLarge = _too_large


async def serve_http(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_body: int = MAX_BODY_BYTES,
    too_large: TooLarge | None = None,
    task_status: TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handler` over HTTP/1.1 on host:port until cancelled.

    A request body over `max_body` bytes is not handed to `handler`: the rest of it is read and
    dropped (up to 4 times the limit, so the client sees the answer rather than a reset) and
    `too_large(request head)` answers (default: 413 text), closing the connection.
    Reading a request and sending its response each have IDLE_TIMEOUT_S; the handler itself
    is not bounded here (an invocation may run for minutes).

    Reports the bound (host, port) with `task_status.started` once it accepts connections (port
    0 binds an ephemeral port). On cancellation it stops accepting and closes every connection,
    including ones mid-request.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    task_status.started((str(bound_host), int(bound_port)))
    limits = _Limits(max_body, too_large or _too_large)
    await trio.serve_listeners(partial(_serve_connection, handler, limits), listeners)


async def _receive_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


async def _read_request(
    stream: trio.SocketStream, conn: h11.Connection, limits: _Limits
) -> Request | Response | None:
    """The next request; a Response to send instead (413); None when the client closed."""
    event = await _receive_event(stream, conn)
    if not isinstance(event, h11.Request):
        return None
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
    head = Request(event.method.decode("ascii"), event.target.decode("latin-1"), headers)
    body = bytearray()
    seen = 0
    while True:
        part = await _receive_event(stream, conn)
        if isinstance(part, h11.Data):
            seen += len(part.data)
            if seen <= limits.max_body:
                body += part.data
            elif seen > 4 * limits.max_body:
                break
        elif isinstance(part, h11.EndOfMessage):
            break
        else:  # closed mid-body
            return None
    if seen > limits.max_body:
        return limits.too_large(head)
    return Request(head.method, head.target, headers, bytes(body))


async def _send(stream: trio.SocketStream, conn: h11.Connection, response: Response, *, head: bool) -> None:
    parts = response.body if isinstance(response.body, tuple) else (response.body,)
    length = sum(len(part) for part in parts)
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(length)),
        ("server", "meshplane"),
        *response.headers,
    ]
    reason = _REASONS.get(response.status, b"")
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b""
    if head or length < _SEPARATE_BODY_BYTES:
        for part in () if head else parts:
            if part:
                data += conn.send(h11.Data(data=_whole(part))) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        return
    # NOTE: a scrape of 10,000 hosts is ~12 MB: each copy of it is milliseconds on the Trio
    # thread, so the parts go out as they are, a bounded piece per task step.
    await stream.send_all(data)
    step = _SEPARATE_BODY_BYTES * 4
    for part in parts:
        if isinstance(part, bytes):
            with memoryview(part) as view:
                for start in range(0, len(view), step):
                    piece = bytes(view[start : start + step])
                    await stream.send_all(conn.send(h11.Data(data=piece)) or b"")
        else:
            for start in range(0, len(part), step):
                await stream.send_all(conn.send(h11.Data(data=part.piece(start, step))) or b"")
    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


def _whole(part: bytes | Pieces) -> bytes:
    return part if isinstance(part, bytes) else part.piece(0, len(part))


async def _serve_one(
    handler: Handler, limits: _Limits, stream: trio.SocketStream, conn: h11.Connection
) -> bool:
    """Read one request, answer it; True when the connection may carry another."""
    # An idle keep-alive connection, a slow request and a client that stops reading are all
    # closed after IDLE_TIMEOUT_S; the handler's own time is not counted.
    request: Request | Response | None = None
    with trio.move_on_after(IDLE_TIMEOUT_S):
        request = await _read_request(stream, conn, limits)
    if request is None:
        return False
    if isinstance(request, Response):  # refused before the handler saw it
        with trio.move_on_after(IDLE_TIMEOUT_S):
            await _send(stream, conn, request, head=False)
        return False
    try:
        response = await handler(request)
    except Exception:
        log.exception("handler failed on %s %s", request.method, request.target)
        response = Response.text(500, "internal error\n")
    with trio.move_on_after(IDLE_TIMEOUT_S) as sending:
        await _send(stream, conn, response, head=request.method == "HEAD")
    if sending.cancelled_caught:
        return False
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


async def _serve_connection(handler: Handler, limits: _Limits, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        while True:
            if await _serve_one(handler, limits, stream, conn):
                conn.start_next_cycle()
                continue
            return
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            refusal = Response.text(
                exc.error_status_hint, f"bad request: {exc}\n", headers=[("connection", "close")]
            )
            try:
                await _send(stream, conn, refusal, head=False)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:
        log.exception("HTTP connection failed")
    finally:
        await stream.aclose()


class AdminView(Protocol):
    """What the admin API reads from a running proxy."""

    @property
    def state(self) -> str:
        """Server state: "LIVE" when serving, else "INITIALIZING" or "DRAINING"."""

    def stats(self, *, hosts: bool = True) -> dict[str, Any]: ...

    async def read_stats(self, *, hosts: bool = True) -> dict[str, Any]:
        """`stats()`, made off the Trio thread."""

    async def read_stats_hosts_json(self) -> dict[str, Any]:
        """`read_stats()` with each cluster's "hosts" as JSON text (bytes) for its place."""

    async def read_clusters(self, *, as_json: bool = False) -> tuple[dict[str, Any], Any]:
        """`read_stats(hosts=False)` and the hosts' `/clusters` part (bytes, or with `as_json`
        `[(cluster, host_statuses JSON text)]`)."""

    async def read_host_metrics(self) -> Pieces:
        """`host_metrics()` (the `meshplane_host_*` families), written off the Trio thread."""

    def listener_addresses(self) -> dict[str, tuple[str, int]]: ...

    def config_dump(self) -> dict[str, Any]: ...

    def tls_info(self) -> dict[str, Any]: ...

    def recent_spans(self) -> list[dict[str, Any]]: ...


ENDPOINTS = {
    "/": "this list",
    "/ready": "200 LIVE when serving, else 503 and the state",
    "/stats": "Prometheus text 0.0.4, meshplane's and Envoy's names (?format=json: the raw stats)",
    "/stats/prometheus": "the same as /stats (Envoy's path, for existing scrape configs)",
    "/clusters": "per-host state, cluster::host::stat::value (?format=json)",
    "/config_dump": "version, source, native config and compiled snapshot (JSON)",
    "/listeners": "listener names and bound addresses (?format=json)",
    "/certs": "certificates in use: subject, SANs, expiry, reloads (JSON, like Envoy's /certs)",
    "/traces": "recent recorded spans, newest first (?route=NAME, ?slow=1: slowest first, ?limit=N)",
}


def json_parts(doc: Any) -> tuple[bytes, ...]:
    """`Response.json(200, doc)`'s body, where every bytes value in `doc` is JSON text already
    written for its place (`json.dumps(..., indent=2)` at that depth; the core writes the
    hosts so), spliced in as it is: the parts are sent one after another, never joined."""
    marker = f"\x00{secrets.token_hex(16)}"
    texts: list[bytes] = []

    def splice(value: Any) -> str:
        if isinstance(value, bytes):
            texts.append(value)
            return marker
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    encoded = json.dumps(doc, indent=2, sort_keys=False, default=splice) + "\n"
    pieces = encoded.split(json.dumps(marker))
    assert len(pieces) == len(texts) + 1, "a spliced JSON text went missing"
    parts = [pieces[0].encode()]
    for text, piece in zip(texts, pieces[1:], strict=True):
        parts += [text, piece.encode()]
    return tuple(parts)


def clusters_text(stats: Mapping[str, Any], hosts: bytes) -> tuple[bytes, ...]:
    """Envoy's `/clusters` text: `cluster::host::stat::value`, one line each: every host's
    lines (written by the core: `Core.clusters_text`), then the registry's."""
    registry = registry_lines(stats)
    return (hosts, ("\n".join(registry) + "\n").encode() if registry else b"")


def clusters_json(stats: Mapping[str, Any], hosts: list[tuple[str, bytes]]) -> dict[str, Any]:
    """`/clusters?format=json`, where each cluster's `host_statuses` is JSON text written by
    the core (`Core.host_statuses_json`, clusters sorted by name): for `json_parts`."""
    clusters = stats.get("clusters") or {}
    statuses = []
    for cname, host_statuses in hosts:
        status: dict[str, Any] = {"name": cname, "host_statuses": host_statuses}
        cluster = clusters.get(cname) or {}
        for key in ("health_check", "outlier_detection"):
            if isinstance(cluster.get(key), Mapping):
                status[key] = dict(cluster[key])
        statuses.append(status)
    registry = registry_json(stats)
    return {"cluster_statuses": statuses, **({"registry": registry} if registry else {})}


def traces_document(spans: list[dict[str, Any]], query: Mapping[str, list[str]]) -> dict[str, Any]:
    """`/traces`: the core's recent spans (newest first), optionally one route's only
    (`route`), slowest first (`slow=1`), at most `limit` (default 100)."""
    route = query.get("route", [None])[-1]
    if route:
        spans = [s for s in spans if s.get("route") == route]
    if query.get("slow", [""])[-1] in ("1", "true"):
        spans = sorted(spans, key=lambda s: -float(s.get("duration_ms") or 0))
    raw = query.get("limit", ["100"])[-1]
    limit = int(raw) if raw.isdigit() else 100
    return {"spans": spans[:limit]}


class AdminAPI:
    """The admin endpoints (docs/admin.md) over an `AdminView`: read-only, GET and HEAD; and,
    given `lambda_api`, Lambda's Invoke API under /2015-03-31/ (docs/functions.md)."""

    def __init__(self, view: AdminView, lambda_api: Handler | None = None) -> None:
        self.view = view
        self.lambda_api = lambda_api
        self._envoy: tuple[Any, EnvoyContext] | None = None

    def _envoy_context(self, version: Any) -> EnvoyContext:
        """The mesh and listener protocols for Envoy's labels, read once per config version
        (the config dump is not cheap); bound addresses every time (port 0 binds late)."""
        if self._envoy is None or self._envoy[0] != version:
            dump = self.view.config_dump()
            snapshot = dump.get("snapshot") or {}
            mesh = (dump.get("config") or {}).get("mesh")
            protocols = {str(lst.get("name")): str(lst.get("protocol", "http"))
                         for lst in snapshot.get("listeners") or []}
            self._envoy = (version, EnvoyContext(mesh=mesh, protocols=protocols))
        ctx = self._envoy[1]
        return EnvoyContext(ctx.mesh, self.view.listener_addresses(), ctx.protocols)

    async def __call__(self, request: Request) -> Response:
        if self.lambda_api is not None and request.path.startswith(LAMBDA_PREFIX):
            return await self.lambda_api(request)
        path = request.path.rstrip("/") or "/"
        if path not in ENDPOINTS:
            return Response.text(404, f"no such admin endpoint: {path}\n\n{self._help()}")
        if request.method not in ("GET", "HEAD"):
            return Response.text(405, f"{request.method} not allowed on {path}; use GET\n",
                                 headers=[("allow", "GET, HEAD")])
        as_json = request.query.get("format", [""])[-1] == "json"
        if path == "/":
            return Response.text(200, self._help())
        if path == "/ready":
            state = self.view.state
            return Response.text(200 if state == "LIVE" else 503, f"{state}\n")
        if path in ("/stats", "/stats/prometheus"):
            if as_json and path == "/stats":
                # NOTE: the core writes every host's part as JSON text (no per-host Python
                # object); the rest is encoded in a worker thread and the parts spliced.
                stats = await self.view.read_stats_hosts_json()
                body = await trio.to_thread.run_sync(json_parts, stats)
                return Response(200, body, JSON)
            # NOTE: the core writes the per-host families itself, as bytes; with 10,000 hosts,
            # making and rendering a Python dict per host took seconds on the Trio thread, and
            # the 12 MB of host text is written in a worker thread and kept in the core, then
            # sent a piece at a time: never decoded, re-encoded, joined or copied whole.
            # The renders of the rest are ~1-2 ms together: a checkpoint between the two
            # biggest, so that no step of the loop takes them all (the text is the same).
            stats = self.view.stats(hosts=False)
            head, _, tail = render_prometheus_parts(stats)
            await trio.lowlevel.checkpoint()
            tail += tls_metrics(self.view.tls_info(), time.time())
            tail += registry_metrics(stats) + async_metrics(stats)
            tail += render_envoy(stats, self._envoy_context(stats.get("version")))
            parts = (head.encode(), await self.view.read_host_metrics(), tail.encode())
            return Response(200, parts, PROMETHEUS_CONTENT_TYPE)
        if path == "/clusters":
            stats, hosts = await self.view.read_clusters(as_json=as_json)
            if as_json:
                body = await trio.to_thread.run_sync(json_parts, clusters_json(stats, hosts))
                return Response(200, body, JSON)
            return Response(200, clusters_text(stats, hosts))
        if path == "/config_dump":
            return Response.json(200, self.view.config_dump())
        if path == "/traces":
            return Response.json(200, traces_document(self.view.recent_spans(), request.query))
        if path == "/certs":
            trust = trust_files(self.view.config_dump().get("snapshot") or {})
            return Response.json(200, certs_document(self.view.tls_info(), trust, time.time()))
        listeners = sorted(self.view.listener_addresses().items())
        if as_json:
            return Response.json(200, {"listener_statuses": [
                {"name": name, "local_address": {"socket_address": {"address": h, "port_value": p}}}
                for name, (h, p) in listeners
            ]})
        return Response.text(200, "".join(f"{name}::{h}:{p}\n" for name, (h, p) in listeners))

    def _help(self) -> str:
        text = "admin endpoints:\n" + "".join(f"  {p:<18} {d}\n" for p, d in ENDPOINTS.items())
        if self.lambda_api is not None:
            text += (f"  POST {LAMBDA_PREFIX}functions/NAME/invocations   Lambda's Invoke API "
                     "(docs/functions.md)\n")
        return text


async def serve_admin(
    view: AdminView,
    host: str,
    port: int,
    *,
    lambda_api: Handler | None = None,
    lambda_max_body: int = MAX_BODY_BYTES,
    too_large: TooLarge | None = None,
    task_status: TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin API for `view` on host:port; reports the bound (host, port) when ready.
    With `lambda_api`, requests under /2015-03-31/ go to it (Lambda's Invoke API), bodies may
    be `lambda_max_body` bytes and `too_large` answers larger ones.

    Runs until cancelled; cancellation closes the listening socket and every admin connection.
    """
    limit = max(MAX_BODY_BYTES, lambda_max_body) if lambda_api is not None else MAX_BODY_BYTES
    await serve_http(AdminAPI(view, lambda_api), host, port, max_body=limit,
                     too_large=too_large if lambda_api is not None else None, task_status=task_status)
