"""TCP listeners: bytes both ways with half-close, connect failure closes the client, and
weighted TCP clusters."""

from __future__ import annotations

import json
import math
from collections import Counter

import trio

from ..common import closed_port
from ..waiting import eventually
from .support import cluster, pattern, snapshot, tcp_listener


async def read_until_eof(stream: trio.SocketStream, limit: int = 1 << 24) -> bytes:
    buf = bytearray()
    while chunk := await stream.receive_some(65536):
        buf += chunk
        assert len(buf) <= limit
    return bytes(buf)


async def read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return bytes(buf)


async def test_bytes_both_ways_with_half_close(make_core, upstreams):
    echo = await upstreams.tcp_echo(greeting=b"hello from upstream\n")
    proxy = make_core(snapshot([tcp_listener("tcp", "e")], {}, [cluster("e", [echo.address], "tcp")]))
    data = pattern(1024 * 1024, seed=3)
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("tcp"))
        async with stream:
            # Server speaks first.
            assert await read_exactly(stream, 20) == b"hello from upstream\n"
            received = b""

            async def reader() -> None:
                nonlocal received
                received = await read_until_eof(stream)

            async with trio.open_nursery() as n:
                n.start_soon(reader)
                for i in range(0, len(data), 64 * 1024):
                    await stream.send_all(data[i:i + 64 * 1024])
                # Half-close: the upstream sees EOF, finishes echoing, then closes its side;
                # only then does our read end.
                await stream.send_eof()
    assert received == data
    assert echo.accepted == 1
    assert proxy.cluster_stats("e")["cx_total"] == 1


async def test_connect_failure_closes_the_client_connection(make_core):
    proxy = make_core(snapshot([tcp_listener("tcp", "dead")], {},
                               [cluster("dead", [f"127.0.0.1:{closed_port()}"], "tcp")]))
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("tcp"))
        async with stream:
            try:
                got = await stream.receive_some(1024)
            except trio.BrokenResourceError:  # reset instead of FIN is acceptable too
                got = b""
    assert got == b""
    assert proxy.cluster_stats("dead")["cx_connect_fail"] >= 1


async def test_weighted_tcp_clusters(make_core, upstreams):
    ups = {name: await upstreams.tcp_echo(greeting=name.encode() + b"\n", name=name)
           for name in ("a", "b", "z")}
    proxy = make_core(snapshot(
        [tcp_listener("tcp", [("ca", 3), ("cb", 1), ("cz", 0)])], {},
        [cluster(f"c{n}", [u.address], "tcp") for n, u in ups.items()],
    ))
    n, p = 200, 0.25
    seen: Counter[str] = Counter()
    with trio.fail_after(30):
        for _ in range(n):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("tcp"))
            async with stream:
                seen[(await read_exactly(stream, 2)).decode().strip()] += 1
    assert seen["z"] == 0 and ups["z"].accepted == 0
    assert seen["a"] + seen["b"] == n
    assert abs(seen["b"] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), seen


async def test_connect_failure_moves_on_to_another_host(make_core, upstreams):
    live = await upstreams.tcp_echo(greeting=b"live\n")
    proxy = make_core(snapshot(
        [tcp_listener("tcp", "c")], {},
        [cluster("c", [f"127.0.0.1:{closed_port()}", live.address], "tcp")],
    ))
    with trio.fail_after(20):
        for _ in range(20):
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("tcp"))
            async with stream:
                assert await read_exactly(stream, 5) == b"live\n"
    assert live.accepted == 20


async def test_idle_tcp_connection_is_closed(make_core, upstreams):
    echo = await upstreams.tcp_echo(greeting=b"hi\n")
    proxy = make_core(snapshot([tcp_listener("tcp", "e", idleTimeoutMs=300)], {},
                               [cluster("e", [echo.address], "tcp")]))
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("tcp"))
        async with stream:
            assert await read_exactly(stream, 3) == b"hi\n"
            await stream.send_all(b"ping")
            assert await read_exactly(stream, 4) == b"ping"
            # Nothing more from either side: the proxy closes the connection.
            assert await read_until_eof(stream) == b""


async def test_tcp_connections_are_access_logged(make_core, upstreams, tmp_path):
    echo = await upstreams.tcp_echo()
    log = tmp_path / "tcp.log"
    fmt = {"json": [{"key": "up", "value": "%UPSTREAM_HOST%"},
                    {"key": "cluster", "value": "%UPSTREAM_CLUSTER%"},
                    {"key": "in", "value": "%BYTES_RECEIVED%"},
                    {"key": "out", "value": "%BYTES_SENT%"},
                    {"key": "flags", "value": "%RESPONSE_FLAGS%"},
                    {"key": "path", "value": "%REQ(:PATH)%"}]}
    access = {"accessLog": {"path": str(log), "format": fmt}}
    dead = f"127.0.0.1:{closed_port()}"
    proxy = make_core(snapshot(
        [tcp_listener("tcp", "e", **access), tcp_listener("dead", "d", **access)], {},
        [cluster("e", [echo.address], "tcp"), cluster("d", [dead], "tcp")]))
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("tcp"))
        async with stream:
            await stream.send_all(b"x" * 1000)
            await stream.send_eof()
            assert await read_until_eof(stream) == b"x" * 1000
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("dead"))
        async with stream:
            try:
                await stream.receive_some(10)
            except trio.BrokenResourceError:
                pass
        # The writer thread flushes shortly after each connection ends: poll, bounded.
        await eventually(lambda: log.exists() and len(log.read_text().splitlines()) >= 2,
                         what="two access-log lines", poll=0.02)
    entries = {e["cluster"]: e for e in map(json.loads, log.read_text().splitlines())}
    assert entries["e"] == {"up": echo.address, "cluster": "e", "in": 1000, "out": 1000,
                            "flags": "-", "path": None}
    assert entries["d"]["flags"] == "UF" and entries["d"]["in"] == 0
