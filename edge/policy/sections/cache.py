"""The ``cache`` section (and the ``key`` object a rule may carry too):
whether and how long responses are kept, and what tells them apart."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from edge.cache.key import KeyOptions
from edge.http.headers import forwardable_name
from edge.schema.check import BAD, BOOL, FRACTION, MISSING, Check, boolean, fraction, int_in, join, one_of
from edge.schema.values import size_in

MAX_SECONDS = 31_536_000  # one year: RFC 9111 §1.2.2 suggests no more for "never expires"
MAX_OBJECT_SIZE = 1 << 40  # 1 TiB
MAX_DISK_QUOTA = 1 << 50  # 1 PiB, the node's bound on its disk tier
DEFAULT_MAX_OBJECT_SIZE = 1 << 30  # 1 GiB
# RFC 9111 §4.2.2: a typical heuristic is 10% of the time since Last-Modified.
DEFAULT_HEURISTIC_FRACTION = 0.1
DEFAULT_HEURISTIC_MAX = 86_400

KEYS: dict[str, tuple[str, ...]] = {
    "cache": ("enabled", "max_object_size", "strip_set_cookie", "heuristic_fraction", "heuristic_max",
              "stale_while_revalidate", "stale_if_error", "client_no_cache", "targeted_field", "disk_quota", "key"),
    "key": ("tracking_params", "drop_params", "keep_params", "sort_params", "headers", "cookies"),
}

SECONDS = f"an integer number of seconds 0..{MAX_SECONDS}"
UNITS = "B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
SIZE = f'a size: bytes as an integer, or a string with a unit {UNITS} like "1.5MiB"'
DISK_QUOTA = ("null (the node's cache.tenant_disk_quota) or a size from 1 byte to 1048576GiB (1 PiB): bytes as an"
              f' integer, or a string with a unit {UNITS} like "2GB"')
PARAM = 'a query parameter name, optionally ending in "*"'
PARAMS = "a list of query parameter names"
KEEP_PARAMS = "null or a list of query parameter names"
HEADER = 'a header name of letters, digits and "-" (cookies go in "cookies")'
HEADERS = "a list of header names"
COOKIE = "a cookie name"
COOKIES = "a list of cookie names"
CLIENT_NO_CACHE = '"revalidate" or "ignore"'
TARGETED_FIELD = 'a header field name such as "Edge-Cache-Control" (not Cache-Control, Expires or Pragma), or null'


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool
    max_object_size: int  # bytes
    strip_set_cookie: bool
    heuristic_fraction: float
    heuristic_max: int  # seconds
    key: KeyOptions
    # RFC 5861 windows (seconds) used when the origin's Cache-Control names none.
    stale_while_revalidate: int = 0
    stale_if_error: int = 0
    # "revalidate" (RFC 9111 §5.2.1.4): a client's no-cache / max-age=0 makes the
    # edge validate with the origin. "ignore": such requests are served from
    # cache like any other, which shields the origin from forced reloads.
    client_no_cache: Literal["revalidate", "ignore"] = "revalidate"
    # RFC 9213 targeted fields, in order of precedence; the first present with
    # a valid value replaces Cache-Control (and Expires) for the edge.
    targeted_fields: tuple[str, ...] = ("cdn-cache-control", "surrogate-control")
    # Bytes of the node's disk tier this tenant may hold before its own least
    # recently used entries go; None: the node's cache.tenant_disk_quota.
    disk_quota: int | None = None


seconds = int_in(0, MAX_SECONDS)  # TTLs and windows

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_PARAM_RE = re.compile(r"[^\s=&#*]+\*?|\*")


def _param(v: object) -> Any:
    return v if isinstance(v, str) and _PARAM_RE.fullmatch(v) else BAD


def _header(v: object) -> Any:
    # Only names the edge forwards: a keyed header the origin never sees
    # would split the cache for nothing.
    if not isinstance(v, str) or not forwardable_name(v):
        return BAD
    # A Cookie header in the key would give every visitor their own copy.
    return BAD if v.lower() == "cookie" else v.lower()


def _cookie(v: object) -> Any:
    return v if isinstance(v, str) and _TOKEN_RE.fullmatch(v) else BAD


_quota_size = size_in(1, MAX_DISK_QUOTA)


def _disk_quota(v: object) -> Any:
    return None if v is None else _quota_size(v)


_STANDARD_TARGETS = ("cdn-cache-control", "surrogate-control")


def _targeted_field(v: object) -> Any:
    if v is None:
        return None
    if not isinstance(v, str) or not _TOKEN_RE.fullmatch(v) or v.lower() in ("cache-control", "expires", "pragma"):
        return BAD
    return v.lower()


def _targeted_fields(name: str | None) -> tuple[str, ...]:
    # RFC 9213 §2.1: a more specific field first, then the CDN-wide ones.
    if name is None or name in _STANDARD_TARGETS:
        return _STANDARD_TARGETS
    return (name, *_STANDARD_TARGETS)


def parse_key_fields(c: Check, raw: object, path: str) -> dict[str, Any]:
    """A ``key`` object -> only the fields present, so that a rule's key can replace just those."""
    o = c.object(raw, path, "key")
    if o is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("tracking_params", "drop_params"):
        if name in o:
            out[name] = c.list(o, path, name, (), PARAMS, PARAM, _param)
    if "keep_params" in o:
        out["keep_params"] = None
        if o["keep_params"] is not None:
            out["keep_params"] = c.list(o, path, "keep_params", None, KEEP_PARAMS, PARAM, _param)
    if "sort_params" in o:
        out["sort_params"] = c.get(o, path, "sort_params", True, BOOL, boolean)
    if "headers" in o:
        out["headers"] = c.list(o, path, "headers", (), HEADERS, HEADER, _header)
    if "cookies" in o:
        out["cookies"] = c.list(o, path, "cookies", (), COOKIES, COOKIE, _cookie)
    return out


def parse_cache(c: Check, raw: object, path: str) -> CacheSettings:
    o = {} if raw is MISSING else c.object(raw, path, "cache") or {}
    key = KeyOptions()
    if "key" in o:
        key = KeyOptions(**parse_key_fields(c, o["key"], join(path, "key")))
    return CacheSettings(
        enabled=c.get(o, path, "enabled", True, BOOL, boolean),
        max_object_size=c.get(o, path, "max_object_size", DEFAULT_MAX_OBJECT_SIZE, SIZE,
                              size_in(1, MAX_OBJECT_SIZE)),
        strip_set_cookie=c.get(o, path, "strip_set_cookie", False, BOOL, boolean),
        heuristic_fraction=c.get(o, path, "heuristic_fraction", DEFAULT_HEURISTIC_FRACTION, FRACTION, fraction),
        heuristic_max=c.get(o, path, "heuristic_max", DEFAULT_HEURISTIC_MAX, SECONDS, seconds),
        key=key,
        stale_while_revalidate=c.get(o, path, "stale_while_revalidate", 0, SECONDS, seconds),
        stale_if_error=c.get(o, path, "stale_if_error", 0, SECONDS, seconds),
        client_no_cache=c.get(o, path, "client_no_cache", "revalidate", CLIENT_NO_CACHE, one_of("revalidate", "ignore")),
        targeted_fields=_targeted_fields(c.get(o, path, "targeted_field", None, TARGETED_FIELD, _targeted_field)),
        disk_quota=c.get(o, path, "disk_quota", None, DISK_QUOTA, _disk_quota),
    )


def key_data(key: KeyOptions) -> dict[str, Any]:
    return {
        "tracking_params": list(key.tracking_params),
        "drop_params": list(key.drop_params),
        "keep_params": None if key.keep_params is None else list(key.keep_params),
        "sort_params": key.sort_params,
        "headers": list(key.headers),
        "cookies": list(key.cookies),
    }


def cache_data(cache: CacheSettings) -> dict[str, Any]:
    return {
        "enabled": cache.enabled,
        "max_object_size": cache.max_object_size,
        "strip_set_cookie": cache.strip_set_cookie,
        "heuristic_fraction": cache.heuristic_fraction,
        "heuristic_max": cache.heuristic_max,
        "stale_while_revalidate": cache.stale_while_revalidate,
        "stale_if_error": cache.stale_if_error,
        "client_no_cache": cache.client_no_cache,
        "targeted_field": cache.targeted_fields[0] if len(cache.targeted_fields) > 2 else None,
        "disk_quota": cache.disk_quota,
        "key": key_data(cache.key),
    }
