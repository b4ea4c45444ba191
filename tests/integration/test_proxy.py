"""Proxy hygiene, origin failures and failover, over real sockets."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from edge.config import Timeouts
from tests.conftest import free_port, raw_request, until
from tests.origin_support import Origin


async def test_hop_by_hop_headers_are_removed_both_ways(origin, make_edge, client):
    async def h(request: web.Request) -> web.Response:
        return web.Response(text="x", headers={"Connection": "X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5"})

    origin.route("/hop", h)
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/hop", headers={"Connection": "X-Client-Hop", "X-Client-Hop": "1", "TE": "trailers"}) as r:
        assert "X-Secret-Hop" not in r.headers and "Keep-Alive" not in r.headers
    seen = origin.requests[-1]["headers"]
    assert "X-Client-Hop" not in seen and "TE" not in seen


async def test_forwarding_headers_towards_origin(origin, make_edge, client):
    origin.respond("/f", "x")
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/f", headers={"Host": "shop.example", "X-Forwarded-For": "6.6.6.6"})).read()
    seen = origin.requests[-1]["headers"]
    # An untrusted peer cannot inject a client address.
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "shop.example"
    assert seen["Host"] == "shop.example"
    assert seen["Via"] == "1.1 edge"


async def test_trusted_proxy_appends_to_forwarded_for(origin, make_edge, client):
    import ipaddress

    origin.respond("/t", "x")
    edge = await make_edge(quick_origin=origin.url, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    await (await client.get(edge.url + "/t", headers={"X-Forwarded-For": "203.0.113.7"})).read()
    assert origin.requests[-1]["headers"]["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"


async def test_unkeyed_headers_are_not_forwarded(origin, make_edge, client):
    origin.respond("/poison", "x", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/poison", headers={"X-Original-URL": "/admin", "X-Forwarded-Host": "evil.example"})).read()
    seen = origin.requests[-1]["headers"]
    assert "X-Original-URL" not in seen
    assert seen["X-Forwarded-Host"] != "evil.example"


async def test_origin_host_header_override(origin, make_edge, client):
    origin.respond("/o", "x")
    edge = await make_edge(policies={"t": {"hosts": ["*"], "origins": [{"url": origin.url, "host_header": "backend.internal"}]}})
    await (await client.get(edge.url + "/o")).read()
    assert origin.requests[-1]["headers"]["Host"] == "backend.internal"


async def test_request_body_is_streamed_to_origin(origin, make_edge, client):
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    origin.route("/upload", echo)
    edge = await make_edge(quick_origin=origin.url)

    async def gen():
        for _ in range(64):
            yield b"x" * 65536

    async with client.post(edge.url + "/upload", data=gen()) as r:
        assert r.status == 200 and await r.text() == str(64 * 65536)
    assert origin.requests[-1]["body"] == b"x" * (64 * 65536)


async def test_connect_failure_is_502_with_short_body(make_edge, client):
    edge = await make_edge(quick_origin=f"http://127.0.0.1:{free_port()}")
    async with client.get(edge.url + "/") as r:
        assert r.status == 502
        body = await r.text()
        assert "origin unreachable" in body and "Traceback" not in body
        assert "detail=origin-connect" in r.headers["Cache-Status"]


async def test_origin_timeout_is_504(origin, make_edge, client):
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    origin.route("/hang", hang)
    edge = await make_edge(policies={"t": {"hosts": ["*"], "origins": [{"url": origin.url, "read_timeout": 0.3}]}})
    async with client.get(edge.url + "/hang") as r:
        assert r.status == 504
        assert "detail=origin-timeout" in r.headers["Cache-Status"]
    release.set()


async def test_failover_to_next_origin_and_passive_health(make_edge, client):
    bad, good = Origin(), Origin()
    await bad.start()
    await good.start()
    try:
        bad.respond("/x", "down", status=503)
        good.respond("/x", "good")
        policy = {
            "origins": [{"url": bad.url}, {"url": good.url}],
            "origin_failover": {"failures_before_down": 2, "cooldown": 60},
        }
        edge = await make_edge(policies={"t": {"hosts": ["*"], **policy}})
        for _ in range(4):
            async with client.get(edge.url + "/x") as r:
                assert r.status == 200 and await r.text() == "good"
        # Marked down after two failures: not asked again during cool-down.
        assert bad.hits["/x"] == 2
        assert good.hits["/x"] == 4
    finally:
        await bad.stop()
        await good.stop()


async def test_a_full_origin_pool_is_a_bounded_wait_and_no_origin_failure(make_edge, client):
    """Every connection to the origin busy: a request waits at most
    timeouts.origin_queue, then gets 503 (or a stale-if-error entry); the
    origin is not marked down for it and nothing fails over."""
    primary, backup = Origin(), Origin()
    await primary.start()
    await backup.start()
    gate = asyncio.Event()
    # Another client holds the connection: one client alone may not (origin_share).
    other = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))

    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="done", headers={"Cache-Control": "no-store"})

    try:
        primary.route("/held", held)
        for o in (primary, backup):
            name = "primary" if o is primary else "backup"
            o.respond("/small", name, headers={"Cache-Control": "no-store"})
            o.respond("/page", name, headers={"Cache-Control": "max-age=600, stale-if-error=600"})
        policy = {
            "hosts": ["*"],
            "origins": [{"url": primary.url, "max_connections": 1}, {"url": backup.url}],
            "origin_failover": {"failures_before_down": 1, "cooldown": 600},
        }
        edge = await make_edge(policies={"t": policy}, timeouts=Timeouts(origin_queue=0.2))
        async with client.get(edge.url + "/page") as r:
            assert await r.text() == "primary"
        hold = asyncio.ensure_future(other.get(edge.url + "/held"))
        await until(lambda: primary.hits["/held"] >= 1, "the one connection is taken")
        for _ in range(2):
            async with asyncio.timeout(10):  # a guard: without the bound this waits for the gate
                async with client.get(edge.url + "/small") as r:
                    assert r.status == 503 and "origin busy" in await r.text()
                    assert r.headers["Retry-After"] == "1"
                    assert r.headers["Cache-Status"] == "edge; fwd=miss; detail=origin-busy"
        # A stored entry with stale-if-error answers instead (RFC 5861 §4).
        async with client.get(edge.url + "/page", headers={"Cache-Control": "max-age=0"}) as r:
            assert (r.status, await r.text()) == (200, "primary")
            assert r.headers["Cache-Status"].endswith("detail=stale-if-error")
        gate.set()
        async with await hold as r:
            assert r.status == 200
        async with client.get(edge.url + "/small") as r:
            assert (r.status, await r.text()) == (200, "primary")  # never marked down
        assert backup.hits["/small"] == 0
    finally:
        gate.set()
        await other.close()
        await primary.stop()
        await backup.stop()


async def test_non_idempotent_requests_are_not_retried(make_edge, client):
    bad, good = Origin(), Origin()
    await bad.start()
    await good.start()
    try:
        bad.respond("/pay", "down", status=503)
        good.respond("/pay", "charged")
        edge = await make_edge(policies={"t": {"hosts": ["*"], "origins": [{"url": bad.url}, {"url": good.url}]}})
        async with client.post(edge.url + "/pay", data=b"amount=1") as r:
            assert r.status == 503
        assert good.hits["/pay"] == 0
    finally:
        await bad.stop()
        await good.stop()


async def test_origin_closing_mid_body_is_visibly_broken_and_not_stored(make_edge, client):
    """A cut body must never look complete, and must never be stored."""
    port = free_port()

    async def liar(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nCache-Control: max-age=60\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(liar, "127.0.0.1", port)
    try:
        edge = await make_edge(quick_origin=f"http://127.0.0.1:{port}")
        for _ in range(2):
            async with client.get(edge.url + "/cut") as r:
                assert r.status == 502
    finally:
        server.close()


async def test_large_chunked_body_cut_mid_stream_breaks_the_client_connection(make_edge, client):
    port = free_port()

    async def liar(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nCache-Control: max-age=60\r\n\r\n")
        for _ in range(40):
            writer.write(b"10000\r\n" + b"y" * 0x10000 + b"\r\n")
        await writer.drain()
        writer.close()  # no terminating chunk

    server = await asyncio.start_server(liar, "127.0.0.1", port)
    try:
        edge = await make_edge(quick_origin=f"http://127.0.0.1:{port}")
        response = await raw_request(edge.port, b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200")
        assert not response.endswith(b"0\r\n\r\n")
        # Nothing was stored: the next request goes to the origin again.
        response = await raw_request(edge.port, b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"fwd=uri-miss" in response
    finally:
        server.close()


async def test_malformed_origin_response_is_502(make_edge, client):
    port = free_port()

    async def garbage(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 ok then\r\nthis is not a header\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", port)
    try:
        edge = await make_edge(quick_origin=f"http://127.0.0.1:{port}")
        async with client.get(edge.url + "/") as r:
            assert r.status == 502
            assert "detail=origin-protocol" in r.headers["Cache-Status"]
    finally:
        server.close()


class BodyAfterHead:
    """A raw origin that sends a body after its answer to HEAD. The stray
    bytes reach the edge just before its answer to the next request on that
    kept-alive connection, as they do when the origin is slow to write them."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, str]] = []  # (connection, method, path)
        self._connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        conn, owed = self._connections, b""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path = head.decode("latin-1").split(" ", 2)[:2]
                length = next((int(line.split(":", 1)[1]) for line in head.decode("latin-1").split("\r\n")
                               if line.lower().startswith("content-length:")), 0)
                await reader.readexactly(length)
                self.seen.append((conn, method, path))
                body = f"body of {path}".encode()
                writer.write(owed + b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\n"
                             + b"Content-Length: %d\r\n\r\n" % len(body))
                owed = body if method == "HEAD" else b""
                if method != "HEAD":
                    writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize(("method", "status", "sent"), [
    ("GET", 200, 2),  # idempotent without a body: sent again on a new connection
    ("DELETE", 200, 2),
    ("POST", 502, 1),  # never sent twice
])
async def test_a_body_after_head_does_not_break_the_next_request_on_that_connection(make_edge, client, method,
                                                                                     status, sent):
    origin = BodyAfterHead()
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    try:
        edge = await make_edge(quick_origin=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        async with client.head(edge.url + "/first") as r:
            assert r.status == 200
        async with client.request(method, edge.url + "/next") as r:
            assert r.status == status, (r.headers.get("Cache-Status"), origin.seen)
            if status == 200:
                assert await r.read() == b"body of /next"
        assert origin.seen[0] == (1, "HEAD", "/first")
        nexts = [(conn, m) for conn, m, path in origin.seen if path == "/next"]
        # The first try went on the HEAD's kept-alive connection, a retry on a new one.
        assert nexts == [(1, method), (2, method)][:sent]
    finally:
        server.close()


async def test_expect_100_continue_upload(origin, make_edge):
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    origin.route("/up", echo)
    edge = await make_edge(quick_origin=origin.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"hello")
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"\r\n\r\n5")


async def test_origin_age_passes_through_uncached_responses(origin, make_edge, client):
    origin.respond("/aged", "x", headers={"Age": "42", "Cache-Control": "private"})
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/aged") as r:
        assert r.headers["Age"] == "42"


async def test_down_origin_gets_traffic_again_after_cooldown(make_edge, client):
    flaky, good = Origin(), Origin()
    await flaky.start()
    await good.start()
    try:
        flaky.respond("/x", "broken", status=502)
        good.respond("/x", "good")
        policy = {
            "hosts": ["*"],
            "origins": [{"url": flaky.url}, {"url": good.url}],
            "origin_failover": {"failures_before_down": 1, "cooldown": 0.3},
        }
        edge = await make_edge(policies={"t": policy})
        await (await client.get(edge.url + "/x")).read()
        await (await client.get(edge.url + "/x")).read()
        assert flaky.hits["/x"] == 1  # down after one failure
        flaky.respond("/x", "recovered")
        await asyncio.sleep(0.4)  # past the cooldown: the clock itself, not a state to wait for
        async with client.get(edge.url + "/x") as r:
            assert await r.text() == "recovered"
        assert flaky.hits["/x"] == 2
    finally:
        await flaky.stop()
        await good.stop()


async def test_all_origins_down_still_tries_the_one_back_soonest(make_edge, client):
    only = Origin()
    await only.start()
    try:
        only.respond("/x", "busy", status=503)
        policy = {"hosts": ["*"], "origins": [{"url": only.url}], "origin_failover": {"failures_before_down": 1, "cooldown": 60}}
        edge = await make_edge(policies={"t": policy})
        for _ in range(2):
            async with client.get(edge.url + "/x") as r:
                assert r.status == 503
        only.respond("/x", "fine")
        async with client.get(edge.url + "/x") as r:
            assert r.status == 200  # a single origin is never shut out entirely
    finally:
        await only.stop()


async def test_a_reload_that_removes_an_origin_closes_its_connections_after_requests_in_flight(
        make_edge, client, tmp_path):
    kept, gone = Origin(), Origin()
    await kept.start()
    await gone.start()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "no-store"})
        resp.enable_chunked_encoding()  # streamed on by the edge as it comes
        await resp.prepare(request)
        await resp.write(b"first")
        await release.wait()
        await resp.write(b"-last")
        return resp

    try:
        kept.respond("/k", "kept", headers={"Cache-Control": "no-store"})
        gone.respond("/g", "gone", headers={"Cache-Control": "no-store"})
        gone.route("/slow", slow)
        edge = await make_edge(policies={
            "kept": {"hosts": ["kept.test"], "origins": [{"url": kept.url}]},
            "gone": {"hosts": ["gone.test"], "origins": [{"url": gone.url}]},
        })
        for host, path, origin in (("kept.test", "/k", kept), ("gone.test", "/g", gone)):
            async with client.get(edge.url + path, headers={"Host": host}) as r:
                assert r.status == 200
            assert len(origin.runner.server.connections) == 1  # kept alive by the edge
        async with client.get(edge.url + "/slow", headers={"Host": "gone.test"}) as slow_response:
            assert await slow_response.content.readexactly(5) == b"first"
            (tmp_path / "policies" / "gone.json").unlink()
            # As the admin API reloads: in a thread.
            report = await asyncio.get_running_loop().run_in_executor(None, edge.node.reload)
            assert report.removed == ["gone"]
            # The request in flight is not cut.
            release.set()
            assert await slow_response.content.read() == b"-last"
        await until(lambda: not gone.runner.server.connections, "the removed origin's connections are closed")
        assert len(kept.runner.server.connections) == 1
        async with client.get(edge.url + "/k", headers={"Host": "kept.test"}) as r:
            assert r.status == 200
    finally:
        await kept.stop()
        await gone.stop()



async def test_an_origin_that_leads_back_to_the_node_is_a_loop_not_a_flood(make_edge, client):
    from edge.config_tls import ListenAddress

    port = free_port()
    edge = await make_edge(quick_origin=f"http://127.0.0.1:{port}", listen=(ListenAddress("127.0.0.1", port),))
    async with client.get(f"{edge.url}/page", headers={"Cache-Control": "no-cache"}) as r:
        # The second lap sees its own Via and stops; the first passes that on.
        assert r.status == 508
        assert "loop detected" in await r.text()
    async with client.get(f"{edge.url}/page", headers={"Via": "1.1 edge"}) as r:
        assert r.status == 508 and r.headers["Cache-Status"].endswith("detail=loop")


async def test_a_client_waiting_for_its_share_does_not_hold_up_others_misses(origin, make_edge):
    """A miss that waits for its client's share of the origin pool must not
    lead the collapse for its key: the others would wait on that client."""
    import dataclasses

    from edge.config import default_config
    from edge.filters.request_limits import RequestLimitFilter

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="slow", headers={"Cache-Control": "no-store"})

    origin.route("/slow", slow)
    origin.respond("/popular", "popular", headers={"Cache-Control": "max-age=60"})
    timeouts = dataclasses.replace(default_config().timeouts, origin_queue=30.0)
    policy = {"hosts": ["shop.example"], "origins": [{"url": origin.url, "max_connections": 4}]}  # share: 1
    edge = await make_edge(policies={"shop": policy}, timeouts=timeouts)

    def session(source: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))

    async with session("127.0.0.2") as a, session("127.0.0.3") as b:
        held = asyncio.ensure_future(a.get(f"{edge.url}/slow", headers={"Host": "shop.example"}))
        await until(lambda: origin.hits["/slow"] == 1, "the first client holds its one connection")
        waiting = asyncio.ensure_future(a.get(f"{edge.url}/popular", headers={"Host": "shop.example"}))
        slots = next(f for f in edge.node.state.filters.filters if isinstance(f, RequestLimitFilter)).slots

        def queued() -> bool:
            return slots.waiting() > 0

        await until(queued, "the first client's second miss waits for its share")
        async with b.get(f"{edge.url}/popular", headers={"Host": "shop.example"},
                         timeout=aiohttp.ClientTimeout(total=10)) as r:
            assert r.status == 200 and await r.text() == "popular"
        release.set()
        for task in (held, waiting):
            resp = await task
            assert resp.status == 200
            resp.release()
