"""Bad handshakes on an HTTPS listener: each refused within the handshake
deadline, the node serving on, no file descriptor left behind.
(tests/e2e/test_tls_cli.py does the same against ``edge serve`` under uvloop.)"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import ssl
import struct
import warnings

import pytest

from tests.conftest import until
from tests.tls_support import HANDSHAKE_TIMEOUT, ca, client_context, client_hello, closed, handshake, https

FIXTURES = (ca, https)  # pytest finds them here

ROUNDS = 15  # of each kind, all at once


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def raw(port: int, *chunks: bytes, half_close: bool = False) -> bool:
    """Send ``chunks`` and wait for the node to close; whether it did in time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await closed(reader, HANDSHAKE_TIMEOUT * 5)
    finally:
        writer.close()


async def refused(port: int, server_name: str | None, context: ssl.SSLContext, alert: str) -> bool:
    """Whether the handshake fails with the node's ``alert`` (the reason OpenSSL gives for it)."""
    try:
        await handshake(port, server_name, context)
    except ssl.SSLError as exc:
        return exc.reason == alert
    return False


def old_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # what the test is about
        context = client_context(minimum=version, maximum=version)
    context.set_ciphers("DEFAULT@SECLEVEL=0")  # this OpenSSL would not offer TLS 1.0 otherwise
    return context


@pytest.mark.parametrize("rounds", [ROUNDS])
async def test_bad_handshakes_are_refused_in_time_and_leave_nothing_behind(https, caplog, rounds):
    node = await https()
    loop = asyncio.get_running_loop()
    loop_errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    hello = client_hello()
    assert (await handshake(node.port, "shop.test")).version == "TLSv1.3"  # warm: what the node opens once
    await until(lambda: not node.node.runner.server.connections, "the warm-up connection closed")
    before = open_fds()
    kinds = {
        "no server name": lambda: refused(node.port, None, client_context(), "TLSV1_UNRECOGNIZED_NAME"),
        "unknown server name": lambda: refused(node.port, "nobody.test", client_context(), "TLSV1_UNRECOGNIZED_NAME"),
        "TLS 1.0": lambda: refused(node.port, "shop.test", old_client(ssl.TLSVersion.TLSv1),
                                   "TLSV1_ALERT_PROTOCOL_VERSION"),
        "TLS 1.1": lambda: refused(node.port, "shop.test", old_client(ssl.TLSVersion.TLSv1_1),
                                   "TLSV1_ALERT_PROTOCOL_VERSION"),
        "garbage": lambda: raw(node.port, os.urandom(512)),
        "garbage shaped like a record": lambda: raw(node.port, b"\x16\x03\x01\x40\x00" + os.urandom(16384)),
        "plain HTTP": lambda: raw(node.port, b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n"),
        "half-open (nothing sent)": lambda: raw(node.port),
        "slow (half a ClientHello)": lambda: raw(node.port, hello[: len(hello) // 2]),
        "closed mid-handshake": lambda: raw(node.port, hello[:10], half_close=True),
    }
    with caplog.at_level(logging.WARNING):
        for kind, attempt in kinds.items():
            results = await asyncio.gather(*(attempt() for _ in range(rounds)))
            assert all(results), f"{kind}: {results.count(False)} of {rounds} not refused in time"
    await until(lambda: open_fds() <= before, f"file descriptors back to {before} (now {open_fds()})")
    assert loop_errors == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not node.node.tls.handshaking
    assert (await handshake(node.port, "shop.test")).version == "TLSv1.3"  # the node serves on


async def test_a_client_that_never_takes_the_alert_is_cut_at_the_deadline(https):
    node = await https()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(client_hello("nobody.test"))
        await writer.drain()
        assert await closed(reader, HANDSHAKE_TIMEOUT * 5)
    finally:
        writer.close()
    await until(lambda: not node.node.tls.handshaking, "no handshake left")


async def handshake_then_reset(port: int, server_name: str) -> None:
    """A TLS 1.3 handshake whose last flight (the client's Finished) reaches
    the node with a reset right behind it, as from a client that hangs up
    the moment its handshake is done: the node's session tickets then meet
    a closed connection."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    await loop.sock_sendall(sock, outgoing.read())
                data = await loop.sock_recv(sock, 65536)
                assert data, "the node closed during the handshake"
                incoming.write(data)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.send(outgoing.read())  # no await between this and the reset
    finally:
        sock.close()


async def test_a_client_that_resets_right_after_its_handshake_leaves_no_error(https, caplog):
    node = await https()
    loop = asyncio.get_running_loop()
    loop_errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(*(handshake_then_reset(node.port, "shop.test") for _ in range(ROUNDS)))
        await until(lambda: not node.node.runner.server.connections, "the node to let the connections go")
        await asyncio.sleep(0)  # let finished handler tasks be collected
        gc.collect()
    assert [c.get("message") for c in loop_errors] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert (await handshake(node.port, "shop.test")).version == "TLSv1.3"  # the node serves on
