"""aiohttp internals the node depends on, kept in one place (aiohttp 3.12 to 3.14)."""
from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDictProxy

# Called with the status and fields of each interim (1xx) response an
# origin sends before its final one; raising aborts the request.
InterimHandler = Callable[[int, CIMultiDictProxy[str]], Awaitable[None]]

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

        async def read_seeing_interim():
            message, payload = await read()
            if 100 <= message.code <= 199 and message.code != 101:
                await handler(message.code, message.headers)
            return message, payload

        protocol.read = read_seeing_interim
        try:
            return await super().start(connection)
        finally:
            del protocol.read


def missing_interim_internals() -> list[str]:
    """What ``InterimAwareResponse`` relies on that the installed aiohttp lacks."""
    missing = []
    if list(inspect.signature(aiohttp.ClientResponse.start).parameters) != ["self", "connection"]:
        missing.append("ClientResponse.start(connection)")
    if not callable(getattr(ResponseHandler, "read", None)):
        missing.append("ResponseHandler.read()")
    return missing
