"""Slow clients: deadlines for reading a request's head and its body, and
for taking the response.

A client that opens connections and sends its request a byte at a time
(slowloris), or sends nothing, holds a connection and a parser each; a
client that announces a body and then stalls (slow POST), or asks for a
large response and never reads it (slow read), also holds an origin
connection. None of it costs the client anything, so all get deadlines:

head   ``[timeouts] header_read`` seconds from the first byte of a request
       (from the accept for a fresh connection) until the parser has the
       whole head; then ``408`` and the connection is closed. An idle
       keep-alive connection between requests is aiohttp's
       ``keepalive_timeout``, not this one.
body   ``[timeouts] body_read`` seconds at most between two chunks, and
       ``[timeouts] body_total`` for the whole body; the upload to the origin
       is aborted and the client gets ``408`` (if nothing was sent to it yet).
send   ``[timeouts] send`` seconds at most in which the client takes less
       than ``[timeouts] send_min_rate`` bytes a second of the response
       waiting for it; then the connection is aborted, which ends the
       request and releases its origin connection. A slow client that keeps
       taking bytes at that rate is not cut; one that takes a segment now
       and then, to keep the deadline from firing, is.

The head and send deadlines live in the connection handler: one
``loop.call_at`` handle per request head that does not arrive in one piece,
none for a head that does (the common case); one per stretch in which the
transport's write buffer is full, none while the client keeps up; no task.
They read the connection's state through ``edge.http.aiohttp_adapter``
(aiohttp's internals, checked at start-up there), and the tests over real
sockets catch a change of their meaning.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from edge.http.aiohttp_adapter import Connection, close_connection
from edge.http.dates import format_http_date
from edge.observe.anon import anonymise

try:
    from fcntl import ioctl
    from termios import TIOCOUTQ
except ImportError:  # not Linux: the transport's buffer alone
    ioctl = TIOCOUTQ = None

log = logging.getLogger("edge.slow")

_TCP_INFO = getattr(socket, "TCP_INFO", None)
_ACKED = slice(120, 128)  # tcpi_bytes_acked in Linux's struct tcp_info (since 4.1)


@dataclass(frozen=True, slots=True)
class BodyTimeouts:
    """Seconds; 0 turns a deadline off."""

    idle: float = 30.0  # between two chunks of a request body
    total: float = 300.0  # for the whole body


class ClientBodyError(Exception):
    """A request body the client failed to deliver as it should (too slow,
    too large). Raised inside the body iterator the origin client reads;
    that client reports it as the ``__cause__`` of its own error, which
    must not count against the origin's health."""


class BodyTimeout(ClientBodyError):
    """The client was too slow sending its body.

    Deliberately not a TimeoutError: aiohttp's client reports a body
    iterator's OSError (TimeoutError is one) as a timeout of the origin,
    which would blame the origin for the client's stall.
    """

    def __init__(self, which: str, received: int) -> None:
        super().__init__(f"request body {which} timeout after {received} bytes")
        self.which = which  # "idle" or "total"
        self.received = received


async def read_body(content, timeouts: BodyTimeouts) -> AsyncIterator[bytes]:
    """The chunks of a request body (an aiohttp StreamReader) as they come,
    raising BodyTimeout when the client stalls.

    The deadlines cover only the waits for the client: time spent by the
    consumer between chunks (writing to the origin) counts towards ``total``
    but never fires inside the consumer's own awaits.
    """
    idle, total = timeouts.idle, timeouts.total
    if not idle and not total:
        async for chunk in content.iter_any():
            yield chunk
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total if total else float("inf")
    received = 0
    while True:
        now = loop.time()
        when = min(now + idle, deadline) if idle else deadline
        if when <= now:
            raise BodyTimeout("total", received)
        try:
            async with asyncio.timeout_at(when):
                chunk = await content.readany()
        except TimeoutError:
            raise BodyTimeout("total" if when >= deadline else "idle", received) from None
        if not chunk:
            return
        received += len(chunk)
        yield chunk


async def close_after(request, response):
    """Send ``response`` now and close the connection behind it.

    For a request whose body is left unread (a refusal, a stalled upload):
    aiohttp would otherwise keep reading and discarding it for its lingering
    time before closing.
    """
    if not response.prepared:
        response.force_close()  # says "Connection: close"
    await response.prepare(request)
    await response.write_eof()
    close_connection(request)
    return response


def acked(transport) -> int | None:
    """Bytes written on this connection that the client's TCP has
    acknowledged, a count that only grows; None where the OS does not say.

    Once the client's receive window is full it grows only as fast as the
    client reads, whatever is written meanwhile: the measure of its pace."""
    sock = transport.get_extra_info("socket")
    if sock is None or _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _ACKED.stop)
    except (OSError, ValueError):
        return None
    if len(info) < _ACKED.stop:
        return None  # a kernel older than the field
    return int.from_bytes(info[_ACKED], sys.byteorder)


def unsent(transport) -> int:
    """Bytes written for the client that it has not taken yet: the
    transport's buffer and, where the OS reports it, the socket's send
    queue. The queue (megabytes, as the kernel sizes it) drains in steps too
    coarse to tell a slow client from a stalled one by the transport's
    buffer alone."""
    n = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None and ioctl is not None:
        try:
            n += struct.unpack("i", ioctl(sock.fileno(), TIOCOUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            pass  # not a socket the OS reports on: the buffer alone
    return n


def timeout_response(node: str, detail: str) -> bytes:
    """A complete ``408`` that closes the connection, written straight to
    the transport (there is no request object for a head that never came)."""
    body = b"408 request timeout\n"
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"Date: {format_http_date(time.time())}\r\n"
        "Server: edge\r\n"
        "Connection: close\r\n"
        "Cache-Control: no-store\r\n"
        f"Cache-Status: {node}; detail={detail}\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class HeadTimeoutHandler(Connection):
    """aiohttp's connection handler with a deadline for every request head,
    and one for the client to take what is written to it.

    The timer starts at the accept and whenever bytes arrive while the
    connection waits for a head (not while a body arrives, and not while a
    request is being answered: bytes that come then are a pipelined request,
    bounded by the keep-alive timeout once the answer is out). It stops when
    the parser yields a message (a request or a parse error). On expiry a
    client that sent part of a head gets ``408``; one that sent nothing is
    just closed, since a browser may have opened it speculatively and would
    otherwise read the 408 as the answer to its next request.

    The send timer is armed when the transport first holds more than its
    high-water mark (aiohttp's writes wait for it to drain then) and runs
    ``send`` seconds. When it expires while writes wait and the client
    acknowledged less than ``send_min_rate`` bytes a second since it was
    armed (``acked``), the connection is aborted: the waiting write fails
    and the request ends, whether it streams from the origin or from the
    cache, or aiohttp writes a whole body after the handler returned. A
    client that kept the pace is slow, not stalled: the timer starts again.
    The buffer draining in between does not stop the timer, or a client
    could restart it with a burst now and then.

    Where the OS counts no acknowledged bytes (not Linux) the pace cannot
    be told: any shrinking of ``unsent`` restarts the timer, and a drained
    buffer stops it.
    """

    def __init__(self, manager, *, header_read: float = 10.0, send: float = 30.0, send_min_rate: int = 1024,
                 node: str = "edge", **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self.header_read = header_read
        self.send = send
        self.send_need = max(1, int(send * send_min_rate))  # bytes to take in each send period
        self.node = node
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False  # bytes of the awaited head have arrived
        self._payload = None  # body of the last parsed request, to tell body bytes from head bytes
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_mark: int | None = None  # acked() when the send timer was armed
        self._send_backlog = 0  # unsent() then, where acked() says nothing

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.header_read > 0:
            loop = self.loop
            self._head_timer = loop.call_at(loop.time() + self.header_read, self._head_timeout)

    def connection_lost(self, exc) -> None:
        for timer in (self._head_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._send_timer = None
        self._payload = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.send > 0 and self._send_timer is None:
            self._arm_send()

    def resume_writing(self) -> None:
        timer = self._send_timer
        if timer is not None and self._send_mark is None:
            timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def _arm_send(self) -> None:
        transport = self.transport
        if transport is None:
            return
        self._send_mark = mark = acked(transport)
        if mark is None:
            self._send_backlog = unsent(transport)
        loop = self.loop
        self._send_timer = loop.call_at(loop.time() + self.send, self._send_timeout)

    def _send_timeout(self) -> None:
        self._send_timer = None
        transport = self.transport
        if transport is None or not self.writing_paused:
            return  # the client keeps up: the next full buffer arms the timer anew
        mark = self._send_mark
        if mark is None:
            kept_pace = unsent(transport) < self._send_backlog
        else:
            now = acked(transport)
            kept_pace = now is not None and now - mark >= self.send_need
        if kept_pace:
            self._arm_send()  # slow, not stalled
            return
        peer = transport.get_extra_info("peername")
        log.debug(
            "aborted a connection from %s: the client took less than %d response bytes in %gs",
            anonymise(peer[0] if isinstance(peer, tuple) and peer else None),
            self.send_need,
            self.send,
        )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                # A reset: a plain close would leave the kernel holding the
                # unsent megabytes, retrying a client that takes nothing.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except (OSError, ValueError):
                pass
        transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.header_read <= 0 or self.upgraded:
            super().data_received(data)
            return
        payload = self._payload
        in_body = payload is not None and not payload.is_eof()
        count = self.requests_parsed
        super().data_received(data)
        if self.requests_parsed != count:
            # A whole head arrived (or a parse error): the deadline is met.
            timer = self._head_timer
            if timer is not None:
                timer.cancel()
                self._head_timer = None
            self._head_started = False
            self._payload = self.last_queued_body
        elif data and not in_body and not self.in_request and not self.queued:
            self._head_started = True
            if self._head_timer is None and self.transport is not None:
                loop = self.loop
                self._head_timer = loop.call_at(loop.time() + self.header_read, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self.closing:
            return
        if self.in_request or self.queued:
            return  # a request got through after all; the keep-alive timeout takes over
        peer = transport.get_extra_info("peername")
        if self._head_started:
            transport.write(timeout_response(self.node, "header-timeout"))
        log.debug(
            "closed a connection from %s: no complete request head within %gs (%s)",
            anonymise(peer[0] if isinstance(peer, tuple) and peer else None),
            self.header_read,
            "partial head" if self._head_started else "nothing sent",
        )
        self.force_close()

