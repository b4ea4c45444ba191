"""The test origin: a real aiohttp server on loopback whose routes tests
set, recording every request it gets.

It runs on the test's event loop (``await origin.start()``: the ``origin``
fixture of tests/conftest.py), or on an event loop of its own in a
background thread so that synchronous tests can use it
(``origin.start_in_thread()``: the end-to-end ``upstream`` fixture).
"""
from __future__ import annotations

import asyncio
import collections
import ssl
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Origin:
    """Routes are exact paths, or prefixes ending in ``*`` (the longest
    wins); anything else is a 404. ``hits`` counts requests per path,
    ``requests`` holds each one (method, path, path_qs, raw_path, headers,
    body). ``auto_decompress=False`` keeps request bodies as they arrive,
    content coding and all."""

    def __init__(self, *, auto_decompress: bool = True) -> None:
        self.auto_decompress = auto_decompress
        self.routes: dict[str, Handler] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.requests: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None  # its own, when started in a thread
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the test's thread reads what the origin's thread records
        self.tls: ssl.SSLContext | None = None  # set by start: the origin speaks https

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def respond(self, path: str, body: bytes | str = b"ok", status: int = 200, headers: dict | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body

        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=data, status=status, headers=headers or {})

        self.routes[path] = handler

    def count(self, path: str, method: str = "GET") -> int:
        """Requests for ``path`` with ``method`` so far."""
        with self._lock:
            return sum(1 for r in self.requests if r["method"] == method and r["path"] == path)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.hits[request.path] += 1  # on arrival: tests wait for it while a body still comes
        body = await request.read()
        with self._lock:
            self.requests.append({
                "method": request.method,
                "path": request.path,
                "path_qs": request.path_qs,
                "raw_path": request.raw_path,
                "headers": dict(request.headers),
                "body": body,
            })
        handler = self.routes.get(request.path)
        if handler is None:
            prefixes = [p for p in self.routes if p.endswith("*") and request.path.startswith(p[:-1])]
            if prefixes:
                handler = self.routes[max(prefixes, key=len)]
        if handler is None:
            return web.Response(status=404, text="not found at the origin\n")
        return await handler(request)

    async def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        """Serve on the running event loop; https with ``tls``."""
        self.tls = tls
        app = web.Application(client_max_size=1 << 32)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, auto_decompress=self.auto_decompress)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port, ssl_context=tls).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving (the port then refuses connections)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # --- on a loop of its own ------------------------------------------------------------

    def start_in_thread(self, tls: ssl.SSLContext | None = None) -> Origin:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="test-origin", daemon=True)
        self._thread.start()
        self.call(self.start(tls=tls))
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Awaitable, timeout: float = 30.0):
        """Run ``coro`` on the origin's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Stop serving and end the thread."""
        try:
            self.call(self.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self.loop.close()
