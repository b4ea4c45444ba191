"""Security event webhooks over real sockets: a receiver on 127.0.0.1 that
verifies signatures, retries on 503, hanging and redirecting receivers."""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Self

import orjson
import pytest
from aiohttp import web

from edge.observe.events import (
    EventSettings,
    SecurityEvents,
    WebhookSender,
    verify_signature,
)

SECRET = "whsec-0123456789abcdef0123"
GUARD = 10.0  # seconds before a broken test gives up waiting; never a measured bound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Receiver:
    """A webhook endpoint that keeps every request it got, verified."""

    def __init__(self, answers: list[int] | None = None, handler: Handler | None = None) -> None:
        self.answers = list(answers or [])  # statuses to give, in order; then 200
        self.handler = handler
        self.requests: list[dict] = []
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append({
            "path": request.path,
            "headers": dict(request.headers),
            "body": body,
            "verified": verify_signature(SECRET, request.headers.get("Edge-Signature", ""), body, time.time()),
        })
        self.arrived.set()
        if self.handler is not None:
            return await self.handler(request)
        status = self.answers.pop(0) if self.answers else 200
        return web.Response(status=status, text="ok")

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    async def wait(self, count: int) -> None:
        async def enough() -> None:
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), GUARD)


def sender(**kw) -> WebhookSender:
    return WebhookSender(**{"backoff": 0.001, "max_backoff": 0.01, "tries": 5, **kw})


def settings(url: str, **kw) -> EventSettings:
    return EventSettings(**{"webhook_url": url, "secret": SECRET, "tenant_threshold": 3, "client_threshold": 10**9,
                            "window": 60, **kw})


def block(events: SecurityEvents, s: EventSettings, n: int, tenant: str = "shop") -> None:
    for _ in range(n):
        events.record(tenant, s, "waf", ("942100",), "198.51.100.23")


async def test_the_receiver_gets_a_signed_event():
    async with Receiver() as rx:
        events = SecurityEvents("edge-fra-1", sender=sender())
        events.start()
        block(events, settings(rx.url()), 3)
        await rx.wait(1)
        await events.close()
    req = rx.requests[0]
    assert req["verified"]
    h = req["headers"]
    assert h["Content-Type"] == "application/json" and h["User-Agent"] == "edge-events/1"
    event = orjson.loads(req["body"])
    assert (event["what"], event["tenant"], event["node"]) == ("tenant_block_rate", "shop", "edge-fra-1")
    assert h["Edge-Event-Id"] == event["id"]
    assert event["top_sources"] == [{"client": "198.51.100.0/24", "blocked": 3}]
    assert b"198.51.100.23" not in req["body"]
    # a forged copy fails the receiver's check
    assert not verify_signature(SECRET, h["Edge-Signature"], req["body"].replace(b"shop", b"shoq"), time.time())


async def test_503_twice_then_200_delivers_on_the_third_try():
    async with Receiver(answers=[503, 503]) as rx:
        ok = await sender().deliver(rx.url(), SECRET, "e1", b'{"x":1}', tenant="shop")
    assert ok
    assert len(rx.requests) == 3
    assert all(r["verified"] and r["headers"]["Edge-Event-Id"] == "e1" for r in rx.requests)


async def test_429_is_retried_and_other_4xx_are_not(caplog):
    async with Receiver(answers=[429]) as rx:
        assert await sender().deliver(rx.url(), SECRET, "e1", b"{}")
        assert len(rx.requests) == 2
    async with Receiver(answers=[400]) as rx:
        with caplog.at_level(logging.WARNING, logger="edge.events"):
            assert not await sender().deliver(rx.url("/hook?token=sesame"), SECRET, "e2", b"{}", tenant="shop")
        assert len(rx.requests) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "edge.events"]
    assert "status 400" in line and "e2" in line and f"127.0.0.1:{rx.port}" in line
    assert "sesame" not in line and SECRET not in line


async def test_giving_up_after_the_tries_is_logged_without_secrets(caplog):
    async with Receiver(answers=[500] * 10) as rx:
        with caplog.at_level(logging.WARNING, logger="edge.events"):
            ok = await sender(tries=4).deliver(rx.url("/hooks/T0KEN?sig=sesame"), SECRET, "e3", b"{}", tenant="shop")
    assert not ok and len(rx.requests) == 4
    (line,) = [r.getMessage() for r in caplog.records if r.name == "edge.events"]
    assert "gave up after 4 tries" in line and "status 500" in line
    assert "sesame" not in line and "T0KEN" not in line and SECRET not in line


async def test_a_refused_connection_is_retried_then_given_up():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not await sender(tries=3).deliver(f"http://127.0.0.1:{port}/hook", SECRET, "e4", b"{}")


async def test_a_redirect_is_not_followed():
    async def redirect(request: web.Request) -> web.StreamResponse:
        if request.path == "/hook":
            raise web.HTTPFound("/elsewhere")
        return web.Response(text="ok")

    async with Receiver(handler=redirect) as rx:
        assert not await sender().deliver(rx.url(), SECRET, "e5", b"{}")
    assert [r["path"] for r in rx.requests] == ["/hook"]


async def test_a_hanging_webhook_delays_neither_record_nor_other_tenants():
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    async with Receiver(handler=hang) as slow, Receiver() as fast:
        events = SecurityEvents("edge", sender=sender(timeout=60.0))
        events.start()
        block(events, settings(slow.url()), 3, tenant="slow")
        await slow.wait(1)  # its delivery is now hanging
        # The request path goes on: every record returns while the delivery hangs.
        block(events, settings(slow.url()), 1000, tenant="slow")
        block(events, settings(fast.url()), 3, tenant="fast")
        await fast.wait(1)
        assert not release.is_set() and len(slow.requests) == 1
        assert orjson.loads(fast.requests[0]["body"])["tenant"] == "fast"
        release.set()
        await events.close()


async def test_close_terminates_with_a_hanging_delivery(caplog):
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    async with Receiver(handler=hang) as rx:
        events = SecurityEvents("edge", sender=sender(timeout=60.0))
        events.start()
        block(events, settings(rx.url()), 3)
        await rx.wait(1)
        with caplog.at_level(logging.WARNING, logger="edge.events"):
            await asyncio.wait_for(events.close(timeout=0.05), GUARD)
        release.set()
    messages = [r.getMessage() for r in caplog.records if r.name == "edge.events"]
    # the alert's delivery and the summary's, both hanging
    assert "security events: 2 webhook deliveries abandoned at shutdown" in messages


async def test_close_sends_the_summary_of_an_open_window():
    async with Receiver() as rx:
        events = SecurityEvents("edge", sender=sender())
        events.start()
        block(events, settings(rx.url()), 5)
        await rx.wait(1)
        await events.close()
    whats = [orjson.loads(r["body"])["what"] for r in rx.requests]
    assert whats == ["tenant_block_rate", "window_summary"]
    summary = orjson.loads(rx.requests[1]["body"])
    assert summary["partial"] is True and summary["counts"]["blocked"] == 5
    assert all(r["verified"] for r in rx.requests)


@pytest.mark.parametrize("status", [500, 502])
async def test_a_receiver_that_always_fails_gets_each_event_tries_times(status):
    async with Receiver(answers=[status] * 10) as rx:
        events = SecurityEvents("edge", sender=sender(tries=2))
        events.start()
        block(events, settings(rx.url()), 3)
        await rx.wait(2)
        await events.close()  # adds the window's summary
    ids = [r["headers"]["Edge-Event-Id"] for r in rx.requests]
    assert len(set(ids)) == 2 and all(ids.count(i) == 2 for i in ids)


async def test_proxy_settings_of_the_environment_are_ignored(monkeypatch):
    with socket.socket() as s:  # a proxy that would refuse every connection
        s.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with Receiver() as rx:
        assert await sender(tries=1).deliver(rx.url(), SECRET, "e6", b"{}")
    assert len(rx.requests) == 1
