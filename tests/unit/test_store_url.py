"""Which store a URL (or nothing) names; no store is opened."""

from __future__ import annotations

import pytest
from meshplane.store import (
    EtcdStore,
    SqliteStore,
    StoreError,
    default_path,
    open_store,
    resolve_url,
)


def test_precedence_flag_then_config_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    monkeypatch.delenv("MESHPLANE_STORE", raising=False)
    assert default_path() == "/state/meshplane/store.db"
    assert resolve_url(None, None) == "sqlite:///state/meshplane/store.db"
    monkeypatch.setenv("MESHPLANE_STORE", "etcd://env:2379")
    assert resolve_url(None, None) == "etcd://env:2379"
    assert resolve_url(None, "etcd://config:2379") == "etcd://config:2379"
    assert resolve_url("etcd://flag:2379", "etcd://config:2379") == "etcd://flag:2379"


def test_urls_name_their_store() -> None:
    etcd = open_store("etcd://10.0.0.1:2379, 10.0.0.2 ,[::1]:2380")
    assert isinstance(etcd, EtcdStore)
    assert etcd.endpoints == [("10.0.0.1", 2379), ("10.0.0.2", 2379), ("::1", 2380)]
    sqlite = open_store("sqlite:///var/lib/meshplane/s.db")
    assert isinstance(sqlite, SqliteStore) and sqlite.path == "/var/lib/meshplane/s.db"
    assert isinstance(open_store("relative/s.db"), SqliteStore)
    for bad in ("etcd://", "etcd://h:0", "sqlite://", "consul://x"):
        with pytest.raises(StoreError) as info:
            open_store(bad)
        assert bad in str(info.value) and "\n" not in str(info.value)
