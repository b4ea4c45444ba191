"""Whether and how a response is stored, and the headers clients see."""
from __future__ import annotations

import time
from dataclasses import dataclass

from multidict import CIMultiDict

from edge.cache import compress as cz
from edge.cache import freshness as fr
from edge.cache.purge import tag_extra
from edge.cache.response_policy import (
    browser_cache_control,
    deceptive,
    edge_cache_control,
    edge_lifetime,
    stale_window,
    stale_windows,
)
from edge.cache.key import vary_names
from edge.cache.store import Meta
from edge.http.directives import parse_cache_control
from edge.http.headers import HOP_BY_HOP, connection_tokens

# Connection tokens that are options, not names of fields to remove.
CONNECTION_OPTIONS = HOP_BY_HOP | {"close"}
_NO_CC = parse_cache_control(None)


@dataclass(slots=True)
class Decision:
    reason: fr.NoStore | None
    headers: CIMultiDict  # for the client
    meta: Meta | None  # to store, when reason is None
    names: tuple[str, ...]  # Vary
    seconds: float
    initial_age: float


def strip_targeted(headers: CIMultiDict, targets: tuple[str, ...]) -> None:
    """RFC 9213 fields are for this edge, not for clients or browsers."""
    for name in targets:
        if name in headers:
            headers.popall(name, None)


def lifetime(status: int, headers, cc, decision, settings, response_time: float, targeted: bool = False) -> tuple[float, str]:
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


def template(meta: Meta, policy, path: str) -> CIMultiDict:
    """Stored headers as served, built once per memory entry and policy
    version, so that a changed browser TTL reaches entries already cached."""
    tpl = meta.template
    if tpl is None or meta.template_version != policy.version:
        tpl = CIMultiDict(meta.headers)
        strip_targeted(tpl, policy.cache.targeted_fields)
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


def store_decision(request, ctx, policy, store, headers: CIMultiDict, upstream, request_time, may_store: bool) -> Decision:
    """Whether and how a response is stored (RFC 9111 §3 and the
    tenant's rules), and the headers the client gets. ``headers``: the
    origin's, as forwarded."""
    response_time = time.time()
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
        if clen > settings.max_object_size or clen > store.max_memory_object and not store.can_stream:
            reason = fr.NoStore.TOO_LARGE
    if reason is None and not may_store:
        reason = fr.NoStore.FILLING
    if reason is None:
        conn = request.headers.getall("Connection", ())
        if conn and connection_tokens(conn) - CONNECTION_OPTIONS:
            # Fields the client had removed on the way to the origin may
            # be in the key or select a variant: the answer is not shared.
            reason = fr.NoStore.CONNECTION

    seconds, source = lifetime(status, headers, cc, decision, settings, response_time, targeted)
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
        strip_targeted(headers, settings.targeted_fields)
        if browser_cc is not None:
            headers["Cache-Control"] = browser_cc
        return Decision(reason, headers, None, (), seconds, initial_age)

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
    strip_targeted(headers, settings.targeted_fields)
    if extra.get("cz"):
        headers = CIMultiDict(cz.identity_headers_vary(headers))
    if browser_cc is not None:
        headers["Cache-Control"] = browser_cc
    return Decision(None, headers, meta, names or (), seconds, initial_age)

