"""Fixtures for the data-plane end-to-end tests: the proxy under test (`make_core`), upstream
servers started in the test's nursery (`upstreams`), a gRPC upstream, and HTTP clients.

Every test in this directory is marked `e2e`. Servers bind 127.0.0.1:0 and report their port;
the core is shut down (bounded wait for its "stopped" event) when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane._core import Core

from ..common import e2e_marker
from .support import GrpcUpstream, Proxy, Upstreams, stop_core

HERE = Path(__file__).parent


pytest_collection_modifyitems = e2e_marker(HERE)


@pytest.fixture
def make_core() -> Iterator[Callable[..., Proxy]]:
    """`make_core(snapshot, workers=2)` → a `Proxy` with the snapshot applied."""
    cores: list[Core] = []

    def make(doc: dict[str, Any], workers: int = 2) -> Proxy:
        core = Core(workers)
        cores.append(core)
        proxy = Proxy(core)
        proxy.apply(doc)
        return proxy

    yield make
    for core in cores:
        assert stop_core(core), "the core did not report 'stopped'"


@pytest.fixture
def upstreams(nursery: trio.Nursery) -> Upstreams:
    return Upstreams(nursery)


@pytest.fixture
def grpc_upstream() -> Iterator[GrpcUpstream]:
    up = GrpcUpstream()
    yield up
    up.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """HTTP/1.1 keep-alive client (no proxy from the environment)."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        yield c


@pytest.fixture
async def h2_client() -> AsyncIterator[httpx.AsyncClient]:
    """Cleartext HTTP/2 with prior knowledge."""
    async with httpx.AsyncClient(trust_env=False, timeout=10, http1=False, http2=True) as c:
        yield c
