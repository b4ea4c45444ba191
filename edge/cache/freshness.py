"""Storage and freshness decisions for a shared cache (RFC 9111 §3, §4.2).

Pure functions: no I/O, and every instant (``now``, ``request_time``,
``response_time``) is passed in as a POSIX timestamp.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from edge.http.dates import parse_http_date
from edge.http.directives import MAX_DELTA_SECONDS, CacheControl, delta_seconds

__all__ = [
    "HEURISTIC_STATUSES",
    "UNDERSTOOD_STATUSES",
    "Lifetime",
    "NoStore",
    "age_header_value",
    "current_age",
    "freshness_lifetime",
    "initial_age",
    "must_revalidate",
    "no_cache_fields",
    "no_cache_response",
    "private_fields",
    "storable",
    "worth_storing",
]


class NoStore(enum.Enum):
    """Why a response was not stored; ``value`` is an RFC 9211 Cache-Status detail token."""

    METHOD = "method"
    STATUS = "status"
    NO_STORE = "no-store"
    PRIVATE = "private"
    AUTHORIZATION = "authorization"
    SET_COOKIE = "set-cookie"
    VARY_STAR = "vary-star"
    NO_LIFETIME = "no-lifetime"
    TOO_LARGE = "too-large"
    POLICY = "policy"
    DECEPTION = "deception"  # dynamic content on a static-looking path
    FILLING = "filling"  # another request is already storing this object
    CONNECTION = "connection"  # the request's Connection removed end-to-end fields


# RFC 9110 §15.1: cacheable by default, so heuristic freshness may apply.
HEURISTIC_STATUSES: frozenset[int] = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)

# Final statuses whose semantics this cache implements (RFC 9111 §3, "understands");
# only consulted for must-understand (§5.2.2.3). 206 and 416 are left out: the
# cache stores whole objects and cuts ranges itself (edge/cache/ranges.py),
# never combining partial responses; 304 only ever updates a stored response (§4.3.4).
UNDERSTOOD_STATUSES: frozenset[int] = frozenset(
    (200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308)
    + tuple(range(400, 416))
    + (417, 421, 422, 426)
    + tuple(range(500, 506))
)

_NEVER_STORED = frozenset({206, 304})


def storable(
    *,
    method: str,
    status: int,
    request_cc: CacheControl,
    response_cc: CacheControl,
    has_authorization: bool,
    has_set_cookie: bool,
    strip_set_cookie: bool,
    vary: str | None,
    has_expires: bool = False,
) -> NoStore | None:
    """None if a shared cache may store the response (RFC 9111 §3), else why not.

    On None the caller still has to remove ``private_fields(response_cc)`` and,
    when ``strip_set_cookie``, Set-Cookie before storing. ``has_expires`` is
    whether the response has an Expires field at all (even an unreadable one).
    """
    if method != "GET":  # methods are case-sensitive (RFC 9110 §9.1)
        return NoStore.METHOD
    if status < 200 or status > 599 or status in _NEVER_STORED:
        return NoStore.STATUS
    # §5.2.2.3: must-understand limits storing to caches that implement the
    # status, and such a cache ignores no-store.
    must_understand = "must-understand" in response_cc
    if must_understand and status not in UNDERSTOOD_STATUSES:
        return NoStore.STATUS
    if "no-store" in request_cc or ("no-store" in response_cc and not must_understand):
        return NoStore.NO_STORE
    if response_cc.field_names("private") == ():
        return NoStore.PRIVATE
    if has_authorization and not (
        "public" in response_cc or "s-maxage" in response_cc or "must-revalidate" in response_cc
    ):
        return NoStore.AUTHORIZATION  # §3.5
    if has_set_cookie and not strip_set_cookie:
        return NoStore.SET_COOKIE
    if vary and "*" in vary and any(f.strip(" \t") == "*" for f in vary.split(",")):
        return NoStore.VARY_STAR  # §4.1: never matches a later request
    if not (
        has_expires
        or "max-age" in response_cc
        or "s-maxage" in response_cc
        or "public" in response_cc
        or status in HEURISTIC_STATUSES
    ):
        return NoStore.STATUS
    return None


def private_fields(cc: CacheControl) -> tuple[str, ...]:
    """Lower-case field names a shared cache must drop before storing (§5.2.2.7)."""
    return cc.field_names("private") or ()


def no_cache_fields(cc: CacheControl) -> tuple[str, ...]:
    """Lower-case field names to drop when reusing without validation (§5.2.2.4)."""
    return cc.field_names("no-cache") or ()


def no_cache_response(cc: CacheControl) -> bool:
    """Unqualified response no-cache: validate before every reuse (§5.2.2.4)."""
    return cc.field_names("no-cache") == ()


def must_revalidate(cc: CacheControl) -> bool:
    """Never serve stale without successful validation (§5.2.2.2, §5.2.2.8, §5.2.2.10)."""
    return "must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Freshness lifetime in seconds and what it came from.

    source: "s-maxage", "max-age", "expires", "heuristic", "none" or "invalid".
    """

    seconds: float
    source: str

    @property
    def explicit(self) -> bool:
        return self.source in _EXPLICIT


_EXPLICIT = frozenset({"s-maxage", "max-age", "expires", "invalid"})
_INVALID_LIFETIME = Lifetime(0.0, "invalid")
_NO_LIFETIME = Lifetime(0.0, "none")
_EXPIRED = Lifetime(0.0, "expires")


def freshness_lifetime(
    *,
    status: int,
    cc: CacheControl,
    date: str | None,
    expires: str | None,
    last_modified: str | None,
    response_time: float,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
) -> Lifetime:
    """Freshness lifetime for a shared cache (RFC 9111 §4.2.1, §4.2.2).

    ``expires``: pass the joined field value; two Expires lines then read as
    invalid, i.e. already expired, which §4.2.1 allows.
    """
    # §4.2.1: first of s-maxage, max-age, Expires wins; a bad or conflicting
    # value is "invalid freshness information", which we treat as stale.
    if "s-maxage" in cc:
        s = cc.s_maxage
        return Lifetime(float(s), "s-maxage") if isinstance(s, int) else _INVALID_LIFETIME
    if "max-age" in cc:
        s = cc.max_age
        return Lifetime(float(s), "max-age") if isinstance(s, int) else _INVALID_LIFETIME
    if expires is not None:
        exp = parse_http_date(expires, now=response_time)
        if exp is None:
            return _EXPIRED  # §5.3: an invalid date, e.g. "0", means already expired
        base = parse_http_date(date, now=response_time)
        if base is None:
            base = response_time
        return Lifetime(exp - base if exp > base else 0.0, "expires")
    if status in HEURISTIC_STATUSES or "public" in cc:
        lm = parse_http_date(last_modified, now=response_time)
        if lm is not None:
            base = parse_http_date(date, now=response_time)
            if base is None:
                base = response_time
            # §4.2.2: a fraction of the time since last modification.
            h = (base - lm) * heuristic_fraction
            return Lifetime(min(h, heuristic_max) if h > 0.0 else 0.0, "heuristic")
    return _NO_LIFETIME


def initial_age(
    *, date: str | None, age: str | None, request_time: float, response_time: float
) -> float:
    """corrected_initial_age of RFC 9111 §4.2.3, in seconds."""
    age_value = 0
    if age:
        first = age.split(",", 1)[0].strip(" \t")  # repeated Age lines: the first
        age_value = delta_seconds(first) or 0  # unreadable Age: as if absent
    date_value = parse_http_date(date, now=response_time)
    apparent_age = response_time - date_value if date_value is not None else 0.0
    if apparent_age < 0.0:
        apparent_age = 0.0
    # A clock stepping backwards must not make the response look younger.
    response_delay = response_time - request_time
    if response_delay < 0.0:
        response_delay = 0.0
    corrected_age_value = age_value + response_delay
    return corrected_age_value if corrected_age_value > apparent_age else apparent_age


def current_age(initial_age: float, response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3 current_age; resident time never counts negative."""
    resident = now - response_time
    return initial_age + resident if resident > 0.0 else initial_age


def age_header_value(age: float) -> str:
    """Age field value (§5.1): whole seconds, 0..2^31."""
    if not age > 0.0:  # also NaN
        return "0"
    if age >= MAX_DELTA_SECONDS:
        return "2147483648"
    return str(int(age))


def worth_storing(
    *, lifetime: Lifetime, age: float, response_cc: CacheControl, has_validator: bool
) -> NoStore | None:
    """NO_LIFETIME when a storable response could never be reused.

    That is: it has no ETag/Last-Modified to revalidate with, and it is stale
    on arrival (``age`` >= lifetime) or needs validation on every reuse
    (unqualified no-cache), and no stale-while-revalidate / stale-if-error
    (RFC 5861) lets it be served stale.
    """
    if has_validator:
        return None
    needs_validation = no_cache_response(response_cc)
    if not needs_validation and lifetime.seconds > age:
        return None
    if not needs_validation and not must_revalidate(response_cc):
        for ext in ("stale-while-revalidate", "stale-if-error"):
            s = response_cc.seconds(ext)
            if isinstance(s, int) and s > 0:
                return None
    return NoStore.NO_LIFETIME
