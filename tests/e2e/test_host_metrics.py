"""The core writes the hosts' Prometheus families itself (`Core.host_metrics()`), and the admin
API's scrape uses them with `stats(hosts=False)`: the text must be exactly what the Python
renderer writes from a full `stats()` copy, for every shape a host's stats can take (exact
status codes on the first host or only on a later one, none at all, flags set, weights), and
the Envoy-named membership gauges must not change. `Core.update_endpoints` is checked on the
same real proxy: a removed host stops taking traffic, an added one starts.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

from meshplane import Proxy
from meshplane.admin.envoy_names import render_envoy
from meshplane.admin.prometheus import parse, render, render_parts
from meshplane.admin.server import Request, Response, serve_http

from .asgi import serve_asgi
from .test_admin import GATEWAY_PORT, admin_get, mesh

pytestmark = pytest.mark.e2e

CLUSTER = "api-v1"


def answering(status: int, name: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": status, "headers": [(b"x-name", name.encode())]})
        await send({"type": "http.response.body", "body": name.encode()})

    return app


def assert_same_text(proxy: Proxy) -> str:
    """Both renderings of the proxy's stats agree (no traffic runs meanwhile); returns one."""
    full = proxy.stats()
    lean = proxy.stats(hosts=False)
    assert "hosts" not in lean["clusters"][CLUSTER]
    host_text = proxy.host_metrics().decode()
    # The same text kept in the core and read in pieces (as the scrape sends it).
    kept = proxy._require_core().host_metrics_text()
    assert len(kept) == len(host_text.encode())
    for size in (1, 7, 4096, len(kept) + 1):
        pieces = [kept.piece(start, size) for start in range(0, len(kept), size)]
        assert all(len(p) == size for p in pieces[:-1]) and 0 < len(pieces[-1]) <= size
        assert b"".join(pieces).decode() == host_text
    assert kept.piece(len(kept), 10) == b"" and kept.piece(len(kept) + 5, 10) == b""
    head, hosts, tail = render_parts(lean)
    assert hosts == ""
    text = head + host_text + tail
    assert text == render(full)
    assert render_envoy(lean) == render_envoy(full)
    return host_text


def families(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


async def test_core_written_host_families_equal_the_python_rendering(nursery: trio.Nursery) -> None:
    ok = await serve_asgi(nursery, answering(200, "ok"))
    failing = await serve_asgi(nursery, answering(503, "failing"))
    config = mesh(ok)
    node = next(r for r in config["resources"] if r["name"] == CLUSTER)
    # "127.0.0.1:1" sorts first and refuses connections: it never has a status code.
    node["spec"]["serviceDiscovery"] = {"static": {"endpoints": [
        "127.0.0.1:1", f"127.0.0.1:{ok}", f"127.0.0.1:{failing}"]}}
    async with Proxy(config, admin="127.0.0.1:0", drain_ms=200) as proxy:
        text = assert_same_text(proxy)  # no traffic yet: no host has a code
        assert "meshplane_host_rq_code_total" not in families(text)
        assert text.count("meshplane_host_healthy{") == 3
        port = proxy.port(GATEWAY_PORT)


        def coded() -> set[str]:
            hosts = proxy.stats()["clusters"][CLUSTER]["hosts"]
            return {name for name, host in hosts.items() if host["rq_codes"]}

        answers = set()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):  # bounded: until both answering hosts have answered
                if coded() == {f"127.0.0.1:{ok}", f"127.0.0.1:{failing}"}:
                    break
                answers.add((await client.get("/x")).status_code)
        assert answers <= {200, 503} and 200 in answers
        assert coded() == {f"127.0.0.1:{ok}", f"127.0.0.1:{failing}"}
        core = proxy._require_core()
        core.set_host_ejected(CLUSTER, f"127.0.0.1:{failing}", True)
        text = assert_same_text(proxy)
        # The first host has no code: the family comes last, as Python first sees it there.
        assert families(text)[-1] == "meshplane_host_rq_code_total"
        samples = parse(text)
        assert samples[("meshplane_host_ejected", (("cluster", CLUSTER), ("host", f"127.0.0.1:{failing}")))] == 1

        # A delta: the refusing host goes, another (sorting last) comes; the first host now
        # has codes.
        core.update_endpoints(CLUSTER, [("127.0.0.2:2", 5)], ["127.0.0.1:1"])
        text = assert_same_text(proxy)
        listed = families(text)
        assert listed.index("meshplane_host_rq_code_total") == listed.index("meshplane_host_rq_xx_total") + 1
        hosts = {labels[1][1] for (name, labels) in parse(text) if name == "meshplane_host_weight"}
        assert hosts == {f"127.0.0.1:{ok}", f"127.0.0.1:{failing}", "127.0.0.2:2"}
        weight = parse(text)[("meshplane_host_weight", (("cluster", CLUSTER), ("host", "127.0.0.2:2")))]
        assert weight == 5

        # The scrape itself carries the core's text unchanged.
        scrape = (await admin_get(proxy, "/stats/prometheus")).text
        assert proxy.host_metrics().decode() in scrape

        # Hosts enough for the core to read and write them in two parts (one on a thread of
        # its own): 4,200 more that sort first, so the hosts with codes are in the second part
        # and the first host has none.
        many = [(f"10.0.{i // 250}.{i % 250 + 1}:80", 1) for i in range(4200)]
        core.update_endpoints(CLUSTER, many, [])
        text = assert_same_text(proxy)
        assert text.count("meshplane_host_weight{") == 4203
        assert families(text)[-1] == "meshplane_host_rq_code_total"


async def test_update_endpoints_moves_traffic(nursery: trio.Nursery) -> None:
    first = await serve_asgi(nursery, answering(200, "first"))
    second = await serve_asgi(nursery, answering(200, "second"))
    async with Proxy(mesh(first), admin="127.0.0.1:0", drain_ms=200) as proxy:
        core = proxy._require_core()
        port = proxy.port(GATEWAY_PORT)

        async def names(n: int) -> set[str]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                return {(await client.get("/x")).headers["x-name"] for _ in range(n)}

        assert await names(5) == {"first"}
        core.update_endpoints(CLUSTER, [(f"127.0.0.1:{second}", 1)])
        assert await names(40) == {"first", "second"}
        core.update_endpoints(CLUSTER, remove=[f"127.0.0.1:{first}"])
        assert await names(10) == {"second"}
        hosts = proxy.stats()["clusters"][CLUSTER]["hosts"]
        assert list(hosts) == [f"127.0.0.1:{second}"]
        with pytest.raises(Exception, match="expected IP:PORT"):
            core.update_endpoints(CLUSTER, [("not-an-address", 1)], [f"127.0.0.1:{second}"])
        assert list(proxy.stats()["clusters"][CLUSTER]["hosts"]) == [f"127.0.0.1:{second}"]


async def test_a_large_body_goes_out_in_its_parts(nursery: trio.Nursery) -> None:
    """The admin server writes a big body (the scrape of many hosts) part by part, unjoined;
    a client sees one body of the summed length, and the connection stays usable."""
    parts = (b"a" * 100_000, b"", b"b" * 70_000)

    class Kept:
        """A part read in pieces (as `meshplane._core.Text`)."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def __len__(self) -> int:
            return len(self.data)

        def piece(self, start: int, size: int) -> bytes:
            return self.data[start : start + size]

    kept = b"".join(bytes([65 + i % 26]) for i in range(300_000))

    async def handler(request: Request) -> Response:
        if request.path == "/big":
            return Response(200, parts)
        if request.path == "/kept":
            return Response(200, (b"<", Kept(kept), b">"))
        if request.path == "/kept-small":
            return Response(200, (b"<", Kept(b"xyz"), b">"))
        return Response(200, b"small")

    host, port = await nursery.start(serve_http, handler, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        got = await client.get("/big")
        assert got.content == b"".join(parts) and got.headers["content-length"] == "170000"
        head = await client.head("/big")
        assert head.content == b"" and head.headers["content-length"] == "170000"
        assert (await client.get("/other")).content == b"small"
        got = await client.get("/kept")
        assert got.content == b"<" + kept + b">" and got.headers["content-length"] == str(len(kept) + 2)
        assert (await client.get("/kept-small")).content == b"<xyz>"
        assert (await client.head("/kept")).headers["content-length"] == str(len(kept) + 2)
