"""Per-tenant request limits (``filters.request_limits``): the shape of a
request and how many a client may have in flight.

The section (its dataclass, parser and serialiser) is
:mod:`edge.policy.sections.request_limits`. Every rule refuses with the
status a client can act on:

methods           not listed: 405 with ``Allow``
max_url_length    bytes of the raw request target: 414
max_query_length  bytes after the "?": 414
max_headers       header fields: 431
max_header_bytes  names and values together: 431
max_body_size     a larger Content-Length: 413 before any byte of the body
                  is read (the pipeline applies the same limit while
                  streaming, for chunked uploads)
max_concurrent    requests in flight per client and tenant: 429, Retry-After: 1
origin_share      the share of an origin's connections one client may hold:
                  a request beyond it waits for one of the client's own to
                  end (``timeouts.origin_queue``), then 429, Retry-After: 1

The section is on by default (mode "block") with limits no ordinary client
meets; the node-wide ``[limits]`` still apply first, in the parser.

The shape checks cost a few attribute reads and length comparisons per
request; summing the header bytes walks the parser's raw header tuple
without decoding or copying it. Concurrency is counted per worker process
(like the rate limits): with N workers a client may have up to N times
``max_concurrent`` requests in flight (each worker has its own origin
connections, so the share holds per worker). IPv6 clients count by their /64, as
one subscriber holds a whole /64. Allow-listed clients (``ip_lists``) are not
counted. The counter of a client is dropped when its last request ends, so
memory is bounded by the requests in flight.
"""
from __future__ import annotations

import asyncio
import collections

from edge.policy.sections.request_limits import RequestLimits
from edge.filters._record import Recorder
from edge.filters.chain import Verdict
from edge.filters.rate_limits import client_key


def body_limit(limits: RequestLimits, node_max: int) -> int:
    """The body size a request of this tenant may have: the tenant's limit,
    never above the node's."""
    tenant = limits.max_body_size
    return node_max if tenant is None or tenant > node_max else tenant


# --- concurrency --------------------------------------------------------------------


def share_of(limits: RequestLimits, origins) -> int:
    """Origin-bound requests one client may have at once: ``origin_share``
    of the smallest pool among the tenant's origins (whichever serves, the
    client cannot fill it), at least 1; 0 for no bound."""
    share = limits.origin_share
    if share >= 1 or not origins:
        return 0
    return max(1, int(share * min(o.max_connections for o in origins)))


class _Client:
    __slots__ = ("held", "waiting")

    def __init__(self) -> None:
        self.held = 0
        self.waiting: collections.deque[asyncio.Future] = collections.deque()


class ClientSlots:
    """Requests in flight per ``(tenant, client)`` key in this worker: those
    holding a slot and those waiting for one. An entry exists only while
    there are any. The key is one tuple, built once per request and kept in
    ``ctx.slot`` for the release."""

    __slots__ = ("_clients",)

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str], _Client] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def count(self, key: tuple[str, str]) -> int:
        """Requests holding a slot."""
        c = self._clients.get(key)
        return 0 if c is None else c.held

    def waiting(self) -> int:
        """Requests waiting for a slot, of every key."""
        return sum(len(c.waiting) for c in self._clients.values())

    async def acquire(self, key: tuple[str, str], limit: int, share: int, wait: float) -> str | None:
        """Take a slot. None when taken, else the rule that refuses:
        ``max_concurrent`` at once when ``limit`` requests are in flight,
        waiting ones included; ``origin_share`` when ``share`` hold a slot
        and none was given back within ``wait`` seconds. 0: no such limit."""
        clients = self._clients
        c = clients.get(key)
        if c is None:
            c = clients[key] = _Client()
        if limit and c.held + len(c.waiting) >= limit:
            refusal = "max_concurrent"
        elif not share or c.held < share:
            c.held += 1
            return None
        elif wait <= 0:
            refusal = "origin_share"
        else:
            waiter = asyncio.get_running_loop().create_future()
            c.waiting.append(waiter)
            try:
                async with asyncio.timeout(wait):
                    await waiter
                return None  # handed over by release()
            except TimeoutError:
                if waiter.done() and not waiter.cancelled():
                    return None  # handed over just as the wait ran out
                refusal = "origin_share"
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release(key)  # handed over to a request that is gone
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                try:
                    c.waiting.remove(waiter)
                except ValueError:
                    pass  # release() took it
        if not c.held and not c.waiting:
            clients.pop(key, None)
        return refusal

    def release(self, key: tuple[str, str]) -> None:
        """Give a slot back: to the first request of the client waiting for
        one, or free."""
        c = self._clients.get(key)
        if c is None:
            return
        while c.waiting:
            waiter = c.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        c.held -= 1
        if c.held <= 0:
            del self._clients[key]


# --- the filter ------------------------------------------------------------------------


def _refusal(status: int, reason: str, rule: str, headers: dict | None = None) -> Verdict:
    return Verdict(status, reason, f"filter.request_limits.{rule}", headers)


_REFUSALS = {
    "max_url_length": _refusal(414, "request target too long", "max_url_length"),
    "max_query_length": _refusal(414, "query too long", "max_query_length"),
    "max_headers": _refusal(431, "too many header fields", "max_headers"),
    "max_header_bytes": _refusal(431, "header fields too large", "max_header_bytes"),
    "max_body_size": _refusal(413, "request body too large", "max_body_size"),
    "max_concurrent": _refusal(429, "too many requests in flight", "max_concurrent", {"Retry-After": "1"}),
    "origin_share": _refusal(429, "too many requests in flight", "origin_share", {"Retry-After": "1"}),
}


def _length(text: str) -> int:
    """Bytes of a request target as received (aiohttp decodes it as UTF-8
    with surrogate escapes)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def _query_length(target: str) -> int:
    q = target.find("?")
    return -1 if q < 0 else _length(target[q + 1:])


class RequestLimitFilter:
    """Sets ``ctx.slot`` when it took a concurrency slot; whoever finishes
    the request gives it back with ``slots.release(ctx.slot)``."""

    name = "request_limits"

    def __init__(self) -> None:
        self.slots = ClientSlots()
        self._record = Recorder(self.name)

    def wants(self, policy) -> bool:
        return policy.filters.request_limits.active

    def body_limit(self, policy, node_limit: int) -> int:
        return body_limit(policy.filters.request_limits, node_limit)

    async def reserve(self, ctx, policy, wait: float) -> Verdict | None:
        return await self.take_slot(ctx, policy, wait)

    def holds(self, ctx) -> bool:
        return ctx.slot is not None

    def release(self, ctx) -> None:
        if ctx.slot is not None:
            self.slots.release(ctx.slot)
            ctx.slot = None

    async def take_slot(self, ctx, policy, wait: float) -> Verdict | None:
        """``max_concurrent`` and ``origin_share``: called by the pipeline
        for requests that go to the origin (a cache hit from memory is over
        in microseconds and holds nothing worth a slot). A request over the
        client's share waits up to ``wait`` seconds for one of the client's
        own to end. The slot is released when the request ends
        (``ctx.slot``)."""
        limits = policy.filters.request_limits
        if not limits.active or ctx.allowlisted or not ctx.peer or ctx.slot is not None:
            return None
        cap, share = limits.max_concurrent, share_of(limits, policy.origins)
        if not cap and not share:
            return None
        key = (policy.tenant, client_key(ctx.peer))
        block = limits.mode == "block"
        rule = await self.slots.acquire(key, cap, share, wait if block else 0.0)
        if rule is None:
            ctx.slot = key
            return None
        self._record.refused(policy.tenant, rule, limits.mode, ctx.peer)
        return _REFUSALS[rule] if block else None

    def check(self, request, ctx, policy) -> Verdict | None:
        limits = policy.filters.request_limits
        if not limits.active:
            return None
        rule = None
        # Cheapest first; a GET that passes costs a few length comparisons
        # and one walk over the parser's raw header tuple.
        if request.method not in limits.method_set:
            rule = "methods"
        else:
            raw = request.raw_path
            n = len(raw) if raw.isascii() else _length(raw)
            if n > limits.max_url_length:
                rule = "max_url_length"
            elif n > limits.max_query_length and _query_length(raw) > limits.max_query_length:
                # (the query is shorter than the target: most requests skip this)
                rule = "max_query_length"
            else:
                fields = request.raw_headers
                if len(fields) > limits.max_headers:
                    rule = "max_headers"
                else:
                    size = 0
                    for name, value in fields:
                        size += len(name) + len(value)
                    if size > limits.max_header_bytes:
                        rule = "max_header_bytes"
                    elif limits.max_body_size is not None:
                        cl = request.content_length
                        if cl is not None and cl > limits.max_body_size:
                            rule = "max_body_size"
        if rule is not None:
            self._record.refused(policy.tenant, rule, limits.mode, ctx.peer)
            if limits.mode == "block":
                if rule == "methods":
                    return _refusal(405, "method not allowed", rule, {"Allow": limits.allow})
                return _REFUSALS[rule]
        return None
