"""Route matching through the proxy: path, header, method, scheme, query and port conditions,
route order, virtual-host selection by authority, gateway chaining with rewrites, no route.

Each probe route rewrites the path to `/<route name>` (query kept), so the echo upstream tells
which route matched.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from .support import (
    H1Upstream,
    Proxy,
    cluster,
    http_listener,
    prefix,
    route,
    snapshot,
    table,
    vhost,
)


def probe(name: str, match: dict[str, Any]) -> dict[str, Any]:
    return route(name, "c", match=match, rewrite={"path": f"/{name}"})


FALLBACK = probe("fallback", prefix("/"))


def one_table(up: H1Upstream, *routes: dict[str, Any]) -> dict[str, Any]:
    return snapshot([http_listener()], {"t": table(vhost("vh", list(routes)))},
                    [cluster("c", [up.address])])


async def which(client: httpx.AsyncClient, url: str, **kw: Any) -> str:
    """The name of the route that served the request, or the status of a local reply."""
    r = await client.request(kw.pop("method", "GET"), url, **kw)
    if r.status_code != 200:
        return str(r.status_code)
    return r.json()["path"].lstrip("/")


async def check(client: httpx.AsyncClient, proxy: Proxy,
                cases: list[tuple[str, dict[str, Any], str]]) -> None:
    """Every (path, request kwargs, expected route) case; report all mismatches at once."""
    got = [(path, kw, await which(client, proxy.url(path), **dict(kw))) for path, kw, _ in cases]
    want = [(path, kw, expected) for path, kw, expected in cases]
    assert got == want


async def test_path_prefix_exact_and_regex(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_table(
        up,
        probe("path-exact", {"path": {"kind": "exact", "value": "/exact"}}),
        probe("path-regex", {"path": {"kind": "regex", "value": "/re/[0-9]+"}}),
        probe("path-prefix", prefix("/pre")),
        FALLBACK,
    ))
    await check(client, proxy, [
        ("/exact", {}, "path-exact"),
        ("/exact?q=1", {}, "path-exact"),  # exact ignores the query string
        ("/exact/more", {}, "fallback"),
        ("/re/123", {}, "path-regex"),
        ("/re/123?x=y", {}, "path-regex"),
        ("/re/12a", {}, "fallback"),
        ("/re/123/x", {}, "fallback"),  # regex is anchored (full match)
        ("/prefix/anything", {}, "path-prefix"),  # a plain string prefix, not a segment
        ("/pr", {}, "fallback"),
    ])
    # The query survives a path rewrite.
    r = await client.get(proxy.url("/exact?q=1"))
    assert r.json()["target"] == "/path-exact?q=1"


async def test_header_match_kinds(make_core, upstreams, client):
    up = await upstreams.h1()

    def hdr(kind: str, **rule: Any) -> dict[str, Any]:
        name = rule.pop("name", "x-h")
        invert = rule.pop("invert", False)
        return probe(f"hdr-{kind}", prefix(f"/h/{kind}", headers=[
            {"name": name, "kind": rule.pop("rule", kind), "invert": invert, **rule}]))

    proxy = make_core(one_table(
        up,
        hdr("exact", value="a"),
        hdr("prefix", value="ab"),
        hdr("suffix", value="yz"),
        hdr("regex", value="v[0-9]+"),
        hdr("range", start=10, end=20),
        hdr("present", name="x-p"),
        hdr("absent", rule="present", name="x-p", invert=True),
        hdr("inverted", rule="exact", value="a", invert=True),
        hdr("joined", rule="exact", value="a,b"),
        FALLBACK,
    ))

    def h(*pairs: tuple[str, str]) -> dict[str, Any]:
        return {"headers": list(pairs)}

    await check(client, proxy, [
        ("/h/exact", h(("x-h", "a")), "hdr-exact"),
        ("/h/exact", h(("x-h", "ab")), "fallback"),
        ("/h/exact", {}, "fallback"),
        ("/h/prefix", h(("x-h", "abc")), "hdr-prefix"),
        ("/h/prefix", h(("x-h", "xab")), "fallback"),
        ("/h/suffix", h(("x-h", "xyz")), "hdr-suffix"),
        ("/h/suffix", h(("x-h", "yzx")), "fallback"),
        ("/h/regex", h(("x-h", "v12")), "hdr-regex"),
        ("/h/regex", h(("x-h", "v12x")), "fallback"),  # full match
        ("/h/range", h(("x-h", "10")), "hdr-range"),  # [start, end)
        ("/h/range", h(("x-h", "19")), "hdr-range"),
        ("/h/range", h(("x-h", "20")), "fallback"),
        ("/h/range", h(("x-h", "-5")), "fallback"),
        ("/h/range", h(("x-h", "abc")), "fallback"),
        ("/h/present", h(("x-p", "anything")), "hdr-present"),
        ("/h/present", h(("x-p", "")), "hdr-present"),
        ("/h/present", {}, "fallback"),
        ("/h/absent", {}, "hdr-absent"),
        ("/h/absent", h(("x-p", "1")), "fallback"),
        ("/h/inverted", h(("x-h", "b")), "hdr-inverted"),
        ("/h/inverted", h(("x-h", "a")), "fallback"),
        ("/h/inverted", {}, "fallback"),  # a missing header fails even an inverted rule (Envoy)
        ("/h/joined", h(("x-h", "a"), ("x-h", "b")), "hdr-joined"),  # repeated: joined by ","
    ])


async def test_method_scheme_and_query(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_table(
        up,
        probe("method-post", prefix("/m", method="POST")),
        probe("scheme-https", prefix("/s", scheme="https")),
        probe("scheme-http", prefix("/s", scheme="http")),
        probe("query-exact", prefix("/q", query=[{"name": "v", "exact": "2"}])),
        probe("query-present", prefix("/q", query=[{"name": "debug"}])),
        FALLBACK,
    ))
    await check(client, proxy, [
        ("/m", {"method": "POST"}, "method-post"),
        ("/m", {"method": "GET"}, "fallback"),
        ("/m", {"method": "PUT"}, "fallback"),
        ("/s", {}, "scheme-http"),  # plaintext listener: scheme is http
        ("/q?v=2", {}, "query-exact"),
        ("/q?a=1&v=2", {}, "query-exact"),
        ("/q?v=%32", {}, "query-exact"),  # values are percent-decoded
        ("/q?v=3", {}, "fallback"),
        ("/q?v=3&v=2", {}, "fallback"),  # the first value of a repeated key counts
        ("/q?debug", {}, "query-present"),
        ("/q?debug=&v=3", {}, "query-present"),
        ("/q", {}, "fallback"),
    ])


async def test_port_match(make_core, upstreams, client):
    up = await upstreams.h1()
    routes = [FALLBACK]
    doc = snapshot([http_listener("l"), http_listener("l2")],
                   {"t": table(vhost("vh", routes))}, [cluster("c", [up.address])])
    proxy = make_core(doc)
    port2 = proxy.port("l2")
    # Same listeners again (ports kept), now with a route for the second one's port.
    routes.insert(0, probe("on-port-2", prefix("/", port=port2)))
    proxy.apply(doc)
    assert proxy.port("l2") == port2
    assert await which(client, proxy.url("/x", "l2")) == "on-port-2"
    assert await which(client, proxy.url("/x", "l")) == "fallback"


async def test_first_matching_route_wins(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_table(
        up,
        probe("short-prefix", prefix("/order")),
        probe("long-prefix", prefix("/order/deeper")),  # shadowed: not longest-prefix wins
        probe("prefix-first", prefix("/o2")),
        probe("exact-later", {"path": {"kind": "exact", "value": "/o2/x"}}),
        probe("exact-first", {"path": {"kind": "exact", "value": "/o3"}}),
        probe("prefix-later", prefix("/o3")),
        FALLBACK,
    ))
    await check(client, proxy, [
        ("/order/deeper", {}, "short-prefix"),
        ("/o2/x", {}, "prefix-first"),
        ("/o3", {}, "exact-first"),
        ("/o3x", {}, "prefix-later"),
    ])


async def test_virtual_host_by_authority(make_core, upstreams, client, h2_client):
    up = await upstreams.h1()

    def host(name: str, domains: list[str]) -> dict[str, Any]:
        return vhost(name, [probe(name, prefix("/"))], domains)

    doc = snapshot([http_listener("l"), http_listener("strict", "strict")], {
        "t": table(
            host("vh-exact", ["api.example.com"]),
            host("vh-suffix", ["*.example.com"]),
            host("vh-longer-suffix", ["*.b.example.com"]),
            host("vh-prefix", ["svc.*"]),
            host("vh-any", ["*"]),
        ),
        "strict": table(vhost("only", [route("only-r", "c", match=prefix("/"))],
                              ["known.local"])),
    }, [cluster("c", [up.address])])
    proxy = make_core(doc)

    def authority(a: str) -> dict[str, Any]:
        return {"headers": {"host": a}}

    await check(client, proxy, [
        ("/", authority("api.example.com"), "vh-exact"),
        ("/", authority("API.Example.COM"), "vh-exact"),  # case-insensitive
        ("/", authority("web.example.com"), "vh-suffix"),
        ("/", authority("x.b.example.com"), "vh-longer-suffix"),  # longest suffix wins
        ("/", authority("example.com"), "vh-any"),  # the wildcard stands for ≥ 1 character
        ("/", authority("svc.local"), "vh-prefix"),
        ("/", authority("api.example.com:8080"), "vh-any"),  # the port is part of the authority
        ("/", authority("elsewhere.org"), "vh-any"),
    ])
    # HTTP/2: the :authority pseudo-header selects the virtual host.
    r = await h2_client.get(proxy.url("/"), headers={"host": "web.example.com"})
    assert (r.http_version, r.json()["path"]) == ("HTTP/2", "/vh-suffix")
    # No virtual host for the authority: 404.
    r = await client.get(proxy.url("/", "strict"), headers={"host": "unknown.local"})
    assert r.status_code == 404
    r = await client.get(proxy.url("/", "strict"), headers={"host": "known.local"})
    assert r.status_code == 200


async def test_gateway_chaining_rewrites_prefix_and_host(make_core, upstreams, client):
    up = await upstreams.h1()
    doc = snapshot([http_listener("l", "gw")], {
        "gw": table(vhost("gw", [
            route("gw-chapter", next_table="svc", match=prefix("/chapter"),
                  rewrite={"prefix": "/", "host": "svc.local"}),
            route("gw-nohost", next_table="svc", match=prefix("/nohost")),
        ])),
        "svc": table(vhost("svc", [
            route("svc-all", "c", match=prefix("/")),
        ], ["svc.local"])),
    }, [cluster("c", [up.address])])
    proxy = make_core(doc)

    r = await client.get(proxy.url("/chapter/page?x=1"), headers={"host": "gateway.example"})
    assert r.status_code == 200
    assert r.json()["target"] == "/page?x=1"  # App Mesh default prefix rewrite "/"
    assert up.seen[-1].header("host") == "svc.local"
    assert up.seen[-1].header_all("host") == ["svc.local"]

    r = await client.get(proxy.url("/chapter"))
    assert r.json()["target"] == "/"

    # Without the host rewrite the service table has no virtual host for the authority.
    r = await client.get(proxy.url("/nohost/page"))
    assert r.status_code == 404
    stats = proxy.stats()["routes"]
    assert stats["gw-chapter"]["rq_total"] == 2
    assert stats["svc-all"]["rq_total"] == 2


async def test_no_route_is_404(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(one_table(up, probe("only-api", prefix("/api"))))
    r = await client.get(proxy.url("/other"))
    assert r.status_code == 404
    assert r.text == "no route\n"
    assert up.requests == 0
    assert proxy.stats()["listeners"]["l"]["no_route"] == 1
    assert await which(client, proxy.url("/api/x")) == "only-api"


async def test_route_table_cycle_ends_in_a_local_reply(make_core, upstreams, client):
    up = await upstreams.h1()
    proxy = make_core(snapshot(
        [http_listener()],
        {"t": table(vhost("vh", [route("loop", next_table="t", match=prefix("/"))]))},
        [cluster("c", [up.address])],
    ))
    with trio.fail_after(5):
        r = await client.get(proxy.url("/"))
    assert r.status_code == 404
    assert up.requests == 0
