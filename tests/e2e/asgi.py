"""Small real upstreams for end-to-end tests: plain-dict ASGI apps served by hypercorn on
127.0.0.1 port 0, the bound port read back once hypercorn reports it is serving."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer hypercorn's lifespan protocol (startup, then shutdown)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_asgi(nursery: trio.Nursery, app: Any, **settings: Any) -> int:
    """Serve `app` in `nursery` and return its port once it is listening; `settings` are
    hypercorn `Config` attributes (`keep_alive_timeout=120`, ...)."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    for name, value in settings.items():
        setattr(config, name, value)
    binds = await nursery.start(partial(hypercorn_serve, app, config))
    return int(binds[0].rsplit(":", 1)[1])
