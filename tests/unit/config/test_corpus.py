"""Conformance with real App Mesh definitions: every file of ../shared/appmesh-corpus/walkthroughs
(aws/aws-app-mesh-examples) imports, its resources pass validation (a file that defines part of
a mesh may only miss resources defined elsewhere), and each self-contained mesh compiles, for
every gateway and every node it defines, into a snapshot the core's schema accepts.

Shell placeholders are filled first, as the walkthroughs' `envsubst` did: a placeholder inside
a string becomes plausible text; an unquoted one becomes a number in a number position and a
string elsewhere. CloudFormation templates are left alone (their `${X}` belong to `!Sub`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from meshplane.config import compile_snapshot, dns_targets, from_dict, to_native, validate_resources
from meshplane.config.checks import UNRESOLVED
from meshplane.config.loaders import import_text
from meshplane.config.tls import NOT_SERVABLE
from meshplane.errors import ConfigError

from .snapshot_contract import assert_valid_snapshot

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO.parent / "shared" / "appmesh-corpus" / "walkthroughs"
pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(),
    reason=f"App Mesh corpus not found at {CORPUS} (expected ../shared/appmesh-corpus beside the repository)",
)

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")
JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|' + PLACEHOLDER.pattern)
NUMBER_KEY = re.compile(
    r'(port|weight|value|priority|maxRetries|millis|threshold)"?\s*:\s*$', re.IGNORECASE
)


def plausible(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2)).lower().replace("_", "-")


def number_or_string(text: str, match: re.Match[str], line_start: int, quote: str) -> str:
    key = NUMBER_KEY.search(text[line_start : match.start()])
    if key:
        return "8080" if "port" in key.group(1).lower() else "1"
    return f"{quote}{plausible(match)}{quote}"


def fill_placeholders(text: str, is_json: bool) -> str:
    if is_json:

        def in_json(m: re.Match[str]) -> str:
            if m.group(0).startswith('"'):
                return PLACEHOLDER.sub(plausible, m.group(0))
            return number_or_string(text, m, text.rfind("\n", 0, m.start()) + 1, '"')

        return JSON_TOKEN.sub(in_json, text)

    def in_yaml(m: re.Match[str]) -> str:
        rest_of_line = text[m.end() :].split("\n", 1)[0]
        if rest_of_line.strip():
            return plausible(m)  # part of a longer scalar: "color.${NS}.svc"
        return number_or_string(text, m, text.rfind("\n", 0, m.start()) + 1, "")

    return PLACEHOLDER.sub(in_yaml, text)


def holds_app_mesh(path: Path) -> bool:
    text = path.read_text(encoding="utf-8", errors="replace")
    return (
        "appmesh.k8s.aws/" in text
        or "AWS::AppMesh::" in text
        or (path.suffix == ".json" and '"spec"' in text)
    )


def corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return ["<corpus missing>"]
    return [
        str(p.relative_to(CORPUS))
        for p in sorted(CORPUS.rglob("*"))
        if p.is_file() and holds_app_mesh(p)
    ]


def load(rel: str) -> str:
    path = CORPUS / rel
    text = path.read_text(encoding="utf-8")
    return text if "AWS::AppMesh::" in text else fill_placeholders(text, path.suffix == ".json")


# Upstream files that are not valid YAML (an indentation slip under `enforce: true,`).
BROKEN_YAML = {
    f"eks-app-mesh-cross-account-acm/mesh/{name}_update.yaml"
    for name in ("appserver", "redis", "yelb_db", "yelb_ui")
}
# Problems that are really in the upstream files, checked by hand: (resource, field).
KNOWN_PROBLEMS = {
    # ClientPolicyTls has no `mode` (that is a listener TLS field); the k8s controller ignored it.
    "howto-k8s-mtls-sds-based/v1beta2/manifest.yaml.template": {
        ('VirtualNode "front_app-namespace"', "spec.backendDefaults.clientPolicy.tls.mode"),
    },
}


def test_corpus_is_complete() -> None:
    files = corpus_files()
    assert len(files) >= 190, files
    shapes = {"json": 0, "k8s": 0, "cfn": 0}
    for rel in files:
        text = (CORPUS / rel).read_text()
        shapes[
            "cfn" if "AWS::AppMesh::" in text else "k8s" if "appmesh.k8s.aws/" in text else "json"
        ] += 1
    assert all(count > 20 for count in shapes.values()), shapes


@pytest.mark.parametrize("rel", corpus_files())
def test_corpus_file_imports_and_validates(rel: str) -> None:
    text = load(rel)
    if rel in BROKEN_YAML:
        with pytest.raises(ConfigError) as info:
            import_text(text, rel)
        assert info.value.problems[0].message.startswith("invalid YAML at line 11, column 21")
        return
    resources = import_text(text, rel)
    assert resources, "no App Mesh resource found"
    problems = validate_resources(resources, rel)
    wrong = {(p.resource, p.field) for p in problems if not p.message.startswith(UNRESOLVED)}
    assert wrong == KNOWN_PROBLEMS.get(rel, set()), "\n".join(map(str, problems))
    if any(r.kind == "Mesh" for r in resources):  # a whole mesh: nothing may be missing
        assert [p for p in problems if p.message.startswith(UNRESOLVED)] == []


def kinds_and_names(rel: str) -> list[tuple[str, str, str | None]]:
    return [(r.kind, r.name, r.parent) for r in import_text(load(rel), rel)]


def test_hand_checked_kubernetes_manifest() -> None:
    ns = "app-namespace"
    assert kinds_and_names("howto-k8s-http-headers/v1beta2/manifest.yaml.template") == [
        ("Mesh", "mesh-name", None),
        *[
            ("VirtualNode", f"{c}_{ns}", None)
            for c in ("front", "white", "blue", "red", "yellow", "green")
        ],
        ("VirtualService", f"color.{ns}.svc.cluster.local", None),
        ("VirtualRouter", f"color_{ns}", None),
        *[
            ("Route", f"color-route-{c}", f"color_{ns}")
            for c in ("blue", "green", "red", "yellow", "white")
        ],
    ]


def test_hand_checked_kubernetes_gateway() -> None:
    names = kinds_and_names("howto-k8s-ingress-gateway/v1beta2/manifest.yaml.template")
    gateway = "ingress-gw_app-namespace"
    assert [n for n in names if n[0] in ("VirtualGateway", "GatewayRoute")] == [
        ("VirtualGateway", gateway, None),
        ("GatewayRoute", "gateway-route-headers_app-namespace", gateway),
        ("GatewayRoute", "gateway-route-paths_app-namespace", gateway),
    ]


def test_hand_checked_legacy_kubernetes() -> None:
    assert kinds_and_names("howto-k8s-grpc/v1beta1/manifest.yaml.template") == [
        ("Mesh", "mesh-name", None),
        ("VirtualNode", "client-app-namespace", None),
        ("VirtualNode", "server-app-namespace", None),
        ("VirtualService", "color.cloudmap-namespace", None),
        ("VirtualRouter", "virtual-router-app-namespace", None),
        ("Route", "route-app-namespace", "virtual-router-app-namespace"),
    ]


def test_hand_checked_cloudformation() -> None:
    assert kinds_and_names("howto-http-retries/app.yaml") == [
        ("Mesh", "ProjectName", None),
        ("VirtualRouter", "color-router", None),
        ("VirtualService", "color.ProjectName.local", None),
        ("VirtualNode", "front-node", None),
        ("VirtualNode", "blue-node", None),
        ("Route", "color-route-blue", "color-router"),
    ]
    resources = import_text(load("howto-tls-file-provided/mesh/mesh.yaml"), "mesh.yaml")
    gateway = next(r for r in resources if r.kind == "VirtualGateway")
    # Fn::If on a condition that is false with the parameters' defaults => AWS::NoValue
    assert gateway.spec["backendDefaults"] == {"clientPolicy": {}}


def test_hand_checked_cli_json() -> None:
    assert kinds_and_names("howto-timeout-policy/mesh/colorteller-route-timeout20s.json") == [
        ("Route", "colorteller-route", "colorteller-vr")
    ]
    assert kinds_and_names("howto-ingress-gateway/mesh/colorgateway-vg.json") == [
        ("VirtualGateway", "colorgateway-vg", None)
    ]
    assert kinds_and_names("howto-timeout-policy/mesh/colorgateway-vn.json") == [
        ("VirtualNode", "colorgateway-vn", None)
    ]
    (route,) = import_text(
        load("howto-multiple-listeners/mesh/fruit-gateway-route.json"), "x/fruit-gateway-route.json"
    )
    assert route.kind == "GatewayRoute" and route.parent is None
    assert route.spec["httpRoute"]["action"]["target"] == {
        "virtualService": {"virtualServiceName": "virtualservice-name"},
        "port": 3333,
    }


# Whole meshes whose nodes call services defined in another file (by ARN).
CROSS_FILE = {"howto-k8s-cross-cluster/v1beta2/cluster1.yaml.template"}
# Whole meshes with ACM (or SDS) certificates, which the core cannot read: refused when served.
USES_ACM = {
    "howto-k8s-tls-acm/v1beta2/manifest.yaml.template",
    "howto-mutual-tls-file-provided-by-acm/infrastructure/deploy.yaml",
    "howto-mutual-tls-file-provided-by-acm/infrastructure/mesh.yaml",
    "howto-timeout-policy/mesh/mesh.yaml",
    "tls-with-acm/mesh/mesh.yaml",
}


def whole_meshes() -> list[str]:
    out = []
    for rel in corpus_files():
        if rel in BROKEN_YAML or rel in KNOWN_PROBLEMS or rel == "<corpus missing>":
            continue
        text = (CORPUS / rel).read_text()
        if "kind: Mesh" in text or "AWS::AppMesh::Mesh" in text:
            out.append(rel)
    return out or ["<corpus missing>"]


@pytest.mark.parametrize("rel", whole_meshes())
def test_whole_meshes_compile_for_every_gateway_and_node(rel: str) -> None:
    resources = import_text(load(rel), rel)
    targets = [("gateway", r.name) for r in resources if r.kind == "VirtualGateway"]
    targets += [("node", r.name) for r in resources if r.kind == "VirtualNode"]
    for mode, name in targets:  # none when the file defines only the Mesh
        proxy = {"bind": "127.0.0.1"}
        if mode == "node":
            ports = {
                p["portMapping"]["port"]
                for r in resources
                if r.name == name
                for p in r.spec.get("listeners", [])
            }
            proxy["app"] = {port: f"127.0.0.2:{port}" for port in ports}  # type: ignore[assignment]
        try:
            cfg = from_dict(
                to_native(resources, "mesh", **{mode: name}, **proxy), f"{rel} as {mode} {name}"
            )
        except ConfigError as exc:
            allowed = (
                (UNRESOLVED,) if rel in CROSS_FILE else (NOT_SERVABLE,) if rel in USES_ACM else ()
            )
            assert allowed and all(p.message.startswith(allowed) for p in exc.problems), str(exc)
            continue
        endpoints = {t.cluster: [(f"10.0.0.1:{t.port}", 1)] for t in dns_targets(cfg)}
        snapshot = json.loads(compile_snapshot(cfg, version=rel, endpoints=endpoints))
        assert_valid_snapshot(snapshot)
        assert snapshot["listeners"]
