"""Fixtures of the registry tests: a store of each kind (the embedded SQLite store in tmp_path,
a real single-member etcd). Every test here is marked `e2e`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from meshplane.store import Store, open_store

from ..common import e2e_marker
from .etcd import ETCD, SKIP_REASON, EtcdCluster

HERE = Path(__file__).parent


pytest_collection_modifyitems = e2e_marker(HERE)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    if ETCD is None:
        pytest.skip(SKIP_REASON)
    cluster = EtcdCluster(tmp_path).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "etcd"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("etcd").url)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url) as s:
        yield s
