"""Listener resource limits through real sockets: running out of file descriptors is counted,
logged and recovered from; the listen(2) backlog is what the snapshot says.

The descriptor test runs the core in a child process whose RLIMIT_NOFILE is lowered to just
above what it has open, so that accept(2) fails with EMFILE while the test holds connections.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

import httpx
import pytest
import trio

from .support import H1Upstream, one_route

# The child: a core serving the snapshot in argv[1]; it prints the listener's port, then
# answers each stdin line: "limit" lowers RLIMIT_NOFILE to 3 descriptors above the highest open
# one, "stats" prints the listener's stats. EOF on stdin shuts it down.
CHILD = r"""
import json, os, resource, sys
from meshplane._core import Core
core = Core(1)
core.apply(sys.argv[1].encode())
print(core.listeners()["l"][1], flush=True)
for line in sys.stdin:
    if line.strip() == "limit":
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 4, hard))
        print("ok", flush=True)
    else:
        print(json.dumps(core.stats()["listeners"]["l"]), flush=True)
core.shutdown(0)
"""


class Child:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(doc)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        with trio.fail_after(10):
            answer = await trio.to_thread.run_sync(self.proc.stdout.readline)
        assert answer, "the child exited"
        return answer

    async def stats(self) -> dict[str, Any]:
        return json.loads(await self.ask("stats"))

    def finish(self) -> str:
        """Close stdin, wait for the exit, return stderr."""
        try:
            _, err = self.proc.communicate(timeout=20)  # closes stdin
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
async def test_out_of_descriptors_is_counted_logged_and_recovered(upstreams: Any) -> None:
    up: H1Upstream = await upstreams.h1()
    child = Child(one_route([up.address]))
    try:
        assert child.proc.stdout is not None
        with trio.fail_after(20):
            port = int(await trio.to_thread.run_sync(child.proc.stdout.readline))
        assert (await child.ask("limit")).strip() == "ok"
        # More connections than the child has descriptors left: the kernel queues them, the
        # child's accept fails with EMFILE.
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(12)]
        for _ in range(2000):  # bounded; each round trip goes through the child
            if (await child.stats())["cx_accept_error"] > 0:
                break
            await trio.sleep(0.005)
        stats = await child.stats()
        assert stats["cx_accept_error"] > 0
        errors = stats["cx_accept_error"]
        # Backing off, not spinning: far fewer failures than a busy loop would count.
        assert errors < 10_000
        for s in held:
            await s.aclose()
        # Descriptors freed: the listener accepts again and proxies a request.
        async with httpx.AsyncClient(trust_env=False, timeout=15) as client:
            r = await client.get(f"http://127.0.0.1:{port}/after")
        assert r.status_code == 200
        assert up.requests == 1
    finally:
        err = child.finish()
    assert "accept failed" in err and "Too many open files" in err, err


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
async def test_backlog_is_configurable(make_core: Any, upstreams: Any) -> None:
    up = await upstreams.h1()
    doc = one_route([up.address])
    doc["listeners"][0]["backlog"] = 37
    proxy = make_core(doc)
    port = proxy.port()
    # For a listening socket, ss reports the backlog as Send-Q.
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    fields = out.split()
    assert fields[0] == "LISTEN" and fields[2] == "37", out
