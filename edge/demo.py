"""The built-in demo origin behind the demo tenant (``edge serve`` with no
arguments): a few pages with the caching behaviours worth seeing."""
from __future__ import annotations

import time

from aiohttp import web

from edge.http.dates import format_http_date

_STARTED = time.time()

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge demo</title>
<link rel="stylesheet" href="/static/site.css"></head>
<body><h1>edge demo origin</h1>
<p>Rendered at {now} (request #{count}). HTML is cached for 10 s by the demo policy.</p>
<ul>
<li><a href="/static/site.css">/static/site.css</a>: static, cached for a day</li>
<li><a href="/api/time">/api/time</a>: JSON, cached for 5 s</li>
<li><a href="/account/">/account/</a>: private, never cached</li>
<li><a href="/lang">/lang</a>: varies on Accept-Language</li>
<li><a href="/big">/big</a>: 4 MiB, streamed through the disk tier</li>
</ul></body></html>
"""


def demo_app() -> web.Application:
    counter = {"n": 0}

    async def index(request: web.Request) -> web.Response:
        counter["n"] += 1
        html = _PAGE.format(now=format_http_date(time.time()), count=counter["n"])
        return web.Response(text=html, content_type="text/html")

    async def css(request: web.Request) -> web.Response:
        return web.Response(
            text="body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }\n",
            content_type="text/css",
            headers={"Last-Modified": format_http_date(_STARTED)},
        )

    async def api_time(request: web.Request) -> web.Response:
        counter["n"] += 1
        return web.json_response({"time": time.time(), "request": counter["n"]})

    async def account(request: web.Request) -> web.Response:
        return web.Response(
            text="<p>Your account (private, never stored by the edge)</p>",
            content_type="text/html",
            headers={"Cache-Control": "private, max-age=0"},
        )

    async def lang(request: web.Request) -> web.Response:
        wants_de = request.headers.get("Accept-Language", "").lower().startswith("de")
        return web.Response(
            text="Hallo\n" if wants_de else "Hello\n",
            headers={"Vary": "Accept-Language", "Cache-Control": "max-age=60"},
        )

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "Cache-Control": "max-age=3600"})
        resp.content_length = 4 * 1024 * 1024
        await resp.prepare(request)
        block = bytes(range(256)) * 256
        for _ in range(64):
            await resp.write(block)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/static/site.css", css)
    app.router.add_get("/api/time", api_time)
    app.router.add_get("/account/", account)
    app.router.add_get("/lang", lang)
    app.router.add_get("/big", big)
    return app


async def start_demo_origin(host: str = "127.0.0.1", port: int = 8081) -> web.AppRunner:
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
