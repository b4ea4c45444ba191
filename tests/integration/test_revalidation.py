"""Validation of stored entries with the origin (RFC 9111 §4.3), over real sockets."""
from __future__ import annotations

import asyncio
import hashlib
import time

from aiohttp import web

from edge.http.dates import format_http_date
from tests.conftest import until


def _etag_origin(origin, path, body: bytes, etag='"v1"', cc="max-age=0", not_modified_headers=None, ctype="text/plain"):
    """An origin that answers If-None-Match for ``etag`` with a 304."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag, **(not_modified_headers or {})})
        return web.Response(body=body, headers={"ETag": etag, "Cache-Control": cc, "X-Version": "1", "Content-Type": ctype})

    origin.route(path, handler)


async def test_9111_4_3_1_stale_entry_is_validated_and_304_freshens_it(origin, make_edge, client):
    """§4.3.1 If-None-Match; §4.3.4 + §3.2 the 304's fields replace the stored ones; body kept."""
    _etag_origin(origin, "/v", b"hello", not_modified_headers={"Cache-Control": "max-age=60", "X-Version": "2"})
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/v") as r:
        assert await r.read() == b"hello" and "stored" in r.headers["Cache-Status"]
        assert r.headers["X-Version"] == "1"
    async with client.get(edge.url + "/v", headers={"If-None-Match": '"other"'}) as r:
        assert r.status == 200 and await r.read() == b"hello"
        assert r.headers["X-Version"] == "2"
        assert r.headers["Cache-Status"].startswith("edge; fwd=stale; fwd-status=304; stored; ttl=")
        assert 59 <= int(r.headers["Cache-Status"].rsplit("ttl=", 1)[1]) <= 60
        assert r.headers["Content-Length"] == "5"
    sent = origin.requests[1]["headers"]
    assert sent["If-None-Match"] == '"v1"'  # the client's own conditional was replaced
    async with client.get(edge.url + "/v") as r:
        assert await r.read() == b"hello" and r.headers["Cache-Status"].startswith("edge; hit; ttl=")
        assert r.headers["X-Version"] == "2"
    assert origin.hits["/v"] == 2


async def test_9111_4_3_2_client_conditional_is_evaluated_after_validation(origin, make_edge, client):
    _etag_origin(origin, "/c", b"hello")
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/c")).read()
    async with client.get(edge.url + "/c", headers={"If-None-Match": '"v1"'}) as r:
        assert r.status == 304 and "fwd-status=304" in r.headers["Cache-Status"]


async def test_9111_4_3_1_last_modified_only_sends_if_modified_since(origin, make_edge, client):
    lm = format_http_date(time.time() - 3600)

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-Modified-Since") == lm:
            return web.Response(status=304, headers={"Cache-Control": "max-age=60"})
        return web.Response(body=b"lm-body", headers={"Last-Modified": lm, "Cache-Control": "max-age=0"})

    origin.route("/lm", handler)
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/lm")).read()
    async with client.get(edge.url + "/lm") as r:
        assert await r.read() == b"lm-body" and "fwd-status=304" in r.headers["Cache-Status"]
    sent = origin.requests[1]["headers"]
    assert sent["If-Modified-Since"] == lm and "If-None-Match" not in sent
    async with client.get(edge.url + "/lm") as r:
        assert "hit" in r.headers["Cache-Status"]


async def test_9111_5_2_2_4_no_cache_with_etag_is_stored_and_validated_every_time(origin, make_edge, client):
    _etag_origin(origin, "/nc", b"nc-body", cc="no-cache, max-age=600")
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/nc") as r:
        assert await r.read() == b"nc-body" and "stored" in r.headers["Cache-Status"]
    for _ in range(3):
        async with client.get(edge.url + "/nc") as r:
            assert await r.read() == b"nc-body"
            assert "fwd=stale; fwd-status=304" in r.headers["Cache-Status"]
    assert origin.hits["/nc"] == 4
    assert all(req["headers"].get("If-None-Match") == '"v1"' for req in origin.requests[1:])


async def test_9111_5_2_1_4_request_no_cache_validates_the_stored_entry(origin, make_edge, client):
    _etag_origin(origin, "/rq", b"body", cc="max-age=600")
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/rq")).read()
    async with client.get(edge.url + "/rq", headers={"Cache-Control": "no-cache"}) as r:
        assert await r.read() == b"body"
        assert "fwd=request; fwd-status=304" in r.headers["Cache-Status"]
    assert origin.requests[1]["headers"]["If-None-Match"] == '"v1"'


async def test_9111_4_3_3_a_200_replaces_the_stored_entry(origin, make_edge, client):
    version = {"n": 1}

    async def handler(request: web.Request) -> web.StreamResponse:
        etag = f'"v{version["n"]}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=f"body{version['n']}".encode(), headers={"ETag": etag, "Cache-Control": "max-age=0"})

    origin.route("/r", handler)
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/r")).read()
    version["n"] = 2
    async with client.get(edge.url + "/r") as r:
        assert await r.read() == b"body2"
        assert "fwd=stale; stored" in r.headers["Cache-Status"] and "fwd-status" not in r.headers["Cache-Status"]
    async with client.get(edge.url + "/r") as r:
        assert await r.read() == b"body2" and "fwd-status=304" in r.headers["Cache-Status"]
    assert origin.requests[2]["headers"]["If-None-Match"] == '"v2"'


async def test_304_without_stored_entry_passes_through(origin, make_edge, client):
    _etag_origin(origin, "/p", b"x")
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/p", headers={"If-None-Match": '"v1"'}) as r:
        assert r.status == 304 and "fwd-status" not in r.headers["Cache-Status"]


async def test_collapsed_validation_is_one_origin_request(origin, make_edge, client):
    """A validation is a fetch for its key: concurrent requests wait for it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            await asyncio.sleep(0.3)
            return web.Response(status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=60"})
        return web.Response(body=b"col", headers={"ETag": '"v1"', "Cache-Control": "max-age=0"})

    origin.route("/col", handler)
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/col")).read()

    async def get():
        async with client.get(edge.url + "/col") as r:
            return await r.read(), r.headers["Cache-Status"]

    results = await asyncio.gather(*(get() for _ in range(5)))
    assert all(body == b"col" for body, _ in results)
    assert origin.hits["/col"] == 2
    assert sum("collapsed" in status for _, status in results) == 4


async def test_9111_4_3_4_large_disk_entry_keeps_its_body_after_304(origin, make_edge, client):
    body = bytes(range(256)) * (12 * 1024)  # 3 MiB: streamed, disk only
    _etag_origin(origin, "/big", body, not_modified_headers={"Cache-Control": "max-age=60", "X-Version": "2"},
                 ctype="application/octet-stream")
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/big") as r:
        assert await r.read() == body and "stored" in r.headers["Cache-Status"]
    disk = edge.store.disk
    await until(lambda: len(disk.cache) >= 2, "the streamed commit, which finishes after the response")
    files_before = len(disk.cache)
    async with client.get(edge.url + "/big") as r:
        got = await r.read()
        assert "fwd=stale; fwd-status=304" in r.headers["Cache-Status"]
        assert r.headers["X-Version"] == "2"
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    await edge.store.drain()
    assert len(disk.cache) == files_before  # metadata rewritten, no body copied
    async with client.get(edge.url + "/big") as r:
        assert await r.read() == body and "hit" in r.headers["Cache-Status"]
        assert r.headers["X-Version"] == "2"
    assert origin.hits["/big"] == 2


async def test_set_cookie_on_a_304_reaches_only_that_client(origin, make_edge, client):
    """A cookie the origin sets while validating belongs to the one client
    that asked; the shared entry must never carry it."""
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=60", "Set-Cookie": "session=VICTIM"})
        return web.Response(text="body", headers={"ETag": '"v1"', "Cache-Control": "max-age=0"})

    origin.route("/cookie", page)
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/cookie") as r:
        await r.read()
    async with client.get(edge.url + "/cookie") as r:
        assert await r.text() == "body" and "fwd-status=304" in r.headers["Cache-Status"]
        assert r.headers.get("Set-Cookie") == "session=VICTIM"
    async with client.get(edge.url + "/cookie") as r:
        assert "hit" in r.headers["Cache-Status"] and "Set-Cookie" not in r.headers
