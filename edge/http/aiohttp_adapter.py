"""Everything of edge that reaches into aiohttp's internals, behind a small
API of its own; the rest of edge uses aiohttp's public API and this.

Written against and tested on aiohttp 3.14 (``SUPPORTED``), the first line
that has all the internals named below (``RequestHandler._upgraded`` and
``TCPSite._bound_port`` came with it); ``pyproject.toml`` allows that line
only, and ``edge serve`` refuses to start on an aiohttp that lacks one of
them (``missing_internals``). What is relied on, and for what:

``Connection``      ``web_protocol.RequestHandler`` subclassed: its state read
                    under public names (``_messages``, ``_request_count``,
                    ``_request_in_progress``, ``_paused``, ``_upgraded``,
                    ``_force_close``, ``_close``, ``_loop``), and
                    ``handle_error`` overridden so that our own answer goes out
                    for requests aiohttp answers itself (``error_answer``).
``parse_failure``   what the parser's exception says: ``LineTooLong`` names the
                    limit it hit in ``args[1]`` (one exception for the request
                    line and for a header field: ``line_limit`` keeps the two
                    limits apart), ``BadHttpMessage("Too many headers ...")``.
``Server``,         ``web.Server`` and ``web.AppRunner._make_server`` (the
``AppRunner``       server's ``_loop`` and ``_kwargs``), so that connections
                    are made of our own ``Connection`` class; ``Server`` also
                    overrides ``web.Server._make_request``, so that requests
                    are our own ``Request``.
``Request``         ``BaseRequest._prepare_hook(response)``, which aiohttp awaits
                    for every answer just before it writes the head.
``tls_session``     ``BaseRequest._transport_sslcontext``, the connection's TLS
                    context or None, read once per request: cheaper than
                    ``request.secure`` on every plain request.
``WrappedSite``     ``web.TCPSite.start`` done again with a wrapped protocol
                    factory (``BaseSite`` and ``TCPSite`` slots).
``Connector``       ``TCPConnector._wait_for_available_connection(key, traces)``
                    bounded, and ``_get(key, traces)`` asked whether a
                    kept-alive connection may be taken.
``parse_failed``    the client's ``http_exceptions.HttpProcessingError``.
``close_connection`` ``request.protocol.force_close()``.
``write_interim``   ``request.writer``, the stream the final answer goes out
                    on: an interim (1xx) head is written to it before that
                    answer's head (aiohttp has no call for one).
``InterimAwareResponse`` ``ClientResponse.start(connection)`` and the
                    protocol's ``read()`` it loops on, which drops every 1xx
                    unseen and unbounded; that read is wrapped while ``start``
                    runs, to show each 1xx to an ``InterimHandler``.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
from aiohttp import web
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDictProxy

SUPPORTED = (3, 14)  # the aiohttp line (major, minor) all of this is written against

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


# --- the server side: connections ----------------------------------------------------


class ParseFailure(enum.Enum):
    """Why aiohttp's parser refused a request."""

    REQUEST_LINE_TOO_LONG = enum.auto()
    FIELD_TOO_LARGE = enum.auto()
    TOO_MANY_FIELDS = enum.auto()
    MALFORMED = enum.auto()


def line_limit(max_request_line: int, max_header_size: int) -> int:
    """aiohttp's ``max_line_size`` for a request line of at most
    ``max_request_line`` bytes: one more when it equals the header field
    limit, so that ``parse_failure`` can tell which of the two was hit."""
    return max_request_line + 1 if max_request_line == max_header_size else max_request_line


def parse_failure(status: int, exc: BaseException | None, line_limit: int) -> ParseFailure | None:
    """Why the parser refused the request that ``Connection.error_answer``
    is asked about, or None when it is another error (the handler's)."""
    if status != 400 or exc is None:
        return None
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        return ParseFailure.REQUEST_LINE_TOO_LONG if limit == line_limit else ParseFailure.FIELD_TOO_LARGE
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
        return ParseFailure.TOO_MANY_FIELDS
    return ParseFailure.MALFORMED


class Connection(RequestHandler):
    """aiohttp's handler of one client connection, with what edge reads of
    its state under public names and one hook for error answers. Subclasses
    may extend the ``asyncio.Protocol`` methods (``connection_made``,
    ``data_received``, ``pause_writing`` ...), calling them on ``super()``."""

    # The RequestHandler internals read here (missing_internals checks them).
    INTERNALS = ("_messages", "_request_count", "_request_in_progress", "_paused", "_upgraded",
                 "_force_close", "_close", "_loop", "handle_error", "pause_writing", "resume_writing",
                 "data_received")

    def error_answer(self, status: int, exc: BaseException | None) -> web.StreamResponse | None:
        """The answer to a request aiohttp answers itself: a parse error
        (``parse_failure``) or an error of the handler. None: aiohttp's own
        answer. The connection is closed behind it either way."""
        return None

    def handle_error(self, request, status=500, exc=None, message=None):
        answer = self.error_answer(status, exc)
        if answer is None:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has begun: no error answer can follow")  # as aiohttp does
        answer.force_close()
        return answer

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def requests_parsed(self) -> int:
        """Request heads (or parse errors) the parser has produced so far."""
        return self._request_count

    @property
    def queued(self) -> bool:
        """Whether a parsed request waits to be handled."""
        return bool(self._messages)

    @property
    def last_queued_body(self):
        """The body stream (StreamReader) of the last request waiting to be handled, or None."""
        return self._messages[-1][1] if self._messages else None

    @property
    def in_request(self) -> bool:
        """Whether a request is being handled (its answer is not all written)."""
        return self._request_in_progress

    @property
    def writing_paused(self) -> bool:
        """Whether the transport's buffer is over its high-water mark."""
        return self._paused

    @property
    def upgraded(self) -> bool:
        return self._upgraded

    @property
    def closing(self) -> bool:
        return self._force_close or self._close


def close_connection(request: web.BaseRequest) -> None:
    """Close the request's connection once what was written has gone out
    (an unread request body is then not read and discarded first)."""
    protocol = request.protocol
    if protocol is not None:
        protocol.force_close()


async def write_interim(request: web.BaseRequest, head: bytes) -> None:
    """Write an interim (1xx) response ``head``, whole, ahead of the
    request's final answer. Raises ConnectionError when the client has gone."""
    await request.writer.write(head)


class Request(web.BaseRequest):
    """A request whose answer carries ``answer_fields`` besides its own,
    whichever phase writes its head, streamed or not (fields of the
    connection rather than of the answer: Strict-Transport-Security on
    HTTPS). They replace a field of the same name."""

    ATTRS = web.BaseRequest.ATTRS | frozenset(["answer_fields"])
    answer_fields: tuple[tuple[str, str], ...] = ()

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        for name, value in self.answer_fields:
            response.headers[name] = value


def tls_session(request: web.BaseRequest):
    """The "tls" extra info of an HTTPS request's transport (an
    edge.tls.listener.TlsSession); None over plain HTTP."""
    if not request._transport_sslcontext:
        return None
    transport = request.transport
    return None if transport is None else transport.get_extra_info("tls")


class Server(web.Server):
    """``web.Server`` whose connections are ``connection(self, loop=...,
    **server_kwargs)``: a ``Connection`` subclass, or a partial of one; its
    requests are ``Request``."""

    def __init__(self, handler, *, connection: Callable[..., Connection], **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.connection = connection

    def __call__(self) -> Connection:
        return self.connection(self, loop=self._loop, **self._kwargs)

    def _make_request(self, message, payload, protocol, writer, task) -> Request:
        return Request(message, payload, protocol, writer, task, self._loop)


class AppRunner(web.AppRunner):
    """``web.AppRunner`` whose server makes ``connection`` connections (see ``Server``)."""

    def __init__(self, app: web.Application, *, connection: Callable[..., Connection], **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.connection = connection

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return Server(made.request_handler, connection=self.connection, request_factory=made.request_factory,
                      handler_cancellation=made.handler_cancellation, loop=made._loop, **made._kwargs)


class WrappedSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through ``wrap``: override it to
    put a protocol of your own in front of aiohttp's."""

    __slots__ = ()

    def wrap(self, factory: ProtocolFactory, host: str | None, port: int) -> ProtocolFactory:
        return factory

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self.wrap(server, self._host, self._port),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port


# --- the client side: origin connections ----------------------------------------------


class PoolBusy(Exception):
    """The wait for a free connection expired. Neither a ClientError nor a
    TimeoutError: aiohttp lets it through unchanged, so it is never taken
    for the origin's own connect error or timeout."""


class Connector(aiohttp.TCPConnector):
    """A connector whose wait for a free connection lasts at most
    ``queue_timeout`` seconds (then PoolBusy), and which asks ``may_reuse``
    before it hands out a kept-alive connection and tells ``reused`` when
    it did. Both are hooks for subclasses; they run in the request's task."""

    def __init__(self, *, queue_timeout: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.queue_timeout = queue_timeout

    def may_reuse(self) -> bool:
        return True

    def reused(self) -> None:
        pass

    async def _wait_for_available_connection(self, key, traces) -> None:
        # aiohttp waits here, without a bound of its own, while every
        # connection the limits allow is taken.
        try:
            async with asyncio.timeout(self.queue_timeout) as bound:
                await super()._wait_for_available_connection(key, traces)
        except TimeoutError:
            if bound.expired():
                raise PoolBusy() from None
            raise

    async def _get(self, key, traces):
        # A kept-alive connection, or None to make a new one. aiohttp already
        # closes an idle pooled connection on which bytes arrive that no
        # request asked for.
        if not self.may_reuse():
            return None
        conn = await super()._get(key, traces)
        if conn is not None:
            self.reused()
        return conn


def parse_failed(exc: BaseException | None) -> bool:
    """Whether ``exc`` is aiohttp's parser refusing what it read (the cause
    of a client's ClientResponseError for a malformed response head)."""
    return isinstance(exc, HttpProcessingError)


# --- start-up check ---------------------------------------------------------------------


# --- the client side: an origin's interim responses --------------------------------


# Called with the status and fields of each interim (1xx) response an
# origin sends before its final one, and a token for the attempt they
# belong to (aiohttp itself sends an idempotent request once more when a
# kept-alive connection fails); raising aborts the request.
InterimHandler = Callable[[int, CIMultiDictProxy[str], object], Awaitable[None]]

_interim_handler: contextvars.ContextVar[InterimHandler | None] = contextvars.ContextVar(
    "interim_handler", default=None
)


@contextlib.contextmanager
def interim_responses_to(handler: InterimHandler) -> Iterator[None]:
    """Hand the interim responses of the requests made inside the block to
    ``handler`` (with a session whose ``response_class`` is
    ``InterimAwareResponse``)."""
    token = _interim_handler.set(handler)
    try:
        yield
    finally:
        _interim_handler.reset(token)


class InterimAwareResponse(aiohttp.ClientResponse):
    """A client response that shows its interim responses to the current
    ``InterimHandler`` instead of dropping them unseen and unbounded.

    aiohttp has no public hook for them: ``ClientResponse.start`` reads
    message after message with ``connection.protocol.read()`` and skips every
    1xx but 101. That read is wrapped, on this connection's protocol and
    only while ``start`` runs."""

    async def start(self, connection) -> aiohttp.ClientResponse:
        handler = _interim_handler.get()
        protocol = connection.protocol
        if handler is None or protocol is None:
            return await super().start(connection)
        read = protocol.read
        attempt = object()

        async def read_seeing_interim():
            message, payload = await read()
            if 100 <= message.code <= 199 and message.code != 101:
                await handler(message.code, message.headers, attempt)
            return message, payload

        protocol.read = read_seeing_interim
        try:
            return await super().start(connection)
        finally:
            del protocol.read


def missing_internals() -> list[str]:
    """The aiohttp internals this module relies on that the installed
    aiohttp lacks (without them the slow-client deadlines and the bounded
    wait for an origin connection and the bound on an origin's interim
    responses would silently be gone)."""
    missing = [f"RequestHandler.{name}" for name in Connection.INTERNALS if not hasattr(RequestHandler, name)]
    missing += [f"BaseRequest.{name}" for name in ("protocol", "writer")
                if not isinstance(getattr(web.BaseRequest, name, None), property)]
    missing += [f"TCPSite.{name}" for name in ("_runner", "_ssl_context", "_backlog", "_server", "_host", "_port",
                                               "_bound_port", "_reuse_address", "_reuse_port")
                if not hasattr(web.TCPSite, name)]
    for name in ("_wait_for_available_connection", "_get"):
        method = getattr(aiohttp.TCPConnector, name, None)
        if method is None or list(inspect.signature(method).parameters) != ["self", "key", "traces"]:
            missing.append(f"TCPConnector.{name}(key, traces)")
    if not hasattr(web.AppRunner, "_make_server"):
        missing.append("AppRunner._make_server")
    if list(inspect.signature(web.Server._make_request).parameters) != ["self", "message", "payload", "protocol",
                                                                         "writer", "task"]:
        missing.append("Server._make_request(message, payload, protocol, writer, task)")
    if "_transport_sslcontext" not in web.BaseRequest.ATTRS:
        missing.append("BaseRequest._transport_sslcontext")
    if not inspect.iscoroutinefunction(getattr(web.BaseRequest, "_prepare_hook", None)):
        missing.append("BaseRequest._prepare_hook(response)")
    if list(inspect.signature(aiohttp.ClientResponse.start).parameters) != ["self", "connection"]:
        missing.append("ClientResponse.start(connection)")
    if not callable(getattr(ResponseHandler, "read", None)):
        missing.append("ResponseHandler.read()")
    return missing
