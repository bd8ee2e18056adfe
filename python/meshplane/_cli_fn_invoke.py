"""`meshplane fn invoke NAME[:QUALIFIER]`: call a function through a running proxy's Invoke API.

It POSTs to `/2015-03-31/functions/NAME/invocations` on the proxy's admin address (the same
request boto3's `lambda.invoke` sends), prints the function's result on stdout and a summary
(status, executed version, request id) on stderr. Part of the CLI layer: imports trio and h11
when it runs; `add_invoke_parser` registers it in the `fn` command group.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any
from urllib.parse import quote

from meshplane.errors import MeshplaneError

__all__ = ["ADMIN_ENV", "EXIT_FUNCTION_ERROR", "EXIT_UNREACHABLE", "add_invoke_parser", "run_invoke"]

ADMIN_ENV = "MESHPLANE_ADMIN"
DEFAULT_ADMIN = "127.0.0.1:9901"
EXIT_OK, EXIT_ERROR, EXIT_FUNCTION_ERROR, EXIT_UNREACHABLE = 0, 1, 4, 5
INVOKE_EXIT_CODES = """\
exit status: 0 the function ran and returned (with --async: the event is queued; with
--dry-run: the function and qualifier exist); 1 refused before it ran (unknown function,
throttled, payload not JSON or too large: Lambda's error type and message on stderr);
2 bad command line; 4 the function failed (X-Amz-Function-Error; Lambda's error payload on
stdout); 5 no proxy answered at the admin address."""


class InvokeUsageError(MeshplaneError):
    """A command-line mistake (printed as one line, exit 1)."""


def add_invoke_parser(fn_sub: Any) -> None:
    """Add `invoke` to the `fn` command group's subparsers."""
    p = fn_sub.add_parser(
        "invoke",
        help="invoke a function through a running proxy (Lambda's Invoke API)",
        description="Invoke function NAME (qualifier: $LATEST by default, a version number or an "
        "alias) through the Invoke API on a running proxy's admin address: synchronously "
        "(the result on stdout), asynchronously (--async: queued durably, retried, sent to the "
        "function's destinations; docs/functions.md) or as a dry run (--dry-run: only checks "
        "that the function and qualifier exist). A summary (status, executed version, request "
        "id) goes to stderr.",
        epilog=INVOKE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("function", metavar="NAME[:QUALIFIER]",
                   help="the function, optionally with a version number, alias or $LATEST "
                   "(a function ARN works too)")
    p.add_argument("--payload", default="{}", metavar="JSON",
                   help="the event: JSON text, @FILE to read it from a file, or - for stdin "
                   "(default: {})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--async", dest="asynchronous", action="store_true",
                      help="invocation type Event: queue it and return its request id (202)")
    mode.add_argument("--dry-run", action="store_true",
                      help="invocation type DryRun: check the function and qualifier only (204)")
    p.add_argument("--log", action="store_true",
                   help="print the invocation's log (its last 4 KB: START, the handler's output, "
                   "END, REPORT) to stderr (X-Amz-Log-Type: Tail)")
    p.add_argument("--admin", metavar="HOST:PORT",
                   help=f"the proxy's admin address (default: ${ADMIN_ENV}, else {DEFAULT_ADMIN})")
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                   help="give up waiting for the answer after this long (default: 900, "
                   "Lambda's longest function timeout)")


def _payload(text: str) -> bytes:
    if text == "-":
        data = sys.stdin.buffer.read()
    elif text.startswith("@"):
        try:
            with open(text[1:], "rb") as f:
                data = f.read()
        except OSError as exc:
            raise InvokeUsageError(f"--payload {text}: {exc.strerror or exc}") from None
    else:
        data = text.encode()
    try:
        json.loads(data or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvokeUsageError(f"--payload: not JSON ({exc})") from None
    return data


async def _post(host: str, port: int, target: str, headers: list[tuple[str, str]], body: bytes,
                timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 POST over h11: (status, lower-case headers, body)."""
    import h11
    import trio

    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method="POST", target=target, headers=[
                ("host", f"{host}:{port}"), ("content-type", "application/json"),
                ("content-length", str(len(body))), *headers])
            await stream.send_all(conn.send(request) + (conn.send(h11.Data(data=body)) or b"")
                                  + (conn.send(h11.EndOfMessage()) or b""))
            status, answer_headers, answer = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    answer_headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    answer += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, answer_headers, bytes(answer)


async def run_invoke(args: argparse.Namespace) -> int:
    """Run `meshplane fn invoke`; returns the exit status (INVOKE_EXIT_CODES)."""
    import trio

    from meshplane.config.addresses import parse_address

    admin = args.admin or os.environ.get(ADMIN_ENV) or DEFAULT_ADMIN
    try:
        host, port = parse_address(admin, min_port=1)
    except ValueError as exc:
        raise InvokeUsageError(f"--admin: {exc}") from None
    payload = _payload(args.payload)
    kind = "Event" if args.asynchronous else "DryRun" if args.dry_run else "RequestResponse"
    headers = [("x-amz-invocation-type", kind)]
    if args.log:
        headers.append(("x-amz-log-type", "Tail"))
    target = f"/2015-03-31/functions/{quote(args.function, safe='')}/invocations"
    try:
        status, answer_headers, body = await _post(host, port, target, headers, payload, args.timeout)
    except (OSError, trio.TooSlowError) as exc:
        why = "no answer in time" if isinstance(exc, trio.TooSlowError) else (exc.strerror or str(exc))
        print(f"meshplane fn invoke: no proxy answered at {admin} ({why}); start one with "
              f"`meshplane run` and pass its admin address (--admin or ${ADMIN_ENV})", file=sys.stderr)
        return EXIT_UNREACHABLE
    request_id = answer_headers.get("x-amzn-requestid", "?")
    if status >= 300:
        error_type = answer_headers.get("x-amzn-errortype", f"HTTP {status}")
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = body.decode("utf-8", "replace").strip()
        print(f"meshplane fn invoke: {error_type}: {message} (status {status}, request id "
              f"{request_id})", file=sys.stderr)
        return EXIT_ERROR
    if args.log and "x-amz-log-result" in answer_headers:
        sys.stderr.write(base64.b64decode(answer_headers["x-amz-log-result"]).decode("utf-8", "replace"))
    summary = [f"StatusCode {status}"]
    if "x-amz-executed-version" in answer_headers:
        summary.append(f"ExecutedVersion {answer_headers['x-amz-executed-version']}")
    if "x-amz-function-error" in answer_headers:
        summary.append(f"FunctionError {answer_headers['x-amz-function-error']}")
    summary.append(f"RequestId {request_id}")
    print(", ".join(summary), file=sys.stderr)
    if body:
        sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
        sys.stdout.flush()
    return EXIT_FUNCTION_ERROR if "x-amz-function-error" in answer_headers else EXIT_OK
