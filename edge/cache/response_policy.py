"""How a tenant's rules meet the origin's answer: pure decisions, no I/O."""
from __future__ import annotations

from edge.cache import freshness as fr
from edge.http.directives import CacheControl

# File extensions whose content is never a page; an HTML or JSON answer for
# such a path is the signature of web cache deception (``/account/x.css``).
STATIC_EXTENSIONS = frozenset(
    "css js mjs png jpg jpeg gif webp avif svg ico woff woff2 ttf otf eot mp4 webm mp3 pdf zip gz txt xml map".split()
)
_DYNAMIC_TYPES = ("text/html", "application/json", "application/xhtml+xml", "text/plain")


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
