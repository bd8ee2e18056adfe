"""The core refuses what docs/snapshot.schema.json refuses, and accepts what it accepts: the
checked-in schema (generated from the serde types) describes the parser, not a wish. Then the
one gap, named: the cross-reference rules of `Snapshot::check` are the core's alone.

Also the boundary error: every `CoreError` the core raises carries the error's own kind,
retryable and status."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from meshplane._core import Core, CoreError

from .support import stop_core

SCHEMA = json.loads((Path(__file__).resolve().parents[3] / "docs" / "snapshot.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)

Doc = dict[str, Any]


def full_document() -> Doc:
    """A document that sets nearly every field the schema has (TLS aside: it opens files)."""
    return {
        "schema": 1,
        "version": "good",
        "listeners": [
            {"name": "l", "address": "127.0.0.1:0", "protocol": "http", "routeTable": "t",
             "idleTimeoutMs": 60_000, "maxRequestHeadersBytes": 65_536,
             "accessLog": {"path": "/dev/null", "format": {"json": [{"key": "c", "value": "%RESPONSE_CODE%"}]}}},
        ],
        "routeTables": {
            "t": {"virtualHosts": [{"name": "vh", "domains": ["*"], "routes": [
                {"name": "r",
                 "match": {"path": {"kind": "prefix", "value": "/"},
                           "hostname": {"kind": "suffix", "value": ".local"},
                           "method": "GET", "scheme": "http", "port": 80,
                           "headers": [{"name": "a", "kind": "exact", "value": "1"},
                                       {"name": "b", "kind": "range", "start": -1, "end": 5, "invert": True},
                                       {"name": "c", "kind": "present"}],
                           "query": [{"name": "q", "exact": "1"}, {"name": "p"}]},
                 "action": {"clusters": [{"cluster": "c", "weight": 1}],
                            "rewrite": {"prefix": "/x", "host": "h"},
                            "timeoutMs": 0, "idleTimeoutMs": 1000,
                            "retry": {"maxRetries": 2, "perTryTimeoutMs": 100, "retryOn": ["5xx"],
                                      "retriableStatusCodes": [503], "grpcRetryOn": ["unavailable"]}}},
                {"name": "nested", "action": {"routeTable": "inner"}},
            ]}]},
            "inner": {"virtualHosts": []},
        },
        "clusters": [
            {"name": "c", "protocol": "http1", "lb": "round_robin", "activeRequestBias": 1.5,
             "endpoints": [{"address": "127.0.0.1:1", "weight": 2}, {"address": "[::1]:2"}],
             "connectTimeoutMs": 100, "idleTimeoutMs": None,
             "circuitBreakers": {"maxConnections": 10, "maxRequests": 4_294_967_295},
             "retryBudget": {"budgetPercent": 25, "minRetryConcurrency": 1},
             "outlierDetection": {"consecutive5xx": 5, "splitExternalLocalOriginErrors": True}},
        ],
    }


def at(*path: str | int) -> Callable[[Doc], Any]:
    def get(doc: Doc) -> Any:
        for key in path:
            doc = doc[key]  # type: ignore[index]
        return doc
    return get


LISTENER = at("listeners", 0)
ROUTE = at("routeTables", "t", "virtualHosts", 0, "routes", 0)
MATCH = at("routeTables", "t", "virtualHosts", 0, "routes", 0, "match")
ACTION = at("routeTables", "t", "virtualHosts", 0, "routes", 0, "action")
CLUSTER = at("clusters", 0)

# Each changes the full document's shape; schema and core must agree on every one.
SHAPES: dict[str, Callable[[Doc], Any]] = {
    "unchanged": lambda d: None,
    "top-level unknown field": lambda d: d.update(extra=1),
    "schema 2": lambda d: d.update(schema=2),
    "no version": lambda d: d.pop("version"),
    "defaults only": lambda d: [d.pop(k) for k in ("listeners", "routeTables", "clusters")],
    "listener unknown field": lambda d: LISTENER(d).update(routeTabel="t"),
    "listener protocol udp": lambda d: LISTENER(d).update(protocol="udp"),
    "listener timeout string": lambda d: LISTENER(d).update(idleTimeoutMs="1"),
    "listener null option": lambda d: LISTENER(d).update(accessLog=None),
    "access log both formats": lambda d: LISTENER(d)["accessLog"].update(format={"text": "x", "json": []}),
    "access log field without value": lambda d: LISTENER(d)["accessLog"].update(format={"json": [{"key": "k"}]}),
    "access log text": lambda d: LISTENER(d)["accessLog"].update(format={"text": "%RESPONSE_CODE%"}),
    "listener tls unknown field": lambda d: LISTENER(d).update(
        tls={"mode": "strict", "certificates": [], "ciphers": []}),
    "listener tls mode": lambda d: LISTENER(d).update(tls={"mode": "optional", "certificates": []}),
    "virtual host unknown field": lambda d: at("routeTables", "t", "virtualHosts", 0)(d).update(x=1),
    "route unknown field": lambda d: ROUTE(d).update(priority=1),
    "route without match": lambda d: ROUTE(d).pop("match"),
    "path match unknown field": lambda d: MATCH(d)["path"].update(ignoreCase=True),
    "path match kind": lambda d: MATCH(d).update(path={"kind": "glob", "value": "/"}),
    "hostname match kind": lambda d: MATCH(d).update(hostname={"kind": "prefix", "value": "a"}),
    "header match unknown field": lambda d: MATCH(d)["headers"][0].update(ignoreCase=True),
    "header present with value": lambda d: MATCH(d)["headers"][2].update(value="x"),
    "header range without end": lambda d: MATCH(d)["headers"][1].pop("end"),
    "header without name": lambda d: MATCH(d)["headers"][0].pop("name"),
    "header kind": lambda d: MATCH(d)["headers"][0].update(kind="contains"),
    "port out of range": lambda d: MATCH(d).update(port=65_536),
    "query unknown field": lambda d: MATCH(d)["query"][0].update(regex="x"),
    "action unknown field": lambda d: ACTION(d).update(mirror="c"),
    "rewrite unknown field": lambda d: ACTION(d)["rewrite"].update(regex="x"),
    "retry without maxRetries": lambda d: ACTION(d)["retry"].pop("maxRetries"),
    "retry negative": lambda d: ACTION(d)["retry"].update(maxRetries=-1),
    "status code out of range": lambda d: ACTION(d)["retry"].update(retriableStatusCodes=[70_000]),
    "timeout null": lambda d: ACTION(d).update(timeoutMs=None),
    "weight too large": lambda d: ACTION(d)["clusters"][0].update(weight=2**32),
    "cluster unknown field": lambda d: CLUSTER(d).update(healthCheck={}),
    "cluster lb": lambda d: CLUSTER(d).update(lb="maglev"),
    "cluster protocol": lambda d: CLUSTER(d).update(protocol="http3"),
    "endpoint unknown field": lambda d: CLUSTER(d)["endpoints"][0].update(zone="a"),
    "circuit breakers unknown field": lambda d: CLUSTER(d)["circuitBreakers"].update(maxWaiting=1),
    "retry budget unknown field": lambda d: CLUSTER(d)["retryBudget"].update(budget=1),
    "retry budget percent string": lambda d: CLUSTER(d)["retryBudget"].update(budgetPercent="20"),
    "outlier unknown field": lambda d: CLUSTER(d)["outlierDetection"].update(interval=1),
    "upstream tls without serverName": lambda d: CLUSTER(d).update(tls={}),
    "upstream tls unknown field": lambda d: CLUSTER(d).update(tls={"serverName": "s", "sni": "s"}),
}

# Shape is fine, references are not: only the core (`Snapshot::check`) refuses these.
REFERENCES: dict[str, Callable[[Doc], Any]] = {
    "duplicate cluster": lambda d: d["clusters"].append(copy.deepcopy(d["clusters"][0])),
    "unknown route table": lambda d: LISTENER(d).update(routeTable="nope"),
    "endpoint is a name": lambda d: CLUSTER(d)["endpoints"].append({"address": "localhost:1"}),
    "both clusters and routeTable": lambda d: ACTION(d).update(routeTable="inner"),
    "unknown cluster": lambda d: ACTION(d)["clusters"][0].update(cluster="nope"),
}


@pytest.fixture
def core() -> Iterator[Core]:
    core = Core(1)
    yield core
    assert stop_core(core), "the core did not report 'stopped'"


def changed(change: Callable[[Doc], Any]) -> Doc:
    doc = full_document()
    change(doc)
    return doc


def core_accepts(core: Core, doc: Doc) -> bool:
    try:
        core.apply(json.dumps(doc).encode())
    except CoreError as exc:
        assert exc.kind == "config" and exc.path, (exc.kind, exc.path, str(exc))
        return False
    return True


def test_core_accepts_exactly_what_the_schema_accepts(core: Core) -> None:
    verdicts = {name: (VALIDATOR.is_valid(changed(change)), core_accepts(core, changed(change)))
                for name, change in SHAPES.items()}
    disagree = {name: v for name, v in verdicts.items() if v[0] != v[1]}
    assert not disagree, f"(schema accepts, core accepts) differ: {disagree}"
    # Both sides of the contract are exercised, not just one.
    assert {v[0] for v in verdicts.values()} == {True, False}


def test_references_are_checked_by_the_core_only(core: Core) -> None:
    for name, change in REFERENCES.items():
        doc = changed(change)
        assert VALIDATOR.is_valid(doc), name
        assert not core_accepts(core, doc), name


def test_config_errors_carry_kind_path_and_no_reply_status(core: Core) -> None:
    with pytest.raises(CoreError) as info:
        core.apply(json.dumps(changed(REFERENCES["unknown cluster"])).encode())
    err = info.value
    assert (err.kind, err.retryable, err.status) == ("config", False, None)
    assert err.path == "routeTables.t.virtualHosts[0].routes[0].action.clusters[0].cluster"
    assert "unknown cluster" in str(err)

    core.apply(json.dumps(full_document()).encode())
    with pytest.raises(CoreError) as info:
        core.set_endpoints("nope", [("127.0.0.1:1", 1)])
    err = info.value
    assert (err.kind, err.retryable, err.status, err.path) == ("config", False, None, None)
    assert "nope" in str(err)

    with pytest.raises(CoreError) as info:
        core.set_host_ejected("c", "127.0.0.1:9", True)
    assert (info.value.kind, info.value.retryable, info.value.status) == ("config", False, None)
