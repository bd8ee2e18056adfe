"""Validation rules: each names the file, the resource and the field path, and all come at once."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from meshplane.config import Resource, from_dict, validate_resources
from meshplane.config.checks import UNRESOLVED, regex_problem
from meshplane.errors import ConfigError, Problem

from .builders import (
    find,
    gateway_doc,
    gateway_route,
    http_route,
    node,
    problems_of,
    route,
    router,
    service,
    sidecar_doc,
)

GW_NODE = 'VirtualNode "v1"'
GW_ROUTE = 'Route "default" (VirtualRouter "r")'


def changed(
    change: Callable[[dict[str, Any]], None], base: Callable[[], dict[str, Any]] = gateway_doc
) -> dict[str, Any]:
    doc = copy.deepcopy(base())
    change(doc)
    return doc


def expect(problems: list[Problem], resource: str, field: str, *words: str) -> Problem:
    """The problem at (resource, field); its text names file, resource and field; words in message."""
    found = [p for p in problems if p.resource == resource and p.field == field]
    assert found, f"no problem at {resource!r} {field!r} in:\n" + "\n".join(map(str, problems))
    problem = found[0]
    text = str(problem)
    assert "mesh.yaml" in text and field in text and resource in text
    for word in words:
        assert word in problem.message, problem.message
    return problem


def listener(doc: dict[str, Any], name: str = "v1") -> dict[str, Any]:
    return find(doc, "VirtualNode", name)["spec"]["listeners"][0]


def test_valid_configs_load() -> None:
    assert from_dict(gateway_doc()).proxy.gateway == "edge"
    assert from_dict(sidecar_doc()).proxy.node == "web"


# --- types, ranges, enums, required, unknown keys --------------------------------------------

HEALTH = {
    "protocol": "http",
    "intervalMillis": 5000,
    "timeoutMillis": 2000,
    "healthyThreshold": 2,
    "unhealthyThreshold": 2,
}


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("intervalMillis", 10, ["expected an integer 5000..300000", "got 10"]),
        ("intervalMillis", "5000", ["expected an integer 5000..300000", 'got "5000"']),
        ("timeoutMillis", 60001, ["2000..60000"]),
        ("healthyThreshold", 1, ["2..10"]),
        ("unhealthyThreshold", True, ["2..10", "got true"]),
        ("protocol", "HTTP", ["one of http, http2, grpc, tcp", 'did you mean "http"']),
    ],
)
def test_health_check_fields(field: str, value: Any, words: list[str]) -> None:
    def change(doc: dict[str, Any]) -> None:
        listener(doc)["healthCheck"] = {**HEALTH, field: value}

    expect(problems_of(changed(change)), GW_NODE, f"spec.listeners[0].healthCheck.{field}", *words)


def test_required_field_missing() -> None:
    doc = changed(
        lambda d: listener(d).update(
            healthCheck={k: v for k, v in HEALTH.items() if k != "timeoutMillis"}
        )
    )
    expect(problems_of(doc), GW_NODE, "spec.listeners[0].healthCheck.timeoutMillis", "required")


def test_unknown_key_suggests_the_close_one() -> None:
    doc = changed(lambda d: listener(d).update(healthChek=HEALTH))
    expect(
        problems_of(doc),
        GW_NODE,
        "spec.listeners[0].healthChek",
        "unknown field",
        'did you mean "healthCheck"',
    )


def test_unknown_key_without_close_match_lists_the_allowed_ones() -> None:
    doc = changed(lambda d: find(d, "VirtualRouter", "r")["spec"].update(zzz=1))
    expect(
        problems_of(doc),
        'VirtualRouter "r"',
        "spec.zzz",
        "unknown field",
        "expected one of: listeners",
    )


@pytest.mark.parametrize(
    ("spec_change", "field", "words"),
    [
        ({"priority": 1001}, "spec.priority", ["0..1000"]),
        ({"priority": -1}, "spec.priority", ["0..1000"]),
    ],
)
def test_route_priority_range(spec_change: dict[str, Any], field: str, words: list[str]) -> None:
    doc = changed(lambda d: find(d, "Route", "default")["spec"].update(spec_change))
    expect(problems_of(doc), GW_ROUTE, field, *words)


def test_weights_and_target_count() -> None:
    def change(doc: dict[str, Any]) -> None:
        targets = [{"virtualNode": "v1", "weight": 101}] + [{"virtualNode": "v1", "weight": 1}] * 10
        find(doc, "Route", "default")["spec"]["httpRoute"]["action"]["weightedTargets"] = targets

    problems = problems_of(changed(change))
    expect(
        problems, GW_ROUTE, "spec.httpRoute.action.weightedTargets[0].weight", "0..100", "got 101"
    )
    expect(problems, GW_ROUTE, "spec.httpRoute.action.weightedTargets", "1..10 items", "got 11")


def test_ports_and_durations() -> None:
    def change(doc: dict[str, Any]) -> None:
        listener(doc)["portMapping"]["port"] = 70000
        body = find(doc, "Route", "default")["spec"]["httpRoute"]
        body["timeout"] = {
            "perRequest": {"unit": "m", "value": 5},
            "idle": {"unit": "s", "value": -1},
        }

    problems = problems_of(changed(change))
    expect(problems, GW_NODE, "spec.listeners[0].portMapping.port", "1..65535", "got 70000")
    expect(problems, GW_ROUTE, "spec.httpRoute.timeout.perRequest.unit", "one of s, ms", '"m"')
    expect(problems, GW_ROUTE, "spec.httpRoute.timeout.idle.value", ">= 0", "-1")


# --- exactly one of ----------------------------------------------------------------------------


def test_route_needs_exactly_one_type() -> None:
    def none(doc: dict[str, Any]) -> None:
        find(doc, "Route", "default")["spec"] = {"priority": 1}

    def two(doc: dict[str, Any]) -> None:
        find(doc, "Route", "default")["spec"]["tcpRoute"] = http_route()

    expect(
        problems_of(changed(none)),
        GW_ROUTE,
        "spec",
        "exactly one of httpRoute, http2Route, grpcRoute, tcpRoute",
        "got none",
    )
    expect(problems_of(changed(two)), GW_ROUTE, "spec", "got httpRoute and tcpRoute")


def test_prefix_and_path_exclude_each_other() -> None:
    doc = changed(
        lambda d: find(d, "Route", "default")["spec"]["httpRoute"]["match"].update(
            path={"exact": "/a"}
        )
    )
    expect(
        problems_of(doc),
        GW_ROUTE,
        "spec.httpRoute.match",
        "at most one of prefix, path",
        "got prefix and path",
    )


def test_service_discovery_one_of() -> None:
    doc = changed(
        lambda d: find(d, "VirtualNode", "v1")["spec"]["serviceDiscovery"].update(
            dns={"hostname": "x"}
        )
    )
    expect(
        problems_of(doc),
        GW_NODE,
        "spec.serviceDiscovery",
        "exactly one of dns, awsCloudMap, static, function",
        "got dns and static",
    )


# --- cross-field rules ---------------------------------------------------------------------------


def test_node_with_listeners_needs_service_discovery() -> None:
    doc = changed(lambda d: find(d, "VirtualNode", "v1")["spec"].pop("serviceDiscovery"))
    expect(
        problems_of(doc), GW_NODE, "spec.serviceDiscovery", "required when the node has listeners"
    )


def test_connection_pool_and_timeout_follow_the_listener_protocol() -> None:
    def change(doc: dict[str, Any]) -> None:
        listener(doc)["connectionPool"] = {"http2": {"maxRequests": 10}}
        listener(doc)["timeout"] = {"tcp": {"idle": {"unit": "s", "value": 1}}}

    problems = problems_of(changed(change))
    expect(problems, GW_NODE, "spec.listeners[0].connectionPool.http2", "connectionPool.http")
    expect(problems, GW_NODE, "spec.listeners[0].timeout.tcp", "timeout.http")


def test_health_check_port_is_the_listener_port_and_ports_are_unique() -> None:
    def change(doc: dict[str, Any]) -> None:
        listener(doc)["healthCheck"] = {**HEALTH, "port": 9999}
        find(doc, "VirtualNode", "v1")["spec"]["listeners"].append(
            {"portMapping": {"port": 8080, "protocol": "http"}}
        )

    problems = problems_of(changed(change))
    expect(
        problems,
        GW_NODE,
        "spec.listeners[0].healthCheck.port",
        "expected the listener port 8080, got 9999",
    )
    expect(problems, GW_NODE, "spec.listeners[1].portMapping.port", "duplicate listener port 8080")


@pytest.mark.parametrize(
    ("endpoint", "field", "words"),
    [
        (
            "localhost:80",
            "spec.serviceDiscovery.static.endpoints[0]",
            ["expected an IP address", "localhost"],
        ),
        ("127.0.0.1:99999", "spec.serviceDiscovery.static.endpoints[0]", ["port 1..65535"]),
        ("[::1:80", "spec.serviceDiscovery.static.endpoints[0]", ["[IPv6]:PORT"]),
        (
            {"address": "db.local"},
            "spec.serviceDiscovery.static.endpoints[0].address",
            ["expected an IP address"],
        ),
        (
            {"address": "127.0.0.1", "weight": 0},
            "spec.serviceDiscovery.static.endpoints[0].weight",
            [">= 1", "1.."],
        ),
    ],
)
def test_static_endpoint_syntax(endpoint: Any, field: str, words: list[str]) -> None:
    doc = changed(
        lambda d: find(d, "VirtualNode", "v1")["spec"]["serviceDiscovery"]["static"].update(
            endpoints=[endpoint]
        )
    )
    problem = expect(problems_of(doc), GW_NODE, field)
    assert any(w in problem.message for w in words), problem.message


def test_static_endpoint_without_port_needs_a_listener() -> None:
    doc = changed(
        lambda d: d["resources"].append(
            {
                "kind": "VirtualNode",
                "name": "bare",
                "spec": {"serviceDiscovery": {"static": {"endpoints": ["127.0.0.1"]}}},
            }
        )
    )
    expect(
        problems_of(doc),
        'VirtualNode "bare"',
        "spec.serviceDiscovery.static.endpoints[0]",
        "a port is required",
    )


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("(unclosed", ["expected a valid regular expression"]),
        ("/a(?=b)", ["lookaround"]),
        ("/(a)\\1", ["backreferences"]),
        ("(?<!x)y", ["lookaround"]),
    ],
)
def test_regex_must_be_valid_re2(pattern: str, words: list[str]) -> None:
    def change(doc: dict[str, Any]) -> None:
        match = find(doc, "Route", "default")["spec"]["httpRoute"]["match"]
        match.pop("prefix")
        match["path"] = {"regex": pattern}
        match["headers"] = [{"name": "x", "match": {"regex": pattern}}]

    problems = problems_of(changed(change))
    for field in ("spec.httpRoute.match.path.regex", "spec.httpRoute.match.headers[0].match.regex"):
        expect(problems, GW_ROUTE, field, *words)


def test_regex_scanner_accepts_escapes_and_classes() -> None:
    for ok in ("/a\\\\1", "/[(?=]x", "/v[0-9]+/.*", "^/api/(users|orders)$", "/\\d+"):
        assert regex_problem(ok) is None, ok


def test_header_range_and_prefix_slash() -> None:
    def change(doc: dict[str, Any]) -> None:
        match = find(doc, "Route", "default")["spec"]["httpRoute"]["match"]
        match["prefix"] = "api"
        match["headers"] = [{"name": "n", "match": {"range": {"start": 5, "end": 5}}}]

    problems = problems_of(changed(change))
    expect(problems, GW_ROUTE, "spec.httpRoute.match.prefix", 'starting with "/"')
    expect(problems, GW_ROUTE, "spec.httpRoute.match.headers[0].match.range", "start < end")


def test_retry_policy_needs_an_event_and_weights_a_nonzero_target() -> None:
    def change(doc: dict[str, Any]) -> None:
        body = find(doc, "Route", "default")["spec"]["httpRoute"]
        body["retryPolicy"] = {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 100}}
        body["action"]["weightedTargets"][0]["weight"] = 0

    problems = problems_of(changed(change))
    expect(
        problems,
        GW_ROUTE,
        "spec.httpRoute.retryPolicy",
        "at least one of httpRetryEvents, tcpRetryEvents",
    )
    expect(problems, GW_ROUTE, "spec.httpRoute.action.weightedTargets", "weight > 0")


def test_grpc_method_needs_service() -> None:
    def change(doc: dict[str, Any]) -> None:
        find(doc, "VirtualRouter", "r")["spec"]["listeners"][0]["portMapping"]["protocol"] = "grpc"
        listener(doc)["portMapping"]["protocol"] = "grpc"
        body = http_route()
        body["match"] = {"methodName": "Get"}
        find(doc, "Route", "default")["spec"] = {"grpcRoute": body}
        find(doc, "GatewayRoute", "all")["spec"] = {
            "grpcRoute": {
                "match": {"serviceName": "pkg.Svc"},
                "action": {"target": {"virtualService": {"virtualServiceName": "svc.local"}}},
            }
        }
        find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]["portMapping"]["protocol"] = (
            "grpc"
        )

    expect(problems_of(changed(change)), GW_ROUTE, "spec.grpcRoute.match.methodName", "serviceName")


# --- references --------------------------------------------------------------------------------


def test_unresolved_references_are_all_reported() -> None:
    def change(doc: dict[str, Any]) -> None:
        find(doc, "Route", "default")["spec"]["httpRoute"]["action"]["weightedTargets"][0][
            "virtualNode"
        ] = "ghost"
        find(doc, "VirtualService", "svc.local")["spec"]["provider"] = {
            "virtualRouter": {"virtualRouterName": "nope"}
        }
        doc["resources"].append(gateway_route("lost", "missing.local"))
        doc["resources"].append(route("orphan", "no-router", http_route()))
        doc["proxy"]["gateway"] = "edgy"

    problems = problems_of(changed(change))
    expect(
        problems,
        GW_ROUTE,
        "spec.httpRoute.action.weightedTargets[0].virtualNode",
        UNRESOLVED,
        '"ghost"',
    )
    expect(
        problems,
        'VirtualService "svc.local"',
        "spec.provider.virtualRouter.virtualRouterName",
        '"nope"',
    )
    expect(
        problems,
        'GatewayRoute "lost" (VirtualGateway "edge")',
        "spec.httpRoute.action.target.virtualService.virtualServiceName",
        '"missing.local"',
    )
    expect(
        problems,
        'Route "orphan" (VirtualRouter "no-router")',
        "virtualRouterName",
        'no VirtualRouter named "no-router"',
    )
    expect(problems, "", "proxy.gateway", 'no VirtualGateway named "edgy"', 'did you mean "edge"')


def test_proxy_node_and_backends_must_exist() -> None:
    def change(doc: dict[str, Any]) -> None:
        find(doc, "VirtualNode", "web")["spec"]["backends"].append(
            {"virtualService": {"virtualServiceName": "nope.local"}}
        )

    expect(
        problems_of(changed(change, sidecar_doc)),
        'VirtualNode "web"',
        "spec.backends[1].virtualService.virtualServiceName",
        UNRESOLVED,
    )
    doc = changed(lambda d: d["proxy"].update(node="webb"), sidecar_doc)
    expect(problems_of(doc), "", "proxy.node", 'no VirtualNode named "webb"')


def test_route_type_must_match_the_router_listener() -> None:
    doc = changed(lambda d: find(d, "Route", "default").update(spec={"http2Route": http_route()}))
    expect(
        problems_of(doc),
        'Route "default" (VirtualRouter "r")',
        "spec.http2Route",
        "expected httpRoute to match the listener protocol",
        "got http2Route",
    )


def test_route_match_port_must_be_a_router_listener() -> None:
    doc = changed(
        lambda d: find(d, "Route", "default")["spec"]["httpRoute"]["match"].update(port=9)
    )
    expect(problems_of(doc), GW_ROUTE, "spec.httpRoute.match.port", "8080", "got 9")


def test_target_node_listeners_port_and_protocol() -> None:
    def change(doc: dict[str, Any]) -> None:
        find(doc, "VirtualNode", "v1")["spec"]["listeners"].append(
            {"portMapping": {"port": 9090, "protocol": "http2"}}
        )
        targets = find(doc, "Route", "default")["spec"]["httpRoute"]["action"]["weightedTargets"]
        targets += [
            {"virtualNode": "v1", "weight": 1, "port": 9090},
            {"virtualNode": "v1", "weight": 1, "port": 7},
        ]

    problems = problems_of(changed(change))
    expect(
        problems,
        GW_ROUTE,
        "spec.httpRoute.action.weightedTargets[0].port",
        "required",
        "several listeners (8080, 9090)",
    )
    expect(
        problems,
        GW_ROUTE,
        "spec.httpRoute.action.weightedTargets[1]",
        "listens with http2 on port 9090",
    )
    expect(problems, GW_ROUTE, "spec.httpRoute.action.weightedTargets[2].port", "got 7")


def test_gateway_route_rules() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["resources"] += [
            gateway_route("reserved", "svc.local", {"prefix": "/aws-appmesh/x"}),
            gateway_route(
                "rw", "svc.local", {"path": {"exact": "/a"}}, rewrite={"prefix": {"value": "/b/"}}
            ),
            gateway_route("h2", "svc.local", rtype="http2Route"),
            gateway_route("tcp", "db.local"),
            service("db.local", node_name="db"),
            node("db", 5432, "tcp"),
        ]

    problems = problems_of(changed(change))
    gr = 'GatewayRoute "{}" (VirtualGateway "edge")'.format
    expect(problems, gr("reserved"), "spec.httpRoute.match.prefix", "reserved")
    expect(problems, gr("rw"), "spec.httpRoute.action.rewrite.prefix", "match.prefix")
    expect(
        problems,
        gr("h2"),
        "spec.http2Route",
        "expected httpRoute to match",
        'VirtualGateway "edge"',
    )
    expect(problems, gr("tcp"), "spec.httpRoute.action.target", "TCP service")


def test_duplicate_names_per_kind_and_parent() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["resources"] += [
            node("v1"),
            route("default", "r", http_route()),
            router("r2"),
            route("default", "r2", http_route()),
        ]

    problems = problems_of(changed(change))
    dups = [p for p in problems if "duplicate name" in p.message]
    assert [(p.resource, p.field) for p in dups] == [(GW_NODE, "name"), (GW_ROUTE, "name")]


def test_mesh_resource_must_carry_the_mesh_name() -> None:
    doc = changed(lambda d: d["resources"].append({"kind": "Mesh", "name": "other", "spec": {}}))
    expect(problems_of(doc), 'Mesh "other"', "name", 'expected the mesh name "demo"')


# --- the file itself and the proxy section --------------------------------------------------


def test_file_structure_problems() -> None:
    doc = {
        "mesh": 5,
        "proxy": {"gateway": "edge", "node": "web", "bnd": "x"},
        "resourcez": [],
        "resources": [
            {"kind": "VirtualNod", "name": "x"},
            {"kind": "Route", "name": "r", "spec": {}},
            "junk",
        ],
    }
    problems = problems_of(doc)
    expect(problems, "", "mesh", "expected a string")
    expect(problems, "", "proxy.bnd", 'did you mean "bind"')
    expect(problems, "", "resourcez", 'did you mean "resources"')
    expect(problems, "resources[0]", "kind", 'did you mean "VirtualNode"')
    expect(problems, 'Route "r"', "virtualRouterName", "required")
    expect(problems, "", "resources[2]", "expected an object")


def test_proxy_needs_exactly_one_target() -> None:
    doc = changed(lambda d: d["proxy"].update(node="v1"))
    expect(problems_of(doc), "", "proxy", "exactly one of gateway, node", "both")


def test_proxy_addresses() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["proxy"].update(
            admin="nope", bind="localhost", app="127.0.0.1:1", ports={"abc": 1, 9999: 2}
        )

    problems = problems_of(changed(change))
    expect(problems, "", "proxy.admin", "IP:PORT")
    expect(problems, "", "proxy.bind", "expected an IP address")
    expect(problems, "", "proxy.ports.abc", "expected a port 1..65535 as key")


def test_proxy_ports_app_and_outbound_in_the_wrong_mode() -> None:
    problems = problems_of(changed(lambda d: d["proxy"].update(app="127.0.0.1:1", ports={9999: 2})))
    expect(problems, "", "proxy.app", "sidecar mode")
    expect(problems, "", "proxy.ports.9999", 'a listener port of VirtualGateway "edge"', "(8080)")


def test_sidecar_listener_on_the_application_address() -> None:
    doc = changed(lambda d: d["proxy"].pop("app"), sidecar_doc)
    expect(
        problems_of(doc),
        "",
        "proxy.ports",
        "inbound/web/8080 (127.0.0.1:8080)",
        "the application of inbound/web/8080 (127.0.0.1:8080)",
    )


def test_sidecar_tcp_backends_sharing_a_port() -> None:
    def change(doc: dict[str, Any]) -> None:
        web = find(doc, "VirtualNode", "web")["spec"]
        web["backends"] += [{"virtualService": {"virtualServiceName": n}} for n in ("a.db", "b.db")]
        doc["resources"] += [
            service("a.db", node_name="dba"),
            service("b.db", node_name="dbb"),
            node("dba", 5432, "tcp"),
            node("dbb", 5432, "tcp"),
        ]

    expect(
        problems_of(changed(change, sidecar_doc)),
        'VirtualNode "web"',
        "spec.backends",
        '"a.db", "b.db" share port 5432',
    )


def test_many_problems_are_reported_together_in_one_error() -> None:
    def change(doc: dict[str, Any]) -> None:
        listener(doc)["portMapping"]["protocol"] = "htp"
        find(doc, "Route", "default")["spec"]["priority"] = 5000
        find(doc, "VirtualService", "svc.local")["spec"]["provider"]["virtualRouter"][
            "virtualRouterName"
        ] = "x"

    with pytest.raises(ConfigError) as info:
        from_dict(changed(change), "mesh.yaml")
    text = str(info.value)
    assert len(info.value.problems) == 3, text
    assert "3 problem(s)" in text
    assert (
        'mesh.yaml: VirtualNode "v1": spec.listeners[0].portMapping.protocol: expected one of'
        in text
    )
    assert (
        'mesh.yaml: Route "default" (VirtualRouter "r"): spec.priority: expected an integer 0..1000, got 5000'
        in text
    )
    assert (
        'mesh.yaml: VirtualService "svc.local": spec.provider.virtualRouter.virtualRouterName'
        in text
    )


def test_tls_sources_the_core_cannot_read_are_refused_where_served() -> None:
    def change(doc: dict[str, Any]) -> None:
        find(doc, "VirtualGateway", "edge")["spec"]["listeners"][0]["tls"] = {
            "mode": "STRICT",
            "certificate": {"acm": {"certificateArn": "arn:aws:acm:x"}},
            "validation": {"trust": {"sds": {"secretName": "ca"}}},
        }
        find(doc, "VirtualGateway", "edge")["spec"]["backendDefaults"] = {
            "clientPolicy": {
                "tls": {"validation": {"trust": {"acm": {"certificateAuthorityArns": ["arn:ca"]}}}}
            }
        }
        # a node the gateway does not serve may keep its ACM certificate
        find(doc, "VirtualNode", "v1")["spec"]["listeners"][0]["tls"] = {
            "mode": "STRICT",
            "certificate": {"acm": {"certificateArn": "arn:aws:acm:y"}},
        }

    problems = problems_of(changed(change))
    gw = 'VirtualGateway "edge"'
    expect(
        problems,
        gw,
        "spec.listeners[0].tls.certificate.acm",
        "not supported by meshplane",
        "certificate.file",
    )
    expect(
        problems,
        gw,
        "spec.listeners[0].tls.validation.trust.sds.secretName",
        'SDS secret "ca" is not mapped',
        "proxy.sds.secretsDir",
        "<secretsDir>/ca/ca.pem",
        "trust.file",
    )
    expect(problems, gw, "spec.backendDefaults.clientPolicy.tls.validation.trust.acm", "trust.file")
    assert not [p for p in problems if p.resource == GW_NODE]


def test_validate_resources_on_imported_resources() -> None:
    resources = [
        Resource(
            "VirtualNode", "n", {"listeners": [{"portMapping": {"port": 1, "protocol": "tcp"}}]}
        ),
        Resource(
            "Route",
            "r",
            {"tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}},
        ),
        Resource("Bogus", "b", {}),
    ]
    problems = validate_resources(resources, "import.json")
    assert {(p.resource, p.field) for p in problems} == {
        ('VirtualNode "n"', "spec.serviceDiscovery"),
        ('Route "r"', "virtualRouterName"),
        ('Bogus "b"', "kind"),
    }
    assert all(p.file == "import.json" for p in problems)


def test_proxy_request_headers_timeout_and_backlog_ranges() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["proxy"].update(requestHeadersTimeoutMs=0, backlog=70_000)

    problems = problems_of(changed(change))
    expect(problems, "", "proxy.requestHeadersTimeoutMs", "1..3600000")
    expect(problems, "", "proxy.backlog", "1..65535")
