"""HTTPS listeners: TLS over each accepted connection, then aiohttp.

:class:`TlsConnection` is the protocol of an accepted connection (after a
PROXY header, when the listener reads one): it runs the handshake over
memory BIOs, and once it is done hands a :class:`TlsTransport` to the HTTP
protocol, which cannot tell it from a plain transport but by its
``get_extra_info`` ("sslcontext", "ssl_object", and "tls": the
:class:`TlsSession`). Running TLS here rather than in the event loop makes
it the same under uvloop and asyncio, lets a PROXY header come first, and
lets a refused handshake send its alert: both loops drop the alert when a
handshake fails, so a client saw a reset instead of ``unrecognized_name``.

Bounds: a handshake not complete ``[tls] handshake_timeout`` seconds after
the accept is aborted, and so is a refused one whose alert the client does
not take by then.

A tenant's ``tls.min_version`` is judged by the versions the ClientHello
offers (:mod:`edge.tls.hello`), when the server name has selected the
tenant: a client that offers no version the tenant allows fails the
handshake with the alert ``protocol_version``. The standard library neither offers versions per
server name nor shows the ClientHello, so the listener keeps the first
bytes of each connection for that. Should the offer be unreadable, a
connection whose negotiated version is too old is closed right after the
handshake, before any request.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from edge.geo.client import Trusted
from edge.geo.proxy_protocol import RefusedPeers, wrap_protocol_factory
from edge.http.aiohttp_adapter import ProtocolFactory, WrappedSite
from edge.observe.anon import anonymise
from edge.observe.throttle import LogThrottle
from edge.policy.resolve import PolicySet
from edge.tls.context import below, server_context
from edge.tls.hello import offered_versions, too_old
from edge.tls.sni import Certificates, CertificateIndex

log = logging.getLogger("edge.tls")

READ_SIZE = 16 * 1024  # plaintext taken from the TLS layer at once: one record's worth at most
PROXY_HEADER_TIMEOUT = 5.0  # seconds for a PROXY header before the handshake (at most the handshake's own)
# What is kept of a connection's first bytes for its ClientHello: a few KiB
# in practice; one longer is left to the check after the handshake.
MAX_CLIENT_HELLO = 64 * 1024


@dataclass(frozen=True, slots=True)
class TlsSession:
    """What a request may ask of its HTTPS connection."""

    version: str  # "TLSv1.2" or "TLSv1.3"
    host: str | None  # the server name the client sent (lower case), None without one
    tenant: str | None  # the tenant that name resolved to; None: no name, or nobody's


class Handshake(ssl.SSLObject):
    """The TLS state of one connection, with what its server name selected
    (set by the server name callback, which gets this object)."""

    sni_host: str | None = None
    sni_tenant: str | None = None
    hello: bytearray | None = None  # the bytes received until the server name is judged
    too_old: tuple[str, str] | None = None  # refused: (the newest version offered, the tenant's minimum)


class Terminator:
    """The TLS side of a worker's HTTPS listeners: the listener context
    whose server name callback picks a certificate from the current index,
    the handshakes in progress, and reloads."""

    def __init__(self, certificates: Certificates, handshake_timeout: float) -> None:
        self.certificates = certificates
        self.handshake_timeout = handshake_timeout
        self.index = CertificateIndex(PolicySet(), {})
        # The context every handshake starts with; its ticket keys and
        # session cache are the ones OpenSSL uses, whatever the name selects.
        self.context = server_context()
        self.context.sni_callback = self._server_name
        self.context.sslobject_class = Handshake
        self.handshaking: set[TlsConnection] = set()  # not (yet) handed to HTTP, refused ones included
        self._too_old = LogThrottle(60.0, time.monotonic)

    def reload(self, policies: PolicySet) -> CertificateIndex:
        """Rebuild the index from the store and ``policies``, then swap it in:
        new handshakes get the new certificates, open connections keep
        theirs. Raises CertificateFileError for a broken default certificate
        (the previous index stays)."""
        index = self.certificates.build(policies)
        self.index = index
        return index

    def protocol_factory(self, factory: ProtocolFactory) -> Callable[[], TlsConnection]:
        """A factory of connections that terminate TLS, then speak ``factory()``'s protocol."""
        return lambda: TlsConnection(self, factory)

    def close(self) -> None:
        """Abort the handshakes in progress (the listeners are closed)."""
        for connection in list(self.handshaking):
            connection.abort()

    def _server_name(self, handshake: Handshake, server_name: str | None, _context: ssl.SSLContext) -> int | None:
        hello, handshake.hello = handshake.hello, None
        try:
            selection = self.index.select(server_name)
            minimum = self.minimum(selection.tenant)
            older = None if minimum is None or not hello else too_old(offered_versions(bytes(hello)), minimum)
        except Exception:  # an exception here would only fail the handshake, unlogged
            log.exception("certificate selection failed")
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        handshake.sni_host = selection.host
        handshake.sni_tenant = selection.tenant
        if selection.context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        if older is not None:
            handshake.too_old = (older, minimum)
            return ssl.ALERT_DESCRIPTION_PROTOCOL_VERSION
        handshake.context = selection.context
        return None

    def minimum(self, tenant: str | None) -> str | None:
        """The tenant's ``tls.min_version``, when it asks for more than the node's."""
        if tenant is None:
            return None
        policy = self.index.policies.get(tenant)
        if policy is None or policy.tls.min_version == "1.2":
            return None
        return policy.tls.min_version

    def refused_version(self, tenant: str | None, what: str, minimum: str, peer: Any) -> None:
        """Log a client refused for ``tenant``'s ``tls.min_version``: ``what``
        it was ("a TLSv1.2 handshake"), its network only."""
        held = self._too_old.admit(tenant)
        if held is None:
            return
        more = f" ({held} more since the last such line)" if held else ""
        log.warning("tenant %s: refused %s from %s: tls.min_version is %s%s",
                    tenant, what, anonymise(_host(peer)), minimum, more)


def _host(peer: Any) -> str | None:
    return peer[0] if isinstance(peer, tuple) and peer and isinstance(peer[0], str) else None


class TlsConnection(asyncio.Protocol):
    """One accepted connection: the handshake, then TLS records to and from
    the HTTP protocol that ``factory()`` makes."""

    __slots__ = ("_terminator", "_factory", "_raw", "_incoming", "_outgoing", "_tls", "_app", "_timer",
                 "_paused", "_closing")

    def __init__(self, terminator: Terminator, factory: ProtocolFactory) -> None:
        self._terminator = terminator
        self._factory = factory
        self._raw: asyncio.Transport | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls: Handshake | None = None
        self._app: Any = None  # the HTTP protocol, once the handshake is done
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False  # the HTTP protocol asked to stop reading
        self._closing = False

    # --- the accepted connection's side -------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport  # type: ignore[assignment]
        terminator = self._terminator
        self._tls = terminator.context.wrap_bio(self._incoming, self._outgoing, server_side=True)  # type: ignore[assignment]
        self._tls.hello = bytearray()
        self._timer = asyncio.get_running_loop().call_later(terminator.handshake_timeout, self._expired)
        terminator.handshaking.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._incoming.write(data)
        if self._app is None:
            hello = self._tls.hello
            if hello is not None and len(hello) < MAX_CLIENT_HELLO:
                hello += data[:MAX_CLIENT_HELLO - len(hello)]
            self._handshake()
        else:
            self._read()

    def eof_received(self) -> bool:
        if self._app is not None and not self._closing:
            self._app.eof_received()
        return False  # the transport closes; without close_notify nothing more can be trusted

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timer()
        self._closing = True
        self._raw = None
        app, self._app = self._app, None
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    # --- the handshake --------------------------------------------------------------

    def _handshake(self) -> None:
        tls = self._tls
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except Exception as exc:  # any failure refuses the handshake, never the worker
            self._refuse(exc)
            return
        self._established()

    def _refuse(self, exc: Exception) -> None:
        self._closing = True
        self._flush()  # the alert
        tls = self._tls
        peer = self._raw.get_extra_info("peername")
        if tls.too_old is not None:
            older, minimum = tls.too_old
            self._terminator.refused_version(tls.sni_tenant, f"a {older} handshake", minimum, peer)
        log.debug("TLS handshake from %s refused: %s", anonymise(_host(peer)),
                  getattr(exc, "reason", None) or type(exc).__name__)
        self._raw.close()  # the deadline still aborts it if the alert is not taken

    def _expired(self) -> None:
        self._timer = None
        self._terminator.handshaking.discard(self)
        if self._raw is not None:
            log.debug("TLS handshake from %s not complete in time: closed",
                      anonymise(_host(self._raw.get_extra_info("peername"))))
            self.abort()

    def _stop_timer(self) -> None:
        self._terminator.handshaking.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _established(self) -> None:
        self._stop_timer()
        self._flush()  # the last flight and the session tickets
        if self._raw is None or self._raw.is_closing():
            # The client left with its last flight (that write failed): the loss
            # is already scheduled and would reach an HTTP protocol before its
            # first step, which aiohttp does not survive.
            return
        tls = self._tls
        tls.hello = None
        session = TlsSession(tls.version() or "", tls.sni_host, tls.sni_tenant)
        minimum = self._terminator.minimum(session.tenant)
        if minimum is not None and below(session.version, minimum):
            self._terminator.refused_version(session.tenant, f"a {session.version} connection after its handshake",
                                             minimum, self._raw.get_extra_info("peername"))
            self.close()
            return
        app = self._app = self._factory()
        app.connection_made(TlsTransport(self, session))
        self._read()  # what came with the handshake's last flight

    # --- records ----------------------------------------------------------------------

    def _read(self) -> None:
        tls = self._tls
        while not self._paused and not self._closing:
            try:
                data = tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                data = b""
            except (ssl.SSLError, ValueError) as exc:
                log.debug("TLS error on a connection: %s", getattr(exc, "reason", None) or exc)
                self.abort()
                return
            if not data:  # close_notify: the client is done
                if self._app is not None and not self._app.eof_received():
                    self.close()
                break
            self._app.data_received(data)
        self._flush()  # key updates

    def _flush(self) -> None:
        if self._outgoing.pending and self._raw is not None:
            self._raw.write(self._outgoing.read())

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._raw is None or not data:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[self._tls.write(view):]
        except (ssl.SSLError, ValueError) as exc:
            log.debug("TLS error on a connection: %s", getattr(exc, "reason", None) or exc)
            self.abort()
            return
        self._raw.write(self._outgoing.read())

    def pause_reading(self) -> None:
        self._paused = True
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._raw is not None:
            self._raw.resume_reading()
            # Records that came before the pause took effect are in the TLS layer already.
            asyncio.get_running_loop().call_soon(self._read_if_open)

    def _read_if_open(self) -> None:
        if self._app is not None and not self._closing:
            self._read()

    def close(self) -> None:
        """close_notify, then close once what was written has gone out."""
        if self._closing or self._raw is None:
            return
        self._closing = True
        try:
            self._tls.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # SSLWantReadError: the client's close_notify is not waited for
        self._flush()
        self._raw.close()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    @property
    def raw(self) -> asyncio.Transport | None:
        return self._raw

    @property
    def context(self) -> ssl.SSLContext:
        """The listener's context (aiohttp reads it to call a request secure)."""
        return self._terminator.context

    @property
    def closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

    @property
    def tls(self) -> Handshake | None:
        return self._tls

    @property
    def app(self) -> Any:
        return self._app

    @app.setter
    def app(self, protocol: Any) -> None:
        self._app = protocol

    @property
    def paused(self) -> bool:
        return self._paused


class TlsTransport(asyncio.Transport):
    """The HTTP protocol's transport: plaintext in and out of a TlsConnection."""

    __slots__ = ("_connection", "_session")

    def __init__(self, connection: TlsConnection, session: TlsSession) -> None:
        super().__init__()
        self._connection = connection
        self._session = session

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        connection = self._connection
        if name == "tls":
            return self._session
        if name == "sslcontext":
            return connection.context
        if name == "ssl_object":
            return connection.tls
        if name == "cipher":
            return connection.tls.cipher() if connection.tls is not None else default
        raw = connection.raw
        return raw.get_extra_info(name, default) if raw is not None else default

    @property
    def _sendfile_compatible(self) -> Any:
        # No loop.sendfile() past a TLS layer: aiohttp's FileResponse then writes the file.
        raise NotImplementedError("sendfile through TLS")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._connection.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._connection.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self._connection.close()

    def abort(self) -> None:
        self._connection.abort()

    def is_closing(self) -> bool:
        return self._connection.closing

    def is_reading(self) -> bool:
        return not self._connection.paused and not self._connection.closing

    def pause_reading(self) -> None:
        self._connection.pause_reading()

    def resume_reading(self) -> None:
        self._connection.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._connection.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._connection.app

    def get_write_buffer_size(self) -> int:
        raw = self._connection.raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._connection.raw
        return raw.get_write_buffer_limits() if raw is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._connection.raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)

    def __repr__(self) -> str:
        return f"<TlsTransport {self._session.version} sni={self._session.host}>"


class TlsSite(WrappedSite):
    """``web.TCPSite`` for an HTTPS listener: every connection is TLS with
    the tenants' certificates, after a PROXY header when ``proxy_peers``
    (the load balancers allowed to send one) is given."""

    __slots__ = ("_terminator", "_proxy_peers")

    def __init__(self, runner: web.BaseRunner, host: str | None = None, port: int | None = None, *,
                 terminator: Terminator, proxy_peers: Iterable | None = None, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._terminator = terminator
        self._proxy_peers = Trusted(proxy_peers) if proxy_peers is not None else None
        if self._proxy_peers is not None and not self._proxy_peers:
            raise ValueError("a PROXY protocol listener needs the networks of its load balancers (proxy_protocol_from)")

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if self._host and ":" in self._host else (self._host or "0.0.0.0")
        return f"https://{host}:{self._port}" + (" (PROXY protocol)" if self._proxy_peers is not None else "")

    def wrap(self, factory: ProtocolFactory, host: str | None, port: int) -> ProtocolFactory:
        made = self._terminator.protocol_factory(factory)
        if self._proxy_peers is None:
            return made
        return wrap_protocol_factory(made, peers=self._proxy_peers, refusals=RefusedPeers(f"{host}:{port}"),
                                     timeout=min(PROXY_HEADER_TIMEOUT, self._terminator.handshake_timeout))
