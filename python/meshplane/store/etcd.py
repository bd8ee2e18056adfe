"""`EtcdStore`: the store on an etcd v3 cluster, through etcd's JSON gateway (`/v3/...`).

Spoken with trio and h11 (run-time dependencies already), no client library: unary calls
(range, put, txn, deleterange, lease grant/keepalive/revoke) are one HTTP/1.1 POST each on a
small pool of keep-alive connections; a watch is one long POST to `/v3/watch` whose response
streams JSON messages. Keys and values travel base64-encoded, as the gateway requires.

Endpoints are tried in order, starting from the last one that answered, so losing a member of a
cluster costs one failed connect. Each call is bounded by `timeout` seconds. With `tls` (an
`ssl.SSLContext`: the CA to trust, and a client certificate for etcd's `--client-cert-auth`)
every connection is HTTPS. Imports trio, h11
and `meshplane.store._base`.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import AsyncGenerator
from typing import Any

import h11
import trio

from meshplane.store._base import (
    Change,
    KeyValue,
    Store,
    StoreError,
    StoreUnavailable,
    WatchExpired,
    prefix_end,
)

__all__ = ["EtcdStore"]

_POOL_SIZE = 32


def _b64(text: str | bytes) -> str:
    raw = text.encode("utf-8", errors="surrogateescape") if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def _kv(doc: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(doc.get("key")).decode("utf-8", errors="surrogateescape"),
        _unb64(doc.get("value")),
        int(doc.get("create_revision", 0)),
        int(doc.get("mod_revision", 0)),
        int(doc.get("lease", 0)),
    )


def _keepalive(stream: trio.SocketStream) -> None:
    """TCP keep-alive probes, so a watch on a member that vanished without a FIN (a network
    partition, a powered-off host) fails within about 30 s instead of waiting forever."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):  # Linux names; other systems keep their defaults
            stream.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _change(event: dict[str, Any]) -> Change:
    kv = _kv(event.get("kv") or {})
    deleted = event.get("type") == "DELETE"
    return Change(kv.key, None if deleted else kv.value, kv.mod_revision)


class _Connection:
    def __init__(self, stream: trio.abc.Stream, endpoint: tuple[str, int]) -> None:
        self.stream = stream
        self.endpoint = endpoint
        self.h11 = h11.Connection(h11.CLIENT)

    async def send_request(self, path: str, body: bytes) -> None:
        host = f"{self.endpoint[0]}:{self.endpoint[1]}"
        request = h11.Request(
            method="POST", target=path,
            headers=[("Host", host), ("Content-Type", "application/json"),
                     ("Content-Length", str(len(body)))],
        )
        data = self.h11.send(request) + self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        await self.stream.send_all(data)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                chunk = await self.stream.receive_some(65536)
                self.h11.receive_data(bytes(chunk))
                if not chunk and self.h11.their_state is not h11.DONE:
                    raise OSError("connection closed by etcd")
                continue
            return event

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


class EtcdStore(Store):
    """The store on the etcd cluster at `endpoints` ((host, port) pairs; `url` for messages)."""

    def __init__(
        self,
        url: str,
        endpoints: list[tuple[str, int]],
        *,
        tls: ssl.SSLContext | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise StoreError(url, "no etcd endpoint given")
        self.url = url
        self.endpoints = list(endpoints)
        self.tls = tls  # None: plain HTTP; else HTTPS with this context (and client certificate)
        self.timeout = timeout
        self._preferred = 0
        self._idle: list[_Connection] = []

    # -- transport -------------------------------------------------------------------------

    async def _open(self) -> _Connection:
        errors = []
        n = len(self.endpoints)
        for i in range(n):
            index = (self._preferred + i) % n
            host, port = self.endpoints[index]
            stream: trio.abc.Stream
            try:
                with trio.fail_after(self.timeout):
                    tcp = await trio.open_tcp_stream(host, port)
                    _keepalive(tcp)
                    stream = tcp
                    if self.tls is not None:
                        stream = trio.SSLStream(tcp, self.tls, server_hostname=host)
                        try:
                            await stream.do_handshake()
                        except BaseException:
                            await trio.aclose_forcefully(tcp)
                            raise
            except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
                reason = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                errors.append(f"{host}:{port}: {reason or 'connect timed out'}")
                continue
            self._preferred = index
            return _Connection(stream, (host, port))
        raise StoreUnavailable(self.url, "unreachable (" + "; ".join(errors) + ")")

    async def _call(self, path: str, doc: dict[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """POST `doc` to `path`; once more (on a fresh connection, the next member after a
        failing one) if the first try failed. A call that is not `idempotent` is not tried
        again after a timeout, when etcd may have applied it: it fails saying so."""
        body = json.dumps(doc).encode()
        for attempt in range(2):
            pooled = attempt == 0 and bool(self._idle)
            conn = self._idle.pop() if pooled else await self._open()
            try:
                with trio.fail_after(self.timeout):
                    status, payload = await self._exchange(conn, path, body)
            except (OSError, h11.ProtocolError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                await trio.aclose_forcefully(conn.stream)
                await self.aclose()  # pooled connections to a failing member are as stale
                if not pooled:  # this member answered badly: start from the next one
                    index = self.endpoints.index(conn.endpoint)
                    self._preferred = (index + 1) % len(self.endpoints)
                if isinstance(exc, trio.TooSlowError) and not idempotent:
                    raise StoreUnavailable(
                        self.url, f"{path} timed out after {self.timeout:g} s; it may or may not "
                        "have been applied") from None
                if attempt == 0:
                    continue
                raise StoreUnavailable(self.url, f"unreachable ({exc or 'timed out'})") from None
            if conn.reusable() and len(self._idle) < _POOL_SIZE:
                self._idle.append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)
            try:
                answer = json.loads(payload or b"{}")
            except ValueError:
                raise StoreError(self.url, f"{path}: HTTP {status}, not JSON") from None
            if status != 200 or "error" in answer:
                message = answer.get("message") or answer.get("error") or f"HTTP {status}"
                # gRPC UNAVAILABLE / DEADLINE_EXCEEDED (no leader, lost quorum): the cluster
                # is there but cannot serve; callers treat it as unreachable and retry.
                kind = StoreUnavailable if answer.get("code") in (4, 14) or status == 503 else StoreError
                raise kind(self.url, f"{path}: {message}")
            return answer  # type: ignore[no-any-return]
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(conn: _Connection, path: str, body: bytes) -> tuple[int, bytes]:
        await conn.send_request(path, body)
        status, chunks = 0, []
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)

    # -- operations ------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        answer = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        answer = await self._call(
            "/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        )
        revision = int(answer["header"]["revision"])
        return [_kv(d) for d in answer.get("kvs") or []], revision

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        doc: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            doc["lease"] = str(lease)
        answer = await self._call("/v3/kv/put", doc)
        return int(answer["header"]["revision"])

    async def put_if(self, key: str, value: bytes, *, mod_revision: int, lease: int = 0) -> bool:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        answer = await self._call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "target": "MOD", "result": "EQUAL",
                         "mod_revision": str(mod_revision)}],
            "success": [{"request_put": put}],
        }, idempotent=False)
        return bool(answer.get("succeeded"))

    async def delete(self, key: str) -> bool:
        answer = await self._call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(answer.get("deleted", 0)) > 0

    async def grant_lease(self, ttl: float) -> int:
        # etcd leases count whole seconds; round up so a lease never lives shorter than asked.
        seconds = max(1, int(-(-ttl // 1)))
        answer = await self._call("/v3/lease/grant", {"TTL": str(seconds)})
        return int(answer["ID"])

    async def keepalive(self, lease: int) -> bool:
        answer = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int((answer.get("result") or {}).get("TTL", 0)) > 0

    async def revoke(self, lease: int) -> None:
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease)})
        except StoreError as exc:
            if isinstance(exc, StoreUnavailable) or "not found" not in str(exc):
                raise

    async def watch_changes(self, prefix: str, after: int) -> AsyncGenerator[list[Change], None]:
        request = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                      "start_revision": str(after + 1)}}
        conn = await self._open()
        try:
            try:
                await conn.send_request("/v3/watch", json.dumps(request).encode())
                decoder = json.JSONDecoder()
                buffer = ""
                while True:
                    event = await conn.next_event()
                    if isinstance(event, h11.Response):
                        if event.status_code != 200:
                            raise StoreError(self.url, f"/v3/watch: HTTP {event.status_code}")
                        continue
                    if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        raise StoreUnavailable(self.url, "watch stream closed by etcd")
                    if not isinstance(event, h11.Data):
                        continue
                    buffer += bytes(event.data).decode()
                    while True:
                        buffer = buffer.lstrip()
                        if not buffer:
                            break
                        try:
                            message, end = decoder.raw_decode(buffer)
                        except ValueError:
                            break  # an incomplete message: wait for more bytes
                        buffer = buffer[end:]
                        result = message.get("result") or {}
                        if "error" in message:
                            raise StoreUnavailable(self.url, f"watch: {message.get('message')}")
                        if result.get("canceled"):
                            reason = result.get("cancel_reason") or "compacted"
                            if result.get("compact_revision"):
                                raise WatchExpired(self.url, f"watch canceled: {reason}")
                            raise StoreUnavailable(self.url, f"watch canceled: {reason}")
                        if result.get("events"):
                            yield [_change(e) for e in result["events"]]
            except (OSError, h11.ProtocolError, trio.BrokenResourceError) as exc:
                raise StoreUnavailable(self.url, f"watch lost ({exc})") from None
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(conn.stream)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)
