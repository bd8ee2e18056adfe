"""`import_paths`: several files and directories as one mesh, mesh names from the files, CRD
field pruning, v1beta1 routers, BackendGroups; and the validation of imported host names."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from meshplane.config import from_dict, to_native, validate_resources
from meshplane.config.loaders import import_paths, import_text
from meshplane.config.model import Resource
from meshplane.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def kinds(resources: list[Resource]) -> list[tuple[str, str, str | None]]:
    return sorted((r.kind, r.name, r.parent) for r in resources)


NODE_JSON = {
    "meshName": "shop",
    "virtualNodeName": "api-v1",
    "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "api-v1.shop.local"}},
    },
}
SERVICE_JSON = {
    "meshName": "shop",
    "virtualServiceName": "api.shop.local",
    "spec": {"provider": {"virtualRouter": {"virtualRouterName": "api-router"}}},
}
ROUTER_JSON = {
    "meshName": "shop",
    "virtualRouterName": "api-router",
    "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]},
}
ROUTE_JSON = {
    "meshName": "shop",
    "virtualRouterName": "api-router",
    "routeName": "all",
    "spec": {
        "httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "api-v1", "weight": 1}]},
        }
    },
}


def aws_directory(root: Path) -> Path:
    """One resource per file, routes in a sub-directory, plus a README and a non-App Mesh JSON."""
    for name, item in (
        ("api-v1-vn.json", NODE_JSON),
        ("api-vs.json", SERVICE_JSON),
        ("api-vr.json", ROUTER_JSON),
        ("routes/all-route.json", ROUTE_JSON),
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(item))
    (root / "README.md").write_text("# not read\n")
    (root / "package.json").write_text('{"name": "frontend", "version": "1.0.0"}')
    return root


# --- several files as one mesh -----------------------------------------------------------------


def test_a_directory_is_one_mesh_with_references_resolved(tmp_path: Path) -> None:
    found = import_paths([aws_directory(tmp_path / "mesh")])
    assert found.problems == [] and found.warnings == []
    assert kinds(found.resources) == [
        ("Route", "all", "api-router"),
        ("VirtualNode", "api-v1", None),
        ("VirtualRouter", "api-router", None),
        ("VirtualService", "api.shop.local", None),
    ]
    assert found.skipped == [str(tmp_path / "mesh" / "package.json")]  # no App Mesh resource in it
    assert found.mesh_names() == ["shop"]
    assert validate_resources(found.resources, "mesh") == []
    assert dict(zip((r.name for r in found.resources), found.origins, strict=True))[
        "all"
    ] == str(tmp_path / "mesh" / "routes" / "all-route.json")


def test_files_of_different_shapes_join(tmp_path: Path) -> None:
    node = write(tmp_path / "node.json", json.dumps(NODE_JSON))
    crds = write(
        tmp_path / "routing.yaml",
        """\
        apiVersion: appmesh.k8s.aws/v1beta2
        kind: VirtualService
        metadata: {name: api, namespace: shop}
        spec:
          awsName: api.shop.local
          meshRef: {name: shop}
          provider: {virtualNode: {virtualNodeARN: "arn:aws:appmesh:us-east-1:1:mesh/shop/virtualNode/api-v1"}}
        """,
    )
    found = import_paths([node, crds])
    assert found.problems == []
    assert kinds(found.resources) == [
        ("VirtualNode", "api-v1", None),
        ("VirtualService", "api.shop.local", None),
    ]
    assert validate_resources(found.resources, "x") == []


def test_kubernetes_references_resolve_across_files_and_documents(tmp_path: Path) -> None:
    write(
        tmp_path / "k8s" / "nodes.yaml",
        """\
        apiVersion: appmesh.k8s.aws/v1beta2
        kind: VirtualNode
        metadata: {name: api-v1, namespace: shop}
        spec:
          awsName: api-v1-custom
          listeners: [{portMapping: {port: 8080, protocol: http}}]
          serviceDiscovery: {dns: {hostname: api-v1.shop.svc.cluster.local}}
        """,
    )
    write(
        tmp_path / "k8s" / "router.yaml",
        """\
        apiVersion: appmesh.k8s.aws/v1beta2
        kind: VirtualRouter
        metadata: {name: api, namespace: shop}
        spec:
          listeners: [{portMapping: {port: 8080, protocol: http}}]
          routes:
            - name: all
              httpRoute:
                match: {prefix: /}
                action:
                  weightedTargets: [{virtualNodeRef: {name: api-v1}, weight: 1}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: api, namespace: shop}
        """,
    )
    found = import_paths([tmp_path / "k8s"])
    assert found.problems == []
    route = next(r for r in found.resources if r.kind == "Route")
    # The node's awsName lives in another file; the reference still finds it.
    assert route.spec["httpRoute"]["action"]["weightedTargets"] == [
        {"virtualNode": "api-v1-custom", "weight": 1}
    ]


def test_a_duplicate_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "node.json", json.dumps(NODE_JSON))
    second = write(tmp_path / "b" / "node-copy.json", json.dumps(NODE_JSON))
    found = import_paths([tmp_path])
    (problem,) = found.problems
    assert problem.file == str(second)
    assert problem.resource == 'VirtualNode "api-v1"' and problem.field == "name"
    assert str(first) in problem.message and "defined twice" in problem.message


def test_a_file_that_cannot_be_parsed_is_a_problem_and_the_rest_is_still_read(
    tmp_path: Path,
) -> None:
    write(tmp_path / "good.json", json.dumps(NODE_JSON))
    bad = write(tmp_path / "bad.yaml", "a: [1,\n")
    found = import_paths([tmp_path])
    assert [p.file for p in found.problems] == [str(bad)]
    assert [r.name for r in found.resources] == ["api-v1"]


def test_an_empty_directory_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    found = import_paths([tmp_path / "empty"])
    assert [p.file for p in found.problems] == [str(tmp_path / "empty")]
    assert "no file ending in" in found.problems[0].message


# --- mesh names from the files -----------------------------------------------------------------


def test_mesh_names_from_each_shape(tmp_path: Path) -> None:
    aws = write(tmp_path / "node.json", json.dumps(NODE_JSON))
    cfn = write(
        tmp_path / "cfn.yaml",
        """\
        Parameters:
          MeshName: {Type: String, Default: shop}
        Resources:
          Node:
            Type: AWS::AppMesh::VirtualNode
            Properties:
              MeshName: !Ref MeshName
              VirtualNodeName: cfn-node
              Spec: {}
        """,
    )
    k8s = write(
        tmp_path / "k8s.yaml",
        """\
        apiVersion: appmesh.k8s.aws/v1beta2
        kind: VirtualNode
        metadata: {name: k, namespace: ns}
        spec: {meshRef: {name: shop, uid: abc}}
        ---
        apiVersion: appmesh.k8s.aws/v1beta1
        kind: VirtualNode
        metadata: {name: old, namespace: ns}
        spec: {meshName: legacy}
        """,
    )
    found = import_paths([aws, cfn, k8s])
    assert found.problems == []
    assert found.mesh_names() == ["legacy", "shop"]
    places = {where for name, where in found.meshes if name == "legacy"}
    assert places == {f'{k8s}: VirtualNode "old"'}


# --- Kubernetes pruning --------------------------------------------------------------------------

PRUNED = """\
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: api-v1, namespace: shop}
spec:
  listeners:
    - portMapping: {port: 8080, protocol: http}
      healthcheck: {protocol: http}
  serviceDiscovery:
    dns: {hostName: api-v1.shop.svc.cluster.local, ttl: 30}
  backendDefaults:
    clientPolicy:
      tls: {mode: STRICT, validation: {trust: {file: {certificateChain: /ca.pem}}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata: {name: api, namespace: shop}
spec:
  listeners: [{portMapping: {port: 8080, protocol: http}}]
  routes:
    - name: all
      httpRoute:
        match: {prefix: /}
        action: {weightedTargets: [{virtualNodeRef: {name: api-v1}, weight: 1}]}
        retries: 3
"""


def test_unknown_crd_fields_are_dropped_with_one_warning_each(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", PRUNED)
    found = import_paths([path])
    assert found.problems == []
    assert [(w.file, w.resource, w.field) for w in found.warnings] == [
        (str(path), 'VirtualNode "api-v1_shop"', "spec.listeners[0].healthcheck"),
        (str(path), 'VirtualNode "api-v1_shop"', "spec.serviceDiscovery.dns.ttl"),
        (str(path), 'VirtualNode "api-v1_shop"', "spec.backendDefaults.clientPolicy.tls.mode"),
        (str(path), 'Route "all" (VirtualRouter "api_shop")', "spec.routes[0].httpRoute.retries"),
    ]
    assert all("dropped" in w.message and "--strict" in w.message for w in found.warnings)
    node = next(r for r in found.resources if r.kind == "VirtualNode")
    assert node.spec["listeners"] == [{"portMapping": {"port": 8080, "protocol": "http"}}]
    assert node.spec["serviceDiscovery"] == {"dns": {"hostname": "api-v1.shop.svc.cluster.local"}}
    assert validate_resources(found.resources, "m.yaml") == []


def test_strict_keeps_unknown_crd_fields_for_validation_to_refuse(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", PRUNED)
    found = import_paths([path], strict=True)
    assert found.warnings == []
    fields = {p.field for p in validate_resources(found.resources, str(path))}
    assert fields == {
        "spec.listeners[0].healthcheck",
        "spec.serviceDiscovery.dns.ttl",
        "spec.backendDefaults.clientPolicy.tls.mode",
        "spec.httpRoute.retries",
    }


def test_aws_json_is_never_pruned(tmp_path: Path) -> None:
    node = {**NODE_JSON, "spec": {**NODE_JSON["spec"], "backendz": []}}
    found = import_paths([write(tmp_path / "n.json", json.dumps(node))])
    assert found.warnings == []
    (problem,) = validate_resources(found.resources, "n.json")
    assert problem.field == "spec.backendz"


# --- v1beta1 -------------------------------------------------------------------------------------

LEGACY = """\
apiVersion: appmesh.k8s.aws/v1beta1
kind: Mesh
metadata: {name: shop}
spec: {}
---
apiVersion: appmesh.k8s.aws/v1beta1
kind: VirtualNode
metadata: {name: api-v1, namespace: prod}
spec:
  meshName: shop
  listeners: [{portMapping: {port: 9080, protocol: http}}]
  serviceDiscovery: {dns: {hostName: api-v1.prod.svc.cluster.local}}
---
apiVersion: appmesh.k8s.aws/v1beta1
kind: VirtualService
metadata: {name: api.prod.svc.cluster.local, namespace: prod}
spec:
  meshName: shop
  virtualRouter: {name: api-router}
  routes:
    - name: default
      http:
        match: {prefix: /}
        action:
          weightedTargets: [{virtualNodeName: api-v1, weight: 1}]
"""


def test_v1beta1_router_takes_the_listener_of_its_first_target(tmp_path: Path) -> None:
    found = import_paths([write(tmp_path / "legacy.yaml", LEGACY)])
    assert found.problems == [] and found.mesh_names() == ["shop"]
    assert kinds(found.resources) == [
        ("Mesh", "shop", None),
        ("Route", "default-prod", "api-router-prod"),
        ("VirtualNode", "api-v1-prod", None),
        ("VirtualRouter", "api-router-prod", None),
        ("VirtualService", "api.prod.svc.cluster.local", None),
    ]
    router = next(r for r in found.resources if r.kind == "VirtualRouter")
    assert router.spec["listeners"] == [{"portMapping": {"port": 9080, "protocol": "http"}}]
    assert validate_resources(found.resources, "legacy.yaml") == []


def test_v1beta1_router_listeners_given_are_kept(tmp_path: Path) -> None:
    text = LEGACY.replace(
        "virtualRouter: {name: api-router}",
        "virtualRouter: {name: api-router, listeners: [{portMapping: {port: 80, protocol: http}}]}",
    )
    found = import_paths([write(tmp_path / "legacy.yaml", text)])
    router = next(r for r in found.resources if r.kind == "VirtualRouter")
    assert router.spec["listeners"] == [{"portMapping": {"port": 80, "protocol": "http"}}]


def test_v1beta1_router_whose_target_is_in_another_file(tmp_path: Path) -> None:
    node, rest = LEGACY.split("---\n", 1)[1].split("---\n", 1)
    write(tmp_path / "node.yaml", node)
    write(tmp_path / "service.yaml", rest)
    found = import_paths([tmp_path])
    router = next(r for r in found.resources if r.kind == "VirtualRouter")
    assert router.spec["listeners"] == [{"portMapping": {"port": 9080, "protocol": "http"}}]


# --- BackendGroup --------------------------------------------------------------------------------

GROUPS = """\
apiVersion: appmesh.k8s.aws/v1beta2
kind: BackendGroup
metadata: {name: colors, namespace: front}
spec:
  virtualservices:
    - {name: red, namespace: back}
    - {name: blue, namespace: back}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: web, namespace: front}
spec:
  backends: [{virtualService: {virtualServiceRef: {name: red, namespace: back}}}]
  backendGroups:
    - {name: colors}
    - {name: "*", namespace: back}
"""
SERVICES = """\
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata: {name: %s, namespace: back}
spec:
  provider: {virtualNode: {virtualNodeRef: {name: n, namespace: back}}}
"""


def test_backend_groups_expand_into_backends(tmp_path: Path) -> None:
    write(tmp_path / "groups.yaml", GROUPS)
    for name in ("red", "blue", "green"):
        write(tmp_path / f"{name}.yaml", SERVICES % name)
    found = import_paths([tmp_path])
    assert found.problems == [] and found.warnings == []
    web = next(r for r in found.resources if r.name == "web_front")
    names = [b["virtualService"]["virtualServiceName"] for b in web.spec["backends"]]
    # Its own backend first; then group "colors"; then "*": every service of namespace back.
    assert names == ["red.back", "blue.back", "green.back"]
    assert "backendGroups" not in web.spec


def test_an_unknown_backend_group_is_a_problem_with_a_suggestion(tmp_path: Path) -> None:
    text = GROUPS.replace("- {name: colors}", "- {name: colours}")
    path = write(tmp_path / "groups.yaml", text)
    found = import_paths([path])
    (problem,) = found.problems
    assert (problem.file, problem.resource, problem.field) == (
        str(path),
        'VirtualNode "web_front"',
        "spec.backendGroups[0]",
    )
    assert 'no BackendGroup "front/colours"' in problem.message
    assert 'did you mean "front/colors"' in problem.message


def test_an_unknown_app_mesh_kind_is_a_problem_not_silence(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.yaml",
        "apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualThing\nmetadata: {name: t}\nspec: {}\n",
    )
    found = import_paths([path])
    (problem,) = found.problems
    assert problem.resource == 'VirtualThing "t"' and problem.field == "kind"


# --- placeholders in host names ------------------------------------------------------------------


def test_placeholders_in_host_names_are_refused_naming_the_field() -> None:
    text = json.dumps(
        [
            {
                "virtualNodeName": "a",
                "spec": {
                    "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                    "serviceDiscovery": {"dns": {"hostname": "a.${NAMESPACE}.svc.cluster.local"}},
                },
            },
            {
                "virtualNodeName": "b",
                "spec": {
                    "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                    "serviceDiscovery": {
                        "awsCloudMap": {"namespaceName": "$NS", "serviceName": "b"}
                    },
                },
            },
            {
                "virtualNodeName": "c",
                "spec": {
                    "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                    "serviceDiscovery": {"dns": {"hostname": "c.{{ .Values.ns }}.local"}},
                },
            },
            {
                "virtualServiceName": "svc.$DOMAIN",
                "spec": {"provider": {"virtualNode": {"virtualNodeName": "a"}}},
            },
            {
                "virtualNodeName": "d",
                "spec": {
                    "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                    "serviceDiscovery": {"dns": {"hostname": "not a host"}},
                },
            },
        ]
    )
    problems = validate_resources(import_text(text, "p.json"), "p.json")
    got = {(p.resource, p.field): p.message for p in problems}
    assert set(got) == {
        ('VirtualNode "a"', "spec.serviceDiscovery.dns.hostname"),
        ('VirtualNode "b"', "spec.serviceDiscovery.awsCloudMap.namespaceName"),
        ('VirtualNode "c"', "spec.serviceDiscovery.dns.hostname"),
        ('VirtualService "svc.$DOMAIN"', "name"),
        ('VirtualNode "d"', "spec.serviceDiscovery.dns.hostname"),
    }
    assert 'unsubstituted placeholder "${NAMESPACE}"' in got[
        ('VirtualNode "a"', "spec.serviceDiscovery.dns.hostname")
    ]
    assert '"{{ .Values.ns }}"' in got[('VirtualNode "c"', "spec.serviceDiscovery.dns.hostname")]
    assert "expected a DNS host name" in got[('VirtualNode "d"', "spec.serviceDiscovery.dns.hostname")]


def test_placeholder_in_a_gateway_hostname_match() -> None:
    resources = [
        Resource("VirtualGateway", "gw", {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}),
        Resource(
            "GatewayRoute",
            "r",
            {
                "httpRoute": {
                    "match": {"prefix": "/", "hostname": {"suffix": ".${DOMAIN}"}},
                    "action": {"target": {"virtualService": {"virtualServiceName": "s"}}},
                }
            },
            "gw",
        ),
        Resource("VirtualService", "s", {}),
    ]
    (problem,) = validate_resources(resources, "f")
    assert problem.field == "spec.httpRoute.match.hostname.suffix"
    assert "${DOMAIN}" in problem.message


def test_host_names_without_placeholders_still_validate() -> None:
    doc = to_native(
        [
            Resource("VirtualGateway", "gw", {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]}),
            Resource(
                "VirtualNode",
                "n",
                {
                    "listeners": [{"portMapping": {"port": 80, "protocol": "http"}}],
                    "serviceDiscovery": {"dns": {"hostname": "n_1.ns.svc.cluster.local."}},
                },
            ),
        ],
        "m",
        gateway="gw",
    )
    assert from_dict(doc, "f").mesh == "m"


# --- parents given on the command line ------------------------------------------------------------


def test_a_route_without_parent_joins_the_only_router(tmp_path: Path) -> None:
    bare_route = {"spec": ROUTE_JSON["spec"]}
    write(tmp_path / "api-vr.json", json.dumps(ROUTER_JSON))
    write(tmp_path / "all-route.json", json.dumps(bare_route))
    found = import_paths([tmp_path])
    route = next(r for r in found.resources if r.kind == "Route")
    assert (route.name, route.parent) == ("all-route", "api-router")
    (warning,) = found.warnings
    assert warning.file == str(tmp_path / "all-route.json")
    assert warning.field == "virtualRouterName" and '"api-router"' in warning.message


def test_a_route_without_parent_stays_unresolved_among_several_routers(tmp_path: Path) -> None:
    write(tmp_path / "api-vr.json", json.dumps(ROUTER_JSON))
    write(tmp_path / "b-vr.json", json.dumps({**ROUTER_JSON, "virtualRouterName": "b"}))
    write(tmp_path / "all-route.json", json.dumps({"spec": ROUTE_JSON["spec"]}))
    found = import_paths([tmp_path])
    assert found.warnings == []
    route = next(r for r in found.resources if r.kind == "Route")
    assert route.parent is None


# --- ACM ------------------------------------------------------------------------------------------


def test_acm_is_refused_where_served_with_the_way_out() -> None:
    node = Resource(
        "VirtualNode",
        "n",
        {
            "listeners": [
                {
                    "portMapping": {"port": 8443, "protocol": "http"},
                    "tls": {
                        "mode": "STRICT",
                        "certificate": {"acm": {"certificateArn": "arn:aws:acm:us-east-1:1:certificate/x"}},
                    },
                }
            ],
            "serviceDiscovery": {"dns": {"hostname": "n.local"}},
        },
    )
    doc = to_native([node], "m", node="n", app="127.0.0.1:9443")
    try:
        from_dict(doc, "f")
    except ConfigError as exc:
        (problem,) = exc.problems
    else:
        raise AssertionError("ACM was served")
    assert problem.field == "spec.listeners[0].tls.certificate.acm"
    assert "ACM (AWS Certificate Manager) is an AWS service" in problem.message
    assert "PEM" in problem.message and "docs/config.md" in problem.message
