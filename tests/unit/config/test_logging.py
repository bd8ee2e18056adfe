"""Access logs: `logging.accessLog.file` compiles to `accessLog` on every listener of the proxy,
and format strings are checked against the operators the core implements."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from meshplane.config import compile_snapshot, from_dict
from meshplane.config.logging import (
    HEADER_OPERATORS,
    NUMERIC,
    OPERATORS,
    format_problem,
    operator_problem,
)
from meshplane.errors import Problem

from .builders import (
    find,
    gateway_doc,
    node,
    problems_of,
    route,
    router,
    service,
    sidecar_doc,
)
from .snapshot_contract import assert_valid_snapshot

FORMAT_RS = Path(__file__).resolve().parents[3] / "rust" / "src" / "accesslog" / "format.rs"
JSON_FORMAT = [
    {"key": "start", "value": "%START_TIME%"},
    {"key": "code", "value": "%RESPONSE_CODE%"},
    {"key": "path", "value": "%REQ(:PATH)%"},
    {"key": "upstream", "value": "%UPSTREAM_HOST%"},
]
GW = 'VirtualGateway "edge"'
WEB = 'VirtualNode "web"'


def with_log(doc: dict[str, Any], kind: str, name: str, file: dict[str, Any]) -> dict[str, Any]:
    find(doc, kind, name)["spec"]["logging"] = {"accessLog": {"file": file}}
    return doc


def compiled(doc: dict[str, Any]) -> dict[str, Any]:
    snapshot = json.loads(compile_snapshot(from_dict(doc), version="v1"))
    assert_valid_snapshot(snapshot)
    return snapshot  # type: ignore[no-any-return]


def expect(problems: list[Problem], resource: str, field: str, *words: str) -> Problem:
    found = [p for p in problems if p.resource == resource and p.field == field]
    assert found, f"no problem at {resource!r} {field!r} in:\n" + "\n".join(map(str, problems))
    text = str(found[0])
    assert "mesh.yaml" in text and resource in text and field in text
    for word in words:
        assert word in found[0].message, found[0].message
    return found[0]


# --- compilation ---------------------------------------------------------------------------


def test_no_logging_no_access_log() -> None:
    for doc in (gateway_doc(), sidecar_doc()):
        assert all("accessLog" not in lst for lst in compiled(doc)["listeners"])


def test_gateway_listeners_carry_the_gateway_log() -> None:
    doc = with_log(
        gateway_doc(),
        "VirtualGateway",
        "edge",
        {"path": "/var/log/edge.log", "format": {"json": JSON_FORMAT}},
    )
    find(doc, "VirtualGateway", "edge")["spec"]["listeners"].append(
        {"portMapping": {"port": 9090, "protocol": "http"}}
    )
    # A node's log is not the gateway's: only the served resource counts.
    with_log(doc, "VirtualNode", "v1", {"path": "/dev/stderr"})
    listeners = compiled(doc)["listeners"]
    assert [lst["name"] for lst in listeners] == ["gateway/edge/8080", "gateway/edge/9090"]
    for lst in listeners:
        assert lst["accessLog"] == {"path": "/var/log/edge.log", "format": {"json": JSON_FORMAT}}


def test_default_format_leaves_format_out() -> None:
    doc = with_log(gateway_doc(), "VirtualGateway", "edge", {"path": "/dev/stdout"})
    assert compiled(doc)["listeners"][0]["accessLog"] == {"path": "/dev/stdout"}


def test_sidecar_inbound_outbound_and_tcp_listeners_carry_the_node_log() -> None:
    doc = sidecar_doc()
    find(doc, "VirtualNode", "web")["spec"]["backends"].append(
        {"virtualService": {"virtualServiceName": "db.local"}}
    )
    doc["resources"] += [
        service("db.local", router="dbr"),
        router("dbr", 5432, "tcp"),
        route(
            "db",
            "dbr",
            {"action": {"weightedTargets": [{"virtualNode": "db1", "weight": 1}]}},
            rtype="tcpRoute",
        ),
        node("db1", 5432, "tcp"),
    ]
    text = "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH):64% %RESPONSE_CODE% 100%%\n"
    with_log(doc, "VirtualNode", "web", {"path": "/tmp/web.log", "format": {"text": text}})
    listeners = compiled(doc)["listeners"]
    assert [lst["name"] for lst in listeners] == [
        "inbound/web/8080",
        "outbound/web",
        "outbound/web/tcp/5432",
    ]
    for lst in listeners:
        assert lst["accessLog"] == {"path": "/tmp/web.log", "format": {"text": text}}


# --- validation ----------------------------------------------------------------------------


def test_json_value_with_unknown_operator_names_the_field_and_suggests() -> None:
    fields = [*JSON_FORMAT[:2], {"key": "x", "value": "%RESPONSE_COD%"}]
    doc = with_log(
        gateway_doc(), "VirtualGateway", "edge", {"path": "/x", "format": {"json": fields}}
    )
    expect(
        problems_of(doc),
        GW,
        "spec.logging.accessLog.file.format.json[2].value",
        "unsupported command operator %RESPONSE_COD%",
        'did you mean "%RESPONSE_CODE%"',
    )


def test_text_format_problem_on_a_node() -> None:
    doc = with_log(
        sidecar_doc(),
        "VirtualNode",
        "web",
        {"path": "/x", "format": {"text": "[%START_TIME%] %REQUEST(:PATH)%\n"}},
    )
    expect(
        problems_of(doc),
        WEB,
        "spec.logging.accessLog.file.format.text",
        'did you mean "%REQ(:PATH)%"',
    )


def test_every_problem_at_once() -> None:
    fields = [
        {"key": "a", "value": "%NOPE%"},
        {"key": "a", "value": "%DURATION%"},
        {"key": "c", "value": "%BYTES_SENT"},
    ]
    doc = with_log(
        gateway_doc(), "VirtualGateway", "edge", {"path": "  ", "format": {"json": fields}}
    )
    problems = problems_of(doc)
    base = "spec.logging.accessLog.file"
    expect(problems, GW, f"{base}.path", "whitespace")
    expect(problems, GW, f"{base}.format.json[0].value", "%NOPE%", "supported: %START_TIME%")
    expect(problems, GW, f"{base}.format.json[1].key", 'duplicate key "a"', "json[0]")
    expect(problems, GW, f"{base}.format.json[2].value", "unterminated", "%%")


@pytest.mark.parametrize(
    ("file", "field", "words"),
    [
        ({"path": ""}, "path", ["expected a string of 1..255 characters"]),
        ({"path": 3}, "path", ["expected a string"]),
        ({}, "path", ["required"]),
        ({"path": "/x", "format": {"text": ""}}, "format.text", ["1..1000"]),
        ({"path": "/x", "format": {"json": []}}, "format.json", ["at least 1"]),
        ({"path": "/x", "format": {"yaml": "x"}}, "format.yaml", ["unknown field"]),
    ],
)
def test_shape_of_the_file_log(file: dict[str, Any], field: str, words: list[str]) -> None:
    doc = with_log(gateway_doc(), "VirtualGateway", "edge", file)
    expect(problems_of(doc), GW, f"spec.logging.accessLog.file.{field}", *words)


def test_valid_formats_load() -> None:
    every = " ".join(f"%{op}%" for op in OPERATORS)
    text = every + " %REQ(user-agent)% %REQ(:authority)% %RESP(server?date):10% %% done\n"
    doc = with_log(
        gateway_doc(), "VirtualGateway", "edge", {"path": "/x", "format": {"text": text}}
    )
    assert from_dict(doc).proxy.gateway == "edge"


# --- the format grammar --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain text, no operators\n",
        "100%% sure",
        "%%%%",
        "%START_TIME%%DURATION%",
        "%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(:SCHEME)% %REQ(Host)%",
        "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "%REQ(:PATH):0% %REQ(x-long):1000%",
        "%RESP(content-type)% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "%RESP(a?b):7%",
    ],
)
def test_accepted_formats(text: str) -> None:
    assert format_problem(text) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("%NOPE%", ["unsupported command operator %NOPE%", "supported:"]),
        ("%response_code%", ['did you mean "%RESPONSE_CODE%"']),
        ("%UPSTREAM_HOSTS%", ['did you mean "%UPSTREAM_HOST%"']),
        ("%req(:path)%", ['did you mean "%REQ(:path)%"']),
        ("%START_TIME", ["unterminated", "'%START_TIME'"]),
        ("50% off", ["unterminated", "%%"]),
        ("%REQ%", ["%REQ% needs a header name"]),
        ("%REQ(:PATH%", ["missing ')'"]),
        ("%REQ()%", ["expected a header name"]),
        ("%REQ(a?b?c)%", ["NAME?FALLBACK"]),
        ("%REQ(:PATH):%", ["optional :LENGTH"]),
        ("%REQ(:PATH):x%", ["optional :LENGTH"]),
        ("%REQ(:PATH)x%", ["optional :LENGTH"]),
        ("%REQ(:status)%", ['unsupported pseudo-header ":status"', ":method"]),
        ("%RESP(:status)%", ['unsupported pseudo-header ":status"', "supported: none"]),
        ("%REQ(bad header)%", ['got "bad header"']),
        ("%START_TIME(%Y)%", ["%START_TIME% takes no argument"]),
        ("ok %DURATION% then %BAD%", ["%BAD%"]),
    ],
)
def test_refused_formats(text: str, words: list[str]) -> None:
    why = format_problem(text)
    assert why is not None
    for word in words:
        assert word in why, why


def test_operator_lists() -> None:
    assert set(NUMERIC) <= set(OPERATORS)
    assert not set(HEADER_OPERATORS) & set(OPERATORS)
    assert all(operator_problem(op) is None for op in OPERATORS)


@pytest.mark.skipif(not FORMAT_RS.is_file(), reason="rust/src/accesslog/format.rs not present")
def test_operators_match_the_core_parser() -> None:
    """The operators and the default format of `rust/src/accesslog/format.rs` are the ones
    validation accepts: nothing the core refuses gets past `validate`."""
    source = FORMAT_RS.read_text()
    parse_op = source[source.index("fn parse_op") :]
    parse_op = parse_op[: parse_op.index("\n}\n")]
    in_core = set(re.findall(r'^\s*"([A-Z_]+)" => Op::', parse_op, re.MULTILINE))
    assert in_core == set(OPERATORS)
    assert {"REQ", "RESP"} == set(re.findall(r'strip_prefix\("([A-Z]+)\("\)', parse_op))
    default = re.search(r'DEFAULT_TEXT: &str = "((?:[^"\\]|\\.)*)";', source)
    assert default is not None
    assert format_problem(json.loads(f'"{default.group(1)}"')) is None
