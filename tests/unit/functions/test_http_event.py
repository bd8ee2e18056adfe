"""API Gateway payload 2.0 both ways (spec/lambda.md §9), pure."""

from __future__ import annotations

import base64

import pytest
from meshplane.functions._http_event import ResultError, build_event, http_response


def test_event_omits_empty_parts_and_joins_repeats() -> None:
    event = build_event("GET", "/p", [("Host", "api.example.com"), ("X-A", "1"), ("x-a", "2"),
                                      ("X-Forwarded-For", "10.0.0.9, 127.0.0.1")], b"",
                        request_id="rid", now=1583348638.390)
    assert event["headers"] == {"host": "api.example.com", "x-a": "1,2",
                                "x-forwarded-for": "10.0.0.9, 127.0.0.1"}
    assert "cookies" not in event and "queryStringParameters" not in event and "body" not in event
    ctx = event["requestContext"]
    assert ctx["domainName"] == "api.example.com" and ctx["domainPrefix"] == "api"
    assert ctx["http"]["sourceIp"] == "127.0.0.1" and ctx["timeEpoch"] == 1583348638390
    assert ctx["time"] == "04/Mar/2020:19:03:58 +0000"


def test_results_map_as_api_gateway_does() -> None:
    assert http_response({"a": 1}) == (200, [("content-type", "application/json")], b'{"a": 1}')
    assert http_response(7)[2] == b"7"
    status, headers, body = http_response({
        "statusCode": 201, "headers": {"X-Y": "z"}, "multiValueHeaders": {"x-m": ["1", "2"]},
        "cookies": ["a=b; Path=/", "c=d"], "body": base64.b64encode(b"\x00\x01").decode(),
        "isBase64Encoded": True})
    assert status == 201 and body == b"\x00\x01"
    assert headers[:5] == [("X-Y", "z"), ("x-m", "1"), ("x-m", "2"), ("set-cookie", "a=b; Path=/"),
                           ("set-cookie", "c=d")]
    assert http_response({"statusCode": 204})[2] == b""
    for bad in ({"statusCode": 99}, {"statusCode": "x"}, {1, 2}):
        with pytest.raises(ResultError):
            http_response(bad)
