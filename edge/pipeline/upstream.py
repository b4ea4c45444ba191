"""The origin's side: the request headers it gets, reading the client's
body on its way there, sending, and the origin's answer on its way back
(headers as forwarded, the body relayed and teed into the store)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from edge.cache import ranges as rgs
from edge.cache import validation as val
from edge.cache.key import encoding_bucket
from edge.http.aiohttp_adapter import write_interim
from edge.http.headers import HOP_BY_HOP, UNKEYED_REQUEST_FIELDS, connection_tokens, forwardable_name
from edge.http.slow import BodyTimeout, BodyTimeouts, ClientBodyError, read_body
from edge.origin.interim import ClientRelay
from edge.origin.pool import Failure, OriginError
from edge.pipeline.context import Ctx

log = logging.getLogger("edge.pipeline")

# Safe to send twice: failover may retry these when they carry no body.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Response fields the edge computes itself, never copies from the origin; and
# the origin's purge tags (read into Meta.extra): for the edge, never clients.
_RECOMPUTED = frozenset({"content-length", "surrogate-key", "cache-tag"})
_RANGE_FIELDS = frozenset({"range", "if-range"})
CHUNK = 64 * 1024
# Bodies up to this size are read whole before answering.
BUFFER_LIMIT = 256 * 1024


class BodyTooLarge(ClientBodyError):
    pass


def break_connection(request: web.BaseRequest) -> None:
    """Close the client connection so a cut body is visibly incomplete."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def body_error(exc: BaseException, upstream) -> OriginError:
    failure = Failure.TIMEOUT if isinstance(exc, asyncio.TimeoutError) else Failure.PROTOCOL
    return OriginError(failure, str(upstream.url.origin()), type(exc).__name__)


class Upstream:
    def __init__(self, state, responder, identify) -> None:
        self.state = state
        cfg = state.config
        self.via = f"1.1 {cfg.name}"
        self.identify = identify
        self.body_timeouts = BodyTimeouts(cfg.timeouts.body_read, cfg.timeouts.body_total)
        self.respond = responder

    def looped(self, via: list[str]) -> bool:
        """Whether this node's own Via element (RFC 9110 §7.6.3) is among ``via``."""
        for line in via:
            for element in line.split(","):
                element = element.strip()
                if element == self.via or element.startswith(self.via + " "):
                    return True
        return False

    def origin_headers(
        self, request: web.BaseRequest, ctx: Ctx, keyed: tuple[str, ...], conditional: dict[str, str] | None = None,
        whole: bool = False, own_conditionals: bool = False,
    ) -> CIMultiDict:
        src = request.headers
        drop = HOP_BY_HOP
        if whole:
            drop = drop | _RANGE_FIELDS  # the cache fetches whole objects and cuts ranges itself
        if conditional or own_conditionals:
            # RFC 9111 §4.3.1: the edge's own validators replace the client's
            # preconditions, which it evaluates itself against the result.
            drop = drop | val.CLIENT_CONDITIONALS
        conn = src.getall("Connection", ())
        if conn:
            drop = drop | connection_tokens(conn)
        out: CIMultiDict = CIMultiDict()
        for name, value in src.items():
            lname = name.lower()
            if lname in drop or lname == "host" or lname == "expect" or lname == "x-forwarded-for":
                continue
            if forwardable_name(lname) is None:
                continue
            if lname in UNKEYED_REQUEST_FIELDS and lname not in keyed:
                continue
            if lname == "x-forwarded-proto" and not self.identify.trusted_peer(request.remote):
                continue
            out.add(name, value)
        peer = request.remote or ""
        if self.identify.trusted_peer(peer):
            if self.identify.forwarded:
                # The client's own X-Forwarded-For is its word alone: the
                # origin gets the client the proxies' Forwarded named.
                prior = ctx.peer if ctx.peer and ctx.peer != peer else ""
            else:
                prior = ", ".join(src.getall("X-Forwarded-For", ()))
            out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        else:
            out["X-Forwarded-For"] = peer
        if "Range" in out:
            # The origin gets a canonical, bounded range set (overlaps merged,
            # at most MAX_RANGES), or none: never N copies of one object.
            ranges = out.popall("Range")
            normal = rgs.forwarded_range(ranges[0]) if len(ranges) == 1 else None
            if normal is not None:
                out["Range"] = normal
        if whole:
            # Stored answers are keyed by the bucket (edge.cache.key.vary_key):
            # the origin must answer for the bucket, not a client's rarer list.
            out["Accept-Encoding"] = encoding_bucket(", ".join(src.getall("Accept-Encoding", ())) or None)
        out.setdefault("X-Forwarded-Proto", "https" if request.secure else "http")
        out["X-Forwarded-Host"] = ctx.host
        prior_via = ", ".join(src.getall("Via", ()))
        out["Via"] = f"{prior_via}, {self.via}" if prior_via else self.via
        if conditional:
            out.update(conditional)
        return out

    async def continue_(self, request: web.BaseRequest) -> None:
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            # The client waits for this before sending its body (RFC 9110 §10.1.1).
            await write_interim(request, b"HTTP/1.1 100 Continue\r\n\r\n")

    async def body_head(self, request: web.BaseRequest, ctx: Ctx, limit: int) -> bytes:
        """Up to ``limit`` bytes of the request body (more when a chunk runs
        over), read before anything goes to the origin; the rest follows
        in ``request_body``."""
        await self.continue_(request)
        reader = ctx.body = read_body(request.content, self.body_timeouts)
        parts: list[bytes] = []
        seen = 0
        try:
            while seen < limit:
                try:
                    chunk = await reader.__anext__()
                except StopAsyncIteration:
                    break
                seen += len(chunk)
                if seen > ctx.body_max:
                    ctx.body_too_large = True
                    raise BodyTooLarge()
                parts.append(chunk)
        except BodyTimeout:
            ctx.body_timeout = True
            raise
        return b"".join(parts)

    async def request_body(self, request: web.BaseRequest, ctx: Ctx, prefix: bytes | None = None) -> AsyncIterator[bytes]:
        # Counted while streaming: a chunked upload cannot announce its size.
        seen = 0
        if prefix is None:
            await self.continue_(request)
        elif prefix:
            seen = len(prefix)
            yield prefix
        reader = ctx.body
        if reader is None:
            reader = ctx.body = read_body(request.content, self.body_timeouts)
        try:
            async for chunk in reader:
                seen += len(chunk)
                if seen > ctx.body_max:
                    ctx.body_too_large = True
                    raise BodyTooLarge()
                yield chunk
        except BodyTimeout:
            ctx.body_timeout = True
            raise

    async def send(self, request, ctx: Ctx, target: str, keyed=(), conditional=None, whole=False, prefix=None):
        """The request to the tenant's origins (with failover); ``whole``: for
        the cache, so without the client's range. Returns the origin's
        answer once its head has arrived."""
        policy = ctx.policy
        headers = self.origin_headers(request, ctx, keyed, conditional, whole)
        has_body = request.body_exists
        body = self.request_body(request, ctx, prefix) if has_body else None
        retry = request.method in IDEMPOTENT_METHODS and not has_body
        sent = time.monotonic()
        answer = await self.state.origins.send(
            policy.origins,
            policy.failover,
            request.method,
            target,
            headers,
            ctx.host,
            body,
            retry,
            # interim (1xx) responses: to this client alone, never stored
            relay=ClientRelay(request, self.via),
            tenant=ctx.tenant,
        )
        ctx.origin_time = time.monotonic() - sent
        return answer

    def response_headers(self, upstream: aiohttp.ClientResponse) -> CIMultiDict:
        drop = HOP_BY_HOP | _RECOMPUTED
        conn = upstream.headers.getall("Connection", ())
        if conn:
            drop = drop | connection_tokens(conn)
        out: CIMultiDict = CIMultiDict()
        for name, value in upstream.headers.items():
            if name.lower() not in drop:
                out.add(name, value)
        prior_via = ", ".join(out.popall("Via", ()))
        out["Via"] = f"{prior_via}, {self.via}" if prior_via else self.via
        if "Server" not in out:
            out["Server"] = "edge"  # rather than the framework's version string
        return out

    async def stream(self, request, ctx, upstream, headers, sink) -> web.StreamResponse:
        """Send the origin's body to the client, teeing it into the store.

        A body the origin cuts short is never stored and never looks
        complete to the client: a known length stays unmet and a chunked
        response lacks its last chunk, as the connection is closed.
        """
        clen = upstream.content_length
        status = upstream.status
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            if request.method == "HEAD" and clen is not None:
                headers["Content-Length"] = str(clen)
            resp = web.StreamResponse(status=status, headers=headers)
            await resp.prepare(request)
            await resp.write_eof()
            if sink is not None:
                # Only a 204 to a GET gets here with a sink: stored, empty.
                await sink.commit()
            return resp
        if clen is not None and clen <= BUFFER_LIMIT:
            # Small bodies: read whole, then answer in one write. A short
            # read raises here, before the client got anything: 502.
            try:
                body = await upstream.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if sink is not None:
                    await sink.abort()
                return self.respond.origin_error(ctx, body_error(exc, upstream))
            ctx.size = len(body)
            if sink is not None:
                await sink.feed(body)
                await sink.commit()
            return web.Response(status=status, body=body, headers=headers)

        resp = web.StreamResponse(status=status, headers=headers)
        if clen is not None:
            resp.content_length = clen
        first = True
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                if first:
                    await resp.prepare(request)
                    first = False
                await resp.write(chunk)
                ctx.size += len(chunk)
                if sink is not None:
                    await sink.feed(chunk)
        except ConnectionError:
            # The client is gone or was cut off (aiohttp's reset error is a
            # ClientError too, but not the origin's).
            if sink is not None:
                await sink.abort()
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            if sink is not None:
                await sink.abort()
            if first:
                return self.respond.origin_error(ctx, body_error(exc, upstream))
            log.warning("origin body broke after %d bytes (request %s): %s", ctx.size, ctx.rid, exc)
            break_connection(request)
            ctx.status = 502
            return resp
        except BaseException:
            if sink is not None:
                await sink.abort()
            raise
        if clen is not None and ctx.size != clen:
            if sink is not None:
                await sink.abort()
            break_connection(request)
            return resp
        if first:
            await resp.prepare(request)
        await resp.write_eof()
        if sink is not None:
            await sink.commit()
        return resp
