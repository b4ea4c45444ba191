"""A request's life, in order. This module alone knows the order of the phases:

    identify  tenant from Host, client address, request id
    filter    the shared filter chain (every tenant, every request)
    lookup    cache key, stored entry, Vary variant
    decide    RFC 9111 freshness (pure functions in edge.cache.freshness)
    fetch     origin request, collapsed per key, with failover
    respond   response policy: browser TTL, Via, Cache-Status
    store     memory and disk tiers, streaming
    log       anonymised access log

A hit walks identify -> filter -> lookup -> decide -> respond and touches
neither the origin nor the disk when memory holds the object.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time

from aiohttp import web

from edge.cache import freshness as fr
from edge.cache import validation as val
from edge.cache.collapse import Fill, held_bytes
from edge.cache.key import host_key, normalise_path, normalise_query, primary_key
from edge.cache.reuse import Directives, Reuse, directives, reuse, worth_keeping
from edge.cache.store import Hit
from edge.cache.validation import selects
from edge.filters.chain import Verdict
from edge.filters.request_limits import body_limit
from edge.filters.under_attack import CHALLENGE_PATH
from edge.geo.client import client_address
from edge.http.codings import CodingError, UnknownCoding, inspection_view
from edge.http.directives import parse_cache_control
from edge.http.slow import BodyTimeout, ClientBodyError, close_after
from edge.observe.metrics import record_request, watch_fills
from edge.origin.pool import OriginError
from edge.pipeline.context import Ctx
from edge.cache.admission import admit
from edge.pipeline.fills import ERROR_STATUSES, Fills, read_along
from edge.pipeline.respond import Responder
from edge.pipeline.storage import Sink, Storage, close_body, variant_key
from edge.pipeline.upstream import BodyTooLarge, Upstream, asked_of

log = logging.getLogger("edge.pipeline")

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
_RELEASED = "released"
_EMPTY: dict = {}
_ONLY_IF_CACHED = parse_cache_control("only-if-cached")
# RFC 9111 §4.4: methods whose success invalidates what is stored for the URL.
_UNSAFE = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_LOOP = Verdict(508, "loop detected: this request has passed this node before", "loop")


class Pipeline:
    def __init__(self, state) -> None:
        self.state = state
        cfg = state.config
        self.node = cfg.name
        self.max_body = cfg.limits.max_body_size
        self._rid_prefix = f"{os.getpid() & 0xFFFF:04x}{int(time.time()) & 0xFFFFFF:06x}"
        self._rid = itertools.count(1)
        self.collapse_wait = 30.0
        watch_fills(held_bytes)
        self._limits = next((f for f in state.filters.filters if f.name == "request_limits"), None)
        self._slots = self._limits.slots if self._limits is not None else None
        self._share_wait = cfg.timeouts.origin_queue  # for a client over its share of the origin's connections
        self.storage = Storage(state)
        self.respond = Responder(state, self.storage)
        self.upstream = Upstream(state, self.respond)
        self.fills = Fills(state, self.storage, self.respond, self.upstream)
        self._inflight = self.fills.inflight

    async def close(self) -> None:
        """Stop background fetches (refreshes, range fills): the node is going."""
        await self.fills.close()

    # ------------------------------------------------------------------ entry

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = request.remote
        if self.upstream.trusted and peer and self.upstream.trusted.contains(peer):
            # Behind a trusted proxy the client is the right-most untrusted hop.
            h = request.headers
            if self.upstream.forwarded:
                peer = client_address(peer, (), h.getall("Forwarded", ()), self.upstream.trusted)
            else:
                peer = client_address(peer, h.getall("X-Forwarded-For", ()), (), self.upstream.trusted)
        ctx = Ctx(f"{self._rid_prefix}-{next(self._rid):x}", time.monotonic(), request.method, peer)
        try:
            resp = await self._handle(request, ctx)
            await self._finish(request, ctx, resp)
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            # The client went away mid-response; nothing left to tell it.
            # aiohttp drops a response it cannot send without logging noise.
            ctx.status = 499
            self._log(ctx)
            return web.Response(status=499)
        except Exception:
            log.exception("internal error (request %s)", ctx.rid)
            resp = self.respond.error(ctx, 500, "internal error", "edge-error")
        finally:
            if ctx.slot is not None and self._slots is not None:
                self._slots.release(ctx.slot)
                ctx.slot = None
            if ctx.body is not None:
                reader, ctx.body = ctx.body, None
                await reader.aclose()
        ctx.status = resp.status
        self._log(ctx)
        return resp

    async def _finish(self, request: web.BaseRequest, ctx: Ctx, resp: web.StreamResponse) -> None:
        """Write an answer the phases left unsent, where aiohttp's own
        writing after the handler returns would not do."""
        # Answered before the body was read (a refusal, an early origin
        # answer): aiohttp would read and discard the rest for up to 10 s
        # (its lingering close) before closing; close at once instead.
        unread = request.body_exists and not request.content.is_eof()
        if resp.prepared:
            if unread and request.protocol is not None:
                request.protocol.force_close()  # what was written still goes out
        elif unread:
            await close_after(request, resp)
        elif ctx.slot is not None:
            # The client's concurrency slot counts the request until its
            # answer is written, so stalled readers are counted too.
            await resp.prepare(request)
            await resp.write_eof()

    def _log(self, ctx: Ctx) -> None:
        record_request(ctx)
        access = self.state.access_log
        if access is not None:
            access.write(
                ctx.rid,
                ctx.tenant,
                ctx.peer,
                ctx.method,
                ctx.host,
                ctx.path,
                ctx.status,
                ctx.size,
                ctx.cache,
                time.monotonic() - ctx.start,
                ctx.blocked,
            )

    async def _origin_gate(self, request, ctx: Ctx, policy):
        """What a request must pass before it may go to the origin: the
        client's concurrency limits and every WAF rule. Once passed, passed
        (``ctx.gated``): the phases may ask again on the way."""
        if ctx.gated:
            return None
        if self.upstream.looped(request.headers.getall("Via", ())):
            # A tenant origin that leads back to this node (its public
            # address, a CNAME to the CDN): each lap would hold a slot.
            return _LOOP
        verdict = self._waf_full(request, ctx, policy)
        if verdict is not None:
            return verdict  # an attack is an attack, counted as such, whatever the client's slots
        limits = self._limits
        verdict = await limits.take_slot(ctx, policy, self._share_wait) if limits is not None else None
        ctx.gated = verdict is None
        return verdict

    def _waf_full(self, request, ctx: Ctx, policy, quiet: bool = False):
        """Every WAF rule on the request head before the origin sees it (the
        chain ran only the cheap ones, which is all a cache hit needs).
        ``quiet``: decide only, for a request that is served anyway."""
        waf = self.state.waf
        if waf is None:
            return None
        return waf.check_full(request, ctx, policy, quiet=quiet)


    # --------------------------------------------------------------- identify

    async def _handle(self, request: web.BaseRequest, ctx: Ctx) -> web.StreamResponse:
        if request.version.major != 1:
            return self.respond.error(ctx, 505, "HTTP version not supported", "bad-version")
        raw = request.raw_path
        if "#" in raw:
            # A fragment never belongs in a request target (RFC 9112 §3.2).
            return self.respond.error(ctx, 400, "fragment in request target", "bad-target")
        hosts = request.headers.getall("Host", ())
        if raw[:1] != "/":
            # Absolute-form target: its authority replaces Host (RFC 9112 §3.2.2).
            scheme, sep, rest = raw.partition("://")
            if not sep or scheme.lower() not in ("http", "https"):
                return self.respond.error(ctx, 400, "bad request target", "bad-target")
            authority, slash, tail = rest.partition("/")
            raw = "/" + tail
            hosts = (authority,)
        if len(hosts) != 1:
            return self.respond.error(ctx, 400, "exactly one Host header is required", "bad-host")
        host = host_key(hosts[0])
        if host is None:
            return self.respond.error(ctx, 400, "malformed Host header", "bad-host")
        ctx.host = host
        policy = self.state.policies.current.resolve(host)
        if policy is None:
            return self.respond.error(ctx, 421, "this node serves no site for that host", "unknown-host")
        ctx.tenant = policy.tenant

        raw_path, _, raw_query = raw.partition("?")
        path = normalise_path(raw_path)
        if path is None:
            return self.respond.error(ctx, 400, "malformed path", "bad-path")
        ctx.path = path

        # ----------------------------------------------------------- filter
        verdict = self.state.filters.check(request, ctx, policy)
        if verdict is None and ctx.path == CHALLENGE_PATH and request.method == "POST" and self.state.under_attack:
            # A no-script challenge answer posted as a form, read under the
            # body deadlines like any other body.
            await self.upstream.continue_(request)
            limit = self.upstream.body_timeouts.total or self.upstream.body_timeouts.idle or None
            try:
                verdict = await asyncio.wait_for(self.state.under_attack.verify_form(request, ctx, policy), limit)
            except asyncio.TimeoutError:
                return await close_after(request, self.respond.error(ctx, 408, "request body timeout", "body-timeout"))
        if verdict is not None:
            return self.respond.refuse(ctx, policy, verdict)

        method = request.method
        cl = request.content_length
        ctx.body_max = body_limit(policy.filters.request_limits, self.max_body)
        if cl is not None and cl > ctx.body_max:
            return self.respond.error(ctx, 413, "request body too large", "body-too-large")

        if method not in CACHEABLE_METHODS or not policy.cache.enabled:
            return await self._pass(request, ctx, policy, path, raw_query, "method" if policy.cache.enabled else "bypass")
        decision = policy.request_decision(path)
        if decision.bypass:
            return await self._pass(request, ctx, policy, path, raw_query, "bypass")
        if request.body_exists:
            # A GET with a body: what the origin makes of the body is not in
            # the key, so the answer is neither looked up nor stored.
            return await self._pass(request, ctx, policy, path, raw_query, "request")

        # ----------------------------------------------------------- lookup
        opts = decision.key
        query = normalise_query(raw_query, opts) if raw_query else ""
        req_headers = request.headers
        key_cookies = _cookies(req_headers, opts.cookies) if opts.cookies else _EMPTY
        key = primary_key(policy.tenant, host, path, query, opts, req_headers, key_cookies)
        target = path + "?" + query if query else path

        # RFC 9111 §5.2.1.4, §5.4: the client may ask us to validate first.
        asked = directives(req_headers.get("Cache-Control"), req_headers.get("Pragma"), policy.cache.client_no_cache)
        ctx.directives = asked

        stale: Hit | None = None  # a stored entry to validate (RFC 9111 §4.3)
        if not (asked.revalidate and asked.only_if_cached):
            hit, variant = await self.storage.lookup(key, req_headers)
            if hit is None:
                fwd = "request" if asked.revalidate else "vary-miss" if variant else "uri-miss"
            else:
                # --------------------------------------------------- decide
                now = time.time()
                meta = hit.meta
                decision = reuse(meta, asked, policy.cache, now)
                age = fr.current_age(meta.initial_age, meta.response_time, now)
                if decision is Reuse.FRESH:
                    return await self.respond.hit(request, ctx, policy, hit, age)
                if decision is Reuse.STALE_WHILE_REVALIDATE:
                    # RFC 5861 §3: serve it stale, refresh once in the background.
                    self.fills.refresh_later(request, ctx, policy, key, target, meta)
                    status_value = f"{self.node}; hit; ttl={int(meta.lifetime) - int(age)}; detail=stale-while-revalidate"
                    return await self.respond.hit(request, ctx, policy, hit, age, status_value=status_value)
                fwd = decision.value
                stale = await self._keep_stale(hit, policy, asked)
        else:
            fwd = "request"

        if asked.only_if_cached:
            # RFC 9111 §5.2.1.7: nothing usable stored, and the origin is off limits.
            if stale is not None and stale.chunks is not None:
                await stale.chunks.aclose()
            resp = self.respond.error(ctx, 504, "not in cache (only-if-cached)", "only-if-cached")
            ctx.cache = resp.headers["Cache-Status"] = f"{self.node}; detail=only-if-cached"
            return resp

        # ------------------------------------------------------------ fetch
        if method == "GET" and stale is None and "Range" in req_headers and fwd != "request":
            # The client's range goes to the origin as asked; the whole
            # object is fetched for the cache beside it, once per key: both
            # only when the client may reach the origin at all.
            verdict = await self._origin_gate(request, ctx, policy)
            if verdict is not None:
                return self.respond.refuse(ctx, policy, verdict)
            self.fills.refresh_later(request, ctx, policy, key, target, None)
            return await self._pass(request, ctx, policy, path, raw_query, "range", gated=True)
        if method == "GET" and fwd != "request":
            waiter = self._inflight.get(key)
            if waiter is not None:
                if stale is not None and stale.chunks is not None:
                    await stale.chunks.aclose()
                stale = None
                until = asyncio.get_running_loop().time() + self.collapse_wait
                outcome = await self.fills.wait(waiter, self.collapse_wait)
                if isinstance(outcome, Fill):
                    # A large body on its way: read along from its first byte.
                    resp = await self.fills.serve_fill(request, ctx, policy, key, outcome, asked, until)
                    if resp is not None:
                        return resp
                    outcome = _RELEASED if outcome.released else None
                hit, _ = await self.storage.lookup(key, req_headers)
                if hit is not None:
                    # As a lookup would decide, now that the other fetch is over.
                    now = time.time()
                    meta = hit.meta
                    decision = reuse(meta, asked, policy.cache, now)
                    age = fr.current_age(meta.initial_age, meta.response_time, now)
                    if decision is Reuse.FRESH:
                        return await self.respond.hit(request, ctx, policy, hit, age, collapsed=True)
                    if decision is Reuse.STALE_WHILE_REVALIDATE:
                        self.fills.refresh_later(request, ctx, policy, key, target, meta)
                        ttl = int(meta.lifetime) - int(age)
                        status_value = f"{self.node}; hit; ttl={ttl}; collapsed; detail=stale-while-revalidate"
                        return await self.respond.hit(request, ctx, policy, hit, age, status_value=status_value)
                    stale = await self._keep_stale(hit, policy, asked)
                return await self._miss(request, ctx, policy, key, target, fwd, None, outcome is not _RELEASED, stale)
            # The gate (and a wait for the client's share) before leading:
            # others' misses for this key must not wait on this client's turn.
            verdict = await self._origin_gate(request, ctx, policy)
            if verdict is not None:
                await close_body(stale)
                return self.respond.refuse(ctx, policy, verdict)
            if key in self._inflight:  # another took the lead meanwhile: fetch alone
                return await self._miss(request, ctx, policy, key, target, fwd, None, True, stale)
            done = asyncio.get_running_loop().create_future()
            self._inflight[key] = done
            try:
                return await self._miss(request, ctx, policy, key, target, fwd, done, True, stale)
            finally:
                if self._inflight.get(key) is done:
                    del self._inflight[key]
                if not done.done():
                    done.set_result(None)
        return await self._miss(request, ctx, policy, key, target, fwd, None, True, stale)

    async def _pass(self, request, ctx, policy, path, raw_query, why: str, gated: bool = False) -> web.StreamResponse:
        """Forward without the cache (methods it does not store, bypass rules)."""
        target = path + "?" + raw_query if raw_query else path
        ctx.cache = f"{self.node}; fwd={why}"
        if not gated:
            verdict = await self._origin_gate(request, ctx, policy)
            if verdict is not None:
                return self.respond.refuse(ctx, policy, verdict)
        prefix = None  # the body's head, when the WAF read it first
        waf = self.state.waf
        if waf is not None and request.body_exists and policy.filters.waf.active and policy.filters.waf.inspect_body:
            # The WAF reads the head of the body before the origin sees any of it.
            try:
                prefix = await self.upstream.body_head(request, ctx, policy.filters.waf.max_body)
            except BodyTooLarge:
                return self.respond.error(ctx, 413, "request body too large", "body-too-large")
            except BodyTimeout:
                return await close_after(request, self.respond.error(ctx, 408, "request body timeout", "body-timeout"))
            try:
                # The origin gets the body as sent; the WAF reads it decoded,
                # or compressing a payload would be a way past it.
                view = inspection_view(prefix, request.headers.getall("Content-Encoding", ()), policy.filters.waf.max_body)
            except CodingError as exc:
                if policy.filters.waf.mode != "block":
                    # A WAF on trial refuses nothing: noted, the raw bytes inspected.
                    log.info("request %s: body not inspected decoded: %s", ctx.rid, exc)
                    view = prefix
                elif isinstance(exc, UnknownCoding):
                    # RFC 9110 §15.5.16: what the WAF cannot read does not pass unread.
                    return await close_after(request, self.respond.error(ctx, 415, str(exc), "unsupported-body-encoding"))
                else:
                    return await close_after(request, self.respond.error(ctx, 400, str(exc), "bad-body-encoding"))
            verdict = await waf.check_body(request, ctx, policy, view, ctx.waf)
            if verdict is not None:
                return self.respond.refuse(ctx, policy, verdict)
        try:
            upstream, _ = await self.upstream.send(request, ctx, policy, target, prefix=prefix)
        except (OriginError, ClientBodyError) as exc:
            # The client's oversized or stalled body aborts the upload; the
            # origin is not to blame.
            if ctx.body_too_large:
                return self.respond.error(ctx, 413, "request body too large", "body-too-large")
            if ctx.body_timeout:
                return await close_after(request, self.respond.error(ctx, 408, "request body timeout", "body-timeout"))
            return self.respond.origin_error(ctx, exc)
        try:
            headers = self.upstream.response_headers(upstream)
            if request.method in _UNSAFE and 200 <= upstream.status < 400 and policy.cache.enabled:
                await self.storage.invalidate(ctx, policy, path, raw_query, headers)
            headers["Cache-Status"] = ctx.cache
            headers["X-Request-Id"] = ctx.rid
            return await self.upstream.stream(request, ctx, upstream, headers, None)
        finally:
            upstream.release()

    async def _miss(
        self, request, ctx, policy, key, target, fwd, done, may_store: bool = True, stale: Hit | None = None
    ) -> web.StreamResponse:
        """Fetch from the origin; with ``stale`` (a stored entry that has a
        validator) the fetch is a validation (RFC 9111 §4.3.1), and a failed
        fetch may be answered with it (RFC 5861 stale-if-error)."""
        verdict = await self._origin_gate(request, ctx, policy)
        if verdict is not None:
            return self.respond.refuse(ctx, policy, verdict)
        request_time = time.time()
        keyed = policy.request_decision(ctx.path).key.headers
        conditional = None
        if stale is not None and val.has_validator(stale.meta.headers):
            conditional = val.validator_headers(stale.meta.headers)
        try:
            try:
                upstream, _ = await self.upstream.send(request, ctx, policy, target, keyed, conditional, whole=True)
            except OriginError as exc:
                if stale is not None and self._answers_on_error(ctx, policy, stale):
                    hit, stale = stale, None
                    return await self._serve_on_error(request, ctx, policy, hit, fwd, None)
                return self.respond.origin_error(ctx, exc)
            if conditional is not None and upstream.status == 304 and not selects(stale.meta.headers, upstream.headers):
                # RFC 9111 §4.3.4: the 304 names another representation than
                # the one stored, so it updates nothing: fetch it whole.
                upstream.release()
                await close_body(stale)
                stale = conditional = None
                request_time = time.time()
                try:
                    upstream, _ = await self.upstream.send(request, ctx, policy, target, keyed, whole=True)
                except OriginError as exc:
                    return self.respond.origin_error(ctx, exc)
            try:
                status = upstream.status
                if stale is not None and status in ERROR_STATUSES and self._answers_on_error(ctx, policy, stale):
                    hit, stale = stale, None
                    return await self._serve_on_error(request, ctx, policy, hit, fwd, status)
                if conditional is not None and status == 304:
                    hit, stale = stale, None
                    return await self._revalidated(request, ctx, policy, key, fwd, done, upstream, request_time, hit)
                if stale is not None and request.method == "HEAD" and status == 200:
                    # RFC 9111 §4.3.5: a HEAD answer freshens (or invalidates)
                    # the stored GET response it describes.
                    hit, stale = stale, None
                    await close_body(hit)
                    fresh = self.upstream.response_headers(upstream)
                    await self.storage.head_update(request.headers, policy, key, fresh, upstream, request_time, hit.meta, ctx.path)
                    return await self._on_response(request, ctx, policy, key, fwd, done, upstream, request_time, False)
                await close_body(stale)
                stale = None
                return await self._on_response(request, ctx, policy, key, fwd, done, upstream, request_time, may_store)
            finally:
                upstream.release()
        finally:
            await close_body(stale)

    async def _keep_stale(self, hit: Hit, policy, asked: Directives) -> Hit | None:
        """``hit`` when it may still help (validation, stale-if-error); else
        its body stream is closed."""
        if worth_keeping(hit.meta, asked, policy.cache):
            return hit
        await close_body(hit)
        return None

    def _answers_on_error(self, ctx: Ctx, policy, stale: Hit) -> bool:
        return reuse(stale.meta, ctx.directives, policy.cache, time.time(), origin_failed=True) is Reuse.STALE_IF_ERROR

    async def _serve_on_error(self, request, ctx, policy, hit: Hit, fwd: str, status: int | None) -> web.StreamResponse:
        """RFC 5861 §4: the origin failed; the stale entry answers instead."""
        meta = hit.meta
        age = fr.current_age(meta.initial_age, meta.response_time, time.time())
        got = f"; fwd-status={status}" if status is not None else ""
        status_value = f"{self.node}; fwd={fwd}{got}; ttl={int(meta.lifetime) - int(age)}; detail=stale-if-error"
        return await self.respond.hit(request, ctx, policy, hit, age, status_value=status_value)

    async def _revalidated(self, request, ctx, policy, key, fwd, done, upstream, request_time, hit: Hit) -> web.StreamResponse:
        """The origin's 304 for a stored entry: freshen it (RFC 9111 §4.3.4,
        §3.2) without touching its body, and serve it."""
        fresh = self.upstream.response_headers(upstream)
        done_ = await self.storage.freshen(request.headers, policy, key, fresh, upstream.headers, request_time, hit.meta,
                                           ctx.path)
        meta, cookies = done_.meta, done_.cookies
        if done is not None and not done.done():
            done.set_result(None)  # waiters find the freshened entry
        ttl = int(meta.lifetime) - int(meta.initial_age)
        status_value = f"{self.node}; fwd={fwd}; fwd-status=304; stored; ttl={ttl}"
        hit.meta = meta
        if policy.cache.strip_set_cookie:
            cookies = []
        return await self.respond.hit(request, ctx, policy, hit, meta.initial_age, status_value=status_value, cookies=cookies)

    async def _on_response(self, request, ctx, policy, key, fwd, done, upstream, request_time, may_store) -> web.StreamResponse:
        d = admit(asked_of(request, ctx.path), upstream.status, self.upstream.response_headers(upstream), upstream.headers,
                  content_length=upstream.content_length, request_time=request_time, response_time=time.time(),
                  policy=policy, largest=self.storage.largest(policy), may_store=may_store)
        headers = d.client
        if d.reason is not None:
            ctx.cache = f"{self.node}; fwd={fwd}; detail={d.reason.value}"
            if done is not None and not done.done():
                done.set_result(None)  # waiters go to the origin themselves
            headers["Cache-Status"] = ctx.cache
            headers["X-Request-Id"] = ctx.rid
            return await self.upstream.stream(request, ctx, upstream, headers, None)
        names = d.vary
        store_key = variant_key(key, names, request.headers)
        ctx.cache = f"{self.node}; fwd={fwd}; stored; ttl={int(d.lifetime) - int(d.initial_age)}"
        headers["Cache-Status"] = ctx.cache
        headers["X-Request-Id"] = ctx.rid
        headers["Age"] = fr.age_header_value(d.initial_age)
        clen = upstream.content_length
        fill = None
        if done is not None and not done.done() and read_along(upstream.status, clen):
            fill = Fill(d.meta, store_key, clen, self.fills.fill_buffer)
        sink = Sink(self.state.store, key, store_key, d.meta, names, policy.cache.max_object_size, clen, fill)
        if fill is not None:
            return await self.fills.fill_for_all(request, ctx, key, done, upstream, headers, fill, sink)
        return await self.upstream.stream(request, ctx, upstream, headers, sink)


def _cookies(headers, names: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers.getall("Cookie", ()):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name in names and name not in found:
                found[name] = value
    return found



