"""Slow clients over real sockets: slowloris heads and stalled uploads are
cut off with 408 while ordinary clients keep being served; request limits
and per-client concurrency answer with precise statuses."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from edge.config import Timeouts

HOST = b"shop.example"
GUARD = 10  # seconds: only against a hanging test, never a measured bound



@pytest.fixture
async def edge(origin, make_edge):
    origin.respond("/", b"home", headers={"Cache-Control": "no-store"})
    origin.respond("/upload", b"stored")
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(text="done")

    origin.route("/held", held)
    node = await make_edge(
        policies={
            "shop": {"hosts": ["shop.example"], "origins": [{"url": origin.url}]},
            "strict": {
                "hosts": ["strict.example"],
                "origins": [{"url": origin.url}],
                "filters": {"request_limits": {"methods": ["GET", "HEAD"], "max_query_length": 16, "max_concurrent": 2}},
            },
        },
        disk=False,
        timeouts=Timeouts(keepalive=75.0, shutdown=1.0, header_read=1.0, body_read=1.0, body_total=2.0),
    )
    node.gate = gate
    yield node
    gate.set()


async def connect(edge):
    return await asyncio.open_connection("127.0.0.1", edge.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, read off a raw connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", "0"))), GUARD)
    return int(lines[0].split(" ", 2)[1]), fields, body


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the edge sends until it closes the connection."""
    try:
        return await asyncio.wait_for(reader.read(), GUARD)
    except ConnectionResetError:
        return b""


async def normal_client(client, edge, rounds: int) -> list[int]:
    statuses = []
    for _ in range(rounds):
        async with client.get(edge.url + "/", headers={"Host": "shop.example"}) as r:
            await r.read()
            statuses.append(r.status)
        await asyncio.sleep(0.2)
    return statuses


# --- slowloris ---------------------------------------------------------------------


async def test_a_partial_head_gets_408_and_a_closed_connection(edge):
    reader, writer = await connect(edge)
    writer.write(b"GET / HTTP/1.1\r\nHost: " + HOST + b"\r\nX-Slow: 1")  # and nothing more
    data = await until_closed(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:100]
    assert b"\r\nConnection: close\r\n" in data and b"detail=header-timeout" in data
    assert data.endswith(b"\r\n\r\n408 request timeout\n")


async def test_trickled_heads_are_cut_off_while_others_are_served(edge, client):
    async def slowloris() -> tuple[bool, bytes]:
        reader, writer = await connect(edge)
        writer.write(b"GET / HTTP/1.1\r\nHost: " + HOST + b"\r\n")
        read = asyncio.ensure_future(until_closed(reader))
        cut = False
        try:
            for _ in range(50):  # one header byte every 0.2 s: 10 s if never cut off
                await asyncio.sleep(0.2)
                if read.done():
                    cut = True
                    break
                writer.write(b"X")
                await writer.drain()
        except ConnectionError:
            cut = True
        data = await read
        writer.close()
        return cut, data

    *slow, served = await asyncio.gather(slowloris(), slowloris(), slowloris(), normal_client(client, edge, 8))
    assert served == [200] * 8
    for cut, data in slow:
        assert cut, "the trickling client kept its connection"
        assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data[:100]


async def test_a_fresh_connection_that_sends_nothing_is_closed_silently(edge):
    reader, writer = await connect(edge)
    data = await until_closed(reader)
    writer.close()
    # No 408: a browser's speculative connection would read it as the answer to its next request.
    assert data == b""


async def test_a_head_in_pieces_within_the_deadline_is_served(edge):
    reader, writer = await connect(edge)
    for piece in (b"GET / HTT", b"P/1.1\r\nHost: shop.", b"example\r\n", b"Connection: close\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.1)
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, b"home")


async def test_an_idle_keep_alive_connection_is_not_cut_by_the_head_deadline(edge):
    """Between requests the keep-alive timeout (75 s here) applies, not header_read (1 s)."""
    reader, writer = await connect(edge)
    request = b"GET / HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n"
    writer.write(request)
    assert (await read_response(reader))[0] == 200
    await asyncio.sleep(1.5)
    writer.write(request)
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, b"home")


# --- slow POST -------------------------------------------------------------------------


def upload(length: int, first: bytes) -> bytes:
    return b"POST /upload HTTP/1.1\r\nHost: " + HOST + b"\r\nContent-Length: %d\r\n\r\n" % length + first


def uploads(origin) -> list[dict]:
    return [r for r in origin.requests if r["path_qs"] == "/upload"]


async def test_a_stalled_upload_gets_408_and_the_origin_no_request(edge, origin):
    reader, writer = await connect(edge)
    writer.write(upload(1000, b"0123456789"))  # then the client stalls
    data = await until_closed(reader)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert b"detail=body-timeout" in data
    assert uploads(origin) == []  # the origin never got a complete request


async def test_a_trickled_upload_hits_the_total_deadline(edge, origin):
    reader, writer = await connect(edge)
    writer.write(upload(1000, b"x"))
    read = asyncio.ensure_future(until_closed(reader))
    cut = False
    try:
        for _ in range(40):  # one byte every 0.25 s keeps within body_read, not body_total
            await asyncio.sleep(0.25)
            if read.done():
                cut = True
                break
            writer.write(b"x")
            await writer.drain()
    except ConnectionError:
        cut = True
    data = await read
    writer.close()
    assert cut
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert uploads(origin) == []


async def test_a_prompt_upload_reaches_the_origin_whole(edge, origin, client):
    body = bytes(range(256)) * 400
    async with client.post(edge.url + "/upload", data=body, headers={"Host": "shop.example"}) as r:
        assert (r.status, await r.read()) == (200, b"stored")
    assert [r["body"] for r in uploads(origin)] == [body]


# --- request limits --------------------------------------------------------------------


@pytest.mark.parametrize(("method", "target", "status", "rule"), [
    ("DELETE", "/", 405, "methods"),
    ("GET", "/?" + "q" * 17, 414, "max_query_length"),
    ("GET", "/?" + "q" * 16, 200, None),
])
async def test_tenant_request_limits(edge, client, method, target, status, rule):
    async with client.request(method, edge.url + target, headers={"Host": "strict.example"}) as r:
        await r.read()
        assert r.status == status
        if rule is not None:
            assert r.headers["Cache-Status"].endswith(f"detail=filter.request_limits.{rule}")
        if status == 405:
            assert r.headers["Allow"] == "GET, HEAD"


async def test_requests_in_flight_per_client_are_limited_and_given_back(edge, origin, client):
    async def get(n: int) -> tuple[int, dict]:
        # Distinct URLs: identical GETs would be collapsed into one origin request.
        async with client.get(f"{edge.url}/held?{n}", headers={"Host": "strict.example"}) as r:
            await r.read()
            return r.status, dict(r.headers)

    held = [asyncio.ensure_future(get(n)) for n in range(2)]
    try:
        async with asyncio.timeout(GUARD):
            while origin.hits["/held"] < 2:  # both in flight: the origin holds them
                await asyncio.sleep(0.01)
        status, headers = await get(2)
        assert status == 429 and headers["Retry-After"] == "1"
        assert headers["Cache-Status"].endswith("detail=filter.request_limits.max_concurrent")
        # The same client's requests to another tenant are counted apart.
        async with client.get(edge.url + "/", headers={"Host": "shop.example"}) as r:
            assert r.status == 200
    finally:
        edge.gate.set()
    assert [s for s, _ in await asyncio.gather(*held)] == [200, 200]
    # Finished requests gave their slots back.
    assert (await get(3))[0] == 200
