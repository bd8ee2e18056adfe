"""Function code the tests deploy: written into a fresh directory per test (`write_code`)."""

from __future__ import annotations

from pathlib import Path

APP = r'''
import json, os, sys, time

INIT_AT = time.time()
CALLS = 0


def echo(event, context):
    global CALLS
    CALLS += 1
    print("echo called", CALLS)
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"event": event, "calls": CALLS, "pid": os.getpid(),
                                "ppid": os.getppid(),
                                "version": context.function_version,
                                "name": context.function_name,
                                "memory": context.memory_limit_in_mb,
                                "request_id": context.aws_request_id,
                                "remaining": context.get_remaining_time_in_millis(),
                                "env": {k: v for k, v in os.environ.items()
                                        if k.startswith(("AWS_", "LAMBDA_", "_HANDLER", "GREETING"))}})}


def raw(event, context):
    return {"got": event, "version": context.function_version,
            "client": context.client_context}


def plain(event, context):
    return "hello"


def boom(event, context):
    raise ValueError("bad input: " + str(event.get("rawPath", "")))


def slow(event, context):
    time.sleep(float((event.get("queryStringParameters") or {}).get("s", "30")))
    return {"statusCode": 200, "body": "slept"}


def hog(event, context):
    chunks = []
    for _ in range(2048):
        chunks.append(b"x" * (1 << 20))
    return {"statusCode": 200, "body": str(len(chunks))}


def crash(event, context):
    if event.get("rawPath") == "/crash":
        os._exit(3)
    return {"statusCode": 200, "body": str(os.getpid())}


def work(event, context):
    # A fixed amount of CPU work, the same as the plain upstream of the benchmark does.
    total = 0
    for i in range(2000):
        total += i * i
    return {"statusCode": 200, "body": str(total)}


def hold(event, context):
    # Busy until the test creates the file named in ?until= (bounded: 20 s).
    until = (event.get("queryStringParameters") or {}).get("until", "")
    deadline = time.time() + 20
    while until and not os.path.exists(until) and time.time() < deadline:
        time.sleep(0.01)
    return {"statusCode": 200, "body": "released"}


def version_tag(event, context):
    return {"statusCode": 200, "body": os.environ.get("TAG", "?")}
'''


def write_code(root: Path, extra: str = "") -> Path:
    code = root / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "app.py").write_text(APP + extra)
    return code
