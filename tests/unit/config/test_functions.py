"""Function resources: Lambda's limits (each problem names file, resource and field) and what
they compile to (function clusters, an alias's weighted split, the invoke listener)."""

from __future__ import annotations

import copy
import json
from typing import Any

from meshplane.config import compile_snapshot, from_dict
from meshplane.config.functions import resolve, versions_of

from .builders import find, gateway_doc, problems_of
from .snapshot_contract import assert_valid_snapshot

FN = 'Function "resize"'


def function(name: str = "resize", **spec: Any) -> dict[str, Any]:
    return {"kind": "Function", "name": name,
            "spec": {"handler": "app.handler", "code": {"path": "./code"}, **spec}}


def function_doc(qualifier: str | None = None, **spec: Any) -> dict[str, Any]:
    """The gateway doc with node v1 discovered as the function "resize"."""
    doc = copy.deepcopy(gateway_doc())
    ref = {"functionName": "resize", **({"qualifier": qualifier} if qualifier else {})}
    find(doc, "VirtualNode", "v1")["spec"]["serviceDiscovery"] = {"function": ref}
    doc["resources"].append(function(**spec))
    return doc


def at(problems: list[Any], resource: str, field: str) -> str:
    found = [p for p in problems if p.resource == resource and p.field == field]
    assert found, f"no problem at {resource} {field}:\n" + "\n".join(map(str, problems))
    text = str(found[0])
    assert "mesh.yaml" in text and resource in text and field in text
    return found[0].message


def test_a_function_node_loads_and_compiles_to_a_function_cluster() -> None:
    cfg = from_dict(function_doc(reservedConcurrency=7, timeout={"unit": "s", "value": 9}))
    doc = json.loads(compile_snapshot(cfg, version="1"))
    assert_valid_snapshot(doc)
    clusters = {c["name"]: c for c in doc["clusters"]}
    cluster = clusters["function/resize/$LATEST/$LATEST"]
    assert cluster["function"] == {"concurrency": 7, "concurrencyGroup": "function/resize",
                                   "instanceWaitMs": 12000}
    assert cluster["protocol"] == "http1" and cluster["endpoints"] == []
    route = doc["routeTables"]["service/svc.local"]["virtualHosts"][0]["routes"][0]
    assert route["action"]["clusters"] == [{"cluster": "function/resize/$LATEST/$LATEST",
                                            "weight": 1}]
    invoke = doc["routeTables"]["functions/invoke"]["virtualHosts"][0]["routes"]
    assert [r["match"]["headers"][0]["value"] for r in invoke] == ["resize:$LATEST"]
    assert invoke[0]["action"]["timeoutMs"] == 9000 + 5000 and "retry" not in invoke[0]["action"]
    listener = next(ln for ln in doc["listeners"] if ln["name"] == "functions/invoke")
    assert listener["address"] == "127.0.0.1:0"


def test_unreserved_concurrency_is_the_account_default() -> None:
    doc = json.loads(compile_snapshot(from_dict(function_doc()), version="1"))
    cluster = next(c for c in doc["clusters"] if c["name"].startswith("function/"))
    assert cluster["function"]["concurrency"] == 1000
    assert cluster["function"]["concurrencyGroup"] == "unreserved"


def test_reservations_are_per_function_and_come_out_of_the_unreserved_pool() -> None:
    doc = function_doc("live")
    doc["resources"] += [function("thumbs", reservedConcurrency=300), function("other")]
    catalog = {"resize": {
        "versions": {v: {"handler": "app.handler", "timeoutMs": 3000, "memoryMB": 128,
                         "environment": {}, "code": {"sha256": "ab" * 32}, "layers": []}
                     for v in ("1", "2")},
        "aliases": {"live": {"functionVersion": "1", "additionalVersionWeights": {"2": 0.5}}},
    }}
    cfg = from_dict(doc)
    functions, problems = resolve(cfg, catalog)
    assert problems == []
    snap = json.loads(compile_snapshot(cfg, version="1", functions=functions))
    assert_valid_snapshot(snap)
    limits = {c["name"]: (c["function"]["concurrencyGroup"], c["function"]["concurrency"])
              for c in snap["clusters"] if "function" in c}
    # Every qualifier and version of a function without a reservation: the pool 1000 - 300.
    assert limits["function/resize/live/1"] == limits["function/resize/live/2"] == \
        limits["function/resize/$LATEST/$LATEST"] == limits["function/other/$LATEST/$LATEST"] \
        == ("unreserved", 700)
    assert limits["function/thumbs/$LATEST/$LATEST"] == ("function/thumbs", 300)


def test_reservations_leave_at_least_100_unreserved() -> None:
    doc = function_doc(reservedConcurrency=500)
    doc["resources"].append(function("thumbs", reservedConcurrency=401))
    problems = problems_of(doc)
    for name in ("resize", "thumbs"):
        message = at(problems, f'Function "{name}"', "spec.reservedConcurrency")
        assert "reserve 901 between them" in message and "at most 900" in message
    doc["resources"][-1]["spec"]["reservedConcurrency"] = 400
    from_dict(doc)  # 900 reserved, 100 left: loads


def test_an_alias_with_weights_is_two_weighted_clusters() -> None:
    cfg = from_dict(function_doc("live", provisionedConcurrency=[{"qualifier": "live",
                                                                  "count": 4}]))
    catalog = {"resize": {
        "versions": {v: {"handler": "app.handler", "timeoutMs": 3000, "memoryMB": 128,
                         "environment": {}, "code": {"sha256": "ab" * 32}, "layers": []}
                     for v in ("1", "2")},
        "aliases": {"live": {"functionVersion": "1", "additionalVersionWeights": {"2": 0.25}}},
    }}
    functions, problems = resolve(cfg, catalog)
    assert problems == []
    live = functions[("resize", "live")]
    assert [(t.version, t.weight, t.provisioned) for t in live] == [("1", 0.75, 3),
                                                                    ("2", 0.25, 1)]
    doc = json.loads(compile_snapshot(cfg, version="1", functions=functions))
    assert_valid_snapshot(doc)
    route = doc["routeTables"]["service/svc.local"]["virtualHosts"][0]["routes"][0]
    weights = {c["cluster"]: c["weight"] for c in route["action"]["clusters"]}
    assert weights == {"function/resize/live/1": 7_500, "function/resize/live/2": 2_500}
    invoked = {r["match"]["headers"][0]["value"]
               for r in doc["routeTables"]["functions/invoke"]["virtualHosts"][0]["routes"]}
    assert invoked == {"resize:$LATEST", "resize:1", "resize:2", "resize:live"}


def test_unknown_qualifiers_are_named() -> None:
    assert "no alias 'live'" in versions_of({}, "resize", "live")
    assert "no version 3" in versions_of({"resize": {"versions": {"1": {}}}}, "resize", "3")
    cfg = from_dict(function_doc("live"))
    _, problems = resolve(cfg, {})
    assert problems and problems[0][0] == 'VirtualNode "v1"' and "no alias 'live'" in problems[0][1]


def test_lambda_limits_are_checked_all_at_once() -> None:
    doc = function_doc(
        memorySize=64, timeout={"unit": "s", "value": 901}, reservedConcurrency=2,
        provisionedConcurrency=[{"qualifier": "$LATEST", "count": 3}],
        environment={"variables": {"AWS_REGION": "x", "1bad": "y", "BIG": "z" * 5000}},
        handler="nodot",
    )
    problems = problems_of(doc)
    assert "128..10240" in at(problems, FN, "spec.memorySize")
    # A shape problem hides the rules' pass for that resource; fix it and look again.
    doc = function_doc(
        memorySize=256, timeout={"unit": "s", "value": 901}, reservedConcurrency=2,
        provisionedConcurrency=[{"qualifier": "$LATEST", "count": 3}],
        environment={"variables": {"AWS_REGION": "x", "1bad": "y", "BIG": "z" * 5000}},
        handler="nodot",
    )
    problems = problems_of(doc)
    assert "1..900 seconds" in at(problems, FN, "spec.timeout")
    assert "module.function" in at(problems, FN, "spec.handler")
    assert "reserved" in at(problems, FN, "spec.environment.variables.AWS_REGION")
    assert "starting with a letter" in at(problems, FN, "spec.environment.variables.1bad")
    assert "4096 bytes" in at(problems, FN, "spec.environment.variables")
    assert "never $LATEST" in at(problems, FN, "spec.provisionedConcurrency[0].qualifier")
    assert "reservedConcurrency (2)" in at(problems, FN, "spec.provisionedConcurrency")


def test_function_names_and_references() -> None:
    doc = function_doc()
    doc["resources"].append(function("bad name!"))
    find(doc, "VirtualNode", "v1")["spec"]["serviceDiscovery"]["function"]["functionName"] = "resise"
    problems = problems_of(doc)
    assert "Lambda's function names" in at(problems, 'Function "bad name!"', "name")
    message = at(problems, 'VirtualNode "v1"', "spec.serviceDiscovery.function.functionName")
    assert "unresolved reference" in message and 'did you mean "resize"' in message


def test_a_function_node_serves_http_only() -> None:
    doc = function_doc()
    find(doc, "VirtualNode", "v1")["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
    problems = problems_of(doc)
    assert "expected http" in at(problems, 'VirtualNode "v1"',
                                 "spec.listeners[0].portMapping.protocol")


def test_code_paths_resolve_against_the_config_file(tmp_path: Any) -> None:
    from meshplane.config.functions import latest_settings
    cfg = from_dict(function_doc(layers=["layers/one", {"path": "/abs/two.zip"}]),
                    source=str(tmp_path / "mesh.yaml"))
    settings = latest_settings(cfg, cfg.get("Function", "resize"))
    assert settings["code"] == {"path": str(tmp_path / "code")}
    assert settings["layers"] == [{"path": str(tmp_path / "layers" / "one")},
                                  {"path": "/abs/two.zip"}]
    assert settings["timeoutMs"] == 3000 and settings["memoryMB"] == 128


def test_the_example_loads_and_compiles() -> None:
    from pathlib import Path

    from meshplane.config import load_file

    example = Path(__file__).resolve().parents[3] / "examples" / "functions.yaml"
    cfg = load_file(str(example))
    doc = json.loads(compile_snapshot(cfg, version="example"))
    assert_valid_snapshot(doc)
    assert [c["name"] for c in doc["clusters"]] == ["function/hello/$LATEST/$LATEST"]
    settings = resolve(cfg, {})[0][("hello", "$LATEST")][0].settings
    assert Path(settings["code"]["path"], "app.py").is_file()
