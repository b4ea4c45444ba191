"""Validation: JSON data -> TenantPolicy, reporting every error of a file at once.

The accepted keys of every object are in ``OBJECT_KEYS``; the validator
rejects anything else, and a unit test walks these tables against
``policies/schema.json`` so that the two cannot drift apart.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from edge.http.headers import forwardable_name
from edge.cache.key import KeyOptions
from edge.config import ISO_COUNTRIES
from edge.http.urls import hostname, ip_literal, normalize_host, split_url
from edge.origin.guard import SET_BY, SET_BY_EXPECTED
from edge.filters.under_attack import KEYS as UNDER_ATTACK_KEYS
from edge.filters.under_attack import NO_UNDER_ATTACK, parse_under_attack, under_attack_data
from edge.observe.events import KEYS as EVENT_KEYS
from edge.observe.events import EventSettings, events_data, parse_events
from edge.waf.settings import KEYS as WAF_KEYS
from edge.filters.request_limits import KEYS as REQUEST_LIMIT_KEYS
from edge.filters.request_limits import parse_request_limits, request_limits_data
from edge.waf.settings import parse_waf
from edge.policy.errors import MISSING, FieldError, PolicyError, show
from edge.policy.match import Match
from edge.policy.model import (
    DEFAULT_REQUEST_LIMITS,
    DEFAULT_WAF,
    NO_CIDRS,
    CacheSettings,
    CidrSet,
    Delivery,
    Failover,
    Filters,
    IpLists,
    IPNetwork,
    OriginSpec,
    RateLimits,
    RateRule,
    Rule,
    TenantPolicy,
    Ttl,
)

# --- bounds and defaults (one place) -----------------------------------------

TENANT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_SECONDS = 31_536_000  # one year: RFC 9111 §1.2.2 suggests no more for "never expires"
MAX_TIMEOUT = 3600.0
MAX_CONNECTIONS = 10_000
MAX_FAILURES_BEFORE_DOWN = 1000
MAX_RULES = 1000
MAX_OBJECT_SIZE = 1 << 40  # 1 TiB
MAX_DISK_QUOTA = 1 << 50  # 1 PiB, the node's bound on its disk tier
MAX_EXEMPT_CIDRS = 10_000
MAX_FILTER_CIDRS = 100_000  # per list; the 1 MiB file limit allows some 50,000
MAX_RATE_RULES = 100
MAX_RATE = 1_000_000.0  # requests per second
MAX_BURST = 1_000_000_000

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_RETRY_ON_STATUS = frozenset({502, 503, 504})
DEFAULT_FAILURES_BEFORE_DOWN = 3
DEFAULT_COOLDOWN = 10.0
DEFAULT_MAX_OBJECT_SIZE = 1 << 30  # 1 GiB
# RFC 9111 §4.2.2: a typical heuristic is 10% of the time since Last-Modified.
DEFAULT_HEURISTIC_FRACTION = 0.1
DEFAULT_HEURISTIC_MAX = 86_400

# --- the accepted shape ----------------------------------------------------------

COMMENT = "$comment"  # allowed in every object, ignored

OBJECT_KEYS: dict[str, tuple[str, ...]] = {
    # "$schema" lets editors find policies/schema.json; it is ignored.
    "policy": ("$schema", "hosts", "origins", "origin_failover", "cache", "rules", "rules_case_insensitive",
               "delivery", "filters"),
    "origin": ("url", "host_header", "connect_timeout", "read_timeout", "max_connections", "set_by"),
    "failover": ("retry_on_status", "failures_before_down", "cooldown"),
    "cache": ("enabled", "max_object_size", "strip_set_cookie", "heuristic_fraction", "heuristic_max",
              "stale_while_revalidate", "stale_if_error", "client_no_cache", "targeted_field", "disk_quota", "key"),
    "key": ("tracking_params", "drop_params", "keep_params", "sort_params", "headers", "cookies"),
    "rule": ("match", "edge_ttl", "browser_ttl", "bypass", "key"),
    "match": ("path_prefix", "path_glob", "content_type"),
    "ttl": ("override", "default"),
    "delivery": ("allow_countries", "deny_countries", "unknown", "action", "redirect_url",
                 "exempt_cidrs", "edge_countries", "in_region_url"),
    "filters": ("ip_lists", "request_limits", "rate_limits", "under_attack", "waf", "events"),
    **REQUEST_LIMIT_KEYS,
    **UNDER_ATTACK_KEYS,
    **WAF_KEYS,
    **EVENT_KEYS,
    "ip_lists": ("mode", "allow", "deny"),
    "rate_limits": ("mode", "rules"),
    "rate_rule": ("id", "path_prefix", "per", "rate", "burst"),
}

# (object kind, key) -> (kind of the value's objects, whether the value is a list of them)
NESTED: dict[tuple[str, str], tuple[str, bool]] = {
    ("policy", "origins"): ("origin", True),
    ("policy", "origin_failover"): ("failover", False),
    ("policy", "cache"): ("cache", False),
    ("policy", "rules"): ("rule", True),
    ("policy", "delivery"): ("delivery", False),
    ("policy", "filters"): ("filters", False),
    ("filters", "ip_lists"): ("ip_lists", False),
    ("filters", "rate_limits"): ("rate_limits", False),
    ("filters", "under_attack"): ("under_attack", False),
    ("filters", "waf"): ("waf", False),
    ("filters", "request_limits"): ("request_limits", False),
    ("waf", "exclusions"): ("waf_exclusion", True),
    ("filters", "events"): ("events", False),
    ("rate_limits", "rules"): ("rate_rule", True),
    ("cache", "key"): ("key", False),
    ("rule", "match"): ("match", False),
    ("rule", "edge_ttl"): ("ttl", False),
    ("rule", "browser_ttl"): ("ttl", False),
    ("rule", "key"): ("key", False),
}


def accepted_paths() -> set[str]:
    """Every key path the validator accepts, as ``origins[].url``; lists are marked ``[]``."""
    paths: set[str] = set()

    def walk(kind: str, prefix: str) -> None:
        for key in (COMMENT, *OBJECT_KEYS[kind]):
            path = f"{prefix}{key}"
            paths.add(path)
            nested = NESTED.get((kind, key))
            if nested is not None:
                walk(nested[0], f"{path}[]." if nested[1] else f"{path}.")

    walk("policy", "")
    return paths


# --- messages --------------------------------------------------------------------

SECONDS = f"an integer number of seconds 0..{MAX_SECONDS}"
TIMEOUT = f"a number of seconds > 0 and <= {MAX_TIMEOUT:g}"
BOOL = "true or false"
HOST = 'a hostname, an IP address, "*.suffix" or "*"'
HOSTS = "a non-empty list of hosts"
ORIGINS = "a non-empty list of origins"
URL = "an absolute http:// or https:// URL with a host and no path, query or fragment"
HOST_HEADER = "a hostname or IP address with an optional :port"
SIZE = 'a size: bytes as an integer, or a string with a unit B, KB, KiB, MB, MiB, GB or GiB like "1.5MiB"'
DISK_QUOTA = ("null (the node's cache.tenant_disk_quota) or a size from 1 byte to 1048576GiB (1 PiB): bytes as an"
              ' integer, or a string with a unit B, KB, KiB, MB, MiB, GB or GiB like "2GB"')
STATUS = "an HTTP status code 400..599"
STATUS_LIST = "a list of HTTP status codes"
FRACTION = "a number 0..1"
PARAM = 'a query parameter name, optionally ending in "*"'
PARAMS = "a list of query parameter names"
KEEP_PARAMS = "null or a list of query parameter names"
HEADER = 'a header name of letters, digits and "-" (cookies go in "cookies")'
HEADERS = "a list of header names"
COOKIE = "a cookie name"
COOKIES = "a list of cookie names"
PATH = 'a path starting with "/" (printable ASCII; percent-encode the rest)'
MEDIA_TYPE = 'a media type like "text/html" or "image/*"'
MEDIA_TYPES = "a non-empty list of media types"
TTL_ONE = 'exactly one of "override" or "default"'
RULES = f"a list of at most {MAX_RULES} rules"
RULE_EMPTY = 'at least one of "edge_ttl", "browser_ttl", "bypass" or "key"'
RULE_KEY = '"key" only on rules without a "content_type" condition (the cache key is chosen before the response exists)'
OBJECT = "an object"
TENANT = f"a tenant id matching ^{TENANT_ID_RE.pattern}$"
STRING = "a string"
COUNTRY = 'an ISO 3166-1 alpha-2 country code such as "DE"'
COUNTRIES = "a list of ISO 3166-1 alpha-2 country codes"
UNKNOWN = '"allow" or "deny"'
ACTION = '"block" or "redirect"'
CIDR = 'an IP network such as "192.0.2.0/24" or "2001:db8::/32"'
CIDRS = f"a list of at most {MAX_EXEMPT_CIDRS} IP networks"
REDIRECT_URL = 'an absolute https:// URL without user info, such as "https://example.de/unavailable"'
REDIRECT_NEEDED = REDIRECT_URL + ' (required when "action" is "redirect")'
REDIRECT_UNUSED = 'null unless "action" is "redirect"'
IN_REGION_URL = 'an absolute https:// URL without user info, query or fragment, such as "https://de.cdn.example.de"'
IN_REGION_UNUSED = 'null unless "edge_countries" lists countries'
FILTER_MODE = '"block", "log" or "off"'
FILTER_CIDRS = f"a list of at most {MAX_FILTER_CIDRS} IP networks"
RATE_RULES = f"a list of at most {MAX_RATE_RULES} rules"
RULE_ID = 'an id of 1 to 64 letters, digits, "_" or "-"'
RULE_ID_UNIQUE = "an id no other rule of the list has"
PER = '"client" or "tenant"'
RATE = f"a number of requests per second > 0 and <= {MAX_RATE:g}"
BURST = f"an integer 1..{MAX_BURST}"
CLIENT_NO_CACHE = '"revalidate" or "ignore"'
TARGETED_FIELD = 'a header field name such as "Edge-Cache-Control" (not Cache-Control, Expires or Pragma), or null'


# --- scalar converters: value -> normalised value, or _BAD -------------------------

_BAD: Any = object()


def _int_in(lo: int, hi: int) -> Callable[[object], Any]:
    def convert(v: object) -> Any:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        return v if ok else _BAD

    return convert


def _seconds_number(lo_exclusive: float, hi: float) -> Callable[[object], Any]:
    def convert(v: object) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return _BAD
        return float(v) if lo_exclusive < v <= hi else _BAD

    return convert


def _fraction(v: object) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        return _BAD
    return float(v)


def _boolean(v: object) -> Any:
    return v if isinstance(v, bool) else _BAD


def _string(v: object) -> Any:
    return v if isinstance(v, str) else _BAD


_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(b|kb|kib|mb|mib|gb|gib)", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def parse_size(value: object) -> int:
    """``1048576``, ``"1MiB"``, ``"1.5 gb"`` -> bytes (fractions of a byte are dropped).

    Raises ValueError for anything else, including negative numbers.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("negative size")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value.strip())
        if m is not None:
            try:
                return int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()])
            except InvalidOperation:  # pragma: no cover - the regex admits only decimals
                pass
    raise ValueError(f"not a size: {value!r}")


def _size_up_to(hi: int) -> Callable[[object], Any]:
    def convert(v: object) -> Any:
        try:
            n = parse_size(v)
        except ValueError:
            return _BAD
        return n if 1 <= n <= hi else _BAD

    return convert


_size = _size_up_to(MAX_OBJECT_SIZE)
_quota_size = _size_up_to(MAX_DISK_QUOTA)


def _disk_quota(v: object) -> Any:
    return None if v is None else _quota_size(v)


def _host(v: object) -> Any:
    if not isinstance(v, str):
        return _BAD
    return normalize_host(v) or _BAD


def _origin_url(v: object) -> Any:
    """-> (url, scheme, host, port)"""
    if not isinstance(v, str) or any(ch.isspace() or ord(ch) < 32 for ch in v):
        return _BAD
    u = split_url(v)
    if u is None or u.rest not in ("", "/"):
        return _BAD
    return (u.origin, u.scheme, u.address, u.effective_port)


def _host_header(v: object) -> Any:
    if not isinstance(v, str):
        return _BAD
    if v.startswith("["):
        host, _, rest = v.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            return _BAD
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = v.partition(":")
        port = port_text if sep else None
    name = ip_literal(host) or hostname(host)
    if name is None:
        return _BAD
    if port is None:
        return name
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return _BAD
    return f"{name}:{int(port)}"


_status = _int_in(400, 599)


_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2
_PARAM_RE = re.compile(r"[^\s=&#*]+\*?|\*")


def _param(v: object) -> Any:
    return v if isinstance(v, str) and _PARAM_RE.fullmatch(v) else _BAD


def _header(v: object) -> Any:
    # Only names the edge forwards: a keyed header the origin never sees
    # would split the cache for nothing.
    if not isinstance(v, str) or not forwardable_name(v):
        return _BAD
    # A Cookie header in the key would give every visitor their own copy.
    return _BAD if v.lower() == "cookie" else v.lower()


def _cookie(v: object) -> Any:
    return v if isinstance(v, str) and _TOKEN_RE.fullmatch(v) else _BAD


_ESCAPE_RE = re.compile(r"%[0-9a-fA-F]{2}")


def _path(v: object) -> Any:
    if not isinstance(v, str) or not v.startswith("/") or not all(33 <= ord(ch) <= 126 for ch in v):
        return _BAD
    # Request paths are matched in normalised form, with escapes in upper
    # case (RFC 3986 §6.2.2.1); "%c3%a9" in a policy must match them too.
    return _ESCAPE_RE.sub(lambda m: m.group(0).upper(), v)


_MEDIA_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 §4.2
_MEDIA_RE = re.compile(rf"{_MEDIA_NAME}/(?:{_MEDIA_NAME}|\*)")


def _media_type(v: object) -> Any:
    if not isinstance(v, str):
        return _BAD
    v = v.strip().lower()
    return v if _MEDIA_RE.fullmatch(v) else _BAD


def _country(v: object) -> Any:
    if not isinstance(v, str) or v.upper() not in ISO_COUNTRIES:
        return _BAD
    return v.upper()


def _one_of(*choices: str) -> Callable[[object], Any]:
    def convert(v: object) -> Any:
        return v if isinstance(v, str) and v in choices else _BAD

    return convert


_CIDR_RE = re.compile(r"[0-9A-Fa-f:.]+(?:/[0-9]{1,3})?")


def _cidr(v: object) -> IPNetwork | str | None:
    """"192.0.2.0/24" -> the network; a bare address is one host; host bits set -> the
    network it would widen to, as text; anything else -> None."""
    # Only address/length: ipaddress would also take netmasks, integers and tuples.
    if not isinstance(v, str) or not _CIDR_RE.fullmatch(v):
        return None
    try:
        return ipaddress.ip_network(v)
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        return None


_URI_RE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")  # RFC 3986 characters only
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _https_url(v: object, *, path_only: bool) -> Any:
    """An absolute https URL for a Location or Link header -> the URL, scheme in lower case.

    RFC 3986 characters only: no whitespace, quotes, ``<``/``>`` or backslashes
    that could break a header or be read differently by a browser.
    """
    if not isinstance(v, str) or not _URI_RE.fullmatch(v) or _BAD_ESCAPE_RE.search(v):
        return _BAD
    if split_url(v, ("https",)) is None:
        return _BAD
    if path_only and ("?" in v or "#" in v):
        return _BAD
    return "https" + v[v.index(":"):]


def _redirect_url(v: object) -> Any:
    return _https_url(v, path_only=False)


def _in_region_url(v: object) -> Any:
    url = _https_url(v, path_only=True)
    # The request's path is appended, which starts with "/".
    return url if url is _BAD else url.rstrip("/")


# --- the checker -----------------------------------------------------------------

_IDENT_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


def _join(path: str, key: str) -> str:
    if not _IDENT_RE.fullmatch(key):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


class _Check:
    """Collects errors instead of stopping at the first, so one run shows them all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[FieldError] = []

    def fail(self, path: str, expected: str, found: object, *, literal: bool = False) -> None:
        text = found if literal and isinstance(found, str) else show(found)
        self.errors.append(FieldError(self.source, path, expected, text))

    def object(self, value: object, path: str, kind: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, OBJECT, value)
            return None
        allowed = OBJECT_KEYS[kind]
        for key in value:
            if key == COMMENT or key in allowed:
                continue
            self.fail(_join(path, key), _known_key(key, allowed), "an unknown key", literal=True)
        # Set by the loader's JSON reader: a repeated key would silently override the first.
        for key in getattr(value, "duplicates", ()):
            self.fail(_join(path, key), "each key once", "it more than once", literal=True)
        return value

    def get(self, obj: dict[str, Any], path: str, key: str, default: Any, expected: str,
            convert: Callable[[object], Any]) -> Any:
        value = obj.get(key, MISSING)
        if value is MISSING:
            return default
        out = convert(value)
        if out is _BAD:
            self.fail(_join(path, key), expected, value)
            return default
        return out

    def list(self, obj: dict[str, Any], path: str, key: str, default: Any, expected: str,
             item_expected: str, convert: Callable[[object], Any], *, non_empty: bool = False) -> Any:
        value = obj.get(key, MISSING)
        if value is MISSING:
            return default
        where = _join(path, key)
        if not isinstance(value, list) or (non_empty and not value):
            self.fail(where, expected, value)
            return default
        out: dict[Any, None] = {}  # ordered and de-duplicated: a host may be listed twice
        for i, item in enumerate(value):
            converted = convert(item)
            if converted is _BAD:
                self.fail(f"{where}[{i}]", item_expected, item)
            else:
                out[converted] = None
        return tuple(out)


def _known_key(key: str, allowed: Iterable[str]) -> str:
    names = list(allowed)
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f'a known key (did you mean "{close[0]}"?)'
    return "one of the keys " + ", ".join(names)


# --- objects ---------------------------------------------------------------------


def _origin(c: _Check, raw: object, path: str) -> OriginSpec | None:
    o = c.object(raw, path, "origin")
    if o is None:
        return None
    before = len(c.errors)
    if "url" not in o:
        c.fail(_join(path, "url"), URL, MISSING)
    parsed = c.get(o, path, "url", None, URL, _origin_url)
    host_header = None
    if o.get("host_header") is not None:
        host_header = c.get(o, path, "host_header", None, HOST_HEADER, _host_header)
    timeout = _seconds_number(0.0, MAX_TIMEOUT)
    connect = c.get(o, path, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, TIMEOUT, timeout)
    read = c.get(o, path, "read_timeout", DEFAULT_READ_TIMEOUT, TIMEOUT, timeout)
    conns = c.get(o, path, "max_connections", DEFAULT_MAX_CONNECTIONS,
                  f"an integer 1..{MAX_CONNECTIONS}", _int_in(1, MAX_CONNECTIONS))
    set_by = c.get(o, path, "set_by", "operator", SET_BY_EXPECTED, _one_of(*SET_BY))
    if len(c.errors) > before or parsed is None:
        return None
    url, scheme, host, port = parsed
    return OriginSpec(url, scheme, host, port, host_header, connect, read, conns, set_by)


def _failover(c: _Check, raw: object, path: str) -> Failover:
    default = Failover(DEFAULT_RETRY_ON_STATUS, DEFAULT_FAILURES_BEFORE_DOWN, DEFAULT_COOLDOWN)
    if raw is MISSING:
        return default
    o = c.object(raw, path, "failover")
    if o is None:
        return default
    statuses = c.list(o, path, "retry_on_status", DEFAULT_RETRY_ON_STATUS, STATUS_LIST, STATUS, _status)
    return Failover(
        frozenset(statuses),
        c.get(o, path, "failures_before_down", DEFAULT_FAILURES_BEFORE_DOWN,
              f"an integer 1..{MAX_FAILURES_BEFORE_DOWN}", _int_in(1, MAX_FAILURES_BEFORE_DOWN)),
        c.get(o, path, "cooldown", DEFAULT_COOLDOWN, TIMEOUT, _seconds_number(0.0, MAX_TIMEOUT)),
    )


def _key_fields(c: _Check, raw: object, path: str) -> dict[str, Any]:
    """Only the fields present, so that a rule's key can replace just those."""
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
        out["sort_params"] = c.get(o, path, "sort_params", True, BOOL, _boolean)
    if "headers" in o:
        out["headers"] = c.list(o, path, "headers", (), HEADERS, HEADER, _header)
    if "cookies" in o:
        out["cookies"] = c.list(o, path, "cookies", (), COOKIES, COOKIE, _cookie)
    return out


def _cache(c: _Check, raw: object, path: str) -> CacheSettings:
    o = {} if raw is MISSING else c.object(raw, path, "cache") or {}
    key = KeyOptions()
    if "key" in o:
        key = KeyOptions(**_key_fields(c, o["key"], _join(path, "key")))
    return CacheSettings(
        enabled=c.get(o, path, "enabled", True, BOOL, _boolean),
        max_object_size=c.get(o, path, "max_object_size", DEFAULT_MAX_OBJECT_SIZE, SIZE, _size),
        strip_set_cookie=c.get(o, path, "strip_set_cookie", False, BOOL, _boolean),
        heuristic_fraction=c.get(o, path, "heuristic_fraction", DEFAULT_HEURISTIC_FRACTION, FRACTION, _fraction),
        heuristic_max=c.get(o, path, "heuristic_max", DEFAULT_HEURISTIC_MAX, SECONDS, _int_in(0, MAX_SECONDS)),
        key=key,
        stale_while_revalidate=c.get(o, path, "stale_while_revalidate", 0, SECONDS, _int_in(0, MAX_SECONDS)),
        stale_if_error=c.get(o, path, "stale_if_error", 0, SECONDS, _int_in(0, MAX_SECONDS)),
        client_no_cache=c.get(o, path, "client_no_cache", "revalidate", CLIENT_NO_CACHE, _one_of("revalidate", "ignore")),
        targeted_fields=_targeted_fields(c.get(o, path, "targeted_field", None, TARGETED_FIELD, _targeted_field)),
        disk_quota=c.get(o, path, "disk_quota", None, DISK_QUOTA, _disk_quota),
    )


_STANDARD_TARGETS = ("cdn-cache-control", "surrogate-control")


def _targeted_field(v: object) -> Any:
    if v is None:
        return None
    if not isinstance(v, str) or not _TOKEN_RE.fullmatch(v) or v.lower() in ("cache-control", "expires", "pragma"):
        return _BAD
    return v.lower()


def _targeted_fields(name: str | None) -> tuple[str, ...]:
    # RFC 9213 §2.1: a more specific field first, then the CDN-wide ones.
    if name is None or name in _STANDARD_TARGETS:
        return _STANDARD_TARGETS
    return (name, *_STANDARD_TARGETS)


def _ttl(c: _Check, o: dict[str, Any], path: str, key: str) -> Ttl | None:
    if key not in o:
        return None
    where = _join(path, key)
    t = c.object(o[key], where, "ttl")
    if t is None:
        return None
    modes = [m for m in ("override", "default") if m in t]
    if len(modes) != 1:
        c.fail(where, TTL_ONE, "both" if modes else "neither", literal=True)
        return None
    seconds = c.get(t, where, modes[0], None, SECONDS, _int_in(0, MAX_SECONDS))
    return None if seconds is None else Ttl(modes[0], seconds)  # type: ignore[arg-type]


def _match(c: _Check, o: dict[str, Any], path: str) -> Match | None:
    if "match" not in o:
        return Match()
    where = _join(path, "match")
    m = c.object(o["match"], where, "match")
    if m is None:
        return None
    return Match(
        path_prefix=c.get(m, where, "path_prefix", None, PATH, _path),
        path_glob=c.get(m, where, "path_glob", None, PATH, _path),
        content_type=c.list(m, where, "content_type", None, MEDIA_TYPES, MEDIA_TYPE, _media_type, non_empty=True),
    )


def _rule(c: _Check, raw: object, path: str, tenant_key: KeyOptions) -> Rule | None:
    o = c.object(raw, path, "rule")
    if o is None:
        return None
    before = len(c.errors)
    match = _match(c, o, path)
    edge_ttl = _ttl(c, o, path, "edge_ttl")
    browser_ttl = _ttl(c, o, path, "browser_ttl")
    bypass = c.get(o, path, "bypass", None, BOOL, _boolean)
    key = None
    if "key" in o:
        fields = _key_fields(c, o["key"], _join(path, "key"))
        if match is not None and match.content_type is not None:
            c.fail(_join(path, "key"), RULE_KEY, '"key" with "content_type"', literal=True)
        else:
            key = dataclasses.replace(tenant_key, **fields)
    if not any(k in o for k in ("edge_ttl", "browser_ttl", "bypass", "key")):
        c.fail(path, RULE_EMPTY, "none", literal=True)
    if len(c.errors) > before or match is None:
        return None
    return Rule(match, edge_ttl, browser_ttl, bypass, key)


def _delivery(c: _Check, raw: object, path: str) -> Delivery:
    default = Delivery()
    if raw is MISSING:
        return default
    o = c.object(raw, path, "delivery")
    if o is None:
        return default
    allow = c.list(o, path, "allow_countries", (), COUNTRIES, COUNTRY, _country)
    deny = c.list(o, path, "deny_countries", (), COUNTRIES, COUNTRY, _country)
    unknown = c.get(o, path, "unknown", "allow", UNKNOWN, _one_of("allow", "deny"))
    action = c.get(o, path, "action", "block", ACTION, _one_of("block", "redirect"))

    # null and absent are the same; an invalid "action" is reported on its
    # own, and the URL is still checked so that one run shows every error.
    redirect_url = None
    raw_redirect = o.get("redirect_url")
    action_valid = o.get("action", "block") in ("block", "redirect")
    if raw_redirect is not None:
        if action_valid and action == "block":
            c.fail(_join(path, "redirect_url"), REDIRECT_UNUSED, raw_redirect)
        else:
            redirect_url = c.get(o, path, "redirect_url", None, REDIRECT_URL, _redirect_url)
    elif action == "redirect":
        c.fail(_join(path, "redirect_url"), REDIRECT_NEEDED, o.get("redirect_url", MISSING))

    exempt = _exempt_cidrs(c, o, path)
    edge = c.list(o, path, "edge_countries", (), COUNTRIES, COUNTRY, _country)

    # Without edge_countries it would never be used: say so rather than ignore it.
    in_region_url = None
    raw_in_region = o.get("in_region_url")
    if raw_in_region is not None:
        raw_edge = o.get("edge_countries", [])
        if isinstance(raw_edge, list) and not raw_edge:
            c.fail(_join(path, "in_region_url"), IN_REGION_UNUSED, raw_in_region)
        else:
            in_region_url = c.get(o, path, "in_region_url", None, IN_REGION_URL, _in_region_url)
    return Delivery(
        allow_countries=frozenset(allow),
        deny_countries=frozenset(deny),
        unknown=unknown,
        action=action,
        redirect_url=redirect_url,
        exempt_cidrs=exempt,
        edge_countries=frozenset(edge),
        in_region_url=in_region_url,
    )


def _exempt_cidrs(c: _Check, o: dict[str, Any], path: str) -> CidrSet:
    return _cidr_list(c, o, path, "exempt_cidrs", MAX_EXEMPT_CIDRS, CIDRS)


def _cidr_list(c: _Check, o: dict[str, Any], path: str, key: str, limit: int, expected: str) -> CidrSet:
    value = o.get(key, MISSING)
    if value is MISSING:
        return NO_CIDRS
    where = _join(path, key)
    if not isinstance(value, list):
        c.fail(where, expected, value)
        return NO_CIDRS
    if len(value) > limit:
        c.fail(where, expected, f"{len(value)} entries", literal=True)
        return NO_CIDRS
    networks: set[IPNetwork] = set()
    for i, item in enumerate(value):
        net = _cidr(item)
        if net is None:
            c.fail(f"{where}[{i}]", CIDR, item)
        elif isinstance(net, str):
            # "192.0.2.1/24" would silently exempt the whole /24: name the
            # network so that the operator decides whether that is meant.
            c.fail(f"{where}[{i}]", f'a network address without host bits, such as "{net}"', item)
        else:
            mapped = net.network_address.ipv4_mapped if net.version == 6 and net.prefixlen >= 96 else None
            if mapped is not None:  # "::ffff:192.0.2.0/120" is 192.0.2.0/24: show it so
                net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
            networks.add(net)
    # Order does not change the meaning, so it does not change the version either.
    return CidrSet(tuple(sorted(networks, key=lambda n: (n.version, int(n.network_address), n.prefixlen))))


_RULE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _rule_id(v: object) -> Any:
    return v if isinstance(v, str) and _RULE_ID_RE.fullmatch(v) else _BAD


def _rate(v: object) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_RATE:
        return _BAD
    return float(v)


_MODE = _one_of("block", "log", "off")


def _filters(c: _Check, raw: object, path: str) -> Filters:
    if raw is MISSING:
        return Filters()
    o = c.object(raw, path, "filters")
    if o is None:
        return Filters()
    ip_lists = IpLists()
    if "ip_lists" in o:
        where = _join(path, "ip_lists")
        i = c.object(o["ip_lists"], where, "ip_lists")
        if i is not None:
            ip_lists = IpLists(
                mode=c.get(i, where, "mode", "block", FILTER_MODE, _MODE),
                allow=_cidr_list(c, i, where, "allow", MAX_FILTER_CIDRS, FILTER_CIDRS),
                deny=_cidr_list(c, i, where, "deny", MAX_FILTER_CIDRS, FILTER_CIDRS),
            )
    rate_limits = RateLimits()
    if "rate_limits" in o:
        where = _join(path, "rate_limits")
        r = c.object(o["rate_limits"], where, "rate_limits")
        if r is not None:
            mode = c.get(r, where, "mode", "off", FILTER_MODE, _MODE)
            rules: list[RateRule] = []
            raw_rules = r.get("rules", [])
            if not isinstance(raw_rules, list) or len(raw_rules) > MAX_RATE_RULES:
                c.fail(_join(where, "rules"), RATE_RULES, raw_rules)
            else:
                seen: set[str] = set()
                for n, raw_rule in enumerate(raw_rules):
                    rule = _rate_rule(c, raw_rule, f"{where}.rules[{n}]", seen)
                    if rule is not None:
                        rules.append(rule)
            rate_limits = RateLimits(mode=mode, rules=tuple(rules))
    def section(name: str, default, parse):
        # A section parsed by its own module: key-checked here, read there.
        if name not in o:
            return default
        where = _join(path, name)
        value = c.object(o[name], where, name)
        return default if value is None else parse(c, value, where)

    under_attack = section("under_attack", NO_UNDER_ATTACK, parse_under_attack)
    request_limits = section("request_limits", DEFAULT_REQUEST_LIMITS, parse_request_limits)
    waf = section("waf", DEFAULT_WAF, lambda c, w, where: parse_waf(c, w, where, waf_rule_ids()))
    events = section("events", EventSettings(), parse_events)
    return Filters(
        ip_lists=ip_lists, rate_limits=rate_limits, under_attack=under_attack, waf=waf, events=events,
        request_limits=request_limits,
    )


_WAF_RULE_IDS: frozenset[str] | None = None


def waf_rule_ids() -> frozenset[str]:
    """The ids of the node's WAF rules, which exclusions must name. The
    node sets them when it loads its rule set; until then the shipped set."""
    global _WAF_RULE_IDS
    if _WAF_RULE_IDS is None:
        from edge.waf.rules import default_rules_dir, load_ruleset

        _WAF_RULE_IDS = load_ruleset(default_rules_dir()).ids
    return _WAF_RULE_IDS


def set_waf_rule_ids(ids: frozenset[str]) -> None:
    global _WAF_RULE_IDS
    _WAF_RULE_IDS = ids


def _rate_rule(c: _Check, raw: object, path: str, seen: set[str]) -> RateRule | None:
    o = c.object(raw, path, "rate_rule")
    if o is None:
        return None
    before = len(c.errors)
    for key, expected in (("id", RULE_ID), ("rate", RATE)):
        if key not in o:
            c.fail(_join(path, key), expected, MISSING)
    rule_id = c.get(o, path, "id", None, RULE_ID, _rule_id)
    if rule_id is not None:
        if rule_id in seen:
            c.fail(_join(path, "id"), RULE_ID_UNIQUE, rule_id)
        seen.add(rule_id)
    rate = c.get(o, path, "rate", None, RATE, _rate)
    default_burst = max(1, math.ceil(rate)) if rate is not None else 1
    burst = c.get(o, path, "burst", default_burst, BURST, _int_in(1, MAX_BURST))
    per = c.get(o, path, "per", "client", PER, _one_of("client", "tenant"))
    prefix = c.get(o, path, "path_prefix", None, PATH, lambda v: None if v is None else _path(v))
    if len(c.errors) > before or rule_id is None or rate is None:
        return None
    return RateRule(id=rule_id, rate=rate, burst=burst, per=per, path_prefix=prefix)


def parse_policy(data: object, *, tenant: str, source: str, quick_origin: str | None = None) -> TenantPolicy:
    """Validate decoded JSON into a TenantPolicy, or raise PolicyError listing every problem.

    With ``quick_origin`` (``edge serve --origin URL [--policy FILE]``), hosts
    default to ``["*"]`` and the origins are that one URL, whatever the data says.
    """
    c = _Check(source)
    if not TENANT_ID_RE.fullmatch(tenant):
        c.fail("", TENANT, tenant)
    o = c.object(data, "", "policy")
    if o is None:
        raise PolicyError(c.errors)
    c.get(o, "", "$schema", None, STRING, _string)

    if quick_origin is None:
        for key, expected in (("hosts", HOSTS), ("origins", ORIGINS)):
            if key not in o:
                c.fail(key, expected, MISSING)
    hosts = c.list(o, "", "hosts", ("*",), HOSTS, HOST, _host, non_empty=True)

    origins: list[OriginSpec] = []
    raw_origins = o.get("origins", MISSING)
    if raw_origins is not MISSING:
        if not isinstance(raw_origins, list) or not raw_origins:
            c.fail("origins", ORIGINS, raw_origins)
        else:
            for i, raw in enumerate(raw_origins):
                spec = _origin(c, raw, f"origins[{i}]")
                if spec is not None:
                    origins.append(spec)
    if quick_origin is not None:
        # The flag names the origin for this run; the file's origins are
        # still checked so that a typo there is not silently carried along.
        parsed = _origin_url(quick_origin)
        if parsed is _BAD:
            c.errors.append(FieldError("--origin", "", URL, show(quick_origin)))
            origins = []
        else:
            url, scheme, host, port = parsed
            origins = [OriginSpec(url, scheme, host, port, None, DEFAULT_CONNECT_TIMEOUT,
                                  DEFAULT_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS)]

    failover = _failover(c, o.get("origin_failover", MISSING), "origin_failover")
    cache = _cache(c, o.get("cache", MISSING), "cache")

    rules: list[Rule] = []
    raw_rules = o.get("rules", [])
    if not isinstance(raw_rules, list) or len(raw_rules) > MAX_RULES:
        c.fail("rules", RULES, raw_rules)
    else:
        for i, raw in enumerate(raw_rules):
            rule = _rule(c, raw, f"rules[{i}]", cache.key)
            if rule is not None:
                rules.append(rule)

    folded = c.get(o, "", "rules_case_insensitive", False, BOOL, _boolean)
    delivery = _delivery(c, o.get("delivery", MISSING), "delivery")
    filters = _filters(c, o.get("filters", MISSING), "filters")

    if c.errors:
        raise PolicyError(c.errors)
    data_out = _data(hosts, origins, failover, cache, rules, delivery, filters, folded)
    canonical = json.dumps(data_out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    version = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return TenantPolicy(tenant, tuple(hosts), tuple(origins), failover, cache, tuple(rules), version, source,
                        delivery, filters, folded)


def default_policy(origin_url: str, tenant: str = "default") -> TenantPolicy:
    """Every host, one origin, all defaults: ``edge serve --origin URL`` without a policy file."""
    return parse_policy({}, tenant=tenant, source="--origin", quick_origin=origin_url)


# --- back to data ----------------------------------------------------------------


def to_data(policy: TenantPolicy) -> dict[str, Any]:
    """The effective policy in the file format, every default spelled out.

    ``parse_policy(to_data(p), ...)`` gives an equal policy; the version is
    the hash of this, so comments and spelled-out defaults do not change it.
    """
    return _data(policy.hosts, policy.origins, policy.failover, policy.cache, policy.rules, policy.delivery,
                 policy.filters, policy.rules_case_insensitive)


def _key_data(key: KeyOptions) -> dict[str, Any]:
    return {
        "tracking_params": list(key.tracking_params),
        "drop_params": list(key.drop_params),
        "keep_params": None if key.keep_params is None else list(key.keep_params),
        "sort_params": key.sort_params,
        "headers": list(key.headers),
        "cookies": list(key.cookies),
    }


def _rule_data(rule: Rule) -> dict[str, Any]:
    m = rule.match
    match = {k: v for k, v in (("path_prefix", m.path_prefix), ("path_glob", m.path_glob)) if v is not None}
    if m.content_type is not None:
        match["content_type"] = list(m.content_type)
    out: dict[str, Any] = {"match": match}
    for name, ttl in (("edge_ttl", rule.edge_ttl), ("browser_ttl", rule.browser_ttl)):
        if ttl is not None:
            out[name] = {ttl.mode: ttl.seconds}
    if rule.bypass is not None:
        out["bypass"] = rule.bypass
    if rule.key is not None:
        out["key"] = _key_data(rule.key)
    return out


def _delivery_data(d: Delivery) -> dict[str, Any]:
    return {
        "allow_countries": sorted(d.allow_countries),
        "deny_countries": sorted(d.deny_countries),
        "unknown": d.unknown,
        "action": d.action,
        "redirect_url": d.redirect_url,
        "exempt_cidrs": [str(n) for n in d.exempt_cidrs.networks],
        "edge_countries": sorted(d.edge_countries),
        "in_region_url": d.in_region_url,
    }


def _data(hosts: Iterable[str], origins: Iterable[OriginSpec], failover: Failover,
          cache: CacheSettings, rules: Iterable[Rule], delivery: Delivery, filters: Filters,
          rules_case_insensitive: bool) -> dict[str, Any]:
    return {
        "hosts": list(hosts),
        "origins": [
            {
                "url": o.url,
                "host_header": o.host_header,
                "connect_timeout": o.connect_timeout,
                "read_timeout": o.read_timeout,
                "max_connections": o.max_connections,
                "set_by": o.set_by,
            }
            for o in origins
        ],
        "origin_failover": {
            "retry_on_status": sorted(failover.retry_on_status),
            "failures_before_down": failover.failures_before_down,
            "cooldown": failover.cooldown,
        },
        "cache": {
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
            "key": _key_data(cache.key),
        },
        "rules": [_rule_data(r) for r in rules],
        "rules_case_insensitive": rules_case_insensitive,
        "delivery": _delivery_data(delivery),
        "filters": _filters_data(filters),
    }


def _filters_data(f: Filters) -> dict[str, Any]:
    ip, rl = f.ip_lists, f.rate_limits
    return {
        "under_attack": under_attack_data(f.under_attack),
        "events": events_data(f.events),
        "request_limits": request_limits_data(f.request_limits),
        "waf": {
            "mode": f.waf.mode,
            "threshold": f.waf.threshold,
            "paranoia": f.waf.paranoia,
            "inspect_body": f.waf.inspect_body,
            "max_body": f.waf.max_body,
            "exclusions": [{"rule": e.rule, "path_prefix": e.path_prefix} for e in f.waf.exclusions],
        },
        "ip_lists": {
            "mode": ip.mode,
            "allow": [str(n) for n in ip.allow.networks],
            "deny": [str(n) for n in ip.deny.networks],
        },
        "rate_limits": {
            "mode": rl.mode,
            "rules": [
                {"id": r.id, "path_prefix": r.path_prefix, "per": r.per, "rate": r.rate, "burst": r.burst}
                for r in rl.rules
            ],
        },
    }


__all__ = [
    "accepted_paths",
    "default_policy",
    "normalize_host",
    "parse_policy",
    "parse_size",
    "to_data",
]
