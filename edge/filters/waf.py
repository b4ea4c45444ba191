"""The WAF as a filter of the chain (``filters.waf`` of a tenant's policy).

``check`` runs with the other filters on every request and inspects what
the request line and headers carry; ``check_body`` runs later, only for
requests that go to the origin with a body, and adds the body's score to
the one ``check`` left on ``ctx.waf``. In ``log`` mode a request that
reaches the threshold is counted and logged and passes.
"""
from __future__ import annotations

import logging

from edge.filters._record import Recorder
from edge.filters.chain import Verdict
from edge.http.codings import CodingError, UnknownCoding, inspection_view
from edge.waf.engine import Waf, WafResult

log = logging.getLogger("edge.filters")

REASON = "forbidden by the web application firewall"
DETAIL = "filter.waf"


class WafFilter:
    name = "waf"

    def __init__(self, waf: Waf) -> None:
        # Replace ``waf`` (a reloaded rule set) by assignment: one reference swap.
        self.waf = waf
        self._record = Recorder(self.name)

    def wants(self, policy) -> bool:
        return policy.filters.waf.active

    def check(self, request, ctx, policy) -> Verdict | None:
        """The cheap pass, on every request (cache hits too)."""
        settings = policy.filters.waf
        if not settings.active or ctx.allowlisted:
            return None
        raw = request.raw_path
        waf = self.waf
        if "?" not in raw:
            if waf.plain_and_clean(request.method, raw, request.headers):
                return None  # the common cache hit: two memo lookups
        elif waf.known_clean(request.method, raw, request.headers):
            return None  # a query seen before, clean: three
        raw_path, _, raw_query = raw.partition("?")
        result = waf.inspect_request(request.method, raw_path, raw_query, request.headers, settings,
                                     normalised=ctx.path, full=False)
        if result is None and raw_query:
            waf.remember_if_clean(raw)
        ctx.waf = result
        return self._decide(result, ctx, policy, settings)

    def check_full(self, request, ctx, policy, quiet: bool = False) -> Verdict | None:
        """Every rule on the request head, before anything of it goes to
        the origin (misses, passes, background refreshes). ``quiet``: the
        verdict only, nothing counted or noted (the request is served
        from cache whatever it says)."""
        settings = policy.filters.waf
        if not settings.active or ctx.allowlisted:
            return None
        raw_path, _, raw_query = request.raw_path.partition("?")
        result = self.waf.inspect_request(request.method, raw_path, raw_query, request.headers, settings,
                                          normalised=ctx.path, full=True)
        if quiet:
            blocked = result is not None and result.score >= settings.threshold and settings.mode == "block"
            return Verdict(403, REASON, DETAIL) if blocked else None
        seen = ctx.waf.rules if ctx.waf is not None else ()
        ctx.waf = result
        return self._decide(result, ctx, policy, settings, seen)

    def before_origin(self, request, ctx, policy, quiet: bool = False) -> Verdict | None:
        return self.check_full(request, ctx, policy, quiet)

    def body_wanted(self, policy) -> int:
        settings = policy.filters.waf
        return settings.max_body if settings.active and settings.inspect_body else 0

    async def on_body(self, request, ctx, policy, head: bytes) -> Verdict | None:
        """The head of the request body, before the origin sees any of it."""
        settings = policy.filters.waf
        try:
            # The origin gets the body as sent; the WAF reads it decoded,
            # or compressing a payload would be a way past it.
            view = inspection_view(head, request.headers.getall("Content-Encoding", ()), settings.max_body)
        except CodingError as exc:
            if settings.mode != "block":
                # A WAF on trial refuses nothing: noted, the raw bytes inspected.
                log.info("request %s: body not inspected decoded: %s", ctx.rid, exc)
                view = head
            elif isinstance(exc, UnknownCoding):
                # RFC 9110 §15.5.16: what the WAF cannot read does not pass unread.
                return Verdict(415, str(exc), "unsupported-body-encoding", close=True)
            else:
                return Verdict(400, str(exc), "bad-body-encoding", close=True)
        return await self.check_body(request, ctx, policy, view, ctx.waf)

    async def check_body(self, request, ctx, policy, body: bytes, prior: WafResult | None) -> Verdict | None:
        settings = policy.filters.waf
        if not settings.active or ctx.allowlisted or not settings.inspect_body:
            return None
        result = self.waf.inspect_body(body, request.headers.get("Content-Type"), ctx.path, settings, prior)
        if result is prior:
            return None  # the body matched nothing new: check() has decided already
        ctx.waf = result
        return self._decide(result, ctx, policy, settings)

    def _decide(self, result: WafResult | None, ctx, policy, settings, seen: tuple[str, ...] = ()) -> Verdict | None:
        if result is None:
            return None
        tenant = policy.tenant
        if result.score < settings.threshold:
            for rule in result.rules:
                if rule not in seen:  # counted by the cheap pass already
                    self._record.count(tenant, rule, "match")
            return None
        ctx.blocked = "waf:" + ",".join(result.rules)
        for rule in result.rules:
            self._record.refused(tenant, rule, settings.mode, getattr(ctx, "peer", None))
        if settings.mode != "block":
            return None
        return Verdict(403, REASON, DETAIL, rules=result.rules)
