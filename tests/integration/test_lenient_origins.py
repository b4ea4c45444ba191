"""A real WSGI origin (wsgiref, as CGI and WSGI stacks read requests) behind
the edge: names and paths that such an origin reads alike must not let one
client poison or steal what another is served."""
from __future__ import annotations

import threading
from socketserver import ThreadingMixIn
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class WsgiOrigin:
    """Pages that trust what WSGI hands them, as many apps do."""

    def __init__(self) -> None:
        self.environs: list[dict] = []
        self.server = make_server("127.0.0.1", 0, self.app, server_class=_Server, handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # A short poll: shutdown() waits for the loop to look (0.5 s by default).
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def app(self, environ, start_response):
        self.environs.append({k: v for k, v in environ.items() if isinstance(v, str)})
        path = environ["PATH_INFO"]  # already percent-decoded, as WSGI says
        headers = [("Content-Type", "text/html"), ("Cache-Control", "max-age=600")]
        if path.lower().startswith("/account/"):
            user = environ.get("HTTP_COOKIE", "").removeprefix("user=") or "nobody"
            body = f"orders of {user}"
        else:
            prefix = environ.get("HTTP_X_FORWARDED_PREFIX", "")
            client = environ.get("HTTP_X_REAL_IP") or environ.get("HTTP_X_FORWARDED_FOR", "")
            method = environ.get("HTTP_X_HTTP_METHOD_OVERRIDE", environ["REQUEST_METHOD"])
            body = f'<script src="{prefix}/static/app.js"></script> client={client} method={method}'
        start_response("200 OK", headers)
        return [body.encode()]

    def __enter__(self) -> WsgiOrigin:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def wsgi_origin():
    with WsgiOrigin() as origin:
        yield origin


def shop(url: str) -> dict:
    return {
        "hosts": ["shop.example"],
        "origins": [{"url": url}],
        "rules": [{"match": {"path_prefix": "/account/"}, "bypass": True}],
    }


@pytest.mark.parametrize(
    ("name", "value", "leak"),
    [
        ("X_Forwarded_Prefix", "//evil.example", "//evil.example"),
        ("X_Real_IP", "203.0.113.66", "203.0.113.66"),
        ("X_Forwarded_For", "203.0.113.66", "203.0.113.66"),
        ("X_HTTP_Method_Override", "DELETE", "DELETE"),
        ("X.Forwarded.Prefix", "//evil.example", "//evil.example"),  # lighttpd-style CGI maps "." too
        ("X~Forwarded~Prefix", "//evil.example", "//evil.example"),
    ],
)
async def test_underscored_names_never_reach_the_origin(make_edge, client, wsgi_origin, name, value, leak):
    edge = await make_edge(policies={"shop": shop(wsgi_origin.url)})
    url = f"{edge.url}/home"
    # The attacker forces a refetch so that its answer replaces what is stored.
    async with client.get(url, headers={"Host": "shop.example", "Cache-Control": "no-cache", name: value}) as r:
        assert r.status == 200
        assert leak not in await r.text()
    async with client.get(url, headers={"Host": "shop.example"}) as r:
        assert "hit" in r.headers["Cache-Status"]
        assert leak not in await r.text()
    assert all(leak not in " ".join(env.values()) for env in wsgi_origin.environs)


@pytest.mark.parametrize(
    "path",
    ["/account%2Forders", "/account%252Forders", "/ACCOUNT/orders", "/account;x=1/orders", "/Account%2FOrders"],
)
async def test_personal_pages_are_bypassed_however_spelled(make_edge, client, wsgi_origin, path):
    edge = await make_edge(policies={"shop": shop(wsgi_origin.url)})
    url = f"{edge.url}{path}"
    async with client.get(url, headers={"Host": "shop.example", "Cookie": "user=victim"}) as r:
        assert r.status == 200
        assert "fwd=bypass" in r.headers["Cache-Status"]
    async with client.get(url, headers={"Host": "shop.example"}) as r:
        assert "fwd=bypass" in r.headers["Cache-Status"]
        assert "victim" not in await r.text()


@pytest.mark.parametrize("path", ["/ACCOUNT/x%2F..%2F..%2Fhome", "/ACCOUNT/x/..;/..;/home", "/Account%2Forders"])
async def test_the_bypass_holds_without_the_waf(make_edge, client, wsgi_origin, path):
    """Case and an encoded traversal together: the bypass alone must hold,
    for tenants whose WAF only logs."""
    policy = {**shop(wsgi_origin.url), "filters": {"waf": {"mode": "log"}}}
    edge = await make_edge(policies={"shop": policy})
    url = f"{edge.url}{path}"
    async with client.get(url, headers={"Host": "shop.example", "Cookie": "user=victim"}) as r:
        assert r.status == 200 and "fwd=bypass" in r.headers["Cache-Status"]
    async with client.get(url, headers={"Host": "shop.example"}) as r:
        assert "victim" not in await r.text()


async def test_other_pages_are_still_cached(make_edge, client, wsgi_origin):
    edge = await make_edge(policies={"shop": shop(wsgi_origin.url)})
    for expected in ("uri-miss", "hit"):
        async with client.get(f"{edge.url}/products%2Faccount", headers={"Host": "shop.example"}) as r:
            assert expected in r.headers["Cache-Status"]
    assert unquote(wsgi_origin.environs[-1]["PATH_INFO"]) == "/products/account"
