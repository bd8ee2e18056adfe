"""Property tests: the compiled `meshplane._core.RouteTable` against a reference model.

The model below is a plain linear scan written straight from the matching semantics
(spec/appmesh.md §2, spec/envoy-semantics.md §8): no index, no cleverness. Random route tables
and random requests must route to the same route name through both.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

core = pytest.importorskip(
    "meshplane._core",
    reason="the compiled core is not built (run `maturin develop --release`)",
)

Headers = list[tuple[str, str]]

# ---- reference model -------------------------------------------------------------------------

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def _percent_decode(s: str) -> bytes:
    """'%XX' with two hex digits becomes a byte; anything else (even '+') stays as it is."""
    raw, out, i = s.encode(), bytearray(), 0
    while i < len(raw):
        if raw[i : i + 1] == b"%" and re.fullmatch(rb"[0-9A-Fa-f]{2}", raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _query_param(query: str, name: str) -> bytes | None:
    """Decoded value of the first parameter called `name`, or None if absent."""
    for param in query.split("&"):
        if not param:
            continue
        key, _, value = param.partition("=")
        if _percent_decode(key) == name.encode():
            return _percent_decode(value)
    return None


def _parse_i64(value: str) -> int | None:
    if re.fullmatch(r"[+-]?[0-9]+", value) is None:
        return None
    n = int(value)
    return n if I64_MIN <= n <= I64_MAX else None


def _header_holds(rule: dict[str, Any], headers: Headers) -> bool:
    values = [v for k, v in headers if k == rule["name"].lower()]
    invert = rule.get("invert", False)
    kind = rule["kind"]
    if not values:
        return kind == "present" and invert
    value = ",".join(values)
    if kind == "exact":
        matched = value == rule["value"]
    elif kind == "prefix":
        matched = value.startswith(rule["value"])
    elif kind == "suffix":
        matched = value.endswith(rule["value"])
    elif kind == "regex":
        matched = re.fullmatch(rule["value"], value) is not None
    elif kind == "range":
        n = _parse_i64(value)
        matched = n is not None and rule["start"] <= n < rule["end"]
    else:
        assert kind == "present"
        matched = True
    return matched != invert


def _route_holds(m: dict[str, Any], req: dict[str, Any]) -> bool:
    path: str = req["path"]
    path_only, _, query = path.partition("?")
    p = m.get("path")
    if p is not None:
        if p["kind"] == "prefix" and not path.startswith(p["value"]):
            return False
        if p["kind"] == "exact" and path_only != p["value"]:
            return False
        if p["kind"] == "regex" and re.fullmatch(p["value"], path_only) is None:
            return False
    h = m.get("hostname")
    if h is not None:
        authority, value = req["authority"].lower(), h["value"].lower()
        if h["kind"] == "exact" and authority != value:
            return False
        if h["kind"] == "suffix" and not authority.endswith(value):
            return False
    if "method" in m and m["method"] != req["method"]:
        return False
    if "scheme" in m and m["scheme"] != req["scheme"]:
        return False
    if "port" in m and m["port"] != req["port"]:
        return False
    if not all(_header_holds(rule, req["headers"]) for rule in m.get("headers", [])):
        return False
    for q in m.get("query", []):
        got = _query_param(query, q["name"])
        if got is None or ("exact" in q and got != q["exact"].encode()):
            return False
    return True


def _virtual_host(table: dict[str, Any], authority: str) -> dict[str, Any] | None:
    host = authority.lower()
    exact, suffixes, prefixes, anyhost = {}, [], [], None
    for vh in table["virtualHosts"]:
        for d in (d.lower() for d in vh["domains"]):
            if d == "*":
                anyhost = vh
            elif d.startswith("*"):
                suffixes.append((d[1:], vh))
            elif d.endswith("*"):
                prefixes.append((d[:-1], vh))
            else:
                exact[d] = vh
    if host in exact:
        return exact[host]
    for suffix, vh in sorted(suffixes, key=lambda s: -len(s[0])):
        if len(host) > len(suffix) and host.endswith(suffix):
            return vh
    for prefix, vh in sorted(prefixes, key=lambda s: -len(s[0])):
        if len(host) > len(prefix) and host.startswith(prefix):
            return vh
    return anyhost


def reference_match(table: dict[str, Any], req: dict[str, Any]) -> str | None:
    vh = _virtual_host(table, req["authority"])
    if vh is None:
        return None
    for route in vh["routes"]:
        if _route_holds(route.get("match", {}), req):
            return route["name"]
    return None


# ---- generators ------------------------------------------------------------------------------

SEGMENTS = ["/", "/a", "/a/", "/a/b", "/ab", "/b", "/a/b/c", "/svc1/", "/svc10/", "/a?x=1"]
REGEXES = ["/a/.*", "/[ab]+", "/v[0-9]+/.*", "/a|/b", ".*b.*", "/svc[0-9]+/"]
HEADER_NAMES = ["x-a", "x-b"]
HEADER_VALUES = ["", "1", "-3", "+7", "10", "beta", "be", "ta", "a,b", "x1", "99999999999999999999"]
QUERY_NAMES = ["q", "r", "a b"]
QUERY_VALUES = ["", "1", "x/y", "a=b"]
DOMAINS = ["*", "svc.local", "svc.local:8080", "*.example.com", "*.com", "api.*", "api.example.*"]
AUTHORITIES = [
    "",
    "svc.local",
    "SVC.Local",
    "svc.local:8080",
    "svc.local:80",
    "a.example.com",
    "api.example.com",
    "api.example.org",
    "x.com",
    "api.",
    "other",
]


def _path_match() -> st.SearchStrategy[dict[str, Any] | None]:
    return st.one_of(
        st.none(),
        st.builds(lambda v: {"kind": "prefix", "value": v}, st.sampled_from(SEGMENTS)),
        st.builds(lambda v: {"kind": "exact", "value": v}, st.sampled_from(SEGMENTS)),
        st.builds(lambda v: {"kind": "regex", "value": v}, st.sampled_from(REGEXES)),
    )


@st.composite
def _header_rule(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": draw(st.sampled_from(HEADER_NAMES))}
    kind = draw(st.sampled_from(["exact", "prefix", "suffix", "regex", "range", "present"]))
    rule["kind"] = kind
    if kind in ("exact", "prefix", "suffix"):
        rule["value"] = draw(st.sampled_from(HEADER_VALUES))
    elif kind == "regex":
        rule["value"] = draw(st.sampled_from(["[a-z]+", "b.*", "-?[0-9]+", "a,b", ".*"]))
    elif kind == "range":
        rule["start"] = draw(st.integers(-5, 12))
        rule["end"] = draw(st.integers(-5, 12))
    if draw(st.booleans()):
        rule["invert"] = draw(st.booleans())
    return rule


@st.composite
def _match(draw: st.DrawFn) -> dict[str, Any]:
    m: dict[str, Any] = {}
    path = draw(_path_match())
    if path is not None:
        m["path"] = path
    if draw(st.integers(0, 4)) == 0:
        m["hostname"] = {
            "kind": draw(st.sampled_from(["exact", "suffix"])),
            "value": draw(
                st.sampled_from(["svc.local", "SVC.local", ".com", "example.com", ":8080"])
            ),
        }
    if draw(st.integers(0, 3)) == 0:
        m["method"] = draw(st.sampled_from(["GET", "POST"]))
    if draw(st.integers(0, 4)) == 0:
        m["scheme"] = draw(st.sampled_from(["http", "https"]))
    if draw(st.integers(0, 4)) == 0:
        m["port"] = draw(st.sampled_from([80, 8080]))
    if draw(st.integers(0, 2)) == 0:
        m["headers"] = draw(st.lists(_header_rule(), min_size=1, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        queries = []
        for name in draw(st.lists(st.sampled_from(QUERY_NAMES), min_size=1, max_size=2)):
            q: dict[str, Any] = {"name": name}
            if draw(st.booleans()):
                q["exact"] = draw(st.sampled_from(QUERY_VALUES))
            queries.append(q)
        m["query"] = queries
    return m


@st.composite
def route_tables(draw: st.DrawFn) -> dict[str, Any]:
    domains = draw(
        st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=len(DOMAINS), unique=True)
    )
    hosts_count = draw(st.integers(1, min(3, len(domains))))
    names = iter(range(10_000))
    vhosts = []
    for h in range(hosts_count):
        routes = [
            {"name": f"r{next(names)}", "match": draw(_match()), "action": {}}
            for _ in range(draw(st.integers(0, 8)))
        ]
        vhosts.append({"name": f"vh{h}", "domains": domains[h::hosts_count], "routes": routes})
    return {"virtualHosts": vhosts}


def _encode(s: str, draw: st.DrawFn) -> str:
    """Percent-encode some characters (always the ones that would change the parse)."""
    out = []
    for ch in s:
        if ch in "&=% " or draw(st.integers(0, 4)) == 0:
            out.append(f"%{ord(ch):02{draw(st.sampled_from(['X', 'x']))}}")
        else:
            out.append(ch)
    return "".join(out)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(st.sampled_from(SEGMENTS + ["/v1/x", "/svc12/", "/bb", "/c", "", "/a/b/cd"]))
    if "?" not in path and draw(st.booleans()):
        params = []
        for _ in range(draw(st.integers(0, 3))):
            name = _encode(draw(st.sampled_from(QUERY_NAMES)), draw)
            if draw(st.integers(0, 3)) == 0:
                params.append(name)
            else:
                params.append(f"{name}={_encode(draw(st.sampled_from(QUERY_VALUES)), draw)}")
        path += "?" + "&".join(params)
    headers = draw(
        st.lists(
            st.tuples(st.sampled_from(HEADER_NAMES + ["x-other"]), st.sampled_from(HEADER_VALUES)),
            max_size=3,
        )
    )
    return {
        "method": draw(st.sampled_from(["GET", "POST"])),
        "path": path,
        "headers": headers,
        "authority": draw(st.sampled_from(AUTHORITIES)),
        "scheme": draw(st.sampled_from(["http", "https"])),
        "port": draw(st.sampled_from([0, 80, 8080])),
    }


# ---- properties ------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(table=route_tables(), reqs=st.lists(requests(), min_size=1, max_size=10))
def test_compiled_table_routes_like_the_reference_scan(
    table: dict[str, Any], reqs: list[dict[str, Any]]
) -> None:
    compiled = core.RouteTable(json.dumps(table))
    assert len(compiled) == sum(len(vh["routes"]) for vh in table["virtualHosts"])
    for req in reqs:
        assert compiled.match(**req) == reference_match(table, req), req


def test_accepts_str_and_bytes() -> None:
    doc = {
        "virtualHosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [
                    {"name": "r", "match": {"path": {"kind": "prefix", "value": "/"}}, "action": {}}
                ],
            }
        ]
    }
    for source in (json.dumps(doc), json.dumps(doc).encode()):
        table = core.RouteTable(source)
        assert len(table) == 1
        assert table.match("GET", "/x") == "r"
        assert table.match("GET", "x") is None


def test_build_errors_are_value_errors_naming_the_field() -> None:
    doc = {
        "virtualHosts": [
            {
                "name": "vh",
                "domains": ["*"],
                "routes": [
                    {"name": "r", "match": {"path": {"kind": "regex", "value": "("}}, "action": {}}
                ],
            }
        ]
    }
    with pytest.raises(ValueError, match=re.escape("virtualHosts[0].routes[0].match.path.value")):
        core.RouteTable(json.dumps(doc))
    with pytest.raises(ValueError, match="line 1"):
        core.RouteTable("{")
    with pytest.raises(TypeError):
        core.RouteTable(42)  # type: ignore[arg-type]
