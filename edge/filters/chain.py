"""The shared filter chain: the same code for every tenant, configured per
tenant in its policy. Every request passes it before cache or origin.

A filter returns None (pass) or a Verdict (respond with it). Filters are
plain objects with ``check(request, ctx, policy)``, the hook every request
meets; the chain is built once at start and is immutable. The pipeline
asks the chain, never a filter, at each later phase; a filter takes part
in one by having its hook (see ``Filter``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("edge.filters")


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    reason: str  # short text for the client
    detail: str  # machine token for Cache-Status and logs
    headers: dict | None = None
    body: bytes | None = None  # sent as is instead of the short text (e.g. an HTML page)
    content_type: str | None = None  # the Content-Type header of ``body``, charset included
    close: bool = False  # close the connection after it: the request body is left unread
    # The rules it is for, as the tenant's security events count them, when
    # ``detail`` names none (the WAF's: every rule that added to the score).
    rules: tuple[str, ...] = ()


class Filter(Protocol):
    """A filter. Besides ``check``, the hooks a filter may have, by phase:

    ``wants(policy) -> bool``
        False: the tenant's policy leaves it nothing to do on ``check``.
    ``takes_form(request, ctx, policy) -> bool`` and ``async verify_form(request, ctx, policy)``
        The request is an answer to the filter itself, in a form body it reads.
    ``body_limit(policy, node_limit) -> int``
        The largest request body it lets through.
    ``before_origin(request, ctx, policy, quiet=False)``
        An inspection before anything of the request goes to the origin (a
        cache hit never meets it). ``quiet``: the verdict only, nothing
        counted, for a fetch made for the cache on the request's behalf.
    ``async reserve(ctx, policy, wait)`` and ``release(ctx)``
        Something held for the request until its answer is written (a
        concurrency slot); ``holds(ctx)`` says whether it holds anything.
    ``body_wanted(policy) -> int`` and ``async on_body(request, ctx, policy, head)``
        The bytes of the request body's head it inspects before the
        origin sees any of them, and that inspection.
    """

    name: str

    def check(self, request, ctx, policy) -> Verdict | None: ...


class MethodFilter:
    """Methods no origin of a CDN tenant should see through the edge."""

    name = "method"
    _DENIED = frozenset({"CONNECT", "TRACE", "TRACK"})

    def check(self, request, ctx, policy) -> Verdict | None:
        if request.method in self._DENIED:
            return Verdict(405, "method not allowed", "method", {"Allow": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"})
        return None


class FilterChain:
    """A filter may say, by a ``wants(policy)`` method, that a tenant's
    policy leaves it nothing to do; such filters are left out of that
    tenant's run (worked out once per policy version)."""

    def __init__(self, filters: tuple[Filter, ...]) -> None:
        self.filters = filters
        self._plans: dict[tuple[str, str], tuple[Filter, ...]] = {}

        def having(hook: str) -> tuple:
            return tuple(f for f in filters if hasattr(f, hook))

        self._forms = having("takes_form")
        self._body_limits = having("body_limit")
        self._inspections = having("before_origin")
        self._reservations = having("reserve")
        self._releases = having("release")
        self._body_readers = having("on_body")

    def check(self, request, ctx, policy) -> Verdict | None:
        key = (policy.tenant, policy.version)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 10_000:  # tenants and versions come and go
                self._plans.clear()
            plan = self._plans[key] = tuple(
                f for f in self.filters if getattr(f, "wants", None) is None or f.wants(policy)
            )
        for f in plan:
            verdict = f.check(request, ctx, policy)
            if verdict is not None:
                return verdict
        return None

    def form_reader(self, request, ctx, policy):
        """``verify_form`` of the filter this request answers in a form
        body, or None."""
        for f in self._forms:
            if f.takes_form(request, ctx, policy):
                return f.verify_form
        return None

    def body_limit(self, policy, node_limit: int) -> int:
        """The largest request body the filters let through, within the node's."""
        limit = node_limit
        for f in self._body_limits:
            limit = min(limit, f.body_limit(policy, node_limit))
        return limit

    async def before_origin(self, request, ctx, policy, wait: float) -> Verdict | None:
        """What a request must pass before it may go to the origin: every
        inspection first (an attack is refused as such, whatever else),
        then what is reserved for it, waiting up to ``wait`` seconds."""
        for f in self._inspections:
            verdict = f.before_origin(request, ctx, policy)
            if verdict is not None:
                return verdict
        try:
            for f in self._reservations:
                verdict = await f.reserve(ctx, policy, wait)
                if verdict is not None:
                    self.release(ctx)  # what the others reserved: the request goes no further
                    return verdict
        except BaseException:
            # A reservation that failed, or a request cancelled while it
            # waited for one: the request never counts as gated, so what
            # the filters before reserved is given back here.
            self.release(ctx)
            raise
        return None

    def would_refuse(self, request, ctx, policy) -> bool:
        """Whether an inspection would refuse this request before the
        origin; nothing is counted or noted."""
        return any(f.before_origin(request, ctx, policy, quiet=True) is not None for f in self._inspections)

    def holds(self, ctx) -> bool:
        """Whether a filter holds something for the request until its answer is written."""
        for f in self._releases:
            if f.holds(ctx):
                return True
        return False

    def release(self, ctx) -> None:
        """The request is over: what the filters held for it is given back,
        by every filter, whatever one of them raises."""
        for f in self._releases:
            try:
                f.release(ctx)
            except Exception:
                log.exception("filter %s failed to release what it held (request %s)", f.name, ctx.rid)

    def body_wanted(self, policy) -> int:
        """Bytes of the request body's head the filters inspect before the
        origin sees any of it (0: none)."""
        return max((f.body_wanted(policy) for f in self._body_readers), default=0)

    async def on_body(self, request, ctx, policy, head: bytes) -> Verdict | None:
        for f in self._body_readers:
            verdict = await f.on_body(request, ctx, policy, head)
            if verdict is not None:
                return verdict
        return None
