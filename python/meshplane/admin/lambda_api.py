"""Lambda's Invoke API over HTTP, so `boto3.client("lambda", endpoint_url=...)` works.

    POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=Q]

`X-Amz-Invocation-Type` RequestResponse (200 and the handler's result; a function error is
still 200, with `X-Amz-Function-Error: Unhandled` and Lambda's error payload), Event (queued
durably, 202) or DryRun (the function and qualifier exist: 204). `X-Amz-Log-Type: Tail` adds
`X-Amz-Log-Result` (the last 4 KB of the invocation's log, base64); every answer carries
`x-amzn-RequestId`, and a run also `X-Amz-Executed-Version`. Service errors are Lambda's:
status, `x-amzn-ErrorType` and `{"Type", "message"}` (`functions.invocation.LambdaError`).
No authentication: SigV4 signatures are accepted unchecked (docs/functions.md).

Served on the admin address (`AdminAPI` hands it every `/2015-03-31/` request) or on its own
(`serve_lambda_api`). Imports trio, the admin HTTP server and `meshplane.functions`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from meshplane._bridge import TaskStatus
from meshplane.admin.server import LAMBDA_PREFIX as API_PREFIX
from meshplane.admin.server import Request, Response, serve_http
from meshplane.functions.invocation import (
    SYNC_PAYLOAD_LIMIT,
    FunctionInvoker,
    InvokeRequest,
    LambdaError,
    parse_invoke,
)
from meshplane.functions.service import FunctionNotFound

if TYPE_CHECKING:
    from meshplane.functions.async_invoke import AsyncInvoker

__all__ = ["API_PREFIX", "MAX_BODY_BYTES", "LambdaAPI", "serve_lambda_api"]

MAX_BODY_BYTES = SYNC_PAYLOAD_LIMIT
"""The largest body the server reads for the API; beyond it, Lambda's 413 without reading on."""
JSON = "application/json"


def error_response(exc: LambdaError, request_id: str) -> Response:
    return Response(exc.status, exc.body(), JSON, headers=[
        ("x-amzn-errortype", exc.error_type), ("x-amzn-requestid", request_id)])


def too_large(request: Request) -> Response:
    """The answer to a body over `MAX_BODY_BYTES` (the server stops reading it)."""
    if not request.path.startswith(API_PREFIX):
        return Response.text(413, "request body too large\n", headers=[("connection", "close")])
    kind = "InvokeAsync" if (request.header("x-amz-invocation-type") == "Event") else "InvokeFunction"
    limit = 256 * 1024 if kind == "InvokeAsync" else SYNC_PAYLOAD_LIMIT
    exc = LambdaError(413, "RequestTooLargeException",
                      f"Request must be smaller than {limit} bytes for the {kind} operation")
    response = error_response(exc, str(uuid.uuid4()))
    return Response(response.status, response.body, JSON, headers=[*response.headers, ("connection", "close")])


class LambdaAPI:
    """The Invoke handler over a `FunctionInvoker` (`proxy.functions`); `events()` is the
    queue for Event invocations (None while there is none: they get 500 ServiceException)."""

    def __init__(self, invoker: FunctionInvoker,
                 events: Callable[[], AsyncInvoker | None] = lambda: None) -> None:
        self.invoker = invoker
        self.events = events

    async def __call__(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            call = parse_invoke(request.method, request.path, request.query, request.headers,
                                request.body)
            try:
                return await self._invoke(call, request_id)
            except FunctionNotFound:
                raise LambdaError.not_found(call.function_name, call.qualifier) from None
            except (OSError, trio.TooSlowError) as exc:
                raise LambdaError(500, "ServiceException",
                                  f"the invocation of {call.arn} failed: "
                                  f"{'no answer in time' if isinstance(exc, trio.TooSlowError) else exc}") from None
        except LambdaError as exc:
            return error_response(exc, request_id)

    async def _invoke(self, call: InvokeRequest, request_id: str) -> Response:
        if call.invocation_type == "Event":
            events = self.events()
            if events is None:
                raise LambdaError(500, "ServiceException",
                                  "asynchronous invocation is unavailable: the event queue is not "
                                  "open (see the proxy's log)")
            # Lambda refuses an unknown function or qualifier at once, not at the first attempt.
            await self.invoker.invoke(call.function_name, call.qualifier, b"{}", invocation_type="DryRun")
            request_id = await events.submit(call.function_name, call.qualifier, call.payload)
            return Response(202, b"", JSON, headers=[("x-amzn-requestid", request_id)])
        result = await self.invoker.invoke(call.function_name, call.qualifier, call.payload,
                                           invocation_type=call.invocation_type,
                                           client_context=call.client_context, request_id=request_id)
        if call.invocation_type == "DryRun":
            return Response(204, b"", JSON, headers=[("x-amzn-requestid", request_id)])
        if result.status == 429 and not result.function_error:
            raise LambdaError.throttled()
        if not 200 <= result.status < 300 and not result.function_error:
            raise LambdaError(500, "ServiceException",
                              f"the invocation of {call.arn} failed before the function ran "
                              f"(status {result.status}: {result.payload[:200].decode('utf-8', 'replace')})")
        headers = [("x-amzn-requestid", request_id),
                   ("x-amz-executed-version", result.executed_version or "$LATEST")]
        if result.function_error:
            headers.append(("x-amz-function-error", result.function_error))
        if call.log_tail:
            headers.append(("x-amz-log-result", result.log_tail or ""))
        return Response(200, result.payload, JSON, headers=headers)


async def serve_lambda_api(
    api: LambdaAPI, host: str, port: int, *, task_status: TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the Invoke API alone on host:port until cancelled; reports the bound (host, port)."""
    await serve_http(api, host, port, max_body=MAX_BODY_BYTES, too_large=too_large,
                     task_status=task_status)
