"""Both stores, the embedded SQLite one and real etcd, against the same `Store` contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from meshplane.store import (
    Store,
    StoreError,
    StoreUnavailable,
    WatchExpired,
    open_store,
    prefix_end,
)


async def test_put_get_range_delete(store: Store) -> None:
    r1 = await store.put("/t/a", b"1")
    r2 = await store.put("/t/b", b"2")
    await store.put("/u/c", b"3")
    assert r2 > r1
    got = await store.get("/t/a")
    assert got is not None and got.value == b"1" and got.mod_revision == r1
    kvs, rev = await store.range("/t/")
    assert [(kv.key, kv.value) for kv in kvs] == [("/t/a", b"1"), ("/t/b", b"2")]
    assert rev >= r2
    assert await store.delete("/t/a") is True
    assert await store.delete("/t/a") is False
    assert await store.get("/t/a") is None


async def test_put_if_is_compare_and_swap(store: Store) -> None:
    assert await store.put_if("/cas", b"a", mod_revision=0) is True
    assert await store.put_if("/cas", b"b", mod_revision=0) is False
    current = await store.get("/cas")
    assert current is not None
    assert await store.put_if("/cas", b"c", mod_revision=current.mod_revision) is True
    assert await store.put_if("/cas", b"d", mod_revision=current.mod_revision) is False
    final = await store.get("/cas")
    assert final is not None and final.value == b"c"


async def test_watch_reports_changes_under_the_prefix_only(store: Store) -> None:
    _, start = await store.range("/w/")
    seen: list[int] = []
    async with trio.open_nursery() as nursery:
        async def watcher() -> None:
            async for rev in store.watch("/w/", start):
                seen.append(rev)
                if len(seen) == 1:
                    return

        nursery.start_soon(watcher)
        await store.put("/x/other", b"ignored")
        rev = await store.put("/w/key", b"v")
    assert seen and seen[0] >= rev


async def test_watch_sees_a_delete(store: Store) -> None:
    await store.put("/d/k", b"v")
    _, start = await store.range("/d/")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async def watcher() -> None:
                async for _ in store.watch("/d/", start):
                    return

            nursery.start_soon(watcher)
            await store.delete("/d/k")


async def test_lease_keeps_keys_while_alive_and_expiry_removes_them(store: Store) -> None:
    lease = await store.grant_lease(1)
    await store.put("/l/k", b"v", lease=lease)
    assert await store.keepalive(lease) is True
    kv = await store.get("/l/k")
    assert kv is not None and kv.lease == lease
    # Expiry is the store's own clock: wait for the watch to report the deletion (bounded).
    _, start = await store.range("/l/")
    with trio.fail_after(20):
        async for _ in store.watch("/l/", start):
            if await store.get("/l/k") is None:
                break
    assert await store.keepalive(lease) is False


async def test_revoke_deletes_the_lease_keys(store: Store) -> None:
    lease = await store.grant_lease(30)
    await store.put("/r/a", b"1", lease=lease)
    await store.put("/r/b", b"2", lease=lease)
    await store.revoke(lease)
    kvs, _ = await store.range("/r/")
    assert kvs == []
    with pytest.raises(StoreError):
        await store.put("/r/c", b"3", lease=lease)


async def test_unreachable_etcd_is_one_clear_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        store = open_store(f"etcd://127.0.0.1:{port}")
        with pytest.raises(StoreUnavailable) as info:
            await store.get("/k")
    message = str(info.value)
    assert "\n" not in message and f"etcd://127.0.0.1:{port}" in message and "unreachable" in message


def test_prefix_end() -> None:
    assert prefix_end("/a/") == "/a0"
    assert prefix_end("ab") == "ac"


def test_bad_urls_are_refused() -> None:
    with pytest.raises(StoreError, match="unknown store scheme"):
        open_store("redis://x")
    with pytest.raises(StoreError, match="bad etcd endpoint"):
        open_store("etcd://host:notaport")


_WRITER = """
import sys, trio
from meshplane.store import open_store
async def main():
    async with open_store(sys.argv[1]) as s:
        for i in range(int(sys.argv[3])):
            await s.put(f"/c/{sys.argv[2]}/{i}", b"x")
trio.run(main)
"""


async def test_embedded_store_is_safe_for_concurrent_processes(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, str(n), "100"]) for n in range(4)]
    for p in procs:
        assert await trio.to_thread.run_sync(p.wait) == 0
    async with open_store(url) as store:
        kvs, rev = await store.range("/c/")
    assert len(kvs) == 400
    # One revision per write, none handed out twice.
    assert len({kv.mod_revision for kv in kvs}) == 400
    assert rev >= 401


async def test_watch_changes_carries_values_and_deletions(store: Store) -> None:
    await store.put("/wc/gone", b"x")
    _, start = await store.range("/wc/")
    seen: dict[str, bytes | None] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async def watcher() -> None:
                async for batch in store.watch_changes("/wc/", start):
                    for change in batch:
                        assert change.revision > start
                        seen[change.key] = change.value
                    if seen.keys() == {"/wc/new", "/wc/gone"}:
                        return

            nursery.start_soon(watcher)
            await store.put("/other", b"not under the prefix")
            await store.put("/wc/new", b"v1")
            await store.delete("/wc/gone")
    assert seen["/wc/gone"] is None
    assert seen["/wc/new"] == b"v1"


async def test_a_watch_from_a_compacted_etcd_revision_expires(etcd: Any) -> None:
    import json
    import urllib.request

    async with open_store(etcd.url) as store:
        first = await store.put("/cmp/k", b"1")
        latest = await store.put("/cmp/k", b"2")
        request = urllib.request.Request(
            f"{etcd.members[0].client_url}/v3/kv/compaction",
            data=json.dumps({"revision": str(latest), "physical": True}).encode(), method="POST")
        await trio.to_thread.run_sync(lambda: urllib.request.urlopen(request, timeout=10).read())
        with pytest.raises(WatchExpired), trio.fail_after(20):
            async for _ in store.watch_changes("/cmp/", first - 1):
                pass


async def test_etcd_over_mutual_tls(tmp_path: Path) -> None:
    """etcds:// with the cluster's CA and a client certificate (etcd --client-cert-auth)."""
    import trustme

    from .etcd import ETCD, SKIP_REASON, EtcdCluster

    if ETCD is None:
        pytest.skip(SKIP_REASON)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("meshplane-client")
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key", "ccert", "ckey")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["cert"])
    server.private_key_pem.write_to_path(paths["key"])
    client.cert_chain_pems[0].write_to_path(paths["ccert"])
    client.private_key_pem.write_to_path(paths["ckey"])
    # The helper's health probe presents the server pair, which the same CA signed.
    cluster = await trio.to_thread.run_sync(
        lambda: EtcdCluster(tmp_path, tls={"cert": paths["cert"], "key": paths["key"], "ca": paths["ca"]}).start())
    try:
        port = cluster.members[0].client_port
        url = f"etcds://127.0.0.1:{port}?ca={paths['ca']}&cert={paths['ccert']}&key={paths['ckey']}"
        async with open_store(url) as store:
            rev = await store.put("/tls/k", b"v")
            kv = await store.get("/tls/k")
            assert kv is not None and kv.value == b"v" and kv.mod_revision == rev
        # Without the client certificate etcd refuses the handshake: one clear line.
        async with open_store(f"etcds://127.0.0.1:{port}?ca={paths['ca']}") as store:
            with pytest.raises(StoreUnavailable) as info:
                await store.get("/tls/k")
        assert "\n" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    finally:
        cluster.stop()
