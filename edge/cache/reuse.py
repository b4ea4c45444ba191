"""May a stored response answer a request? (RFC 9111 §4, §4.2.4, §5.2.1;
RFC 5861.) One decision for every place that asks: a lookup, a request
that waited for another's fetch of the same key, and an origin that failed.

Pure: no I/O, no clock; the stored response's age (RFC 9111 §4.2.3
``current_age``, edge/cache/freshness.py) is passed in, computed once by
the caller, which shows the same age in the Age field.
``settings`` is the tenant's cache section (``stale_while_revalidate``,
``stale_if_error``: the windows it grants when the origin names none).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from edge.cache import conditional as cond
from edge.cache.response_policy import stale_window
from edge.cache.store import Meta
from edge.cache.validation import has_validator
from edge.http.directives import CacheControl, parse_cache_control

__all__ = ["ERROR_STATUSES", "NO_DIRECTIVES", "Directives", "Reuse", "directives", "reuse", "worth_keeping"]

# RFC 5861 §4: the origin's answers that count as its failure (besides none at all).
ERROR_STATUSES = frozenset({500, 502, 503, 504})


class Reuse(enum.Enum):
    """What a stored response may do for a request; the values are the
    RFC 9211 ``fwd`` tokens of the two kinds that go to the origin."""

    MISS = "miss"  # nothing stored may answer
    FRESH = "fresh"  # answer with it (fresh, or stale within the client's max-stale)
    STALE_WHILE_REVALIDATE = "swr"  # answer with it, refresh it in the background (RFC 5861 §3)
    STALE_IF_ERROR = "sie"  # the origin failed: answer with it (RFC 5861 §4)
    VALIDATE = "stale"  # stale: ask the origin (conditionally when it has validators)
    VALIDATE_REQUEST = "request"  # usable, but the request asks past it (no-cache, max-age, min-fresh)


@dataclass(frozen=True, slots=True)
class Directives:
    """A request's cache directives as the tenant obeys them."""

    cc: CacheControl | None  # None: none that bear on reuse
    revalidate: bool = False  # §5.2.1.4 no-cache, max-age=0 or Pragma: no-cache: validate first
    only_if_cached: bool = False  # §5.2.1.7: never the origin
    stale_if_error: int = 0  # RFC 5861 §4: seconds of staleness the client accepts on error


NO_DIRECTIVES = Directives(None)
_PRAGMA_NO_CACHE = Directives(None, revalidate=True)
_ONLY_IF_CACHED = parse_cache_control("only-if-cached")

# Clients send a handful of distinct Cache-Control values (a reload's
# max-age=0, no-cache), so what a tenant makes of one is shared, as its parse
# is (edge/http/directives.py); bounded in count and length likewise.
_memo: dict[tuple[str, str], Directives] = {}
_MEMO_MAX_ENTRIES = 1024
_MEMO_MAX_LEN = 256


def directives(cache_control: str | None, pragma: str | None, client_no_cache: str) -> Directives:
    """The request's Cache-Control (its first field line) and Pragma, as a
    tenant with ``client_no_cache`` ("revalidate" or "ignore") obeys them."""
    if cache_control is None:
        if pragma is None or "no-cache" not in pragma or client_no_cache == "ignore":  # §5.4
            return NO_DIRECTIVES
        return _PRAGMA_NO_CACHE
    key = (cache_control, client_no_cache)
    found = _memo.get(key)
    if found is None:
        found = _obeyed(cache_control, client_no_cache)
        if len(cache_control) <= _MEMO_MAX_LEN:
            if len(_memo) >= _MEMO_MAX_ENTRIES:
                _memo.clear()
            _memo[key] = found
    return found


def _obeyed(cache_control: str, client_no_cache: str) -> Directives:
    cc = parse_cache_control(cache_control)
    sie = cc.seconds("stale-if-error") if "stale-if-error" in cache_control else None
    sie = sie if isinstance(sie, int) else 0
    revalidate = cc.has("no-cache") or cc.max_age == 0
    if revalidate and client_no_cache == "ignore":
        # The tenant shields its origin from forced reloads: the client's
        # freshness demands are not obeyed (only-if-cached still is).
        only = "only-if-cached" in cc
        return Directives(_ONLY_IF_CACHED if only else None, False, only, sie)
    return Directives(cc if cc else None, revalidate, "only-if-cached" in cc, sie)


def reuse(meta: Meta | None, request: Directives, settings, age: float, *, origin_failed: bool = False) -> Reuse:
    """What ``meta``'s response, ``age`` seconds old, may do for a request
    with ``request``'s directives; with ``origin_failed``, once the origin
    failed to answer (STALE_IF_ERROR or MISS)."""
    if meta is None:
        return Reuse.MISS
    if origin_failed:
        extra = meta.extra
        window = stale_window(extra, "sie", settings.stale_if_error)
        if not _revalidates(extra):
            # RFC 5861 §4: the client may accept staleness on error too
            # (not where s-maxage made the response proxy-revalidate).
            window = max(window, request.stale_if_error)
        return Reuse.STALE_IF_ERROR if window and age - meta.lifetime < window else Reuse.MISS
    if request.revalidate:
        return Reuse.VALIDATE_REQUEST
    cc = request.cc
    if cc is None:
        if age < meta.lifetime:
            return Reuse.FRESH
    else:
        # RFC 9111 §5.2.1: max-age, min-fresh, max-stale.
        fwd = cond.reuse(cc, age, meta.lifetime, meta.headers)
        if fwd is None and age >= meta.lifetime and _revalidates(meta.extra):
            # §5.2.2.2, §5.2.2.4, §5.2.2.10 beat the client's max-stale, as
            # admission recorded them from the field the edge obeys: the
            # stored Cache-Control is not it when a targeted field (RFC 9213) was.
            fwd = "stale"
        if fwd is None:
            return Reuse.FRESH
        if fwd == "request":
            return Reuse.VALIDATE_REQUEST
        if "max-age" in cc or "min-fresh" in cc:
            return Reuse.VALIDATE  # the client limits the age it takes: no stale answer
    window = stale_window(meta.extra, "swr", settings.stale_while_revalidate)
    if window and age - meta.lifetime < window:
        return Reuse.STALE_WHILE_REVALIDATE
    return Reuse.VALIDATE


def _revalidates(extra: dict) -> bool:
    """Whether the origin forbade serving the response stale without
    validation (must-revalidate, proxy-revalidate, no-cache, s-maxage);
    s-maxage still lets its own RFC 5861 windows apply."""
    return bool(extra.get("nostale") or extra.get("origin_only"))


def worth_keeping(meta: Meta, request: Directives, settings) -> bool:
    """Whether a stored response that may not answer now may still help:
    it can be validated (an ETag or a Last-Modified, RFC 9111 §4.3.1) or
    answer if the origin fails (a stale-if-error window)."""
    return meta.status != 0 and bool(
        has_validator(meta.headers)
        or stale_window(meta.extra, "sie", settings.stale_if_error)
        or request.stale_if_error
    )
