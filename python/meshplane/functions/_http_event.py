"""API Gateway HTTP API (payload format 2.0) events and results, both ways (spec/lambda.md §9).

Pure: a request's parts in, an event dict out; a handler's result in, (status, headers, body)
out. The worker uses it; tests read it directly. Imports only the standard library.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

# Content types whose bodies are text (anything else is base64-encoded, as API Gateway does
# when binary media types are configured).
_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml",
               "application/x-www-form-urlencoded", "application/graphql")


def _is_text(content_type: str, body: bytes) -> bool:
    lowered = content_type.lower()
    if lowered and not any(lowered.startswith(t) or t in lowered for t in _TEXT_TYPES) \
            and "+json" not in lowered and "+xml" not in lowered:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def build_event(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    *,
    request_id: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload-2.0 event of one HTTP/1.1 request (`target` is the request target)."""
    now = time.time() if now is None else now
    path, _, query = target.partition("?")
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    forwarded = joined.get("x-forwarded-for", "")
    source_ip = forwarded.split(",")[-1].strip() if forwarded else "127.0.0.1"
    host = joined.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path or "/",
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "meshplane",
            "domainName": host,
            "domainPrefix": host.split(".")[0],
            "http": {
                "method": method,
                "path": path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if body:
        if _is_text(joined.get("content-type", ""), body):
            event["body"] = body.decode("utf-8")
        else:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    return event


class ResultError(Exception):
    """A handler result that cannot become a response (not JSON-serialisable, bad body)."""


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """API Gateway's mapping of a handler result to (status, headers, body).

    A dict with `statusCode` is used as given; anything else becomes 200 with
    `content-type: application/json` and the result, JSON-encoded, as the body.
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        try:
            data = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            raise ResultError(f"Unable to marshal response: {exc}") from None
        return 200, [("content-type", "application/json")], data
    status = result["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ResultError(f"statusCode must be an integer 100..599, got {status!r}")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        headers.append((str(name), str(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers += [(str(name), str(v)) for v in values]
    for cookie in result.get("cookies") or []:
        headers.append(("set-cookie", str(cookie)))
    body = result.get("body")
    if body is None:
        data = b""
    elif result.get("isBase64Encoded"):
        try:
            data = base64.b64decode(str(body), validate=True)
        except ValueError as exc:
            raise ResultError(f"body is not valid base64: {exc}") from None
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        try:
            data = json.dumps(body).encode()
        except (TypeError, ValueError) as exc:
            raise ResultError(f"Unable to marshal response: {exc}") from None
    if not any(name.lower() == "content-type" for name, _ in headers) and data:
        headers.append(("content-type", "text/plain; charset=utf-8"))
    return status, headers, data
