"""Inputs the fuzzers found that made a loader raise something other than ConfigError
(tests/property/test_config_fuzz.py, tests/fuzz/): each is now one clear problem or, where the
shape is merely odd, loads."""

from __future__ import annotations

import pytest
from meshplane.config.loaders import import_text, load_text
from meshplane.errors import ConfigError


@pytest.mark.parametrize("text", ["\x1f", "\x00", "mesh: shop\x07\n"])
def test_control_characters_are_a_yaml_problem(text: str) -> None:
    for loader in (load_text, import_text):
        with pytest.raises(ConfigError) as info:
            loader(text, "ctl.yaml")
        (problem,) = info.value.problems
        assert problem.file == "ctl.yaml" and "special characters are not allowed" in problem.message


K8S_ODD = """\
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: [not, a, mapping]
spec:
  listeners: [{portMapping: {port: 80, protocol: http}}]
  serviceDiscovery: {dns: {hostname: a.local}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: r, labels: 7}
spec:
  routes: [7, {name: x, httpRoute: {match: {prefix: /}, action: {weightedTargets: [{virtualNodeRef: [1], weight: 1}]}}}]
---
apiVersion: appmesh.k8s.aws/v1beta1
kind: VirtualService
metadata: {name: s}
spec: {virtualRouter: 5, routes: [1, {name: r, http: {action: {weightedTargets: [3]}}}]}
"""


def test_kubernetes_objects_with_fields_of_the_wrong_type_load() -> None:
    kinds = sorted(r.kind for r in import_text(K8S_ODD, "odd.yaml"))
    assert kinds == ["Route", "Route", "VirtualNode", "VirtualRouter", "VirtualRouter", "VirtualService"]


def test_a_kubernetes_object_whose_kind_is_not_a_name_is_a_problem() -> None:
    text = "apiVersion: appmesh.k8s.aws/v1beta2\nkind: [VirtualGateway]\nmetadata: {name: g}\n"
    with pytest.raises(ConfigError) as info:
        import_text(text, "odd.yaml")
    (problem,) = info.value.problems
    assert (problem.file, problem.field) == ("odd.yaml", "kind")
    assert "not an App Mesh resource kind" in problem.message


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ("{MeshName: {'Fn::If': just-one}}", "cannot evaluate Fn::If with 'just-one'"),
        ("{MeshName: {'Fn::Select': [a]}}", "cannot evaluate Fn::Select"),
        ("{MeshName: {'Fn::If': [Loop, a, b]}}", "condition 'Loop' depends on itself"),
        ("[1, 2]", "expected an object"),
    ],
)
def test_cloudformation_that_cannot_be_evaluated_is_a_problem_of_its_resource(properties: str, message: str) -> None:
    text = (
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Conditions: {Loop: {'Fn::Not': [{Condition: Loop}]}}\n"
        f"Resources:\n  M:\n    Type: AWS::AppMesh::Mesh\n    Properties: {properties}\n"
        "  X: {Type: [AWS::AppMesh::Mesh]}\n"
    )
    with pytest.raises(ConfigError) as info:
        import_text(text, "cfn.yaml")
    (problem,) = info.value.problems
    assert (problem.file, problem.resource, problem.field) == ("cfn.yaml", "Mesh (logical id M)", "Properties")
    assert message in problem.message
