"""The shared filter chain: the same code for every tenant, configured per
tenant in its policy. Every request passes it before cache or origin.

A filter returns None (pass) or a Verdict (respond with it). Filters are
plain objects with ``check(request, ctx, policy)``; the chain is built
once at start and is immutable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int
    reason: str  # short text for the client
    detail: str  # machine token for Cache-Status and logs
    headers: dict | None = None
    body: bytes | None = None  # sent as is instead of the short text (e.g. an HTML page)
    content_type: str | None = None  # the Content-Type header of ``body``, charset included


class Filter(Protocol):
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
