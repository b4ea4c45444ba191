"""Interim (1xx) responses on their way from an origin: bounded per request,
and relayed to the client whose own request went to the origin (RFC 9110
§15.2). Nothing else sees them: a cache hit, a request that waited for
another's fetch, or a background fetch gets none, and none is stored."""
from __future__ import annotations

import aiohttp
from multidict import CIMultiDictProxy

from edge.http.aiohttp_adapter import write_interim
from edge.http.interim import interim_head, relayed

# Interim responses a request's answer may bring before its final one, over
# every attempt to get it (a retry on a new connection, failover); one
# more is an origin error (502, detail=origin-protocol). A hint or two is the
# norm; a 102 every 20 s (its RFC 2518 cadence) stays within it for ten minutes,
# while an origin can no longer keep the request open forever with them.
MAX_INTERIM_RESPONSES = 32


class InterimFlood(aiohttp.ClientError):
    """The origin sent more than MAX_INTERIM_RESPONSES interim responses."""


class ClientRelay:
    """Writes an origin's interim responses to one client, ahead of its
    final answer."""

    __slots__ = ("_request", "_via")

    def __init__(self, request, via: str) -> None:
        # RFC 9110 §15.2: a server never sends a 1xx to an HTTP/1.0 client.
        self._request = request if request.version >= (1, 1) else None
        self._via = via

    async def send(self, status: int, fields: CIMultiDictProxy[str]) -> None:
        if self._request is None or not relayed(status):
            return
        try:
            await write_interim(self._request, interim_head(status, fields.items(), self._via))
        except ConnectionError:
            self._request = None  # the client left: its final answer meets the same end


class InterimGuard:
    """The interim responses of one request's answer, over every attempt to
    get it (sent again on a new connection, or to another origin): counted
    together, and passed to ``relay`` (None: a fetch no client waits on) at
    most once each, so an attempt's repeat of what an earlier one passed
    on is not sent again. Within an attempt, repeats pass (a 102 every so
    often keeps its client waiting)."""

    __slots__ = ("_attempt", "_current", "_relay", "_relayed", "_seen")

    def __init__(self, relay: ClientRelay | None) -> None:
        self._relay = relay
        self._seen = 0
        self._current: object = None  # the attempt the latest one came with
        self._relayed: dict[tuple, int] = {}  # interim response -> times passed on
        self._attempt: dict[tuple, int] = {}  # interim response -> times in the current attempt

    async def __call__(self, status: int, fields: CIMultiDictProxy[str], attempt: object) -> None:
        self._seen += 1
        if self._seen > MAX_INTERIM_RESPONSES:
            raise InterimFlood(f"more than {MAX_INTERIM_RESPONSES} interim responses")
        if self._relay is None:
            return
        if attempt is not self._current:
            self._current, self._attempt = attempt, {}
        # At most MAX_INTERIM_RESPONSES entries: the bound is checked first.
        message = (status, tuple(fields.items()))
        n = self._attempt[message] = self._attempt.get(message, 0) + 1
        if n <= self._relayed.get(message, 0):
            return
        self._relayed[message] = n
        await self._relay.send(status, fields)
