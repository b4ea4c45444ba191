"""Stale serving (RFC 5861), the client no-cache switch, invalidation after
unsafe methods (RFC 9111 §4.4), targeted cache fields (RFC 9213) and the
304 / HEAD update rules (RFC 9111 §4.3.4, §4.3.5), over real sockets."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.conftest import stored, stored_field, until


def _versioned(origin, path, headers, *, delay: float = 0.0):
    """An origin whose body names how often it was asked: v1, v2, ..."""
    count = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        count["n"] += 1
        n = count["n"]
        if n > 1 and delay:
            await asyncio.sleep(delay)
        return web.Response(body=f"v{n}".encode(), headers={"Content-Type": "text/plain", **headers})

    origin.route(path, handler)
    return count


async def _get(client, url, **kw):
    async with client.get(url, **kw) as r:
        return r.status, await r.read(), r.headers


# --- RFC 5861 §3 stale-while-revalidate ---------------------------------------------


async def test_5861_3_stale_while_revalidate_serves_stale_and_refreshes_once(origin, make_edge, client):
    # Age 5 > max-age 1: stale on arrival, within the 60 s window.
    count = _versioned(origin, "/swr", {"Cache-Control": "max-age=1, stale-while-revalidate=60", "Age": "5"}, delay=0.2)
    edge = await make_edge(quick_origin=origin.url)
    status, body, h = await _get(client, edge.url + "/swr")
    assert body == b"v1" and "stored" in h["Cache-Status"]
    # Twenty clients at once while stale: all get v1 at once, one refresh goes out.
    results = await asyncio.gather(*(_get(client, edge.url + "/swr") for _ in range(20)))
    for status, body, h in results:
        assert status == 200 and body == b"v1"
        assert "detail=stale-while-revalidate" in h["Cache-Status"]
        assert int(h["Age"]) >= 5
    await until(lambda: count["n"] == 2, "one refresh went out")
    await until(lambda: (hit := stored(edge, "/swr")) is not None and hit.body == b"v2", "the refreshed entry was stored")
    status, body, h = await _get(client, edge.url + "/swr")
    assert body == b"v2"
    assert count["n"] in (2, 3)  # v2 itself arrived stale (Age 5): at most one more refresh


async def test_5861_3_refresh_uses_validators_and_304_freshens(origin, make_edge, client):
    seen = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"e1"':
            return web.Response(status=304, headers={"ETag": '"e1"', "Cache-Control": "max-age=600"})
        return web.Response(body=b"body", headers={"ETag": '"e1"', "Cache-Control": "max-age=1, stale-while-revalidate=60", "Age": "3"})

    origin.route("/v", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/v")
    _, body, h = await _get(client, edge.url + "/v")
    assert body == b"body" and "stale-while-revalidate" in h["Cache-Status"]
    await until(lambda: len(seen) == 2, "the refresh went out")
    assert seen[1] == '"e1"'
    await until(lambda: "max-age=600" in stored_field(edge, "/v", "Cache-Control"),
                "the 304's fields were stored")
    _, body, h = await _get(client, edge.url + "/v")
    assert body == b"body" and h["Cache-Status"].startswith("edge; hit; ttl=")
    assert len(seen) == 2


async def test_5861_3_requests_that_waited_for_the_fetch_are_served_stale_as_a_lookup_would(origin, make_edge, client):
    """Requests that waited for another's fetch of their key decide as a
    lookup would: a stale answer within its stale-while-revalidate window
    is served to all of them, with one refresh, not fetched by each."""
    gate = asyncio.Event()
    count = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        count["n"] += 1
        n = count["n"]
        if n == 1:
            await gate.wait()
        # Age 5 > max-age 1: stale on arrival, within the 60 s window.
        return web.Response(body=f"v{n}".encode(), headers={"Cache-Control": "max-age=1, stale-while-revalidate=60",
                                                            "Age": "5", "Content-Type": "text/plain"})

    origin.route("/herd", handler)
    edge = await make_edge(quick_origin=origin.url)
    fills = edge.node.state.pipeline.fills
    first = asyncio.ensure_future(_get(client, edge.url + "/herd"))
    await until(lambda: count["n"] == 1, "the first request reaches the origin")
    waiters = [asyncio.ensure_future(_get(client, edge.url + "/herd")) for _ in range(4)]
    await until(lambda: fills.waiting == 4, "the others wait for its fetch")
    gate.set()
    status, body, h = await first
    assert body == b"v1" and "stored" in h["Cache-Status"]
    for status, body, h in await asyncio.gather(*waiters):
        assert status == 200 and body == b"v1"
        assert h["Cache-Status"].endswith("; collapsed; detail=stale-while-revalidate")
    # Each waiter asked for its refresh before its answer was sent: once
    # none is under way, every one that started has reached the origin.
    await until(lambda: count["n"] >= 2 and fills.background == 0, "the background refresh is over")
    assert count["n"] == 2


async def test_5861_3_requests_reading_a_large_answer_along_decide_as_a_lookup_would(origin, make_edge, client):
    """The same for a body too large to wait for whole, which waiters read
    as it arrives (edge/cache/collapse.py): whatever their own directives
    that leave staleness to the cache, they are served the stale answer from
    the one fetch, marked as such, and fetch nothing themselves."""
    size, before = 4 << 20, 1 << 20
    data = bytes(range(256)) * (size // 256)
    gate = asyncio.Event()
    count = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        count["n"] += 1
        # Age 5 > max-age 1: stale on arrival, within the 60 s window.
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=1, stale-while-revalidate=60", "Age": "5",
                                           "Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        await resp.write(data[:before])
        if count["n"] == 1:
            await gate.wait()
        await resp.write(data[before:])
        return resp

    origin.route("/big", handler)
    edge = await make_edge(quick_origin=origin.url)
    guard = 20  # seconds: only against a hanging test
    first = await asyncio.wait_for(client.get(edge.url + "/big"), guard)
    assert "stored" in first.headers["Cache-Status"]
    waiters = []
    for headers in ({"Cache-Control": "stale-if-error=60"}, {"Cache-Control": "no-transform"}, {}):
        waiters.append(await asyncio.wait_for(client.get(edge.url + "/big", headers=headers), guard))
    for r in waiters:
        assert r.headers["Cache-Status"].endswith("; collapsed; detail=stale-while-revalidate"), r.headers["Cache-Status"]
    gate.set()
    for r in (first, *waiters):
        assert await asyncio.wait_for(r.read(), guard) == data
        r.release()
    assert count["n"] == 1


async def test_tenant_default_stale_while_revalidate_applies_when_origin_names_none(origin, make_edge, client):
    count = _versioned(origin, "/d", {"Cache-Control": "max-age=1", "Age": "5"})
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"stale_while_revalidate": 60}})
    await _get(client, edge.url + "/d")
    _, body, h = await _get(client, edge.url + "/d")
    assert body == b"v1" and "stale-while-revalidate" in h["Cache-Status"]
    await until(lambda: count["n"] == 2, "one refresh went out")


async def test_9111_4_2_4_must_revalidate_forbids_the_tenant_default(origin, make_edge, client):
    count = _versioned(origin, "/mr", {"Cache-Control": "max-age=1, must-revalidate", "Age": "5", "ETag": '"x"'})
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"stale_while_revalidate": 60, "stale_if_error": 60}})
    await _get(client, edge.url + "/mr")
    _, body, h = await _get(client, edge.url + "/mr")
    assert body == b"v2" and h["Cache-Status"].startswith("edge; fwd=stale")
    assert count["n"] == 2
    await origin.stop()
    status, _, h = await _get(client, edge.url + "/mr")
    assert status == 502  # never stale with must-revalidate


# --- RFC 5861 §4 stale-if-error -----------------------------------------------------------


async def test_5861_4_stale_if_error_when_origin_is_stopped(origin, make_edge, client):
    origin.respond("/e", b"kept", headers={"Cache-Control": "max-age=1, stale-if-error=600", "Age": "5"})
    edge = await make_edge(quick_origin=origin.url)
    _, body, h = await _get(client, edge.url + "/e")
    assert body == b"kept" and "stored" in h["Cache-Status"]
    await origin.stop()
    status, body, h = await _get(client, edge.url + "/e")
    assert status == 200 and body == b"kept"
    assert "detail=stale-if-error" in h["Cache-Status"] and "fwd=stale" in h["Cache-Status"]


async def test_5861_4_stale_if_error_on_origin_503(origin, make_edge, client):
    state = {"fail": False}

    async def handler(request: web.Request) -> web.StreamResponse:
        if state["fail"]:
            return web.Response(status=503, text="down")
        return web.Response(body=b"good", headers={"Cache-Control": "max-age=1", "Age": "5", "ETag": '"g"'})

    origin.route("/s", handler)
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"stale_if_error": 300}})
    await _get(client, edge.url + "/s")
    state["fail"] = True
    status, body, h = await _get(client, edge.url + "/s")
    assert status == 200 and body == b"good"
    assert "fwd-status=503" in h["Cache-Status"] and "stale-if-error" in h["Cache-Status"]
    # A 404 is an answer, not an error: it goes through.
    state["fail"] = False


async def test_without_stale_if_error_a_stopped_origin_is_a_502(origin, make_edge, client):
    origin.respond("/n", b"x", headers={"Cache-Control": "max-age=1", "Age": "5", "ETag": '"n"'})
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/n")
    await origin.stop()
    status, _, h = await _get(client, edge.url + "/n")
    assert status == 502 and "stale-if-error" not in h["Cache-Status"]


async def test_stale_if_error_window_is_bounded(origin, make_edge, client):
    # 5 s old, lifetime 1 s: 4 s stale, past a 2 s window.
    origin.respond("/w", b"x", headers={"Cache-Control": "max-age=1, stale-if-error=2", "Age": "5", "ETag": '"w"'})
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/w")
    await origin.stop()
    status, _, _ = await _get(client, edge.url + "/w")
    assert status == 502


# --- RFC 9111 §5.2.1.4 and the tenant switch -------------------------------------------


async def test_client_no_cache_revalidates_by_default(origin, make_edge, client):
    count = _versioned(origin, "/c", {"Cache-Control": "max-age=600"})
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/c")
    _, body, h = await _get(client, edge.url + "/c", headers={"Cache-Control": "no-cache"})
    assert body == b"v2" and "fwd=request" in h["Cache-Status"]
    assert count["n"] == 2


async def test_client_no_cache_ignored_when_the_tenant_says_so(origin, make_edge, client):
    count = _versioned(origin, "/c", {"Cache-Control": "max-age=600"})
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"client_no_cache": "ignore"}})
    await _get(client, edge.url + "/c")
    for headers in ({"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}):
        _, body, h = await _get(client, edge.url + "/c", headers=headers)
        assert body == b"v1" and h["Cache-Status"].startswith("edge; hit")
    assert count["n"] == 1


# --- RFC 9111 §4.4 invalidation ------------------------------------------------------------


async def test_9111_4_4_successful_post_invalidates_the_url(origin, make_edge, client):
    count = _versioned(origin, "/item", {"Cache-Control": "max-age=600"})
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/item")
    _, body, h = await _get(client, edge.url + "/item")
    assert body == b"v1" and "hit" in h["Cache-Status"]
    async with client.post(edge.url + "/item", data=b"x") as r:
        assert r.status == 200
    _, body, h = await _get(client, edge.url + "/item")
    assert h["Cache-Status"].startswith("edge; fwd=uri-miss")
    assert count["n"] == 3  # GET, POST, GET


async def test_9111_4_4_failed_unsafe_request_invalidates_nothing(origin, make_edge, client):
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            return web.Response(status=500, text="no")
        return web.Response(body=b"page", headers={"Cache-Control": "max-age=600"})

    origin.route("/keep", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/keep")
    async with client.delete(edge.url + "/keep") as r:
        assert r.status == 500
    _, _, h = await _get(client, edge.url + "/keep")
    assert h["Cache-Status"].startswith("edge; hit")


async def test_9111_4_4_same_origin_location_is_invalidated_other_hosts_are_not(origin, make_edge, client):
    origin.respond("/items/5", b"five", headers={"Cache-Control": "max-age=600"})
    origin.respond("/items/6", b"six", headers={"Cache-Control": "max-age=600"})

    async def create(request: web.Request) -> web.StreamResponse:
        return web.Response(status=201, headers={
            "Location": "/items/5",
            "Content-Location": "https://elsewhere.example/items/6",
        })

    origin.route("/items", create)
    edge = await make_edge(quick_origin=origin.url)
    for path in ("/items/5", "/items/6"):
        await _get(client, edge.url + path)
    async with client.post(edge.url + "/items", json={"name": "x"}) as r:
        assert r.status == 201
    _, _, h = await _get(client, edge.url + "/items/5")
    assert h["Cache-Status"].startswith("edge; fwd=uri-miss")
    _, _, h = await _get(client, edge.url + "/items/6")
    assert h["Cache-Status"].startswith("edge; hit")


async def test_9111_4_4_put_invalidates_every_vary_variant(origin, make_edge, client):
    async def handler(request: web.Request) -> web.StreamResponse:
        lang = request.headers.get("Accept-Language", "-")
        return web.Response(body=lang.encode(), headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"})

    origin.route("/v", handler)
    edge = await make_edge(quick_origin=origin.url)
    for lang in ("de", "en"):
        await _get(client, edge.url + "/v", headers={"Accept-Language": lang})
    async with client.put(edge.url + "/v", data=b"new") as r:
        assert r.status == 200
    for lang in ("de", "en"):
        _, body, h = await _get(client, edge.url + "/v", headers={"Accept-Language": lang})
        assert body == lang.encode() and "fwd=" in h["Cache-Status"], lang


# --- RFC 9213 targeted fields -----------------------------------------------------------


async def test_9213_cdn_cache_control_overrides_and_is_hidden(origin, make_edge, client):
    origin.respond("/t", b"t", headers={"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    _, _, h = await _get(client, edge.url + "/t")
    assert "stored" in h["Cache-Status"]
    assert h["Cache-Control"] == "no-store" and "CDN-Cache-Control" not in h
    _, _, h = await _get(client, edge.url + "/t")
    assert h["Cache-Status"].startswith("edge; hit")
    assert h["Cache-Control"] == "no-store" and "CDN-Cache-Control" not in h


async def test_9213_surrogate_control_is_honoured_and_hidden(origin, make_edge, client):
    origin.respond("/s", b"s", headers={"Cache-Control": "private", "Surrogate-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    _, _, h = await _get(client, edge.url + "/s")
    assert "stored" in h["Cache-Status"] and "Surrogate-Control" not in h


async def test_9213_targeted_field_also_replaces_expires(origin, make_edge, client):
    origin.respond("/x", b"x", headers={"Expires": "Thu, 01 Jan 2099 00:00:00 GMT", "CDN-Cache-Control": "no-store"})
    edge = await make_edge(quick_origin=origin.url)
    _, _, h = await _get(client, edge.url + "/x")
    assert "detail=no-store" in h["Cache-Status"]
    assert h["Expires"] == "Thu, 01 Jan 2099 00:00:00 GMT"  # for browsers, untouched


async def test_9213_tenant_targeted_field_comes_first(origin, make_edge, client):
    origin.respond("/p", b"p", headers={"Edge-Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"targeted_field": "Edge-Cache-Control"}})
    _, _, h = await _get(client, edge.url + "/p")
    assert "detail=no-store" in h["Cache-Status"]
    assert "Edge-Cache-Control" not in h and "CDN-Cache-Control" not in h


async def test_9213_targeted_must_revalidate_beats_the_clients_max_stale(origin, make_edge, client):
    """RFC 9111 §5.2.2.2 said in CDN-Cache-Control alone: a client's
    max-stale never gets the expired entry, whatever Cache-Control allows."""
    # Age 5 > max-age 1: expired on arrival, kept for its validator.
    count = _versioned(origin, "/mr", {"Cache-Control": "max-age=1", "Age": "5", "ETag": '"m"',
                                       "CDN-Cache-Control": "max-age=1, must-revalidate"})
    _versioned(origin, "/ok", {"Cache-Control": "max-age=1", "Age": "5", "ETag": '"o"', "CDN-Cache-Control": "max-age=1"})
    edge = await make_edge(quick_origin=origin.url)
    for path in ("/mr", "/ok"):
        _, _, h = await _get(client, edge.url + path)
        assert "stored" in h["Cache-Status"]
    asks_stale = {"Cache-Control": "max-stale=600"}
    _, body, h = await _get(client, edge.url + "/ok", headers=asks_stale)
    assert body == b"v1" and h["Cache-Status"].startswith("edge; hit")  # what max-stale is for
    _, body, h = await _get(client, edge.url + "/mr", headers=asks_stale)
    assert body == b"v2" and h["Cache-Status"].startswith("edge; fwd=stale")
    assert count["n"] == 2


async def test_9213_invalid_targeted_field_falls_back_to_cache_control(origin, make_edge, client):
    origin.respond("/f", b"f", headers={"CDN-Cache-Control": ",,, ", "Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    _, _, h = await _get(client, edge.url + "/f")
    assert "stored" in h["Cache-Status"]


@pytest.mark.parametrize("invalid", ["max-age=60, ", "max-age=60,,", "Max-Age=60", 'max-age=60, private="x'],
                         ids=["trailing-comma", "empty-member", "uppercase", "unterminated-string"])
async def test_9213_unparsable_targeted_field_is_ignored_as_a_whole(origin, make_edge, client, invalid):
    """RFC 9213 §2.1: a targeted field that is no valid Structured Field
    Dictionary is ignored, and Cache-Control's no-store governs."""
    origin.respond("/bad", b"bad", headers={"Cache-Control": "no-store", "CDN-Cache-Control": invalid})
    origin.respond("/good", b"good", headers={"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    for _ in range(2):
        _, body, h = await _get(client, edge.url + "/bad")
        assert body == b"bad" and "detail=no-store" in h["Cache-Status"], h["Cache-Status"]
    assert origin.hits["/bad"] == 2
    for _ in range(2):
        _, body, h = await _get(client, edge.url + "/good")
        assert body == b"good"
    assert h["Cache-Status"].startswith("edge; hit") and origin.hits["/good"] == 1


async def test_9213_a_targeted_field_too_long_to_read_stores_nothing(origin, make_edge, client):
    """Over the parser's bound the field is not read, and Cache-Control does
    not stand in for it: the origin told the edge something unknown."""
    origin.respond("/long", b"long", headers={"Cache-Control": "max-age=60", "CDN-Cache-Control": "max-age=60" + ", x" * 2100})
    edge = await make_edge(quick_origin=origin.url)
    for _ in range(2):
        _, body, h = await _get(client, edge.url + "/long")
        assert body == b"long" and "detail=no-store" in h["Cache-Status"], h["Cache-Status"]
        assert "CDN-Cache-Control" not in h
    assert origin.hits["/long"] == 2


# --- RFC 9111 §4.3.4 selecting, and what a 304 may change ----------------------------------


async def test_9111_4_3_4_304_for_another_etag_updates_nothing_and_is_refetched(origin, make_edge, client):
    calls = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.headers.get("If-None-Match"))
        if len(calls) == 1:
            return web.Response(body=b"old", headers={"ETag": '"a"', "Cache-Control": "max-age=0"})
        if request.headers.get("If-None-Match"):
            return web.Response(status=304, headers={"ETag": '"b"', "Cache-Control": "max-age=60"})
        return web.Response(body=b"new", headers={"ETag": '"b"', "Cache-Control": "max-age=60"})

    origin.route("/sel", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/sel")
    _, body, h = await _get(client, edge.url + "/sel")
    assert body == b"new"
    assert calls == [None, '"a"', None]
    _, body, h = await _get(client, edge.url + "/sel")
    assert body == b"new" and h["Cache-Status"].startswith("edge; hit")


async def test_304_with_new_vary_drops_the_entry(origin, make_edge, client):
    calls = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(1)
        if request.headers.get("If-None-Match") == '"a"':
            return web.Response(status=304, headers={"ETag": '"a"', "Vary": "Accept-Language", "Cache-Control": "max-age=60"})
        return web.Response(body=b"a", headers={"ETag": '"a"', "Cache-Control": "max-age=0"})

    origin.route("/nv", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/nv")
    _, body, _ = await _get(client, edge.url + "/nv")
    assert body == b"a"
    _, _, h = await _get(client, edge.url + "/nv")
    assert h["Cache-Status"].startswith("edge; fwd=uri-miss")


# --- RFC 9111 §4.3.5 HEAD ------------------------------------------------------------------


async def test_9111_4_3_5_head_with_same_validator_updates_stored_headers(origin, make_edge, client):
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(headers={"ETag": '"h"', "Cache-Control": "max-age=600", "X-Rev": "2"})
        return web.Response(body=b"full", headers={"ETag": '"h"', "Cache-Control": "max-age=0", "X-Rev": "1"})

    origin.route("/h", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/h")
    async with client.head(edge.url + "/h") as r:
        assert r.status == 200 and r.headers["X-Rev"] == "2"
    _, body, h = await _get(client, edge.url + "/h")
    assert body == b"full" and h["X-Rev"] == "2" and h["Cache-Status"].startswith("edge; hit")


async def test_9111_4_3_5_head_with_other_validator_invalidates(origin, make_edge, client):
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(headers={"ETag": '"new"', "Cache-Control": "max-age=600"})
        return web.Response(body=b"full", headers={"ETag": '"old"', "Cache-Control": "max-age=0"})

    origin.route("/h2", handler)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/h2")
    async with client.head(edge.url + "/h2") as r:
        assert r.status == 200
    _, _, h = await _get(client, edge.url + "/h2")
    assert h["Cache-Status"].startswith("edge; fwd=uri-miss")


# --- methods the cache does not understand --------------------------------------------------


async def test_unknown_methods_go_to_the_origin_untouched_when_the_tenant_allows_them(origin, make_edge, client):
    async def dav(request: web.Request) -> web.StreamResponse:
        return web.Response(status=207, body=b"<multistatus/>", headers={"Cache-Control": "max-age=600"})

    origin.route("/dav/", dav)
    limits = {"request_limits": {"methods": ["GET", "HEAD", "PROPFIND"]}}
    edge = await make_edge(quick_origin=origin.url, policy={"filters": limits})
    for _ in range(2):
        async with client.request("PROPFIND", edge.url + "/dav/", data=b"<propfind/>", headers={"Depth": "1"}) as r:
            assert r.status == 207 and "fwd=method" in r.headers["Cache-Status"]
    sent = [q for q in origin.requests if q["method"] == "PROPFIND"]
    assert len(sent) == 2 and sent[0]["body"] == b"<propfind/>" and sent[0]["headers"]["Depth"] == "1"
    async with client.request("DELETE", edge.url + "/dav/") as r:
        assert r.status == 405 and "PROPFIND" in r.headers["Allow"]


async def test_unknown_methods_are_refused_by_default(origin, make_edge, client):
    edge = await make_edge(quick_origin=origin.url)
    async with client.request("PROPFIND", edge.url + "/dav/") as r:
        assert r.status == 405 and "GET" in r.headers["Allow"]
    assert origin.requests == []


async def test_5861_4_request_stale_if_error(origin, make_edge, client):
    origin.respond("/r", b"kept", headers={"Cache-Control": "max-age=1", "Age": "5", "ETag": '"r"'})
    origin.respond("/mr", b"kept", headers={"Cache-Control": "max-age=1, must-revalidate", "Age": "5", "ETag": '"m"'})
    edge = await make_edge(quick_origin=origin.url)
    for path in ("/r", "/mr"):
        await _get(client, edge.url + path)
    await origin.stop()
    status, _, _ = await _get(client, edge.url + "/r")
    assert status == 502  # the client did not ask for it
    status, body, h = await _get(client, edge.url + "/r", headers={"Cache-Control": "stale-if-error=600"})
    assert status == 200 and body == b"kept" and "stale-if-error" in h["Cache-Status"]
    status, _, _ = await _get(client, edge.url + "/mr", headers={"Cache-Control": "stale-if-error=600"})
    assert status == 502  # must-revalidate wins over the client's wish


async def test_5861_3_refresh_also_for_clients_sending_connection_keep_alive(origin, make_edge, client):
    count = _versioned(origin, "/ka", {"Cache-Control": "max-age=1, stale-while-revalidate=60", "Age": "5"})
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/ka")
    _, body, h = await _get(client, edge.url + "/ka", headers={"Connection": "keep-alive"})
    assert body == b"v1" and "stale-while-revalidate" in h["Cache-Status"]
    await until(lambda: count["n"] == 2, "one refresh went out")


async def test_9111_5_2_2_10_request_stale_if_error_does_not_override_s_maxage(origin, make_edge, client):
    origin.respond("/sm", b"kept", headers={"Cache-Control": "s-maxage=1", "Age": "5", "ETag": '"s"'})
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/sm")
    await origin.stop()
    status, _, _ = await _get(client, edge.url + "/sm", headers={"Cache-Control": "stale-if-error=600"})
    assert status == 502
