"""PROXY protocol v1 and v2 (haproxy's proxy-protocol.txt) in front of aiohttp.

A load balancer that speaks the PROXY protocol prefixes every connection with
one header naming the client's address. :func:`parse` is a pure incremental
parser of that header; :func:`wrap_protocol_factory` puts it in front of any
``asyncio.Protocol`` factory (aiohttp's ``web.Server``), and
:class:`ProxyProtocolSite` is a ``TCPSite`` whose connections must start
with a header.

The spec forbids guessing: a listener with the PROXY protocol accepts only
connections that start with a valid header, and closes all others without
answering. A header lets its sender choose the client address, so it is
read only from the peers the listener trusts (``[[listen]]
proxy_protocol_from``); a connection from any other peer is closed before a
byte of it is read, and logged (anonymised, at most one line a minute).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from edge.geo.client import Trusted
from edge.http.aiohttp_adapter import WrappedSite
from edge.observe.anon import anonymise

log = logging.getLogger("edge.geo.proxy_protocol")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # including CRLF (the spec's worst case)
# Address block plus TLVs. The spec allows 65535; real senders (haproxy, AWS
# NLB, Google, Azure) send well under 1 KiB, and a bound keeps the buffer small.
V2_MAX_PAYLOAD = 4096
_V2_HEADER = struct.Struct("!BBH")
_V4_BLOCK = struct.Struct("!4s4sHH")
_V6_BLOCK = struct.Struct("!16s16sHH")
_DIGITS = frozenset(b"0123456789")


class ProxyProtocolError(ValueError):
    """The connection does not start with a valid PROXY header (short reason)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header. ``src`` is None for LOCAL (health checks),
    ``UNKNOWN`` and non-IP families: use the socket's own peer then.
    Addresses are normalised (IPv4-mapped IPv6 becomes IPv4)."""

    src: str | None
    src_port: int | None
    dst: str | None
    dst_port: int | None
    consumed: int  # bytes of the header; what follows belongs to the application
    version: int = 0


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The data is a valid prefix of a header; read more."""


NEED_MORE = NeedMore()


def parse(data: bytes | bytearray | memoryview) -> ProxyHeader | NeedMore:
    """Parse the header at the start of ``data``; raises ProxyProtocolError."""
    data = bytes(data[: 16 + V2_MAX_PAYLOAD]) if not isinstance(data, bytes) else data
    if not data:
        return NEED_MORE
    if data[0] == 0x0D:
        return _parse_v2(data)
    if data[0] == 0x50:  # "P"
        return _parse_v1(data)
    raise ProxyProtocolError("no PROXY protocol header")


def _normalise(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped if mapped is not None else ip)


# ----------------------------------------------------------------------- v1

def _v1_port(text: bytes) -> int:
    # Decimal, 0..65535, no leading zeros (the spec forbids them).
    if not text or len(text) > 5 or not all(c in _DIGITS for c in text) or (len(text) > 1 and text[0] == 0x30):
        raise ProxyProtocolError("v1: bad port")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError("v1: bad port")
    return port


def _v1_address(text: bytes, version: int) -> str:
    if b"%" in text:  # a zone id names an interface of the sender, not a client
        raise ProxyProtocolError(f"v1: bad TCP{version} address")
    try:
        ip = ipaddress.IPv4Address(text.decode("ascii")) if version == 4 else ipaddress.IPv6Address(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyProtocolError(f"v1: bad TCP{version} address") from None
    return _normalise(ip)


def _parse_v1(data: bytes) -> ProxyHeader | NeedMore:
    head = data[:V1_MAX_LENGTH]
    if not head.startswith(_V1_PREFIX):
        if _V1_PREFIX.startswith(head):
            return NEED_MORE
        raise ProxyProtocolError("no PROXY protocol header")
    end = head.find(b"\r\n")
    if end < 0:
        # The spec: a lone CR or LF never ends the line.
        if b"\n" in head or b"\r" in head[:-1]:
            raise ProxyProtocolError("v1: bare CR or LF")
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError("v1: line too long")
        return NEED_MORE
    line = head[:end]
    if b"\r" in line or b"\n" in line:
        raise ProxyProtocolError("v1: bare CR or LF")
    consumed = end + 2
    parts = line.split(b" ")
    proto = parts[1]
    if proto == b"UNKNOWN":
        # The receiver must ignore the rest of the line.
        return ProxyHeader(None, None, None, None, consumed, 1)
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError("v1: unknown protocol")
    if len(parts) != 6:
        raise ProxyProtocolError("v1: wrong number of fields")
    version = 4 if proto == b"TCP4" else 6
    src = _v1_address(parts[2], version)
    dst = _v1_address(parts[3], version)
    return ProxyHeader(src, _v1_port(parts[4]), dst, _v1_port(parts[5]), consumed, 1)


# ----------------------------------------------------------------------- v2

def _parse_v2(data: bytes) -> ProxyHeader | NeedMore:
    if len(data) < 16:
        if V2_SIGNATURE.startswith(data[:12]):
            return NEED_MORE
        raise ProxyProtocolError("bad v2 signature")
    if data[:12] != V2_SIGNATURE:
        raise ProxyProtocolError("bad v2 signature")
    ver_cmd, fam, length = _V2_HEADER.unpack_from(data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError("v2: bad version")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyProtocolError("v2: bad command")
    family, transport = fam >> 4, fam & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError("v2: bad address family or transport")
    if length > V2_MAX_PAYLOAD:
        raise ProxyProtocolError("v2: header too long")
    consumed = 16 + length
    if len(data) < consumed:
        return NEED_MORE
    if command == 0 or transport != 1:
        # LOCAL: the proxy's own connection (health check), its block is
        # ignored. UNSPEC/DGRAM transports: not a TCP client we can name
        # (the spec lets a receiver fall back to the socket's endpoints).
        return ProxyHeader(None, None, None, None, consumed, 2)
    if family == 1:
        if length < _V4_BLOCK.size:
            raise ProxyProtocolError("v2: address block truncated")
        src, dst, sport, dport = _V4_BLOCK.unpack_from(data, 16)
        return ProxyHeader(str(ipaddress.IPv4Address(src)), sport, str(ipaddress.IPv4Address(dst)), dport, consumed, 2)
    if family == 2:
        if length < _V6_BLOCK.size:
            raise ProxyProtocolError("v2: address block truncated")
        src, dst, sport, dport = _V6_BLOCK.unpack_from(data, 16)
        return ProxyHeader(
            _normalise(ipaddress.IPv6Address(src)), sport, _normalise(ipaddress.IPv6Address(dst)), dport, consumed, 2
        )
    # AF_UNSPEC or AF_UNIX: no IP address to report; TLVs are skipped either way.
    return ProxyHeader(None, None, None, None, consumed, 2)


# ------------------------------------------------------------ asyncio glue

class ProxiedTransport(asyncio.Transport):
    """The real transport, except that ``peername`` is the header's source.

    Everything else goes to the real transport. ``get_extra_info("proxy_header")``
    returns the :class:`ProxyHeader`.
    """

    @property
    def _sendfile_compatible(self) -> Any:
        # asyncio's loop.sendfile() reads this first. Both its native and its
        # fallback path need a loop-made transport's internals; raising
        # NotImplementedError (as uvloop's sendfile does) makes aiohttp's
        # FileResponse copy the file through write() instead.
        raise NotImplementedError("sendfile through a PROXY protocol transport")

    def __init__(self, transport: asyncio.Transport, header: ProxyHeader) -> None:
        super().__init__()
        self._transport = transport
        self._header = header
        self._peername = (header.src, header.src_port) if header.src is not None else None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername" and self._peername is not None:
            return self._peername
        if name == "proxy_header":
            return self._header
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def __repr__(self) -> str:
        return f"<ProxiedTransport peer={self._peername} {self._transport!r}>"


class RefusedPeers:
    """Connections refused for their peer, told to the log: the first at
    once, then at most one line per ``interval`` seconds with the count in
    between, so that a flood of connections is no flood of log lines."""

    def __init__(self, listener: str, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.listener = listener
        self.interval = interval
        self._clock = clock
        self._next = 0.0
        self._unsaid = 0

    def refused(self, peer: str | None) -> None:
        now = self._clock()
        if now < self._next:
            self._unsaid += 1
            return
        more = f" ({self._unsaid} more since the last such line)" if self._unsaid else ""
        log.warning("PROXY protocol listener %s: closed a connection from %s, which is not in proxy_protocol_from%s",
                    self.listener, anonymise(peer), more)
        self._unsaid = 0
        self._next = now + self.interval


class _HeaderReader(asyncio.Protocol):
    """Owns a connection until its PROXY header is complete, then hands the
    transport to the real protocol. Nothing reaches that protocol before."""

    __slots__ = ("_buffer", "_factory", "_peers", "_refusals", "_timeout", "_timer", "_transport")

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], timeout: float, peers: Trusted,
                 refusals: RefusedPeers) -> None:
        self._factory = factory
        self._timeout = timeout
        self._peers = peers
        self._refusals = refusals
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        if not isinstance(host, str) or not self._peers.contains(host):
            self._refusals.refused(host if isinstance(host, str) else None)
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self._drop("no complete header in time")

    def _drop(self, reason: str) -> None:
        transport = self._transport
        if transport is not None:
            log.debug("PROXY protocol: closing connection from %s: %s", transport.get_extra_info("peername"), reason)
            self._transport = None
            transport.abort()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        buffer = self._buffer + data if self._buffer else data
        try:
            result = parse(buffer)
        except ProxyProtocolError as exc:
            self._drop(str(exc))
            return
        if isinstance(result, NeedMore):
            self._buffer = buffer
            return
        self._transport = None
        self._cleanup()
        rest = buffer[result.consumed:]
        protocol = self._factory()
        # From here the transport talks to the real protocol directly.
        transport.set_protocol(protocol)
        protocol.connection_made(ProxiedTransport(transport, result))
        if rest and not transport.is_closing():
            _feed(protocol, rest)

    def eof_received(self) -> bool:
        self._drop("connection closed before the header")
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._transport = None
        self._cleanup()


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buf = protocol.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        protocol.data_received(data)  # type: ignore[attr-defined]


def wrap_protocol_factory(
    factory: Callable[[], asyncio.BaseProtocol], *, peers: Trusted, refusals: RefusedPeers, timeout: float = 5.0
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for ``loop.create_server`` whose connections must
    come from ``peers`` and start with a PROXY header (v1 or v2) within
    ``timeout`` seconds; then ``factory()`` gets the connection, with
    ``peername`` from the header."""
    if timeout <= 0:
        raise ValueError("timeout must be positive")

    def make() -> asyncio.Protocol:
        return _HeaderReader(factory, timeout, peers, refusals)

    return make


class ProxyProtocolSite(WrappedSite):
    """``web.TCPSite`` for a listener behind a PROXY-protocol load balancer.

    ``request.remote`` is the client named in the header; only ``peers``
    (networks, the load balancers) may connect. The header comes before a
    TLS handshake, which ``create_server(ssl=...)`` would start first: an
    HTTPS listener behind a load balancer is ``edge.tls.listener.TlsSite``.
    """

    __slots__ = ("_header_timeout", "_peers")

    def __init__(self, runner: web.BaseRunner, host: str | None = None, port: int | None = None, *,
                 peers: Iterable, header_timeout: float = 5.0, **kwargs: Any) -> None:
        if kwargs.get("ssl_context") is not None:
            raise ValueError("PROXY protocol before TLS: use edge.tls.listener.TlsSite")
        super().__init__(runner, host, port, **kwargs)
        if header_timeout <= 0:
            raise ValueError("header_timeout must be positive")
        self._header_timeout = header_timeout
        self._peers = Trusted(peers)
        if not self._peers:
            raise ValueError("a PROXY protocol listener needs the networks of its load balancers (proxy_protocol_from)")

    @property
    def name(self) -> str:
        return super().name + " (PROXY protocol)"

    def wrap(self, factory: Callable[[], asyncio.BaseProtocol], host: str | None, port: int):
        return wrap_protocol_factory(factory, peers=self._peers, refusals=RefusedPeers(f"{host}:{port}"),
                                     timeout=self._header_timeout)
