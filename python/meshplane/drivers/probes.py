"""One upstream endpoint's health probe, per protocol: HTTP/1.1 (h11), HTTP/2 (h2, prior
knowledge), gRPC health (`grpc.health.v1.Health/Check` over h2) and TCP connect.

A probe object belongs to one endpoint and runs one probe at a time (the scheduler never
probes a host again before its last result is in). HTTP/1.1 and HTTP/2 probes keep their
connection between probes (Envoy's `reuse_connection: true`): a probe on a reused connection
that the server closed while idle is retried once at once on a fresh connection, so an idle
keep-alive timeout is never mistaken for a network failure. Any other error closes the
connection; the next probe reconnects.

`probe()` returns a `ProbeResult` and never raises for network trouble; the caller bounds it
with the policy's timeout (cancellation leaves the probe's connection unusable, so the caller
then calls `close()`). Imports trio, h11, h2 and `meshplane.policy`.
"""

from __future__ import annotations

import abc
import errno
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import h11
import trio

from meshplane.policy import ProbeResult, classify_grpc_health, classify_http_status
from meshplane.policy.health import StatusRange

if TYPE_CHECKING:
    import h2.connection

__all__ = [
    "USER_AGENT",
    "GrpcHealthProbe",
    "Http1Probe",
    "Http2Probe",
    "Probe",
    "ProbeSpec",
    "TcpProbe",
    "decode_health_response",
    "encode_health_request",
    "make_probe",
]

USER_AGENT: Final = "meshplane/HC"
GRPC_HEALTH_PATH: Final = "/grpc.health.v1.Health/Check"
_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
_RECV = 65536


class _Closed(Exception):
    """The peer closed or reset the connection before the probe's answer was complete."""


@dataclass(frozen=True)
class ProbeSpec:
    """What one cluster's probes send. `host` is the Host / :authority; `expected` the HTTP
    statuses that pass (half-open ranges); `grpc_service` the HealthCheckRequest.service."""

    protocol: str  # "http" | "http2" | "grpc" | "tcp"
    path: str = "/"
    host: str = "localhost"
    expected: tuple[StatusRange, ...] = ((200, 201),)
    grpc_service: str = ""


class Probe(Protocol):
    async def probe(self) -> ProbeResult: ...

    def close(self) -> None: ...


async def _connect(ip: str, port: int) -> trio.SocketStream:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


class _Connected(abc.ABC):
    """A probe that owns at most one connection, retried once when a reused one went stale."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self._stream: trio.SocketStream | None = None
        self._answered = False  # bytes of the current answer arrived
        self._protocol_error: type[Exception] = h11.ProtocolError  # the subclass's protocol's

    def close(self) -> None:
        """Drop the connection at once (sync: also called on cancellation and removal)."""
        if self._stream is not None:
            self._stream.socket.close()
            self._stream = None
        self._reset_protocol()

    @abc.abstractmethod
    def _reset_protocol(self) -> None: ...

    @abc.abstractmethod
    async def _exchange(self, stream: trio.SocketStream, fresh: bool) -> ProbeResult: ...

    async def probe(self) -> ProbeResult:
        for attempt in (0, 1):
            reused = self._stream is not None
            self._answered = False
            try:
                if self._stream is None:
                    self._stream = await _connect(self.ip, self.port)
                return await self._exchange(self._stream, not reused)
            except (_Closed, *_NETWORK_ERRORS, h11.ProtocolError, self._protocol_error):
                self.close()
                if attempt == 0 and reused and not self._answered:
                    continue  # the server dropped an idle connection: not a health verdict
                return ProbeResult.NETWORK_FAILURE
        return ProbeResult.NETWORK_FAILURE  # pragma: no cover - the loop always returns


class Http1Probe:
    """`GET path` with Host and `User-Agent: meshplane/HC` over a kept-alive HTTP/1.1
    connection; the status decides (`expected`), the body is read and dropped.

    NOTE: this is the probe that runs thousands of times a second, so it is lean on purpose:
    the request is encoded once (by h11, so it is valid HTTP), and the socket is used directly
    (non-blocking send; one `wait_readable` per read) with a minimal response reader
    (`read_response`). Going through h11's state machine and trio's `SocketStream` for each
    probe cost 0.7 of a core at 5,000 probes/s; this path is benchmarked in
    benches/python/bench_health.py.
    """

    def __init__(self, ip: str, port: int, spec: ProbeSpec) -> None:
        self.ip, self.port = ip, port
        self._expected = spec.expected
        self._request = encode_http1_request(spec.path, spec.host)
        self._sock: socket.socket | None = None
        self._buf = b""

    def close(self) -> None:
        sock, self._sock, self._buf = self._sock, None, b""
        if sock is not None:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def probe(self) -> ProbeResult:
        for attempt in (0, 1):
            reused = self._sock is not None
            reader: _Reader | None = None
            try:
                if self._sock is None:
                    self._sock = await _connect_raw(self.ip, self.port)
                reader = _Reader(self._sock, self._buf)
                await _send_raw(self._sock, self._request)
                status, keep_alive = await read_response(reader)
            except (_Closed, OSError, ValueError, IndexError):
                self.close()
                if attempt == 0 and reused and reader is not None and not reader.received:
                    continue  # the server dropped an idle connection: not a health verdict
                return ProbeResult.NETWORK_FAILURE
            self._buf = reader.buf
            if not keep_alive:
                self.close()
            return classify_http_status(status, self._expected)
        return ProbeResult.NETWORK_FAILURE  # pragma: no cover - the loop always returns


def encode_http1_request(path: str, host: str) -> bytes:
    """The bytes of the HTTP/1.1 health-check request (validated by h11)."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[("Host", host), ("User-Agent", USER_AGENT), ("Accept", "*/*")],
    )
    return (conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b"")


async def _connect_raw(ip: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((ip, port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, os.strerror(err))
        await trio.lowlevel.wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    return sock


async def _send_raw(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


class _Reader:
    """Buffered reads from a probe's socket; `received` tells whether any byte arrived."""

    __slots__ = ("buf", "received", "_sock")

    def __init__(self, sock: socket.socket, buf: bytes = b"") -> None:
        self.buf = buf
        self.received = False
        self._sock = sock

    async def more(self) -> None:
        sock = self._sock
        while True:
            try:
                data = sock.recv(_RECV)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
        if not data:
            raise _Closed
        self.received = True
        self.buf += data


_MAX_HEAD = 65536


async def read_response(reader: _Reader) -> tuple[int, bool]:
    """Read one response (skipping 1xx) and its body; (status, connection reusable).

    Understands what HTTP/1.1 framing needs: Content-Length, chunked transfer coding (trailers
    skipped), bodies delimited by close, HTTP/1.0 and `Connection: close`. Raises `_Closed`
    when the peer closes early and ValueError on a malformed response.
    """
    while True:
        while (end := reader.buf.find(b"\r\n\r\n")) < 0:
            if len(reader.buf) > _MAX_HEAD:
                raise ValueError("response head too large")
            await reader.more()
        head, reader.buf = reader.buf[:end], reader.buf[end + 4 :]
        lines = head.split(b"\r\n")
        version, code = lines[0].split(b" ", 2)[:2]
        status = int(code)
        if not version.startswith(b"HTTP/1.") or not 100 <= status <= 999:
            raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
        if 100 <= status < 200:
            continue
        length: int | None = None
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                tokens = value.lower()
                keep_alive = b"close" not in tokens and (keep_alive or b"keep-alive" in tokens)
        if status in (204, 304):
            return status, keep_alive
        if chunked:
            await _skip_chunks(reader)
        elif length is not None:
            while len(reader.buf) < length:
                await reader.more()
            reader.buf = reader.buf[length:]
        else:  # delimited by close: drop the connection after this probe
            return status, False
        return status, keep_alive


async def _skip_chunks(reader: _Reader) -> None:
    while True:
        while (eol := reader.buf.find(b"\r\n")) < 0:
            await reader.more()
        size = int(reader.buf[:eol].split(b";", 1)[0], 16)
        reader.buf = reader.buf[eol + 2 :]
        if size == 0:
            while (eol := reader.buf.find(b"\r\n")) != 0:  # trailers, then the blank line
                if eol > 0:
                    reader.buf = reader.buf[eol + 2 :]
                else:
                    await reader.more()
            reader.buf = reader.buf[2:]
            return
        while len(reader.buf) < size + 2:
            await reader.more()
        reader.buf = reader.buf[size + 2 :]


class Http2Probe(_Connected):
    """One stream per probe on a kept-alive cleartext HTTP/2 connection (prior knowledge).

    `GET path` for `http2`; for gRPC see `GrpcHealthProbe`. A reset stream or a GOAWAY before
    the answer is a network failure, as in Envoy.
    """

    def __init__(self, ip: str, port: int, spec: ProbeSpec) -> None:
        # h2 loads with the first HTTP/2 or gRPC probe (~0.8 MiB resident): not at start.
        import h2.exceptions

        super().__init__(ip, port)
        self._protocol_error = h2.exceptions.ProtocolError
        self._spec = spec
        self._h2: h2.connection.H2Connection | None = None
        self._headers = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", spec.host),
            (":path", spec.path),
            ("user-agent", USER_AGENT),
        ]
        self._body = b""

    def _reset_protocol(self) -> None:
        self._h2 = None

    async def _exchange(self, stream: trio.SocketStream, fresh: bool) -> ProbeResult:
        import h2.config
        import h2.connection
        import h2.events

        conn = self._h2
        if conn is None:
            conn = self._h2 = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
            )
            conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, self._headers, end_stream=not self._body)
        if self._body:
            conn.send_data(sid, self._body, end_stream=True)
        await stream.send_all(conn.data_to_send())
        headers: dict[str, str] = {}
        body = bytearray()
        while True:
            data = await stream.receive_some(_RECV)
            if not data:
                raise _Closed
            done = False
            for event in conn.receive_data(data):
                if getattr(event, "stream_id", sid) != sid:
                    continue
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    self._answered = True
                    headers.update((str(k), str(v)) for k, v in event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
                elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    raise _Closed
            pending = conn.data_to_send()
            if pending:
                await stream.send_all(pending)
            if done:
                return self._verdict(headers, bytes(body))

    def _verdict(self, headers: dict[str, str], body: bytes) -> ProbeResult:
        return classify_http_status(int(headers.get(":status", "0")), self._spec.expected)


def encode_health_request(service: str = "") -> bytes:
    """A gRPC-framed `grpc.health.v1.HealthCheckRequest{service}` (protobuf by hand)."""
    raw = service.encode()
    message = b"" if not raw else b"\x0a" + _varint(len(raw)) + raw
    return b"\x00" + len(message).to_bytes(4, "big") + message


def decode_health_response(body: bytes) -> int | None:
    """The `status` (field 1, enum) of a gRPC-framed `HealthCheckResponse`; 0 (UNKNOWN) when
    the field is absent (proto3 default); None when the body is not one framed message."""
    if len(body) < 5 or body[0] != 0:
        return None
    length = int.from_bytes(body[1:5], "big")
    message = body[5 : 5 + length]
    if len(message) != length:
        return None
    pos, status = 0, 0
    try:
        while pos < len(message):
            key, pos = _read_varint(message, pos)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = _read_varint(message, pos)
                if field == 1:
                    status = value
            elif wire == 2:
                size, pos = _read_varint(message, pos)
                pos += size
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return None
    except IndexError:
        return None
    return status if pos == len(message) else None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


class GrpcHealthProbe(Http2Probe):
    """`grpc.health.v1.Health/Check` with `HealthCheckRequest{service}`; healthy iff
    grpc-status is 0 and the response says SERVING (envoy-semantics §3)."""

    def __init__(self, ip: str, port: int, spec: ProbeSpec) -> None:
        super().__init__(ip, port, spec)
        self._headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", spec.host),
            (":path", GRPC_HEALTH_PATH),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", USER_AGENT),
        ]
        self._body = encode_health_request(spec.grpc_service)

    def _verdict(self, headers: dict[str, str], body: bytes) -> ProbeResult:
        if headers.get(":status") != "200" or "grpc-status" not in headers:
            return ProbeResult.ACTIVE_FAILURE
        try:
            code = int(headers["grpc-status"])
        except ValueError:
            return ProbeResult.ACTIVE_FAILURE
        return classify_grpc_health(code, decode_health_response(body))


class TcpProbe:
    """Connect, then close: success on connect (Envoy's TCP check with no payload)."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port

    async def probe(self) -> ProbeResult:
        # NOTE: a plain non-blocking connect awaited with `wait_writable` (`_connect_raw`), not
        # a Trio socket and stream: ~62 instead of ~86 µs of the Trio thread per probe
        # (address resolution, stream set-up), which with 10,000 hosts checked every second
        # is most of what one pass of the loop runs (benches/README.md, control plane).
        try:
            sock = await _connect_raw(self.ip, self.port)
        except OSError:
            return ProbeResult.NETWORK_FAILURE
        sock.close()
        return ProbeResult.SUCCESS

    def close(self) -> None:
        pass


def make_probe(spec: ProbeSpec, ip: str, port: int) -> Probe:
    """The probe of `spec.protocol` for one endpoint."""
    kinds: dict[str, Any] = {"http": Http1Probe, "http2": Http2Probe, "grpc": GrpcHealthProbe}
    if spec.protocol == "tcp":
        return TcpProbe(ip, port)
    return kinds[spec.protocol](ip, port, spec)  # type: ignore[no-any-return]
