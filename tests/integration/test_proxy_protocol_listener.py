"""The PROXY protocol listener over real sockets: aiohttp's web.Server behind
ProxyProtocolSite, raw-socket clients sending headers as load balancers do."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from edge.geo.proxy_protocol import V2_SIGNATURE, ProxyProtocolSite

REQUEST = b"GET / HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"
TIMEOUT = 0.3
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)  # where the test clients connect from


def v2_tcp4(src: str, sport: int, dst: str = "198.51.100.2", dport: int = 443, tlvs: bytes = b"") -> bytes:
    block = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block) + len(tlvs)) + block + tlvs


def v2_tcp6(src: str, sport: int, dst: str = "2001:db8::2", dport: int = 443) -> bytes:
    block = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21, len(block)) + block


V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


async def echo(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    header = request.transport.get_extra_info("proxy_header") if request.transport else None
    port = header.src_port if header is not None else None
    return web.Response(text=f"{request.remote}|{port}|{len(body)}")


class Listener:
    def __init__(self, runner: web.ServerRunner, site: ProxyProtocolSite) -> None:
        self.runner = runner
        self.site = site
        self.port = site.port


async def start_listener() -> Listener:
    server = web.Server(echo)
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    site = ProxyProtocolSite(runner, "127.0.0.1", 0, peers=LOOPBACK, header_timeout=TIMEOUT)
    await site.start()
    return Listener(runner, site)


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = await start_listener()
    yield lst
    await lst.runner.cleanup()


async def exchange(port: int, *chunks: bytes, pause: float = 0.0, source: str = "127.0.0.1") -> bytes:
    """Send ``chunks`` as separate TCP writes from the address ``source``,
    then read until the server closes. A reset counts as closed: what was
    read so far is returned."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    received = b""
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                return received
            received += data
    except (ConnectionResetError, BrokenPipeError):
        return received
    finally:
        writer.close()


def body(response: bytes) -> str:
    head, _, text = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return text.decode()


CASES = [
    ("v1-tcp4", b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", "192.0.2.1|56324|0"),
    ("v1-tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n", "2001:db8::1|4711|0"),
    ("v2-tcp4", v2_tcp4("203.0.113.7", 40000), "203.0.113.7|40000|0"),
    ("v2-tcp4-tlvs", v2_tcp4("203.0.113.8", 1, tlvs=b"\x02\x00\x04edge\x05\x00\x02id"), "203.0.113.8|1|0"),
    ("v2-tcp6", v2_tcp6("2001:db8:cafe::17", 4711), "2001:db8:cafe::17|4711|0"),
]


@pytest.mark.parametrize(("header", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_remote_is_the_address_in_the_header(listener: Listener, header: bytes, expected: str) -> None:
    assert body(await exchange(listener.port, header + REQUEST)) == expected


@pytest.mark.parametrize(("header", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_header_split_across_writes(listener: Listener, header: bytes, expected: str) -> None:
    # One TCP write per byte of the header, then the request in two pieces
    # (the second piece of the header shares a write with the request).
    chunks = [header[i : i + 1] for i in range(len(header) - 1)]
    chunks += [header[-1:] + REQUEST[:10], REQUEST[10:]]
    assert body(await exchange(listener.port, *chunks, pause=0.002)) == expected


async def test_local_command_uses_socket_peer(listener: Listener) -> None:
    assert body(await exchange(listener.port, V2_LOCAL + REQUEST)) == "127.0.0.1|None|0"


async def test_v1_unknown_uses_socket_peer(listener: Listener) -> None:
    assert body(await exchange(listener.port, b"PROXY UNKNOWN\r\n" + REQUEST)) == "127.0.0.1|None|0"


async def test_keep_alive_requests_share_the_header(listener: Listener) -> None:
    first = b"GET / HTTP/1.1\r\nHost: edge.test\r\n\r\n"
    response = await exchange(listener.port, b"PROXY TCP4 192.0.2.44 192.0.2.1 1234 80\r\n" + first, first, REQUEST)
    assert response.count(b"HTTP/1.1 200") == 3
    assert response.count(b"192.0.2.44|1234|0") == 3


async def test_body_in_the_same_write_as_the_header(listener: Listener) -> None:
    payload = b"x" * 300_000
    request = b"POST / HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(payload)
    response = await exchange(listener.port, v2_tcp4("192.0.2.9", 9) + request + payload)
    assert body(response) == f"192.0.2.9|9|{len(payload)}"


REJECTED = [
    ("plain-http", REQUEST),
    ("garbage", b"\x00\x01\x02 hello\r\n\r\n"),
    ("v1-bad-address", b"PROXY TCP4 192.0.2.999 198.51.100.2 1 2\r\n" + REQUEST),
    ("v1-bare-lf", b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n" + REQUEST),
    ("v1-too-long", b"PROXY UNKNOWN " + b"a" * 200 + b"\r\n" + REQUEST),
    ("v2-bad-version", V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12 + REQUEST),
    ("v2-truncated-block", V2_SIGNATURE + b"\x21\x11\x00\x04\x01\x02\x03\x04" + REQUEST),
    ("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64),
]


@pytest.mark.parametrize("data", [c[1] for c in REJECTED], ids=[c[0] for c in REJECTED])
async def test_missing_or_malformed_header_closes_without_response(listener: Listener, data: bytes) -> None:
    assert await exchange(listener.port, data) == b""


async def test_slow_header_is_closed_after_the_timeout(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(b"PROXY TCP4 192.0.2.1 ")
        await writer.drain()
        # The server closes on its own; the bound only keeps a failure from hanging.
        try:
            data = await asyncio.wait_for(reader.read(), TIMEOUT * 20)
        except ConnectionResetError:
            data = b""
        assert data == b""
    finally:
        writer.close()


async def test_silent_connection_is_closed_after_the_timeout(listener: Listener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        assert await asyncio.wait_for(reader.read(), TIMEOUT * 20) == b""
    finally:
        writer.close()


async def test_listener_keeps_serving_after_rejections(listener: Listener) -> None:
    for data in (REQUEST, b"PROXY bogus\r\n"):
        assert await exchange(listener.port, data) == b""
    assert body(await exchange(listener.port, v2_tcp4("192.0.2.5", 5) + REQUEST)) == "192.0.2.5|5|0"


async def test_file_response_through_the_wrapper(tmp_path: Path) -> None:
    # FileResponse uses loop.sendfile(); the wrapper takes its copying fallback.
    data = bytes(range(256)) * 1000
    path = tmp_path / "blob"
    path.write_bytes(data)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.FileResponse(path)

    runner = web.ServerRunner(web.Server(handler), handle_signals=False)
    await runner.setup()
    site = ProxyProtocolSite(runner, "127.0.0.1", 0, peers=LOOPBACK, header_timeout=TIMEOUT)
    await site.start()
    try:
        response = await exchange(site.port, v2_tcp4("192.0.2.1", 1) + REQUEST)
        head, _, got = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert got == data
    finally:
        await runner.cleanup()


def test_site_refuses_tls() -> None:
    async def go() -> None:
        runner = web.ServerRunner(web.Server(echo), handle_signals=False)
        await runner.setup()
        try:
            import ssl

            with pytest.raises(ValueError, match="TLS"):
                ProxyProtocolSite(runner, "127.0.0.1", 0, peers=LOOPBACK, ssl_context=ssl.create_default_context())
        finally:
            await runner.cleanup()

    asyncio.run(go())


def test_works_under_uvloop() -> None:
    # Production runs uvloop when it is installed (edge.cli); its transports
    # must accept the hand-over (set_protocol) as asyncio's do.
    uvloop = pytest.importorskip("uvloop")

    async def go() -> None:
        lst = await start_listener()
        try:
            split = b"PROXY TCP6 2001:db8::9 2001:db8::2 9 443\r\n"
            assert body(await exchange(lst.port, split[:7], split[7:] + REQUEST[:5], REQUEST[5:], pause=0.01)) == "2001:db8::9|9|0"
            assert body(await exchange(lst.port, V2_LOCAL + REQUEST)) == "127.0.0.1|None|0"
            assert await exchange(lst.port, REQUEST) == b""
            reader, writer = await asyncio.open_connection("127.0.0.1", lst.port)
            writer.write(b"PROXY")
            assert await asyncio.wait_for(reader.read(), TIMEOUT * 20) == b""
            writer.close()
        finally:
            await lst.runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(go())


async def test_only_the_load_balancers_in_proxy_protocol_from_are_believed(origin, make_edge, caplog) -> None:
    """A PROXY header names any address its sender likes: the node reads it
    only from the peers in proxy_protocol_from, closes every other
    connection unanswered and says so in the log, anonymised."""
    from edge.config_tls import ListenAddress

    origin.respond("/who", "who", headers={"Cache-Control": "no-store"})
    balancer = ipaddress.ip_network("127.0.0.2/32")
    edge = await make_edge(quick_origin=origin.url, listen=(
        ListenAddress("127.0.0.1", 0, proxy_protocol=True, proxy_protocol_from=(balancer,)),))
    header = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
    request = b"GET /who HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n"

    assert (await exchange(edge.port, header + request, source="127.0.0.2")).startswith(b"HTTP/1.1 200")
    with caplog.at_level(logging.WARNING, logger="edge.geo.proxy_protocol"):
        for source in ("127.0.0.3", "127.0.0.1"):
            assert await exchange(edge.port, header + request, source=source) == b"", source
    assert origin.hits["/who"] == 1
    refused = [r.getMessage() for r in caplog.records if "proxy_protocol_from" in r.getMessage()]
    assert len(refused) == 1 and "127.0.0.0/24" in refused[0], refused  # the second is counted, not logged
    assert "127.0.0.3" not in caplog.text


async def test_a_proxy_protocol_listener_without_trusted_peers_is_refused() -> None:
    runner = web.ServerRunner(web.Server(echo), handle_signals=False)
    await runner.setup()
    try:
        with pytest.raises(ValueError, match="proxy_protocol_from"):
            ProxyProtocolSite(runner, "127.0.0.1", 0, peers=())
    finally:
        await runner.cleanup()
