"""`meshplane run` and `meshplane demo` as real subprocesses.

`run` is started with a temp config whose ports are all 0; the test waits for the printed
listener line (readiness is read, never slept for), sends a request through it, then SIGINT.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import trio
from meshplane.admin.server import Request, Response, serve_http

pytestmark = pytest.mark.e2e

MESHPLANE = [sys.executable, "-m", "meshplane.cli"]


async def hello(request: Request) -> Response:
    return Response(200, json.dumps({"hello": request.path}).encode(), "application/json")


def config(upstream: int) -> dict[str, object]:
    return {
        "mesh": "shop",
        "proxy": {"gateway": "edge", "admin": "127.0.0.1:0", "bind": "127.0.0.1", "ports": {8080: 0}},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "api", "virtualGatewayName": "edge", "spec": {"httpRoute": {
                "match": {"prefix": "/"},
                "action": {"target": {"virtualService": {"virtualServiceName": "api.shop.local"}}}}}},
            {"kind": "VirtualService", "name": "api.shop.local",
             "spec": {"provider": {"virtualNode": {"virtualNodeName": "api"}}}},
            {"kind": "VirtualNode", "name": "api", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"static": {"endpoints": [f"127.0.0.1:{upstream}"]}}}},
        ],
    }


class LineReader:
    """Lines of a subprocess's stdout, as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.seen: list[str] = []

    async def until(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The match of the next line that matches `pattern`; fails at end of output or after
        `timeout` seconds (the loop reads until one of the three)."""
        regex = re.compile(pattern)
        with trio.fail_after(timeout):
            while True:
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    self.seen.append(line.decode())
                    if match := regex.search(self.seen[-1]):
                        return match
                chunk = await self._stream.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"output ended before {pattern!r}; last lines: {self.seen[-20:]}")
                self._buffer += chunk


async def test_run_serves_until_sigint(nursery: trio.Nursery, tmp_path: Path) -> None:
    _, upstream = await nursery.start(serve_http, hello, "127.0.0.1", 0)
    path = tmp_path / "mesh.json"
    path.write_text(json.dumps(config(upstream)))
    stderr = (tmp_path / "stderr.txt").open("wb")
    process = await trio.lowlevel.open_process(
        [*MESHPLANE, "run", str(path)], stdout=subprocess.PIPE, stderr=stderr
    )
    try:
        assert process.stdout is not None
        lines = LineReader(process.stdout)
        with trio.fail_after(30):
            listener = await lines.until(r"^listener gateway/edge/8080 127\.0\.0\.1:(\d+)$")
            admin = await lines.until(r"^admin http://127\.0\.0\.1:(\d+)/$")
        port, admin_port = int(listener[1]), int(admin[1])
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/cart")
            assert response.status_code == 200 and response.json() == {"hello": "/cart"}
            ready = await client.get(f"http://127.0.0.1:{admin_port}/ready")
            assert ready.text == "LIVE\n"
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            code = await process.wait()
            await lines.until(r"^meshplane: stopped$")
        assert code == 0, (tmp_path / "stderr.txt").read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()


async def test_run_exits_1_with_a_clear_message_on_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mesh: shop\nproxy: {gateway: nowhere}\nresources: []\n")
    with trio.fail_after(30):
        result = await trio.run_process([*MESHPLANE, "run", str(path)], capture_stdout=True,
                                        capture_stderr=True, check=False)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.startswith("meshplane run: ") and "Traceback" not in err
    assert str(path) in err


async def test_demo_runs_and_prints_a_summary() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [*MESHPLANE, "demo", "--duration", "3", "--rps-limit", "200"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    summary = re.search(r"^summary: requests=(\d+) (.*) errors=(\d+)$", out, re.MULTILINE)
    assert summary, out
    assert int(summary[1]) > 0
    versions = dict(part.split("=") for part in summary[2].split())
    assert int(versions.get("v1", 0)) > 0, out
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["version"], ["--help"]])
async def test_console_entry_point(argv: list[str]) -> None:
    run = partial(trio.run_process, capture_stdout=True, check=False)
    result = await run([*MESHPLANE, *argv])
    assert result.returncode == 0
    assert b"meshplane" in result.stdout


async def hello_v2(request: Request) -> Response:
    return Response(200, json.dumps({"v2": request.path}).encode(), "application/json")


# Each replaces the watched file; each must be rejected with this log line while the running
# version keeps serving. The first two crashed `meshplane run --watch` with a RecursionError.
HOSTILE_CHANGES = [
    ("deep YAML", "mesh: shop\nresources: " + "[" * 5000 + "]" * 5000 + "\n",
     r"mappings and lists nest deeper than 64 levels"),
    ("deep JSON", '{"mesh": ' + '{"a": ' * 5000 + "1" + "}" * 5001,
     r"objects and arrays nest deeper than 64 levels"),
    ("alias bomb", "mesh: shop\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)),
     r"the document expands to more than 1,000,000 values"),
]


async def test_run_watch_keeps_serving_through_hostile_files(nursery: trio.Nursery, tmp_path: Path) -> None:
    _, upstream = await nursery.start(serve_http, hello, "127.0.0.1", 0)
    _, upstream_v2 = await nursery.start(serve_http, hello_v2, "127.0.0.1", 0)
    path = tmp_path / "mesh.json"
    path.write_text(json.dumps(config(upstream)))
    process = await trio.lowlevel.open_process(
        [*MESHPLANE, "run", "--watch", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        lines, logs = LineReader(process.stdout), LineReader(process.stderr)
        with trio.fail_after(30):
            listener = await lines.until(r"^listener gateway/edge/8080 127\.0\.0\.1:(\d+)$")
        url = f"http://127.0.0.1:{listener[1]}/cart"
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).json() == {"hello": "/cart"}
            for what, text, message in HOSTILE_CHANGES:
                path.write_text(text)
                with trio.fail_after(30):
                    await logs.until(rf"ERROR meshplane\.config_watch: {re.escape(str(path))} changed but was rejected")
                    await logs.until(rf"^  - {re.escape(str(path))}: {message}")
                response = await client.get(url)
                assert response.status_code == 200 and response.json() == {"hello": "/cart"}, what
            path.write_text(json.dumps(config(upstream_v2)))
            with trio.fail_after(30):
                await logs.until(rf"INFO meshplane\.config_watch: {re.escape(str(path))} changed: now running version 2-")
            assert (await client.get(url)).json() == {"v2": "/cart"}
        assert process.returncode is None
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert not [line for line in logs.seen if "Traceback" in line]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
