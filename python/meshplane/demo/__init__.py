"""`meshplane demo`: a canary release through a real meshplane gateway, on one machine.

Starts three upstream instances (`upstream.Upstream`: checkout v1 x2, v2 x1) on 127.0.0.1, a
`Proxy` for the mesh in `mesh.demo_config` (90/10 split, `x-canary: true` ⇒ v2), drives
traffic through it (`load.LoadDriver`) and shows it (`view.DemoView`). Everything binds
ephemeral ports on 127.0.0.1 and all traffic stays on this machine.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from meshplane.admin.server import serve_http
from meshplane.demo.load import LoadDriver, LoadRecorder, Pacer
from meshplane.demo.mesh import GATEWAY_PORT, demo_config
from meshplane.demo.upstream import Upstream
from meshplane.demo.view import DemoView
from meshplane.runtime import Proxy

__all__ = ["DemoOptions", "run_demo"]

UPSTREAMS = [
    Upstream("checkout-v1-a", "v1", 0.002),
    Upstream("checkout-v1-b", "v1", 0.002),
    Upstream("checkout-v2-a", "v2", 0.005),
]


@dataclass(frozen=True)
class DemoOptions:
    duration: float | None = None
    """Seconds to run; None = until Ctrl-C (or until `max_requests`)."""
    rps_limit: float = 500.0
    clients: int = 8
    max_requests: int | None = None


async def _then_cancel(job: Callable[[], Awaitable[Any]], scope: trio.CancelScope) -> None:
    await job()
    scope.cancel()


async def run_demo(options: DemoOptions) -> None:
    """Run the demo; prints a summary when it ends (duration, request budget, SIGINT/SIGTERM).

    Ctrl-C stops the traffic; the summary prints and the proxy drains before this returns. Call
    it from the main thread (it installs signal handlers while it runs).
    """
    async with trio.open_nursery() as nursery:
        ports: dict[str, list[int]] = {"v1": [], "v2": []}
        for upstream in UPSTREAMS:
            _, port = await nursery.start(serve_http, upstream, "127.0.0.1", 0)
            ports[upstream.version].append(port)
        config = demo_config(ports["v1"], ports["v2"])
        async with Proxy(config, admin="127.0.0.1:0", drain_ms=1000) as proxy:
            gateway = proxy.port(GATEWAY_PORT)
            admin = proxy.admin_address
            header = (f"meshplane demo: gateway 127.0.0.1:{gateway} -> checkout v1 x2 / v2 x1 "
                      f"(90/10, x-canary: true -> v2); admin http://{admin[0]}:{admin[1]}/"
                      if admin else f"meshplane demo: gateway 127.0.0.1:{gateway}")
            recorder = LoadRecorder()
            view = DemoView(recorder, proxy.stats, header=header)
            driver = LoadDriver(gateway, recorder, Pacer(options.rps_limit, options.max_requests),
                                clients=options.clients)
            with trio.move_on_after(options.duration or math.inf), trio.open_signal_receiver(
                signal.SIGINT, signal.SIGTERM
            ) as signals:
                async with trio.open_nursery() as inner:
                    inner.start_soon(view.run)
                    inner.start_soon(_then_cancel, driver.run, inner.cancel_scope)
                    inner.start_soon(_then_cancel, signals.__anext__, inner.cancel_scope)
            view.summary()
        nursery.cancel_scope.cancel()
