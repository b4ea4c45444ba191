"""Background fetches (stale-while-revalidate refreshes, range fills) and
request bodies: abuse and edge cases, over real sockets."""
from __future__ import annotations

import asyncio

from aiohttp import web

from tests.conftest import stored_field, until


async def _get(client, url, **kw):
    async with client.get(url, **kw) as r:
        return r.status, await r.read(), r.headers


# 100-continue must be sent also when the WAF does not read the body head first
async def test_expect_100_continue_is_answered_with_the_waf_off(origin, make_edge):
    async def echo(request):
        return web.Response(text=str(len(await request.read())))

    origin.route("/up", echo)
    edge = await make_edge(quick_origin=origin.url, policy={"filters": {"waf": {"mode": "off"}}})
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
    await writer.drain()
    try:
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    except asyncio.TimeoutError:
        interim = b"<nothing within 3 s>"
    writer.close()
    assert interim.startswith(b"HTTP/1.1 100"), interim


# Range amplification: range misses of an unstorable object must not each fetch it whole
async def test_range_requests_for_an_unstorable_object_do_not_pull_it_again(origin, make_edge, client):
    big = b"x" * 1_000_000
    sent = {"full": 0, "ranged": 0}

    async def handler(request):
        if "Range" in request.headers:
            sent["ranged"] += 1
            return web.Response(status=206, body=big[:1], headers={"Content-Range": "bytes 0-0/1000000", "Cache-Control": "no-store"})
        sent["full"] += 1
        return web.Response(body=big, headers={"Cache-Control": "no-store", "Content-Type": "video/mp4"})

    origin.route("/v", handler)
    edge = await make_edge(quick_origin=origin.url)
    # Pauses, not waits for a state: time for a wrong whole fetch to go out
    # (absence has no event to wait for).
    for _ in range(5):
        st, body, h = await _get(client, edge.url + "/v", headers={"Range": "bytes=0-0"})
        assert st == 206 and len(body) == 1
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    # One whole fetch finds out it cannot be stored; the next range requests
    # do not pull the object again.
    assert sent["full"] == 1 and sent["ranged"] == 5, sent


# A big background fill does not hold up misses for the same key: they read
# along as the body arrives, and the origin sends it once
async def test_a_plain_get_reads_along_with_a_big_background_fill(origin, make_edge, client):
    gate = asyncio.Event()
    calls = {"full": 0, "ranged": 0}

    async def handler(request):
        if "Range" in request.headers:
            calls["ranged"] += 1
            return web.Response(status=206, body=b"a", headers={"Content-Range": "bytes 0-0/2000000"})
        calls["full"] += 1
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"})
        resp.content_length = 2_000_000
        await resp.prepare(request)
        await resp.write(b"a" * 1_000_000)
        await gate.wait()  # the background fill stalls half-way
        await resp.write(b"a" * 1_000_000)
        return resp

    origin.route("/big", handler)
    edge = await make_edge(quick_origin=origin.url)
    st, body, h = await _get(client, edge.url + "/big", headers={"Range": "bytes=0-0"})
    assert st == 206
    await until(lambda: calls["full"] == 1, "the background fill went out")
    async with asyncio.timeout(10):  # against a hang only
        async with client.get(edge.url + "/big") as r:
            assert r.status == 200 and r.headers["Cache-Status"].startswith("edge; hit;")
            assert r.headers["Cache-Status"].endswith("; collapsed")
            first = await r.content.readexactly(1_000_000)  # what the stalled fill has so far
            gate.set()
            rest = await r.read()
    assert first + rest == b"a" * 2_000_000
    assert calls == {"full": 1, "ranged": 1}


# A refresh must not take the client's If-None-Match for the edge's own validator
async def test_a_clients_validator_never_freshens_the_stored_entry(origin, make_edge, client):
    n = {"n": 0}

    async def handler(request):
        n["n"] += 1
        if n["n"] == 1:  # v1: no validator, stale on arrival, swr
            return web.Response(body=b"v1", headers={"Cache-Control": "max-age=1, stale-while-revalidate=60", "Age": "5", "Content-Type": "text/plain"})
        if request.headers.get("If-None-Match") == 'W/"v2"':
            return web.Response(status=304, headers={"ETag": 'W/"v2"', "Cache-Control": "max-age=600"})
        return web.Response(body=b"v2", headers={"ETag": 'W/"v2"', "Cache-Control": "max-age=600", "Content-Type": "text/plain"})

    origin.route("/p", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/p")
    st, body, h = await _get(client, edge.url + "/p", headers={"If-None-Match": 'W/"v2"'})
    await until(lambda: n["n"] >= 2, "the refresh went out")
    # Stored fresh (max-age=600) whether as v2 or, wrongly, as v1 freshened by a 304.
    await until(lambda: "max-age=600" in stored_field(edge, "/p", "Cache-Control"),
                "the refresh's answer was stored")
    st, body, h = await _get(client, edge.url + "/p")
    assert body == b"v2", (body, dict(h))


# A client's Cache-Control: no-store or Authorization must not evict a stored entry via a refresh
async def test_a_client_cannot_evict_an_entry_through_a_refresh(origin, make_edge, client):
    n = {"n": 0}

    async def handler(request):
        n["n"] += 1
        return web.Response(body=b"v%d" % n["n"], headers={"Cache-Control": "max-age=1, stale-while-revalidate=60", "Age": "5", "Content-Type": "text/plain"})

    origin.route("/e", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/e")
    await _get(client, edge.url + "/e", headers={"Authorization": "Bearer x"})
    await asyncio.sleep(0.3)  # time for a wrong refresh to evict it: absence has no event to wait for
    st, body, h = await _get(client, edge.url + "/e")
    assert "stale-while-revalidate" in h["Cache-Status"] or "hit" in h["Cache-Status"], (body, h["Cache-Status"])


# A background fetch is the client's request sent again: same Host, same path
async def test_background_fetches_ask_the_origin_for_the_clients_host_and_path(origin, make_edge, client):
    seen: list[tuple[str, str, bool]] = []

    async def handler(request):
        seen.append((request.headers.get("Host", ""), request.path, "Range" in request.headers))
        if "Range" in request.headers:
            return web.Response(status=206, body=b"x" * 10, headers={"Content-Range": "bytes 0-9/4096",
                                                                      "Cache-Control": "max-age=60"})
        # Already 5 s old with a 1 s lifetime: stale at once, refreshed in the background.
        return web.Response(body=b"x" * 4096, headers={"Cache-Control": "max-age=1, stale-while-revalidate=60",
                                                       "Age": "5", "Content-Type": "text/plain"})

    origin.route("/obj", handler)
    origin.route("/ranged", handler)
    edge = await make_edge(quick_origin=origin.url)
    host = {"Host": "shop.example.de"}
    assert (await _get(client, edge.url + "/obj", headers=host))[0] == 200  # stored, already stale
    status, _, h = await _get(client, edge.url + "/obj", headers=host)
    assert status == 200 and "stale-while-revalidate" in h["Cache-Status"]
    await until(lambda: len(seen) == 2, "the background refresh reached the origin")
    # A range miss starts a whole-object fill in the background.
    status, _, _ = await _get(client, edge.url + "/ranged", headers={**host, "Range": "bytes=0-9"})
    assert status == 206
    await until(lambda: any(p == "/ranged" and not ranged for _, p, ranged in seen), "the range fill reached the origin")
    assert {(h, p) for h, p, _ in seen} == {("shop.example.de", "/obj"), ("shop.example.de", "/ranged")}, seen
