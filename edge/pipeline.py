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
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from cachetools import LRUCache
from multidict import CIMultiDict

from edge.admin.control import purge_everywhere
from edge.cache import conditional as cond
from edge.cache import compress as cz
from edge.cache import freshness as fr
from edge.cache import ranges as rgs
from edge.cache import validation as val
from edge.cache.response_policy import (
    browser_cache_control,
    deceptive,
    edge_cache_control,
    edge_lifetime,
    stale_window,
    stale_windows,
)
from edge.cache.key import (
    encoding_bucket,
    host_key,
    normalise_path,
    normalise_query,
    primary_key,
    vary_key,
    vary_names,
)
from edge.cache.purge import PurgeSpec, Target, tag_extra
from edge.cache.store import Hit, Meta, Removal
from edge.cache.collapse import Fill, FillBroken, State, held_bytes
from edge.filters.chain import Verdict
from edge.filters.request_limits import body_limit
from edge.filters.under_attack import CHALLENGE_PATH
from edge.http.slow import BodyTimeout, BodyTimeouts, ClientBodyError, close_after, read_body
from edge.http.codings import CodingError, UnknownCoding, inspection_view
from edge.http.directives import parse_cache_control
from edge.http.headers import HOP_BY_HOP, UNKEYED_REQUEST_FIELDS, connection_tokens, forwardable_name
from edge.geo.client import Trusted, client_address
from edge.observe.metrics import record_request, watch_fills
from edge.origin.interim import ClientRelay
from edge.origin.pool import Failure, OriginError

log = logging.getLogger("edge.pipeline")

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
# Safe to send twice: failover may retry these when they carry no body.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Response fields the edge computes itself, never copies from the origin; and
# the origin's purge tags (read into Meta.extra): for the edge, never clients.
_RECOMPUTED = frozenset({"content-length", "surrogate-key", "cache-tag"})
_VARIANT_SEP = "\x1f"
_ENCODED_SEP = "\x1e"  # a compressed copy of the entry under this key; purges of the URL cover it


class BodyTooLarge(ClientBodyError):
    pass


@dataclass(slots=True)
class Ctx:
    """What the phases learn about one request."""

    rid: str
    start: float
    method: str
    peer: str | None
    tenant: str = "-"
    host: str = "-"
    path: str = "-"
    cache: str = ""
    status: int = 0
    size: int = 0
    body_too_large: bool = False
    origin_time: float = 0.0  # seconds until the origin's response headers (metrics)
    allowlisted: bool = False  # set by the ip_lists filter: later filters (rate limits, WAF) let it pass
    waf: object = None  # the WAF's finding on the request head, added to by the body
    blocked: str | None = None  # "waf:<rule ids>" when the WAF refused (or would, in log mode)
    slot: tuple[str, str] | None = None  # (tenant, client) counted by request_limits' max_concurrent
    body_max: int = 0  # the request body's size limit (tenant's, within the node's)
    body: object = None  # the one reader of the request body, shared by the WAF and the forwarding
    body_timeout: bool = False
    store_key: str = ""  # the key the entry being served was found under
    gated: bool = False  # passed _origin_gate (the WAF's full pass, a concurrency slot)


class Pipeline:
    def __init__(self, state) -> None:
        self.state = state
        cfg = state.config
        self.node = cfg.name
        self.via = f"1.1 {cfg.name}"
        self.max_body = cfg.limits.max_body_size
        self._trusted = Trusted(cfg.trusted_proxies)
        # Only the field the trusted proxies write is read; a client could add the other.
        self._forwarded = cfg.client_address_header == "forwarded"
        self._inflight: dict[str, asyncio.Future] = {}
        self._rid_prefix = f"{os.getpid() & 0xFFFF:04x}{int(time.time()) & 0xFFFFFF:06x}"
        self._rid = itertools.count(1)
        self.collapse_wait = 30.0
        self.fill_buffer = cfg.cache.fill_buffer
        watch_fills(held_bytes)
        self.body_timeouts = BodyTimeouts(cfg.timeouts.body_read, cfg.timeouts.body_total)
        self._limits = next((f for f in state.filters.filters if f.name == "request_limits"), None)
        self._slots = self._limits.slots if self._limits is not None else None
        self._share_wait = cfg.timeouts.origin_queue  # for a client over its share of the origin's connections
        self._background: set[asyncio.Task] = set()  # stale-while-revalidate refreshes
        self._compressing: set[str] = set()  # variant keys being compressed now
        self._no_variant: LRUCache = LRUCache(maxsize=4096)  # (variant key, response time): compressing did not pay
        self._compress_budget = cz.Budget(cfg.cache.compress_budget)
        self._no_fill: dict[str, float] = {}  # key -> until when no background fill is tried

    async def close(self) -> None:
        """Stop background fetches (refreshes, range fills): the node is going."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ entry

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = request.remote
        if self._trusted and peer and self._trusted.contains(peer):
            # Behind a trusted proxy the client is the right-most untrusted hop.
            h = request.headers
            if self._forwarded:
                peer = client_address(peer, (), h.getall("Forwarded", ()), self._trusted)
            else:
                peer = client_address(peer, h.getall("X-Forwarded-For", ()), (), self._trusted)
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
            resp = self._error(ctx, 500, "internal error", "edge-error")
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
        if self._looped(request.headers.getall("Via", ())):
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

    def _looped(self, via: list[str]) -> bool:
        """Whether this node's own Via element (RFC 9110 §7.6.3) is among ``via``."""
        for line in via:
            for element in line.split(","):
                element = element.strip()
                if element == self.via or element.startswith(self.via + " "):
                    return True
        return False

    def _waf_full(self, request, ctx: Ctx, policy, quiet: bool = False):
        """Every WAF rule on the request head before the origin sees it (the
        chain ran only the cheap ones, which is all a cache hit needs).
        ``quiet``: decide only, for a request that is served anyway."""
        waf = self.state.waf
        if waf is None:
            return None
        return waf.check_full(request, ctx, policy, quiet=quiet)

    def _refuse(self, ctx: Ctx, policy, verdict) -> web.Response:
        """A filter's answer: its own body (a challenge page) or the plain
        error text; blocks are counted towards the tenant's security events."""
        events = self.state.events
        if events is not None and verdict.status in _BLOCK_STATUSES:
            if verdict.detail == "filter.waf" and ctx.waf is not None:
                events.record(policy.tenant, policy.filters.events, "waf", ctx.waf.rules, ctx.peer)
            else:
                events.record_verdict(policy.tenant, policy.filters.events, verdict.detail, ctx.peer)
        if verdict.body is None:
            return self._error(ctx, verdict.status, verdict.reason, verdict.detail, verdict.headers)
        ctx.cache = f"{self.node}; detail={verdict.detail}"
        headers = {
            "Cache-Status": ctx.cache,
            "X-Request-Id": ctx.rid,
            "Cache-Control": "no-store",
            "Server": "edge",
            "Content-Type": verdict.content_type or "text/plain; charset=utf-8",
        }
        if verdict.headers:
            headers.update(verdict.headers)
        ctx.size = len(verdict.body)
        return web.Response(status=verdict.status, body=verdict.body, headers=headers)

    def _error(self, ctx: Ctx, status: int, text: str, detail: str, extra: dict | None = None) -> web.Response:
        ctx.cache = f"{self.node}; fwd=miss; detail={detail}" if status >= 500 else f"{self.node}; detail={detail}"
        headers = {
            "Cache-Status": ctx.cache,
            "X-Request-Id": ctx.rid,
            "Cache-Control": "no-store",
            "Server": "edge",
        }
        if extra:
            headers.update(extra)
        body = f"{status} {text}\nrequest id: {ctx.rid}\n".encode()
        ctx.size = len(body)
        resp = web.Response(status=status, body=body, headers=headers, content_type="text/plain")
        if status in (400, 413, 505):
            # The connection may hold an unread body or be out of sync.
            resp.force_close()
        return resp

    # --------------------------------------------------------------- identify

    async def _handle(self, request: web.BaseRequest, ctx: Ctx) -> web.StreamResponse:
        if request.version.major != 1:
            return self._error(ctx, 505, "HTTP version not supported", "bad-version")
        raw = request.raw_path
        if "#" in raw:
            # A fragment never belongs in a request target (RFC 9112 §3.2).
            return self._error(ctx, 400, "fragment in request target", "bad-target")
        hosts = request.headers.getall("Host", ())
        if raw[:1] != "/":
            # Absolute-form target: its authority replaces Host (RFC 9112 §3.2.2).
            scheme, sep, rest = raw.partition("://")
            if not sep or scheme.lower() not in ("http", "https"):
                return self._error(ctx, 400, "bad request target", "bad-target")
            authority, slash, tail = rest.partition("/")
            raw = "/" + tail
            hosts = (authority,)
        if len(hosts) != 1:
            return self._error(ctx, 400, "exactly one Host header is required", "bad-host")
        host = host_key(hosts[0])
        if host is None:
            return self._error(ctx, 400, "malformed Host header", "bad-host")
        ctx.host = host
        policy = self.state.policies.current.resolve(host)
        if policy is None:
            return self._error(ctx, 421, "this node serves no site for that host", "unknown-host")
        ctx.tenant = policy.tenant

        raw_path, _, raw_query = raw.partition("?")
        path = normalise_path(raw_path)
        if path is None:
            return self._error(ctx, 400, "malformed path", "bad-path")
        ctx.path = path

        # ----------------------------------------------------------- filter
        verdict = self.state.filters.check(request, ctx, policy)
        if verdict is None and ctx.path == CHALLENGE_PATH and request.method == "POST" and self.state.under_attack:
            # A no-script challenge answer posted as a form, read under the
            # body deadlines like any other body.
            await self._continue(request)
            limit = self.body_timeouts.total or self.body_timeouts.idle or None
            try:
                verdict = await asyncio.wait_for(self.state.under_attack.verify_form(request, ctx, policy), limit)
            except asyncio.TimeoutError:
                return await close_after(request, self._error(ctx, 408, "request body timeout", "body-timeout"))
        if verdict is not None:
            return self._refuse(ctx, policy, verdict)

        method = request.method
        cl = request.content_length
        ctx.body_max = body_limit(policy.filters.request_limits, self.max_body)
        if cl is not None and cl > ctx.body_max:
            return self._error(ctx, 413, "request body too large", "body-too-large")

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

        # RFC 9111 §5.2.1.4, §5.4: the client asks us to validate first.
        req_cc_raw = req_headers.get("Cache-Control")
        req_cc = None
        if req_cc_raw is None:
            must_forward = "Pragma" in req_headers and "no-cache" in req_headers["Pragma"]
        else:
            req_cc = parse_cache_control(req_cc_raw)
            must_forward = req_cc.has("no-cache") or req_cc.max_age == 0
            if not req_cc:
                req_cc = None
        if must_forward and policy.cache.client_no_cache == "ignore":
            # The tenant shields its origin from forced reloads: the client's
            # freshness demands are not obeyed (only-if-cached still is).
            must_forward = False
            req_cc = _ONLY_IF_CACHED if req_cc is not None and "only-if-cached" in req_cc else None

        stale: Hit | None = None  # a stored entry to validate (RFC 9111 §4.3)
        if not must_forward:
            hit, variant = await self._lookup(key, req_headers)
            if hit is not None:
                # --------------------------------------------------- decide
                now = time.time()
                meta = hit.meta
                age = fr.current_age(meta.initial_age, meta.response_time, now)
                if req_cc is None:
                    if age < meta.lifetime:
                        return await self._serve_hit(request, ctx, policy, hit, age)
                    fwd = "stale"
                else:
                    # RFC 9111 §5.2.1: max-age, min-fresh, max-stale.
                    fwd = cond.reuse(req_cc, age, meta.lifetime, meta.headers)
                    if fwd is None:
                        return await self._serve_hit(request, ctx, policy, hit, age)
                if fwd == "stale" and (req_cc is None or not ("max-age" in req_cc or "min-fresh" in req_cc)):
                    # RFC 5861 §3: serve it stale, refresh once in the background.
                    window = stale_window(meta.extra, "swr", policy.cache.stale_while_revalidate)
                    if window and age - meta.lifetime < window:
                        self._refresh_later(request, ctx, policy, key, target, meta)
                        status_value = f"{self.node}; hit; ttl={int(meta.lifetime) - int(age)}; detail=stale-while-revalidate"
                        return await self._serve_hit(request, ctx, policy, hit, age, status_value=status_value)
                stale = await self._keep_stale(hit, policy, req_headers)
            else:
                fwd = "vary-miss" if variant else "uri-miss"
        else:
            fwd = "request"
            if not (req_cc is not None and "only-if-cached" in req_cc):
                # §5.2.1.4: validate what is stored rather than refetch it.
                hit, _ = await self._lookup(key, req_headers)
                if hit is not None:
                    stale = await self._keep_stale(hit, policy, req_headers)

        if req_cc is not None and "only-if-cached" in req_cc:
            # RFC 9111 §5.2.1.7: nothing usable stored, and the origin is off limits.
            if stale is not None and stale.chunks is not None:
                await stale.chunks.aclose()
            resp = self._error(ctx, 504, "not in cache (only-if-cached)", "only-if-cached")
            ctx.cache = resp.headers["Cache-Status"] = f"{self.node}; detail=only-if-cached"
            return resp

        # ------------------------------------------------------------ fetch
        if method == "GET" and stale is None and "Range" in req_headers and fwd != "request":
            # The client's range goes to the origin as asked; the whole
            # object is fetched for the cache beside it, once per key: both
            # only when the client may reach the origin at all.
            verdict = await self._origin_gate(request, ctx, policy)
            if verdict is not None:
                return self._refuse(ctx, policy, verdict)
            self._refresh_later(request, ctx, policy, key, target, None)
            return await self._pass(request, ctx, policy, path, raw_query, "range", gated=True)
        if method == "GET" and fwd != "request":
            waiter = self._inflight.get(key)
            if waiter is not None:
                if stale is not None and stale.chunks is not None:
                    await stale.chunks.aclose()
                stale = None
                outcome = None
                until = asyncio.get_running_loop().time() + self.collapse_wait
                try:
                    outcome = await asyncio.wait_for(asyncio.shield(waiter), self.collapse_wait)
                except asyncio.TimeoutError:
                    pass
                if isinstance(outcome, Fill):
                    # A large body on its way: read along from its first byte.
                    resp = await self._serve_fill(request, ctx, policy, key, outcome, req_cc, until)
                    if resp is not None:
                        return resp
                    outcome = _RELEASED if outcome.released else None
                hit, _ = await self._lookup(key, req_headers)
                if hit is not None:
                    now = time.time()
                    age = fr.current_age(hit.meta.initial_age, hit.meta.response_time, now)
                    if (
                        age < hit.meta.lifetime
                        if req_cc is None
                        else cond.reuse(req_cc, age, hit.meta.lifetime, hit.meta.headers) is None
                    ):
                        return await self._serve_hit(request, ctx, policy, hit, age, collapsed=True)
                    stale = await self._keep_stale(hit, policy, req_headers)
                return await self._miss(request, ctx, policy, key, target, fwd, None, outcome is not _RELEASED, stale)
            # The gate (and a wait for the client's share) before leading:
            # others' misses for this key must not wait on this client's turn.
            verdict = await self._origin_gate(request, ctx, policy)
            if verdict is not None:
                await self._close_stale(stale)
                return self._refuse(ctx, policy, verdict)
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

    async def _lookup(self, key: str, req_headers) -> tuple[Hit | None, bool]:
        """Returns the stored entry for this request, and whether the URL has
        variants (so a miss is a vary-miss)."""
        store = self.state.store
        hit = store.get_now(key)
        if hit is None:
            hit = await store.get(key)
            if hit is None:
                return None, False
        meta = hit.meta
        if meta.status == 0:  # a Vary marker: RFC 9111 §4.1 secondary key
            vkey = key + _VARIANT_SEP + vary_key(meta.vary, req_headers)
            hit = store.get_now(vkey) or await store.get(vkey)
            if hit is not None:
                hit.key = vkey
            return hit, True
        hit.key = key
        return hit, False

    # ---------------------------------------------------------------- respond

    async def _serve_hit(
        self,
        request: web.BaseRequest,
        ctx: Ctx,
        policy,
        hit: Hit,
        age: float,
        collapsed: bool = False,
        status_value: str | None = None,
        cookies: list[str] | None = None,
    ) -> web.StreamResponse:
        meta = hit.meta
        rh = request.headers
        if meta.extra.get("cz") and request.method == "GET" and "Range" not in rh and (
            "no-transform" not in rh.get("Cache-Control", "")  # RFC 9111 §5.2.1.6
        ):
            coding = encoding_bucket(rh.get("Accept-Encoding"))
            if coding != "identity":
                encoded = await self._encoded(policy, hit, coding)
                if encoded is not None:
                    hit = encoded
                    meta = hit.meta
        if status_value is None:
            # Age + ttl = lifetime, in the whole seconds the Age header shows.
            ttl = int(meta.lifetime) - int(age)
            status_value = f"{self.node}; hit; ttl={ttl}; collapsed" if collapsed else f"{self.node}; hit; ttl={ttl}"
        ctx.cache = status_value
        if _has_preconditions(rh):
            # RFC 9110 §13.2.2, RFC 9111 §4.3.2: preconditions against the stored response.
            outcome = cond.evaluate(request.method, rh, _template(meta, policy, ctx.path), status=meta.status, now=meta.response_time)
            if outcome is not None:
                if hit.chunks is not None:
                    await hit.chunks.aclose()
                return self._conditional(ctx, meta, policy, age, status_value, outcome)
        if "Range" in rh and meta.status == 200 and request.method == "GET":
            resp = await self._ranged(request, ctx, hit, _template(meta, policy, ctx.path), age, status_value)
            if resp is not None:
                return resp
        if hit.body is not None:
            ctx.size = len(hit.body)
            # Response copies the template once; per-request fields go on the copy.
            resp = web.Response(status=meta.status, body=hit.body, headers=_template(meta, policy, ctx.path))
        else:
            resp = web.StreamResponse(status=meta.status, headers=_template(meta, policy, ctx.path))
            resp.content_length = meta.size
        for cookie in cookies or ():
            resp.headers.add("Set-Cookie", cookie)
        headers = resp.headers
        headers["Age"] = fr.age_header_value(age)
        headers.add("Cache-Status", status_value)
        headers["X-Request-Id"] = ctx.rid
        if hit.body is not None:
            return resp
        assert hit.chunks is not None
        try:
            await resp.prepare(request)
            if request.method != "HEAD":  # RFC 9110 §9.3.2: HEAD gets no body
                async for chunk in hit.chunks:
                    await resp.write(chunk)
                    ctx.size += len(chunk)
        finally:
            await hit.chunks.aclose()
        await resp.write_eof()
        return resp

    async def _encoded(self, policy, hit: Hit, coding: str) -> Hit | None:
        """The stored response compressed with ``coding``: the variant made
        before for this very response, or made now (once: concurrent
        requests get identity meanwhile) and stored beside it. None: serve
        identity (too small or large, no gain, being compressed, or the
        worker's compression budget spent by others)."""
        key = getattr(hit, "key", None)
        if key is None:
            return None
        meta = hit.meta
        vkey = key + _ENCODED_SEP + coding
        if (vkey, meta.response_time) in self._no_variant:
            return None  # tried for this very response: it does not pay
        found = await self._stored_variant(vkey, meta)
        if found is not None:
            await self._close_stale(hit)
            return found
        size = len(hit.body) if hit.body is not None else meta.size
        if vkey in self._compressing or not cz.MIN_SIZE <= size <= cz.MAX_SIZE:
            return None
        cost = cz.cost(size, coding)
        if not self._compress_budget.take(cost):
            return None  # a later hit compresses it, when the others are done
        self._compressing.add(vkey)
        try:
            if not await self._store_variant(hit, vkey, coding):
                # Remembered here too: the mark on a disk entry's metadata
                # is lost with the copy read for this hit.
                self._no_variant[(vkey, meta.response_time)] = True
                return None
            found = await self._stored_variant(vkey, meta)
            if found is not None:
                await self._close_stale(hit)
            return found
        except Exception:
            log.exception("compressing a stored response failed; identity served")
            return None
        finally:
            self._compressing.discard(vkey)
            self._compress_budget.give(cost)

    async def _stored_variant(self, vkey: str, meta: Meta) -> Hit | None:
        """The variant stored under ``vkey`` if it was made from the response
        ``meta`` describes (an older one is left to be replaced)."""
        store = self.state.store
        found = store.get_now(vkey)
        if found is None and store.disk is not None:
            found = await store.get(vkey)
        if found is None:
            return None
        if found.meta.extra.get("of") != meta.response_time:
            await self._close_stale(found)
            return None
        found.key = vkey
        return found

    async def _store_variant(self, hit: Hit, vkey: str, coding: str) -> bool:
        """Streams the stored body of ``hit`` through the coder into the
        store under ``vkey``: in memory while small, else to the disk tier.
        False when nothing was stored: no gain (the entry is marked, not to
        be tried again), or the entry was replaced or purged meanwhile."""
        meta = hit.meta
        store = self.state.store
        size = len(hit.body) if hit.body is not None else meta.size
        chunks = None
        if hit.body is not None:
            source = hit.body
        else:
            # A reader of its own: the stream of ``hit`` stays whole, for
            # identity if compressing fails or does not pay.
            again = await store.get(hit.key)
            if again is None or again.meta.response_time != meta.response_time:
                await self._close_stale(again)
                return False
            chunks = again.chunks
            source = again.body if again.body is not None else chunks
        extra = {"of": meta.response_time}
        if "tags" in meta.extra:
            extra["tags"] = meta.extra["tags"]
        # Headers once the compressed length is known; nothing rendered for identity.
        vmeta = dataclasses.replace(meta, headers=(), size=0, extra=extra, template=None, template_version="")
        # Compressed bytes as many as the identity ones do not pay: the sink gives up.
        sink = _Sink(store, vkey, vkey, vmeta, (), size - 1, None)
        encoded = cz.encode(source, coding)
        try:
            async for data in encoded:
                await sink.feed(data)
                if sink.dead:
                    break
        except BaseException:
            await sink.abort()
            raise
        finally:
            await encoded.aclose()
            if chunks is not None:
                await chunks.aclose()
        if sink.size >= size:
            meta.extra["cz"] = 0  # incompressible: never tried again for this entry
            return False
        if sink.dead:
            return False  # too large for memory, and there is no disk tier
        vmeta.headers = tuple(cz.variant_headers(meta.headers, coding, sink.size))
        await sink.commit()
        return True

    async def _ranged(self, request, ctx: Ctx, hit: Hit, tpl, age: float, status_value: str) -> web.StreamResponse | None:
        """RFC 9110 §14: a 206 or 416 cut from the stored 200; None: serve it whole."""
        rh = request.headers
        fields = rh.getall("Range", ())
        if len(fields) != 1:  # a singleton field (§14.2): ignored when repeated
            return None
        if not rgs.if_range_allows(rh.get("If-Range"), tpl.get("ETag"), tpl.get("Last-Modified"), tpl.get("Date")):
            return None
        size = len(hit.body) if hit.body is not None else hit.meta.size
        rng = rgs.parse_range(fields[0], size)
        if rng.outcome is rgs.Outcome.IGNORE:
            return None
        if rng.outcome is rgs.Outcome.UNSATISFIABLE:
            await self._close_stale(hit)
            headers = CIMultiDict(tpl)
            headers.popall("Content-Type", None)
            headers.update(rgs.unsatisfiable_headers(size))
            headers["Age"] = fr.age_header_value(age)
            ctx.cache = headers["Cache-Status"] = status_value + "; detail=range-unsatisfiable"
            headers["X-Request-Id"] = ctx.rid
            return web.Response(status=416, headers=headers)
        ctype = tpl.get("Content-Type")
        source = None
        if len(rng.ranges) == 1:
            first, last = rng.ranges[0]
            content_range = rgs.single_part_headers(first, last, size)["Content-Range"]
            if hit.body is not None:
                resp = web.Response(status=206, body=hit.body[first : last + 1], headers=tpl)
            else:
                resp = web.StreamResponse(status=206, headers=tpl)
                resp.content_length = last - first + 1
                source = rgs.slice_chunks(hit.chunks, first, last)
            resp.headers["Content-Range"] = content_range
        elif hit.body is not None:
            mtype, payload = rgs.multipart(rng.ranges, hit.body, ctype, size)
            resp = web.Response(status=206, body=payload, headers=tpl)
            resp.headers["Content-Type"] = mtype
        else:
            boundary = rgs.new_boundary()
            resp = web.StreamResponse(status=206, headers=tpl)
            resp.headers["Content-Type"] = rgs.multipart_content_type(boundary)
            resp.content_length = rgs.multipart_length(rng.ranges, ctype, size, boundary)
            source = rgs.multipart_chunks(rng.ranges, hit.chunks, ctype, size, boundary)
        resp.headers["Age"] = fr.age_header_value(age)
        ctx.cache = status_value
        resp.headers.add("Cache-Status", status_value)
        resp.headers["X-Request-Id"] = ctx.rid
        if source is None:
            ctx.size = resp.content_length or 0
            return resp
        try:
            await resp.prepare(request)
            async for chunk in source:
                await resp.write(chunk)
                ctx.size += len(chunk)
        finally:
            await source.aclose()  # closes the stored body's stream as well
        await resp.write_eof()
        return resp

    def _conditional(self, ctx: Ctx, meta: Meta, policy, age: float, status_value: str, status: int) -> web.Response:
        """304 or 412 for a conditional request answered from the cache."""
        tpl = _template(meta, policy, ctx.path)
        headers: CIMultiDict = CIMultiDict()
        if status == 304:
            # RFC 9110 §15.4.5: the fields a 200 would have carried; Last-Modified
            # only without an ETag (to guide cache updates).
            names = _NOT_MODIFIED_FIELDS if "ETag" in tpl else _NOT_MODIFIED_FIELDS + ("Last-Modified",)
            for name in names:
                for value in tpl.getall(name, ()):
                    headers.add(name, value)
            body = None
        else:
            status_value += "; detail=precondition-failed"
            ctx.cache = status_value
            headers["Content-Type"] = "text/plain"
            body = f"412 precondition failed\nrequest id: {ctx.rid}\n".encode()
            ctx.size = len(body)
        for value in tpl.getall("Via", ()):
            headers.add("Via", value)
        headers["Server"] = tpl.get("Server", "edge")
        headers["Age"] = fr.age_header_value(age)
        headers["Cache-Status"] = status_value
        headers["X-Request-Id"] = ctx.rid
        return web.Response(status=status, body=body, headers=headers)

    # ------------------------------------------------------------------ fetch

    def _trusted_peer(self, peer: str | None) -> bool:
        return bool(self._trusted) and bool(peer) and self._trusted.contains(peer)

    def _origin_headers(
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
            if lname == "x-forwarded-proto" and not self._trusted_peer(request.remote):
                continue
            out.add(name, value)
        peer = request.remote or ""
        if self._trusted_peer(peer):
            if self._forwarded:
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

    async def _continue(self, request: web.BaseRequest) -> None:
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            # The client waits for this before sending its body (RFC 9110 §10.1.1).
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _body_head(self, request: web.BaseRequest, ctx: Ctx, limit: int) -> bytes:
        """Up to ``limit`` bytes of the request body (more when a chunk runs
        over), read before anything goes to the origin; the rest follows
        in ``_request_body``."""
        await self._continue(request)
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

    async def _request_body(self, request: web.BaseRequest, ctx: Ctx, prefix: bytes | None = None) -> AsyncIterator[bytes]:
        # Counted while streaming: a chunked upload cannot announce its size.
        seen = 0
        if prefix is None:
            await self._continue(request)
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

    async def _send(self, request, ctx, policy, target, keyed=(), conditional=None, whole=False, prefix=None):
        headers = self._origin_headers(request, ctx, keyed, conditional, whole)
        has_body = request.body_exists
        body = self._request_body(request, ctx, prefix) if has_body else None
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
            relay=ClientRelay(request, self.via),  # interim (1xx) responses: to this client alone, never stored
        )
        ctx.origin_time = time.monotonic() - sent
        return answer

    def _response_headers(self, upstream: aiohttp.ClientResponse) -> CIMultiDict:
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

    async def _pass(self, request, ctx, policy, path, raw_query, why: str, gated: bool = False) -> web.StreamResponse:
        """Forward without the cache (methods it does not store, bypass rules)."""
        target = path + "?" + raw_query if raw_query else path
        ctx.cache = f"{self.node}; fwd={why}"
        if not gated:
            verdict = await self._origin_gate(request, ctx, policy)
            if verdict is not None:
                return self._refuse(ctx, policy, verdict)
        prefix = None  # the body's head, when the WAF read it first
        waf = self.state.waf
        if waf is not None and request.body_exists and policy.filters.waf.active and policy.filters.waf.inspect_body:
            # The WAF reads the head of the body before the origin sees any of it.
            try:
                prefix = await self._body_head(request, ctx, policy.filters.waf.max_body)
            except BodyTooLarge:
                return self._error(ctx, 413, "request body too large", "body-too-large")
            except BodyTimeout:
                return await close_after(request, self._error(ctx, 408, "request body timeout", "body-timeout"))
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
                    return await close_after(request, self._error(ctx, 415, str(exc), "unsupported-body-encoding"))
                else:
                    return await close_after(request, self._error(ctx, 400, str(exc), "bad-body-encoding"))
            verdict = await waf.check_body(request, ctx, policy, view, ctx.waf)
            if verdict is not None:
                return self._refuse(ctx, policy, verdict)
        try:
            upstream, _ = await self._send(request, ctx, policy, target, prefix=prefix)
        except (OriginError, ClientBodyError) as exc:
            # The client's oversized or stalled body aborts the upload; the
            # origin is not to blame.
            if ctx.body_too_large:
                return self._error(ctx, 413, "request body too large", "body-too-large")
            if ctx.body_timeout:
                return await close_after(request, self._error(ctx, 408, "request body timeout", "body-timeout"))
            return self._origin_error(ctx, exc)
        try:
            headers = self._response_headers(upstream)
            if request.method in _UNSAFE and 200 <= upstream.status < 400 and policy.cache.enabled:
                await self._invalidate(ctx, policy, path, raw_query, headers)
            headers["Cache-Status"] = ctx.cache
            headers["X-Request-Id"] = ctx.rid
            return await self._stream(request, ctx, upstream, headers, None)
        finally:
            upstream.release()

    async def _invalidate(self, ctx: Ctx, policy, path: str, raw_query: str, headers) -> None:
        """RFC 9111 §4.4: a successful unsafe request invalidates what is
        stored for its URL and for same-origin Location / Content-Location
        (all Vary variants; every worker's memory tier and the disk tier,
        before the answer goes out)."""
        targets = {(path, raw_query)}
        for name in ("Location", "Content-Location"):
            ref = headers.get(name)
            found = _same_origin(ref, ctx.host, path) if ref else None
            if found is not None:
                targets.add(found)
        urls = []
        for target_path, target_query in targets:
            opts = policy.request_decision(target_path).key
            query = normalise_query(target_query, opts) if target_query else ""
            urls.append(Target(ctx.host, target_path, query))
        try:
            await purge_everywhere(self.state.control, self.state.store, PurgeSpec(policy.tenant, urls=tuple(urls)))
        except Exception:
            log.exception("invalidation after %s failed (request %s)", ctx.method, ctx.rid)

    def _origin_error(self, ctx: Ctx, exc: OriginError) -> web.Response:
        if exc.failure is Failure.BUSY:
            # This node is saturated, not the origin: worth a retry soon.
            return self._error(ctx, 503, exc.failure.text, exc.failure.value, _RETRY_SOON)
        return self._error(ctx, exc.failure.status, exc.failure.text, exc.failure.value)

    async def _miss(
        self, request, ctx, policy, key, target, fwd, done, may_store: bool = True, stale: Hit | None = None
    ) -> web.StreamResponse:
        """Fetch from the origin; with ``stale`` (a stored entry that has a
        validator) the fetch is a validation (RFC 9111 §4.3.1), and a failed
        fetch may be answered with it (RFC 5861 stale-if-error)."""
        verdict = await self._origin_gate(request, ctx, policy)
        if verdict is not None:
            return self._refuse(ctx, policy, verdict)
        request_time = time.time()
        keyed = policy.request_decision(ctx.path).key.headers
        conditional = None
        if stale is not None and val.has_validator(stale.meta.headers):
            conditional = val.validator_headers(stale.meta.headers)
        try:
            try:
                upstream, _ = await self._send(request, ctx, policy, target, keyed, conditional, whole=True)
            except OriginError as exc:
                if stale is not None and self._may_serve_on_error(stale, policy, request.headers):
                    hit, stale = stale, None
                    return await self._serve_on_error(request, ctx, policy, hit, fwd, None)
                return self._origin_error(ctx, exc)
            if conditional is not None and upstream.status == 304 and not _selects(stale.meta, upstream.headers):
                # RFC 9111 §4.3.4: the 304 names another representation than
                # the one stored, so it updates nothing: fetch it whole.
                upstream.release()
                await self._close_stale(stale)
                stale = conditional = None
                request_time = time.time()
                try:
                    upstream, _ = await self._send(request, ctx, policy, target, keyed, whole=True)
                except OriginError as exc:
                    return self._origin_error(ctx, exc)
            try:
                status = upstream.status
                if stale is not None and status in _ERROR_STATUSES and self._may_serve_on_error(stale, policy, request.headers):
                    hit, stale = stale, None
                    return await self._serve_on_error(request, ctx, policy, hit, fwd, status)
                if conditional is not None and status == 304:
                    hit, stale = stale, None
                    return await self._revalidated(request, ctx, policy, key, fwd, done, upstream, request_time, hit)
                if stale is not None and request.method == "HEAD" and status == 200:
                    # RFC 9111 §4.3.5: a HEAD answer freshens (or invalidates)
                    # the stored GET response it describes.
                    hit, stale = stale, None
                    await self._close_stale(hit)
                    await self._head_update(request, ctx, policy, key, upstream, request_time, hit)
                    return await self._on_response(request, ctx, policy, key, fwd, done, upstream, request_time, False)
                await self._close_stale(stale)
                stale = None
                return await self._on_response(request, ctx, policy, key, fwd, done, upstream, request_time, may_store)
            finally:
                upstream.release()
        finally:
            await self._close_stale(stale)

    async def _close_stale(self, hit: Hit | None) -> None:
        if hit is not None and hit.chunks is not None:
            chunks, hit.chunks = hit.chunks, None
            await chunks.aclose()

    async def _keep_stale(self, hit: Hit, policy, req_headers) -> Hit | None:
        """``hit`` when it may still help: it can be validated (an ETag or a
        Last-Modified, RFC 9111 §4.3.1) or served if the origin fails
        (stale-if-error); else its body stream is closed."""
        meta = hit.meta
        if meta.status != 0 and (
            val.has_validator(meta.headers)
            or stale_window(meta.extra, "sie", policy.cache.stale_if_error)
            or _request_sie(req_headers)
        ):
            return hit
        await self._close_stale(hit)
        return None

    def _may_serve_on_error(self, hit: Hit, policy, req_headers) -> bool:
        meta = hit.meta
        window = stale_window(meta.extra, "sie", policy.cache.stale_if_error)
        if not (meta.extra.get("nostale") or meta.extra.get("origin_only")):
            # RFC 5861 §4: the client may accept staleness on error too
            # (not where s-maxage made the response proxy-revalidate).
            window = max(window, _request_sie(req_headers))
        if not window:
            return False
        age = fr.current_age(meta.initial_age, meta.response_time, time.time())
        return age - meta.lifetime < window

    async def _serve_on_error(self, request, ctx, policy, hit: Hit, fwd: str, status: int | None) -> web.StreamResponse:
        """RFC 5861 §4: the origin failed; the stale entry answers instead."""
        meta = hit.meta
        age = fr.current_age(meta.initial_age, meta.response_time, time.time())
        got = f"; fwd-status={status}" if status is not None else ""
        status_value = f"{self.node}; fwd={fwd}{got}; ttl={int(meta.lifetime) - int(age)}; detail=stale-if-error"
        return await self._serve_hit(request, ctx, policy, hit, age, status_value=status_value)

    def _refresh_later(self, request, ctx: Ctx, policy, key: str, target: str, meta: Meta | None) -> None:
        """One background request refreshes a stale entry (RFC 5861 §3), or
        (``meta`` None) fetches a whole object a range request missed;
        requests meanwhile are served as if it were not running."""
        if key in self._inflight or len(self._background) >= _MAX_BACKGROUND:
            return  # under way already, or enough fetches in the background
        now = time.monotonic()
        until = self._no_fill.get(key)
        if until is not None:
            if until > now:
                return  # the origin said lately that this object is not to be stored
            del self._no_fill[key]
        rh = request.headers
        conn = rh.getall("Connection", ())
        if (
            "Authorization" in rh
            or "no-store" in ", ".join(rh.getall("Cache-Control", ())).lower()
            or (conn and connection_tokens(conn) - _CONNECTION_OPTIONS)
        ):
            return  # its answer could not be shared: nothing to fetch for the cache
        if self._waf_full(request, ctx, policy, quiet=True) is not None:
            return  # this client's headers may not go to the origin
        done = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        keyed = policy.request_decision(ctx.path).key.headers
        conditional = val.validator_headers(meta.headers) if meta is not None and val.has_validator(meta.headers) else None
        # Everything taken from the request now: it is gone once its answer
        # is sent. The client's own preconditions stay behind: the edge asks
        # for what it stores, not for what this client has.
        headers = self._origin_headers(request, ctx, keyed, conditional, whole=True, own_conditionals=True)
        snapshot = _Snapshot(request)
        task = asyncio.ensure_future(self._refresh(snapshot, ctx, policy, key, target, meta, headers, done, conditional))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh(self, request, ctx: Ctx, policy, key, target, meta: Meta | None, headers, done,
                       conditional: dict | None) -> None:
        bg = Ctx(ctx.rid + "-r", time.monotonic(), "GET", ctx.peer, ctx.tenant, ctx.host, ctx.path)
        try:
            request_time = time.time()
            try:
                upstream, _ = await self.state.origins.send(
                    policy.origins, policy.failover, "GET", target, headers, ctx.host, None, True
                )
            except OriginError as exc:
                log.info("background refresh of %s%s failed: %s", ctx.host, ctx.path, exc)
                return
            try:
                if upstream.status == 304:
                    if meta is not None and conditional and _selects(meta, upstream.headers):
                        await self._freshen(request, policy, key, upstream, request_time, meta, ctx.path)
                    return
                if upstream.status in _ERROR_STATUSES:
                    return
                if not await self._store_only(request, bg, policy, key, upstream, request_time, done):
                    if len(self._no_fill) >= _MAX_BACKGROUND * 64:
                        self._no_fill.clear()
                    self._no_fill[key] = time.monotonic() + _NO_FILL_SECONDS
            finally:
                upstream.release()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background refresh failed (request %s)", ctx.rid)
        finally:
            if self._inflight.get(key) is done:
                del self._inflight[key]
            if not done.done():
                done.set_result(None)

    async def _revalidated(self, request, ctx, policy, key, fwd, done, upstream, request_time, hit: Hit) -> web.StreamResponse:
        """The origin's 304 for a stored entry: freshen it (RFC 9111 §4.3.4,
        §3.2) without touching its body, and serve it."""
        meta, cookies = await self._freshen(request, policy, key, upstream, request_time, hit.meta, ctx.path)
        if done is not None and not done.done():
            done.set_result(None)  # waiters find the freshened entry
        ttl = int(meta.lifetime) - int(meta.initial_age)
        status_value = f"{self.node}; fwd={fwd}; fwd-status=304; stored; ttl={ttl}"
        hit.meta = meta
        if policy.cache.strip_set_cookie:
            cookies = []
        return await self._serve_hit(request, ctx, policy, hit, meta.initial_age, status_value=status_value, cookies=cookies)

    async def _freshen(self, request, policy, key, upstream, request_time, old: Meta, path: str) -> tuple[Meta, list[str]]:
        """The stored entry ``old`` updated by a 304 (or a HEAD's 200) and
        written back; the 304's Set-Cookie lines, which belong to this client
        alone, are returned apart."""
        response_time = time.time()
        fresh = self._response_headers(upstream)
        if "Server" not in upstream.headers:
            fresh.popall("Server", None)  # the edge's stand-in, not the origin's word
        cookies = fresh.popall("Set-Cookie", [])
        headers = CIMultiDict(val.updated_headers(old.headers, fresh))
        settings = policy.cache
        cc, targeted = edge_cache_control(headers, settings.targeted_fields)
        decision = policy.response_decision(path, headers.get("Content-Type"))
        seconds, source = _lifetime(old.status, headers, cc, decision, settings, response_time, targeted)
        # §4.2.3 with the 304's Date and Age: the validation made it new.
        initial_age = fr.initial_age(
            date=fresh.get("Date"), age=upstream.headers.get("Age"), request_time=request_time, response_time=response_time
        )
        for name in fr.private_fields(cc) + fr.no_cache_fields(cc):
            headers.popall(name, None)
        extra = {k: v for k, v in old.extra.items() if k not in _STALE_KEYS}
        extra.update(stale_windows(cc))
        meta = Meta(
            status=old.status,
            headers=tuple(headers.items()),
            request_time=request_time,
            response_time=response_time,
            initial_age=initial_age,
            lifetime=seconds,
            size=old.size,
            vary=old.vary,
            detail=source,
            extra=extra,
        )
        store_key = key + _VARIANT_SEP + vary_key(old.vary, request.headers) if old.vary else key
        store = self.state.store
        new_vary = vary_names(", ".join(headers.getall("Vary", ())) or None) or ()
        new_tags = tag_extra(upstream.headers).get("tags")
        if (
            "no-store" in cc
            or cc.field_names("private") == ()
            or tuple(new_vary) != tuple(old.vary)
            or (new_tags is not None and new_tags != old.extra.get("tags"))
        ):
            # The origin withdrew consent to storing (§3), or changed how
            # the entry is keyed or tagged: served once, then fetched anew.
            await store.delete(store_key, Removal.INVALIDATION)
        else:
            # Only if it is still the entry that was validated (another
            # request may have replaced it with a new body meanwhile).
            await store.update(store_key, meta, expected=old.response_time)
        return meta, cookies

    async def _head_update(self, request, ctx, policy, key, upstream, request_time, hit: Hit) -> None:
        """RFC 9111 §4.3.5: a 200 to HEAD updates the stored GET response
        when it describes the same representation, else invalidates it."""
        old = hit.meta
        stored = CIMultiDict(old.headers)
        got = upstream.headers
        same = True
        for name in ("ETag", "Last-Modified"):
            if name in got and name in stored and got[name] != stored[name]:
                same = False
        if upstream.content_length is not None and old.status == 200 and upstream.content_length != old.size:
            same = False
        if same:
            await self._freshen(request, policy, key, upstream, request_time, old, ctx.path)
        else:
            store_key = key + _VARIANT_SEP + vary_key(old.vary, request.headers) if old.vary else key
            await self.state.store.delete(store_key, Removal.INVALIDATION)

    def _store_decision(self, request, ctx, policy, upstream, request_time, may_store: bool) -> _Decision:
        """Whether and how a response is stored (RFC 9111 §3 and the
        tenant's rules), and the headers the client gets."""
        response_time = time.time()
        headers = self._response_headers(upstream)
        status = upstream.status
        settings = policy.cache
        cc, targeted = edge_cache_control(headers, settings.targeted_fields)
        client_cc = cc
        if targeted:
            client_cc = parse_cache_control(", ".join(headers.getall("Cache-Control", ())) or None)
        content_type = headers.get("Content-Type")
        decision = policy.response_decision(ctx.path, content_type)
        clen = upstream.content_length
        req_cc_raw = request.headers.get("Cache-Control")

        reason = fr.storable(
            method=request.method,
            status=status,
            request_cc=parse_cache_control(req_cc_raw) if req_cc_raw else _NO_CC,
            response_cc=cc,
            has_authorization="Authorization" in request.headers,
            has_set_cookie="Set-Cookie" in headers,
            strip_set_cookie=settings.strip_set_cookie,
            vary=", ".join(headers.getall("Vary", ())) or None,
            has_expires="Expires" in headers and not targeted,
        )
        if reason is None and decision.bypass:
            reason = fr.NoStore.POLICY
        if reason is None and deceptive(ctx.path, content_type, cc):
            reason = fr.NoStore.DECEPTION
        if reason is None and clen is not None:
            store = self.state.store
            if clen > settings.max_object_size or clen > store.max_memory_object and not store.can_stream:
                reason = fr.NoStore.TOO_LARGE
        if reason is None and not may_store:
            reason = fr.NoStore.FILLING
        if reason is None:
            conn = request.headers.getall("Connection", ())
            if conn and connection_tokens(conn) - _CONNECTION_OPTIONS:
                # Fields the client had removed on the way to the origin may
                # be in the key or select a variant: the answer is not shared.
                reason = fr.NoStore.CONNECTION

        seconds, source = _lifetime(status, headers, cc, decision, settings, response_time, targeted)
        initial_age = fr.initial_age(
            date=headers.get("Date"), age=upstream.headers.get("Age"), request_time=request_time, response_time=response_time
        )
        extra = stale_windows(cc)
        if reason is None and seconds <= initial_age:
            # Stale on arrival (or no-cache): worth storing with a validator
            # (validation, RFC 9111 §4.3) or a stale-if-error window.
            if "ETag" in headers or "Last-Modified" in headers:
                reason = fr.worth_storing(
                    lifetime=fr.Lifetime(seconds, source), age=initial_age, response_cc=cc, has_validator=True
                )
            elif not (
                stale_window(extra, "sie", settings.stale_if_error)
                or stale_window(extra, "swr", settings.stale_while_revalidate) > initial_age - seconds
            ):
                reason = fr.NoStore.NO_LIFETIME

        # What this client is told about caching; hits work it out again
        # from the stored headers and the policy of their time.
        browser_cc = browser_cache_control(decision.browser_ttl, client_cc, "Cache-Control" in headers or "Expires" in headers)
        if reason is not None:
            _strip_targeted(headers, settings.targeted_fields)
            if browser_cc is not None:
                headers["Cache-Control"] = browser_cc
            return _Decision(reason, headers, None, (), seconds, initial_age)

        if settings.strip_set_cookie:
            # The policy trades the cookie for cacheability, for every client
            # alike, so the first one sees what later hits will see.
            headers.popall("Set-Cookie", None)
        names = vary_names(", ".join(headers.getall("Vary", ())) or None)
        stored = headers
        private = fr.private_fields(cc) + fr.no_cache_fields(cc)
        if private:
            # RFC 9111 §5.2.2.4, §5.2.2.7: the named fields are this client's
            # alone; it still gets them, the stored copy does not.
            stored = headers.copy()
            for name in private:
                stored.popall(name, None)
        extra.update(tag_extra(upstream.headers))
        if status == 200 and request.method == "GET" and cz.compressible(
            status, content_type, headers.get("Content-Encoding"), "no-transform" in client_cc or "no-transform" in cc, clen
        ):
            extra["cz"] = 1
        meta = Meta(
            status=status,
            headers=tuple(stored.items()),
            request_time=request_time,
            response_time=response_time,
            initial_age=initial_age,
            lifetime=seconds,
            vary=names or (),
            detail=source,
            extra=extra,
        )
        # Stored with the targeted fields (a later 304 is read against them),
        # shown without them.
        _strip_targeted(headers, settings.targeted_fields)
        if extra.get("cz"):
            headers = CIMultiDict(cz.identity_headers_vary(headers))
        if browser_cc is not None:
            headers["Cache-Control"] = browser_cc
        return _Decision(None, headers, meta, names or (), seconds, initial_age)

    async def _on_response(self, request, ctx, policy, key, fwd, done, upstream, request_time, may_store) -> web.StreamResponse:
        d = self._store_decision(request, ctx, policy, upstream, request_time, may_store)
        headers = d.headers
        if d.reason is not None:
            ctx.cache = f"{self.node}; fwd={fwd}; detail={d.reason.value}"
            if done is not None and not done.done():
                done.set_result(None)  # waiters go to the origin themselves
            headers["Cache-Status"] = ctx.cache
            headers["X-Request-Id"] = ctx.rid
            return await self._stream(request, ctx, upstream, headers, None)
        names = d.names
        store_key = key + _VARIANT_SEP + vary_key(names, request.headers) if names else key
        ctx.cache = f"{self.node}; fwd={fwd}; stored; ttl={int(d.seconds) - int(d.initial_age)}"
        headers["Cache-Status"] = ctx.cache
        headers["X-Request-Id"] = ctx.rid
        headers["Age"] = fr.age_header_value(d.initial_age)
        clen = upstream.content_length
        fill = None
        if done is not None and not done.done() and _read_along(upstream.status, clen):
            fill = Fill(d.meta, store_key, clen, self.fill_buffer)
        sink = _Sink(self.state.store, key, store_key, d.meta, names, policy.cache.max_object_size, clen, fill)
        if fill is not None:
            return await self._fill_for_all(request, ctx, key, done, upstream, headers, fill, sink)
        return await self._stream(request, ctx, upstream, headers, sink)

    async def _store_only(self, request, ctx, policy, key, upstream, request_time, done=None) -> bool:
        """A background fetch's 200: stored if it may be, sent to nobody but
        the misses meanwhile (``done``), which read a large body along.
        False when the object is not to be stored (not fetched again soon)."""
        d = self._store_decision(request, ctx, policy, upstream, request_time, True)
        if d.reason is not None:
            if d.reason in _RESPONSE_REASONS:
                # What the origin now says about storing wins over the old entry.
                await self.state.store.delete(key, Removal.INVALIDATION)
            return False
        names = d.names
        store_key = key + _VARIANT_SEP + vary_key(names, request.headers) if names else key
        clen = upstream.content_length
        fill = None
        if done is not None and not done.done() and _read_along(upstream.status, clen):
            fill = Fill(d.meta, store_key, clen, self.fill_buffer, for_client=False)
        sink = _Sink(self.state.store, key, store_key, d.meta, names, policy.cache.max_object_size, clen, fill)
        if fill is not None:
            done.set_result(fill)
            await fill.run(upstream.content.iter_chunked(_CHUNK), sink)
            return not sink.too_large
        try:
            async for chunk in upstream.content.iter_chunked(_CHUNK):
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

    async def _stream(self, request, ctx, upstream, headers, sink: _Sink | None) -> web.StreamResponse:
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
        if clen is not None and clen <= _BUFFER_LIMIT:
            # Small bodies: read whole, then answer in one write. A short
            # read raises here, before the client got anything: 502.
            try:
                body = await upstream.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if sink is not None:
                    await sink.abort()
                return self._origin_error(ctx, _body_error(exc, upstream))
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
            async for chunk in upstream.content.iter_chunked(_CHUNK):
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
                return self._origin_error(ctx, _body_error(exc, upstream))
            log.warning("origin body broke after %d bytes (request %s): %s", ctx.size, ctx.rid, exc)
            _break(request)
            ctx.status = 502
            return resp
        except BaseException:
            if sink is not None:
                await sink.abort()
            raise
        if clen is not None and ctx.size != clen:
            if sink is not None:
                await sink.abort()
            _break(request)
            return resp
        if first:
            await resp.prepare(request)
        await resp.write_eof()
        if sink is not None:
            await sink.commit()
        return resp

    # --------------------------------------------------------- shared fills

    async def _fill_for_all(self, request, ctx: Ctx, key: str, done, upstream, headers, fill: Fill, sink) -> web.StreamResponse:
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
            await fill.run(upstream.content.iter_chunked(_CHUNK), sink)
        except BaseException:
            client.cancel()
            client.add_done_callback(_retrieve)
            own.close()  # the task may never start to close it
            raise
        finally:
            if self._inflight.get(key) is done:
                del self._inflight[key]  # stored or not, later requests do not join a fill that is over
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
            return self._origin_error(ctx, _body_error(exc.__cause__ or exc, upstream))
        finally:
            await chunks.aclose()
            own.close()

    async def _serve_fill(self, request, ctx: Ctx, policy, key: str, fill: Fill, req_cc, until: float) -> web.StreamResponse | None:
        """A waiter's answer from a fill in progress: the response being
        stored, as a collapsed hit, its body read as it arrives; ranges and
        preconditions as for any hit. None: not from this fill (another Vary
        variant, the client's freshness demands, a fill that ended or was
        released before this answer began): the request fetches instead."""
        meta = fill.meta
        if meta.vary and key + _VARIANT_SEP + vary_key(meta.vary, request.headers) != fill.store_key:
            return None
        age = fr.current_age(meta.initial_age, meta.response_time, time.time())
        if req_cc is not None and cond.reuse(req_cc, age, meta.lifetime, meta.headers) is not None:
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
            age = fr.current_age(meta.initial_age, meta.response_time, time.time())
            status_value = f"{self.node}; hit; ttl={int(meta.lifetime) - int(age)}; collapsed"
            ctx.cache = status_value
            tpl = _template(meta, policy, ctx.path)
            rh = request.headers
            if _has_preconditions(rh):
                outcome = cond.evaluate(request.method, rh, tpl, status=meta.status, now=meta.response_time)
                if outcome is not None:
                    return self._conditional(ctx, meta, policy, age, status_value, outcome)
            if "Range" in rh and meta.status == 200 and fill.length is not None:
                # Cut as from a stored body; of a body of unknown length the
                # whole is sent (RFC 9110 §14.2 lets a server ignore Range).
                partial = Hit(dataclasses.replace(meta, size=fill.length), None, chunks)
                try:
                    resp = await self._ranged(request, ctx, partial, tpl, age, status_value)
                except FillBroken:
                    _break(request)
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
            _break(request)
            ctx.status = 502
            return resp
        if first:
            await resp.prepare(request)
        await resp.write_eof()
        return resp


def _read_along(status: int, clen: int | None) -> bool:
    """A body too large to read whole before answering: requests waiting
    for it read it as it arrives (a shared fill)."""
    return status != 204 and (clen is None or clen > _BUFFER_LIMIT)


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _has_preconditions(headers) -> bool:
    return "If-None-Match" in headers or "If-Modified-Since" in headers or "If-Match" in headers or "If-Unmodified-Since" in headers


def _break(request: web.BaseRequest) -> None:
    """Close the client connection so a cut body is visibly incomplete."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _body_error(exc: BaseException, upstream) -> OriginError:
    from edge.origin.pool import Failure

    failure = Failure.TIMEOUT if isinstance(exc, asyncio.TimeoutError) else Failure.PROTOCOL
    return OriginError(failure, str(upstream.url.origin()), type(exc).__name__)


_CHUNK = 64 * 1024
# Connection tokens that are options, not names of fields to remove.
_CONNECTION_OPTIONS = HOP_BY_HOP | {"close"}
_RELEASED = "released"
_RETRY_SOON = {"Retry-After": "1"}
_BUFFER_LIMIT = 256 * 1024
_EMPTY: dict = {}
_NO_CC = parse_cache_control(None)
_NOT_MODIFIED_FIELDS = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary")
# RFC 5861 §4: the origin failures stale-if-error answers for.
_ERROR_STATUSES = frozenset({500, 502, 503, 504})
_STALE_KEYS = ("swr", "sie", "nostale", "origin_only")
_ONLY_IF_CACHED = parse_cache_control("only-if-cached")
# RFC 9111 §4.4: methods whose success invalidates what is stored for the URL.
_UNSAFE = frozenset({"POST", "PUT", "DELETE", "PATCH"})
# Filter answers that refuse (a challenge page or a redirect is not a block).
_BLOCK_STATUSES = frozenset({403, 405, 413, 414, 429, 431})
_RANGE_FIELDS = frozenset({"range", "if-range"})
_LOOP = Verdict(508, "loop detected: this request has passed this node before", "loop")
# Background fetches (refreshes, range fills) at once per worker; beyond,
# requests are served without starting another.
_MAX_BACKGROUND = 64
# A key whose background fetch found it not storable is not fetched so again
# for this long (a range request per second must not pull the whole object
# each time).
_NO_FILL_SECONDS = 60.0
# Reasons not to store that come from the response (so the stored entry is
# outdated), not from the request that triggered the fetch.
_RESPONSE_REASONS = frozenset({
    fr.NoStore.STATUS, fr.NoStore.NO_STORE, fr.NoStore.PRIVATE, fr.NoStore.SET_COOKIE, fr.NoStore.VARY_STAR,
    fr.NoStore.NO_LIFETIME, fr.NoStore.POLICY, fr.NoStore.DECEPTION,
})


class _Sink:
    """Collects a body for the store: in memory while small, streamed to the
    disk tier once it outgrows the memory tier's object limit."""

    def __init__(self, store, key, store_key, meta: Meta, vary, max_size: int, clen: int | None, follower=None) -> None:
        self.store = store
        self.key = key
        self.store_key = store_key
        self.meta = meta
        self.vary = vary
        self.max_size = max_size
        self.parts: list[bytes] | None = []
        self.size = 0
        self.writer = None
        self.dead = False
        self.too_large = False
        self.follower = follower  # reads the disk file as it is written (a collapse.Fill)
        if clen is not None and clen > store.max_memory_object:
            self._to_disk()

    def _to_disk(self) -> None:
        if not self.store.can_stream:
            self.dead = self.too_large = True
            self.parts = None
            return
        self.writer = self.store.writer(self.store_key, self.follower)

    async def feed(self, chunk: bytes) -> None:
        if self.dead:
            return
        self.size += len(chunk)
        if self.size > self.max_size:
            self.too_large = True
            await self.abort()
            return
        if self.writer is None:
            assert self.parts is not None
            self.parts.append(chunk)
            if self.size <= self.store.max_memory_object:
                return
            self._to_disk()
            if self.writer is None:
                return
            parts, self.parts = self.parts, None
        else:
            parts = (chunk,)
        try:
            for part in parts:
                await self.writer.write(part)
        except OSError:
            log.warning("disk tier write failed; the body is not stored")
            await self.abort()

    async def commit(self) -> None:
        if self.dead:
            return
        self.dead = True
        now = self.meta.response_time
        if self.vary:
            await self.store.put(self.key, Meta.marker(self.vary, now, self.meta.lifetime), b"")
        if self.writer is not None:
            try:
                await self.writer.commit(self.meta)
            except Exception:
                log.exception("disk tier write failed")
            return
        body = b"".join(self.parts or ())
        self.meta.size = len(body)
        await self.store.put(self.store_key, self.meta, body)

    async def abort(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.parts = None
        if self.writer is not None:
            await self.writer.abort()


def _request_sie(req_headers) -> int:
    """The request's stale-if-error seconds (RFC 5861 §4), 0 without."""
    raw = req_headers.get("Cache-Control")
    if not raw or "stale-if-error" not in raw:
        return 0
    seconds = parse_cache_control(raw).seconds("stale-if-error")
    return seconds if isinstance(seconds, int) else 0


def _same_origin(ref: str, host: str, base: str) -> tuple[str, str] | None:
    """(path, raw query) of a Location / Content-Location value on the
    request's own host (RFC 9111 §4.4: other origins are not invalidated,
    against denial of service), else None."""
    from urllib.parse import urljoin, urlsplit

    try:
        parts = urlsplit(urljoin("http://" + host + base, ref.strip()))
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or host_key(parts.netloc) != host:
        return None
    path = normalise_path(parts.path or "/")
    return (path, parts.query) if path is not None else None


def _selects(stored: Meta, fresh) -> bool:
    """Does a 304 identify this stored response for update (RFC 9111
    §4.3.4)? A strong ETag must be the stored one; a 304 with only weak or
    no validators answers the validation it was asked, so it selects it."""
    etag = fresh.get("ETag")
    if etag is None or etag.startswith("W/"):
        return True
    for name, value in stored.headers:
        if name.lower() == "etag":
            return value == etag
    return False


def _strip_targeted(headers: CIMultiDict, targets: tuple[str, ...]) -> None:
    """RFC 9213 fields are for this edge, not for clients or browsers."""
    for name in targets:
        if name in headers:
            headers.popall(name, None)


@dataclass(slots=True)
class _Decision:
    reason: fr.NoStore | None
    headers: CIMultiDict  # for the client
    meta: Meta | None  # to store, when reason is None
    names: tuple[str, ...]  # Vary
    seconds: float
    initial_age: float


class _Snapshot:
    """What a background refresh needs of the request that started it."""

    __slots__ = ("headers", "method")

    def __init__(self, request) -> None:
        self.headers = request.headers  # an immutable proxy; stays valid
        self.method = "GET"


def _lifetime(status: int, headers, cc, decision, settings, response_time: float, targeted: bool = False) -> tuple[float, str]:
    """The freshness lifetime the edge applies to a response (RFC 9111
    §4.2.1 and the tenant's edge TTL rule), and where it came from. With
    ``targeted`` (RFC 9213) the targeted field replaced Expires too."""
    lifetime = fr.freshness_lifetime(
        status=status,
        cc=cc,
        date=headers.get("Date"),
        expires=None if targeted else headers.get("Expires"),
        last_modified=headers.get("Last-Modified"),
        response_time=response_time,
        heuristic_fraction=settings.heuristic_fraction,
        heuristic_max=settings.heuristic_max,
    )
    return edge_lifetime(lifetime, decision.edge_ttl, cc)


def _template(meta: Meta, policy, path: str) -> CIMultiDict:
    """Stored headers as served, built once per memory entry and policy
    version, so that a changed browser TTL reaches entries already cached."""
    tpl = meta.template
    if tpl is None or meta.template_version != policy.version:
        tpl = CIMultiDict(meta.headers)
        _strip_targeted(tpl, policy.cache.targeted_fields)
        if meta.status == 200 and "Content-Encoding" not in tpl:
            tpl.setdefault("Accept-Ranges", "bytes")  # cut from the stored object (RFC 9110 §14.3)
        if meta.extra.get("cz"):
            # Other clients get a compressed variant (RFC 9110 §12.5.5).
            tpl = CIMultiDict(cz.identity_headers_vary(tpl))
        decision = policy.response_decision(path, tpl.get("Content-Type"))
        if decision.browser_ttl is not None:
            cc = parse_cache_control(", ".join(tpl.getall("Cache-Control", ())) or None)
            browser = browser_cache_control(decision.browser_ttl, cc, "Cache-Control" in tpl or "Expires" in tpl)
            if browser is not None:
                tpl["Cache-Control"] = browser
        meta.template = tpl
        meta.template_version = policy.version
    return tpl  # type: ignore[return-value]


def _cookies(headers, names: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers.getall("Cookie", ()):
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name in names and name not in found:
                found[name] = value
    return found


