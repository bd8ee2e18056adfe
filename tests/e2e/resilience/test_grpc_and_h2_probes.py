"""gRPC health probes (`grpc.health.v1.Health/Check`) against real grpcio servers running
grpcio-health-checking's servicer, and HTTP/2 probes against hypercorn (h2c prior knowledge):
SERVING / NOT_SERVING and 200 / 503 flips move the host in and out of the healthy set."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from meshplane import Proxy

from ..waiting import eventually
from .support import HEALTH_PATH, health_check, mesh

grpc = pytest.importorskip("grpc")
health_v1 = pytest.importorskip("grpc_health.v1.health")
health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")


class GrpcHealthServer:
    """A grpcio server whose only service is the standard health servicer."""

    def __init__(self) -> None:
        self.server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self.servicer = health_v1.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.serving(True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def serving(self, yes: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if yes else health_pb2.HealthCheckResponse.NOT_SERVING
        self.servicer.set("", status)


@pytest.fixture
def grpc_servers() -> Iterator[list[GrpcHealthServer]]:
    servers = [GrpcHealthServer() for _ in range(2)]
    yield servers
    for s in servers:
        s.server.stop(0)


def hc_listener(protocol: str) -> dict[str, Any]:
    hc, ext = health_check(100, protocol=protocol)
    return {"healthCheck": hc, "resilience": {"healthCheck": ext}}


def healthy(proxy: Proxy, address: str) -> bool:
    return bool(proxy.stats()["clusters"]["app"]["hosts"][address]["healthy"])


async def test_grpc_health_serving_flips(grpc_servers: list[GrpcHealthServer]) -> None:
    a, b = grpc_servers
    cfg = mesh([a.address, b.address], protocol="grpc", listener=hc_listener("grpc"))
    async with Proxy(cfg) as proxy:
        hc = lambda: proxy.stats()["clusters"]["app"]["health_check"]  # noqa: E731
        await eventually(lambda: hc()["success"] >= 4, what="gRPC probes pass")
        a.serving(False)
        await eventually(lambda: not healthy(proxy, a.address), timeout=3.0, what="NOT_SERVING")
        assert healthy(proxy, b.address)
        host = proxy.stats()["clusters"]["app"]["hosts"][a.address]
        assert host["active_hc"]["last_result"] == "active_failure"
        a.serving(True)
        await eventually(lambda: healthy(proxy, a.address), timeout=3.0, what="SERVING again")
        # grpcio answers an unknown service name with NOT_FOUND: an active failure too.
        a.servicer.set("", health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        await eventually(lambda: not healthy(proxy, a.address), timeout=3.0, what="SERVICE_UNKNOWN")


class FlippingApp:
    """ASGI: `/health` answers `status`; everything else 200."""

    def __init__(self) -> None:
        self.status = 200
        self.versions: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.versions.add(scope["http_version"])
        status = self.status if scope["path"] == HEALTH_PATH else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def test_http2_probes_over_h2c(nursery: trio.Nursery) -> None:
    apps, addresses = [FlippingApp(), FlippingApp()], []
    for app in apps:
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = config.errorlog = None
        binds = await nursery.start(partial(hypercorn_serve, app, config))
        addresses.append(binds[0].removeprefix("http://"))
    cfg = mesh(addresses, protocol="http2", listener=hc_listener("http2"))
    async with Proxy(cfg) as proxy:
        await eventually(lambda: proxy.stats()["clusters"]["app"]["health_check"]["success"] >= 4,
                         what="h2 probes pass")
        assert apps[0].versions == {"2"}
        apps[0].status = 503
        await eventually(lambda: not healthy(proxy, addresses[0]), timeout=3.0, what="503")
        apps[0].status = 200
        await eventually(lambda: healthy(proxy, addresses[0]), timeout=3.0, what="200 again")
