"""The `resilience` extension and the App Mesh resilience fields: compilation into cluster
fields, gateway (destination-side) connection limits, validation naming file, resource and
field, and the targets the control layer drives (`resilience_targets`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from meshplane.config import compile_snapshot, from_dict, resilience_targets
from meshplane.config.specs import RESILIENCE
from meshplane.policy import HealthCheckPolicy, OutlierPolicy
from meshplane.policy._health_policy import _EXTENSION_KEYS as HC_EXTENSION_KEYS
from meshplane.policy._outlier_policy import _EXTENSION_KEYS as OD_EXTENSION_KEYS

from .builders import find, gateway_doc, problems_of

HC = {"protocol": "http", "path": "/ping", "intervalMillis": 5000, "timeoutMillis": 2000,
      "healthyThreshold": 2, "unhealthyThreshold": 3, "port": 8080}
OD = {"maxServerErrors": 5, "interval": {"unit": "s", "value": 10},
      "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 50}
V1 = 'VirtualNode "v1"'


def v1_listener(doc: dict[str, Any]) -> dict[str, Any]:
    return find(doc, "VirtualNode", "v1")["spec"]["listeners"][0]  # type: ignore[no-any-return]


def compiled_cluster(doc: dict[str, Any], name: str = "v1") -> dict[str, Any]:
    snap = json.loads(compile_snapshot(from_dict(doc), version="v"))
    return next(c for c in snap["clusters"] if c["name"] == name)  # type: ignore[no-any-return]


def test_extension_keys_match_the_policies() -> None:
    hc_keys = set(RESILIENCE.fields["healthCheck"].fields)  # type: ignore[attr-defined]
    assert hc_keys - {"intervalMillis", "timeoutMillis", "port", "host"} == set(HC_EXTENSION_KEYS)
    assert set(RESILIENCE.fields["outlierDetection"].fields) == set(OD_EXTENSION_KEYS)  # type: ignore[attr-defined]


def test_outlier_thresholds_budget_and_retry_breaker() -> None:
    doc = gateway_doc()
    lst = v1_listener(doc)
    lst["outlierDetection"] = OD
    lst["connectionPool"] = {"http": {"maxConnections": 10}}
    lst["resilience"] = {
        "outlierDetection": {"enforcingConsecutiveGatewayFailure": 100,
                             "splitExternalLocalOriginErrors": True,
                             "consecutiveLocalOriginFailure": 7},
        "retryBudget": {"budgetPercent": 25},
        "circuitBreakers": {"maxRetries": 9},
    }
    c = compiled_cluster(doc)
    assert c["outlierDetection"] == {"consecutive5xx": 5, "consecutiveGatewayFailure": 5,
                                     "splitExternalLocalOriginErrors": True,
                                     "consecutiveLocalOriginFailure": 7}
    assert c["retryBudget"] == {"budgetPercent": 25.0, "minRetryConcurrency": 3}
    assert c["circuitBreakers"]["maxConnections"] == 10 and c["circuitBreakers"]["maxRetries"] == 9


def test_gateway_connection_pool_caps_the_clusters_it_routes_to() -> None:
    doc = gateway_doc()
    gw = find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]
    gw["connectionPool"] = {"http": {"maxConnections": 50, "maxPendingRequests": 20}}
    v1_listener(doc)["connectionPool"] = {"http": {"maxConnections": 10}}
    limits = compiled_cluster(doc)["circuitBreakers"]
    assert limits["maxConnections"] == 10  # the node's own, lower limit wins
    assert limits["maxPendingRequests"] == 20  # the gateway's
    assert limits["maxRequests"] == 2147483647


def test_targets_carry_policy_inputs_and_endpoints() -> None:
    doc = gateway_doc()
    lst = v1_listener(doc)
    lst["healthCheck"] = HC
    lst["outlierDetection"] = OD
    lst["resilience"] = {"healthCheck": {"intervalMillis": 250, "host": "v1.apps.local",
                                         "intervalJitterPercent": 0},
                         "outlierDetection": {"maxEjectionDuration": {"unit": "s", "value": 60}}}
    [target] = resilience_targets(from_dict(doc))
    assert target.cluster == "v1" and target.endpoints == ("127.0.0.1:9001",)
    assert target.host == "v1.apps.local" and target.protocol == "http"
    hc = HealthCheckPolicy.from_appmesh(target.health_check or {}, target.health_extension)
    assert (hc.interval, hc.timeout, hc.port, hc.interval_jitter_percent) == (0.25, 2.0, None, 0)
    od = OutlierPolicy.from_appmesh(target.outlier_detection or {}, target.outlier_extension)
    assert (od.consecutive_5xx, od.max_ejection_time, od.max_ejection_percent) == (5, 60.0, 50)


def test_no_targets_without_health_check_or_outlier_detection() -> None:
    assert resilience_targets(from_dict(gateway_doc())) == []


@pytest.mark.parametrize(
    ("resilience", "listener_extra", "field", "words"),
    [
        ({"healthCheck": {"intervalMillis": 100}}, {}, "resilience.healthCheck",
         ["only with the listener's healthCheck"]),
        ({"outlierDetection": {"alwaysEjectOneHost": False}}, {}, "resilience.outlierDetection",
         ["only with the listener's outlierDetection"]),
        ({"healthCheck": {"intervalMillis": 0}}, {"healthCheck": HC},
         "resilience.healthCheck.intervalMillis", ["1..300000"]),
        ({"healthCheck": {"expectedStatuses": [{"start": 300, "end": 200}]}}, {"healthCheck": HC},
         "resilience.healthCheck.expectedStatuses[0]", ["start < end"]),
        ({"outlierDetection": {"maxEjectionDuration": {"unit": "s", "value": 5}}},
         {"outlierDetection": OD}, "resilience.outlierDetection.maxEjectionDuration",
         ["baseEjectionDuration"]),
        ({"outlierDetection": {"enforcingSucessRate": 1}}, {"outlierDetection": OD},
         "resilience.outlierDetection.enforcingSucessRate", ["enforcingSuccessRate"]),
        ({"retryBudget": {"budgetPercent": 120}}, {}, "resilience.retryBudget.budgetPercent",
         ["0.0..100.0"]),
    ],
)
def test_validation_names_file_resource_and_field(
    resilience: dict[str, Any], listener_extra: dict[str, Any], field: str, words: list[str]
) -> None:
    doc = gateway_doc()
    v1_listener(doc).update(listener_extra, resilience=resilience)
    problems = problems_of(doc)
    path = f"spec.listeners[0].{field}"
    found = [p for p in problems if p.resource == V1 and p.field == path]
    assert found, "\n".join(map(str, problems))
    text = str(found[0])
    assert "mesh.yaml" in text and V1 in text and path in text
    for word in words:
        assert word in found[0].message
