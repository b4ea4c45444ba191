"""Answers the edge writes itself: hits (whole, ranges, 304 / 412), errors,
filter refusals and ACME challenges."""
from __future__ import annotations

import asyncio

from aiohttp import web
from multidict import CIMultiDict

from edge.cache import conditional as cond
from edge.cache import freshness as fr
from edge.cache import ranges as rgs
from edge.cache.admission import served_headers
from edge.cache.key import encoding_bucket
from edge.cache.store import Hit, Meta
from edge.origin.pool import Failure, OriginError
from edge.pipeline.context import Ctx
from edge.pipeline.outcome import Kind, Outcome
from edge.pipeline.storage import close_body
from edge.tls.challenges import token_of

_NOT_MODIFIED_FIELDS = ("Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary")
# Filter answers that refuse (a challenge page or a redirect is not a block).
_BLOCK_STATUSES = frozenset({403, 405, 413, 414, 429, 431})
_RETRY_SOON = {"Retry-After": "1"}


def template(meta: Meta, policy, path: str) -> CIMultiDict:
    """The headers a stored response is served with, built once per memory
    entry and policy version, so that a changed browser TTL reaches
    entries already cached."""
    tpl = meta.template
    if tpl is None or meta.template_version != policy.version:
        tpl = meta.template = served_headers(meta.status, meta.headers, policy, path, stored=True,
                                             compressed=bool(meta.extra.get("cz")))
        meta.template_version = policy.version
    return tpl  # type: ignore[return-value]


def has_preconditions(headers) -> bool:
    return "If-None-Match" in headers or "If-Modified-Since" in headers or "If-Match" in headers or "If-Unmodified-Since" in headers


def ttl(meta: Meta, age: float) -> int:
    """Seconds of freshness left: age + ttl = lifetime, in the whole seconds the Age field shows."""
    return int(meta.lifetime) - int(age)


class Responder:
    def __init__(self, state, storage) -> None:
        self.state = state
        self.node = state.config.name
        self.storage = storage

    def settle(self, ctx: Ctx, outcome: Outcome, ttl: int | None = None) -> str:
        """Record the request's outcome and its answer's ttl; returns its
        Cache-Status value."""
        ctx.outcome = outcome
        ctx.ttl = ttl
        ctx.cache = value = outcome.render(self.node, ttl)
        return value

    def stamp(self, ctx: Ctx, headers, outcome: Outcome, ttl: int | None = None) -> None:
        """The per-request fields of an answer: Cache-Status, X-Request-Id."""
        headers["Cache-Status"] = self.settle(ctx, outcome, ttl)
        headers["X-Request-Id"] = ctx.rid

    def refuse(self, ctx: Ctx, verdict) -> web.Response:
        """A filter's answer: its own body (a challenge page) or the plain
        error text; blocks are counted towards the tenant's security events."""
        events = self.state.events
        policy = ctx.policy
        if events is not None and verdict.status in _BLOCK_STATUSES:
            events.record_verdict(policy.tenant, policy.filters.events, verdict.detail, ctx.peer, verdict.rules)
        if verdict.body is None:
            return self.error(ctx, verdict.status, verdict.reason, verdict.detail, verdict.headers, kind=Kind.REFUSED)
        headers = {
            "Cache-Status": self.settle(ctx, Outcome(Kind.REFUSED, detail=verdict.detail)),
            "X-Request-Id": ctx.rid,
            "Cache-Control": "no-store",
            "Server": "edge",
            "Content-Type": verdict.content_type or "text/plain; charset=utf-8",
        }
        if verdict.headers:
            headers.update(verdict.headers)
        ctx.size = len(verdict.body)
        return web.Response(status=verdict.status, body=verdict.body, headers=headers)

    def error(self, ctx: Ctx, status: int, text: str, detail: str, extra: dict | None = None, *,
              kind: Kind = Kind.ERROR, forwarded: bool = True) -> web.Response:
        """The edge's own short answer. ``forwarded`` False: the origin was
        off limits (only-if-cached)."""
        headers = {
            "Cache-Status": self.settle(ctx, Outcome.error(status, detail, kind, forwarded)),
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

    async def challenge(self, request: web.BaseRequest, ctx: Ctx, files, path: str, *,
                        own: bool) -> web.Response | None:
        """An ACME HTTP-01 challenge (RFC 8555 §8.3) at ``path``: the key
        authorization the ACME manager left for the token. ``own``: the
        tenant asks for ACME certificates, so the path is the node's alone,
        404 for any other token. Otherwise (another tenant, or a host that
        no tenant serves) None for any other token, and the request goes
        on: the order may come from a sibling worker that loaded a policy
        this one has not loaded yet."""
        if request.method not in ("GET", "HEAD"):
            if not own:
                return None
            return self.error(ctx, 405, "method not allowed", "acme-challenge", {"Allow": "GET, HEAD"},
                              forwarded=False)
        token = token_of(path)
        answer = None
        if token is not None:
            answer = await asyncio.get_running_loop().run_in_executor(None, files.read, token)
        if answer is None:
            if not own:
                return None
            return self.error(ctx, 404, "no such ACME challenge", "acme-challenge", forwarded=False)
        headers = {
            "Cache-Status": self.settle(ctx, Outcome(Kind.ANSWERED, detail="acme-challenge")),
            "X-Request-Id": ctx.rid,
            "Cache-Control": "no-store",
            "Server": "edge",
            "Content-Type": "application/octet-stream",
        }
        ctx.size = len(answer)
        return web.Response(status=200, body=answer, headers=headers)

    def origin_error(self, ctx: Ctx, exc: OriginError) -> web.Response:
        if exc.failure is Failure.BUSY:
            # This node is saturated, not the origin: worth a retry soon.
            return self.error(ctx, 503, exc.failure.text, exc.failure.value, _RETRY_SOON)
        return self.error(ctx, exc.failure.status, exc.failure.text, exc.failure.value)

    async def hit(self, request: web.BaseRequest, ctx: Ctx, hit: Hit, age: float, outcome: Outcome,
                  cookies: list[str] | None = None) -> web.StreamResponse:
        """A stored response, ``age`` seconds old, as the answer: whole, a
        range of it, or 304 / 412."""
        meta = hit.meta
        left = ttl(meta, age)  # of the entry looked up, also when a compressed copy of it is sent
        policy = ctx.policy
        rh = request.headers
        if meta.extra.get("cz") and request.method == "GET" and "Range" not in rh and (
            "no-transform" not in rh.get("Cache-Control", "")  # RFC 9111 §5.2.1.6
        ):
            coding = encoding_bucket(rh.get("Accept-Encoding"))
            if coding != "identity":
                encoded = await self.storage.encoded(hit, coding)
                if encoded is not None:
                    hit = encoded
                    meta = hit.meta
        status_value = self.settle(ctx, outcome, left)
        if has_preconditions(rh):
            # RFC 9110 §13.2.2, RFC 9111 §4.3.2: preconditions against the stored response.
            found = cond.evaluate(request.method, rh, template(meta, policy, ctx.path), status=meta.status,
                                  now=meta.response_time)
            if found is not None:
                if hit.chunks is not None:
                    await hit.chunks.aclose()
                return self.conditional(ctx, meta, age, found)
        if "Range" in rh and meta.status == 200 and request.method == "GET":
            resp = await self.ranged(request, ctx, hit, template(meta, policy, ctx.path), age)
            if resp is not None:
                return resp
        if hit.body is not None:
            ctx.size = len(hit.body)
            # Response copies the template once; per-request fields go on the copy.
            resp = web.Response(status=meta.status, body=hit.body, headers=template(meta, policy, ctx.path))
        else:
            resp = web.StreamResponse(status=meta.status, headers=template(meta, policy, ctx.path))
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

    async def ranged(self, request, ctx: Ctx, hit: Hit, tpl, age: float) -> web.StreamResponse | None:
        """RFC 9110 §14: a 206 or 416 cut from the stored 200; None: serve it
        whole. ``ctx`` holds the hit's outcome already (``settle``)."""
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
            await close_body(hit)
            headers = CIMultiDict(tpl)
            headers.popall("Content-Type", None)
            headers.update(rgs.unsatisfiable_headers(size))
            headers["Age"] = fr.age_header_value(age)
            headers["Cache-Status"] = self.settle(ctx, ctx.outcome.noted("range-unsatisfiable"), ctx.ttl)
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
        resp.headers.add("Cache-Status", ctx.cache)
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

    def conditional(self, ctx: Ctx, meta: Meta, age: float, status: int) -> web.Response:
        """304 or 412 for a conditional request answered from the cache;
        ``ctx`` holds the hit's outcome already (``settle``)."""
        tpl = template(meta, ctx.policy, ctx.path)
        headers: CIMultiDict = CIMultiDict()
        if status == 304:
            # RFC 9110 §15.4.5: the fields a 200 would have carried; Last-Modified
            # only without an ETag (to guide cache updates).
            names = _NOT_MODIFIED_FIELDS if "ETag" in tpl else _NOT_MODIFIED_FIELDS + ("Last-Modified",)
            for name in names:
                for value in tpl.getall(name, ()):
                    headers.add(name, value)
            body = None
            status_value = ctx.cache
        else:
            status_value = self.settle(ctx, ctx.outcome.noted("precondition-failed"), ctx.ttl)
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
