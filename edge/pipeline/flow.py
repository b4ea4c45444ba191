"""A request's life, in order. This module alone knows the order of the
phases; each step's work is done elsewhere:

    identify  request id, client address, tenant from the host, path      identify.py
              an ACME HTTP-01 challenge of a tenant with tls.acme is
              answered here, before the filters and the cache            respond.py
    filter    the shared filter chain's request hook (every request)      edge/filters/chain.py
    lookup    cache key, the request's directives, stored entry, variant  storage.py
    decide    may it answer: fresh, stale, validate, miss (pure)          edge/cache/reuse.py
    fetch     the chain's before-origin hook, then the origin: collapsed
              per key, conditional with a stale entry's validators,
              the stale entry again when the origin fails                 fills.py, upstream.py
    respond   hits, ranges, 304 / 412, errors, refusals                   respond.py
    store     whether and how (pure), then memory and disk, streaming     edge/cache/admission.py, storage.py
    log       the outcome, rendered once each into Cache-Status, the
              access log and the metrics                                  outcome.py

A hit walks identify -> filter -> lookup -> decide -> respond -> log and
touches neither the origin nor the disk when memory holds the object.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from edge.cache import freshness as fr
from edge.cache import validation as val
from edge.cache.collapse import Fill, held_bytes
from edge.cache.key import normalise_query, primary_key
from edge.cache.reuse import ERROR_STATUSES, Reuse, directives, reuse, worth_keeping
from edge.cache.store import Hit
from edge.filters.chain import Verdict
from edge.http.aiohttp_adapter import close_connection
from edge.http.slow import BodyTimeout, ClientBodyError, close_after
from edge.observe.metrics import record_request, watch_fills
from edge.origin.pool import OriginError
from edge.pipeline.context import Ctx
from edge.pipeline.fills import Fills
from edge.pipeline.identify import UNKNOWN_HOST, Identify, site
from edge.pipeline.outcome import Fwd, Kind, Outcome, answering, cached
from edge.pipeline.respond import Responder
from edge.pipeline.storage import Storage, close_body
from edge.pipeline.upstream import BodyTooLarge, Upstream
from edge.tls.challenges import PREFIX as CHALLENGE_PREFIX

log = logging.getLogger("edge.pipeline")

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
# RFC 9111 §4.4: methods whose success invalidates what is stored for the URL.
_UNSAFE = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_LOOP = Verdict(508, "loop detected: this request has passed this node before", "loop")
_EMPTY: dict = {}


class Pipeline:
    def __init__(self, state) -> None:
        self.state = state
        cfg = state.config
        self.max_body = cfg.limits.max_body_size
        self.collapse_wait = 30.0
        self.identify = Identify(cfg)
        self.storage = Storage(state)
        self.respond = Responder(state, self.storage)
        self.upstream = Upstream(state, self.respond, self.identify)
        self.fills = Fills(state, self.storage, self.respond, self.upstream)
        self.filters = state.filters
        self._share_wait = cfg.timeouts.origin_queue  # for a client over its share of the origin's connections
        watch_fills(held_bytes)

    async def close(self) -> None:
        """Stop background fetches (refreshes, range fills): the node is going."""
        await self.fills.close()

    # ------------------------------------------------------------------ entry

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = self.identify.client(request)
        try:
            resp = await self._phases(request, ctx)
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
            if ctx.gated:  # only a request that passed the gate holds anything
                self.filters.release(ctx)
            if ctx.body is not None:
                reader, ctx.body = ctx.body, None
                await reader.aclose()
            if ctx.stale is not None:
                await close_body(ctx.stale)
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
            if unread:
                close_connection(request)  # what was written still goes out
        elif unread:
            await close_after(request, resp)
        elif ctx.gated and self.filters.holds(ctx):
            # What a filter holds for the request (a client's concurrency
            # slot) counts it until its answer is written, so stalled
            # readers are counted too.
            await resp.prepare(request)
            await resp.write_eof()

    # -------------------------------------------------------------------- log

    def _log(self, ctx: Ctx) -> None:
        outcome = ctx.outcome
        record_request(ctx.tenant, ctx.status, outcome.label if outcome is not None else "none", ctx.size,
                       ctx.origin_time)
        access = self.state.access_log
        if access is not None:
            access.write(ctx.rid, ctx.tenant, ctx.peer, ctx.method, ctx.host, ctx.path, ctx.status, ctx.size,
                         ctx.cache, time.monotonic() - ctx.start, ctx.blocked,
                         ctx.tls.version if ctx.tls is not None else None)

    # ----------------------------------------------------------------- phases

    async def _phases(self, request: web.BaseRequest, ctx: Ctx) -> web.StreamResponse:
        # identify
        bad = site(request, ctx, self.state.policies.current)
        challenges = self.state.challenges
        if challenges is not None and (bad is None or bad[2] == UNKNOWN_HOST):
            path = ctx.path if bad is None else request.raw_path.partition("?")[0]
            if path.startswith(CHALLENGE_PREFIX):
                # The CA validates from anywhere: no tenant filter may refuse it, no cache
                # may keep it, and the origin never sees it.
                answer = await self.respond.challenge(request, ctx, challenges, path,
                                                      own=bad is None and ctx.policy.tls.acme)
                if answer is not None:
                    return answer
        if bad is not None:
            return self.respond.error(ctx, *bad)
        # filter
        refused = await self._filter(request, ctx)
        if refused is not None:
            return refused
        policy = ctx.policy
        if request.method not in CACHEABLE_METHODS or not policy.cache.enabled:
            return await self._pass(request, ctx, Fwd.METHOD if policy.cache.enabled else Fwd.BYPASS)
        decision = policy.request_decision(ctx.path)
        if decision.bypass:
            return await self._pass(request, ctx, Fwd.BYPASS)
        if request.body_exists:
            # A GET with a body: what the origin makes of the body is not in
            # the key, so the answer is neither looked up nor stored.
            return await self._pass(request, ctx, Fwd.REQUEST)
        # lookup
        opts = decision.key
        rh = request.headers
        query = normalise_query(ctx.raw_query, opts) if ctx.raw_query else ""
        key_cookies = _cookies(rh, opts.cookies) if opts.cookies else _EMPTY
        ctx.key = primary_key(policy.tenant, ctx.host, ctx.path, query, opts, rh, key_cookies)
        ctx.target = ctx.path + "?" + query if query else ctx.path
        ctx.keyed = opts.headers
        # RFC 9111 §5.2.1.4, §5.4: the client may ask to validate first.
        asked = ctx.directives = directives(rh.get("Cache-Control"), rh.get("Pragma"), policy.cache.client_no_cache)
        hit, variant = None, False
        if not (asked.revalidate and asked.only_if_cached):
            hit, variant = await self.storage.lookup(ctx.key, rh)
        # decide
        if hit is None:
            ctx.fwd = Fwd.REQUEST if asked.revalidate else Fwd.VARY_MISS if variant else Fwd.URI_MISS
        else:
            answer = await self._decide(request, ctx, hit, collapsed=False)
            if answer is not None:
                return answer
        if asked.only_if_cached:
            # RFC 9111 §5.2.1.7: nothing usable stored, and the origin is off limits.
            return self.respond.error(ctx, 504, "not in cache (only-if-cached)", "only-if-cached", forwarded=False)
        # fetch
        return await self._fetch(request, ctx)

    async def _decide(self, request, ctx: Ctx, hit: Hit, collapsed: bool) -> web.StreamResponse | None:
        """The stored entry's answer, as reuse() decides; None: the request
        goes on to the origin, with the entry in ``ctx.stale`` where it may
        help there. ``collapsed``: the request waited for another's fetch."""
        meta = hit.meta
        age = fr.current_age(meta.initial_age, meta.response_time, time.time())
        decision = reuse(meta, ctx.directives, ctx.policy.cache, age)
        kind = answering(decision)
        if kind is not None:
            if kind is Kind.STALE_WHILE_REVALIDATE:
                # RFC 5861 §3: serve it stale, refresh once in the background.
                self.fills.refresh_later(request, ctx, meta)
            return await self.respond.hit(request, ctx, hit, age, cached(kind, collapsed))
        if not collapsed:
            ctx.fwd = Fwd.REQUEST if decision is Reuse.VALIDATE_REQUEST else Fwd.STALE
        if worth_keeping(meta, ctx.directives, ctx.policy.cache):
            ctx.stale = hit
        else:
            await close_body(hit)
        return None

    async def _fetch(self, request, ctx: Ctx) -> web.StreamResponse:
        if request.method != "GET" or ctx.fwd is Fwd.REQUEST:
            return await self._miss(request, ctx, None)
        if ctx.stale is None and "Range" in request.headers:
            # The client's range goes to the origin as asked; the whole
            # object is fetched for the cache beside it, once per key: both
            # only when the client may reach the origin at all.
            refused = await self._gate(request, ctx)
            if refused is not None:
                return refused
            self.fills.refresh_later(request, ctx, None)
            return await self._pass(request, ctx, Fwd.RANGE)
        fetch = self.fills.fetch_for(ctx)
        if fetch is not None:
            return await self._wait(request, ctx, fetch)
        # The gate (and a wait for the client's share) before leading:
        # others' misses for this key must not wait on this client's turn.
        refused = await self._gate(request, ctx)
        if refused is not None:
            return refused
        return await self.fills.lead(ctx.key, lambda done: self._miss(request, ctx, done))

    async def _wait(self, request, ctx: Ctx, fetch) -> web.StreamResponse:
        """Another request is fetching this key: its answer, then as a
        lookup would decide; else a fetch of its own."""
        await close_body(ctx.stale)  # not held open while waiting
        ctx.stale = None
        until = asyncio.get_running_loop().time() + self.collapse_wait
        got = await self.fills.wait(fetch, self.collapse_wait)
        may_store = True
        if isinstance(got, Fill):
            # A large body on its way: read along from its first byte.
            resp = await self.fills.serve_fill(request, ctx, got, until)
            if resp is not None:
                return resp
            may_store = not got.released
        hit, _ = await self.storage.lookup(ctx.key, request.headers)
        if hit is not None:
            answer = await self._decide(request, ctx, hit, collapsed=True)
            if answer is not None:
                return answer
        return await self._miss(request, ctx, None, may_store)

    async def _miss(self, request, ctx: Ctx, done, may_store: bool = True) -> web.StreamResponse:
        """Fetch from the origin for the cache; with ``ctx.stale`` holding
        validators the fetch is a validation (RFC 9111 §4.3.1), and a failed
        fetch may be answered with it (RFC 5861 §4)."""
        refused = await self._gate(request, ctx)
        if refused is not None:
            return refused
        request_time = time.time()
        stale = ctx.stale
        conditional = None
        if stale is not None and val.has_validator(stale.meta.headers):
            conditional = val.validator_headers(stale.meta.headers)
        try:
            upstream, _ = await self.upstream.send(request, ctx, ctx.target, ctx.keyed, conditional, whole=True)
        except OriginError as exc:
            answer = await self._stale_on_error(request, ctx, None)
            return answer if answer is not None else self.respond.origin_error(ctx, exc)
        if conditional is not None and upstream.status == 304 and not val.selects(stale.meta.headers, upstream.headers):
            # RFC 9111 §4.3.4: the 304 names another representation than
            # the one stored, so it updates nothing: fetch it whole.
            upstream.release()
            await close_body(stale)
            ctx.stale = stale = conditional = None
            request_time = time.time()
            try:
                upstream, _ = await self.upstream.send(request, ctx, ctx.target, ctx.keyed, whole=True)
            except OriginError as exc:
                return self.respond.origin_error(ctx, exc)
        try:
            status = upstream.status
            if stale is not None and status in ERROR_STATUSES:
                answer = await self._stale_on_error(request, ctx, status)
                if answer is not None:
                    return answer
            if conditional is not None and status == 304:
                return await self._revalidated(request, ctx, done, upstream, request_time)
            if stale is not None and request.method == "HEAD" and status == 200:
                # RFC 9111 §4.3.5: a HEAD answer freshens (or invalidates)
                # the stored GET response it describes.
                await close_body(stale)
                ctx.stale = None
                fresh = self.upstream.response_headers(upstream)
                await self.storage.head_update(request.headers, ctx, fresh, upstream, request_time, stale.meta)
                return await self._store(request, ctx, done, upstream, request_time, False)
            await close_body(stale)
            ctx.stale = None
            return await self._store(request, ctx, done, upstream, request_time, may_store)
        finally:
            upstream.release()

    async def _stale_on_error(self, request, ctx: Ctx, status: int | None) -> web.StreamResponse | None:
        """RFC 5861 §4: the origin failed (``status``, or no answer at all);
        the stale entry answers if it may."""
        hit = ctx.stale
        if hit is None:
            return None
        meta = hit.meta
        age = fr.current_age(meta.initial_age, meta.response_time, time.time())
        if reuse(meta, ctx.directives, ctx.policy.cache, age, origin_failed=True) is not Reuse.STALE_IF_ERROR:
            return None
        ctx.stale = None
        outcome = Outcome(Kind.STALE_IF_ERROR, ctx.fwd, fwd_status=status)
        return await self.respond.hit(request, ctx, hit, age, outcome)

    async def _revalidated(self, request, ctx: Ctx, done, upstream, request_time: float) -> web.StreamResponse:
        """The origin's 304 for a stored entry: freshen it (RFC 9111 §4.3.4,
        §3.2) without touching its body, and serve it."""
        hit, ctx.stale = ctx.stale, None
        fresh = self.upstream.response_headers(upstream)
        done_ = await self.storage.freshen(request.headers, ctx, fresh, upstream.headers, request_time, hit.meta)
        self.fills.release(done)  # waiters find the freshened entry
        meta = hit.meta = done_.meta
        cookies = [] if ctx.policy.cache.strip_set_cookie else done_.cookies
        return await self.respond.hit(request, ctx, hit, meta.initial_age, Outcome.revalidated(ctx.fwd), cookies)

    async def _store(self, request, ctx: Ctx, done, upstream, request_time: float, may_store: bool) -> web.StreamResponse:
        """The origin's answer to this client, stored on the way if admitted."""
        d = self.storage.admit(request, ctx, upstream, self.upstream.response_headers(upstream), request_time, may_store)
        self.fills.learn(request, ctx, upstream.status, d.reason, request_time)
        headers = d.client
        if d.reason is not None:
            self.fills.release(done)  # waiters go to the origin themselves
            self.respond.stamp(ctx, headers, Outcome.not_stored(ctx.fwd, d.reason, ctx.uncacheable))
            return await self.upstream.stream(request, ctx, upstream, headers, None)
        self.respond.stamp(ctx, headers, Outcome.stored(ctx.fwd), int(d.lifetime) - int(d.initial_age))
        headers["Age"] = fr.age_header_value(d.initial_age)
        sink, fill = self.fills.sink(request, ctx, d, upstream, done)
        if fill is not None:
            return await self.fills.fill_for_all(request, ctx, done, upstream, headers, fill, sink)
        return await self.upstream.stream(request, ctx, upstream, headers, sink)

    async def _pass(self, request, ctx: Ctx, why: Fwd) -> web.StreamResponse:
        """Forward without the cache (methods it does not store, bypass rules)."""
        target = ctx.path + "?" + ctx.raw_query if ctx.raw_query else ctx.path
        outcome = Outcome.passed(why)
        self.respond.settle(ctx, outcome)
        refused = await self._gate(request, ctx)
        if refused is not None:
            return refused
        prefix = None  # the body's head, when a filter read it first
        wanted = self.filters.body_wanted(ctx.policy) if request.body_exists else 0
        if wanted:
            # Filters read the head of the body before the origin sees any of it.
            try:
                prefix = await self.upstream.body_head(request, ctx, wanted)
            except BodyTooLarge:
                return self.respond.error(ctx, 413, "request body too large", "body-too-large")
            except BodyTimeout:
                return await close_after(request, self.respond.error(ctx, 408, "request body timeout", "body-timeout"))
            verdict = await self.filters.on_body(request, ctx, ctx.policy, prefix)
            if verdict is not None:
                resp = self.respond.refuse(ctx, verdict)
                return await close_after(request, resp) if verdict.close else resp
        try:
            upstream, _ = await self.upstream.send(request, ctx, target, prefix=prefix)
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
            if request.method in _UNSAFE and 200 <= upstream.status < 400 and ctx.policy.cache.enabled:
                await self.storage.invalidate(ctx, headers)
            self.respond.stamp(ctx, headers, outcome)
            return await self.upstream.stream(request, ctx, upstream, headers, None)
        finally:
            upstream.release()

    # ---------------------------------------------------------------- filters

    async def _filter(self, request, ctx: Ctx) -> web.Response | None:
        """The filter chain's answer, or None: the request goes on."""
        policy = ctx.policy
        verdict = self.filters.check(request, ctx, policy)
        if verdict is None and request.method == "POST":  # a form comes with POST
            verify_form = self.filters.form_reader(request, ctx, policy)
            if verify_form is not None:
                # A form answered to a filter (the no-script challenge), read
                # under the body deadlines like any other body.
                await self.upstream.continue_(request)
                limit = self.upstream.body_timeouts.total or self.upstream.body_timeouts.idle or None
                try:
                    verdict = await asyncio.wait_for(verify_form(request, ctx, policy), limit)
                except asyncio.TimeoutError:
                    return await close_after(request, self.respond.error(ctx, 408, "request body timeout", "body-timeout"))
        if verdict is not None:
            return self.respond.refuse(ctx, verdict)
        if request.body_exists:
            ctx.body_max = self.filters.body_limit(policy, self.max_body)
            cl = request.content_length
            if cl is not None and cl > ctx.body_max:
                return self.respond.error(ctx, 413, "request body too large", "body-too-large")
        return None

    async def _gate(self, request, ctx: Ctx) -> web.Response | None:
        """What a request must pass before it may go to the origin: the
        filters' before-origin hooks (every WAF rule, the client's
        concurrency limits). Once passed, passed (``ctx.gated``): the
        phases may ask again on the way."""
        if ctx.gated:
            return None
        if self.upstream.looped(request.headers.getall("Via", ())):
            # A tenant origin that leads back to this node (its public
            # address, a CNAME to the CDN): each lap would hold a slot.
            return self.respond.refuse(ctx, _LOOP)
        verdict = await self.filters.before_origin(request, ctx, ctx.policy, self._share_wait)
        if verdict is not None:
            return self.respond.refuse(ctx, verdict)
        ctx.gated = True
        return None


def _cookies(headers, names: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers.getall("Cookie", ()):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name in names and name not in found:
                found[name] = value
    return found
