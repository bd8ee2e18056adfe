"""The worker process alone: a real instance on its Unix socket, spoken to over HTTP/1.1.

Lambda's execution environment (spec/lambda.md §3, §5, §7-§9): the payload 2.0 event, the
result mapping, raw invokes only with the secret, error payloads, timeout and memory limit
ending the process, init errors, START/END/REPORT lines, context and environment.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from meshplane.functions.supervisor import WORKER
from meshplane.functions.worker import SPEC_ENV

from .handlers import write_code

SECRET = "s3cr3t"


class Instance:
    def __init__(self, tmp: Path, handler: str, **settings: Any) -> None:
        code = settings.pop("code", None) or write_code(tmp)
        self.socket = str(tmp / "w.sock")
        spec = {"name": "fn", "version": "$LATEST", "handler": handler, "codeDir": str(code),
                "layerDirs": [], "memoryMB": 128, "timeoutMs": 3000, "environment": {},
                "region": "local", "secret": SECRET, "logStream": "s", "spawnedAt": time.time()}
        spec.update(settings)
        read_fd, write_fd = os.pipe()
        env = {**os.environ, SPEC_ENV: json.dumps(spec), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, WORKER, self.socket, str(write_fd)],
                                     pass_fds=(write_fd,), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        os.close(write_fd)
        self.control = read_fd
        self.buffer = b""
        self.output: str | None = None
        self.ready = self.report()
        assert self.ready["e"] == "ready", self.ready
        self.client = httpx.Client(transport=httpx.HTTPTransport(uds=self.socket),
                                   base_url="http://fn", timeout=30)

    def report(self, timeout: float = 20.0) -> dict[str, Any]:
        """The worker's next control report (the pipe read unbuffered, so select is exact)."""
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.control], [], [], timeout)
            assert ready, "no report from the worker"
            chunk = os.read(self.control, 65536)
            assert chunk, "the worker closed its control pipe"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def reports_until(self, kind: str) -> list[dict[str, Any]]:
        out = [self.report()]
        while out[-1]["e"] != kind:
            out.append(self.report())
        return out

    def close(self) -> str:
        """Stop the worker (if still running) and return everything it printed."""
        if self.output is None:
            self.client.close()
            os.close(self.control)
            if self.proc.poll() is None:
                self.proc.kill()
            out, _ = self.proc.communicate(timeout=10)
            self.output = out.decode()
        return self.output


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[Any]:
    made: list[Instance] = []

    def make(handler: str, **settings: Any) -> Instance:
        inst = Instance(tmp_path, handler, **settings)
        made.append(inst)
        return inst

    yield make
    for inst in made:
        inst.close()


def test_http_request_becomes_a_payload_2_event(instance: Any) -> None:
    inst = instance("app.echo", environment={"GREETING": "hi"}, memoryMB=256)
    r = inst.client.post("/a/b?x=1&x=2&y=", content=b'{"k": 1}',
                         headers={"Cookie": "c1=v1; c2=v2", "X-Multi": "a",
                                  "content-type": "application/json"})
    assert r.status_code == 200
    doc = r.json()
    event = doc["event"]
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/a/b" and event["rawQueryString"] == "x=1&x=2&y="
    assert event["queryStringParameters"] == {"x": "1,2", "y": ""}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["headers"]["x-multi"] == "a" and "cookie" not in event["headers"]
    assert event["body"] == '{"k": 1}' and event["isBase64Encoded"] is False
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["requestId"] == doc["request_id"]
    assert doc["name"] == "fn" and doc["version"] == "$LATEST" and doc["memory"] == 256
    assert 0 < doc["remaining"] <= 3000
    env = doc["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn" and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["_HANDLER"] == "app.echo" and env["GREETING"] == "hi"
    assert env["LAMBDA_TASK_ROOT"].endswith("code")
    # Binary bodies are base64-encoded.
    r = inst.client.post("/bin", content=bytes(range(256)),
                         headers={"content-type": "application/octet-stream"})
    event = r.json()["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == bytes(range(256))
    # Module state persists between invocations of a warm instance.
    assert r.json()["calls"] == 2


def test_plain_result_and_raw_invoke_need_the_secret(instance: Any) -> None:
    inst = instance("app.plain")
    r = inst.client.get("/")
    assert r.status_code == 200 and r.json() == "hello"
    assert r.headers["content-type"] == "application/json"
    raw = instance("app.raw")
    context = base64.b64encode(json.dumps({"custom": {"a": 1}}).encode()).decode()
    r = raw.client.post("/", content=b'{"n": 5}',
                        headers={"x-meshplane-invoke": SECRET, "x-amz-client-context": context})
    assert r.status_code == 200
    assert r.json() == {"got": {"n": 5}, "version": "$LATEST", "client": {"custom": {"a": 1}}}
    assert r.headers["x-amz-executed-version"] == "$LATEST"
    tail = base64.b64decode(r.headers["x-meshplane-log-tail"]).decode()
    assert "START RequestId:" in tail and "REPORT RequestId:" in tail
    # A wrong secret is an HTTP request like any other: the event is the HTTP event.
    r = raw.client.post("/", content=b'{"n": 5}', headers={"x-meshplane-invoke": "guess"})
    assert r.json()["got"]["rawPath"] == "/" and r.json()["got"]["body"] == '{"n": 5}'


def test_handler_exception_is_lambdas_error_payload(instance: Any) -> None:
    inst = instance("app.boom")
    r = inst.client.get("/x")
    assert r.status_code == 502
    assert r.headers["x-amz-function-error"] == "Unhandled"
    doc = r.json()
    assert doc["errorType"] == "ValueError" and doc["errorMessage"] == "bad input: /x"
    assert any("app.py" in frame and "boom" in frame for frame in doc["stackTrace"])
    r = inst.client.post("/", content=b"{}", headers={"x-meshplane-invoke": SECRET})
    assert r.status_code == 200 and r.headers["x-amz-function-error"] == "Unhandled"
    ends = [m for m in inst.reports_until("end")]
    assert ends[-1]["error"] == "ValueError"
    # The instance stays up after a handler error.
    assert inst.client.get("/y").status_code == 502 and inst.proc.poll() is None


def test_timeout_answers_sandbox_timedout_and_ends_the_instance(instance: Any) -> None:
    inst = instance("app.slow", timeoutMs=1000)
    r = inst.client.get("/?s=30")
    assert r.status_code == 502
    doc = r.json()
    assert doc["errorType"] == "Sandbox.Timedout"
    assert doc["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert doc["errorMessage"].startswith("RequestId: ")
    reports = inst.reports_until("exit")
    assert reports[-1]["reason"] == "timeout"
    assert inst.proc.wait(timeout=10) == 0
    out = inst.close()
    assert "Task timed out after 1.00 seconds" in out and "REPORT RequestId:" in out


def test_memory_limit_kills_the_instance(instance: Any) -> None:
    inst = instance("app.hog", memoryMB=128)
    r = inst.client.get("/")
    assert r.status_code == 502
    doc = r.json()
    assert doc["errorType"] == "Runtime.ExitError"
    assert doc["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert inst.reports_until("exit")[-1]["reason"] == "memory"
    assert inst.proc.wait(timeout=10) == 137


def test_init_errors_answer_every_invocation(instance: Any, tmp_path: Path) -> None:
    missing = instance("nomodule.handler")
    assert missing.ready["initError"] == "Runtime.ImportModuleError"
    r = missing.client.get("/")
    assert r.status_code == 502 and r.json()["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'nomodule'" in r.json()["errorMessage"]
    (tmp_path / "other").mkdir()
    nohandler = Instance(tmp_path / "other", "app.nothere")
    try:
        r = nohandler.client.get("/")
        assert r.json()["errorType"] == "Runtime.HandlerNotFound"
    finally:
        nohandler.close()


def test_report_lines_init_duration_only_on_the_cold_start(instance: Any) -> None:
    inst = instance("app.echo")
    for _ in range(2):
        assert inst.client.get("/").status_code == 200
    first = inst.reports_until("end")
    second = inst.reports_until("end")
    assert first[-1]["cold"] is True and first[-1]["initMs"] > 0
    assert second[-1]["cold"] is False and second[-1]["initMs"] is None
    out = inst.close()
    reports = [line for line in out.splitlines() if line.startswith("REPORT RequestId: ")]
    assert len(reports) == 2
    fields = [dict(part.split(": ", 1) for part in line.split("\t")) for line in reports]
    assert "Init Duration" in fields[0] and "Init Duration" not in fields[1]
    for f in fields:
        assert f["Memory Size"] == "128 MB" and f["Billed Duration"].endswith(" ms")
        assert int(f["Max Memory Used"].split()[0]) > 0
    assert out.count("START RequestId: ") == 2 and out.count("END RequestId: ") == 2
    assert "echo called 1" in out


def test_layers_later_ones_win(instance: Any, tmp_path: Path) -> None:
    for i, text in enumerate(["first", "second"]):
        layer = tmp_path / f"layer{i}" / "python"
        layer.mkdir(parents=True)
        (layer / "shared.py").write_text(f"WHO = {text!r}\n")
        (layer / f"only{i}.py").write_text("OK = True\n")
    code = tmp_path / "layered"
    code.mkdir()
    (code / "app.py").write_text(
        "import shared, only0, only1\n"
        "def handler(event, context):\n    return shared.WHO\n")
    inst = instance("app.handler", code=code,
                    layerDirs=[str(tmp_path / "layer0"), str(tmp_path / "layer1")])
    assert inst.client.get("/").json() == "second"
