"""Conditional requests and request directives answered by the cache, over
real sockets (RFC 9110 §13, RFC 9111 §4.3.2, §5.2.1)."""
from __future__ import annotations

import asyncio
import re
import time

from edge.http.dates import format_http_date

LM = "Tue, 15 Nov 1994 08:12:31 GMT"


async def _store(client, edge, origin, path, headers):
    origin.respond(path, "hello", headers=headers)
    async with client.get(edge.url + path) as r:
        assert r.status == 200 and "stored" in r.headers["Cache-Status"]
        await r.read()


async def test_if_none_match_gets_304_from_cache(origin, make_edge, client):
    """RFC 9110 §13.1.2, §15.4.5: 304 with the listed fields, no body, origin untouched."""
    edge = await make_edge(quick_origin=origin.url)
    await _store(client, edge, origin, "/e", {"Cache-Control": "max-age=60", "ETag": '"v1"', "Vary": "Accept-Encoding", "Content-Location": "/e.txt", "Last-Modified": LM})
    async with client.get(edge.url + "/e", headers={"If-None-Match": '"x", "v1"'}) as r:
        assert r.status == 304
        assert await r.read() == b""
        h = r.headers
        assert h["ETag"] == '"v1"' and h["Vary"] == "Accept-Encoding" and h["Content-Location"] == "/e.txt"
        assert "max-age" in h["Cache-Control"] and "Date" in h and int(h["Age"]) >= 0
        assert h["Cache-Status"].startswith("edge; hit")
        assert h["X-Request-Id"] and h["Via"].endswith("1.1 edge")
        assert "Last-Modified" not in h  # §15.4.5: ETag present
    async with client.head(edge.url + "/e", headers={"If-None-Match": '"v1"'}) as r:
        assert r.status == 304
    async with client.get(edge.url + "/e", headers={"If-None-Match": '"v2"'}) as r:
        assert r.status == 200 and await r.text() == "hello"
    assert origin.hits["/e"] == 1


async def test_if_none_match_weak_comparison(origin, make_edge, client):
    """RFC 9110 §8.8.3.2: If-None-Match uses the weak comparison."""
    edge = await make_edge(quick_origin=origin.url)
    await _store(client, edge, origin, "/w", {"Cache-Control": "max-age=60", "ETag": 'W/"v1"'})
    async with client.get(edge.url + "/w", headers={"If-None-Match": '"v1"'}) as r:
        assert r.status == 304
    async with client.get(edge.url + "/w", headers={"If-None-Match": "garbage"}) as r:
        assert r.status == 200  # malformed: matches nothing
    assert origin.hits["/w"] == 1


async def test_if_modified_since(origin, make_edge, client):
    """RFC 9110 §13.1.3: Last-Modified <= date -> 304; earlier date or invalid -> 200."""
    edge = await make_edge(quick_origin=origin.url)
    await _store(client, edge, origin, "/m", {"Cache-Control": "max-age=60", "Last-Modified": LM})
    async with client.get(edge.url + "/m", headers={"If-Modified-Since": LM}) as r:
        assert r.status == 304 and r.headers["Cache-Status"].startswith("edge; hit")
        assert r.headers["Last-Modified"] == LM  # §15.4.5: no ETag, guides updates
    async with client.get(edge.url + "/m", headers={"If-Modified-Since": "Mon, 14 Nov 1994 08:12:31 GMT"}) as r:
        assert r.status == 200 and await r.text() == "hello"
    async with client.get(edge.url + "/m", headers={"If-Modified-Since": "whenever"}) as r:
        assert r.status == 200
    assert origin.hits["/m"] == 1


async def test_if_match_mismatch_is_412(origin, make_edge, client):
    """RFC 9110 §13.1.1: strong comparison; failure -> 412, from the cache."""
    edge = await make_edge(quick_origin=origin.url)
    await _store(client, edge, origin, "/p", {"Cache-Control": "max-age=60", "ETag": '"v1"'})
    async with client.get(edge.url + "/p", headers={"If-Match": '"v2"'}) as r:
        assert r.status == 412
        assert "precondition" in await r.text()
        assert re.fullmatch(r"edge; hit; ttl=(59|60); detail=precondition-failed", r.headers["Cache-Status"])
    async with client.get(edge.url + "/p", headers={"If-Match": 'W/"v1"'}) as r:
        assert r.status == 412
    async with client.get(edge.url + "/p", headers={"If-Match": '"v1"'}) as r:
        assert r.status == 200 and await r.text() == "hello"
    assert origin.hits["/p"] == 1


async def test_only_if_cached(origin, make_edge, client):
    """RFC 9111 §5.2.1.7: 504 on a miss without contacting the origin; a hit when stored."""
    edge = await make_edge(quick_origin=origin.url)
    origin.respond("/o", "hello", headers={"Cache-Control": "max-age=60"})
    async with client.get(edge.url + "/o", headers={"Cache-Control": "only-if-cached"}) as r:
        assert r.status == 504
        assert "only-if-cached" in r.headers["Cache-Status"]
    assert origin.hits["/o"] == 0
    await (await client.get(edge.url + "/o")).read()
    async with client.get(edge.url + "/o", headers={"Cache-Control": "only-if-cached"}) as r:
        assert r.status == 200 and await r.text() == "hello"
        assert r.headers["Cache-Status"].startswith("edge; hit")
    async with client.get(edge.url + "/o", headers={"Cache-Control": "only-if-cached, no-cache"}) as r:
        assert r.status == 504
    assert origin.hits["/o"] == 1


async def test_max_stale_serves_a_stale_entry(origin, make_edge, client):
    """RFC 9111 §5.2.1.2; the negative ttl says stale (RFC 9211 §2.4)."""
    edge = await make_edge(quick_origin=origin.url)
    await _store(client, edge, origin, "/s", {"Cache-Control": "max-age=1"})
    await _store(client, edge, origin, "/mr", {"Cache-Control": "max-age=1, must-revalidate"})
    await asyncio.sleep(1.2)  # past max-age: the clock itself, not a state to wait for
    async with client.get(edge.url + "/s", headers={"Cache-Control": "max-stale=60"}) as r:
        assert r.status == 200 and await r.text() == "hello"
        cs = r.headers["Cache-Status"]
        assert cs.startswith("edge; hit; ttl=") and int(cs.split("ttl=")[1]) <= 0
    async with client.get(edge.url + "/mr", headers={"Cache-Control": "max-stale"}) as r:
        assert "fwd=stale" in r.headers["Cache-Status"]  # §5.2.2.2
    assert origin.hits["/s"] == 1 and origin.hits["/mr"] == 2


async def test_min_fresh_and_max_age_force_a_fetch(origin, make_edge, client):
    """RFC 9111 §5.2.1.3, §5.2.1.1: a fresh entry the client refuses -> fwd=request."""
    edge = await make_edge(quick_origin=origin.url)
    now = time.time()
    await _store(client, edge, origin, "/f", {"Cache-Control": "max-age=30", "Date": format_http_date(now)})
    async with client.get(edge.url + "/f", headers={"Cache-Control": "min-fresh=10"}) as r:
        assert r.headers["Cache-Status"].startswith("edge; hit")
    async with client.get(edge.url + "/f", headers={"Cache-Control": "min-fresh=3600"}) as r:
        assert r.status == 200 and "fwd=request" in r.headers["Cache-Status"]
    assert origin.hits["/f"] == 2
