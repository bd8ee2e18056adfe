"""Misbehaving upstreams and App Mesh configs for the resilience end-to-end tests.

- `Upstream`: a Trio/h11 HTTP/1.1 server whose behaviour can be switched at run time: answer
  200, answer 503, reset the connection mid-response, stall past any timeout, hold requests
  until released; its health path (`/health`) can fail separately; it can die (listener and
  connections closed, so connects are refused) and come back on the same port. It counts
  the requests it sees, by path, and the request heads (bodies may never complete).
- `mesh(...)`: a meshplane file (gateway mode, static endpoints) around one virtual node
  whose listener carries the resilience settings under test.

Everything binds 127.0.0.1 port 0 and reports readiness through `nursery.start`; listening and
the HTTP/1.1 connection loop are `..common`'s, shared with the data-plane and TLS packages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import h11
import trio

from ..common import LOCALHOST, Reset, TcpServer, next_event, rst_close, serve_h11

GATEWAY_PORT = 8080
NODE_PORT = 8080
HEALTH_PATH = "/health"


@dataclass
class Upstream(TcpServer):
    """One HTTP/1.1 endpoint. `mode` decides traffic answers: "ok" (200, body = name),
    "fail" (503), "drop" (TCP RST before any response byte), "reset" (response head and part
    of the body, then a TCP RST), "stall" (never answers), "hold" (waits for `release`).
    `health` decides `/health` answers: "ok", "fail" (503), "stall"."""

    name: str
    mode: str = "ok"
    health: str = "ok"
    requests: int = 0
    heads: int = 0
    health_requests: int = 0
    accepted: int = 0
    active: int = 0
    release: trio.Event = field(default_factory=trio.Event)
    _scope: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> Upstream:
        """Listen (on the same port as before, if it ran already) and serve in `nursery`."""
        self._nursery = nursery
        await nursery.start(self._run)
        return self

    async def restart(self) -> None:
        """Come back on the same port, in the nursery it first started in."""
        assert self._nursery is not None and self._scope is None
        await self._nursery.start(self._run)

    def stop(self) -> None:
        """Die: close the listener and every connection; new connects are refused."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            await self.run(task_status=task_status)

    async def _serve(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        await serve_h11(stream, partial(self._exchange, stream))

    async def _exchange(self, stream: trio.SocketStream, conn: h11.Connection,
                        request: h11.Request) -> None:
        self.heads += 1
        while not isinstance(await next_event(conn, stream), h11.EndOfMessage):
            pass
        path = request.target.decode().split("?", 1)[0]
        if path == HEALTH_PATH:
            self.health_requests += 1
            await self._answer_health(conn, stream)
            return
        self.requests += 1
        self.active += 1
        try:
            await self._answer(conn, stream)
        finally:
            self.active -= 1

    async def _answer_health(self, conn: h11.Connection, stream: trio.SocketStream) -> None:
        if self.health == "stall":
            await trio.sleep_forever()
        await _respond(conn, stream, 200 if self.health == "ok" else 503, b"health")

    async def _answer(self, conn: h11.Connection, stream: trio.SocketStream) -> None:
        mode = self.mode
        if mode == "stall":
            await trio.sleep_forever()
        if mode == "hold":
            await self.release.wait()
        if mode == "drop":  # a reset before any response byte
            rst_close(stream.socket)
            raise Reset
        if mode == "reset":
            head = conn.send(h11.Response(status_code=200, headers=[("content-length", "100")]))
            await stream.send_all((head or b"") + b"partial")
            rst_close(stream.socket)
            raise Reset
        await _respond(conn, stream, 503 if mode == "fail" else 200, self.name.encode())


async def _respond(conn: h11.Connection, stream: trio.SocketStream, status: int, body: bytes) -> None:
    data = conn.send(h11.Response(status_code=status, headers=[("content-length", str(len(body)))]))
    data = (data or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    await stream.send_all(data)


# --- configs -------------------------------------------------------------------------------------


def health_check(interval_ms: int = 100, *, healthy: int = 2, unhealthy: int = 2,
                 protocol: str = "http", timeout_ms: int = 200) -> tuple[dict[str, Any], dict[str, Any]]:
    """An App Mesh healthCheck (App Mesh's minimum interval and timeout) and the `resilience`
    extension that runs it every `interval_ms` with 10% jitter and a first probe at once."""
    appmesh = {"protocol": protocol, "intervalMillis": 5000, "timeoutMillis": 2000,
               "healthyThreshold": healthy, "unhealthyThreshold": unhealthy}
    if protocol in ("http", "http2"):
        appmesh["path"] = HEALTH_PATH
    ext = {"intervalMillis": interval_ms, "timeoutMillis": timeout_ms, "initialJitterMillis": 0}
    return appmesh, ext


async def drive_until(client: Any, url: str, done: Callable[[], bool], *, what: str,
                      max_requests: int = 500) -> int:
    """GET `url` until `done()` holds, checking before each request; returns how many were sent.
    Fails after `max_requests`: a traffic loop in a test is always bounded."""
    for sent in range(max_requests):
        if done():
            return sent
        await client.get(url)
    if done():
        return max_requests
    raise AssertionError(f"{what}: not reached after {max_requests} requests")


def outlier(max_errors: int = 3, *, interval_ms: int = 100, ejection_ms: int = 500,
            percent: int = 50) -> dict[str, Any]:
    return {"maxServerErrors": max_errors, "interval": {"unit": "ms", "value": interval_ms},
            "baseEjectionDuration": {"unit": "ms", "value": ejection_ms},
            "maxEjectionPercent": percent}


def mesh(endpoints: Sequence[str], *, protocol: str = "http", listener: dict[str, Any] | None = None,
         retry: dict[str, Any] | None = None, timeout_ms: int | None = None,
         gateway_pool: dict[str, Any] | None = None) -> dict[str, Any]:
    """Gateway "edge" (listener 8080, bound on an ephemeral port) -> service svc.local ->
    router -> virtual node "app" (static `endpoints`, listener fields from `listener`)."""
    route: dict[str, Any] = {"match": {"prefix": "/"},
                             "action": {"weightedTargets": [{"virtualNode": "app", "weight": 1}]}}
    if retry is not None:
        route["retryPolicy"] = retry
    if timeout_ms is not None:
        route["timeout"] = {"perRequest": {"unit": "ms", "value": timeout_ms}}
    route_type = {"http": "httpRoute", "http2": "http2Route", "grpc": "grpcRoute"}[protocol]
    if protocol == "grpc":
        route["match"] = {}
    gw_listener: dict[str, Any] = {"portMapping": {"port": GATEWAY_PORT, "protocol": protocol}}
    if gateway_pool is not None:
        gw_listener["connectionPool"] = gateway_pool
    node_listener = {"portMapping": {"port": NODE_PORT, "protocol": protocol}, **(listener or {})}
    gw_route = {"match": {"prefix": "/"} if protocol != "grpc" else {},
                "action": {"target": {"virtualService": {"virtualServiceName": "svc.local"}}}}
    return {
        "mesh": "m",
        "proxy": {"gateway": "edge", "bind": LOCALHOST, "ports": {GATEWAY_PORT: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge", "spec": {"listeners": [gw_listener]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge",
             "spec": {route_type: gw_route}},
            {"kind": "VirtualService", "name": "svc.local",
             "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}},
            {"kind": "VirtualRouter", "name": "r",
             "spec": {"listeners": [{"portMapping": {"port": NODE_PORT, "protocol": protocol}}]}},
            {"kind": "Route", "name": "default", "virtualRouterName": "r",
             "spec": {route_type: route}},
            {"kind": "VirtualNode", "name": "app",
             "spec": {"listeners": [node_listener],
                      "serviceDiscovery": {"static": {"endpoints": list(endpoints)}}}},
        ],
    }


