"""Fixtures of the config-lifecycle tests: the registry tests' stores (the embedded SQLite store
in tmp_path and a real single-member etcd, `store_url` parametrized over both), a mesh of real
upstreams, and helpers to follow a mesh with real proxies. Every test here is marked `e2e`."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..registry.conftest import etcd, store, store_url

__all__ = ["etcd", "store", "store_url"]

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
