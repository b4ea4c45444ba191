"""Interim (1xx) responses from the origin, over real sockets (RFC 9110
§15.2, RFC 8297): relayed to the client whose request went to the origin,
before its final answer; never stored, never shown to a hit or a collapsed
waiter; bounded per request, over every attempt (edge/origin/interim.py)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from edge.origin.interim import MAX_INTERIM_RESPONSES
from tests.conftest import raw_request

GUARD = 20  # seconds: only against a hanging test, never a measured bound
HINT = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"


def final(body: bytes, cache_control: str = "max-age=60") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: " + cache_control.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


class RawOrigin:
    """An origin on a plain socket: ``answer(writer)`` writes each answer
    byte by byte as the test wants it, interim responses included."""

    def __init__(self, answer: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                await self.answer(writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawOrigin:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()


def sends(*parts: bytes):
    async def answer(writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()

    return answer


def messages(data: bytes) -> tuple[list[bytes], bytes, bytes]:
    """The interim heads, the final head and the body of one answer."""
    interim = []
    while True:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, "no complete head"
        if head[9:10] == b"1":
            interim.append(head)
            continue
        return interim, head, data


def field(head: bytes, name: bytes) -> list[bytes]:
    lines = head.split(b"\r\n")[1:]
    return [line.split(b":", 1)[1].strip() for line in lines if line.split(b":", 1)[0].lower() == name.lower()]


def get(path: str) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def test_early_hints_reach_the_client_before_the_answer_and_are_never_stored(make_edge):
    async with RawOrigin(sends(HINT, final(b"page"))) as origin:
        edge = await make_edge(quick_origin=origin.url)
        interim, head, body = messages(await raw_request(edge.port, get("/page")))
        assert len(interim) == 1 and interim[0].startswith(b"HTTP/1.1 103 Early Hints\r\n")
        assert field(interim[0], b"Link") == [b"</a.css>; rel=preload"]
        assert field(interim[0], b"Via") == [b"1.1 edge"]
        assert head.startswith(b"HTTP/1.1 200") and body == b"page"
        assert b"fwd=uri-miss; stored" in field(head, b"Cache-Status")[0]
        assert field(head, b"Link") == []  # the hint's fields stay on the hint

        # A hit: no hint, and nothing of it in the stored answer.
        interim, head, body = messages(await raw_request(edge.port, get("/page")))
        assert interim == [] and body == b"page"
        assert field(head, b"Cache-Status")[0].startswith(b"edge; hit")
        assert field(head, b"Link") == []
        assert len(origin.requests) == 1


async def test_several_interim_responses_arrive_in_order_and_100_stays_with_the_edge(make_edge):
    processing = b"HTTP/1.1 102 Processing\r\n\r\n"
    second = b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n"
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with RawOrigin(sends(processing, cont, HINT, second, final(b"done", "no-store"))) as origin:
        edge = await make_edge(quick_origin=origin.url)
        interim, head, body = messages(await raw_request(edge.port, get("/slow")))
        assert [h.split(b"\r\n")[0] for h in interim] == [
            b"HTTP/1.1 102 Processing", b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 103 Early Hints"
        ]
        assert field(interim[1], b"Link") == [b"</a.css>; rel=preload"]
        assert field(interim[2], b"Link") == [b"</b.js>; rel=preload"]
        assert head.startswith(b"HTTP/1.1 200") and body == b"done"


async def test_hop_by_hop_and_internal_fields_are_not_relayed(make_edge):
    hint = (b"HTTP/1.1 103 Early Hints\r\nConnection: x-hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n"
            b"Surrogate-Key: internal\r\nVia: 1.1 shield\r\nLink: </a.css>; rel=preload\r\n\r\n")
    async with RawOrigin(sends(hint, final(b"ok"))) as origin:
        edge = await make_edge(quick_origin=origin.url)
        interim, head, _ = messages(await raw_request(edge.port, get("/h")))
        names = {line.split(b":", 1)[0].lower() for line in interim[0].split(b"\r\n")[1:]}
        assert names == {b"link", b"via"}
        assert field(interim[0], b"Via") == [b"1.1 shield, 1.1 edge"]
        assert head.startswith(b"HTTP/1.1 200")


async def test_a_pass_relays_to_http_1_1_clients_only(make_edge):
    """RFC 9110 §15.2: a 1xx is never sent to an HTTP/1.0 client."""
    async with RawOrigin(sends(HINT, final(b"posted", "no-store"))) as origin:
        edge = await make_edge(quick_origin=origin.url)
        for version, hints in ((b"1.1", 1), (b"1.0", 0)):
            request = b"POST /form HTTP/" + version + b"\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
            interim, head, body = messages(await raw_request(edge.port, request))
            assert len(interim) == hints and head[9:12] == b"200" and body == b"posted", version


async def test_only_the_request_that_reaches_the_origin_gets_the_hint(make_edge):
    """Clients collapsed onto another's fetch (here of a large body, read
    along while it arrives) get the answer without the leader's hint."""
    size, before = 1 << 20, 512 << 10
    body = bytes(range(256)) * (size // 256)
    gate = asyncio.Event()

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(HINT + b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: %d\r\n\r\n" % size
                     + body[:before])
        await writer.drain()
        await gate.wait()
        writer.write(body[before:])

    async with RawOrigin(answer) as origin:
        edge = await make_edge(quick_origin=origin.url)

        async def start(request: bytes):
            reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
            writer.write(request)
            await writer.drain()
            heads = [await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)]
            while heads[-1][9:10] == b"1":
                heads.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD))
            return heads, reader, writer

        leader = await start(get("/big"))
        followers = [await start(get("/big")) for _ in range(3)]  # while the origin holds the rest
        gate.set()
        for heads, reader, writer in [leader, *followers]:
            assert len(await asyncio.wait_for(reader.read(), GUARD)) == size
            writer.close()
        heads = leader[0]
        assert len(heads) == 2 and heads[0].startswith(b"HTTP/1.1 103") and heads[1].startswith(b"HTTP/1.1 200")
        for heads, _, _ in followers:
            assert len(heads) == 1 and heads[0].startswith(b"HTTP/1.1 200"), heads
            assert field(heads[0], b"Cache-Status")[0].endswith(b"; collapsed")
        assert len(origin.requests) == 1


def drops_once(before_drop: bytes, after: bytes, dropped: asyncio.Event):
    """An origin whose kept-alive connection, on its second request, sends
    ``before_drop`` and closes once ``dropped`` is set (the client has seen
    its first interim response); the edge sends the request again on a new
    connection, which gets ``after``."""
    calls = 0

    async def answer(writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.write(final(b"warm", "no-store"))
        elif calls == 2:
            writer.write(before_drop)
            await writer.drain()
            await dropped.wait()
            raise ConnectionResetError  # RawOrigin closes the connection
        else:
            writer.write(after)

    return answer


async def retried(edge, origin, path: str, dropped: asyncio.Event) -> tuple[list[bytes], bytes, bytes]:
    """A client's answer for ``path``, sent while the edge holds a kept-alive
    connection to ``origin``: the origin drops it once the client has an
    interim response."""
    interim, head, _ = messages(await raw_request(edge.port, get("/warm")))
    assert interim == [] and head.startswith(b"HTTP/1.1 200")
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    try:
        writer.write(get(path))
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
        assert first.startswith(b"HTTP/1.1 103"), first
        dropped.set()
        data = first + await asyncio.wait_for(reader.read(), GUARD)
    finally:
        writer.close()
    assert len(origin.requests) == 3  # the warm-up, the dropped attempt, the retry
    return messages(data)


async def test_a_retry_on_a_new_connection_relays_no_interim_response_twice(make_edge):
    dropped = asyncio.Event()
    async with RawOrigin(drops_once(HINT, HINT + final(b"page", "no-store"), dropped)) as origin:
        edge = await make_edge(quick_origin=origin.url)
        interim, head, body = await retried(edge, origin, "/page", dropped)
        assert len(interim) == 1 and interim[0].startswith(b"HTTP/1.1 103 Early Hints\r\n")
        assert field(interim[0], b"Link") == [b"</a.css>; rel=preload"]
        assert head.startswith(b"HTTP/1.1 200") and body == b"page"


async def test_the_bound_on_interim_responses_counts_every_attempt(make_edge):
    """A retry does not start the count anew: an origin cannot double it by
    dropping a kept-alive connection."""
    dropped = asyncio.Event()
    half = MAX_INTERIM_RESPONSES // 2 + 1
    async with RawOrigin(drops_once(HINT * half, HINT * half + final(b"late", "no-store"), dropped)) as origin:
        edge = await make_edge(quick_origin=origin.url)
        interim, head, _ = await retried(edge, origin, "/flood", dropped)
        assert head.startswith(b"HTTP/1.1 502") and b"detail=origin-protocol" in field(head, b"Cache-Status")[0]
        assert 1 <= len(interim) <= half


@pytest.mark.parametrize("count, status", [(MAX_INTERIM_RESPONSES, 200), (MAX_INTERIM_RESPONSES + 1, 502)])
async def test_a_flood_of_interim_responses_is_an_origin_error(make_edge, count, status):
    async with RawOrigin(sends(HINT * count, final(b"late", "no-store"))) as origin:
        edge = await make_edge(quick_origin=origin.url)
        interim, head, _ = messages(await raw_request(edge.port, get("/flood")))
        assert head.startswith(b"HTTP/1.1 %d" % status)
        assert len(interim) == min(count, MAX_INTERIM_RESPONSES)
        if status == 502:
            assert b"detail=origin-protocol" in field(head, b"Cache-Status")[0]


async def test_an_endless_stream_of_interim_responses_is_cut(make_edge):
    async def answer(writer: asyncio.StreamWriter) -> None:
        for _ in range(100_000):  # far past the bound; the edge hangs up long before
            writer.write(HINT)
            await writer.drain()

    async with RawOrigin(answer) as origin:
        edge = await make_edge(quick_origin=origin.url)
        _, head, _ = messages(await raw_request(edge.port, get("/endless")))
        assert head.startswith(b"HTTP/1.1 502")


@pytest.mark.parametrize("hint", [
    b"HTTP/1.1 103 Early Hints\r\nLink </a.css>; rel=preload\r\n\r\n",  # no colon
    b"HTTP/1.1 103 Early Hints\r\nLi nk: </a.css>\r\n\r\n",  # a space in the name
    b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\x00\r\n\r\n",  # NUL in the value
], ids=["no-colon", "space-in-name", "nul-in-value"])
async def test_an_interim_response_with_broken_fields_is_an_origin_error(make_edge, hint):
    async with RawOrigin(sends(hint, final(b"x", "no-store"))) as origin:
        edge = await make_edge(quick_origin=origin.url)
        interim, head, _ = messages(await raw_request(edge.port, get("/broken")))
        assert interim == []
        assert head.startswith(b"HTTP/1.1 502") and b"detail=origin-protocol" in field(head, b"Cache-Status")[0]
    # The node is unharmed: a sound origin is served as before.
    async with RawOrigin(sends(HINT, final(b"fine"))) as good:
        edge = await make_edge(quick_origin=good.url)
        interim, head, body = messages(await raw_request(edge.port, get("/fine")))
        assert len(interim) == 1 and body == b"fine"
