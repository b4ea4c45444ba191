"""How a tenant's rules meet the origin's answer: pure decisions, no I/O."""
from __future__ import annotations

from edge.cache import freshness as fr
from edge.http.directives import MAX_TARGETED_LENGTH, CacheControl, parse_cache_control, parse_targeted

# File extensions whose content is never a page; an HTML or JSON answer for
# such a path is the signature of web cache deception (``/account/x.css``).
STATIC_EXTENSIONS = frozenset(
    "css js mjs png jpg jpeg gif webp avif svg ico woff woff2 ttf otf eot mp4 webm mp3 pdf zip gz txt xml map".split()
)
_DYNAMIC_TYPES = ("text/html", "application/json", "application/xhtml+xml", "text/plain")
# What the edge obeys for a targeted field too long to read.
_UNREADABLE = parse_cache_control("no-store")


def edge_lifetime(lifetime: fr.Lifetime, edge_ttl, cc: CacheControl) -> tuple[float, str]:
    """The freshness lifetime the edge applies, and where it came from.

    ``override`` replaces whatever the origin said (including ``no-cache``:
    that is what an override is for); ``default`` fills in only when the
    origin gave no explicit lifetime. Whether the response may be stored at
    all (no-store, private, Set-Cookie ...) is decided elsewhere and no TTL
    rule changes it.
    """
    seconds, source = lifetime.seconds, lifetime.source
    if fr.no_cache_response(cc):
        seconds = 0.0  # RFC 9111 §5.2.2.4: validate before every reuse
    if edge_ttl is not None:
        if edge_ttl.mode == "override":
            return float(edge_ttl.seconds), "policy-override"
        if source in ("none", "heuristic"):
            return float(edge_ttl.seconds), "policy-default"
    return seconds, source


def deceptive(path: str, content_type: str | None, cc: CacheControl) -> bool:
    """Web cache deception: ``/account/settings/x.css`` answered with a page.

    Cacheability must come from the origin's answer, not from how the URL
    ends: a dynamic type on a static-looking path is not stored unless the
    origin explicitly made it shareable (``public`` or ``s-maxage``).
    """
    if cc.has("public") or cc.s_maxage is not None:
        return False
    dot = path.rfind(".")
    if dot < 0 or "/" in path[dot:]:
        return False
    ext = path[dot + 1 :].lower()
    if ext not in STATIC_EXTENSIONS:
        return False
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if ext in ("txt", "map") and media == "text/plain" or ext == "xml" and media.endswith("xml"):
        return False
    return media.startswith(_DYNAMIC_TYPES)


def browser_cache_control(browser_ttl, cc: CacheControl, origin_spoke: bool) -> str | None:
    """The Cache-Control clients see, or None to pass the origin's.

    ``origin_spoke``: the response had Cache-Control or Expires. A rule never
    loosens what the origin said about privacy (no-store, private).
    """
    if browser_ttl is None:
        return None
    if cc.has("no-store") or cc.has("private"):
        return None
    if browser_ttl.mode == "default" and origin_spoke:
        return None
    return f"max-age={browser_ttl.seconds}"


def edge_cache_control(headers, targets: tuple[str, ...]) -> tuple[CacheControl, bool]:
    """The directives this edge obeys, and whether a targeted field supplied them.

    RFC 9213 §2.2: the first field of the target list with a valid, non-empty
    value replaces Cache-Control *and* Expires for this cache; one that is
    empty or not a valid Structured Field Dictionary is ignored as if absent
    (§2.1); when none is left, Cache-Control applies as usual, leniently.
    One longer than MAX_TARGETED_LENGTH reads as ``no-store``.
    ``headers`` is a CIMultiDict.
    """
    for name in targets:
        values = headers.getall(name, ())
        if values:
            value = ", ".join(values)
            if len(value) > MAX_TARGETED_LENGTH:
                # Too long to read, not malformed: whatever the origin told
                # the CDN is unknown, so nothing is stored (fail closed).
                return _UNREADABLE, True
            cc = parse_targeted(value)
            if cc is not None:
                return cc, True
    return parse_cache_control(", ".join(headers.getall("Cache-Control", ())) or None), False


def stale_windows(cc: CacheControl) -> dict:
    """What ``Meta.extra`` keeps of the origin's RFC 5861 directives and of
    the directives that forbid serving stale (RFC 9111 §4.2.4): ``swr`` and
    ``sie`` in seconds when the origin named them, ``nostale`` when stale
    may never be served without validation."""
    out: dict = {}
    for name, key in (("stale-while-revalidate", "swr"), ("stale-if-error", "sie")):
        seconds = cc.seconds(name)
        if isinstance(seconds, int):
            out[key] = seconds
    if "must-revalidate" in cc or "proxy-revalidate" in cc or fr.no_cache_response(cc):
        out["nostale"] = True
    elif "s-maxage" in cc:
        # §5.2.2.10: s-maxage carries proxy-revalidate; only the origin's own
        # RFC 5861 directives beside it allow stale serving, not the tenant's.
        out["origin_only"] = True
    return out


def stale_window(extra: dict, kind: str, tenant_default: int) -> int:
    """Seconds past expiry that a stored response may be served for
    ``kind`` ("swr" or "sie"): the origin's value, else the tenant's."""
    if extra.get("nostale"):
        return 0
    seconds = extra.get(kind)
    if seconds is None:
        return 0 if extra.get("origin_only") else tenant_default
    return seconds
