"""Fuzzing the config loaders with hypothesis: no input may produce anything but a clear error.

Generated text and bytes, generated nested structures in each shape the loaders accept (a
meshplane file, AWS CLI/API JSON, Kubernetes custom resources, CloudFormation), written as JSON
and as YAML, and mutations of the real corpus (../shared/appmesh-corpus, examples/) go through
`load_text` / `load_file`, `import_text` / `import_resources`, validation, `to_native` and
compilation. The oracle (tests/fuzz/loader_oracle.py, shared with the atheris harness) allows
success or a ConfigError whose every problem has a message and names the source; anything else
fails the test. Hostile shapes the limits exist for (deep nesting, alias bombs) are generated
too.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from loader_oracle import check, check_bytes, corpus_files  # noqa: E402

# Sized for the default test run (a few seconds each); the atheris harness runs for as long as
# it is given (tests/fuzz/README.md).
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CORPUS_FUZZ = settings(FUZZ, max_examples=30)

KINDS = ["Mesh", "VirtualGateway", "GatewayRoute", "VirtualService", "VirtualRouter", "Route",
         "VirtualNode"]
# Field names the validators look for, so generated specs get past the first unknown key.
FIELDS = ["spec", "listeners", "portMapping", "port", "protocol", "healthCheck", "outlierDetection",
          "serviceDiscovery", "static", "endpoints", "dns", "hostname", "awsCloudMap", "backends",
          "virtualService", "virtualServiceName", "provider", "virtualNode", "virtualNodeName",
          "virtualRouter", "virtualRouterName", "httpRoute", "http2Route", "grpcRoute", "tcpRoute",
          "match", "prefix", "path", "exact", "regex", "headers", "queryParameters", "action",
          "weightedTargets", "weight", "target", "retryPolicy", "maxRetries", "perRetryTimeout",
          "unit", "value", "timeout", "idle", "perRequest", "tls", "mode", "certificate", "file",
          "certificateChain", "privateKey", "sds", "secretName", "validation", "trust",
          "connectionPool", "http", "maxConnections", "logging", "accessLog", "format", "json",
          "intervalMillis", "timeoutMillis", "healthyThreshold", "unhealthyThreshold",
          "maxServerErrors", "interval", "baseEjectionDuration", "maxEjectionPercent", "rewrite",
          "hostname", "defaultTargetHostname", "resilience", "loadBalancing", "priority",
          "gatewayRouteName", "virtualGatewayName", "meshName", "routeName", "Ref", "Fn::GetAtt",
          "Fn::Sub", "Fn::If", "mesh", "proxy", "resources", "kind", "name", "gateway", "node",
          "admin", "bind", "ports", "app", "outbound"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.sampled_from(["http", "http2", "grpc", "tcp", "/", "127.0.0.1:8080", "s", "ms", "DISABLED",
                     "STRICT", "PERMISSIVE", "a.b.local", "", "0", "-1", "${X}", "*"]),
    st.text(max_size=20),
)
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))


def nested(max_leaves: int = 30) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(KEYS, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


NAMES = st.one_of(st.sampled_from(["edge", "api", "api-v1", "svc.local", "router", "shop"]), st.text(max_size=10))


@st.composite
def native_shape(draw: st.DrawFn) -> Any:
    resources = draw(st.lists(st.fixed_dictionaries(
        {"kind": st.sampled_from(KINDS), "name": NAMES, "spec": nested()},
        optional={"virtualGatewayName": NAMES, "virtualRouterName": NAMES, "meshName": NAMES},
    ), max_size=5))
    proxy = draw(st.one_of(
        st.fixed_dictionaries({"gateway": NAMES}, optional={"admin": SCALARS, "ports": nested(5), "bind": SCALARS}),
        st.fixed_dictionaries({"node": NAMES}, optional={"app": SCALARS, "outbound": nested(5)}),
        nested(5),
    ))
    return {"mesh": draw(NAMES), "proxy": proxy, "resources": resources}


@st.composite
def aws_shape(draw: st.DrawFn) -> Any:
    def one(kind: str) -> st.SearchStrategy[dict[str, Any]]:
        name_key = kind[0].lower() + kind[1:] + "Name"
        parents = {"virtualRouterName": NAMES, "virtualGatewayName": NAMES, "metadata": nested(5)}
        return st.fixed_dictionaries({"meshName": NAMES, name_key: NAMES, "spec": nested()},
                                     optional={k: v for k, v in parents.items() if k != name_key})
    items = draw(st.lists(st.sampled_from(KINDS).flatmap(one), min_size=1, max_size=4))
    return items if len(items) > 1 or draw(st.booleans()) else items[0]


@st.composite
def k8s_shape(draw: st.DrawFn) -> list[Any]:
    return draw(st.lists(st.fixed_dictionaries(
        {"apiVersion": st.sampled_from(["appmesh.k8s.aws/v1beta2", "appmesh.k8s.aws/v1beta1", "v1"]),
         "kind": st.sampled_from([*KINDS, "Deployment", "Service"]),
         "metadata": st.fixed_dictionaries({"name": NAMES}, optional={"namespace": NAMES}),
         "spec": nested()},
    ), min_size=1, max_size=4))


@st.composite
def cfn_shape(draw: st.DrawFn) -> Any:
    def one(kind: str) -> st.SearchStrategy[dict[str, Any]]:
        props = st.fixed_dictionaries({"MeshName": st.one_of(NAMES, nested(3)), "Spec": nested()},
                                      optional={"VirtualRouterName": NAMES, "VirtualGatewayName": NAMES,
                                                **({} if kind == "Mesh" else {f"{kind}Name": NAMES})})
        return st.fixed_dictionaries({"Type": st.just(f"AWS::AppMesh::{kind}"), "Properties": props},
                                     optional={"DependsOn": nested(3)})
    resources = draw(st.dictionaries(st.text(min_size=1, max_size=8), st.sampled_from(KINDS).flatmap(one),
                                     min_size=1, max_size=4))
    return {"AWSTemplateFormatVersion": "2010-09-09", "Parameters": draw(nested(5)), "Resources": resources}


def dump(doc: Any, as_yaml: bool) -> str:
    if not as_yaml:
        return json.dumps(doc)
    docs = doc if isinstance(doc, list) and doc and all(isinstance(d, dict) and "apiVersion" in d for d in doc) else [doc]
    return yaml.safe_dump_all(docs, sort_keys=False)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="meshplane-fuzz-") as folder:
        yield Path(folder)


@FUZZ
@given(st.text(max_size=400))
def test_any_text(text: str) -> None:
    check(text, "fuzz.yaml")


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_as_a_file(scratch: Path, data: bytes) -> None:
    check_bytes(data, scratch / "fuzz.bin")


@FUZZ
@given(st.one_of(native_shape(), aws_shape(), k8s_shape(), cfn_shape(), nested()), st.booleans())
def test_generated_structures_in_every_shape(doc: Any, as_yaml: bool) -> None:
    check(dump(doc, as_yaml), "fuzz.yaml")


CORPUS = [p for p in corpus_files() if p.stat().st_size <= 8192]  # small files: more examples per second
EDITS = ["", "0", "-1", "null", "[]", "{}", "x", "\n", "  ", ": ", "- ", "true", "1e999", '"', "&a ",
         "*a", "!Ref ", "!GetAtt ", "<<: ", "{", "[", "\t", "\ufeff", "\x00", "${X}", "---\n"]


@st.composite
def corpus_text_mutation(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(CORPUS)).read_text(encoding="utf-8")
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 30))
        text = text[:at] + draw(st.one_of(st.sampled_from(EDITS), st.text(max_size=8))) + text[at + cut:]
    return text


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, (*prefix, i))


@st.composite
def corpus_structure_mutation(draw: st.DrawFn) -> tuple[Any, bool]:
    text = draw(st.sampled_from(CORPUS)).read_text(encoding="utf-8")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError:
        docs = []
    doc: Any = docs if len(docs) > 1 else (docs[0] if docs else {})
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(nested(8))
    return doc, draw(st.booleans())


@pytest.mark.skipif(not CORPUS, reason="no corpus files found (../shared/appmesh-corpus, examples/)")
@CORPUS_FUZZ
@given(corpus_text_mutation())
def test_mutated_corpus_text(text: str) -> None:
    check(text, "fuzz.yaml")


@pytest.mark.skipif(not CORPUS, reason="no corpus files found (../shared/appmesh-corpus, examples/)")
@CORPUS_FUZZ
@given(corpus_structure_mutation())
def test_mutated_corpus_structures(mutation: tuple[Any, bool]) -> None:
    doc, as_yaml = mutation
    check(dump(doc, as_yaml), "fuzz.yaml")


@settings(max_examples=12, deadline=None)
@given(st.integers(60, 3000), st.sampled_from(["[", "{\"a\": ", "- ", "a:\n"]), st.booleans())
def test_deep_nesting_in_every_notation(depth: int, opener: str, in_a_resource: bool) -> None:
    if opener == "a:\n":
        body = "".join(f"{'  ' * i}k:\n" for i in range(min(depth, 200))) + f"{'  ' * min(depth, 200)}v\n"
    else:
        closer = {"[": "]", "{\"a\": ": "}", "- ": ""}[opener]
        body = opener * depth + "1" + closer * depth
    text = f"mesh: shop\nresources:\n  - {{kind: VirtualNode, name: n, spec: {body}}}\n" if in_a_resource and opener != "a:\n" else body
    check(text, "fuzz.yaml")
