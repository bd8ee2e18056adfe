"""The probes' pure parts: the HTTP/1.1 response reader (framing, 1xx, close), the request
bytes, and the hand-written grpc.health.v1 protobuf codec (checked against grpcio's own)."""

from __future__ import annotations

import pytest
from meshplane.drivers import probes
from meshplane.drivers.probes import decode_health_response, encode_health_request, read_response


class Chunks:
    """A reader fed from a list of byte chunks; `more` raises like a closed socket at the end."""

    def __init__(self, *chunks: bytes) -> None:
        self.buf = b""
        self.received = False
        self._chunks = list(chunks)

    async def more(self) -> None:
        if not self._chunks:
            raise probes._Closed
        self.buf += self._chunks.pop(0)
        self.received = True


@pytest.mark.parametrize(
    ("chunks", "expected", "left"),
    [
        ((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",), (200, True), b""),
        ((b"HTTP/1.1 503 No\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",), (503, False), b""),
        ((b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",), (204, True), b""),
        ((b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab", b"cd\r\n0\r\nx-t: 1\r\n\r\n"),
         (200, True), b""),
        ((b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",), (200, False), b""),
        ((b"HTTP/1.1 200 OK\r\n\r\nbody until close",), (200, False), b"body until close"),
        ((b"HTTP/1.1 404 Not", b" Found\r\nContent-Length: 3\r\n\r\nn", b"o!"), (404, True), b""),
    ],
)
async def test_read_response(chunks: tuple[bytes, ...], expected: tuple[int, bool], left: bytes) -> None:
    reader = Chunks(*chunks)
    assert await read_response(reader) == expected  # type: ignore[arg-type]
    assert reader.buf == left


async def test_read_response_rejects_garbage_and_early_close() -> None:
    with pytest.raises(ValueError):
        await read_response(Chunks(b"SSH-2.0-OpenSSH\r\n\r\n"))  # type: ignore[arg-type]
    with pytest.raises(probes._Closed):
        await read_response(Chunks(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"))  # type: ignore[arg-type]


def test_request_bytes() -> None:
    assert probes.encode_http1_request("/ping", "v1.local") == (
        b"GET /ping HTTP/1.1\r\nHost: v1.local\r\nUser-Agent: meshplane/HC\r\nAccept: */*\r\n\r\n"
    )


def test_grpc_health_codec_agrees_with_grpcio() -> None:
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    assert encode_health_request() == b"\x00\x00\x00\x00\x00"
    framed = encode_health_request("pkg.Svc")
    assert health_pb2.HealthCheckRequest.FromString(framed[5:]).service == "pkg.Svc"
    for status in (0, 1, 2, 3):
        message = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        body = b"\x00" + len(message).to_bytes(4, "big") + message
        assert decode_health_response(body) == status
    assert decode_health_response(b"\x01\x00\x00\x00\x00") is None  # compressed: not ours
    assert decode_health_response(b"\x00\x00\x00\x00\x05\x08") is None  # truncated
