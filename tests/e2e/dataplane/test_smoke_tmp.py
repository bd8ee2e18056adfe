from .support import one_route

async def test_smoke(make_core, upstreams, client, h2_client):
    up = await upstreams.h1()
    a = await upstreams.asgi()
    p = make_core(one_route([up.address]))
    r = await client.get(p.url("/x?y=1"), headers={"connection": "keep-alive, x-foo", "x-foo": "1"})
    print(r.status_code, r.headers, r.json())
    r = await h2_client.get(p.url("/x?y=1"))
    print(r.http_version, r.status_code, r.headers, r.json())
    p.apply(one_route([a.address], "http2"))
    r = await client.get(p.url("/x?y=1"))
    print(r.status_code, r.headers, r.json())
    r = await h2_client.get(p.url("/x?y=1"))
    print(r.http_version, r.status_code, r.headers, r.json())
    print(p.stats())
