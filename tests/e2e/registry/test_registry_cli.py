"""`meshplane registry ...` as a user runs it (subprocesses of this interpreter), on both stores,
and the Cloud Map-shaped HTTP API with a real HTTP client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx
import trio
from meshplane.admin.cloudmap_api import TARGET_PREFIX, serve_registry_api
from meshplane.registry import Registry
from meshplane.store import open_store


def cli(*args: str, store: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "meshplane.cli", "registry", *args]
    if store is not None:
        argv += ["--store", store]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


INSTANCE = ["--namespace", "apps.local", "--service", "color"]


def test_register_list_health_discover_deregister(store_url: str) -> None:
    cli("register", *INSTANCE, "--id", "blue-1", "--address", "10.0.0.1", "--port", "8080",
        "--attr", "version=blue", store=store_url)
    cli("register", *INSTANCE, "--id", "green-1", "--address", "fd00::2", "--attr", "version=green",
        store=store_url)
    listed = json.loads(cli("list", "--json", store=store_url).stdout)
    assert {i["InstanceId"]: i["Attributes"] for i in listed} == {
        "blue-1": {"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "8080", "version": "blue"},
        "green-1": {"AWS_INSTANCE_IPV6": "fd00::2", "version": "green"},
    }
    assert cli("namespaces", store=store_url).stdout.split() == ["apps.local"]
    assert cli("services", store=store_url).stdout.split() == ["apps.local", "color"]
    cli("health", *INSTANCE, "--id", "blue-1", "--status", "UNHEALTHY", store=store_url)
    found = json.loads(cli("discover", *INSTANCE, "--json", store=store_url).stdout)
    assert [i["InstanceId"] for i in found["Instances"]] == ["green-1"]
    found = json.loads(cli("discover", *INSTANCE, "--attr", "version=blue", "--health-status", "ALL",
                           "--json", store=store_url).stdout)
    assert [(i["InstanceId"], i["HealthStatus"]) for i in found["Instances"]] == [("blue-1", "UNHEALTHY")]
    assert "blue-1 UNHEALTHY" in cli("list", "--namespace", "apps.local", store=store_url).stdout
    cli("deregister", *INSTANCE, "--id", "blue-1", store=store_url)
    missing = cli("deregister", *INSTANCE, "--id", "blue-1", store=store_url, check=False)
    assert missing.returncode == 1 and "no instance 'blue-1'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_store_from_the_environment(tmp_path: Any) -> None:
    url = f"sqlite://{tmp_path / 'env.db'}"
    env = {**os.environ, "MESHPLANE_STORE": url}
    argv = [sys.executable, "-m", "meshplane.cli", "registry"]
    subprocess.run([*argv, "register", *INSTANCE, "--id", "a", "--address", "10.0.0.1"],
                   env=env, check=True, timeout=60)
    out = subprocess.run([*argv, "list"], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.startswith("apps.local color a HEALTHY")


def test_bad_input_and_unreachable_store_are_one_line_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"etcd://127.0.0.1:{s.getsockname()[1]}"
        done = cli("list", store=url, check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and url in done.stderr and "unreachable" in done.stderr
    bad = cli("register", *INSTANCE, "--id", "a", "--address", "not-an-ip", store="sqlite:///dev/null/x",
              check=False)
    assert bad.returncode == 1 and "--address" in bad.stderr and "Traceback" not in bad.stderr


async def test_ttl_registration_follows_the_registering_process(store_url: str) -> None:
    argv = [sys.executable, "-m", "meshplane.cli", "registry", "register", *INSTANCE,
            "--address", "10.0.0.9", "--ttl", "1s", "--store", store_url]
    async with open_store(store_url) as store:
        registry = Registry(store)
        for instance_id, stop in (("graceful", signal.SIGTERM), ("killed", signal.SIGKILL)):
            proc = subprocess.Popen([*argv, "--id", instance_id], stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout is not None
                line = await trio.to_thread.run_sync(proc.stdout.readline)  # readiness: its own report
                assert line.startswith(f"registered apps.local/color/{instance_id}")
                ids = [i.id for i in (await registry.instances("apps.local", "color"))[0]]
                assert instance_id in ids
                proc.send_signal(stop)
                await trio.to_thread.run_sync(proc.wait)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            # SIGTERM deregisters at once; SIGKILL leaves the lease to expire (bounded wait).
            _, rev = await registry.instances("apps.local", "color")
            with trio.fail_after(30):
                while instance_id in [i.id for i in (await registry.instances("apps.local", "color"))[0]]:
                    async for _ in registry.watch("apps.local", "color", rev):
                        break
                    _, rev = await registry.instances("apps.local", "color")


async def test_cloud_map_http_api(store_url: str, nursery: trio.Nursery) -> None:
    async with open_store(store_url) as store:
        host, port = await nursery.start(serve_registry_api, Registry(store), "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False) as client:
            async def call(op: str, body: dict[str, Any]) -> httpx.Response:
                return await client.post("/", json=body, headers={
                    "X-Amz-Target": TARGET_PREFIX + op, "Content-Type": "application/x-amz-json-1.1"})

            for i, family in enumerate(["blue", "blue", "green"]):
                r = await call("RegisterInstance", {
                    "NamespaceName": "apps.local", "ServiceName": "color", "InstanceId": f"i-{i}",
                    "Attributes": {"AWS_INSTANCE_IPV4": f"10.0.0.{i + 1}",
                                   "ECS_TASK_DEFINITION_FAMILY": family}})
                assert r.status_code == 200 and "OperationId" in r.json()
            services = (await call("ListServices", {})).json()["Services"]
            assert services == [{"Id": "apps.local/color", "Name": "color", "NamespaceId": "apps.local",
                                 "Type": "HTTP"}]
            r = await call("DiscoverInstances", {"NamespaceName": "apps.local", "ServiceName": "color",
                                                 "QueryParameters": {"ECS_TASK_DEFINITION_FAMILY": "blue"}})
            body = r.json()
            assert sorted(i["InstanceId"] for i in body["Instances"]) == ["i-0", "i-1"]
            assert body["Instances"][0]["NamespaceName"] == "apps.local"
            rev = body["InstancesRevision"]
            r = await call("UpdateInstanceCustomHealthStatus",
                           {"ServiceId": "apps.local/color", "InstanceId": "i-0", "Status": "UNHEALTHY"})
            assert r.status_code == 200
            r = await call("DiscoverInstances", {"NamespaceName": "apps.local", "ServiceName": "color",
                                                 "QueryParameters": {"ECS_TASK_DEFINITION_FAMILY": "blue"},
                                                 "HealthStatus": "HEALTHY"})
            assert [i["InstanceId"] for i in r.json()["Instances"]] == ["i-1"]
            r = await call("DeregisterInstance", {"ServiceId": "apps.local/color", "InstanceId": "i-1"})
            assert r.status_code == 200
            r = await call("DiscoverInstancesRevision", {"NamespaceName": "apps.local", "ServiceName": "color"})
            assert r.json()["InstancesRevision"] > rev
            r = await call("DeregisterInstance", {"ServiceId": "apps.local/color", "InstanceId": "i-1"})
            assert r.status_code == 400 and r.json()["__type"] == "InstanceNotFound"
            r = await call("DiscoverInstances", {"NamespaceName": "nope", "ServiceName": "color"})
            assert r.json()["__type"] == "NamespaceNotFound"
            r = await call("RegisterInstance", {"ServiceId": "apps.local/color", "InstanceId": "x",
                                                "Attributes": {}})
            assert r.status_code == 400 and r.json()["__type"] == "InvalidInput"
            r = await call("CreateNamespace", {})
            assert r.status_code == 400


def test_validate_against_the_live_registry(store_url: str, tmp_path: Any) -> None:
    from .test_cloud_map_proxy import config

    path = tmp_path / "mesh.json"
    path.write_text(json.dumps(config(store_url)))
    argv = [sys.executable, "-m", "meshplane.cli", "validate", str(path)]
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0  # offline: fine
    cli("register", *INSTANCE, "--id", "b", "--address", "10.0.0.1", "--attr", "version=blue", store=store_url)
    done = subprocess.run([*argv, "--registry"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert 'VirtualNode "green": spec.serviceDiscovery.awsCloudMap: none of the 1 instances of ' \
           "apps.local/color has an address matching attributes [version=green]" in done.stdout
    assert "blue" not in done.stdout.replace("version=green", "")
    cli("register", *INSTANCE, "--id", "g", "--address", "10.0.0.2", "--attr", "version=green", store=store_url)
    done = subprocess.run([*argv, "--registry"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("OK ")
