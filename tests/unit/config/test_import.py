"""Importers: AWS CLI/API JSON, Kubernetes CRDs (v1beta2, legacy v1beta1) and CloudFormation."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from meshplane.config import Resource, from_dict, import_resources, to_native, validate_resources
from meshplane.config.loaders import import_text
from meshplane.config.loaders.cfn import camel
from meshplane.errors import ConfigError


def kinds(resources: list[Resource]) -> list[tuple[str, str, str | None]]:
    return [(r.kind, r.name, r.parent) for r in resources]


# --- AWS CLI / API JSON ------------------------------------------------------------------------


def test_describe_envelope_create_input_and_list(tmp_path: Path) -> None:
    items = [
        {
            "virtualNode": {
                "meshName": "m",
                "virtualNodeName": "n1",
                "metadata": {"version": 1},
                "status": {"status": "ACTIVE"},
                "spec": {
                    "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                    "serviceDiscovery": {"dns": {"hostname": "n1.local"}},
                },
            }
        },
        {
            "meshName": "m",
            "virtualRouterName": "r",
            "routeName": "rt",
            "spec": {
                "httpRoute": {
                    "match": {"prefix": "/"},
                    "action": {"weightedTargets": [{"virtualNode": "n1", "weight": 1}]},
                }
            },
        },
        {
            "virtualRouterName": "r",
            "spec": {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]},
        },
        {"gatewayRoute": {"gatewayRouteName": "g", "virtualGatewayName": "gw", "spec": {}}},
        {"meshName": "m", "spec": {"egressFilter": {"type": "ALLOW_ALL"}}},
    ]
    path = tmp_path / "all.json"
    path.write_text(json.dumps(items))
    assert kinds(import_resources(path)) == [
        ("VirtualNode", "n1", None),
        ("Route", "rt", "r"),
        ("VirtualRouter", "r", None),
        ("GatewayRoute", "g", "gw"),
        ("Mesh", "m", None),
    ]


@pytest.mark.parametrize(
    ("filename", "spec", "kind"),
    [
        (
            "colorgateway-vg.json",
            {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]},
            "VirtualGateway",
        ),
        (
            "colorteller-vr.json",
            {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]},
            "VirtualRouter",
        ),
        (
            "x.json",
            {
                "listeners": [
                    {"portMapping": {"port": 80, "protocol": "http"}, "timeout": {"http": {}}}
                ]
            },
            "VirtualNode",
        ),
        (
            "colorgateway-vn.json",
            {"serviceDiscovery": {"dns": {"hostname": "a"}}, "backends": []},
            "VirtualNode",
        ),
        (
            "colorteller-vs.json",
            {"provider": {"virtualNode": {"virtualNodeName": "n"}}},
            "VirtualService",
        ),
        ("route-red.json", {"http2Route": {"action": {"weightedTargets": []}}}, "Route"),
        ("colorgateway-route-1.json", {"httpRoute": {"action": {"target": {}}}}, "GatewayRoute"),
    ],
)
def test_bare_spec_kind_from_shape_then_file_name(
    filename: str, spec: dict[str, Any], kind: str
) -> None:
    (resource,) = import_text(json.dumps({"spec": spec}), f"mesh/{filename}")
    assert (resource.kind, resource.name) == (kind, filename.removesuffix(".json"))


def test_aws_shape_problems() -> None:
    with pytest.raises(ConfigError) as info:
        import_text(json.dumps([{"virtualNodeName": "n", "spce": {}}, {"what": 1}]), "x.json")
    text = str(info.value)
    assert 'x.json: VirtualNode "n": [0].spce: unknown field (did you mean "spec"?)' in text
    assert "x.json: [1]: cannot tell which App Mesh resource" in text


# --- Kubernetes --------------------------------------------------------------------------------

K8S = textwrap.dedent("""\
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop, labels: {mesh: m, gateway: edge}}
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: Mesh
    metadata: {name: m}
    spec: {namespaceSelector: {matchLabels: {mesh: m}}, egressFilter: {type: DROP_ALL}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: shop}
    spec: {replicas: 1}
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualNode
    metadata: {name: web, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      listeners:
        - portMapping: {port: 8080, protocol: http}
          tls: {mode: STRICT, certificate: {acm: {certificateARN: "arn:aws:acm:x"}}}
      serviceDiscovery: {dns: {hostName: web.shop.svc.cluster.local}}
      backends:
        - virtualService: {virtualServiceRef: {name: color}}
        - virtualService: {virtualServiceARN: "arn:aws:appmesh:us-east-1:1:mesh/m/virtualService/ext.example.com"}
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualNode
    metadata: {name: blue, namespace: shop}
    spec:
      awsName: blue-node
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: blue.shop.svc.cluster.local}}
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualService
    metadata: {name: color, namespace: shop}
    spec:
      provider: {virtualRouter: {virtualRouterRef: {name: color}}}
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualRouter
    metadata: {name: color, namespace: shop}
    spec:
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      routes:
        - name: blue
          priority: 1
          httpRoute:
            match: {prefix: /}
            action:
              weightedTargets:
                - {virtualNodeRef: {name: blue}, weight: 1}
                - {virtualNodeRef: {name: web, namespace: shop}, weight: 1}
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualGateway
    metadata: {name: edge, namespace: shop}
    spec:
      namespaceSelector: {matchLabels: {gateway: edge}}
      podSelector: {matchLabels: {app: edge}}
      listeners: [{portMapping: {port: 8088, protocol: http}}]
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualGateway
    metadata: {name: other, namespace: shop}
    spec:
      namespaceSelector: {matchLabels: {gateway: other}}
      listeners: [{portMapping: {port: 8089, protocol: http}}]
    ---
    apiVersion: appmesh.k8s.aws/v1beta2
    kind: GatewayRoute
    metadata: {name: to-color, namespace: shop}
    spec:
      httpRoute:
        match: {prefix: /color}
        action: {target: {virtualService: {virtualServiceRef: {name: color}}}}
    """)


def test_k8s_names_refs_routes_and_renames() -> None:
    resources = import_text(K8S, "app.yaml")
    assert kinds(resources) == [
        ("Mesh", "m", None),
        ("VirtualNode", "web_shop", None),
        ("VirtualNode", "blue-node", None),
        ("VirtualService", "color.shop", None),
        ("VirtualRouter", "color_shop", None),
        ("Route", "blue", "color_shop"),
        ("VirtualGateway", "edge_shop", None),
        ("VirtualGateway", "other_shop", None),
        (
            "GatewayRoute",
            "to-color_shop",
            "edge_shop",
        ),  # the gateway whose namespaceSelector matches
    ]
    by_name = {r.name: r for r in resources}
    web = by_name["web_shop"].spec
    assert "podSelector" not in web
    assert web["serviceDiscovery"] == {"dns": {"hostname": "web.shop.svc.cluster.local"}}
    assert web["listeners"][0]["tls"]["certificate"] == {"acm": {"certificateArn": "arn:aws:acm:x"}}
    assert [b["virtualService"]["virtualServiceName"] for b in web["backends"]] == [
        "color.shop",
        "ext.example.com",
    ]
    assert by_name["color.shop"].spec == {
        "provider": {"virtualRouter": {"virtualRouterName": "color_shop"}}
    }
    targets = by_name["blue"].spec["httpRoute"]["action"]["weightedTargets"]
    assert targets == [
        {"virtualNode": "blue-node", "weight": 1},
        {"virtualNode": "web_shop", "weight": 1},
    ]
    assert by_name["m"].spec == {"egressFilter": {"type": "DROP_ALL"}}
    problems = validate_resources(resources, "app.yaml")
    assert problems == []
    # and the import wraps into a loadable file
    from_dict(to_native(resources, "m", gateway="edge_shop"))


def test_k8s_legacy_v1beta1() -> None:
    text = textwrap.dedent("""\
        apiVersion: appmesh.k8s.aws/v1beta1
        kind: VirtualNode
        metadata: {name: blue, namespace: ns}
        spec:
          meshName: m
          listeners: [{portMapping: {port: 8080, protocol: http}}]
          serviceDiscovery: {cloudMap: {namespaceName: ns.local, serviceName: blue}}
        ---
        apiVersion: appmesh.k8s.aws/v1beta1
        kind: VirtualService
        metadata: {name: color.ns.svc.cluster.local, namespace: ns}
        spec:
          meshName: m
          virtualRouter: {name: color-router, listeners: [{portMapping: {port: 8080, protocol: http}}]}
          routes:
            - name: r
              http:
                match: {prefix: /}
                action: {weightedTargets: [{virtualNodeName: blue, weight: 1}]}
        """)
    resources = import_text(text, "legacy.yaml")
    assert kinds(resources) == [
        ("VirtualNode", "blue-ns", None),
        ("VirtualService", "color.ns.svc.cluster.local", None),
        ("VirtualRouter", "color-router-ns", None),
        ("Route", "r-ns", "color-router-ns"),
    ]
    assert resources[0].spec["serviceDiscovery"] == {
        "awsCloudMap": {"namespaceName": "ns.local", "serviceName": "blue"}
    }
    assert resources[3].spec["httpRoute"]["action"]["weightedTargets"] == [
        {"virtualNode": "blue-ns", "weight": 1}
    ]
    assert validate_resources(resources, "legacy.yaml") == []


# --- CloudFormation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("AWSCloudMap", "awsCloudMap"),
        ("TLS", "tls"),
        ("HTTP2", "http2"),
        ("HttpRoute", "httpRoute"),
        ("Port", "port"),
        ("IpPreference", "ipPreference"),
        ("GRPCRetryEvents", "grpcRetryEvents"),
        ("DNS", "dns"),
        ("ACM", "acm"),
        ("maxRetries", "maxRetries"),
    ],
)
def test_camel_case(key: str, expected: str) -> None:
    assert camel(key) == expected


CFN = textwrap.dedent("""\
    AWSTemplateFormatVersion: '2010-09-09'
    Parameters:
      ProjectName: {Type: String}
      Port: {Type: Number, Default: "8080"}
      Mode: {Type: String, AllowedValues: [mtls, none]}
    Conditions:
      Tls: !Equals [!Ref Mode, mtls]
      NoTls: !Not [!Condition Tls]
    Resources:
      Mesh:
        Type: AWS::AppMesh::Mesh
        Properties: {MeshName: !Ref ProjectName}
      Cluster:
        Type: AWS::ECS::Cluster
        Properties: {ClusterName: !Ref ProjectName}
      ColorNode:
        Type: AWS::AppMesh::VirtualNode
        Properties:
          MeshName: !GetAtt Mesh.MeshName
          VirtualNodeName: !Sub '${ProjectName}-color'
          Spec:
            Listeners:
              - PortMapping: {Port: !Ref Port, Protocol: http}
                TLS: !If
                  - Tls
                  - Mode: STRICT
                    Certificate: {ACM: {CertificateArn: !ImportValue cert-arn}}
                  - !Ref AWS::NoValue
                ConnectionPool: {HTTP: {MaxConnections: "10"}}
            ServiceDiscovery:
              AWSCloudMap:
                NamespaceName: !Sub '${ProjectName}.local'
                ServiceName: color
                Attributes: [{Key: ECS_TASK_DEFINITION_FAMILY, Value: !Join ['-', [!Ref ProjectName, color]]}]
      ColorService:
        Type: AWS::AppMesh::VirtualService
        Properties:
          MeshName: !GetAtt Mesh.MeshName
          VirtualServiceName: !Sub 'color.${ProjectName}.local'
          Spec: {Provider: {VirtualNode: {VirtualNodeName: !GetAtt ColorNode.VirtualNodeName}}}
      Route:
        Type: AWS::AppMesh::Route
        Properties:
          MeshName: !GetAtt Mesh.MeshName
          VirtualRouterName: router
          RouteName: !Sub '${AWS::StackName}-route'
          Spec:
            Priority: 1
            HttpRoute:
              Match: {Prefix: /}
              Action: {WeightedTargets: [{VirtualNode: !GetAtt ColorNode.VirtualNodeName, Weight: 1}]}
              RetryPolicy: {MaxRetries: 2, PerRetryTimeout: {Unit: s, Value: 1}, HttpRetryEvents: [server-error]}
    """)


def test_cloudformation_yaml() -> None:
    resources = import_text(CFN, "stack.yaml")
    assert kinds(resources) == [
        ("Mesh", "ProjectName", None),  # no Default: the parameter's name stands in
        ("VirtualNode", "ProjectName-color", None),
        ("VirtualService", "color.ProjectName.local", None),
        ("Route", "stack-route", "router"),
    ]
    node = resources[1].spec
    assert node["listeners"][0] == {  # Mode: first AllowedValue (mtls) => Tls holds
        "portMapping": {"port": 8080, "protocol": "http"},
        "tls": {"mode": "STRICT", "certificate": {"acm": {"certificateArn": "imported:cert-arn"}}},
        "connectionPool": {"http": {"maxConnections": 10}},
    }
    assert node["serviceDiscovery"]["awsCloudMap"]["attributes"] == [
        {"key": "ECS_TASK_DEFINITION_FAMILY", "value": "ProjectName-color"}
    ]
    assert resources[2].spec == {
        "provider": {"virtualNode": {"virtualNodeName": "ProjectName-color"}}
    }
    assert resources[3].spec["httpRoute"]["retryPolicy"]["perRetryTimeout"] == {
        "unit": "s",
        "value": 1,
    }


def test_cloudformation_json_and_no_value() -> None:
    template = {
        "Parameters": {"Flag": {"Type": "String", "Default": "off"}},
        "Conditions": {"On": {"Fn::Equals": [{"Ref": "Flag"}, "on"]}},
        "Resources": {
            "Gw": {
                "Type": "AWS::AppMesh::VirtualGateway",
                "Properties": {
                    "MeshName": "m",
                    "VirtualGatewayName": "gw",
                    "Spec": {
                        "Listeners": [
                            {
                                "PortMapping": {"Port": 80, "Protocol": "http"},
                                "TLS": {
                                    "Fn::If": ["On", {"Mode": "STRICT"}, {"Ref": "AWS::NoValue"}]
                                },
                            }
                        ]
                    },
                },
            }
        },
    }
    (gw,) = import_text(json.dumps(template), "stack.json")
    assert gw.spec == {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}
