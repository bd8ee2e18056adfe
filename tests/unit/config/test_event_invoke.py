"""A Function's `eventInvokeConfig` (config.event_invoke): checked with the Function, each
problem naming its field; read into `EventInvokeConfig`."""

from __future__ import annotations

import copy
from typing import Any

from meshplane.config import from_dict
from meshplane.config.event_invoke import Destination, EventInvokeConfig
from meshplane.policy.async_retry import AsyncRetryPolicy

from .builders import gateway_doc, problems_of


def fn_doc(event_invoke: Any, *, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(gateway_doc())
    doc["resources"].append({"kind": "Function", "name": "orders", "spec": {
        "handler": "app.handler", "code": {"path": "./code"}, "eventInvokeConfig": event_invoke}})
    doc["resources"] += extra or []
    return doc


def config_of(doc: dict[str, Any]) -> EventInvokeConfig:
    cfg = from_dict(doc, "/srv/mesh/mesh.yaml")
    spec = cfg.get("Function", "orders").spec.get("eventInvokeConfig")
    return EventInvokeConfig.from_spec(spec, "/srv/mesh")


def test_defaults_are_lambdas() -> None:
    c = EventInvokeConfig.from_spec(None)
    assert c.maximum_retry_attempts == 2 and c.maximum_event_age_s == 21_600
    assert c.retry_delays_s == (60.0, 120.0) and c.throttle_backoff_s == (1.0, 300.0)
    assert c.on_failure is None and c.on_success is None
    p = AsyncRetryPolicy()
    assert (p.retry_delay(1), p.retry_delay(2)) == (60.0, 120.0)


def test_a_function_with_destinations_and_delays_loads() -> None:
    audit = {"kind": "Function", "name": "audit", "spec": {"handler": "a.h", "code": "./a"}}
    c = config_of(fn_doc({
        "maximumRetryAttempts": 1, "maximumEventAgeInSeconds": 120,
        "retryDelaysSeconds": [0.5], "throttleBackoffSeconds": [0.1, 0.4],
        "destinationConfig": {"onFailure": {"directory": "failed"},
                              "onSuccess": {"function": "audit:live"}},
    }, extra=[audit]))
    assert c.maximum_retry_attempts == 1 and c.maximum_event_age_s == 120
    assert c.on_failure == Destination("directory", "/srv/mesh/failed")
    assert c.on_success == Destination("function", "audit:live")
    p = AsyncRetryPolicy(c.maximum_retry_attempts, c.maximum_event_age_s, c.retry_delays_s,
                         c.throttle_backoff_s)
    assert p.retry_delay(1) == p.retry_delay(5) == 0.5
    assert [p.throttle_delay(n) for n in range(4)] == [0.1, 0.2, 0.4, 0.4]


def test_a_bad_block_names_every_field() -> None:
    problems = problems_of(fn_doc({
        "maximumRetryAttempts": 3, "maximumEventAgeInSeconds": 10, "retryDelaysSeconds": [],
        "throttleBackoffSeconds": [5, 1], "retries": 1,
        "destinationConfig": {"onFailure": {"queue": "x"}, "onError": {},
                              "onSuccess": {"function": "ghost"}},
    }))
    fields = {p.field for p in problems if p.resource == 'Function "orders"'}
    assert {f"spec.eventInvokeConfig.{f}" for f in [
        "maximumRetryAttempts", "maximumEventAgeInSeconds", "retryDelaysSeconds", "retries",
        "destinationConfig.onFailure.queue", "destinationConfig.onError"]} <= fields
    assert all(p.file == "mesh.yaml" for p in problems)


def test_semantic_checks_backoff_order_and_destination_function() -> None:
    problems = problems_of(fn_doc({"throttleBackoffSeconds": [5, 1],
                                   "destinationConfig": {"onSuccess": {"function": "ghost:live"},
                                                         "onFailure": {"function": "a:b:c"}}}))
    by_field = {p.field: p.message for p in problems}
    assert "INITIAL <= MAX" in by_field["spec.eventInvokeConfig.throttleBackoffSeconds"]
    assert "ghost" in by_field["spec.eventInvokeConfig.destinationConfig.onSuccess.function"]
    assert "NAME:QUALIFIER" in by_field["spec.eventInvokeConfig.destinationConfig.onFailure.function"]


def test_proxy_invoke_api_address() -> None:
    doc = copy.deepcopy(gateway_doc())
    doc["proxy"]["invokeApi"] = "127.0.0.1:0"
    cfg = from_dict(doc, "mesh.yaml")
    assert cfg.proxy.invoke_api == "127.0.0.1:0"
    assert cfg.proxy.to_native()["invokeApi"] == "127.0.0.1:0"
    doc["proxy"]["invokeApi"] = "lambda.local:80"
    [problem] = problems_of(doc)
    assert problem.field == "proxy.invokeApi"
