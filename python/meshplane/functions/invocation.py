"""Lambda's Invoke API, sans-I/O: parse a request, name its errors, shape its answer.

`parse_invoke(method, path, query, headers, body)` turns one HTTP request
(`POST /2015-03-31/functions/{FunctionName}/invocations`) into an `InvokeRequest` or raises
`LambdaError`, which carries the status, Lambda's error type (the `x-amzn-ErrorType` header
and the body's `Type`/`message`) so the HTTP layer only serialises it. The limits and messages
are Lambda's (../shared/spec/lambda.md §4): 6 MB synchronous, 256 KB asynchronous payloads;
the function name may be a name, `name:qualifier`, a partial ARN or a full ARN.

`FunctionInvoker` is the one thing the Invoke path needs from the function runtime
(`FunctionService.invoke`). Pure: imports neither trio nor the compiled core.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

__all__ = [
    "ASYNC_PAYLOAD_LIMIT",
    "INVOKE_PATH",
    "INVOCATION_TYPES",
    "SYNC_PAYLOAD_LIMIT",
    "FunctionInvoker",
    "InvocationResult",
    "InvokeRequest",
    "LambdaError",
    "function_arn",
    "parse_invoke",
    "split_function_name",
]

SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024
"""Largest RequestResponse/DryRun body, bytes (Lambda's 6 MB)."""
ASYNC_PAYLOAD_LIMIT = 256 * 1024
"""Largest Event body, bytes (Lambda's 256 KB)."""
CLIENT_CONTEXT_LIMIT = 3583
"""Largest `X-Amz-Client-Context` (base64 text), bytes, as Lambda."""
INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
REGION = "local"
ACCOUNT = "000000000000"
"""The region and account in the ARNs meshplane writes, as in the worker's
`invoked_function_arn` (a local host has neither; docs/functions.md)."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_QUALIFIER = re.compile(r"^(\$LATEST|[A-Za-z0-9_-]{1,128})$")
_ARN = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{12}):)?(?:function:)(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)


class LambdaError(Exception):
    """A service error as Lambda answers it: HTTP `status`, `error_type` (the
    `x-amzn-ErrorType` header) and `message`; `body()` is Lambda's JSON."""

    def __init__(self, status: int, error_type: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.reason = reason

    def body(self) -> bytes:
        doc: dict[str, Any] = {"Type": "User" if self.status < 500 else "Service", "message": self.message}
        if self.reason:
            doc["Reason"] = self.reason
        return json.dumps(doc).encode()

    @classmethod
    def not_found(cls, name: str, qualifier: str | None) -> LambdaError:
        return cls(404, "ResourceNotFoundException", f"Function not found: {function_arn(name, qualifier)}")

    @classmethod
    def throttled(cls) -> LambdaError:
        return cls(429, "TooManyRequestsException", "Rate Exceeded.",
                   reason="ReservedFunctionConcurrentInvocationLimitExceeded")


def function_arn(name: str, qualifier: str | None = None) -> str:
    """The ARN meshplane reports for a function (and qualifier): Lambda's shape with region
    `local` and account `000000000000` (as `context.invoked_function_arn`)."""
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def split_function_name(raw: str) -> tuple[str, str | None]:
    """`name`, `name:qualifier`, `ACCOUNT:function:name[:q]` or a full ARN -> (name, qualifier).

    Raises `LambdaError` (400 ValidationException) naming what is wrong."""
    if raw.startswith("arn:") or ":function:" in raw or raw.startswith("function:"):
        match = _ARN.match(raw)
        if not match:
            raise LambdaError(400, "ValidationException",
                              f"1 validation error detected: Value '{raw}' at 'functionName' failed to "
                              "satisfy constraint: expected NAME, NAME:QUALIFIER or "
                              "arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]")
        name, qualifier = match["name"], match["qualifier"]
    else:
        name, sep, qualifier_text = raw.partition(":")
        qualifier = qualifier_text if sep else None
    if not _NAME.match(name):
        raise LambdaError(400, "ValidationException",
                          f"1 validation error detected: Value '{name}' at 'functionName' failed to "
                          "satisfy constraint: Member must satisfy regular expression pattern: "
                          "[a-zA-Z0-9-_.]{1,64}")
    if qualifier is not None and not _QUALIFIER.match(qualifier):
        raise LambdaError(400, "ValidationException",
                          f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to "
                          "satisfy constraint: Member must satisfy regular expression pattern: "
                          "($LATEST|[a-zA-Z0-9-_]+)")
    return name, qualifier


@dataclass(frozen=True)
class InvokeRequest:
    """One parsed Invoke call. `qualifier` None means `$LATEST` (the default);
    `client_context` is `X-Amz-Client-Context` as sent (base64 JSON, checked), if any."""

    function_name: str
    qualifier: str | None
    invocation_type: str
    payload: bytes
    log_tail: bool = False
    client_context: str | None = None

    @property
    def arn(self) -> str:
        return function_arn(self.function_name, self.qualifier)


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def parse_invoke(
    method: str,
    path: str,
    query: Mapping[str, Sequence[str]],
    headers: Sequence[tuple[str, str]],
    body: bytes,
) -> InvokeRequest:
    """The Invoke request in `method path?query` with `headers` and `body`; `LambdaError` if it
    is not one Lambda would accept. `path` is still percent-encoded (boto3 encodes ARNs)."""
    match = INVOKE_PATH.match(path)
    if match is None:
        raise LambdaError(404, "UnknownOperationException", f"no Lambda operation at {path}")
    if method != "POST":
        raise LambdaError(405, "UnknownOperationException", f"Invoke takes POST, not {method}")
    name, qualifier = split_function_name(unquote(match["name"]))
    given = query.get("Qualifier")
    query_qualifier = given[-1] if given else None
    if query_qualifier is not None:
        if not _QUALIFIER.match(query_qualifier):
            raise LambdaError(400, "ValidationException",
                              f"1 validation error detected: Value '{query_qualifier}' at 'qualifier' "
                              "failed to satisfy constraint: Member must satisfy regular expression "
                              "pattern: ($LATEST|[a-zA-Z0-9-_]+)")
        if qualifier is not None and qualifier != query_qualifier:
            raise LambdaError(400, "InvalidParameterValueException",
                              "The derived qualifier from the function name does not match the "
                              "specified qualifier.")
        qualifier = query_qualifier
    invocation_type = _header(headers, "x-amz-invocation-type") or "RequestResponse"
    if invocation_type not in INVOCATION_TYPES:
        raise LambdaError(400, "ValidationException",
                          f"1 validation error detected: Value '{invocation_type}' at "
                          "'invocationType' failed to satisfy constraint: Member must satisfy enum "
                          "value set: [Event, RequestResponse, DryRun]")
    log_type = _header(headers, "x-amz-log-type") or "None"
    if log_type not in ("None", "Tail"):
        raise LambdaError(400, "ValidationException",
                          f"1 validation error detected: Value '{log_type}' at 'logType' failed to "
                          "satisfy constraint: Member must satisfy enum value set: [None, Tail]")
    limit = ASYNC_PAYLOAD_LIMIT if invocation_type == "Event" else SYNC_PAYLOAD_LIMIT
    if len(body) > limit:
        raise LambdaError(413, "RequestTooLargeException",
                          f"Request must be smaller than {limit} bytes for the "
                          f"{'InvokeAsync' if invocation_type == 'Event' else 'InvokeFunction'} "
                          "operation")
    payload = body if body.strip() else b"{}"
    try:
        json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LambdaError(400, "InvalidRequestContentException",
                          f"Could not parse request body into json: {exc}") from None
    return InvokeRequest(
        function_name=name,
        qualifier=qualifier,
        invocation_type=invocation_type,
        payload=payload,
        log_tail=log_type == "Tail" and invocation_type == "RequestResponse",
        client_context=_client_context(_header(headers, "x-amz-client-context")),
    )


def _client_context(raw: str | None) -> str | None:
    if not raw:
        return None
    if len(raw) > CLIENT_CONTEXT_LIMIT:
        raise LambdaError(400, "InvalidRequestContentException",
                          f"Client context must be at most {CLIENT_CONTEXT_LIMIT} bytes")
    try:
        if not isinstance(json.loads(base64.b64decode(raw, validate=True).decode()), dict):
            raise ValueError("not an object")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise LambdaError(400, "InvalidRequestContentException",
                          "Client context must be a valid Base64-encoded JSON object.") from None
    return raw


class InvocationResult(Protocol):
    """What one invocation answered (`FunctionService.invoke`'s `Invocation`).

    `status` is the HTTP status of the invocation through the core: 200 when the function ran
    (with `function_error` "Unhandled" when it failed; `payload` is then Lambda's error
    payload), 204 for a DryRun, 429 when throttled, 5xx when no instance could take it.
    `log_tail` is the last 4 KB of the invocation's log, already base64 (`X-Amz-Log-Result`)."""

    @property
    def status(self) -> int: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def function_error(self) -> str | None: ...

    @property
    def executed_version(self) -> str | None: ...

    @property
    def log_tail(self) -> str | None: ...

    @property
    def request_id(self) -> str: ...


class FunctionInvoker(Protocol):
    """The function runtime as the Invoke path sees it (`FunctionService`). `invocation_type`
    is "RequestResponse" or "DryRun" (answered without running anything); `request_id`
    becomes the invocation's `aws_request_id`. Raises `FunctionNotFound` for a function or
    qualifier it does not know."""

    async def invoke(
        self,
        name: str,
        qualifier: str | None,
        payload: bytes,
        *,
        invocation_type: str,
        client_context: str | None = None,
        request_id: str | None = None,
    ) -> InvocationResult: ...
