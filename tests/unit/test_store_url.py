"""Which store a URL (or nothing) names; no store is opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_the_embedded_store_loads_sqlite3_when_first_used(tmp_path: Path) -> None:
    # A proxy creates the default store whether or not its config uses it; sqlite3 (~0.9 MiB
    # resident) must wait for the first operation (benches/README.md, "Memory, fourth pass").
    code = (
        "import sys, trio\n"
        "from meshplane.store import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "print('sqlite3' in sys.modules)\n"
        "async def main():\n"
        "    await store.put('k', b'v')\n"
        "    print((await store.get('k')).value, 'sqlite3' in sys.modules)\n"
        "    await store.aclose()\n"
        "trio.run(main)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code, f"sqlite://{tmp_path}/s.db"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "b'v'", "True"]
