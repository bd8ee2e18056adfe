"""Access logs over real sockets: a gateway `Proxy` whose `logging.accessLog.file.path` is a
temporary file, a hypercorn upstream, a dead upstream, and httpx clients.

Lines are written by the core's writer thread, asynchronously: tests poll the file until the
expected lines are there, with a deadline, and never sleep a fixed time. Matching lines to
requests uses a distinct path (or `x-test-id`) per request, since lines of back-to-back
requests may be written in either order.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`"
)

import httpx
import trio
from meshplane import ConfigError, Proxy

from .asgi import lifespan, serve_asgi
from .waiting import eventually

pytestmark = pytest.mark.e2e

GATEWAY_PORT = 8080
BODY = b"hello from the upstream\n"
DEADLINE_S = 5.0
JSON_FORMAT = [
    {"key": "start_time", "value": "%START_TIME%"},
    {"key": "code", "value": "%RESPONSE_CODE%"},
    {"key": "path", "value": "%REQ(:PATH)%"},
    {"key": "upstream", "value": "%UPSTREAM_HOST%"},
    {"key": "flags", "value": "%RESPONSE_FLAGS%"},
    {"key": "bytes_sent", "value": "%BYTES_SENT%"},
    {"key": "duration", "value": "%DURATION%"},
    {"key": "summary", "value": "%REQ(:METHOD)% %RESPONSE_CODE%"},
]
# Envoy's default format, which the core uses when `format` is absent.
DEFAULT_LINE = re.compile(
    r'\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" '
    r"(?P<code>\d+) (?P<flags>\S+) (?P<received>\d+) (?P<sent>\d+) (?P<duration>\d+) "
    r'(?P<service_time>\S+) "(?P<forwarded_for>[^"]*)" "(?P<user_agent>[^"]*)" '
    r'"(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)"'
)


async def upstream_app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Answers every request with 200 and `BODY`."""
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"server", b"test-upstream")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


@pytest.fixture
async def upstream_port(nursery: trio.Nursery) -> int:
    return await serve_asgi(nursery, upstream_app)


@pytest.fixture
def dead_port() -> int:
    """A port nothing listens on: bound, then closed (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mesh(upstream: int, dead: int, log: dict[str, Any]) -> dict[str, Any]:
    """Gateway "edge": `/api/...` -> api.shop.local (router -> node "api" on the upstream),
    `/dead/...` -> dead.shop.local (node "dead" on a closed port), anything else: no route.
    Paths are forwarded unchanged, so `%REQ(:PATH)%` is the same before and after routing."""
    keep_path = {"prefix": {"defaultPrefix": "DISABLED"}}

    def gateway_route(name: str, prefix: str, service: str) -> dict[str, Any]:
        return {
            "kind": "GatewayRoute",
            "name": name,
            "virtualGatewayName": "edge",
            "spec": {
                "httpRoute": {
                    "match": {"prefix": prefix},
                    "action": {
                        "target": {"virtualService": {"virtualServiceName": service}},
                        "rewrite": keep_path,
                    },
                }
            },
        }

    def node(name: str, port: int) -> dict[str, Any]:
        return {
            "kind": "VirtualNode",
            "name": name,
            "spec": {
                "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
                "serviceDiscovery": {"static": {"endpoints": [f"127.0.0.1:{port}"]}},
            },
        }

    return {
        "mesh": "shop",
        "proxy": {"gateway": "edge", "bind": "127.0.0.1", "ports": {GATEWAY_PORT: 0}},
        "resources": [
            {
                "kind": "VirtualGateway",
                "name": "edge",
                "spec": {
                    "listeners": [{"portMapping": {"port": GATEWAY_PORT, "protocol": "http"}}],
                    "logging": {"accessLog": {"file": log}},
                },
            },
            gateway_route("api", "/api/", "api.shop.local"),
            gateway_route("dead", "/dead/", "dead.shop.local"),
            {
                "kind": "VirtualService",
                "name": "api.shop.local",
                "spec": {"provider": {"virtualRouter": {"virtualRouterName": "api-router"}}},
            },
            {
                "kind": "VirtualRouter",
                "name": "api-router",
                "spec": {"listeners": [{"portMapping": {"port": upstream, "protocol": "http"}}]},
            },
            {
                "kind": "Route",
                "name": "all",
                "virtualRouterName": "api-router",
                "spec": {
                    "httpRoute": {
                        "match": {"prefix": "/"},
                        "action": {"weightedTargets": [{"virtualNode": "api", "weight": 1}]},
                    }
                },
            },
            node("api", upstream),
            {
                "kind": "VirtualService",
                "name": "dead.shop.local",
                "spec": {"provider": {"virtualNode": {"virtualNodeName": "dead"}}},
            },
            node("dead", dead),
        ],
    }


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "access.log"


@pytest.fixture
def running(
    upstream_port: int, dead_port: int, log_path: Path
) -> Callable[[dict[str, Any] | None], Proxy]:
    """`running(format)` -> a `Proxy` (to enter) logging to `log_path` in that format."""

    def make(fmt: dict[str, Any] | None) -> Proxy:
        log: dict[str, Any] = {"path": str(log_path)}
        if fmt is not None:
            log["format"] = fmt
        return Proxy(mesh(upstream_port, dead_port, log), admin=None, drain_ms=500)

    return make


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def url(proxy: Proxy, path: str) -> str:
    return f"http://127.0.0.1:{proxy.port(GATEWAY_PORT)}{path}"


async def wait_for_lines(path: Path, count: int) -> list[str]:
    """The file's complete lines once there are at least `count`; fails after `DEADLINE_S`."""
    lines: list[str] = []

    def enough() -> bool:
        nonlocal lines
        text = path.read_text() if path.exists() else ""
        lines = text.splitlines()[: text.count("\n")]
        return len(lines) >= count

    await eventually(enough, timeout=DEADLINE_S, what=f"{count} lines in {path}", poll=0.01)
    return lines


async def exactly_one_line_each(
    proxy: Proxy, client: httpx.AsyncClient, path: Path, count: int
) -> list[str]:
    """After `count` requests: the `count` lines, checked to be all there is by logging one
    more request (the writer is FIFO, so a duplicate queued earlier would show up first)."""
    before = await wait_for_lines(path, count)
    await client.get(url(proxy, "/sentinel"))
    after = await wait_for_lines(path, count + 1)
    assert len(after) == count + 1, "\n".join(after)
    return before[:count]


def parse_start(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def assert_recent(start: datetime, began: datetime) -> None:
    slack = timedelta(seconds=1)
    assert began - slack <= start <= datetime.now(UTC) + slack, (start, began)


def upstream_failure(flags: str) -> bool:
    """UF (connection failure) or UH (no healthy upstream), possibly with URX (retries out)."""
    return bool({"UF", "UH"} & set(flags.split(",")))


# --- formats ---------------------------------------------------------------------------------


async def test_default_format(
    running: Callable[[dict[str, Any] | None], Proxy],
    client: httpx.AsyncClient,
    log_path: Path,
    upstream_port: int,
) -> None:
    began = datetime.now(UTC)
    async with running(None) as proxy:
        ok = await client.get(url(proxy, "/api/items?id=1"), headers={"user-agent": "probe/1"})
        missing = await client.get(url(proxy, "/nowhere"), headers={"user-agent": "probe/2"})
        dead = await client.get(url(proxy, "/dead/x"), headers={"user-agent": "probe/3"})
        lines = await exactly_one_line_each(proxy, client, log_path, 3)
    assert (ok.status_code, missing.status_code, dead.status_code) == (200, 404, 503)
    by_agent: dict[str, dict[str, str]] = {}
    for line in lines:
        m = DEFAULT_LINE.fullmatch(line)
        assert m, f"not Envoy's default format: {line!r}"
        by_agent[m["user_agent"]] = m.groupdict()

    entry = by_agent["probe/1"]
    assert_recent(parse_start(entry["start"]), began)
    assert (entry["method"], entry["path"], entry["protocol"]) == (
        "GET",
        "/api/items?id=1",
        "HTTP/1.1",
    )
    assert (entry["code"], entry["flags"]) == ("200", "-")
    assert int(entry["sent"]) == len(BODY) == len(ok.content)
    assert entry["received"] == "0"
    assert entry["upstream"] == f"127.0.0.1:{upstream_port}"
    assert entry["authority"].startswith("127.0.0.1:")

    entry = by_agent["probe/2"]
    assert (entry["path"], entry["code"], entry["flags"]) == ("/nowhere", "404", "NR")
    assert entry["upstream"] == "-"
    assert int(entry["sent"]) == len(missing.content)

    entry = by_agent["probe/3"]
    assert (entry["path"], entry["code"]) == ("/dead/x", "503")
    assert upstream_failure(entry["flags"]), entry["flags"]
    assert int(entry["sent"]) == len(dead.content)


async def test_custom_text_format(
    running: Callable[[dict[str, Any] | None], Proxy],
    client: httpx.AsyncClient,
    log_path: Path,
) -> None:
    # No trailing newline: the core ends each line itself. `%%` is a literal percent sign,
    # `:4` truncates, and a missing value is written as "-".
    text = (
        "id=%REQ(x-test-id)% %REQ(:METHOD)% %REQ(:PATH)% code=%RESPONSE_CODE% "
        "flags=%RESPONSE_FLAGS% cluster=%UPSTREAM_CLUSTER% short=%REQ(x-long):4% "
        "alt=%REQ(x-absent?x-test-id)% none=%REQ(x-absent)% server=%RESP(server)% 100%%"
    )
    async with running({"text": text}) as proxy:
        statuses = []
        for test_id, path in (("a", "/api/one"), ("b", "/nowhere"), ("c", "/dead/two")):
            response = await client.get(
                url(proxy, path), headers={"x-test-id": test_id, "x-long": "abcdefgh"}
            )
            statuses.append(response.status_code)
        lines = await exactly_one_line_each(proxy, client, log_path, 3)
    assert statuses == [200, 404, 503]
    by_id = {line.split(" ", 1)[0]: line for line in lines}
    assert by_id["id=a"] == (
        "id=a GET /api/one code=200 flags=- cluster=api short=abcd alt=a none=- "
        "server=test-upstream 100%"
    )
    assert by_id["id=b"].startswith("id=b GET /nowhere code=404 flags=NR cluster=- short=abcd")
    dead = re.fullmatch(
        r"id=c GET /dead/two code=503 flags=(\S+) cluster=dead short=abcd alt=c none=- "
        r"server=\S+ 100%",
        by_id["id=c"],
    )
    assert dead and upstream_failure(dead[1]), by_id["id=c"]


async def test_json_format(
    running: Callable[[dict[str, Any] | None], Proxy],
    client: httpx.AsyncClient,
    log_path: Path,
    upstream_port: int,
    dead_port: int,
) -> None:
    began = datetime.now(UTC)
    paths = ["/api/a", "/api/b?q=1", "/nowhere", "/dead/c"]
    async with running({"json": JSON_FORMAT}) as proxy:
        responses = {p: await client.get(url(proxy, p)) for p in paths}
        lines = await exactly_one_line_each(proxy, client, log_path, len(paths))
    records = [json.loads(line) for line in lines]
    by_path = {r["path"]: r for r in records}
    assert sorted(by_path) == sorted(paths), records
    for record in records:
        assert set(record) == {f["key"] for f in JSON_FORMAT}
        assert_recent(parse_start(record["start_time"]), began)
        for key in ("code", "bytes_sent", "duration"):
            assert type(record[key]) is int, record  # one numeric operator: a JSON number
        assert 0 <= record["duration"] < DEADLINE_S * 1000
        response = responses[record["path"]]
        assert record["code"] == response.status_code
        assert record["bytes_sent"] == len(response.content)
        assert record["summary"] == f"GET {response.status_code}"  # mixed: a string

    for path in ("/api/a", "/api/b?q=1"):
        assert by_path[path]["code"] == 200
        assert by_path[path]["flags"] == "-"
        assert by_path[path]["upstream"] == f"127.0.0.1:{upstream_port}"
        assert by_path[path]["bytes_sent"] == len(BODY)
    nowhere = by_path["/nowhere"]
    assert (nowhere["code"], nowhere["flags"], nowhere["upstream"]) == (404, "NR", None)
    dead = by_path["/dead/c"]
    assert dead["code"] == 503 and upstream_failure(dead["flags"]), dead
    assert dead["upstream"] in (None, f"127.0.0.1:{dead_port}")


# --- where lines go --------------------------------------------------------------------------


async def test_log_file_is_appended_and_follows_apply(
    running: Callable[[dict[str, Any] | None], Proxy],
    client: httpx.AsyncClient,
    log_path: Path,
    tmp_path: Path,
    upstream_port: int,
    dead_port: int,
) -> None:
    log_path.write_text("kept\n")
    moved = tmp_path / "moved.log"
    async with running({"text": "%REQ(:PATH)%"}) as proxy:
        await client.get(url(proxy, "/api/first"))
        assert await wait_for_lines(log_path, 2) == ["kept", "/api/first"]
        await proxy.apply(
            mesh(
                upstream_port,
                dead_port,
                {"path": str(moved), "format": {"text": "new %REQ(:PATH)%"}},
            )
        )
        await client.get(url(proxy, "/api/second"))
        assert await wait_for_lines(moved, 1) == ["new /api/second"]
    assert log_path.read_text() == "kept\n/api/first\n"


async def test_unwritable_path_fails_the_start(
    upstream_port: int, dead_port: int, tmp_path: Path
) -> None:
    path = tmp_path / "no-such-dir" / "access.log"
    with pytest.raises(ConfigError) as info:
        async with Proxy(mesh(upstream_port, dead_port, {"path": str(path)}), admin=None):
            pytest.fail("the proxy started although its access log cannot be opened")
    assert str(path) in str(info.value)


async def test_unknown_operator_is_refused_before_the_core() -> None:
    doc = mesh(1, 2, {"path": "/dev/null", "format": {"json": [{"key": "k", "value": "%NOPE%"}]}})
    with pytest.raises(ConfigError) as info:
        async with Proxy(doc, admin=None):
            pytest.fail("the proxy started with an unknown operator")
    assert "spec.logging.accessLog.file.format.json[0].value" in str(info.value)
