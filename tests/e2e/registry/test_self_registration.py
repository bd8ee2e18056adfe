"""`meshplane run --register`: a sidecar registers itself (its inbound listener) in the node's
Cloud Map service while it serves; a gateway resolving that service sends traffic through the
sidecar to its application; stopping the sidecar deregisters it before it drains."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane import Proxy
from meshplane.registry import Registry
from meshplane.store import open_store

from ..asgi import serve_asgi
from .test_cloud_map_proxy import NS, SVC, app_named, config, until, who


async def test_sidecar_registers_itself_and_deregisters_on_stop(
    store_url: str, tmp_path: Path, nursery: trio.Nursery
) -> None:
    app_port = await serve_asgi(nursery, app_named("behind-sidecar"))
    mesh = config(store_url)
    sidecar = {**mesh, "proxy": {"node": "blue", "bind": "127.0.0.1", "app": f"127.0.0.1:{app_port}",
                                 "ports": {8080: 0}, "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0",
                                 "store": store_url}}
    path = tmp_path / "sidecar.json"
    path.write_text(json.dumps(sidecar))
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshplane.cli", "run", str(path), "--register", "--register-id",
         "sidecar-1", "--register-ttl", "5s", "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("registered")):  # its own readiness report
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert line, f"meshplane run exited: {lines}"
            lines.append(line)
        assert lines[-1].strip() == f"registered {NS}/{SVC}/sidecar-1"
        inbound = next(int(x.rsplit(":", 1)[1]) for x in lines if x.startswith("listener inbound/blue/8080"))

        async with open_store(store_url) as store, Proxy(mesh) as gateway, \
                httpx.AsyncClient(trust_env=False, timeout=10) as client:
            found, _ = await Registry(store).discover(NS, SVC)
            assert [(i.id, dict(i.attributes)) for i in found] == [("sidecar-1", {
                "version": "blue", "AWS_INSTANCE_IPV4": "127.0.0.1", "AWS_INSTANCE_PORT": str(inbound)})]
            await until(lambda: who(client, gateway), "behind-sidecar")

            proc.send_signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(proc.wait) == 0
            assert (await Registry(store).discover(NS, SVC))[0] == []
            await until(lambda: who(client, gateway), "503")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_register_without_a_cloud_map_node_is_a_clear_error(tmp_path: Path) -> None:
    cfg: dict[str, Any] = {"mesh": "m", "proxy": {"node": "plain", "bind": "127.0.0.1", "ports": {8080: 0},
                                                  "outbound": "127.0.0.1:0", "admin": "127.0.0.1:0",
                                                  "store": f"sqlite://{tmp_path / 's.db'}"},
                           "resources": [{"kind": "VirtualNode", "name": "plain", "spec": {
                               "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                               "serviceDiscovery": {"static": {"endpoints": ["127.0.0.1:9"]}}}}]}
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(cfg))
    done = subprocess.run([sys.executable, "-m", "meshplane.cli", "run", str(path), "--register"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "register" in done.stderr and "awsCloudMap" in done.stderr and "Traceback" not in done.stderr


async def test_run_store_flag_overrides_proxy_store(store_url: str, tmp_path: Path, nursery: trio.Nursery) -> None:
    app_port = await serve_asgi(nursery, app_named("via-flag"))
    mesh = config(f"sqlite://{tmp_path / 'not-this-one.db'}")
    mesh["proxy"]["admin"] = "127.0.0.1:0"
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(mesh))
    async with open_store(store_url) as store:
        await Registry(store).register(NS, SVC, "app", {
            "AWS_INSTANCE_IPV4": "127.0.0.1", "AWS_INSTANCE_PORT": str(app_port), "version": "blue"})
    proc = subprocess.Popen([sys.executable, "-m", "meshplane.cli", "run", str(path), "--store", store_url,
                             "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = None
        while port is None:  # its own readiness report: the listener lines
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert line, "meshplane run exited"
            if line.startswith("listener gateway/edge/8080"):
                port = int(line.rsplit(":", 1)[1])
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            r = await client.get(f"http://127.0.0.1:{port}/")
            assert r.status_code == 200 and r.json()["app"] == "via-flag"
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait)
    assert not (tmp_path / "not-this-one.db").exists()


async def test_proxy_register_in_the_config(store_url: str, nursery: trio.Nursery) -> None:
    app_port = await serve_asgi(nursery, app_named("configured"))
    mesh = config(store_url)
    sidecar = {**mesh, "proxy": {"node": "green", "bind": "127.0.0.1", "app": f"127.0.0.1:{app_port}",
                                 "ports": {8080: 0}, "outbound": "127.0.0.1:0", "store": store_url,
                                 "register": {"id": "from-config", "attributes": {"zone": "a"}}}}
    async with open_store(store_url) as store:
        registry = Registry(store)
        async with Proxy(sidecar) as proxy:
            assert proxy.registration is not None
            found, _ = await registry.discover(NS, SVC, query={"version": "green", "zone": "a"})
            assert [(i.id, i.attributes["AWS_INSTANCE_PORT"]) for i in found] == [
                ("from-config", str(proxy.port(8080)))]
        assert (await registry.discover(NS, SVC))[0] == []
