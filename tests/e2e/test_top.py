"""`meshplane top` in a real terminal (tmux), as a user runs it, against a real proxy.

The proxy, its upstream and the traffic run in this test's Trio loop; `meshplane top` runs in a
tmux pane of a private tmux server (`-L`, its own socket), and the test reads the screen with
`capture-pane` and types with `send-keys`. Panes stay after their command exits
(`remain-on-exit`), so the exit status is read back. Without tmux these tests skip, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")

import httpx
import meshplane
import trio
from meshplane import Proxy

from .asgi import serve_asgi
from .test_admin import GATEWAY_PORT, mesh, upstream_app
from .waiting import eventually, until_set

pytestmark = pytest.mark.e2e

TMUX = shutil.which("tmux")
PACKAGE_ROOT = str(Path(meshplane.__file__).resolve().parent.parent)


EXIT_MARK = "meshplane-top-test-exit-status="


class Terminal:
    """One tmux pane of a private tmux server."""

    def __init__(self, tmp: Path) -> None:
        self.socket = f"meshplane-top-{uuid.uuid4().hex[:8]}"
        self.conf = tmp / "tmux.conf"
        self.conf.write_text("set -g remain-on-exit on\n")
        self.env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "TERM": "xterm-256color"}

    async def tmux(self, *args: str) -> str:
        assert TMUX is not None
        result = await trio.run_process([TMUX, "-L", self.socket, "-f", str(self.conf), *args],
                                        capture_stdout=True, capture_stderr=True, env=self.env)
        return bytes(result.stdout).decode()

    async def start(self, command: str) -> None:
        # The shell prints the command's exit status and keeps the pane open: the status is read
        # off the screen. (`remain-on-exit` alone raced: now and then the pane was gone by the
        # time the test looked, though top had exited cleanly.)
        wrapped = f"{command}; echo; echo {EXIT_MARK}$?; exec sleep 600"
        await self.tmux("new-session", "-d", "-s", "top", "-x", "160", "-y", "60", wrapped)

    async def screen(self) -> str:
        return await self.tmux("capture-pane", "-p", "-t", "top")

    async def keys(self, *keys: str) -> None:
        await self.tmux("send-keys", "-t", "top", *keys)

    async def exit_status(self) -> int | None:
        found = re.search(rf"^{EXIT_MARK}(\d+)$", await self.screen(), re.MULTILINE)
        return int(found.group(1)) if found else None

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.run_process([TMUX or "tmux", "-L", self.socket, "kill-server"], check=False,
                                   capture_stdout=True, capture_stderr=True)


@pytest.fixture
async def terminal(tmp_path: Path) -> AsyncIterator[Terminal]:
    if TMUX is None:
        pytest.skip("tmux is not installed (Debian: apt-get install tmux)")
    term = Terminal(tmp_path)
    try:
        yield term
    finally:
        await term.close()


def top_command(address: str, *extra: str) -> str:
    return " ".join([sys.executable, "-m", "meshplane.cli", "top", address, *extra])


@pytest.fixture
async def proxy(nursery: trio.Nursery) -> AsyncIterator[Proxy]:
    upstream = await serve_asgi(nursery, upstream_app)
    async with Proxy(mesh(upstream), admin="127.0.0.1:0", drain_ms=500) as running:
        yield running


async def traffic(proxy: Proxy, stop: trio.Event) -> None:
    port = proxy.port(GATEWAY_PORT)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in until_set(stop):
            await client.get("/items")


def refresh_count(screen: str) -> int:
    match = re.search(r"refresh #(\d+)", screen)
    return int(match[1]) if match else -1


def line_of(screen: str, name: str) -> str:
    return next((line for line in screen.splitlines() if f" {name} " in line), "")


async def test_top_shows_a_live_sortable_view_and_quits_cleanly(
    proxy: Proxy, terminal: Terminal, nursery: trio.Nursery,
) -> None:
    stop = trio.Event()
    nursery.start_soon(traffic, proxy, stop)
    assert proxy.admin_address is not None
    address = "{}:{}".format(*proxy.admin_address)
    await terminal.start(top_command(address))
    screen = ""

    async def shows(*texts: str) -> bool:
        nonlocal screen
        screen = await terminal.screen()
        return all(t in screen for t in texts)

    await eventually(lambda: shows("meshplane top", address, "Listeners", "Routes", "Clusters", "api-v1",
                                   "gateway/edge/8080", "api-router/all", "Ejected or unhealthy hosts"),
                     timeout=30, what="top's first frame")
    first = refresh_count(screen)

    async def cluster_row_live() -> bool:
        # A rate and a 100.0% success ratio on the cluster's row, from a later frame.
        row = line_of(await terminal.screen(), "api-v1")
        return refresh_count(await terminal.screen()) > first and "100.0%" in row and "1/1" in row

    await eventually(cluster_row_live, timeout=30, what="a refreshed frame with the cluster's numbers")
    assert "sort: rate" in screen

    await terminal.keys("s")
    await eventually(lambda: shows("sort: success"), timeout=10, what="the sort column to change on 's'")
    await terminal.keys("r")
    await eventually(lambda: shows("sort: success (reversed)"), timeout=10, what="reversed order on 'r'")
    stop.set()

    await terminal.keys("q")
    status: int | None = None

    async def exited() -> bool:
        nonlocal status
        status = await terminal.exit_status()
        return status is not None

    await eventually(exited, timeout=15, what="top to exit on 'q'")
    assert status == 0


async def test_top_says_when_the_proxy_is_unreachable_and_ctrl_c_quits_cleanly(terminal: Terminal) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listened, closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await terminal.start(top_command(f"127.0.0.1:{port}"))

    async def says_unreachable() -> bool:
        return f"cannot reach meshplane admin at 127.0.0.1:{port}" in await terminal.screen()

    await eventually(says_unreachable, timeout=30, what="top to say the proxy is unreachable")
    await terminal.keys("C-c")
    status: int | None = None

    async def exited() -> bool:
        nonlocal status
        status = await terminal.exit_status()
        return status is not None

    await eventually(exited, timeout=15, what="top to exit on Ctrl-C")
    assert status == 0
    assert "Traceback" not in await terminal.screen()


async def test_top_once_prints_one_frame_or_fails_clearly(proxy: Proxy) -> None:
    assert proxy.admin_address is not None
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "COLUMNS": "160"}
    address = "{}:{}".format(*proxy.admin_address)
    ok = await trio.run_process([sys.executable, "-m", "meshplane.cli", "top", "--once", address],
                                capture_stdout=True, capture_stderr=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "api-v1" in ok.stdout.decode() and "Clusters" in ok.stdout.decode()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = await trio.run_process([sys.executable, "-m", "meshplane.cli", "top", "--once", f"127.0.0.1:{port}"],
                                  capture_stdout=True, capture_stderr=True, env=env, check=False)
    assert down.returncode == 1
    assert f"cannot reach meshplane admin at 127.0.0.1:{port}" in down.stdout.decode()

    bad = await trio.run_process([sys.executable, "-m", "meshplane.cli", "top", "not-an-address"],
                                 capture_stdout=True, capture_stderr=True, env=env, check=False)
    assert bad.returncode == 1
    assert "not an admin address" in bad.stderr.decode()
