"""What every end-to-end package shares: the loopback address, the `e2e` marker, ports, TCP
servers that report their port, and the HTTP/1.1 connection loop of the h11 upstreams.

- `TcpServer`: base of the test servers: listens on 127.0.0.1 (port 0 unless it ran before),
  reports itself through `task_status.started` once bound, serves each connection with
  `_serve`. `address` is "127.0.0.1:PORT".
- `serve_h11(stream, exchange)`: HTTP/1.1 on one connection: `exchange(conn, request)` per
  request head, keep-alive cycles, protocol errors and resets end it; the stream is closed
  unless the exchange reset it (`rst_close` and `raise Reset`).
- `closed_port`, `rst_close`, `next_event`; `e2e_marker(here)` for a package's conftest.

Each package's own support module builds on these (`dataplane/support.py`: snapshot documents,
the `Core` under test, programmable upstreams; `resilience/support.py`: misbehaving upstreams,
App Mesh configs; `tls/support.py`: certificates, TLS upstream and clients). Polling lives in
`waiting.py`, ASGI upstreams in `asgi.py`. Imports neither meshplane nor pytest at import time.
"""

from __future__ import annotations

import abc
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import trio

__all__ = [
    "LOCALHOST",
    "Reset",
    "TcpServer",
    "closed_port",
    "e2e_marker",
    "next_event",
    "rst_close",
    "serve_h11",
]

LOCALHOST = "127.0.0.1"


def e2e_marker(here: Path) -> Callable[[list[Any]], None]:
    """A `pytest_collection_modifyitems` hook that marks every test below `here` as `e2e`:
    `pytest_collection_modifyitems = e2e_marker(HERE)` in a package's conftest."""

    def pytest_collection_modifyitems(items: list[Any]) -> None:
        import pytest

        for item in items:
            if here in Path(str(item.fspath)).parents:
                item.add_marker(pytest.mark.e2e)

    return pytest_collection_modifyitems


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind((LOCALHOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rst_close(sock: socket.socket | trio.socket.SocketType) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class TcpServer(abc.ABC):
    """A server on 127.0.0.1; subclasses define `_serve(stream)` for one connection."""

    port: int = field(default=0, kw_only=True)

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (on `port`: 0 the first time, the same port again when restarted), report
        `self` through `task_status.started` once bound, and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(self.port, host=LOCALHOST)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._serve, listeners)

    @abc.abstractmethod
    async def _serve(self, stream: trio.SocketStream) -> None:
        """Serve one accepted connection."""


class Reset(Exception):
    """An exchange reset the connection (`rst_close`); the server stops serving it."""


async def next_event(conn: h11.Connection, stream: trio.SocketStream) -> Any:
    """The next h11 event of `conn`, reading from `stream` as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))


Exchange = Callable[[h11.Connection, h11.Request], Awaitable[None]]


async def serve_h11(stream: trio.SocketStream, exchange: Exchange) -> None:
    """Serve HTTP/1.1 on `stream`: `exchange(conn, request)` answers each request (and reads
    its body), until the client closes, a protocol or socket error, a cycle that did not
    finish, or `Reset`. Closes the stream, except after a reset (already closed)."""
    conn = h11.Connection(h11.SERVER)
    reset = False
    try:
        while True:
            event = await next_event(conn, stream)
            if not isinstance(event, h11.Request):
                return
            await exchange(conn, event)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except Reset:
        reset = True
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        if not reset:
            with trio.CancelScope(shield=True):
                await stream.aclose()
