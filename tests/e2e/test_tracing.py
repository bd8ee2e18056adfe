"""Distributed tracing end to end: a gateway and a sidecar (two real `Proxy`s), a real
application behind the sidecar, and a real OTLP/HTTP receiver that decodes what the core
exports with the official protobuf definitions (`opentelemetry-proto`).

    client ──► gateway "edge" ──► sidecar of node "app" (inbound) ──► the application
                  │ span                 │ span
                  └──────── OTLP/HTTP ───┴──► receiver (POST /v1/traces, protobuf)

Spans are exported by a thread, in batches: tests poll the receiver with a deadline. Absence
is shown with a sentinel: the exporter keeps order, so once a later request's span has
arrived, an earlier one that was to be exported would have arrived too.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip(
    "meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`"
)

import httpx
import trio
from meshplane import Proxy

from .asgi import lifespan, serve_asgi
from .waiting import eventually

trace_service_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="opentelemetry-proto is not installed (the test extra)",
)
pytestmark = pytest.mark.e2e

GATEWAY_PORT = 8080
APP_PORT = 9080
DEADLINE_S = 10.0


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: every span of every request it decoded."""

    port: int = 0
    spans: list[tuple[str, Any]] = field(default_factory=list)  # (service.name, Span)
    requests: int = 0

    def by_trace(self, trace_id: str) -> list[tuple[str, Any]]:
        return [(svc, s) for svc, s in self.spans if s.trace_id.hex() == trace_id]

    async def app(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        ok = (
            scope["method"] == "POST"
            and scope["path"] == "/v1/traces"
            and headers.get(b"content-type") == b"application/x-protobuf"
        )
        if ok:
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.requests += 1
            for rs in request.resource_spans:
                service = attributes(rs.resource.attributes)["service.name"]
                for ss in rs.scope_spans:
                    self.spans += [(service, s) for s in ss.spans]
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        else:
            answer = b""
        await send({
            "type": "http.response.start",
            "status": 200 if ok else 400,
            "headers": [(b"content-type", b"application/x-protobuf")],
        })
        await send({"type": "http.response.body", "body": answer})


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


async def application(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Echoes the headers it received as JSON; `/fail` answers 500."""
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    status = 500 if scope["path"] == "/fail" else 200
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(headers).encode()})


def resources(app_endpoint: int) -> list[dict[str, Any]]:
    """Gateway "edge" sends everything to app.shop.local, provided by node "app"."""
    return [
        {"kind": "VirtualGateway", "name": "edge", "spec": {
            "listeners": [{"portMapping": {"port": GATEWAY_PORT, "protocol": "http"}}]}},
        {"kind": "GatewayRoute", "name": "to-app", "virtualGatewayName": "edge", "spec": {
            "httpRoute": {"match": {"prefix": "/"}, "action": {
                "target": {"virtualService": {"virtualServiceName": "app.shop.local"}},
                "rewrite": {"prefix": {"defaultPrefix": "DISABLED"}}}}}},
        {"kind": "VirtualService", "name": "app.shop.local",
         "spec": {"provider": {"virtualNode": {"virtualNodeName": "app"}}}},
        {"kind": "VirtualNode", "name": "app", "spec": {
            "listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}],
            "serviceDiscovery": {"static": {"endpoints": [f"127.0.0.1:{app_endpoint}"]}}}},
    ]


@dataclass
class Mesh:
    gateway: Proxy
    sidecar: Proxy
    receiver: Receiver

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.gateway.port(GATEWAY_PORT)}{path}"


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Receiver:
    r = Receiver()
    r.port = await serve_asgi(nursery, r.app)
    return r


@pytest.fixture
async def app_port(nursery: trio.Nursery) -> int:
    return await serve_asgi(nursery, application)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stalled_collector() -> Iterator[int]:
    """A collector that accepts connections and never answers (a listen backlog)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        yield int(sock.getsockname()[1])


def tracing(receiver: Receiver | None, **more: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"samplingPercent": 100, **more}
    if receiver is not None:
        t["otlpEndpoint"] = f"http://127.0.0.1:{receiver.port}"
    return t


@asynccontextmanager
async def start_mesh(
    app_port: int, receiver: Receiver, gateway_tracing: dict[str, Any],
    sidecar_tracing: dict[str, Any] | None = None,
) -> AsyncIterator[Mesh]:
    """The sidecar (node "app" in front of the application), then the gateway in front of it."""
    async with AsyncExitStack() as stack:
        yield await _enter_mesh(stack, app_port, receiver, gateway_tracing, sidecar_tracing)


async def _enter_mesh(
    stack: AsyncExitStack, app_port: int, receiver: Receiver, gateway_tracing: dict[str, Any],
    sidecar_tracing: dict[str, Any] | None,
) -> Mesh:
    sidecar = await stack.enter_async_context(Proxy({
        "mesh": "shop", "resources": resources(1), "proxy": {
            "node": "app", "bind": "127.0.0.1", "app": f"127.0.0.1:{app_port}",
            "ports": {APP_PORT: 0}, "outbound": "127.0.0.1:0",
            "tracing": sidecar_tracing if sidecar_tracing is not None else gateway_tracing}},
        admin="127.0.0.1:0", drain_ms=200))
    inbound = sidecar.ports[f"inbound/app/{APP_PORT}"]
    gateway = await stack.enter_async_context(Proxy({
        "mesh": "shop", "resources": resources(inbound), "proxy": {
            "gateway": "edge", "bind": "127.0.0.1", "ports": {GATEWAY_PORT: 0},
            "tracing": gateway_tracing}},
        admin="127.0.0.1:0", drain_ms=200))
    return Mesh(gateway, sidecar, receiver)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def traceparent(value: str) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00"
    return trace_id, span_id, flags


async def spans_of(receiver: Receiver, trace_id: str, count: int) -> list[tuple[str, Any]]:
    await eventually(lambda: len(receiver.by_trace(trace_id)) >= count, timeout=DEADLINE_S,
                     what=f"{count} spans of trace {trace_id}", poll=0.02)
    return receiver.by_trace(trace_id)


async def test_gateway_sidecar_app_yields_one_trace_with_parented_spans(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
) -> None:
    async with start_mesh(app_port, receiver, tracing(receiver)) as mesh:
        r = await client.get(mesh.url("/orders?id=7"), headers={"user-agent": "trace-test"})
        assert r.status_code == 200, r.text
        seen = r.json()
        trace_id, app_parent, flags = traceparent(seen["traceparent"])
        assert flags == "01"
        spans = await spans_of(receiver, trace_id, 2)
        assert len(spans) == 2, spans
        by_service = {svc: s for svc, s in spans}
        assert set(by_service) == {"edge", "app"}
        gw, sc = by_service["edge"], by_service["app"]
        # The gateway started the trace; the sidecar's span is its child; the app's parent is
        # the sidecar's span.
        assert gw.parent_span_id == b""
        assert sc.parent_span_id == gw.span_id
        assert sc.span_id.hex() == app_parent
        for span in (gw, sc):
            attrs = attributes(span.attributes)
            assert span.kind == 2  # SERVER
            assert span.flags & 1 == 1
            assert span.start_time_unix_nano <= span.end_time_unix_nano
            assert attrs["http.request.method"] == "GET"
            assert attrs["url.path"] == "/orders"
            assert attrs["url.query"] == "id=7"
            assert attrs["http.response.status_code"] == 200
            assert attrs["user_agent.original"] == "trace-test"
            assert attrs["meshplane.route"] and attrs["http.route"] == attrs["meshplane.route"]
            assert attrs["meshplane.cluster"]
            assert attrs["meshplane.upstream_host"].startswith("127.0.0.1:")
            # x-request-id is made at the first hop and kept: both spans carry the app's.
            assert attrs["meshplane.request_id"] == seen["x-request-id"]
            events = [e.name for e in span.events]
            assert events == ["routed", "upstream connected", "first byte"], events
            times = [span.start_time_unix_nano, *(e.time_unix_nano for e in span.events),
                     span.end_time_unix_nano]
            assert times == sorted(times)
            assert span.status.code == 0  # UNSET: not an error
        assert attributes(gw.attributes)["meshplane.upstream_host"] == (
            f"127.0.0.1:{mesh.sidecar.ports[f'inbound/app/{APP_PORT}']}")
        assert attributes(sc.attributes)["meshplane.upstream_host"] == f"127.0.0.1:{app_port}"
        stats = mesh.gateway.stats()["tracing"]
        assert stats["spans_sampled"] >= 1 and stats["spans_exported"] >= 1
        assert stats["spans_dropped"] == 0 and stats["spans_export_failed"] == 0


async def test_a_callers_sampled_context_is_continued_and_tracestate_kept(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
) -> None:
    async with start_mesh(app_port, receiver, tracing(receiver, samplingPercent=0)) as mesh:
        caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        r = await client.get(mesh.url("/"), headers={
            "traceparent": f"00-{caller_trace}-{caller_span}-01", "tracestate": "vendor=abc"})
        seen = r.json()
        trace_id, _, flags = traceparent(seen["traceparent"])
        # Parent based: the caller's "sampled" wins over samplingPercent 0.
        assert (trace_id, flags) == (caller_trace, "01")
        assert seen["tracestate"] == "vendor=abc"
        spans = dict((svc, s) for svc, s in await spans_of(receiver, caller_trace, 2))
        assert spans["edge"].parent_span_id.hex() == caller_span
        assert spans["edge"].trace_state == "vendor=abc"
        assert spans["app"].parent_span_id == spans["edge"].span_id


async def test_unsampled_requests_are_propagated_not_recorded_and_errors_can_be_kept(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
) -> None:
    async with start_mesh(app_port, receiver,
                            tracing(receiver, samplingPercent=0, keepErrors=True)) as mesh:
        caller = "11111111111111111111111111111111"
        r = await client.get(mesh.url("/"), headers={"traceparent": f"00-{caller}-2222222222222222-00"})
        trace_id, _, flags = traceparent(r.json()["traceparent"])
        assert (trace_id, flags) == (caller, "00")  # the decision travels with the request
        # A new trace at 0%: not sampled, but still started and propagated.
        r = await client.get(mesh.url("/"))
        fresh, _, flags = traceparent(r.json()["traceparent"])
        assert flags == "00" and fresh != caller
        # keepErrors: the failed request is recorded although unsampled (by both proxies).
        r = await client.get(mesh.url("/fail"))
        assert r.status_code == 500
        failed, _, _ = traceparent(r.json()["traceparent"])
        spans = await spans_of(receiver, failed, 2)
        for _, span in spans:
            assert span.status.code == 2  # ERROR
            assert span.flags & 1 == 0
            assert attributes(span.attributes)["error.type"] == "500"
        # The exporter keeps order: the unsampled successes before it were never exported.
        assert receiver.by_trace(caller) == [] and receiver.by_trace(fresh) == []


@pytest.mark.parametrize(
    ("propagation", "header"),
    [("b3", "b3"), ("b3multi", "x-b3-traceid"), ("xray", "x-amzn-trace-id")],
)
async def test_b3_and_xray_propagation_parent_spans_across_proxies(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
    propagation: str, header: str,
) -> None:
    async with start_mesh(app_port, receiver, tracing(receiver, propagation=propagation)) as mesh:
        seen = (await client.get(mesh.url("/"))).json()
        assert "traceparent" not in seen
        if propagation == "b3":
            trace_id, parent, sampled = seen["b3"].split("-")
        elif propagation == "b3multi":
            trace_id, parent, sampled = seen["x-b3-traceid"], seen["x-b3-spanid"], seen["x-b3-sampled"]
        else:
            fields = dict(f.split("=") for f in seen["x-amzn-trace-id"].split(";"))
            _, epoch, rest = fields["Root"].split("-")
            trace_id, parent, sampled = epoch + rest, fields["Parent"], fields["Sampled"]
        assert sampled == "1"
        spans = dict((svc, s) for svc, s in await spans_of(receiver, trace_id, 2))
        assert spans["edge"].parent_span_id == b""
        assert spans["app"].parent_span_id == spans["edge"].span_id
        assert spans["app"].span_id.hex() == parent
        # A caller's context in this format is continued.
        caller_trace = "5759e988bd862e3fe1be46a994272793"
        caller_span = "53995c3f42cd8ad8"
        if propagation == "b3":
            sent = {"b3": f"{caller_trace}-{caller_span}-1"}
        elif propagation == "b3multi":
            sent = {"x-b3-traceid": caller_trace, "x-b3-spanid": caller_span, "x-b3-sampled": "1"}
        else:
            sent = {"x-amzn-trace-id":
                    f"Root=1-{caller_trace[:8]}-{caller_trace[8:]};Parent={caller_span};Sampled=1"}
        await client.get(mesh.url("/"), headers=sent)
        spans = dict((svc, s) for svc, s in await spans_of(receiver, caller_trace, 2))
        assert spans["edge"].parent_span_id.hex() == caller_span


async def test_collector_gone_or_stalled_spans_are_dropped_and_counted_requests_unharmed(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
    closed_port: int, stalled_collector: int,
) -> None:
    gone = {"samplingPercent": 100, "otlpEndpoint": f"http://127.0.0.1:{closed_port}"}
    stalled = {"samplingPercent": 100, "otlpEndpoint": f"http://127.0.0.1:{stalled_collector}",
               "maxQueueSpans": 2, "maxBatchSpans": 1, "exportTimeoutMs": 60_000}
    async with start_mesh(app_port, receiver, gone, sidecar_tracing=stalled) as mesh:
        for _ in range(20):
            assert (await client.get(mesh.url("/"))).status_code == 200

        def counted() -> bool:
            gw = mesh.gateway.stats()["tracing"]
            sc = mesh.sidecar.stats()["tracing"]
            return gw["spans_export_failed"] >= 1 and sc["spans_dropped"] >= 1

        await eventually(counted, timeout=DEADLINE_S, what="export failures and queue drops counted")
        assert mesh.gateway.stats()["tracing"]["spans_exported"] == 0


async def test_admin_traces_shows_recent_and_slow_requests_without_a_collector(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
) -> None:
    async with start_mesh(app_port, receiver, tracing(None, recentSpans=4)) as mesh:
        for i in range(6):
            assert (await client.get(mesh.url(f"/item/{i}"))).status_code == 200
        host, port = mesh.gateway.admin_address or ("", 0)
        admin = f"http://{host}:{port}/traces"

        async def six_seen() -> bool:
            spans = (await client.get(admin)).json()["spans"]
            return bool(spans) and spans[0]["path"] == "/item/5"

        await eventually(six_seen, timeout=DEADLINE_S, what="the last request in /traces")
        spans = (await client.get(admin)).json()["spans"]
        # A ring of 4, newest first.
        assert [s["path"] for s in spans] == ["/item/5", "/item/4", "/item/3", "/item/2"]
        route = spans[0]["route"]
        assert route and spans[0]["cluster"] and spans[0]["status"] == 200
        assert set(spans[0]["marks_ms"]) == {"routed", "upstream connected", "first byte"}
        slow = (await client.get(admin, params={"route": route, "slow": "1", "limit": "2"})).json()
        durations = [s["duration_ms"] for s in slow["spans"]]
        assert len(durations) == 2 and durations == sorted(durations, reverse=True)
        assert (await client.get(admin, params={"route": "no-such-route"})).json() == {"spans": []}
        assert receiver.requests == 0
