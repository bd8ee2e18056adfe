"""The demo's upstream services: small HTTP/1.1 keep-alive servers answering JSON.

Each instance answers every request with `{"service", "version", "instance", "path"}` after a
short random delay (v2 is a little slower, so the canary shows in the latency figures). An
`Upstream` is a handler for `meshplane.admin.server.serve_http`, the keep-alive server the admin
API runs on: `await nursery.start(serve_http, upstream, "127.0.0.1", 0)` returns its address.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import trio

from meshplane.admin.server import Request, Response

__all__ = ["Upstream"]


@dataclass(frozen=True)
class Upstream:
    """One demo service instance: who it is and how slow it answers."""

    instance: str
    version: str
    delay_s: float

    async def __call__(self, request: Request) -> Response:
        # NOTE: ±50 % jitter, so percentiles spread like a real service's.
        await trio.sleep(self.delay_s * random.uniform(0.5, 1.5))
        doc = {"service": "checkout", "version": self.version, "instance": self.instance,
               "path": request.path}
        return Response(200, json.dumps(doc).encode(), "application/json",
                        headers=[("x-checkout-version", self.version)])
