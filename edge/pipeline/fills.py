"""Fetches shared between requests: misses for one key collapsed into one
origin request (a large body read along by every waiter as it arrives,
edge/cache/collapse.py), except for keys lately found uncacheable; and
background fetches that refresh a stale entry (RFC 5861 §3) or fetch a
whole object a range request missed."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web

from edge.cache import conditional as cond
from edge.cache import freshness as fr
from edge.cache import validation as val
from edge.cache.collapse import Fill, FillBroken, State
from edge.cache.reuse import ERROR_STATUSES, reuse
from edge.cache.store import Admit, Hit, Meta, Removal
from edge.http.headers import removes_fields
from edge.origin.pool import OriginError
from edge.pipeline.context import Ctx
from edge.pipeline.outcome import answering, cached
from edge.pipeline.respond import has_preconditions, template, ttl
from edge.pipeline.storage import Sink, variant_key
from edge.pipeline.upstream import BUFFER_LIMIT, CHUNK, body_error, break_connection

log = logging.getLogger("edge.pipeline")

# Background fetches (refreshes, range fills) at once per worker; beyond,
# requests are served without starting another.
MAX_BACKGROUND = 64
# A key whose background fetch found it not storable is not fetched so again
# for this long (a range request per second must not pull the whole object
# each time).
NO_FILL_SECONDS = 60.0
# Reasons not to store that come from the response (so the stored entry is
# outdated), not from the request that triggered the fetch.
_RESPONSE_REASONS = frozenset({
    fr.NoStore.STATUS, fr.NoStore.NO_STORE, fr.NoStore.PRIVATE, fr.NoStore.SET_COOKIE, fr.NoStore.VARY_STAR,
    fr.NoStore.NO_LIFETIME, fr.NoStore.POLICY, fr.NoStore.DECEPTION,
})
# Those the next request for the key meets again, whoever sends it.
_UNCACHEABLE_REASONS = _RESPONSE_REASONS | {fr.NoStore.TOO_LARGE}
# Answers shaped by the request (its preconditions, its range), or passing
# states of the origin: collapsing shields an origin that recovers.
_FLEETING_STATUSES = frozenset({206, 304, 412, 416, 429})


def uncacheable_key(reason: fr.NoStore | None, status: int, request_no_store: bool) -> bool | None:
    """What an answer's admission says of its key: True, the key is
    uncacheable for now; False, it is not (the answer is stored); None,
    nothing (the request itself kept it from the store, or the origin is
    in trouble)."""
    if reason is None:
        return False
    if reason not in _UNCACHEABLE_REASONS or status >= 500 or status in _FLEETING_STATUSES:
        return None
    if reason is fr.NoStore.NO_STORE and request_no_store:
        return None
    return True


class Uncacheable:
    """Keys whose answer lately could not be stored (Varnish's hit-for-miss):
    misses for them are not collapsed, as no waiter could use the answer.
    A key is remembered ``seconds`` from its latest unstorable answer, at
    most ``size`` keys, the least recently marked forgotten first; each
    costs a digest of the key and two floats, however long the URL. Times
    are passed in: ``now`` monotonic, ``fetched`` as the caller likes."""

    def __init__(self, seconds: float, size: int) -> None:
        self.seconds = seconds
        self.size = size
        self._marks: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # digest -> (until, fetched)

    def __len__(self) -> int:
        return len(self._marks)

    def mark(self, key: str, now: float, fetched: float) -> None:
        if self.seconds <= 0:
            return
        marks = self._marks
        digest = _digest(key)
        marks.pop(digest, None)
        marks[digest] = (now + self.seconds, fetched)
        if len(marks) > self.size:
            marks.popitem(last=False)

    def get(self, key: str, now: float) -> float | None:
        """``fetched`` of the mark on ``key`` in force; None: not marked."""
        if not self._marks:
            return None
        digest = _digest(key)
        found = self._marks.get(digest)
        if found is None:
            return None
        if found[0] <= now:
            del self._marks[digest]
            return None
        return found[1]

    def forget(self, key: str) -> None:
        if self._marks:
            self._marks.pop(_digest(key), None)


def _digest(key: str) -> bytes:
    # 16 bytes whatever the key's length; keys begin with the tenant.
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def read_along(status: int, clen: int | None) -> bool:
    """A body too large to read whole before answering: requests waiting
    for it read it as it arrives (a shared fill)."""
    return status != 204 and (clen is None or clen > BUFFER_LIMIT)


def _asks_no_store(headers) -> bool:
    return "no-store" in ", ".join(headers.getall("Cache-Control", ())).lower()


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


class _Snapshot:
    """What a background refresh needs of the request that started it."""

    __slots__ = ("headers", "method")

    def __init__(self, request) -> None:
        self.headers = request.headers  # an immutable proxy; stays valid
        self.method = "GET"


class Fills:
    """Which fetch a request for a key may wait for, the fetches shared
    by waiters, and the background fetches."""

    def __init__(self, state, storage, responder, upstream) -> None:
        self.state = state
        self.storage = storage
        self.respond = responder
        self.upstream = upstream
        self.fill_buffer = state.config.cache.fill_buffer
        self._inflight: dict[str, asyncio.Future] = {}  # key -> its fetch: a Fill, or None once it is over
        self._background: set[asyncio.Task] = set()  # refreshes and range fills
        self._no_fill: dict[str, float] = {}  # key -> until when no background fill is tried
        cache = state.config.cache
        self.uncacheable = Uncacheable(cache.uncacheable_memory, cache.uncacheable_memory_keys)
        self.waiting = 0  # requests waiting now for another's fetch of their key

    @property
    def background(self) -> int:
        """Background fetches (refreshes, range fills) under way now."""
        return len(self._background)

    async def close(self) -> None:
        """Stop background fetches (refreshes, range fills): the node is going."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------ collapsing

    def fetch_for(self, ctx: Ctx) -> asyncio.Future | None:
        """The fetch in progress for the request's key that a miss waits for
        rather than fetch it again; None: the miss fetches. A key remembered
        as uncacheable is fetched at once (``ctx.uncacheable``)."""
        key = ctx.key
        if self._remembered(key):
            ctx.uncacheable = True
            return None
        return self._inflight.get(key)

    def _remembered(self, key: str) -> bool:
        fetched = self.uncacheable.get(key, time.monotonic())
        if fetched is None:
            return False
        barriers = self.state.store.barriers
        if barriers.active and barriers.verdict(key, Meta(0, (), fetched, fetched, 0.0, 0.0)) is not Admit.KEEP:
            # Purged since: the tenant may have changed how it answers.
            self.uncacheable.forget(key)
            return False
        return True

    def learn(self, request, ctx: Ctx, status: int, reason: fr.NoStore | None, request_time: float) -> None:
        """Remember the key as uncacheable after an answer that could not be
        stored for the response's sake; forget it after one that is stored."""
        if not self.uncacheable.seconds:
            return
        found = uncacheable_key(reason, status, reason is fr.NoStore.NO_STORE and _asks_no_store(request.headers))
        if found:
            self.uncacheable.mark(ctx.key, time.monotonic(), request_time)
        elif found is not None:
            self.uncacheable.forget(ctx.key)

    async def wait(self, fetch: asyncio.Future, timeout: float):
        """Wait up to ``timeout`` seconds for another request's fetch: its
        Fill when a large body is on its way, else None once it is over."""
        self.waiting += 1
        try:
            return await asyncio.wait_for(asyncio.shield(fetch), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self.waiting -= 1

    async def lead(self, key: str, fetch: Callable[[asyncio.Future | None], Awaitable[web.StreamResponse]]):
        """Fetch for ``key`` with the misses that come meanwhile waiting
        for it: ``fetch(done)`` resolves ``done`` (with a Fill, or None once
        the answer is stored or found not to be). Alone, when another took
        the lead since this request looked (``fetch(None)``)."""
        if key in self._inflight:
            return await fetch(None)
        done = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            return await fetch(done)
        finally:
            self._over(key, done)

    def _over(self, key: str, done: asyncio.Future) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.done():
            done.set_result(None)

    @staticmethod
    def release(done: asyncio.Future | None) -> None:
        """The answer the waiters wait for is over for them (stored, or not
        to be): they look the key up again, or fetch for themselves."""
        if done is not None and not done.done():
            done.set_result(None)

    # ------------------------------------------------------------ background

    def refresh_later(self, request, ctx: Ctx, meta: Meta | None) -> None:
        """One background request refreshes a stale entry (RFC 5861 §3), or
        (``meta`` None) fetches a whole object a range request missed;
        requests meanwhile are served as if it were not running."""
        key = ctx.key
        if key in self._inflight or len(self._background) >= MAX_BACKGROUND:
            return  # under way already, or enough fetches in the background
        now = time.monotonic()
        until = self._no_fill.get(key)
        if until is not None:
            if until > now:
                return  # the origin said lately that this object is not to be stored
            del self._no_fill[key]
        rh = request.headers
        if "Authorization" in rh or _asks_no_store(rh) or removes_fields(rh):
            return  # its answer could not be shared: nothing to fetch for the cache
        if self.state.filters.would_refuse(request, ctx, ctx.policy):
            return  # this client's headers may not go to the origin
        done = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        conditional = val.validator_headers(meta.headers) if meta is not None and val.has_validator(meta.headers) else None
        # Everything taken from the request now: it is gone once its answer
        # is sent. The client's own preconditions stay behind: the edge asks
        # for what it stores, not for what this client has.
        headers = self.upstream.origin_headers(request, ctx, ctx.keyed, conditional, whole=True, own_conditionals=True)
        bg = Ctx(ctx.rid + "-r", now, "GET", ctx.peer, tenant=ctx.tenant, host=ctx.host, path=ctx.path,
                 policy=ctx.policy, key=key, target=ctx.target)
        task = asyncio.ensure_future(self._refresh(_Snapshot(request), bg, meta, headers, done, conditional))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh(self, request, ctx: Ctx, meta: Meta | None, headers, done, conditional: dict | None) -> None:
        policy, key = ctx.policy, ctx.key
        try:
            request_time = time.time()
            try:
                upstream, _ = await self.state.origins.send(
                    policy.origins, policy.failover, "GET", ctx.target, headers, ctx.host, None, True,
                    tenant=ctx.tenant,
                )
            except OriginError as exc:
                log.info("background refresh of %s%s failed: %s", ctx.host, ctx.path, exc)
                return
            try:
                if upstream.status == 304:
                    if meta is not None and conditional and val.selects(meta.headers, upstream.headers):
                        fresh = self.upstream.response_headers(upstream)
                        await self.storage.freshen(request.headers, ctx, fresh, upstream.headers, request_time, meta)
                    return
                if upstream.status in ERROR_STATUSES:
                    return
                if not await self.store_only(request, ctx, upstream, request_time, done):
                    if len(self._no_fill) >= MAX_BACKGROUND * 64:
                        self._no_fill.clear()
                    self._no_fill[key] = time.monotonic() + NO_FILL_SECONDS
            finally:
                upstream.release()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background refresh failed (request %s)", ctx.rid)
        finally:
            self._over(key, done)

    async def store_only(self, request, ctx: Ctx, upstream, request_time: float, done=None) -> bool:
        """A background fetch's 200: stored if it may be, sent to nobody but
        the misses meanwhile (``done``), which read a large body along.
        False when the object is not to be stored (not fetched again soon)."""
        key = ctx.key
        d = self.storage.admit(request, ctx, upstream, self.upstream.response_headers(upstream), request_time)
        self.learn(request, ctx, upstream.status, d.reason, request_time)
        if d.reason is not None:
            if d.reason in _RESPONSE_REASONS:
                # What the origin now says about storing wins over the old entry.
                await self.state.store.delete(key, Removal.INVALIDATION)
            return False
        sink, fill = self.sink(request, ctx, d, upstream, done, for_client=False)
        clen = upstream.content_length
        if fill is not None:
            done.set_result(fill)
            await fill.run(upstream.content.iter_chunked(CHUNK), sink)
            return not sink.too_large
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await sink.feed(chunk)
                if sink.dead:
                    return False  # over the size limit: the rest is not fetched
        except BaseException:
            await sink.abort()
            raise
        if clen is not None and sink.size != clen:
            await sink.abort()
            return True
        await sink.commit()
        return True

    # --------------------------------------------------------- shared fills

    def sink(self, request, ctx: Ctx, admitted, upstream, done, for_client: bool = True) -> tuple[Sink, Fill | None]:
        """Where the admitted answer's body goes: the store, and, when
        requests wait for it (``done``) and it is too large to read whole,
        a Fill they read along."""
        store_key = variant_key(ctx.key, admitted.vary, request.headers)
        clen = upstream.content_length
        fill = None
        if done is not None and not done.done() and read_along(upstream.status, clen):
            fill = Fill(admitted.meta, store_key, clen, self.fill_buffer, for_client=for_client)
        sink = Sink(self.state.store, ctx.key, store_key, admitted.meta, admitted.vary, ctx.policy.cache.max_object_size,
                    clen, fill)
        return sink, fill

    async def fill_for_all(self, request, ctx: Ctx, done, upstream, headers, fill: Fill, sink) -> web.StreamResponse:
        """A large body fetched once for this client and every request that
        waits for the key (edge/cache/collapse.py): this request copies it
        from the origin into the store, while its client reads it like any
        waiter, so that a slow client holds back no one."""
        own = fill.join()
        assert own is not None
        done.set_result(fill)  # waiters read along from now on
        resp = web.StreamResponse(status=upstream.status, headers=headers)
        if fill.length is not None:
            resp.content_length = fill.length
        client = asyncio.ensure_future(self._relay_own(request, ctx, resp, own, upstream))
        try:
            await fill.run(upstream.content.iter_chunked(CHUNK), sink)
        except BaseException:
            client.cancel()
            client.add_done_callback(_retrieve)
            own.close()  # the task may never start to close it
            raise
        finally:
            if self._inflight.get(ctx.key) is done:
                del self._inflight[ctx.key]  # stored or not, later requests do not join a fill that is over
        if fill.state is State.FAILED and fill.error is not None:
            log.warning("origin body broke after %d bytes (request %s): %s", fill.received, ctx.rid, fill.error)
        return await client

    async def _relay_own(self, request, ctx: Ctx, resp, own, upstream) -> web.StreamResponse:
        """The filling request's own answer: as a waiter's, but a fill that
        fails before the first byte is the origin's error."""
        chunks = own.chunks()
        try:
            return await self._relay(request, ctx, resp, chunks)
        except FillBroken as exc:
            return self.respond.origin_error(ctx, body_error(exc.__cause__ or exc, upstream))
        finally:
            await chunks.aclose()
            own.close()

    async def serve_fill(self, request, ctx: Ctx, fill: Fill, until: float) -> web.StreamResponse | None:
        """A waiter's answer from a fill in progress: the response being
        stored, as a collapsed hit, its body read as it arrives; ranges and
        preconditions as for any hit. None: not from this fill (another Vary
        variant, the client's freshness demands, a fill that ended or was
        released before this answer began): the request fetches instead."""
        meta = fill.meta
        if meta.vary and variant_key(ctx.key, meta.vary, request.headers) != fill.store_key:
            return None
        # Decided as for a waiter whose answer was stored whole (and as a
        # lookup): fresh, or stale within its stale-while-revalidate window,
        # whose refresh is this very fetch; else the request fetches.
        age = fr.current_age(meta.initial_age, meta.response_time, time.time())
        kind = answering(reuse(meta, ctx.directives, ctx.policy.cache, age))
        if kind is None:
            return None
        reader = fill.join()
        if reader is None:
            return None
        chunks = reader.chunks()
        try:
            try:
                async with asyncio.timeout_at(until):
                    if not await fill.ready():
                        return None
            except TimeoutError:
                return None
            # Aged again: the wait for the fill's first byte took time.
            age = fr.current_age(meta.initial_age, meta.response_time, time.time())
            status_value = self.respond.settle(ctx, cached(kind, True), ttl(meta, age))
            tpl = template(meta, ctx.policy, ctx.path)
            rh = request.headers
            if has_preconditions(rh):
                found = cond.evaluate(request.method, rh, tpl, status=meta.status, now=meta.response_time)
                if found is not None:
                    return self.respond.conditional(ctx, meta, age, found)
            if "Range" in rh and meta.status == 200 and fill.length is not None:
                # Cut as from a stored body; of a body of unknown length the
                # whole is sent (RFC 9110 §14.2 lets a server ignore Range).
                partial = Hit(dataclasses.replace(meta, size=fill.length), None, chunks)
                try:
                    resp = await self.respond.ranged(request, ctx, partial, tpl, age)
                except FillBroken:
                    break_connection(request)
                    raise ConnectionResetError("the shared fill broke") from None
                if resp is not None:
                    return resp
            resp = web.StreamResponse(status=meta.status, headers=tpl)
            if fill.length is not None:
                resp.content_length = fill.length
            resp.headers["Age"] = fr.age_header_value(age)
            resp.headers.add("Cache-Status", status_value)
            resp.headers["X-Request-Id"] = ctx.rid
            try:
                return await self._relay(request, ctx, resp, chunks)
            except FillBroken:
                return None  # nothing sent yet: fetch for itself
        finally:
            await chunks.aclose()
            reader.close()

    async def _relay(self, request, ctx: Ctx, resp: web.StreamResponse, chunks) -> web.StreamResponse:
        """Send a fill's body as it arrives. A fill that fails before the
        first byte raises FillBroken; after it, the connection is cut, so
        the body never looks complete."""
        first = True
        try:
            async for chunk in chunks:
                if first:
                    await resp.prepare(request)
                    first = False
                await resp.write(chunk)
                ctx.size += len(chunk)
        except FillBroken:
            if first:
                raise
            break_connection(request)
            ctx.status = 502
            return resp
        if first:
            await resp.prepare(request)
        await resp.write_eof()
        return resp
