"""Compliance policies on the examples and on deliberately non-compliant configs: the built-in
library, YAML rules, Python functions, policy-file errors, SARIF, and `meshplane validate`'s
exit codes (0 OK, 1 invalid, 3 non-compliant). No sockets, no trio, no core."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from meshplane.cli import main
from meshplane.compliance import BUILTINS, check_document, load_policies, to_sarif
from meshplane.config import load_file
from meshplane.errors import ConfigError
from meshplane.lifecycle.document import document_of

ROOT = Path(__file__).parents[3]
EXAMPLES = ROOT / "examples"


def doc_of(path: Path) -> dict[str, Any]:
    config = load_file(path)
    return document_of(config.mesh, config.resources)


def policies(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    return path


def found(tmp_path: Path, text: str, doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(v.policy, v.resource, v.field)
            for v in check_document(doc, load_policies(str(policies(tmp_path, text))))}


def test_the_example_policies_pass_on_the_examples() -> None:
    rules = load_policies(str(EXAMPLES / "policies" / "policies.yaml"))
    assert len(rules) == 4
    for example in ("gateway.yaml", "sidecar.yaml"):
        assert check_document(doc_of(EXAMPLES / example), rules) == []


def test_every_builtin_names_policy_resource_and_field(tmp_path: Path) -> None:
    text = "policies:\n" + "".join(f"  - use: {name}\n" for name in BUILTINS)
    text += "  - use: canary-weight\n    name: tight-canary\n    with: {nodes: checkout-v2, maxPercent: 5}\n"
    got = found(tmp_path, text, doc_of(EXAMPLES / "gateway.yaml"))
    assert ("listener-tls-strict", 'VirtualGateway "edge"', "spec.listeners[0].tls.mode") in got
    assert ("route-timeout", 'Route "default" (VirtualRouter "checkout-router")',
            "spec.httpRoute.timeout.perRequest") in got
    assert ("node-health-checks", 'VirtualNode "catalog"', "spec.listeners[0].healthCheck") in got
    assert ("access-logs", 'VirtualGateway "edge"', "spec.logging.accessLog.file.path") in got
    assert ("tight-canary", 'Route "beta-canary" (VirtualRouter "checkout-router")',
            "spec.httpRoute.action.weightedTargets[1].weight") in got
    # checkout-v1 has a health check, beta-canary a bounded, timed retry policy, and the
    # default route none (nothing to bound): none of those is reported.
    assert not any(r == 'VirtualNode "checkout-v1"' and p == "node-health-checks" for p, r, _ in got)
    assert not any(p == "retries-bounded" for p, _, _ in got)
    assert not any(p == "canary-weight" for p, _, _ in got)  # no node is named *canary*


def test_retries_bounded_and_canary_by_attribute(tmp_path: Path) -> None:
    doc = {"mesh": "m", "resources": [
        {"kind": "Route", "name": "r", "virtualRouterName": "vr", "spec": {"httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "a", "weight": 70},
                                           {"virtualNode": "b", "weight": 30}]},
            "retryPolicy": {"maxRetries": 10}}}},
        {"kind": "VirtualNode", "name": "b", "spec": {"serviceDiscovery": {"awsCloudMap": {
            "namespaceName": "ns", "serviceName": "s",
            "attributes": [{"key": "canary", "value": "true"}]}}}},
    ]}
    text = "policies:\n  - use: retries-bounded\n  - use: canary-weight\n    with: {maxPercent: 25}\n"
    route = 'Route "r" (VirtualRouter "vr")'
    assert found(tmp_path, text, doc) == {
        ("retries-bounded", route, "spec.httpRoute.retryPolicy.maxRetries"),
        ("retries-bounded", route, "spec.httpRoute.retryPolicy.perRetryTimeout"),
        ("canary-weight", route, "spec.httpRoute.action.weightedTargets[1].weight"),
    }


def test_rules_and_python_functions(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "def only_v1(doc):\n"
        "    for e in doc['resources']:\n"
        "        if e['kind'] == 'VirtualNode' and not e['name'].endswith('v1'):\n"
        "            yield (f'VirtualNode \"{e[\"name\"]}\"', 'name', 'only v1 nodes')\n")
    text = ("policies:\n"
            "  - {name: small-pools, kinds: [VirtualNode], max: 50,\n"
            "     path: 'spec.listeners[*].connectionPool?.http?.maxConnections'}\n"
            "  - {name: lb, kinds: [VirtualNode], path: spec.loadBalancing.policy, in: [round_robin]}\n"
            "  - {name: v1-only, python: 'mine.py:only_v1'}\n")
    got = found(tmp_path, text, doc_of(EXAMPLES / "gateway.yaml"))
    assert got == {
        ("small-pools", 'VirtualNode "checkout-v1"', "spec.listeners[0].connectionPool.http.maxConnections"),
        ("lb", 'VirtualNode "checkout-v1"', "spec.loadBalancing.policy"),
        ("lb", 'VirtualNode "checkout-v2"', "spec.loadBalancing.policy"),
        ("v1-only", 'VirtualNode "catalog"', "name"),
        ("v1-only", 'VirtualNode "checkout-v2"', "name"),
    }


def test_a_bad_policy_file_names_file_and_entry(tmp_path: Path) -> None:
    path = policies(tmp_path, "policies:\n  - use: no-such-thing\n  - {name: x}\n"
                              "  - {python: 'absent.py:f'}\n")
    with pytest.raises(ConfigError) as caught:
        load_policies(str(path))
    text = str(caught.value)
    assert f"{path}: policies[0].use: unknown built-in policy 'no-such-thing'" in text
    assert "policies[1]" in text and "policies[2]" in text and "absent.py" in text


def test_sarif_names_rule_file_and_location(tmp_path: Path) -> None:
    rules = load_policies(str(policies(tmp_path, "policies:\n  - use: access-logs\n")))
    doc = doc_of(EXAMPLES / "gateway.yaml")
    violations = check_document(doc, rules, {'VirtualGateway "edge"': "examples/gateway.yaml"})
    sarif = to_sarif(violations, rules)
    run = sarif["runs"][0]
    assert sarif["version"] == "2.1.0" and [r["id"] for r in run["tool"]["driver"]["rules"]] == ["access-logs"]
    edge = next(r for r in run["results"] if "edge" in r["message"]["text"])
    assert edge["ruleId"] == "access-logs"
    assert edge["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "examples/gateway.yaml"
    assert edge["locations"][0]["logicalLocations"][0]["name"] == "spec.logging.accessLog.file.path"


def test_validate_exit_codes_ok_invalid_noncompliant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    strict = policies(tmp_path, "policies:\n  - use: listener-tls-strict\n")
    gateway = str(EXAMPLES / "gateway.yaml")
    assert main(["validate", gateway, "--policy", str(EXAMPLES / "policies" / "policies.yaml")]) == 0
    assert capsys.readouterr().out.startswith("OK ")
    assert main(["validate", gateway, "--policy", str(strict), "--format", "json"]) == 3
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["compliant"] is False
    assert {"policy": "listener-tls-strict", "resource": 'VirtualGateway "edge"',
            "field": "spec.listeners[0].tls.mode", "message": "is missing, expected 'STRICT'",
            "file": gateway} in report["violations"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("mesh: m\nproxy: {gateway: nope}\nresources: []\n")
    assert main(["validate", str(bad), "--policy", str(strict)]) == 1
    capsys.readouterr()
    assert main(["validate", str(bad), gateway, "--policy", str(strict), "--format", "json"]) == 1
    both = json.loads(capsys.readouterr().out)  # stdout is one JSON document
    assert both["valid"] is False and both["compliant"] is False
    assert [(p["file"], p["field"]) for p in both["problems"]] == [(str(bad), "proxy.gateway")]
    assert main(["validate", str(bad), "--format", "sarif"]) == 1
    (result,) = json.loads(capsys.readouterr().out)["runs"][0]["results"]
    assert result["ruleId"] == "meshplane-invalid" and "proxy.gateway" in result["message"]["text"]


def test_compliance_imports_neither_trio_nor_the_core() -> None:
    code = ("import sys, meshplane.compliance, meshplane.lifecycle, meshplane.lifecycle.document, "
            "meshplane.lifecycle.rollout_plan\n"
            "print(','.join(m for m in ('trio', 'meshplane._core') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
