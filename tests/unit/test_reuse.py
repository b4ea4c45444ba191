"""May a stored response answer a request: RFC 9111 §4, §4.2.4, §5.2.1 and
RFC 5861 (edge/cache/reuse.py). Case ids name the clause they check."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from multidict import CIMultiDict

from edge.cache.admission import Asked, admit
from edge.cache.reuse import NO_DIRECTIVES, Directives, Reuse, directives, reuse, worth_keeping
from edge.cache.store import Meta
from edge.policy import parse_policy

T = 1_700_000_000.0


def settings(swr: int = 0, sie: int = 0) -> SimpleNamespace:
    """The tenant's cache section: the windows it grants when the origin names none."""
    return SimpleNamespace(stale_while_revalidate=swr, stale_if_error=sie)


def meta(lifetime: float = 60.0, *, status: int = 200, headers: tuple = (), **extra: Any) -> Meta:
    return Meta(status=status, headers=headers, request_time=T, response_time=T, initial_age=0.0, lifetime=lifetime,
                extra=extra)


# --- the request's directives -------------------------------------------------------

DIRECTIVE_CASES = [
    ("9111-5.2.1-none", None, None, "revalidate", NO_DIRECTIVES),
    ("9111-5.4-pragma-no-cache-validates", None, "no-cache", "revalidate", Directives(None, revalidate=True)),
    ("9111-5.4-pragma-other-token", None, "x-foo", "revalidate", NO_DIRECTIVES),
    ("9111-5.2.1.4-no-cache-validates", "no-cache", None, "revalidate", None),
    ("9111-5.2.1.1-max-age-0-validates", "max-age=0", None, "revalidate", None),
    ("tenant-ignore-drops-no-cache", "no-cache", None, "ignore", NO_DIRECTIVES),
    ("tenant-ignore-drops-pragma", None, "no-cache", "ignore", NO_DIRECTIVES),
    ("tenant-ignore-keeps-only-if-cached", "no-cache, only-if-cached", None, "ignore", None),
    ("9111-5.2.1-empty-field", "", None, "revalidate", Directives(None)),
]


@pytest.mark.parametrize("cache_control, pragma, client_no_cache, expected", [c[1:] for c in DIRECTIVE_CASES],
                         ids=[c[0] for c in DIRECTIVE_CASES])
def test_directives(cache_control, pragma, client_no_cache, expected):
    got = directives(cache_control, pragma, client_no_cache)
    if expected is not None:
        assert got == expected
    elif client_no_cache == "ignore":
        assert not got.revalidate and got.only_if_cached and "only-if-cached" in got.cc and "no-cache" not in got.cc
    else:
        assert got.revalidate and not got.only_if_cached


def test_5861_4_the_clients_stale_if_error_is_read_whatever_the_tenant_makes_of_no_cache():
    for mode in ("revalidate", "ignore"):
        assert directives("no-cache, stale-if-error=30", None, mode).stale_if_error == 30
    assert directives("stale-if-error=x", None, "revalidate").stale_if_error == 0
    assert directives("max-age=5", None, "revalidate").stale_if_error == 0


def test_9111_5_2_1_7_only_if_cached_is_kept_with_other_directives():
    got = directives("max-age=5, only-if-cached", None, "revalidate")
    assert got.only_if_cached and not got.revalidate and got.cc.max_age == 5


# --- reuse: lookups and requests that waited for another's fetch -----------------------

REUSE_CASES = [
    # (id, lifetime, age, stored extra, stored headers, request Cache-Control, tenant windows, expected)
    ("9111-4.2-fresh", 60, 10, {}, (), None, {}, Reuse.FRESH),
    ("9111-4.2-stale-validate", 60, 70, {}, (), None, {}, Reuse.VALIDATE),
    ("9111-4.2-age-equal-to-lifetime-is-stale", 60, 60, {}, (), None, {}, Reuse.VALIDATE),
    ("9111-4.2-no-lifetime-is-stale", 0, 0, {}, (), None, {}, Reuse.VALIDATE),
    ("5861-3-within-the-origins-window", 60, 70, {"swr": 30}, (), None, {}, Reuse.STALE_WHILE_REVALIDATE),
    ("5861-3-past-the-origins-window", 60, 95, {"swr": 30}, (), None, {}, Reuse.VALIDATE),
    ("5861-3-the-origins-window-beats-the-tenants", 60, 70, {"swr": 5}, (), None, {"swr": 60}, Reuse.VALIDATE),
    ("5861-3-tenant-window-when-origin-names-none", 60, 70, {}, (), None, {"swr": 30}, Reuse.STALE_WHILE_REVALIDATE),
    ("9111-4.2.4-must-revalidate-forbids-the-tenants", 60, 70, {"nostale": True}, (), None, {"swr": 30}, Reuse.VALIDATE),
    ("9111-5.2.2.10-s-maxage-forbids-the-tenants", 60, 70, {"origin_only": True}, (), None, {"swr": 30},
     Reuse.VALIDATE),
    ("9111-5.2.2.10-s-maxage-keeps-the-origins", 60, 70, {"origin_only": True, "swr": 30}, (), None, {},
     Reuse.STALE_WHILE_REVALIDATE),
    ("9111-5.2.1.1-max-age-refuses-a-fresh-one", 60, 10, {}, (), "max-age=5", {}, Reuse.VALIDATE_REQUEST),
    ("9111-5.2.1.1-max-age-allows", 60, 10, {}, (), "max-age=30", {}, Reuse.FRESH),
    ("9111-5.2.1.1-max-age-on-a-stale-one-no-swr", 60, 70, {"swr": 30}, (), "max-age=65", {}, Reuse.VALIDATE),
    ("9111-5.2.1.3-min-fresh-refuses", 60, 10, {}, (), "min-fresh=55", {}, Reuse.VALIDATE_REQUEST),
    ("9111-5.2.1.3-min-fresh-on-a-stale-one-no-swr", 60, 70, {"swr": 30}, (), "min-fresh=1", {}, Reuse.VALIDATE),
    ("9111-5.2.1.2-max-stale-takes-stale", 60, 70, {}, (), "max-stale=30", {}, Reuse.FRESH),
    ("9111-5.2.1.2-max-stale-without-value", 60, 7000, {}, (), "max-stale", {}, Reuse.FRESH),
    ("9111-5.2.1.2-past-max-stale-swr-still-applies", 60, 80, {"swr": 30}, (), "max-stale=5", {},
     Reuse.STALE_WHILE_REVALIDATE),
    ("9111-5.2.2.2-must-revalidate-beats-max-stale", 60, 70, {"nostale": True},
     (("Cache-Control", "max-age=60, must-revalidate"),), "max-stale=30", {}, Reuse.VALIDATE),
    # The same from a targeted field alone (RFC 9213): the stored Cache-Control
    # allows stale, the directives the edge obeys (recorded in extra) do not.
    ("9213-targeted-must-revalidate-beats-max-stale", 60, 70, {"nostale": True},
     (("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "max-age=60, must-revalidate")), "max-stale=30", {},
     Reuse.VALIDATE),
    ("9213-targeted-no-cache-beats-max-stale", 0, 10, {"nostale": True},
     (("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-cache"), ("ETag", '"a"')), "max-stale", {}, Reuse.VALIDATE),
    ("9213-targeted-s-maxage-beats-max-stale", 60, 70, {"origin_only": True},
     (("Cache-Control", "max-age=60"), ("Surrogate-Control", "s-maxage=60")), "max-stale=30", {"swr": 30},
     Reuse.VALIDATE),
    ("9213-targeted-s-maxage-keeps-the-origins-window", 60, 70, {"origin_only": True, "swr": 30},
     (("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "s-maxage=60, stale-while-revalidate=30")),
     "max-stale=30", {}, Reuse.STALE_WHILE_REVALIDATE),
    ("9111-5.2.1.2-max-stale-on-a-fresh-one-with-must-revalidate", 60, 10, {"nostale": True},
     (("CDN-Cache-Control", "max-age=60, must-revalidate"),), "max-stale=30", {}, Reuse.FRESH),
    ("9111-5.2.1-unrelated-directive", 60, 10, {}, (), "no-transform", {}, Reuse.FRESH),
]


@pytest.mark.parametrize("lifetime, age, extra, headers, request_cc, windows, expected", [c[1:] for c in REUSE_CASES],
                         ids=[c[0] for c in REUSE_CASES])
def test_reuse(lifetime, age, extra, headers, request_cc, windows, expected):
    asked = directives(request_cc, None, "revalidate")
    stored = meta(lifetime, headers=headers, **extra)
    assert reuse(stored, asked, settings(**windows), age) is expected


TARGETED_CASES = [c for c in REUSE_CASES if c[0].startswith("9213-")]


@pytest.mark.parametrize("lifetime, extra, headers", [(c[1], c[3], c[4]) for c in TARGETED_CASES],
                         ids=[c[0] for c in TARGETED_CASES])
def test_the_targeted_rows_hold_what_admission_stores(lifetime, extra, headers):
    """The rows above describe what admission stores for their fields."""
    doc = {"hosts": ["shop.example"], "origins": [{"url": "http://o.example"}]}
    d = admit(Asked("GET", "/page"), 200, CIMultiDict(headers), CIMultiDict(headers), content_length=1,
              request_time=T, response_time=T, policy=parse_policy(doc, tenant="shop", source="shop.json"),
              largest=1 << 20)
    assert d.reason is None and d.meta.lifetime == lifetime
    assert {k: v for k, v in d.meta.extra.items() if k in ("nostale", "origin_only", "swr", "sie")} == extra


def test_9111_5_2_1_4_a_request_that_asks_to_validate_validates_even_a_fresh_one():
    asked = directives("no-cache", None, "revalidate")
    assert reuse(meta(60), asked, settings(swr=60), 1) is Reuse.VALIDATE_REQUEST
    assert reuse(None, asked, settings(), 0) is Reuse.MISS


def test_nothing_stored_is_a_miss():
    assert reuse(None, NO_DIRECTIVES, settings(swr=60, sie=60), 0) is Reuse.MISS


# --- reuse once the origin failed (RFC 5861 §4) -------------------------------------------

ERROR_CASES = [
    # (id, lifetime, age, stored extra, request's stale-if-error, tenant windows, expected)
    ("5861-4-within-the-origins-window", 60, 70, {"sie": 30}, 0, {}, Reuse.STALE_IF_ERROR),
    ("5861-4-past-the-origins-window", 60, 95, {"sie": 30}, 0, {}, Reuse.MISS),
    ("5861-4-no-window", 60, 70, {}, 0, {}, Reuse.MISS),
    ("5861-4-tenant-window", 60, 70, {}, 0, {"sie": 30}, Reuse.STALE_IF_ERROR),
    ("5861-4-the-clients-window", 60, 70, {}, 30, {}, Reuse.STALE_IF_ERROR),
    ("5861-4-the-larger-of-the-clients-and-the-origins", 60, 80, {"sie": 5}, 30, {}, Reuse.STALE_IF_ERROR),
    ("9111-4.2.4-must-revalidate-no-stale-on-error", 60, 70, {"nostale": True}, 30, {"sie": 30}, Reuse.MISS),
    ("9111-5.2.2.10-s-maxage-not-the-clients-window", 60, 70, {"origin_only": True}, 30, {"sie": 30}, Reuse.MISS),
    ("9111-5.2.2.10-s-maxage-keeps-the-origins-window", 60, 70, {"origin_only": True, "sie": 30}, 0, {},
     Reuse.STALE_IF_ERROR),
    ("5861-4-a-fresh-entry-the-client-asked-past", 60, 10, {"sie": 1}, 0, {}, Reuse.STALE_IF_ERROR),
    ("5861-4-a-fresh-entry-without-a-window", 60, 10, {}, 0, {}, Reuse.MISS),
]


@pytest.mark.parametrize("lifetime, age, extra, request_sie, windows, expected", [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_reuse_when_the_origin_failed(lifetime, age, extra, request_sie, windows, expected):
    asked = Directives(None, stale_if_error=request_sie)
    got = reuse(meta(lifetime, **extra), asked, settings(**windows), age, origin_failed=True)
    assert got is expected


# --- what is kept for validation or errors ---------------------------------------------

KEEP_CASES = [
    ("9111-4.3.1-etag", (("ETag", '"a"'),), {}, 0, {}, True),
    ("9111-4.3.1-last-modified", (("Last-Modified", "Tue, 14 Nov 2023 22:13:20 GMT"),), {}, 0, {}, True),
    ("9111-4.3.1-no-validator", (("Content-Type", "text/plain"),), {}, 0, {}, False),
    ("5861-4-origins-window", (), {"sie": 30}, 0, {}, True),
    ("5861-4-tenants-window", (), {}, 0, {"sie": 30}, True),
    ("5861-4-clients-window", (), {}, 30, {}, True),
    ("9111-4.2.4-nostale-no-tenant-window", (), {"nostale": True}, 0, {"sie": 30}, False),
]


@pytest.mark.parametrize("headers, extra, request_sie, windows, expected", [c[1:] for c in KEEP_CASES],
                         ids=[c[0] for c in KEEP_CASES])
def test_worth_keeping(headers, extra, request_sie, windows, expected):
    asked = Directives(None, stale_if_error=request_sie)
    assert worth_keeping(meta(headers=headers, **extra), asked, settings(**windows)) is expected


def test_9111_4_1_a_vary_marker_is_never_kept():
    marker = Meta.marker(("accept-language",), T, 60.0)
    assert not worth_keeping(marker, Directives(None, stale_if_error=30), settings(sie=30))
