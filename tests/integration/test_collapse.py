"""Concurrent misses for one large object, over real sockets: one origin
fetch, read along by every client as it arrives (edge/cache/collapse.py)."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import socket

import aiohttp
import pytest
from aiohttp import web

from edge.observe.metrics import REGISTRY, publish
from tests.conftest import until as wait_until

MiB = 2**20
GUARD = 20  # seconds: only against a hanging test, never a measured bound
HERD = 12


def blob(n: int) -> bytes:
    return (hashlib.sha256(str(n).encode()).digest() * (n // 32 + 1))[:n]


class Gated:
    """An origin route that sends ``before`` bytes of ``data``, then waits
    for ``gate`` and sends the rest (or cuts the connection)."""

    def __init__(self, data: bytes, *, chunked: bool = False, before: int = 2 * MiB, cut: bool = False,
                 headers: dict | None = None) -> None:
        self.data = data
        self.chunked = chunked
        self.before = before
        self.cut = cut
        self.headers = {"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream", **(headers or {})}
        self.gate = asyncio.Event()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers=self.headers)
        if not self.chunked:
            resp.content_length = len(self.data)
        await resp.prepare(request)
        step = 64 * 1024
        for start in range(0, self.before, step):
            await resp.write(self.data[start : min(start + step, self.before)])
        await self.gate.wait()
        if self.cut:
            request.transport.abort()
            return resp
        for start in range(self.before, len(self.data), step):
            await resp.write(self.data[start : start + step])
        await resp.write_eof()
        return resp


until = functools.partial(wait_until, timeout=GUARD)


class Client:
    """One GET whose answer head is known before its body is read."""

    def __init__(self, session: aiohttp.ClientSession, url: str, headers: dict | None = None) -> None:
        self.head = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run(session, url, headers or {}))

    async def _run(self, session, url, headers) -> bytes:
        try:
            async with session.get(url, headers=headers) as r:
                self.head.set_result((r.status, r.headers))
                return await r.read()
        except BaseException as exc:
            if not self.head.done():
                self.head.set_exception(exc)
            raise


async def start_herd(session, url: str, origin, path: str, n: int = HERD, headers: dict | None = None) -> list[Client]:
    """The first client, and once the origin is sending its answer, n - 1 more."""
    first = Client(session, url, headers)
    await until(lambda: origin.hits[path] >= 1, "the origin gets the first request")
    await asyncio.wait_for(asyncio.shield(first.head), GUARD)
    return [first] + [Client(session, url, headers) for _ in range(n - 1)]


def fill_buffer_bytes() -> float:
    publish()  # what a scrape of /metrics would make it show
    return REGISTRY.get_sample_value("edge_fill_buffer_bytes")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_herd_for_a_large_object_makes_one_origin_request(origin, make_edge, client, chunked):
    data = blob(8 * MiB)
    route = Gated(data, chunked=chunked)
    origin.route("/big", route)
    edge = await make_edge(quick_origin=origin.url)
    clients = await start_herd(client, edge.url + "/big", origin, "/big")
    # Every client has its answer's head while the origin is still half-way:
    # they read along rather than wait for the end or fetch for themselves.
    heads = await asyncio.wait_for(asyncio.gather(*(c.head for c in clients)), GUARD)
    route.gate.set()
    bodies = await asyncio.wait_for(asyncio.gather(*(c.task for c in clients)), GUARD)
    assert origin.hits["/big"] == 1
    assert all(body == data for body in bodies)
    statuses = [h["Cache-Status"] for _, h in heads]
    # ttl counts down from 600 while a loaded machine is slow to answer.
    assert re.fullmatch(r"edge; fwd=uri-miss; stored; ttl=(600|59\d)", statuses[0]), statuses[0]
    assert all(s.startswith("edge; hit; ttl=") and s.endswith("; collapsed") for s in statuses[1:]), statuses
    if not chunked:
        assert all(h["Content-Length"] == str(len(data)) for _, h in heads)
    # Stored as well: the next client is a plain hit.
    async with client.get(edge.url + "/big") as r:
        assert await r.read() == data and r.headers["Cache-Status"].startswith("edge; hit; ttl=")
    assert origin.hits["/big"] == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_fill_the_origin_cuts_is_complete_for_no_client(origin, make_edge, client, chunked):
    route = Gated(blob(8 * MiB), chunked=chunked, cut=True)
    origin.route("/cut", route)
    edge = await make_edge(quick_origin=origin.url)
    clients = await start_herd(client, edge.url + "/cut", origin, "/cut")
    await asyncio.wait_for(asyncio.gather(*(c.head for c in clients)), GUARD)
    route.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*(c.task for c in clients), return_exceptions=True), GUARD)
    # Each connection is cut before the announced length or the last chunk.
    assert all(isinstance(r, aiohttp.ClientPayloadError) for r in results), results
    assert origin.hits["/cut"] == 1
    # Nothing was stored: the next request goes to the origin again.
    route.cut, route.before = False, 0
    async with client.get(edge.url + "/cut") as r:
        assert r.headers["Cache-Status"].startswith("edge; fwd=uri-miss; stored")
        assert len(await r.read()) == 8 * MiB
    assert origin.hits["/cut"] == 2


async def test_a_waiter_that_never_reads_does_not_make_the_node_hold_the_body(origin, make_edge, client):
    data = blob(32 * MiB)
    route = Gated(data)
    origin.route("/big", route)
    buffer = 256 * 1024
    edge = await make_edge(quick_origin=origin.url, cache={"fill_buffer": buffer})
    first = Client(client, edge.url + "/big")
    await asyncio.wait_for(asyncio.shield(first.head), GUARD)
    # A waiter that asks and then never reads a byte.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stalled, ("127.0.0.1", edge.port))
    await loop.sock_sendall(stalled, b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        await until(lambda: _has_data(stalled), "the stalled waiter's answer began")
        others = [Client(client, edge.url + "/big") for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(*(c.head for c in others)), GUARD)
        route.gate.set()
        peak = 0.0
        readers = [first, *others]
        while not all(c.task.done() for c in readers):
            peak = max(peak, fill_buffer_bytes())
            await asyncio.sleep(0.005)
        assert all(c.task.result() == data for c in readers)
        # The fill is over, the stalled waiter still holds its reader: its
        # place in the body is a file offset, not memory.
        held = fill_buffer_bytes()
        assert not _closed(stalled)
    finally:
        stalled.close()
    assert origin.hits["/big"] == 1
    # At most the buffer plus what the disk writer has not taken yet
    # (its queue of 8 chunks of at most 64 KiB, one more in its thread).
    bound = buffer + 10 * 64 * 1024
    assert held <= bound
    assert peak <= bound, f"{peak} bytes held while the body was passing"
    await until(lambda: fill_buffer_bytes() == 0, "the memory is given back once the waiter is gone")


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def _closed(sock: socket.socket) -> bool:
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state in (7, 8)  # TCP_CLOSE, TCP_CLOSE_WAIT


async def test_the_fill_goes_on_for_waiters_when_the_first_client_leaves(origin, make_edge, client):
    data = blob(8 * MiB)
    route = Gated(data)
    origin.route("/big", route)
    edge = await make_edge(quick_origin=origin.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    await until(lambda: origin.hits["/big"] == 1, "the origin answers")
    waiters = [Client(client, edge.url + "/big") for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*(c.head for c in waiters)), GUARD)
    leaving = waiters.pop()
    leaving.task.cancel()  # a waiter goes too
    writer.transport.abort()  # the first client leaves
    route.gate.set()
    bodies = await asyncio.wait_for(asyncio.gather(*(c.task for c in waiters)), GUARD)
    assert bodies == [data, data]
    async with client.get(edge.url + "/big") as r:
        assert await r.read() == data and r.headers["Cache-Status"].startswith("edge; hit; ttl=")
    assert origin.hits["/big"] == 1


async def test_a_body_too_large_to_store_releases_the_waiters(origin, make_edge, client):
    """No disk tier and no Content-Length: the body turns out larger than the
    memory tier keeps, so waiters fetch for themselves, as for an
    uncacheable answer."""
    data = blob(3 * MiB)
    route = Gated(data, chunked=True)
    origin.route("/big", route)
    edge = await make_edge(quick_origin=origin.url, disk=False)
    clients = await start_herd(client, edge.url + "/big", origin, "/big", n=4)
    await until(lambda: origin.hits["/big"] == 4, "the released waiters fetch for themselves")
    route.gate.set()
    bodies = await asyncio.wait_for(asyncio.gather(*(c.task for c in clients)), GUARD)
    assert all(body == data for body in bodies)
    statuses = [(await c.head)[1]["Cache-Status"] for c in clients]
    assert all(s == "edge; fwd=uri-miss; detail=filling" for s in statuses[1:]), statuses


async def test_range_and_conditional_waiters_are_answered_from_the_fill(origin, make_edge, client):
    """Waiters with a stored stale entry (so no range pass to the origin):
    a range is cut from the body as it arrives, a matching If-None-Match gets
    its 304 at once; the origin is stalled meanwhile."""
    data = blob(8 * MiB)
    route = Gated(data, headers={"ETag": '"v2"'})

    async def handler(request: web.Request) -> web.StreamResponse:
        if origin.hits["/r"] == 1:
            return web.Response(body=b"old", headers={"ETag": '"v1"', "Cache-Control": "max-age=0"})
        return await route(request)

    origin.route("/r", handler)
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/r") as r:
        assert await r.read() == b"old" and "stored" in r.headers["Cache-Status"]
    clients = await start_herd(client, edge.url + "/r", origin, "/r", n=1)  # validates, gets v2
    await until(lambda: origin.hits["/r"] == 2, "the validation reaches the origin")
    async with asyncio.timeout(GUARD):
        async with client.get(edge.url + "/r", headers={"Range": "bytes=100-199"}) as r:
            assert r.status == 206 and await r.read() == data[100:200]
            assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
            assert r.headers["Cache-Status"].endswith("; collapsed")
        async with client.get(edge.url + "/r", headers={"If-None-Match": '"v2"'}) as r:
            assert r.status == 304 and r.headers["Cache-Status"].endswith("; collapsed")
    assert not route.gate.is_set() and origin.hits["/r"] == 2
    route.gate.set()
    assert await asyncio.wait_for(clients[0].task, GUARD) == data


async def test_a_waiter_for_another_variant_is_not_given_this_one(origin, make_edge, client):
    data = {"en": blob(4 * MiB), "de": blob(5 * MiB)}
    routes = {lang: Gated(body, headers={"Vary": "Accept-Language"}) for lang, body in data.items()}
    routes["de"].gate.set()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await routes[request.headers["Accept-Language"]](request)

    origin.route("/v", handler)
    edge = await make_edge(quick_origin=origin.url)
    [en] = await start_herd(client, edge.url + "/v", origin, "/v", n=1, headers={"Accept-Language": "en"})
    async with client.get(edge.url + "/v", headers={"Accept-Language": "de"}) as r:
        assert await asyncio.wait_for(r.read(), GUARD) == data["de"]
    routes["en"].gate.set()
    assert await asyncio.wait_for(en.task, GUARD) == data["en"]
    assert origin.hits["/v"] == 2


async def test_readers_get_the_whole_body_when_it_outgrows_what_may_be_stored(origin, make_edge, client):
    """No Content-Length, and more than the tenant's max_object_size: the
    waiters that started (the disk tier was writing it) get it all from the
    one fetch, kept in memory only as far as fill_buffer; nothing is stored."""
    data = blob(6 * MiB)
    route = Gated(data, chunked=True, before=MiB + MiB // 2)
    origin.route("/big", route)
    buffer = 256 * 1024
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"max_object_size": "2MiB"}},
                           cache={"fill_buffer": buffer})
    clients = await start_herd(client, edge.url + "/big", origin, "/big", n=4)
    await asyncio.wait_for(asyncio.gather(*(c.head for c in clients)), GUARD)
    route.gate.set()
    peak = 0.0
    while not all(c.task.done() for c in clients):
        peak = max(peak, fill_buffer_bytes())
        await asyncio.sleep(0.005)
    assert all(c.task.result() == data for c in clients)
    assert origin.hits["/big"] == 1
    assert peak <= buffer + 10 * 64 * 1024 + MiB  # or the store's own memory phase, up to memory_max_object
    route.before = 0
    async with client.get(edge.url + "/big") as r:
        assert await r.read() == data
    assert origin.hits["/big"] == 2
