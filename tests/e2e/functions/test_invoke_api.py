"""Lambda's Invoke API on a running proxy, driven by boto3's own Lambda client and by
`meshplane fn invoke`: real worker processes, the invocations going through the core.

Synchronous (RequestResponse), Event (queued, retried, failure destination in a directory),
DryRun, qualifiers (a published version), the log tail, function errors, an unknown function,
a throttle at reserved concurrency 1, payload limits, and the CLI's output and exit statuses.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("meshplane._core", reason="meshplane._core is not built: run `maturin develop --release`")
import boto3
import httpx
import trio
import yaml
from botocore.config import Config
from meshplane import Proxy

from ..waiting import eventually
from .handlers import write_code

EXTRA = r'''

def gated(event, context):
    # Runs until the test creates the gate file: an invocation held in flight, no sleeping.
    open(event["started"], "w").close()
    deadline = time.time() + 60
    while not os.path.exists(event["gate"]) and time.time() < deadline:
        time.sleep(0.005)
    return {"released": True}


def flaky(event, context):
    # Fails every time, leaving one line per attempt (with the request id) in event["log"].
    with open(event["log"], "a") as f:
        f.write(context.aws_request_id + "\n")
    raise RuntimeError("attempt failed")


def note(event, context):
    # As a destination its event is the record: the path is in the original request's payload.
    path = event["log"] if "log" in event else event["requestPayload"]["log"]
    with open(path, "a") as f:
        f.write(json.dumps({"id": context.aws_request_id, "event": event}) + "\n")
    return None


def chatty(event, context):
    print("chatty says", event.get("say"))
    return {"said": event.get("say")}
'''


def mesh_config(tmp: Path, functions: list[dict[str, Any]], **proxy: Any) -> Path:
    """A gateway whose one route goes to function `hello`, plus `functions`; written as a file
    so that `meshplane fn publish -c FILE` can read it too."""
    code = write_code(tmp, EXTRA)
    doc = {
        "mesh": "fns",
        "proxy": {"gateway": "edge", "bind": "127.0.0.1", "ports": {8080: 0}, **proxy},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
            {"kind": "GatewayRoute", "name": "all", "virtualGatewayName": "edge",
             "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"target": {
                 "virtualService": {"virtualServiceName": "svc.local"}}}}}},
            {"kind": "VirtualService", "name": "svc.local",
             "spec": {"provider": {"virtualNode": {"virtualNodeName": "hello-node"}}}},
            {"kind": "VirtualNode", "name": "hello-node",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                      "serviceDiscovery": {"function": {"functionName": "hello"}}}},
            {"kind": "Function", "name": "hello", "spec": {"handler": "app.raw", "code": {"path": str(code)}}},
            *({"kind": "Function", "name": f["name"],
               "spec": {"code": {"path": str(code)}, **f["spec"]}} for f in functions),
        ],
    }
    path = tmp / "mesh.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@asynccontextmanager
async def running(tmp: Path, functions: list[dict[str, Any]] = (),
                  **proxy_section: Any) -> AsyncIterator[tuple[Proxy, Any, str]]:
    """(the proxy, a boto3 Lambda client for its admin address, the store URL)."""
    store = f"sqlite://{tmp}/state/store.db"
    config = mesh_config(tmp, list(functions), **proxy_section)
    async with Proxy(str(config), admin="127.0.0.1:0", store=store) as proxy:
        host, port = proxy.admin_address
        client = boto3.client(
            "lambda", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
            aws_access_key_id="x", aws_secret_access_key="x",
            # One attempt: boto3 would otherwise retry throttles and 5xx by itself.
            config=Config(retries={"total_max_attempts": 1}, read_timeout=60),
        )
        yield proxy, client, store


async def call(fn: Any, /, **kw: Any) -> Any:
    """A blocking boto3 call, off the Trio thread."""
    return await trio.to_thread.run_sync(lambda: fn(**kw))


def payload_of(out: dict[str, Any]) -> Any:
    return json.loads(out["Payload"].read())



def _has_a_line(path: Path) -> bool:
    """The handler's line is whole: the file exists as soon as it is opened for writing."""
    return path.exists() and path.read_text().endswith("\n")

async def test_request_response_dry_run_tail_and_errors(tmp_path: Path) -> None:
    fns = [{"name": "boom", "spec": {"handler": "app.boom"}},
           {"name": "chatty", "spec": {"handler": "app.chatty"}}]
    async with running(tmp_path, fns) as (_proxy, lam, _):
        ctx = base64.b64encode(json.dumps({"custom": {"who": "test"}}).encode()).decode()
        out = await call(lam.invoke, FunctionName="hello", Payload=json.dumps({"n": 1}), ClientContext=ctx)
        assert out["StatusCode"] == 200 and out["ExecutedVersion"] == "$LATEST"
        assert "FunctionError" not in out
        body = payload_of(out)
        assert body["got"] == {"n": 1} and body["version"] == "$LATEST"
        assert body["client"]["custom"] == {"who": "test"}
        request_id = out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        assert len(request_id) == 36

        # The same function by ARN, and with no payload at all (the event is {}).
        arn = "arn:aws:lambda:us-east-1:123456789012:function:hello"
        assert payload_of(await call(lam.invoke, FunctionName=arn))["got"] == {}

        out = await call(lam.invoke, FunctionName="chatty", Payload=b'{"say": "hi"}', LogType="Tail")
        assert payload_of(out) == {"said": "hi"}
        log = base64.b64decode(out["LogResult"]).decode()
        assert "START RequestId:" in log and "chatty says hi" in log and "REPORT RequestId:" in log

        out = await call(lam.invoke, FunctionName="boom", Payload=b"{}")
        assert out["StatusCode"] == 200 and out["FunctionError"] == "Unhandled"
        error = payload_of(out)
        assert error["errorType"] == "ValueError" and error["errorMessage"].startswith("bad input")
        assert error["stackTrace"]

        out = await call(lam.invoke, FunctionName="hello", InvocationType="DryRun")
        assert out["StatusCode"] == 204

        with pytest.raises(lam.exceptions.ResourceNotFoundException) as caught:
            await call(lam.invoke, FunctionName="ghost", Payload=b"{}")
        assert "Function not found" in str(caught.value)
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            await call(lam.invoke, FunctionName="hello", Qualifier="7", InvocationType="DryRun")
        with pytest.raises(lam.exceptions.InvalidRequestContentException):
            await call(lam.invoke, FunctionName="hello", Payload=b"{not json")
        with pytest.raises(lam.exceptions.RequestTooLargeException):
            await call(lam.invoke, FunctionName="hello", InvocationType="Event",
                       Payload=json.dumps("x" * (256 * 1024)).encode())


async def test_a_published_version_is_invoked_by_qualifier(tmp_path: Path) -> None:
    async with running(tmp_path) as (proxy, lam, store):
        config = tmp_path / "mesh.yaml"
        published = await trio.run_process(
            [sys.executable, "-m", "meshplane.cli", "fn", "publish", "hello", "-c", str(config),
             "--store", store], capture_stdout=True, capture_stderr=True, check=False,
            env=_env())
        assert published.returncode == 0, published.stderr.decode()

        async def version_one_served() -> bool:
            return "1" in proxy.functions.qualifiers("hello")

        await eventually(version_one_served, timeout=20, what="the proxy to follow version 1")
        out = await call(lam.invoke, FunctionName="hello", Qualifier="1", Payload=b'{"q": 1}')
        assert out["ExecutedVersion"] == "1" and payload_of(out)["version"] == "1"
        out = await call(lam.invoke, FunctionName="hello:1", Payload=b'{"q": 1}')
        assert out["ExecutedVersion"] == "1"
        assert (await call(lam.invoke, FunctionName="hello", Payload=b"{}"))["ExecutedVersion"] == "$LATEST"


async def test_throttled_at_reserved_concurrency(tmp_path: Path) -> None:
    fns = [{"name": "gated", "spec": {"handler": "app.gated", "reservedConcurrency": 1,
                                      "timeout": {"unit": "s", "value": 60}}}]
    async with running(tmp_path, fns) as (_proxy, lam, _):
        started, gate = tmp_path / "started", tmp_path / "gate"
        event = json.dumps({"started": str(started), "gate": str(gate)}).encode()
        results: list[Any] = []

        async def first() -> None:
            results.append(await call(lam.invoke, FunctionName="gated", Payload=event))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await eventually(started.exists, timeout=30, what="the first invocation to run")
            with pytest.raises(lam.exceptions.TooManyRequestsException) as caught:
                await call(lam.invoke, FunctionName="gated", Payload=event)
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            gate.touch()
        assert payload_of(results[0]) == {"released": True}


async def test_event_runs_once_with_its_request_id(tmp_path: Path) -> None:
    fns = [{"name": "note", "spec": {"handler": "app.note"}}]
    async with running(tmp_path, fns) as (proxy, lam, _):
        log = tmp_path / "notes.jsonl"
        out = await call(lam.invoke, FunctionName="note", InvocationType="Event",
                         Payload=json.dumps({"log": str(log), "n": 5}).encode())
        assert out["StatusCode"] == 202
        request_id = out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        await eventually(lambda: _has_a_line(log), timeout=30, what="the queued event to run")
        await eventually(lambda: proxy.stats()["async_invocations"]["queue"]["depth"] == 0,
                         timeout=10, what="the event to leave the queue")
        [line] = log.read_text().splitlines()
        assert json.loads(line) == {"id": request_id, "event": {"log": str(log), "n": 5}}
        counters = proxy.stats()["async_invocations"]["functions"]["note"]
        assert counters["AsyncEventsReceived"] == 1 and counters["AsyncEventsSucceeded"] == 1


async def test_event_retried_twice_then_recorded_in_the_failure_directory(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    fns = [{"name": "flaky", "spec": {"handler": "app.flaky", "eventInvokeConfig": {
        "retryDelaysSeconds": [0.2, 0.2],
        "destinationConfig": {"onFailure": {"directory": str(failed)}}}}}]
    async with running(tmp_path, fns) as (proxy, lam, _):
        attempts = tmp_path / "attempts"
        event = {"log": str(attempts), "order": 42}
        out = await call(lam.invoke, FunctionName="flaky", InvocationType="Event",
                         Payload=json.dumps(event).encode())
        request_id = out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        await eventually(lambda: failed.exists() and any(failed.glob("*.json")), timeout=60,
                         what="the failure record")
        stats = proxy.stats
        await eventually(lambda: stats()["async_invocations"]["queue"]["depth"] == 0, timeout=10,
                         what="the event to leave the queue")
        [path] = failed.glob("*.json")
        record = json.loads(path.read_text())
        # Three attempts (the first and two retries), each with the event's own request id.
        assert attempts.read_text().splitlines() == [request_id] * 3
        assert record["version"] == "1.0" and record["timestamp"].endswith("Z")
        assert record["requestContext"] == {
            "requestId": request_id,
            "functionArn": "arn:aws:lambda:local:000000000000:function:flaky:$LATEST",
            "condition": "RetriesExhausted", "approximateInvokeCount": 3}
        assert record["requestPayload"] == event
        assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                             "functionError": "Unhandled"}
        assert record["responsePayload"]["errorType"] == "RuntimeError"
        assert record["responsePayload"]["errorMessage"] == "attempt failed"
        counters = proxy.stats()["async_invocations"]["functions"]["flaky"]
        assert counters["AsyncRetries"] == 2 and counters["DestinationDeliveries"] == 1


def _env() -> dict[str, str]:
    python = str(Path(__file__).resolve().parents[3] / "python")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([python, os.environ.get("PYTHONPATH", "")])}


def _cli(admin: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "meshplane.cli", "fn", "invoke", *args,
                           "--admin", admin], input=stdin, capture_output=True, env=_env(),
                          timeout=60, check=False)


async def test_meshplane_fn_invoke(tmp_path: Path) -> None:
    fns = [{"name": "boom", "spec": {"handler": "app.boom"}},
           {"name": "chatty", "spec": {"handler": "app.chatty"}},
           {"name": "note", "spec": {"handler": "app.note"}}]
    async with running(tmp_path, fns) as (proxy, _lam, _):
        admin = "{}:{}".format(*proxy.admin_address)
        run = trio.to_thread.run_sync

        out = await run(lambda: _cli(admin, "hello", "--payload", '{"a": [1, 2]}'))
        assert out.returncode == 0, out.stderr.decode()
        assert json.loads(out.stdout)["got"] == {"a": [1, 2]}
        assert b"StatusCode 200, ExecutedVersion $LATEST" in out.stderr

        event_file = tmp_path / "event.json"
        event_file.write_text('{"say": "from a file"}')
        out = await run(lambda: _cli(admin, "chatty", "--payload", f"@{event_file}", "--log"))
        assert out.returncode == 0 and json.loads(out.stdout) == {"said": "from a file"}
        assert b"chatty says from a file" in out.stderr and b"REPORT RequestId:" in out.stderr

        out = await run(lambda: _cli(admin, "chatty", "--payload", "-", stdin=b'{"say": "stdin"}'))
        assert json.loads(out.stdout) == {"said": "stdin"}

        out = await run(lambda: _cli(admin, "boom"))
        assert out.returncode == 4 and json.loads(out.stdout)["errorType"] == "ValueError"
        assert b"FunctionError Unhandled" in out.stderr

        out = await run(lambda: _cli(admin, "ghost"))
        assert out.returncode == 1 and out.stdout == b""
        assert b"ResourceNotFoundException: Function not found" in out.stderr

        out = await run(lambda: _cli(admin, "hello", "--dry-run"))
        assert out.returncode == 0 and b"StatusCode 204" in out.stderr

        log = tmp_path / "cli-notes.jsonl"
        out = await run(lambda: _cli(admin, "note", "--async", "--payload", json.dumps({"log": str(log)})))
        assert out.returncode == 0 and b"StatusCode 202" in out.stderr
        await eventually(lambda: _has_a_line(log), timeout=30, what="the CLI's queued event to run")

    # The proxy is gone: the CLI says so with its own exit status.
    out = await trio.to_thread.run_sync(lambda: _cli(admin, "hello"))
    assert out.returncode == 5 and b"no proxy answered" in out.stderr


async def test_a_body_over_6_mb_gets_lambdas_413(tmp_path: Path) -> None:
    async with running(tmp_path) as (proxy, _lam, _):
        host, port = proxy.admin_address
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            response = await client.post("/2015-03-31/functions/hello/invocations",
                                         content=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
            assert response.status_code == 413
            assert response.headers["x-amzn-errortype"] == "RequestTooLargeException"
            assert response.json()["Type"] == "User"
            # The admin endpoints are still there, on the same address.
            assert (await client.get("/ready")).text == "LIVE\n"


async def test_the_invoke_api_on_a_listener_of_its_own(tmp_path: Path) -> None:
    async with running(tmp_path, invokeApi="127.0.0.1:0") as (proxy, _lam, _):
        host, port = proxy.invoke_api_address
        assert (host, port) != proxy.admin_address
        lam = boto3.client("lambda", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        out = await call(lam.invoke, FunctionName="hello", Payload=b'{"via": "own listener"}')
        assert payload_of(out)["got"] == {"via": "own listener"}
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
            # Only the Invoke API there: the admin endpoints are not.
            response = await client.get("/stats")
            assert response.status_code == 404
            assert response.headers["x-amzn-errortype"] == "UnknownOperationException"


async def test_a_success_goes_to_a_destination_function(tmp_path: Path) -> None:
    fns = [{"name": "chatty", "spec": {"handler": "app.chatty", "eventInvokeConfig": {
               "destinationConfig": {"onSuccess": {"function": "note"}}}}},
           {"name": "note", "spec": {"handler": "app.note"}}]
    async with running(tmp_path, fns) as (_proxy, lam, _):
        log = tmp_path / "notes.jsonl"
        out = await call(lam.invoke, FunctionName="chatty", InvocationType="Event",
                         Payload=json.dumps({"say": "done", "log": str(log)}).encode())
        request_id = out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        await eventually(lambda: _has_a_line(log), timeout=30, what="the destination function to run")
        [line] = log.read_text().splitlines()
        note = json.loads(line)
        record = note["event"]
        # The destination function ran as an invocation of its own, with the record as event.
        assert note["id"] != request_id
        assert record["requestContext"]["requestId"] == request_id
        assert record["requestContext"]["condition"] == "Success"
        assert record["requestPayload"] == {"say": "done", "log": str(log)}
        assert record["responsePayload"] == {"said": "done"}
        assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
