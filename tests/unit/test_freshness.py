"""Storing, freshness lifetime and age for a shared cache: RFC 9111 §3, §4.2, §5.2."""
from __future__ import annotations

from typing import Any

import pytest

from edge.cache.freshness import (
    HEURISTIC_STATUSES,
    Lifetime,
    NoStore,
    age_header_value,
    current_age,
    freshness_lifetime,
    initial_age,
    must_revalidate,
    no_cache_fields,
    no_cache_response,
    private_fields,
    storable,
    worth_storing,
)
from edge.http.dates import format_http_date
from edge.http.directives import parse_cache_control as cc

T = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def d(offset: float) -> str:
    return format_http_date(T + offset)


# --- storable (RFC 9111 §3) -------------------------------------------------

STORABLE_CASES: list[tuple[str, dict[str, Any], NoStore | None]] = [
    ("9111-3-plain-200", {}, None),
    ("9111-3-head-not-stored", {"method": "HEAD"}, NoStore.METHOD),
    ("9111-3-post-not-stored", {"method": "POST"}, NoStore.METHOD),
    ("9110-9.1-method-case-sensitive", {"method": "get"}, NoStore.METHOD),
    ("9111-3-1xx-not-final", {"status": 103}, NoStore.STATUS),
    ("9111-3-206-deferred", {"status": 206, "response_cc": "max-age=60"}, NoStore.STATUS),
    ("9111-3-304-not-stored", {"status": 304, "response_cc": "max-age=60"}, NoStore.STATUS),
    ("9110-15-status-out-of-range", {"status": 600, "response_cc": "max-age=60"}, NoStore.STATUS),
    ("9110-15.1-302-needs-explicit", {"status": 302}, NoStore.STATUS),
    ("9110-15.1-500-needs-explicit", {"status": 500}, NoStore.STATUS),
    ("9111-3-302-max-age", {"status": 302, "response_cc": "max-age=60"}, None),
    ("9111-3-302-s-maxage", {"status": 302, "response_cc": "s-maxage=60"}, None),
    ("9111-3-302-expires", {"status": 302, "has_expires": True}, None),
    ("9111-3-302-public", {"status": 302, "response_cc": "public"}, None),
    ("9111-3-invalid-max-age-still-storable", {"status": 302, "response_cc": "max-age=x"}, None),
    ("9111-3-unknown-status-with-max-age", {"status": 299, "response_cc": "max-age=60"}, None),
    ("9110-15.1-404-heuristic", {"status": 404}, None),
    ("9110-15.1-410-heuristic", {"status": 410}, None),
    ("9110-15.1-501-heuristic", {"status": 501}, None),
    ("9111-5.2.1.5-request-no-store", {"request_cc": "no-store"}, NoStore.NO_STORE),
    ("9111-5.2.2.5-response-no-store", {"response_cc": "max-age=60, no-store"}, NoStore.NO_STORE),
    ("9111-5.2-response-no-store-uppercase", {"response_cc": "NO-STORE"}, NoStore.NO_STORE),
    (
        "9111-5.2.2.3-must-understand-overrides-no-store",
        {"response_cc": "must-understand, no-store, max-age=60"},
        None,
    ),
    (
        "9111-5.2.2.3-must-understand-unknown-status",
        {"status": 299, "response_cc": "must-understand, no-store, max-age=60"},
        NoStore.STATUS,
    ),
    (
        "9111-5.2.2.3-must-understand-keeps-request-no-store",
        {"request_cc": "no-store", "response_cc": "must-understand, no-store"},
        NoStore.NO_STORE,
    ),
    ("9111-5.2.2.7-private", {"response_cc": "private, max-age=60"}, NoStore.PRIVATE),
    ("9111-5.2.2.7-private-empty-list", {"response_cc": 'private=""'}, NoStore.PRIVATE),
    ("9111-5.2.2.7-private-qualified-storable", {"response_cc": 'private="Set-Cookie"'}, None),
    ("9111-3.5-authorization", {"has_authorization": True}, NoStore.AUTHORIZATION),
    (
        "9111-3.5-authorization-max-age-not-enough",
        {"has_authorization": True, "response_cc": "max-age=60"},
        NoStore.AUTHORIZATION,
    ),
    ("9111-3.5-authorization-public", {"has_authorization": True, "response_cc": "public"}, None),
    ("9111-3.5-authorization-s-maxage", {"has_authorization": True, "response_cc": "s-maxage=5"}, None),
    (
        "9111-3.5-authorization-must-revalidate",
        {"has_authorization": True, "response_cc": "must-revalidate"},
        None,
    ),
    ("set-cookie-not-stored", {"has_set_cookie": True}, NoStore.SET_COOKIE),
    ("set-cookie-stripped", {"has_set_cookie": True, "strip_set_cookie": True}, None),
    ("9111-4.1-vary-star", {"vary": "*"}, NoStore.VARY_STAR),
    ("9111-4.1-vary-star-in-list", {"vary": "Accept-Encoding,  * "}, NoStore.VARY_STAR),
    ("9111-4.1-vary-star-inside-name", {"vary": "X-Star*"}, None),
    ("9111-4.1-vary-names", {"vary": "Accept-Encoding, Accept-Language"}, None),
    ("no-store-reported-before-private", {"response_cc": "private, no-store"}, NoStore.NO_STORE),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(o, e) for _, o, e in STORABLE_CASES],
    ids=[i for i, _, _ in STORABLE_CASES],
)
def test_storable(overrides: dict[str, Any], expected: NoStore | None) -> None:
    kw: dict[str, Any] = {
        "method": "GET",
        "status": 200,
        "request_cc": "",
        "response_cc": "",
        "has_authorization": False,
        "has_set_cookie": False,
        "strip_set_cookie": False,
        "vary": None,
    }
    kw.update(overrides)
    kw["request_cc"] = cc(kw["request_cc"])
    kw["response_cc"] = cc(kw["response_cc"])
    assert storable(**kw) is expected


def test_no_store_values_are_cache_status_detail_tokens() -> None:
    """RFC 9211 §2.8: detail is a token or string; these are what operators grep for."""
    assert {r.name: r.value for r in NoStore} == {
        "METHOD": "method",
        "STATUS": "status",
        "NO_STORE": "no-store",
        "PRIVATE": "private",
        "AUTHORIZATION": "authorization",
        "SET_COOKIE": "set-cookie",
        "VARY_STAR": "vary-star",
        "NO_LIFETIME": "no-lifetime",
        "TOO_LARGE": "too-large",
        "POLICY": "policy",
        "DECEPTION": "deception",
        "FILLING": "filling",
        "CONNECTION": "connection",
    }


def test_heuristic_statuses_are_rfc9110_defaults() -> None:
    """RFC 9110 §15.1: the statuses cacheable by default."""
    assert HEURISTIC_STATUSES == {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}


# --- field-scoped directives and revalidation (RFC 9111 §5.2.2) --------------


@pytest.mark.parametrize(
    ("value", "private", "no_cache", "whole_no_cache"),
    [
        ("", (), (), False),
        ('private="Set-Cookie, X-Session"', ("set-cookie", "x-session"), (), False),
        ("private", (), (), False),
        ('no-cache="Set-Cookie, X-Foo"', (), ("set-cookie", "x-foo"), False),
        ("no-cache", (), (), True),
        ("NO-CACHE", (), (), True),
        ('no-cache=""', (), (), True),
        ('no-cache="a", no-cache', (), (), True),
        ('no-cache="a", no-cache="B"', (), ("a", "b"), False),
        ('no-cache="x, max-age=60', (), (), True),
    ],
    ids=[
        "absent",
        "9111-5.2.2.7-private-fields",
        "9111-5.2.2.7-private-unqualified-has-no-fields",
        "9111-5.2.2.4-no-cache-fields",
        "9111-5.2.2.4-no-cache-unqualified",
        "9111-5.2-no-cache-uppercase",
        "9111-5.2.2.4-no-cache-empty-list-whole",
        "9111-4.2.1-no-cache-bare-wins",
        "9111-4.2.1-no-cache-lists-merge",
        "unterminated-quote-no-cache-whole",
    ],
)
def test_field_scoped_directives(
    value: str, private: tuple[str, ...], no_cache: tuple[str, ...], whole_no_cache: bool
) -> None:
    c = cc(value)
    assert private_fields(c) == private
    assert no_cache_fields(c) == no_cache
    assert no_cache_response(c) is whole_no_cache


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", False),
        ("max-age=60", False),
        ("must-revalidate", True),
        ("Must-Revalidate", True),
        ("proxy-revalidate", True),
        ("s-maxage=60", True),
        ("s-maxage=bogus", True),
        ("no-cache", False),
    ],
    ids=[
        "absent",
        "max-age-alone",
        "9111-5.2.2.2-must-revalidate",
        "9111-5.2-case-insensitive",
        "9111-5.2.2.8-proxy-revalidate",
        "9111-5.2.2.10-s-maxage-implies-proxy-revalidate",
        "9111-5.2.2.10-invalid-s-maxage-still-implies",
        "9111-5.2.2.4-no-cache-is-separate",
    ],
)
def test_must_revalidate(value: str, expected: bool) -> None:
    assert must_revalidate(cc(value)) is expected


# --- freshness lifetime (RFC 9111 §4.2.1, §4.2.2) -----------------------------

LIFETIME_CASES: list[tuple[str, dict[str, Any], Lifetime]] = [
    ("9111-4.2.1-s-maxage-over-max-age", {"cc": "max-age=60, s-maxage=600"}, Lifetime(600, "s-maxage")),
    (
        "9111-4.2.1-max-age-over-expires",
        {"cc": "max-age=60", "date": d(0), "expires": d(3600)},
        Lifetime(60, "max-age"),
    ),
    ("9111-4.2.1-expires-minus-date", {"date": d(0), "expires": d(3600)}, Lifetime(3600, "expires")),
    (
        "9111-4.2.1-expires-rfc850",
        {"date": d(0), "expires": "Wednesday, 15-Nov-23 22:13:20 GMT"},
        Lifetime(86400, "expires"),
    ),
    (
        "9111-4.2.1-expires-no-date-uses-response-time",
        {"expires": d(3600), "response_time": T + 600},
        Lifetime(3000, "expires"),
    ),
    (
        "9111-4.2.1-expires-bad-date-uses-response-time",
        {"date": "yesterday", "expires": d(3600), "response_time": T + 600},
        Lifetime(3000, "expires"),
    ),
    ("9111-5.3-expires-zero-already-expired", {"expires": "0"}, Lifetime(0, "expires")),
    ("9111-5.3-expires-garbage-already-expired", {"expires": "\u2603"}, Lifetime(0, "expires")),
    ("9111-5.3-expires-empty-already-expired", {"expires": ""}, Lifetime(0, "expires")),
    ("9111-4.2.1-expires-before-date", {"date": d(0), "expires": d(-10)}, Lifetime(0, "expires")),
    (
        "9111-4.2.1-two-expires-lines-stale",
        {"date": d(0), "expires": f"{d(60)}, {d(60)}"},
        Lifetime(0, "expires"),
    ),
    (
        "9111-4.2.2-expires-blocks-heuristic",
        {"expires": "0", "last_modified": d(-10**6)},
        Lifetime(0, "expires"),
    ),
    ("9111-4.2.1-invalid-max-age-stale", {"cc": "max-age=abc"}, Lifetime(0, "invalid")),
    (
        "9111-4.2.1-invalid-max-age-beats-expires",
        {"cc": "max-age=-1", "date": d(0), "expires": d(3600)},
        Lifetime(0, "invalid"),
    ),
    ("9111-4.2.1-invalid-s-maxage-stale", {"cc": "s-maxage=x, max-age=60"}, Lifetime(0, "invalid")),
    ("9111-4.2.1-s-maxage-ignores-bad-max-age", {"cc": "s-maxage=60, max-age=x"}, Lifetime(60, "s-maxage")),
    ("9111-4.2.1-conflicting-duplicates-stale", {"cc": "max-age=60, max-age=120"}, Lifetime(0, "invalid")),
    ("9111-4.2.1-equal-duplicates-ok", {"cc": "max-age=60, MAX-AGE=60"}, Lifetime(60, "max-age")),
    ("9111-5.2.2.1-max-age-zero", {"cc": "max-age=0"}, Lifetime(0, "max-age")),
    ("9111-1.2.2-max-age-overflow", {"cc": "max-age=99999999999"}, Lifetime(2147483648, "max-age")),
    ("9111-4.2.1-explicit-any-status", {"status": 500, "cc": "max-age=60"}, Lifetime(60, "max-age")),
    (
        "9111-4.2.2-heuristic-10-percent",
        {"date": d(0), "last_modified": d(-100_000)},
        Lifetime(10_000, "heuristic"),
    ),
    (
        "9111-4.2.2-heuristic-capped",
        {"date": d(0), "last_modified": d(-10**8)},
        Lifetime(86400, "heuristic"),
    ),
    (
        "9111-4.2.2-heuristic-custom-fraction-and-cap",
        {"date": d(0), "last_modified": d(-1000), "heuristic_fraction": 0.5, "heuristic_max": 300.0},
        Lifetime(300, "heuristic"),
    ),
    (
        "9111-4.2.2-heuristic-no-date-uses-response-time",
        {"last_modified": d(-1000), "response_time": T + 9000},
        Lifetime(1000, "heuristic"),
    ),
    (
        "9111-4.2.2-heuristic-future-last-modified-zero",
        {"date": d(0), "last_modified": d(100)},
        Lifetime(0, "heuristic"),
    ),
    ("9111-4.2.2-heuristic-404", {"status": 404, "date": d(0), "last_modified": d(-1000)}, Lifetime(100, "heuristic")),
    (
        "9111-4.2.2-no-heuristic-for-302",
        {"status": 302, "date": d(0), "last_modified": d(-1000)},
        Lifetime(0, "none"),
    ),
    (
        "9111-4.2.2-public-allows-heuristic",
        {"status": 302, "cc": "public", "date": d(0), "last_modified": d(-1000)},
        Lifetime(100, "heuristic"),
    ),
    ("9111-4.2.2-bad-last-modified", {"date": d(0), "last_modified": "last tuesday"}, Lifetime(0, "none")),
    ("9111-4.2.2-nothing", {"date": d(0)}, Lifetime(0, "none")),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(o, e) for _, o, e in LIFETIME_CASES],
    ids=[i for i, _, _ in LIFETIME_CASES],
)
def test_freshness_lifetime(overrides: dict[str, Any], expected: Lifetime) -> None:
    kw: dict[str, Any] = {
        "status": 200,
        "cc": "",
        "date": None,
        "expires": None,
        "last_modified": None,
        "response_time": T,
    }
    kw.update(overrides)
    kw["cc"] = cc(kw["cc"])
    assert freshness_lifetime(**kw) == expected


@pytest.mark.parametrize(
    ("source", "explicit"),
    [
        ("s-maxage", True),
        ("max-age", True),
        ("expires", True),
        ("invalid", True),
        ("heuristic", False),
        ("none", False),
    ],
    ids=[
        "9111-4.2.1-s-maxage",
        "9111-4.2.1-max-age",
        "9111-4.2.1-expires",
        "9111-4.2.1-invalid-is-explicit",
        "9111-4.2.2-heuristic",
        "none",
    ],
)
def test_lifetime_explicit(source: str, explicit: bool) -> None:
    assert Lifetime(0.0, source).explicit is explicit


# --- age (RFC 9111 §4.2.3, §5.1) ---------------------------------------------

AGE_CASES: list[tuple[str, dict[str, Any], float]] = [
    ("9111-4.2.3-response-delay-only", {}, 2.0),
    ("9111-4.2.3-apparent-age", {"date": d(-8)}, 10.0),
    ("9111-4.2.3-age-plus-delay", {"age": "30"}, 32.0),
    ("9111-4.2.3-max-of-both", {"date": d(-8), "age": "30"}, 32.0),
    ("9111-4.2.3-apparent-dominates", {"date": d(-98), "age": "30"}, 100.0),
    ("9111-4.2.3-future-date-not-negative", {"date": d(3600)}, 2.0),
    ("9111-4.2.3-bad-date-ignored", {"date": "soon"}, 2.0),
    ("9111-5.1-bad-age-ignored", {"age": "abc"}, 2.0),
    ("9111-5.1-negative-age-ignored", {"age": "-5"}, 2.0),
    ("9111-5.1-fractional-age-ignored", {"age": "1.5"}, 2.0),
    ("9111-5.1-empty-age-ignored", {"age": ""}, 2.0),
    ("9111-5.1-repeated-age-first", {"age": " 10 , 20"}, 12.0),
    ("9111-1.2.2-age-overflow-capped", {"age": "9" * 40}, 2147483648.0 + 2.0),
    ("9111-4.2.3-clock-step-back-no-credit", {"age": "5", "request_time": T + 10}, 5.0),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [(o, e) for _, o, e in AGE_CASES],
    ids=[i for i, _, _ in AGE_CASES],
)
def test_initial_age(overrides: dict[str, Any], expected: float) -> None:
    kw: dict[str, Any] = {"date": None, "age": None, "request_time": T, "response_time": T + 2}
    kw.update(overrides)
    assert initial_age(**kw) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [(T, 30.0), (T + 45.5, 75.5), (T - 100, 30.0)],
    ids=["9111-4.2.3-at-receipt", "9111-4.2.3-resident-time-added", "9111-4.2.3-clock-behind-no-credit"],
)
def test_current_age(now: float, expected: float) -> None:
    assert current_age(30.0, T, now) == expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, "0"),
        (1.999, "1"),
        (86400.4, "86400"),
        (-3.0, "0"),
        (float("nan"), "0"),
        (2147483648.0, "2147483648"),
        (1e30, "2147483648"),
        (float("inf"), "2147483648"),
    ],
    ids=[
        "9111-5.1-zero",
        "9111-5.1-whole-seconds",
        "9111-5.1-day",
        "9111-5.1-never-negative",
        "nan-is-zero",
        "9111-1.2.2-cap",
        "9111-1.2.2-overflow-capped",
        "infinity-capped",
    ],
)
def test_age_header_value(age: float, expected: str) -> None:
    assert age_header_value(age) == expected


def test_fresh_until_lifetime_minus_upstream_age() -> None:
    """RFC 9111 §4.2: max-age=60 arriving with Age: 50 is fresh for only ~10 more seconds."""
    resp_cc = cc("public, max-age=60")
    life = freshness_lifetime(
        status=200, cc=resp_cc, date=d(0), expires=None, last_modified=None, response_time=T + 1
    )
    age0 = initial_age(date=d(0), age="50", request_time=T, response_time=T + 1)
    assert life.seconds - current_age(age0, T + 1, T + 8) > 0
    assert life.seconds - current_age(age0, T + 1, T + 10) <= 0
    assert age_header_value(current_age(age0, T + 1, T + 8)) == "58"


# --- whether storing can pay off ----------------------------------------------

WORTH_CASES: list[tuple[str, str, Lifetime, float, bool, NoStore | None]] = [
    ("fresh-no-validator", "max-age=60", Lifetime(60, "max-age"), 0.0, False, None),
    ("stale-with-validator", "max-age=0", Lifetime(0, "max-age"), 0.0, True, None),
    ("no-lifetime-no-validator", "", Lifetime(0, "none"), 0.0, False, NoStore.NO_LIFETIME),
    ("9111-4.2.3-stale-on-arrival", "max-age=60", Lifetime(60, "max-age"), 60.0, False, NoStore.NO_LIFETIME),
    ("9111-5.2.2.4-no-cache-no-validator", "no-cache, max-age=60", Lifetime(60, "max-age"), 0.0, False, NoStore.NO_LIFETIME),
    ("9111-5.2.2.4-no-cache-with-validator", "no-cache", Lifetime(0, "none"), 0.0, True, None),
    ("5861-stale-if-error", "max-age=0, stale-if-error=60", Lifetime(0, "max-age"), 0.0, False, None),
    ("5861-stale-while-revalidate", "max-age=0, stale-while-revalidate=60", Lifetime(0, "max-age"), 0.0, False, None),
    ("5861-stale-if-error-zero", "max-age=0, stale-if-error=0", Lifetime(0, "max-age"), 0.0, False, NoStore.NO_LIFETIME),
    ("5861-stale-if-error-invalid", "max-age=0, stale-if-error=x", Lifetime(0, "max-age"), 0.0, False, NoStore.NO_LIFETIME),
    (
        "9111-5.2.2.2-must-revalidate-forbids-stale",
        "max-age=0, must-revalidate, stale-if-error=60",
        Lifetime(0, "max-age"),
        0.0,
        False,
        NoStore.NO_LIFETIME,
    ),
    (
        "9111-5.2.2.10-s-maxage-forbids-stale",
        "s-maxage=0, stale-if-error=60",
        Lifetime(0, "s-maxage"),
        0.0,
        False,
        NoStore.NO_LIFETIME,
    ),
]


@pytest.mark.parametrize(
    ("value", "lifetime", "age", "validator", "expected"),
    [c[1:] for c in WORTH_CASES],
    ids=[c[0] for c in WORTH_CASES],
)
def test_worth_storing(
    value: str, lifetime: Lifetime, age: float, validator: bool, expected: NoStore | None
) -> None:
    assert (
        worth_storing(lifetime=lifetime, age=age, response_cc=cc(value), has_validator=validator)
        is expected
    )
