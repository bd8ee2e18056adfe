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

import itertools
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`"
)

import httpx
import trio
from meshplane import Proxy
from meshplane.errors import ConfigError

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


def resources(app_endpoint: int, mesh: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Gateway "edge" sends everything to app.shop.local, provided by node "app"; `mesh`: the
    Mesh resource's spec, if any."""
    return [
        *([{"kind": "Mesh", "name": "shop", "spec": mesh}] if mesh is not None else []),
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
    sidecar_tracing: dict[str, Any] | None = None, mesh: dict[str, Any] | None = None,
) -> AsyncIterator[Mesh]:
    """The sidecar (node "app" in front of the application), then the gateway in front of it."""
    async with AsyncExitStack() as stack:
        yield await _enter_mesh(stack, app_port, receiver, gateway_tracing, sidecar_tracing, mesh)


async def _enter_mesh(
    stack: AsyncExitStack, app_port: int, receiver: Receiver, gateway_tracing: dict[str, Any],
    sidecar_tracing: dict[str, Any] | None, mesh: dict[str, Any] | None = None,
) -> Mesh:
    sidecar = await stack.enter_async_context(Proxy({
        "mesh": "shop", "resources": resources(1, mesh), "proxy": {
            "node": "app", "bind": "127.0.0.1", "app": f"127.0.0.1:{app_port}",
            "ports": {APP_PORT: 0}, "outbound": "127.0.0.1:0",
            "tracing": sidecar_tracing if sidecar_tracing is not None else gateway_tracing}},
        admin="127.0.0.1:0", drain_ms=200))
    inbound = sidecar.ports[f"inbound/app/{APP_PORT}"]
    gateway = await stack.enter_async_context(Proxy({
        "mesh": "shop", "resources": resources(inbound, mesh), "proxy": {
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


SERVER, CLIENT = 2, 3  # Span.SpanKind


async def spans_of(receiver: Receiver, trace_id: str, count: int) -> list[tuple[str, Any]]:
    await eventually(lambda: len(receiver.by_trace(trace_id)) >= count, timeout=DEADLINE_S,
                     what=f"{count} spans of trace {trace_id}", poll=0.02)
    return receiver.by_trace(trace_id)


async def hops_of(receiver: Receiver, trace_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SERVER and the (single) CLIENT span of each proxy ("edge", "app") of one trace."""
    spans = await spans_of(receiver, trace_id, 4)
    assert len(spans) == 4, spans
    servers = {svc: s for svc, s in spans if s.kind == SERVER}
    clients = {svc: s for svc, s in spans if s.kind == CLIENT}
    assert set(servers) == set(clients) == {"edge", "app"}, spans
    for svc in servers:
        assert clients[svc].parent_span_id == servers[svc].span_id
    return servers, clients


async def test_gateway_sidecar_app_yields_one_trace_with_parented_spans(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
) -> None:
    async with start_mesh(app_port, receiver, tracing(receiver)) as mesh:
        r = await client.get(mesh.url("/orders?id=7"), headers={"user-agent": "trace-test"})
        assert r.status_code == 200, r.text
        seen = r.json()
        trace_id, app_parent, flags = traceparent(seen["traceparent"])
        assert flags == "01"
        servers, clients = await hops_of(receiver, trace_id)
        gw, sc = servers["edge"], servers["app"]
        # The gateway started the trace; each proxy's CLIENT span (its upstream attempt) is a
        # child of its SERVER span and the next hop's parent; the app's parent is the
        # sidecar's CLIENT span.
        assert gw.parent_span_id == b""
        assert sc.parent_span_id == clients["edge"].span_id
        assert clients["app"].span_id.hex() == app_parent
        for svc, client_span in clients.items():
            attrs = attributes(client_span.attributes)
            upstream = attributes(servers[svc].attributes)["meshplane.upstream_host"]
            assert client_span.name == "GET"
            assert attrs["http.request.method"] == "GET"
            assert f"{attrs['server.address']}:{attrs['server.port']}" == upstream
            assert attrs["http.response.status_code"] == 200
            assert attrs["url.full"] == f"http://{upstream}/orders?id=7"
            assert "http.request.resend_count" not in attrs and "error.type" not in attrs
            assert client_span.status.code == 0
            assert (servers[svc].start_time_unix_nano <= client_span.start_time_unix_nano
                    <= client_span.end_time_unix_nano <= servers[svc].end_time_unix_nano)
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
        spans, clients = await hops_of(receiver, caller_trace)
        assert spans["edge"].parent_span_id.hex() == caller_span
        assert spans["edge"].trace_state == "vendor=abc"
        assert spans["app"].parent_span_id == clients["edge"].span_id


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
        servers, clients = await hops_of(receiver, failed)
        for span in (*servers.values(), *clients.values()):
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
        spans, clients = await hops_of(receiver, trace_id)
        assert spans["edge"].parent_span_id == b""
        assert spans["app"].parent_span_id == clients["edge"].span_id
        assert clients["app"].span_id.hex() == parent
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
        spans, _ = await hops_of(receiver, caller_trace)
        assert spans["edge"].parent_span_id.hex() == caller_span


async def test_both_proxies_take_the_propagation_format_from_the_mesh(
    app_port: int, receiver: Receiver, client: httpx.AsyncClient,
) -> None:
    # Neither proxy names a format: the Mesh resource's `tracing.propagation` decides.
    mesh_spec = {"tracing": {"propagation": "b3multi"}}
    async with start_mesh(app_port, receiver, tracing(receiver), mesh=mesh_spec) as mesh:
        caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        seen = (await client.get(mesh.url("/"), headers={
            "x-b3-traceid": caller_trace, "x-b3-spanid": caller_span, "x-b3-sampled": "1"})).json()
        assert "traceparent" not in seen and "b3" not in seen
        # The gateway continued the caller's B3 trace, the sidecar continued the gateway's.
        assert seen["x-b3-traceid"] == caller_trace and seen["x-b3-sampled"] == "1"
        assert "x-b3-parentspanid" not in seen
        spans, clients = await hops_of(receiver, caller_trace)
        assert spans["edge"].parent_span_id.hex() == caller_span
        assert spans["app"].parent_span_id == clients["edge"].span_id
        assert clients["app"].span_id.hex() == seen["x-b3-spanid"]
        # A W3C header is not this mesh's format: a new trace, W3C headers passed on untouched.
        w3c = "00-11111111111111111111111111111111-2222222222222222-01"
        seen = (await client.get(mesh.url("/"), headers={"traceparent": w3c})).json()
        assert seen["traceparent"] == w3c
        assert seen["x-b3-traceid"] != "11111111111111111111111111111111"


def retrying_gateway(endpoints: list[str], receiver: Receiver) -> dict[str, Any]:
    """Gateway "edge" -> svc.local -> router "r" whose route retries 5xx and connection errors
    twice -> node "app" at `endpoints`."""
    route = {"match": {"prefix": "/"},
             "action": {"weightedTargets": [{"virtualNode": "app", "weight": 1}]},
             "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 5000},
                             "httpRetryEvents": ["server-error"],
                             "tcpRetryEvents": ["connection-error"]}}
    return {"mesh": "shop", "proxy": {
        "gateway": "edge", "bind": "127.0.0.1", "ports": {GATEWAY_PORT: 0},
        "tracing": tracing(receiver)}, "resources": [
        {"kind": "VirtualGateway", "name": "edge", "spec": {
            "listeners": [{"portMapping": {"port": GATEWAY_PORT, "protocol": "http"}}]}},
        {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge", "spec": {
            "httpRoute": {"match": {"prefix": "/"}, "action": {
                "target": {"virtualService": {"virtualServiceName": "svc.local"}}}}}},
        {"kind": "VirtualService", "name": "svc.local",
         "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}},
        {"kind": "VirtualRouter", "name": "r",
         "spec": {"listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}]}},
        {"kind": "Route", "name": "retrying", "virtualRouterName": "r",
         "spec": {"httpRoute": route}},
        {"kind": "VirtualNode", "name": "app", "spec": {
            "listeners": [{"portMapping": {"port": APP_PORT, "protocol": "http"}}],
            "serviceDiscovery": {"static": {"endpoints": endpoints}}}},
    ]}


async def test_a_retried_request_has_one_server_span_and_a_client_span_per_attempt(
    nursery: trio.Nursery, receiver: Receiver, client: httpx.AsyncClient,
) -> None:
    failures = {"left": 2}
    seen: list[dict[str, str]] = []

    async def flaky(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Answers 503 twice, then 200; records the headers of every request."""
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        status = 200
        if failures["left"] > 0:
            failures["left"] -= 1
            status = 503
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = await serve_asgi(nursery, flaky)
    async with Proxy(retrying_gateway([f"127.0.0.1:{port}"], receiver),
                     admin="127.0.0.1:0", drain_ms=200) as gateway:
        r = await client.get(f"http://127.0.0.1:{gateway.port(GATEWAY_PORT)}/pay?x=1")
        assert r.status_code == 200
        assert len(seen) == 3
        parents = [traceparent(h["traceparent"]) for h in seen]
        trace_id = parents[0][0]
        assert {t for t, _, _ in parents} == {trace_id}
        spans = [s for _, s in await spans_of(receiver, trace_id, 4)]
        assert len(spans) == 4, spans
        [server] = [s for s in spans if s.kind == SERVER]
        clients = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.start_time_unix_nano)
        assert len(clients) == 3
        assert attributes(server.attributes)["http.request.resend_count"] == 2
        assert attributes(server.attributes)["http.response.status_code"] == 200
        for i, (span, (_, parent, flags)) in enumerate(zip(clients, parents, strict=True)):
            attrs = attributes(span.attributes)
            assert span.parent_span_id == server.span_id
            # Each attempt carried its own CLIENT span as the upstream's parent.
            assert span.span_id.hex() == parent and flags == "01"
            assert attrs["http.request.method"] == "GET"
            assert (attrs["server.address"], attrs["server.port"]) == ("127.0.0.1", port)
            assert attrs.get("http.request.resend_count", 0) == i
            want = 503 if i < 2 else 200
            assert attrs["http.response.status_code"] == want
            if want == 503:
                assert attrs["error.type"] == "503" and span.status.code == 2
            else:
                assert "error.type" not in attrs and span.status.code == 0
            assert server.start_time_unix_nano <= span.start_time_unix_nano
            assert span.end_time_unix_nano <= server.end_time_unix_nano
        ends = [(s.start_time_unix_nano, s.end_time_unix_nano) for s in clients]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))  # one after another


async def test_attempts_that_fail_to_connect_are_client_spans_with_their_error(
    receiver: Receiver, client: httpx.AsyncClient, closed_port: int,
) -> None:
    async with Proxy(retrying_gateway([f"127.0.0.1:{closed_port}"], receiver),
                     admin="127.0.0.1:0", drain_ms=200) as gateway:
        caller = "a" * 32
        r = await client.get(f"http://127.0.0.1:{gateway.port(GATEWAY_PORT)}/",
                             headers={"traceparent": f"00-{caller}-{'b' * 16}-01"})
        assert r.status_code == 503
        spans = [s for _, s in await spans_of(receiver, caller, 4)]
        [server] = [s for s in spans if s.kind == SERVER]
        clients = [s for s in spans if s.kind == CLIENT]
        assert len(clients) == 3
        assert server.parent_span_id.hex() == "b" * 16
        assert sorted(attributes(s.attributes).get("http.request.resend_count", 0)
                      for s in clients) == [0, 1, 2]
        for span in clients:
            attrs = attributes(span.attributes)
            assert span.parent_span_id == server.span_id
            assert attrs["error.type"] == "connect_failure" and span.status.code == 2
            assert "http.response.status_code" not in attrs


@dataclass
class CollectorPki:
    """A CA, the collector's certificate for `localhost`, a client certificate, and a CA the
    collector's certificate does not chain to (PEM files)."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str


@pytest.fixture
def collector_pki(tmp_path: Path) -> CollectorPki:
    trustme = pytest.importorskip("trustme")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost")
    client = ca.issue_cert("meshplane-proxy")
    files = {
        "ca": ca.cert_pem, "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem, "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem, "other_ca": other.cert_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / f"{name}.pem"))
    return CollectorPki(**{name: str(tmp_path / f"{name}.pem") for name in files})


async def test_spans_are_exported_over_mutual_tls_to_an_https_collector(
    nursery: trio.Nursery, app_port: int, client: httpx.AsyncClient, collector_pki: CollectorPki,
) -> None:
    pki = collector_pki
    receiver = Receiver()
    # A real TLS collector that also requires a client certificate from the CA.
    receiver.port = await serve_asgi(
        nursery, receiver.app, certfile=pki.server_cert, keyfile=pki.server_key,
        ca_certs=pki.ca, verify_mode=ssl.CERT_REQUIRED)
    endpoint = f"https://localhost:{receiver.port}"
    good = {"samplingPercent": 100, "otlpEndpoint": endpoint, "otlpTls": {
        "trust": pki.ca, "certificate": {"certificateChain": pki.client_cert, "privateKey": pki.client_key}}}
    # The sidecar does not trust the collector's CA: its exports fail, counted; requests pass.
    untrusting = {**good, "otlpTls": {**good["otlpTls"], "trust": pki.other_ca}}
    async with start_mesh(app_port, receiver, good, sidecar_tracing=untrusting) as mesh:
        seen = (await client.get(mesh.url("/tls"))).json()
        trace_id, _, _ = traceparent(seen["traceparent"])
        spans = await spans_of(receiver, trace_id, 2)
        assert {(svc, s.kind) for svc, s in spans} == {("edge", SERVER), ("edge", CLIENT)}

        def failed() -> bool:
            return bool(mesh.sidecar.stats()["tracing"]["spans_export_failed"] >= 1)

        await eventually(failed, timeout=DEADLINE_S, what="the untrusting sidecar's export to fail")
        # The collector holds the spans before the exporter has read its answer and counted.
        await eventually(lambda: mesh.gateway.stats()["tracing"]["spans_exported"] >= 2,
                         timeout=DEADLINE_S, what="the gateway to count its exported spans")
        assert all(svc == "edge" for svc, _ in receiver.spans)
    # Without a client certificate the collector refuses the handshake.
    no_cert = {**good, "otlpTls": {"trust": pki.ca}}
    async with start_mesh(app_port, receiver, no_cert) as mesh:
        assert (await client.get(mesh.url("/"))).status_code == 200

        def refused() -> bool:
            return bool(mesh.gateway.stats()["tracing"]["spans_export_failed"] >= 1)

        await eventually(refused, timeout=DEADLINE_S, what="an export without a client certificate to fail")
        assert mesh.gateway.stats()["tracing"]["spans_exported"] == 0


async def test_a_missing_collector_ca_file_is_refused_by_name(
    app_port: int, receiver: Receiver, tmp_path: Path,
) -> None:
    missing = str(tmp_path / "nope.pem")
    cfg = {"samplingPercent": 100, "otlpEndpoint": "https://localhost:4318", "otlpTls": {"trust": missing}}
    with pytest.raises(ConfigError) as info:
        async with start_mesh(app_port, receiver, cfg):
            pass
    [problem] = info.value.problems
    assert problem.field == "tracing" and "otlpTls" in problem.message and missing in problem.message


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
        [attempt] = spans[0]["attempts"]
        assert attempt["upstream_host"] == spans[0]["upstream_host"]
        assert attempt["status"] == 200 and attempt["error"] is None
        slow = (await client.get(admin, params={"route": route, "slow": "1", "limit": "2"})).json()
        durations = [s["duration_ms"] for s in slow["spans"]]
        assert len(durations) == 2 and durations == sorted(durations, reverse=True)
        assert (await client.get(admin, params={"route": "no-such-route"})).json() == {"spans": []}
        assert receiver.requests == 0
