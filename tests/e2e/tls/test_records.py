"""How HTTP/1.1 requests fall into TLS records and TCP segments does not change what a TLS
listener serves: pipelined requests in one record, a head spread over several records, one
record cut across TCP writes, and a body of many full-size records (each longer than one socket
read). The listener's TLS stream reads only when the socket is readable and stops at the
plaintext rustls holds (rust/src/tls/stream.rs); these are the cases that shortcut must keep.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import trio
import trio.testing
from meshplane import Proxy

from ..dataplane.support import LOCALHOST, H1Upstream, pattern, sha256
from .support import GATEWAY_PORT, Issued, Pki, gateway_config, listener_tls


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


class _Responses:
    """Reads HTTP/1.1 responses with a content-length from plaintext `receive()` returns."""

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.buffer = b""

    async def one(self) -> dict[str, Any]:
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 200"), lines[0]
        length = next(int(v) for k, _, v in (line.partition(": ") for line in lines[1:])
                      if k.lower() == "content-length")
        while len(self.buffer) < length:
            await self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return json.loads(body)  # type: ignore[no-any-return]

    async def _more(self) -> None:
        data = await self.receive()
        assert data, "the proxy closed the connection"
        self.buffer += data


async def test_pipelined_requests_in_one_record_and_a_head_over_several(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        with trio.fail_after(10):
            tcp = await trio.open_tcp_stream(LOCALHOST, proxy.port(GATEWAY_PORT))
            stream = trio.SSLStream(tcp, pki.client_context(), server_hostname=LOCALHOST)
            async with stream:
                await stream.do_handshake()
                responses = _Responses(stream.receive_some)
                # One write, so one TLS record, carrying two requests.
                await stream.send_all(_request("/first") + _request("/second"))
                assert (await responses.one())["path"] == "/first"
                assert (await responses.one())["path"] == "/second"
                # One head in three records (each send_all is one record).
                head = _request("/third")
                for part in (head[:5], head[5:21], head[21:]):
                    await stream.send_all(part)
                assert (await responses.one())["path"] == "/third"
    assert [s.target for s in echo.seen] == ["/first", "/second", "/third"]


async def test_one_record_cut_across_tcp_writes(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        with trio.fail_after(10):
            sock = await trio.open_tcp_stream(LOCALHOST, proxy.port(GATEWAY_PORT))
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = pki.client_context().wrap_bio(incoming, outgoing, server_hostname=LOCALHOST)

            async def pump() -> None:
                if outgoing.pending:
                    await sock.send_all(outgoing.read())
                data = await sock.receive_some(65536)
                assert data, "the proxy closed the connection"
                incoming.write(data)

            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await pump()
            if outgoing.pending:
                await sock.send_all(outgoing.read())

            async def receive() -> bytes:
                while True:
                    try:
                        return tls.read(65536)
                    except ssl.SSLWantReadError:
                        await pump()

            responses = _Responses(receive)
            for path in ("/cut-in-header", "/cut-in-payload"):
                tls.write(_request(path))
                record = outgoing.read()
                cut = 3 if path == "/cut-in-header" else len(record) // 2  # 5-byte record header
                # TCP_NODELAY (trio's default): two segments; the proxy usually reads the
                # first alone and holds a partial record until the second arrives.
                await sock.send_all(record[:cut])
                await trio.testing.wait_all_tasks_blocked()
                await sock.send_all(record[cut:])
                assert (await responses.one())["path"] == path
            await sock.aclose()
    assert [s.target for s in echo.seen] == ["/cut-in-header", "/cut-in-payload"]


async def test_a_body_of_many_full_records(
    pki: Pki, server_cert: Issued, echo: H1Upstream
) -> None:
    body = pattern(300_000, seed=13)  # ~19 records of 16 KiB, each longer than one 4 KiB socket read
    config = gateway_config(echo.address, listener_tls("STRICT", server_cert))
    async with Proxy(config, drain_ms=200) as proxy:
        url = f"https://127.0.0.1:{proxy.port(GATEWAY_PORT)}/upload"
        async with httpx.AsyncClient(verify=pki.client_context(), trust_env=False,
                                     timeout=10) as client:
            for _ in range(2):  # the second on the same connection
                response = await client.post(url, content=body)
                assert response.status_code == 200
                doc = response.json()
                assert doc["body_len"] == len(body)
                assert doc["body_sha256"] == sha256(body)
    assert len(echo.seen) == 2
