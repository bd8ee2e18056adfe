"""`proxy.tracing`: validated with the rest of the file, compiled into the snapshot's
`tracing` (checked against the schema the core's types generate), round-tripped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from meshplane.config import compile_snapshot, from_dict
from meshplane.errors import ConfigError

from .snapshot_contract import assert_valid_snapshot


def config(tracing: Any, **proxy: Any) -> dict[str, Any]:
    return {
        "mesh": "m",
        "proxy": {"gateway": "edge", "tracing": tracing, **proxy},
        "resources": [
            {"kind": "VirtualGateway", "name": "edge",
             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}},
        ],
    }


def test_tracing_compiles_with_the_served_name_as_service_and_round_trips() -> None:
    tracing = {"otlpEndpoint": "http://127.0.0.1:4318", "samplingPercent": 1.5,
               "propagation": "xray", "keepErrors": True, "maxQueueSpans": 100,
               "maxBatchSpans": 10, "exportTimeoutMs": 2000, "recentSpans": 0}
    cfg = from_dict(config(tracing))
    doc = json.loads(compile_snapshot(cfg, version="v1"))
    assert_valid_snapshot(doc)
    assert doc["tracing"] == {**tracing, "serviceName": "edge"}
    assert from_dict(cfg.to_native()).proxy.tracing == tracing


def test_an_explicit_service_name_wins_and_no_tracing_compiles_to_none() -> None:
    doc = json.loads(compile_snapshot(from_dict(config({"serviceName": "front"})), version="v"))
    assert_valid_snapshot(doc)
    assert doc["tracing"] == {"serviceName": "front"}
    plain = config({})
    del plain["proxy"]["tracing"]
    assert "tracing" not in json.loads(compile_snapshot(from_dict(plain), version="v"))


@pytest.mark.parametrize(
    ("tracing", "field", "expected"),
    [
        ({"samplingPercent": 101}, "proxy.tracing.samplingPercent", "0..100"),
        ({"samplingPercent": True}, "proxy.tracing.samplingPercent", "0..100"),
        ({"otlpEndpoint": "ftp://c:4318"}, "proxy.tracing.otlpEndpoint", "https://"),
        ({"otlpEndpoint": "http://c:4318", "otlpTls": {}}, "proxy.tracing.otlpTls", "https://"),
        ({"otlpTls": {"certificate": {"certificateChain": "c.pem"}}},
         "proxy.tracing.otlpTls.certificate.privateKey", "required"),
        ({"propagation": "jaeger"}, "proxy.tracing.propagation", "w3c, b3, b3multi, xray"),
        ({"maxQueueSpans": 0}, "proxy.tracing.maxQueueSpans", "1.."),
        ({"sampling": 5}, "proxy.tracing.sampling", "unknown field"),
    ],
)
def test_bad_tracing_is_refused_with_its_path(tracing: dict[str, Any], field: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(config(tracing))
    problems = [p for p in info.value.problems if p.field == field]
    assert problems and expected in problems[0].message, info.value


def with_mesh(tracing: Any, mesh_spec: dict[str, Any]) -> dict[str, Any]:
    doc = config(tracing)
    doc["resources"].insert(0, {"kind": "Mesh", "name": "m", "spec": mesh_spec})
    return doc


def test_the_mesh_chooses_propagation_and_a_proxy_may_override_it() -> None:
    mesh = {"tracing": {"propagation": "b3"}}
    doc = json.loads(compile_snapshot(from_dict(with_mesh({"samplingPercent": 5}, mesh)), version="v"))
    assert_valid_snapshot(doc)
    assert doc["tracing"] == {"serviceName": "edge", "samplingPercent": 5, "propagation": "b3"}
    # The proxy's own setting wins over the mesh's.
    own = from_dict(with_mesh({"propagation": "xray"}, mesh))
    assert json.loads(compile_snapshot(own, version="v"))["tracing"]["propagation"] == "xray"
    # The Mesh's choice does not turn tracing on by itself.
    plain = with_mesh({}, mesh)
    del plain["proxy"]["tracing"]
    assert "tracing" not in json.loads(compile_snapshot(from_dict(plain), version="v"))
    # Round trip keeps it on the Mesh.
    assert from_dict(own.to_native()).get("Mesh", "m").spec == mesh


def test_a_bad_mesh_propagation_is_refused_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(with_mesh({}, {"tracing": {"propagation": "jaeger"}}))
    messages = {p.field: p.message for p in info.value.problems}
    assert any(f.endswith("tracing.propagation") for f in messages), messages
    assert "w3c, b3, b3multi, xray" in next(
        m for f, m in messages.items() if f.endswith("tracing.propagation")), messages
