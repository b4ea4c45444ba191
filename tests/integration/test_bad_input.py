"""Hostile and broken client requests: precise 4xx, never a traceback,
never another tenant's entry."""
from __future__ import annotations

import pytest
from aiohttp import web

from tests.conftest import raw_request


@pytest.fixture
async def edge(origin, make_edge):
    async def echo_path(request: web.Request) -> web.Response:
        return web.Response(text=request.path_qs, headers={"Cache-Control": "max-age=60"})

    for p in ("/a/b", "/b", "/secret", "/%2F", "/a%2Fb"):
        origin.route(p, echo_path)
    return await make_edge(
        policies={
            "alpha": {"hosts": ["alpha.example"], "origins": [{"url": origin.url}]},
            "beta": {"hosts": ["beta.example"], "origins": [{"url": origin.url}]},
            # No WAF: what the edge itself makes of hostile paths.
            "gamma": {"hosts": ["gamma.example"], "origins": [{"url": origin.url}], "filters": {"waf": {"mode": "off"}}},
        }
    )


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="missing-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: alpha.example\r\nHost: beta.example\r\n\r\n", 400, id="two-hosts"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: alpha example\r\n\r\n", 400, id="space-in-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: user@alpha.example\r\n\r\n", 400, id="userinfo-in-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: unknown.example\r\nConnection: close\r\n\r\n", 421, id="unknown-host"),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: alpha.example\r\n\r\n", 414, id="long-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: alpha.example\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, id="huge-header"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: alpha.example\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(200)) + b"\r\n",
            431,
            id="too-many-headers",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: alpha.example\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            id="cl-and-te",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: alpha.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            400,
            id="two-content-lengths",
        ),
        pytest.param(b"GET /%00 HTTP/1.1\r\nHost: alpha.example\r\n\r\n", 400, id="nul-in-path"),
        pytest.param(b"GET /%zz HTTP/1.1\r\nHost: alpha.example\r\n\r\n", 400, id="bad-percent-encoding"),
        pytest.param(b"GET ftp://alpha.example/ HTTP/1.1\r\nHost: alpha.example\r\n\r\n", 400, id="foreign-scheme"),
        pytest.param(b"CONNECT alpha.example:443 HTTP/1.1\r\nHost: alpha.example\r\n\r\n", 400, id="connect"),
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="not-http"),
    ],
)
async def test_bad_requests_get_precise_status(edge, request_bytes, status):
    response = await raw_request(edge.port, request_bytes)
    assert status_of(response) == status, response[:200]
    assert b"Traceback" not in response


async def test_path_spellings_share_one_key(edge, origin, client):
    for spelling in ("/a/b", "/a//b", "/a/./b", "/x/../a/b", "/%61/b", "/a/%2e/b", "/a/c/%2E%2E/b"):
        async with client.get(edge.url + spelling, headers={"Host": "alpha.example"}, skip_auto_headers=()) as r:
            assert await r.text() == "/a/b", spelling
    assert origin.hits["/a/b"] == 1


async def test_dot_segments_cannot_escape_the_root(edge, origin):
    response = await raw_request(edge.port, b"GET /../../secret HTTP/1.1\r\nHost: gamma.example\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200 and response.endswith(b"/secret")
    # With the default WAF the traversal attempt itself is refused.
    response = await raw_request(edge.port, b"GET /../../secret HTTP/1.1\r\nHost: alpha.example\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 403 and b"request id" in response


async def test_encoded_slash_stays_distinct(edge, origin):
    await raw_request(edge.port, b"GET /a%2Fb HTTP/1.1\r\nHost: alpha.example\r\nConnection: close\r\n\r\n")
    assert origin.requests[-1]["raw_path"] == "/a%2Fb"
    await raw_request(edge.port, b"GET /a/b HTTP/1.1\r\nHost: alpha.example\r\nConnection: close\r\n\r\n")
    # Two different resources for the cache: the origin was asked twice.
    assert len(origin.requests) == 2


async def test_no_spelling_of_host_reaches_another_tenant(edge, origin, client):
    await (await client.get(edge.url + "/b", headers={"Host": "alpha.example"})).read()
    for host in ("beta.example", "BETA.EXAMPLE", "beta.example.", "beta.example:80"):
        async with client.get(edge.url + "/b", headers={"Host": host}) as r:
            assert r.status == 200
    # alpha's entry was never served to beta: beta fetched once, then hit its own.
    assert origin.hits["/b"] == 2


async def test_absolute_form_target_uses_its_authority(edge, origin):
    """RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host."""
    response = await raw_request(edge.port, b"GET http://beta.example/b HTTP/1.1\r\nHost: alpha.example\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    assert origin.requests[-1]["headers"]["X-Forwarded-Host"] == "beta.example"
    assert origin.requests[-1]["headers"]["Host"] == "beta.example"


async def test_body_over_limit_is_413(origin, make_edge, client):
    import dataclasses

    from edge.config import default_config

    limits = dataclasses.replace(default_config().limits, max_body_size=1000)
    origin.respond("/up", "ok")
    edge = await make_edge(quick_origin=origin.url, limits=limits)
    async with client.post(edge.url + "/up", data=b"x" * 2000) as r:
        assert r.status == 413

    async def gen():
        for _ in range(10):
            yield b"y" * 500

    async with client.post(edge.url + "/up", data=gen()) as r:
        assert r.status == 413


async def test_port_in_host_cannot_poison_the_shared_entry(origin, make_edge, client):
    async def link(request: web.Request) -> web.Response:
        return web.Response(text=f"http://{request.headers['Host']}/x", headers={"Cache-Control": "max-age=60"})

    origin.route("/link", link)
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/link", headers={"Host": "victim.example:6666"}) as r:
        assert await r.text() == "http://victim.example/x"
    assert origin.requests[-1]["headers"]["X-Forwarded-Host"] == "victim.example"


@pytest.mark.parametrize("named", ["Accept-Language", "Cookie"])
async def test_connection_cannot_strip_keyed_or_varying_fields_into_the_cache(origin, make_edge, client, named):
    async def lang(request: web.Request) -> web.Response:
        value = request.headers.get("Accept-Language", "none") + "/" + request.cookies.get("lang", "none")
        return web.Response(text=value, headers={"Vary": "Accept-Language", "Cache-Control": "max-age=60"})

    origin.route("/lang", lang)
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"key": {"cookies": ["lang"]}}})
    headers = {"Accept-Language": "de", "Cookie": "lang=de"}
    async with client.get(edge.url + "/lang", headers={**headers, "Connection": named}) as r:
        assert "detail=connection" in r.headers["Cache-Status"]
    async with client.get(edge.url + "/lang", headers=headers) as r:
        assert await r.text() == "de/de"


@pytest.mark.parametrize("name", ["X-Forwarded-Prefix", "X-Real-IP", "True-Client-IP", "X-Forwarded-Ssl"])
async def test_more_unkeyed_fields_are_not_forwarded(origin, make_edge, client, name):
    origin.respond("/r", "x", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/r", headers={name: "6.6.6.6"})).read()
    assert name not in origin.requests[-1]["headers"]


async def test_get_with_a_body_is_neither_served_from_nor_stored_in_cache(origin, make_edge, client):
    origin.respond("/fat", "x", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    for _ in range(2):
        async with client.get(edge.url + "/fat", data=b"hello") as r:
            assert "fwd=request" in r.headers["Cache-Status"]
    async with client.get(edge.url + "/fat") as r:
        assert "uri-miss" in r.headers["Cache-Status"]


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        pytest.param(b"GET / HTTP/2.0\r\nHost: alpha.example\r\n\r\n", 505, id="http2-request-line"),
        pytest.param(b"GET /a#frag HTTP/1.1\r\nHost: alpha.example\r\n\r\n", 400, id="fragment"),
    ],
)
async def test_more_bad_request_lines(edge, request_bytes, status):
    response = await raw_request(edge.port, request_bytes)
    assert status_of(response) == status, response[:100]
