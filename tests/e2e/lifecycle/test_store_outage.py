"""A store outage (a real etcd stopped, then restarted on the same port and data): `apply`
fails with exit 5 and changes nothing, the proxy keeps serving its version through the outage,
and once etcd is back the proxy applies the version made after it."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane.drivers.follow import follow

from ..asgi import serve_asgi
from ..registry.etcd import EtcdCluster
from ..waiting import eventually
from .mesh import GATEWAY, MESH, app, file_doc, mesh, who
from .test_follow import apply, cli


async def test_an_etcd_outage_keeps_the_running_version_and_apply_fails_cleanly(
    etcd: EtcdCluster, tmp_path: Path, nursery: trio.Nursery
) -> None:
    ports = {"v1": await serve_asgi(nursery, app("v1")), "v2": await serve_asgi(nursery, app("v2"))}
    await apply(tmp_path, etcd.url, mesh(ports, {"v1": 1}))
    proxy = await nursery.start(partial(follow, etcd.url, MESH, GATEWAY, proxy_id="edge",
                                        heartbeat=0.2, admin="127.0.0.1:0"))
    member = etcd.members[0]
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        member.stop()
        path = tmp_path / "v2.json"
        path.write_text(json.dumps(file_doc(mesh(ports, {"v2": 1}))))
        failed = await cli("apply", str(path), "--store", etcd.url)
        assert failed.returncode == 5, failed.stderr.decode()
        assert etcd.url.split("//")[1] in failed.stderr.decode()
        for _ in range(20):  # during the outage every request is still served by version 1
            assert await who(client, proxy.port(8080)) == "v1"

        await trio.to_thread.run_sync(etcd.restart, member)
        history = await cli("history", "--store", etcd.url, "--mesh", MESH, "--format", "json")
        assert [v["number"] for v in json.loads(history.stdout)["versions"]] == [1]
        assert await apply(tmp_path, etcd.url, mesh(ports, {"v2": 1})) == 2

        async def on_v2() -> bool:
            return await who(client, proxy.port(8080)) == "v2"

        await eventually(on_v2, timeout=60, what="the proxy to apply version 2 after the outage")
