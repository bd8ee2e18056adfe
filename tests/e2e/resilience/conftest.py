"""Fixtures of the resilience end-to-end tests: misbehaving upstreams started in the test's
nursery and a `meshplane.Proxy` over an App Mesh config. Every test here is marked `e2e`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio

from ..common import e2e_marker
from .support import Upstream

HERE = Path(__file__).parent


pytest_collection_modifyitems = e2e_marker(HERE)


@pytest.fixture
def upstream(nursery: trio.Nursery) -> Callable[..., Awaitable[Upstream]]:
    """`await upstream("name", mode=..., health=...)` → a running `Upstream`."""

    async def start(name: str, **kw: Any) -> Upstream:
        return await Upstream(name, **kw).start(nursery)

    return start


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(trust_env=False, timeout=10, limits=limits) as c:
        yield c
