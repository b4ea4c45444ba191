"""Slow clients over real sockets: slowloris heads and stalled uploads are
cut off with 408 while ordinary clients keep being served; clients that
never read their answers are reset and free what they held; request limits
and per-client concurrency answer with precise statuses."""
from __future__ import annotations

import asyncio
import functools
import socket

import pytest
from aiohttp import web

from edge.config import Timeouts
from tests.conftest import until as wait_until

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
            "tight": {
                "hosts": ["tight.example"],
                "origins": [{"url": origin.url}],
                "filters": {"request_limits": {"max_body_size": "1KiB"}},
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
        await until(lambda: origin.hits["/held"] >= 2, "both in flight: the origin holds them")
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


@pytest.mark.parametrize(("host", "head", "sent"), [
    # Refused by the node's limit on its Content-Length: none of the body is read.
    (b"shop.example", b"Content-Length: %d" % (10 * 2**30), b"0123456789"),
    # Refused by the tenant's limit on its Content-Length.
    (b"tight.example", b"Content-Length: 2000", b"0123456789"),
    # Chunked: refused once more than the limit arrived.
    (b"tight.example", b"Transfer-Encoding: chunked", b"800\r\n" + b"x" * 0x800 + b"\r\n"),
], ids=["node-limit", "tenant-limit", "chunked"])
async def test_an_oversized_upload_gets_413_and_the_connection_closes_at_once(edge, origin, host, head, sent):
    """The connection is not kept open to read and discard the rest."""
    reader, writer = await connect(edge)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: " + host + b"\r\n" + head + b"\r\n\r\n" + sent)  # then nothing
    await writer.drain()
    status, fields, _ = await read_response(reader)
    assert (status, fields["connection"]) == (413, "close")
    # EOF without sending anything more (a guard, not a measured bound: the
    # node would otherwise keep reading for its 10 s lingering time).
    rest = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert rest == b""
    assert uploads(origin) == []


async def keep_sending(sock: socket.socket) -> None:
    """A body that never ends, sent as fast as the edge takes it, until the
    edge closes the connection."""
    loop = asyncio.get_running_loop()
    chunk = b"x" * 2**16
    try:
        while True:
            await loop.sock_sendall(sock, chunk)
    except ConnectionError:
        pass


async def received_until_closed(sock: socket.socket) -> bytes:
    """Everything the edge sends until it closes the connection or resets
    it (a close with the client's bytes unread is a reset: what came before
    it is still read)."""
    loop = asyncio.get_running_loop()
    data = b""
    try:
        while chunk := await loop.sock_recv(sock, 65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


@pytest.mark.parametrize(("host", "target", "status", "detail"), [
    (b"unknown.example", b"/upload", 421, "unknown-host"),
    (HOST, b"/upload?q=1%27%20OR%20%271%27%3D%271", 403, "filter.waf"),
], ids=["unknown-host", "waf"])
async def test_a_refused_upload_is_not_read_on_and_the_connection_closes_at_once(edge, origin, host, target, status, detail):
    """Whatever the refusal, the node does not go on reading and discarding
    a body the client keeps sending."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", edge.port))
    await loop.sock_sendall(sock, b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (
        target, host, 10 * 2**30))
    sending = asyncio.ensure_future(keep_sending(sock))
    try:
        # The answer, then EOF while the client is still sending (a guard,
        # not a measured bound: the node would otherwise keep reading for
        # its 10 s lingering time).
        data = await asyncio.wait_for(received_until_closed(sock), 5)
        await asyncio.wait_for(sending, GUARD)
    finally:
        sending.cancel()
        sock.close()
    head = data.partition(b"\r\n\r\n")[0] + b"\r\n"
    assert head.startswith(b"HTTP/1.1 %d " % status), data[:100]
    assert b"\r\nConnection: close\r\n" in head and f"detail={detail}\r\n".encode() in head
    assert uploads(origin) == []


async def test_requests_whose_body_was_read_keep_their_connection(edge, origin):
    reader, writer = await connect(edge)
    try:
        # Forwarded whole, then refused with the whole body at hand: neither closes.
        writer.write(upload(5, b"hello"))
        assert (await read_response(reader))[0] == 200
        writer.write(b"POST / HTTP/1.1\r\nHost: unknown.example\r\nContent-Length: 5\r\n\r\nhello")
        status, fields, _ = await read_response(reader)
        assert status == 421 and fields.get("connection") != "close"
        writer.write(b"GET / HTTP/1.1\r\nHost: " + HOST + b"\r\n\r\n")
        assert (await read_response(reader))[0] == 200
    finally:
        writer.close()
    assert [r["body"] for r in uploads(origin)] == [b"hello"]


# --- slow readers ------------------------------------------------------------------------

BIG = 32 * 2**20  # more than the socket buffers between origin and client hold (megabytes on loopback)
SMALL_ANSWER = 256 * 2**10  # read whole from the origin, then written to the client in one go
POOL = 4  # the tenant's origin connections


class Streams:
    """How many of the origin's streamed answers started and how many ended."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0  # written whole, or cut off when the edge closed the connection


def streamed(streams: Streams, size: int, cache_control: str = "no-store"):
    chunk = b"x" * 2**16

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": cache_control, "Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        streams.started += 1
        try:
            for start in range(0, size, len(chunk)):
                await resp.write(chunk[: size - start])
            await resp.write_eof()
        except ConnectionError:
            pass  # the edge closed the connection
        finally:
            streams.ended += 1
        return resp

    return handler


async def start_readers(origin, make_edge, *, send: float = 1.0, min_rate: int = 1024, **changes):
    """An edge whose clients must take ``min_rate`` bytes a second of their
    answer in every ``send`` seconds, with POOL connections to the origin
    and a 1 s wait for one."""
    streams = Streams()
    origin.route("/big", streamed(streams, BIG))
    origin.route("/cached", streamed(streams, BIG, "max-age=600"))
    origin.route("/medium", streamed(streams, SMALL_ANSWER))
    origin.respond("/small", b"fine", headers={"Cache-Control": "no-store"})
    node = await make_edge(
        policies={
            "shop": {"hosts": ["shop.example"], "origins": [{"url": origin.url, "max_connections": POOL}]},
            "strict": {
                "hosts": ["strict.example"],
                "origins": [{"url": origin.url}],
                "filters": {"request_limits": {"max_concurrent": 2}},
            },
        },
        timeouts=Timeouts(keepalive=75.0, shutdown=1.0, send=send, origin_queue=1.0, send_min_rate=min_rate),
        **changes,
    )
    node.streams = streams
    return node


until = functools.partial(wait_until, timeout=GUARD)


async def served(answer) -> bool:
    """Whether the request ``answer`` awaits got a 200."""
    return (await answer)[0] == 200


async def hit(answer) -> bool:
    """Whether the HEAD request ``answer`` awaits was a cache hit."""
    return "; hit" in (await answer)["Cache-Status"]


async def stalled_reader(edge, target: str, host: bytes = HOST, source: str = "127.0.0.1") -> socket.socket:
    """A client at ``source`` that asks for ``target`` and never reads a
    byte of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sizes the window
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", edge.port))
    await loop.sock_sendall(sock, b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(), host))
    return sock


def answered(sock: socket.socket) -> bytes:
    """What of the answer waits unread in the client's socket."""
    try:
        return sock.recv(4096, socket.MSG_PEEK)
    except BlockingIOError:
        return b""


def cut_off(sock: socket.socket) -> bool:
    """The edge aborted or closed this connection (Linux TCP_INFO state)."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    return state in (7, 8)  # TCP_CLOSE (after a reset), TCP_CLOSE_WAIT (after a FIN)


async def get(client, edge, target: str, host: str = "shop.example") -> tuple[int, dict, bytes]:
    async with asyncio.timeout(GUARD):
        async with client.get(edge.url + target, headers={"Host": host}) as r:
            return r.status, dict(r.headers), await r.read()


async def head(client, edge, target: str) -> dict:
    async with asyncio.timeout(GUARD):
        async with client.head(edge.url + target, headers={"Host": "shop.example"}) as r:
            return dict(r.headers)


async def test_clients_that_never_read_do_not_pin_the_origin_connections(origin, make_edge, client):
    edge = await start_readers(origin, make_edge)
    # Many clients: one alone may not take every connection (origin_share).
    stalled = [await stalled_reader(edge, f"/big?{n}", source=f"127.0.1.{n + 1}") for n in range(2 * POOL)]
    try:
        await until(lambda: edge.streams.started >= POOL, "every origin connection streams to a stalled client")
        # Saturated: another client's miss is answered, at worst with a 503
        # from the bounded wait for an origin connection.
        status, headers, _ = await get(client, edge, "/small")
        if status == 503:
            assert headers["Retry-After"] == "1"
            assert headers["Cache-Status"] == "edge; fwd=miss; detail=origin-busy"
        else:
            assert status == 200
        # The stalled clients are cut off and the origin sees its streams end.
        await until(lambda: edge.streams.ended >= POOL, "the origin's streams to stalled clients ended")
        # A stalled request that got a connection late may hold it a moment.
        await until(lambda: served(get(client, edge, "/small")), "a miss is served again")
    finally:
        for sock in stalled:
            sock.close()
    # Waiting for a connection of the edge's own is no failure of the origin.
    health = edge.node.state.origins.health(origin.url)
    assert (health.failures, health.down_until) == (0, 0.0)


async def test_one_client_that_never_reads_cannot_take_every_origin_connection(origin, make_edge, client):
    """origin_share (a quarter: one of POOL connections here): the client's
    further requests wait for its own, then get 429, while another client's
    miss is served."""
    edge = await start_readers(origin, make_edge, send=0.0)  # no send deadline: stalled as long as the test wants
    stalled = [await stalled_reader(edge, f"/big?{n}", source="127.0.0.3") for n in range(2 * POOL)]
    try:
        await until(lambda: edge.streams.started + sum(answered(s).startswith(b"HTTP/1.1 ") and
                                                       not answered(s).startswith(b"HTTP/1.1 200 ") for s in stalled)
                    == len(stalled), "every request of the stalled client streams or was refused")
        status, headers, body = await get(client, edge, "/small")
        assert (status, body) == (200, b"fine"), headers.get("Cache-Status")
        assert edge.streams.started == POOL // 4
        for sock in stalled:
            head = answered(sock)
            if not head.startswith(b"HTTP/1.1 200 "):
                assert head.startswith(b"HTTP/1.1 429 ") and b"\r\nRetry-After: 1\r\n" in head, head[:100]
                assert b"detail=filter.request_limits.origin_share\r\n" in head
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("tier", ["memory", "disk"])
async def test_clients_that_never_read_a_hit_are_cut_off(origin, make_edge, client, tier):
    # The memory tier keeps objects up to memory_max_object, written whole;
    # larger ones are streamed from disk.
    cache = {"memory_max_object": 2 * BIG} if tier == "memory" else None
    edge = await start_readers(origin, make_edge, cache=cache)
    status, headers, body = await get(client, edge, "/cached")
    assert (status, len(body)) == (200, BIG) and "stored" in headers["Cache-Status"]
    # The disk tier commits the entry just after the last byte went out.
    await until(lambda: hit(head(client, edge, "/cached")), "the entry is a hit")
    fetched = edge.streams.started
    stalled = [await stalled_reader(edge, "/cached") for _ in range(2)]
    try:
        await until(lambda: all(cut_off(s) for s in stalled), "every stalled client was cut off")
    finally:
        for sock in stalled:
            sock.close()
    assert edge.streams.started == fetched  # hits, all of them
    status, headers, body = await get(client, edge, "/cached")
    assert (status, len(body)) == (200, BIG) and "; hit" in headers["Cache-Status"]


async def test_a_client_that_reads_slowly_is_not_cut_off(origin, make_edge):
    edge = await start_readers(origin, make_edge)
    sock = await stalled_reader(edge, "/big")
    loop = asyncio.get_running_loop()
    got = 0
    try:
        while got < 160 * 2**10:  # 2 KiB every 50 ms: a few send deadlines long, taking bytes in each
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), GUARD)
            assert data, f"cut off after {got} bytes"
            got += len(data)
            await asyncio.sleep(0.05)
    finally:
        sock.close()


async def test_a_client_that_takes_a_trickle_is_cut_off(origin, make_edge):
    """Taking a little in every send period, below timeouts.send_min_rate,
    does not keep the deadline from firing."""
    edge = await start_readers(origin, make_edge, min_rate=64 * 2**10)
    sock = await stalled_reader(edge, "/big")
    loop = asyncio.get_running_loop()
    got = 0
    try:
        while True:  # 4 KiB every 0.25 s: some in every second, a quarter of the rate
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), GUARD)
            except ConnectionResetError:
                break
            if not data:
                break
            got += len(data)
            assert got < 256 * 2**10, "a client taking 16 KiB/s of 64 KiB/s was never cut off"
            await asyncio.sleep(0.25)
    finally:
        sock.close()
    await until(lambda: edge.streams.ended >= 1, "the origin's stream to the trickling client ended")


@pytest.mark.parametrize(("target", "how"), [
    ("/medium", "read whole from the origin, then written"),
    ("/big", "streamed"),
])
async def test_answers_a_client_does_not_read_count_as_its_requests_in_flight(origin, make_edge, client, target, how):
    # No send deadline here: the answers stay unread as long as the test wants.
    edge = await start_readers(origin, make_edge, send=0.0)
    for site in edge.node.runner.sites:
        for listener in site._server.sockets:
            # Accepted sockets inherit it: the answer cannot hide in the kernel.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stalled = [await stalled_reader(edge, f"{target}?{n}", b"strict.example") for n in range(2)]
    try:
        await until(lambda: edge.streams.started >= 2, "the origin answers both")
        if target == "/medium":
            await until(lambda: edge.streams.ended >= 2, "the edge has both answers whole")
        status, headers, _ = await get(client, edge, "/small", "strict.example")
        assert status == 429, how
        assert headers["Cache-Status"].endswith("detail=filter.request_limits.max_concurrent")
    finally:
        for sock in stalled:
            sock.close()
    # Gone clients give their slots back.
    await until(lambda: served(get(client, edge, "/small", "strict.example")), "the client's slots are free again")
