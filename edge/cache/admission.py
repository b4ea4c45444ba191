"""Whether a response is stored, for how long, and what clients are shown
(RFC 9111 §3, §4.2, §4.3.4, §5.2.2; RFC 9213; the tenant's rules).

One decision for a response fetched from the origin (``admit``), one for a
stored response that the origin validated (``revalidated``), and one
rendering of the headers clients see (``served_headers``), for the response
that is being stored and for every later hit on it alike.

Pure: no I/O, no clock; instants are POSIX timestamps passed in. Headers
are CIMultiDicts (``got``: the origin's own, before forwarding dropped the
fields the edge keeps to itself). ``policy`` is the tenant's policy; only
its cache section and its response rules are read.
"""
from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict

from edge.cache import compress as cz
from edge.cache import freshness as fr
from edge.cache.key import vary_names
from edge.cache.purge import tag_extra
from edge.cache.response_policy import (
    browser_cache_control,
    deceptive,
    edge_cache_control,
    edge_lifetime,
    stale_window,
    stale_windows,
)
from edge.cache.store import Meta
from edge.cache.validation import updated_headers
from edge.http.directives import CacheControl, parse_cache_control

__all__ = ["Admission", "Asked", "Revalidated", "admit", "lifetime", "revalidated", "served_headers"]

_NO_CC = parse_cache_control(None)
# What the edge keeps of the origin's stale directives; renewed by a validation.
_STALE_KEYS = ("swr", "sie", "nostale", "origin_only")


@dataclass(frozen=True, slots=True)
class Asked:
    """What of the request bears on storing its answer."""

    method: str
    path: str  # normalised, as the tenant's rules match it
    cache_control: CacheControl = _NO_CC
    authorization: bool = False
    # The request's Connection named end-to-end fields: removed on the way
    # to the origin, they may have been in the key or chosen a variant.
    connection_fields: bool = False


@dataclass(slots=True)
class Admission:
    reason: fr.NoStore | None  # None: stored
    client: CIMultiDict  # the headers this client gets
    meta: Meta | None  # what is stored, when reason is None
    vary: tuple[str, ...]
    lifetime: float
    initial_age: float


@dataclass(slots=True)
class Revalidated:
    meta: Meta  # the stored response as the validation left it
    cookies: list[str]  # the 304's Set-Cookie lines: this client's alone, never stored
    keep: bool  # False: the origin withdrew consent, or changed the keying or tags: remove it


def lifetime(status: int, headers, cc: CacheControl, decision, settings, response_time: float,
             targeted: bool = False) -> tuple[float, str]:
    """The freshness lifetime the edge applies to a response (RFC 9111
    §4.2.1 and the tenant's edge TTL rule), and where it came from. With
    ``targeted`` (RFC 9213) the targeted field replaced Expires too."""
    found = fr.freshness_lifetime(
        status=status,
        cc=cc,
        date=headers.get("Date"),
        expires=None if targeted else headers.get("Expires"),
        last_modified=headers.get("Last-Modified"),
        response_time=response_time,
        heuristic_fraction=settings.heuristic_fraction,
        heuristic_max=settings.heuristic_max,
    )
    return edge_lifetime(found, decision.edge_ttl, cc)


def served_headers(status: int, headers, policy, path: str, *, stored: bool, compressed: bool) -> CIMultiDict:
    """The header fields clients are shown for a response with ``headers``
    (as stored, or as received when it is not stored): the per-request
    fields (Age, Cache-Status, X-Request-Id) are the caller's."""
    out = CIMultiDict(headers)
    for name in policy.cache.targeted_fields:  # RFC 9213: for this edge, not for clients
        if name in out:
            out.popall(name, None)
    if stored and status == 200 and "Content-Encoding" not in out:
        out.setdefault("Accept-Ranges", "bytes")  # cut from the stored object (RFC 9110 §14.3)
    if compressed:
        # Other clients get a compressed variant (RFC 9110 §12.5.5).
        out = CIMultiDict(cz.identity_headers_vary(out))
    decision = policy.response_decision(path, out.get("Content-Type"))
    if decision.browser_ttl is not None:
        cc = parse_cache_control(", ".join(out.getall("Cache-Control", ())) or None)
        browser = browser_cache_control(decision.browser_ttl, cc, "Cache-Control" in out or "Expires" in out)
        if browser is not None:
            out["Cache-Control"] = browser
    return out


def admit(asked: Asked, status: int, headers: CIMultiDict, got, *, content_length: int | None, request_time: float,
          response_time: float, policy, largest: int, may_store: bool = True) -> Admission:
    """Whether and how a response is stored (RFC 9111 §3 and the tenant's
    rules), and the headers its client gets. ``largest``: the largest body
    the store takes; ``may_store`` False: another request stores it."""
    settings = policy.cache
    cc, targeted = edge_cache_control(headers, settings.targeted_fields)
    content_type = headers.get("Content-Type")
    decision = policy.response_decision(asked.path, content_type)

    reason = fr.storable(
        method=asked.method,
        status=status,
        request_cc=asked.cache_control,
        response_cc=cc,
        has_authorization=asked.authorization,
        has_set_cookie="Set-Cookie" in headers,
        strip_set_cookie=settings.strip_set_cookie,
        vary=", ".join(headers.getall("Vary", ())) or None,
        has_expires="Expires" in headers and not targeted,
    )
    if reason is None and decision.bypass:
        reason = fr.NoStore.POLICY
    if reason is None and deceptive(asked.path, content_type, cc):
        reason = fr.NoStore.DECEPTION
    if reason is None and content_length is not None and content_length > largest:
        reason = fr.NoStore.TOO_LARGE
    if reason is None and not may_store:
        reason = fr.NoStore.FILLING
    if reason is None and asked.connection_fields:
        reason = fr.NoStore.CONNECTION

    seconds, source = lifetime(status, headers, cc, decision, settings, response_time, targeted)
    initial_age = fr.initial_age(
        date=headers.get("Date"), age=got.get("Age"), request_time=request_time, response_time=response_time
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
    if reason is not None:
        client = served_headers(status, headers, policy, asked.path, stored=False, compressed=False)
        return Admission(reason, client, None, (), seconds, initial_age)

    if settings.strip_set_cookie:
        # The policy trades the cookie for cacheability, for every client
        # alike, so the first one sees what later hits will see.
        headers.popall("Set-Cookie", None)
    names = vary_names(", ".join(headers.getall("Vary", ())) or None) or ()
    stored = headers
    private = fr.private_fields(cc) + fr.no_cache_fields(cc)
    if private:
        # RFC 9111 §5.2.2.4, §5.2.2.7: the named fields are this client's
        # alone; it still gets them, the stored copy does not.
        stored = headers.copy()
        for name in private:
            stored.popall(name, None)
    extra.update(tag_extra(got))
    if status == 200 and asked.method == "GET":
        client_cc = parse_cache_control(", ".join(headers.getall("Cache-Control", ())) or None) if targeted else cc
        if cz.compressible(status, content_type, headers.get("Content-Encoding"),
                           "no-transform" in client_cc or "no-transform" in cc, content_length):
            extra["cz"] = 1
    meta = Meta(
        status=status,
        # Stored with the targeted fields: a later 304 is read against them.
        headers=tuple(stored.items()),
        request_time=request_time,
        response_time=response_time,
        initial_age=initial_age,
        lifetime=seconds,
        vary=names,
        detail=source,
        extra=extra,
    )
    client = served_headers(status, headers, policy, asked.path, stored=True, compressed=bool(extra.get("cz")))
    return Admission(None, client, meta, names, seconds, initial_age)


def revalidated(old: Meta, fresh: CIMultiDict, got, *, path: str, request_time: float, response_time: float,
                policy) -> Revalidated:
    """The stored response ``old`` after the origin validated it: a 304, or
    a 200 to HEAD that describes it (RFC 9111 §4.3.4, §4.3.5, §3.2).
    ``fresh``: that answer's headers as forwarded (taken apart here)."""
    if "Server" not in got:
        fresh.popall("Server", None)  # the edge's stand-in, not the origin's word
    cookies = fresh.popall("Set-Cookie", [])
    headers = CIMultiDict(updated_headers(old.headers, fresh))
    settings = policy.cache
    cc, targeted = edge_cache_control(headers, settings.targeted_fields)
    decision = policy.response_decision(path, headers.get("Content-Type"))
    seconds, source = lifetime(old.status, headers, cc, decision, settings, response_time, targeted)
    # §4.2.3 with the 304's Date and Age: the validation made it new.
    initial_age = fr.initial_age(
        date=fresh.get("Date"), age=got.get("Age"), request_time=request_time, response_time=response_time
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
    new_vary = vary_names(", ".join(headers.getall("Vary", ())) or None) or ()
    new_tags = tag_extra(got).get("tags")
    # The origin withdrew consent to storing (§3), or changed how the entry
    # is keyed or tagged: served once, then fetched anew.
    keep = not (
        "no-store" in cc
        or cc.field_names("private") == ()
        or tuple(new_vary) != tuple(old.vary)
        or (new_tags is not None and new_tags != old.extra.get("tags"))
    )
    return Revalidated(meta, cookies, keep)
