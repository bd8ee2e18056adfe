"""`functions.invocation`: Lambda's Invoke request, parsed as Lambda parses it (sans-I/O)."""

from __future__ import annotations

import base64
import json

import pytest
from meshplane.functions.invocation import (
    ASYNC_PAYLOAD_LIMIT,
    SYNC_PAYLOAD_LIMIT,
    LambdaError,
    function_arn,
    parse_invoke,
    split_function_name,
)

PATH = "/2015-03-31/functions/{}/invocations"


def parse(name: str = "hello", *, query: dict[str, list[str]] | None = None,
          headers: list[tuple[str, str]] | None = None, body: bytes = b'{"a": 1}', method: str = "POST"):
    return parse_invoke(method, PATH.format(name), query or {}, headers or [], body)


def error(**kw) -> LambdaError:
    with pytest.raises(LambdaError) as caught:
        parse(**kw)
    return caught.value


def test_defaults_are_request_response_latest_no_tail() -> None:
    call = parse()
    assert (call.function_name, call.qualifier, call.invocation_type) == ("hello", None, "RequestResponse")
    assert call.payload == b'{"a": 1}' and not call.log_tail and call.client_context is None
    assert call.arn == "arn:aws:lambda:local:000000000000:function:hello"


@pytest.mark.parametrize(("raw", "expected"), [
    ("hello", ("hello", None)),
    ("hello:live", ("hello", "live")),
    ("hello:%24LATEST", ("hello", "$LATEST")),
    ("hello:7", ("hello", "7")),
    ("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ahello", ("hello", None)),
    ("arn:aws:lambda:eu-west-2:123456789012:function:hello:live", ("hello", "live")),
    ("123456789012:function:hello:3", ("hello", "3")),
])
def test_function_name_forms(raw: str, expected: tuple[str, str | None]) -> None:
    call = parse(raw)
    assert (call.function_name, call.qualifier) == expected


@pytest.mark.parametrize("raw", ["bad name", "a" * 65, "hello:bad.qualifier", "arn:aws:lambda:nowhere:function:x"])
def test_bad_function_names_are_validation_errors(raw: str) -> None:
    with pytest.raises(LambdaError) as caught:
        split_function_name(raw)
    assert caught.value.status == 400 and caught.value.error_type == "ValidationException"


def test_qualifier_query_param_and_mismatch() -> None:
    assert parse(query={"Qualifier": ["2"]}).qualifier == "2"
    assert parse("hello:2", query={"Qualifier": ["2"]}).qualifier == "2"
    exc = error(name="hello:2", query={"Qualifier": ["3"]})
    assert (exc.status, exc.error_type) == (400, "InvalidParameterValueException")


def test_invocation_types_and_log_type() -> None:
    assert parse(headers=[("x-amz-invocation-type", "Event")]).invocation_type == "Event"
    assert parse(headers=[("x-amz-invocation-type", "DryRun")]).invocation_type == "DryRun"
    assert parse(headers=[("x-amz-log-type", "Tail")]).log_tail
    # Lambda returns logs only to synchronous callers.
    assert not parse(headers=[("x-amz-log-type", "Tail"), ("x-amz-invocation-type", "Event")]).log_tail
    exc = error(headers=[("x-amz-invocation-type", "Later")])
    assert (exc.status, exc.error_type) == (400, "ValidationException") and "invocationType" in exc.message
    assert error(headers=[("x-amz-log-type", "All")]).error_type == "ValidationException"


def test_body_must_be_json_and_empty_is_an_empty_object() -> None:
    exc = error(body=b"not json")
    assert (exc.status, exc.error_type) == (400, "InvalidRequestContentException")
    assert parse(body=b"").payload == b"{}"
    assert parse(body=b'"a string"').payload == b'"a string"'


def test_payload_limits_sync_and_async() -> None:
    big = b'"' + b"x" * (ASYNC_PAYLOAD_LIMIT - 1) + b'"'  # one byte over 256 KB
    assert parse(body=big).payload == big
    exc = error(body=big, headers=[("x-amz-invocation-type", "Event")])
    assert (exc.status, exc.error_type) == (413, "RequestTooLargeException")
    huge = b'"' + b"x" * (SYNC_PAYLOAD_LIMIT - 1) + b'"'
    assert error(body=huge).status == 413
    assert json.loads(exc.body()) == {"Type": "User", "message": exc.message}


def test_client_context_is_base64_json_object() -> None:
    ctx = base64.b64encode(b'{"custom": {"k": "v"}}').decode()
    assert parse(headers=[("x-amz-client-context", ctx)]).client_context == ctx
    for bad in ("%%%", base64.b64encode(b"[1]").decode(), "A" * 4000):
        assert error(headers=[("x-amz-client-context", bad)]).error_type == "InvalidRequestContentException"


def test_not_an_invoke_path_or_method() -> None:
    with pytest.raises(LambdaError) as caught:
        parse_invoke("POST", "/2015-03-31/functions/x/other", {}, [], b"")
    assert caught.value.status == 404
    assert error(method="GET").status == 405


def test_errors_have_lambdas_shapes() -> None:
    nf = LambdaError.not_found("ghost", "live")
    assert (nf.status, nf.error_type) == (404, "ResourceNotFoundException")
    assert json.loads(nf.body())["message"] == f"Function not found: {function_arn('ghost', 'live')}"
    throttle = LambdaError.throttled()
    assert json.loads(throttle.body()) == {"Type": "User", "message": "Rate Exceeded.",
                                           "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}
