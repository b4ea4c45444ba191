"""RFC 9111 first layer and per-tenant TTL policies, over real sockets."""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from edge.http.dates import format_http_date


async def test_second_request_is_a_hit_with_age_and_cache_status(origin, make_edge, client):
    origin.respond("/a", "hello", headers={"Cache-Control": "max-age=60", "Content-Type": "text/plain"})
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/a") as r1:
        assert r1.status == 200 and await r1.text() == "hello"
        assert "fwd=uri-miss" in r1.headers["Cache-Status"] and "stored" in r1.headers["Cache-Status"]
    async with client.get(edge.url + "/a") as r2:
        assert r2.status == 200 and await r2.text() == "hello"
        assert r2.headers["Cache-Status"].startswith("edge; hit; ttl=")
        assert int(r2.headers["Age"]) >= 0
        assert r2.headers["Via"].endswith("1.1 edge")
    assert origin.hits["/a"] == 1


async def test_age_counts_the_origins_age_and_residence(origin, make_edge, client):
    """RFC 9111 §4.2.3: Age = corrected initial age + resident time."""
    origin.respond("/aged", "x", headers={"Cache-Control": "max-age=600", "Age": "100"})
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/aged") as r:
        assert int(r.headers["Age"]) >= 100
    async with client.get(edge.url + "/aged") as r:
        assert 100 <= int(r.headers["Age"]) <= 102
        ttl = int(r.headers["Cache-Status"].split("ttl=")[1])
        assert 497 <= ttl <= 500


async def test_expired_entry_goes_back_to_origin(origin, make_edge, client):
    origin.respond("/short", "x", headers={"Cache-Control": "max-age=1"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/short")).read()
    await asyncio.sleep(1.2)  # past max-age: the clock itself, not a state to wait for
    async with client.get(edge.url + "/short") as r:
        assert "fwd=stale" in r.headers["Cache-Status"]
    assert origin.hits["/short"] == 2


async def test_s_maxage_beats_max_age(origin, make_edge, client):
    """RFC 9111 §5.2.2.10: s-maxage is the shared cache's lifetime."""
    origin.respond("/s", "x", headers={"Cache-Control": "max-age=0, s-maxage=300"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/s")).read()
    async with client.get(edge.url + "/s") as r:
        assert "hit" in r.headers["Cache-Status"]
    assert origin.hits["/s"] == 1


async def test_expires_gives_freshness(origin, make_edge, client):
    now = time.time()
    origin.respond("/e", "x", headers={"Date": format_http_date(now), "Expires": format_http_date(now + 120)})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/e")).read()
    async with client.get(edge.url + "/e") as r:
        assert "hit" in r.headers["Cache-Status"]


async def test_heuristic_freshness_from_last_modified(origin, make_edge, client):
    """RFC 9111 §4.2.2: 10% of the time since Last-Modified."""
    now = time.time()
    origin.respond("/lm", "x", headers={"Date": format_http_date(now), "Last-Modified": format_http_date(now - 1000)})
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/lm") as r:
        assert "stored" in r.headers["Cache-Status"]
        assert 98 <= int(r.headers["Cache-Status"].split("ttl=")[1]) <= 100


async def test_silent_origin_without_validators_is_not_stored(origin, make_edge, client):
    origin.respond("/silent", "x")
    edge = await make_edge(quick_origin=origin.url)
    for _ in range(2):
        async with client.get(edge.url + "/silent") as r:
            assert "detail=no-lifetime" in r.headers["Cache-Status"]
    assert origin.hits["/silent"] == 2


async def test_no_store_private_and_no_cache_are_respected(origin, make_edge, client):
    origin.respond("/ns", "x", headers={"Cache-Control": "no-store, max-age=60"})
    origin.respond("/pv", "x", headers={"Cache-Control": "private, max-age=60"})
    origin.respond("/nc", "x", headers={"Cache-Control": "no-cache, max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    for path in ("/ns", "/pv", "/nc"):
        for _ in range(2):
            await (await client.get(edge.url + path)).read()
        assert origin.hits[path] == 2, path


async def test_request_no_cache_goes_to_origin(origin, make_edge, client):
    """RFC 9111 §5.2.1.4."""
    origin.respond("/r", "x", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/r")).read()
    async with client.get(edge.url + "/r", headers={"Cache-Control": "no-cache"}) as r:
        assert "fwd=request" in r.headers["Cache-Status"]
    assert origin.hits["/r"] == 2


async def test_set_cookie_is_not_stored_unless_policy_strips_it(origin, make_edge, client):
    origin.respond("/c", "x", headers={"Cache-Control": "max-age=60", "Set-Cookie": "sid=secret"})
    edge = await make_edge(quick_origin=origin.url)
    for _ in range(2):
        async with client.get(edge.url + "/c") as r:
            assert r.headers["Set-Cookie"] == "sid=secret"
            assert "detail=set-cookie" in r.headers["Cache-Status"]
    assert origin.hits["/c"] == 2

    stripping = await make_edge(quick_origin=origin.url, policy={"cache": {"strip_set_cookie": True}})
    for _ in range(2):
        async with client.get(stripping.url + "/c") as r:
            assert "Set-Cookie" not in r.headers
    assert origin.hits["/c"] == 3


async def test_vary_keeps_variants_apart(origin, make_edge, client):
    async def lang(request: web.Request) -> web.Response:
        text = "Hallo" if request.headers.get("Accept-Language") == "de" else "Hello"
        return web.Response(text=text, headers={"Vary": "Accept-Language", "Cache-Control": "max-age=60"})

    origin.route("/v", lang)
    edge = await make_edge(quick_origin=origin.url)
    for lang_value, text in (("de", "Hallo"), ("en", "Hello"), ("de", "Hallo"), ("en", "Hello")):
        async with client.get(edge.url + "/v", headers={"Accept-Language": lang_value}) as r:
            assert await r.text() == text
    assert origin.hits["/v"] == 2
    async with client.get(edge.url + "/v", headers={"Accept-Language": "fr"}) as r:
        assert "fwd=vary-miss" in r.headers["Cache-Status"]


async def test_vary_star_is_never_served_from_cache(origin, make_edge, client):
    origin.respond("/star", "x", headers={"Vary": "*", "Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    for _ in range(2):
        async with client.get(edge.url + "/star") as r:
            assert "detail=vary-star" in r.headers["Cache-Status"]
    assert origin.hits["/star"] == 2


async def test_head_is_answered_from_a_stored_get(origin, make_edge, client):
    origin.respond("/h", "body-bytes", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/h")).read()
    async with client.head(edge.url + "/h") as r:
        assert r.status == 200 and r.headers["Content-Length"] == "10"
        assert "hit" in r.headers["Cache-Status"]
    assert origin.hits["/h"] == 1


async def test_authorization_requests_are_not_stored_without_permission(origin, make_edge, client):
    """RFC 9111 §3.5."""
    origin.respond("/me", "alice", headers={"Cache-Control": "max-age=60"})
    origin.respond("/pub", "shared", headers={"Cache-Control": "public, max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    auth = {"Authorization": "Bearer x"}
    for _ in range(2):
        await (await client.get(edge.url + "/me", headers=auth)).read()
    assert origin.hits["/me"] == 2
    async with client.get(edge.url + "/me"):
        assert origin.hits["/me"] == 3  # nothing of alice's was stored
    for _ in range(2):
        await (await client.get(edge.url + "/pub", headers=auth)).read()
    assert origin.hits["/pub"] == 1


# ------------------------------------------------------------------ policies


async def test_edge_ttl_override_and_browser_ttl(origin, make_edge, client):
    origin.respond("/static/app.js", "js", headers={"Cache-Control": "max-age=5", "Content-Type": "text/javascript"})
    policy = {"rules": [{"match": {"path_prefix": "/static/"}, "edge_ttl": {"override": 86400}, "browser_ttl": {"override": 3600}}]}
    edge = await make_edge(quick_origin=origin.url, policy=policy)
    async with client.get(edge.url + "/static/app.js") as r:
        assert r.headers["Cache-Control"] == "max-age=3600"
        assert int(r.headers["Cache-Status"].split("ttl=")[1]) > 86000
    async with client.get(edge.url + "/static/app.js") as r:
        assert r.headers["Cache-Control"] == "max-age=3600"


async def test_edge_ttl_default_only_when_origin_is_silent(origin, make_edge, client):
    origin.respond("/page", "<p>", headers={"Content-Type": "text/html"})
    origin.respond("/told", "<p>", headers={"Content-Type": "text/html", "Cache-Control": "max-age=30"})
    policy = {"rules": [{"match": {"content_type": ["text/html"]}, "edge_ttl": {"default": 10}}]}
    edge = await make_edge(quick_origin=origin.url, policy=policy)
    async with client.get(edge.url + "/page") as r:
        assert r.headers["Cache-Status"].endswith("ttl=10")
    async with client.get(edge.url + "/told") as r:
        assert r.headers["Cache-Status"].endswith("ttl=30")
    await (await client.get(edge.url + "/page")).read()
    assert origin.hits["/page"] == 1


async def test_override_never_stores_private_responses(origin, make_edge, client):
    origin.respond("/static/me", "x", headers={"Cache-Control": "private"})
    policy = {"rules": [{"match": {"path_prefix": "/static/"}, "edge_ttl": {"override": 600}}]}
    edge = await make_edge(quick_origin=origin.url, policy=policy)
    for _ in range(2):
        await (await client.get(edge.url + "/static/me")).read()
    assert origin.hits["/static/me"] == 2


async def test_bypass_rule_never_caches(origin, make_edge, client):
    origin.respond("/account/x", "x", headers={"Cache-Control": "max-age=60"})
    policy = {"rules": [{"match": {"path_prefix": "/account/"}, "bypass": True}]}
    edge = await make_edge(quick_origin=origin.url, policy=policy)
    for _ in range(2):
        async with client.get(edge.url + "/account/x") as r:
            assert "fwd=bypass" in r.headers["Cache-Status"]
    assert origin.hits["/account/x"] == 2


async def test_tracking_params_do_not_fragment_the_cache(origin, make_edge, client):
    origin.respond("/p", "x", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    for query in ("?id=1", "?id=1&utm_source=news", "?fbclid=abc&id=1", "?gclid=z&id=1&utm_medium=x"):
        await (await client.get(edge.url + "/p" + query)).read()
    assert origin.hits["/p"] == 1
    assert origin.requests[0]["path_qs"] == "/p?id=1"


async def test_query_parameter_order_does_not_fragment(origin, make_edge, client):
    origin.respond("/q", "x", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/q?b=2&a=1")).read()
    async with client.get(edge.url + "/q?a=1&b=2") as r:
        assert "hit" in r.headers["Cache-Status"]


async def test_key_on_a_cookie(origin, make_edge, client):
    async def by_cookie(request: web.Request) -> web.Response:
        return web.Response(text=request.cookies.get("lang", "none"), headers={"Cache-Control": "max-age=60"})

    origin.route("/k", by_cookie)
    policy = {"cache": {"key": {"cookies": ["lang"]}}}
    edge = await make_edge(quick_origin=origin.url, policy=policy)
    for lang, expected in (("de", "de"), ("en", "en"), ("de", "de")):
        async with client.get(edge.url + "/k", headers={"Cookie": f"session=1; lang={lang}"}) as r:
            assert await r.text() == expected
    assert origin.hits["/k"] == 2


async def test_web_cache_deception_is_not_stored(origin, make_edge, client):
    origin.respond("/account/settings/x.css", "<html>secret</html>", headers={"Content-Type": "text/html"})
    policy = {"rules": [{"match": {"path_glob": "/*.css"}, "edge_ttl": {"override": 3600}}]}
    edge = await make_edge(quick_origin=origin.url, policy=policy)
    for _ in range(2):
        await (await client.get(edge.url + "/account/settings/x.css")).read()
    assert origin.hits["/account/settings/x.css"] == 2


async def test_tenants_never_share_entries(origin, make_edge, client):
    async def who(request: web.Request) -> web.Response:
        return web.Response(text=request.headers["Host"], headers={"Cache-Control": "max-age=60"})

    origin.route("/same", who)
    edge = await make_edge(
        policies={
            "alpha": {"hosts": ["alpha.example"], "origins": [{"url": origin.url}]},
            "beta": {"hosts": ["beta.example"], "origins": [{"url": origin.url}]},
        }
    )
    for host in ("alpha.example", "beta.example", "ALPHA.example.", "beta.example:8080"):
        async with client.get(edge.url + "/same", headers={"Host": host}) as r:
            assert (await r.text()).lower().rstrip(".").split(":")[0] == host.lower().rstrip(".").split(":")[0]
    assert origin.hits["/same"] == 2


async def test_concurrent_cold_misses_are_collapsed(origin, make_edge, client):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="x", headers={"Cache-Control": "max-age=60"})

    origin.route("/cold", slow)
    edge = await make_edge(quick_origin=origin.url)

    async def get() -> str:
        async with client.get(edge.url + "/cold") as r:
            await r.read()
            return r.headers["Cache-Status"]

    statuses = await asyncio.gather(*[get() for _ in range(50)])
    assert origin.hits["/cold"] == 1
    assert sum("collapsed" in s for s in statuses) == 49


async def test_uncacheable_responses_release_collapsed_waiters(origin, make_edge, client):
    """Waiters of a leader whose response turned out private go to the
    origin themselves, in parallel rather than one after another."""
    active = {"now": 0, "max": 0}

    async def slow_private(request: web.Request) -> web.Response:
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.2)
        active["now"] -= 1
        return web.Response(text="x", headers={"Cache-Control": "private"})

    origin.route("/priv", slow_private)
    edge = await make_edge(quick_origin=origin.url)

    async def get() -> int:
        async with client.get(edge.url + "/priv") as r:
            await r.read()
            return r.status

    assert await asyncio.gather(*[get() for _ in range(10)]) == [200] * 10
    assert origin.hits["/priv"] == 10
    assert active["max"] >= 5


async def test_changed_browser_ttl_reaches_entries_already_cached(origin, make_edge, client, tmp_path):
    import json

    origin.respond("/static/a.css", "x", headers={"Cache-Control": "max-age=600", "Content-Type": "text/css"})
    edge = await make_edge(quick_origin=origin.url, policy={"rules": [{"match": {"path_prefix": "/static/"}, "browser_ttl": {"override": 60}}]})
    async with client.get(edge.url + "/static/a.css") as r:
        assert r.headers["Cache-Control"] == "max-age=60"
    async with client.get(edge.url + "/static/a.css") as r:
        assert r.headers["Cache-Control"] == "max-age=60" and "hit" in r.headers["Cache-Status"]
    (tmp_path / "quick.json").write_text(json.dumps({"rules": [{"match": {"path_prefix": "/static/"}, "browser_ttl": {"override": 5}}]}))
    edge.node.reload()
    async with client.get(edge.url + "/static/a.css") as r:
        assert r.headers["Cache-Control"] == "max-age=5" and "hit" in r.headers["Cache-Status"]
    assert origin.hits["/static/a.css"] == 1


async def test_204_is_stored_when_fresh(origin, make_edge, client):
    origin.respond("/empty", b"", status=204, headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/empty")).read()
    async with client.get(edge.url + "/empty") as r:
        assert r.status == 204 and "hit" in r.headers["Cache-Status"]
    assert origin.hits["/empty"] == 1
