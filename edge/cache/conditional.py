"""Answering from the cache: clients' conditional requests (RFC 9110 §13) and
request Cache-Control directives (RFC 9111 §5.2.1).

Pure functions: no I/O, no clock; headers are any mapping with ``get`` (and
``getall`` when a field may repeat, e.g. multidict's CIMultiDict). Nothing
here raises on what a client or origin sends: a malformed entity tag never
matches, an unreadable date is ignored.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from edge.http.dates import parse_http_date
from edge.http.directives import CacheControl, parse_cache_control

__all__ = ["CONDITIONAL_FIELDS", "evaluate", "has_conditional", "parse_etags", "reuse"]

# The four preconditions a cache may evaluate for a stored response (§13.1).
CONDITIONAL_FIELDS = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")

# entity-tag = [ weak ] opaque-tag; weak = %s"W/"; opaque-tag = DQUOTE *etagc DQUOTE
# etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3). "W/" is case-sensitive.
_ENTITY_TAG = re.compile('(W/)?"([\x21\x23-\x7e\x80-\U0010ffff]*)"')
_OWS = " \t"

ETag = tuple[bool, str]  # (weak, opaque-tag without quotes)


def has_conditional(headers) -> bool:
    """Whether the request carries one of the preconditions (cheap test)."""
    return (
        "If-None-Match" in headers
        or "If-Modified-Since" in headers
        or "If-Match" in headers
        or "If-Unmodified-Since" in headers
    )


def parse_etags(value: str | None) -> tuple[ETag, ...] | None:
    """A ``#entity-tag`` list -> ((weak, opaque), ...); None when malformed.

    Empty list elements are allowed (RFC 9110 §5.6.1); "*" is not handled here.
    """
    if value is None:
        return None
    out: list[ETag] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t,":
            i += 1
        if i >= n:
            return tuple(out)
        m = _ENTITY_TAG.match(value, i)
        if m is None:
            return None
        out.append((m.group(1) is not None, m.group(2)))
        i = m.end()
        while i < n and value[i] in _OWS:
            i += 1
        if i < n and value[i] != ",":
            return None


def _field(headers, name: str) -> tuple[str, ...]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return tuple(getall(name, ()))
    v = headers.get(name)
    return () if v is None else (v,)


def _stored_etag(stored_headers) -> ETag | None:
    tags = parse_etags(", ".join(_field(stored_headers, "ETag")) or None)
    return tags[0] if tags is not None and len(tags) == 1 else None


def _single_date(headers, name: str, now: float | None) -> float | None:
    """A field that must be one HTTP-date: None when absent, repeated or invalid."""
    values = _field(headers, name)
    if len(values) != 1:
        return None
    return parse_http_date(values[0], now=now)


def _if_match(value: str, current: ETag | None) -> bool:
    """RFC 9110 §13.1.1: "*" or a strong match; malformed -> false."""
    if value.strip(_OWS) == "*":
        return True  # a stored representation exists
    tags = parse_etags(value)
    if not tags or current is None or current[0]:
        return False
    return any(not weak and opaque == current[1] for weak, opaque in tags)


def _none_match(value: str, current: ETag | None) -> bool:
    """RFC 9110 §13.1.2: true when *no* listed tag matches (weak comparison).

    "*" matches any stored representation; a malformed list matches nothing.
    """
    if value.strip(_OWS) == "*":
        return False
    tags = parse_etags(value)
    if not tags or current is None:
        return True
    return not any(opaque == current[1] for _, opaque in tags)


def evaluate(
    method: str, request_headers, stored_headers, *, status: int = 200, now: float | None = None
) -> int | None:
    """Preconditions of a request against a stored response (RFC 9110 §13.2.2).

    Returns 304 (Not Modified), 412 (Precondition Failed) or None (answer
    normally). ``status`` is the stored response's status: preconditions are
    ignored unless it is 2xx (§13.2.1). ``now`` only disambiguates two-digit
    years of obsolete RFC 850 dates.
    """
    if status < 200 or status > 299:
        return None
    get_or_head = method == "GET" or method == "HEAD"
    etag: ETag | None = None
    etag_read = False

    # Step 1/2: If-Match, else If-Unmodified-Since.
    if_match = _field(request_headers, "If-Match")
    if if_match:
        etag, etag_read = _stored_etag(stored_headers), True
        if not _if_match(", ".join(if_match), etag):
            return 412
    elif "If-Unmodified-Since" in request_headers:
        since = _single_date(request_headers, "If-Unmodified-Since", now)
        # §13.1.4: ignored when invalid or when there is no modification date.
        last_modified = _single_date(stored_headers, "Last-Modified", now)
        if since is not None and last_modified is not None and last_modified > since:
            return 412

    # Step 3/4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if_none_match = _field(request_headers, "If-None-Match")
    if if_none_match:
        if not etag_read:
            etag = _stored_etag(stored_headers)
        if not _none_match(", ".join(if_none_match), etag):
            return 304 if get_or_head else 412
    elif get_or_head and "If-Modified-Since" in request_headers:
        since = _single_date(request_headers, "If-Modified-Since", now)
        if since is not None:
            # RFC 9111 §4.3.2: without Last-Modified, a cache uses the stored Date.
            modified = _single_date(stored_headers, "Last-Modified", now)
            if modified is None:
                modified = _single_date(stored_headers, "Date", now)
            if modified is not None and modified <= since:
                return 304
    return None


def _stored_cc(stored_headers: Iterable[tuple[str, str]]) -> CacheControl:
    return parse_cache_control(", ".join(v for k, v in stored_headers if k.lower() == "cache-control") or None)


def _must_revalidate(cc: CacheControl) -> bool:
    # RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10 forbid serving stale; an
    # unqualified no-cache (§5.2.2.4) forbids any reuse without validation.
    return (
        "must-revalidate" in cc
        or "proxy-revalidate" in cc
        or "s-maxage" in cc
        or cc.field_names("no-cache") == ()
    )


def reuse(
    request_cc: CacheControl, age: float, lifetime: float, stored_headers: Iterable[tuple[str, str]] = ()
) -> str | None:
    """May a stored response of this age and lifetime answer a request with
    these Cache-Control directives (RFC 9111 §4.2, §5.2.1)?

    None: yes. Otherwise the RFC 9211 ``fwd`` token: "request" when a fresh
    response is refused by the request's max-age / min-fresh, "stale" when a
    stale one is not covered by max-stale. ``stored_headers`` (name, value)
    pairs are only read for a stale response with max-stale.
    Malformed max-age / min-fresh values are ignored; a malformed max-stale
    value allows no staleness.
    """
    fresh = age < lifetime
    max_age = request_cc.max_age
    if isinstance(max_age, int) and age > max_age:  # §5.2.1.1
        return "request" if fresh else "stale"
    min_fresh = request_cc.seconds("min-fresh")
    if isinstance(min_fresh, int) and lifetime - age < min_fresh:  # §5.2.1.3
        return "request" if fresh else "stale"
    if fresh:
        return None
    if "max-stale" not in request_cc:  # §5.2.1.2
        return "stale"
    if request_cc.get("max-stale") is not None:
        limit = request_cc.seconds("max-stale")
        if not isinstance(limit, int) or age - lifetime > limit:
            return "stale"
    if _must_revalidate(_stored_cc(stored_headers)):
        return "stale"
    return None
