"""Storing a response, its lifetime and the headers clients see: RFC 9111
§3, §4.2, §4.3.4, §5.2.2, RFC 9213 and the tenant's rules
(edge/cache/admission.py). Case ids name the clause they check."""
from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from edge.cache.admission import Asked, admit, lifetime, revalidated, served_headers
from edge.cache.freshness import NoStore
from edge.cache.store import Meta
from edge.http.dates import format_http_date
from edge.http.directives import parse_cache_control
from edge.policy import parse_policy

T = 1_700_000_000.0
GET = Asked("GET", "/page")
LARGEST = 1 << 20


def policy(cache: dict | None = None, rules: list | None = None):
    doc = {"hosts": ["shop.example"], "origins": [{"url": "http://o.example"}], "cache": cache or {},
           "rules": rules or []}
    return parse_policy(doc, tenant="shop", source="shop.json")


def fetched(headers: dict[str, str], *, asked: Asked = GET, status: int = 200, pol=None, got: dict | None = None,
            content_length: int | None = 100, request_time: float = T, response_time: float = T, **kw: Any):
    return admit(asked, status, CIMultiDict(headers), CIMultiDict(got if got is not None else headers),
                 content_length=content_length, request_time=request_time, response_time=response_time,
                 policy=pol or policy(), largest=kw.pop("largest", LARGEST), **kw)


# --- whether it is stored ------------------------------------------------------------

REASON_CASES = [
    ("9111-3-max-age", {"Cache-Control": "max-age=60"}, {}, None),
    ("9111-3-head-not-stored", {"Cache-Control": "max-age=60"}, {"asked": Asked("HEAD", "/page")}, NoStore.METHOD),
    ("9111-3-206-not-stored", {"Cache-Control": "max-age=60"}, {"status": 206}, NoStore.STATUS),
    ("9111-5.2.1.5-request-no-store", {"Cache-Control": "max-age=60"},
     {"asked": Asked("GET", "/page", parse_cache_control("no-store"))}, NoStore.NO_STORE),
    ("9111-5.2.2.5-no-store", {"Cache-Control": "no-store"}, {}, NoStore.NO_STORE),
    ("9111-5.2.2.7-private", {"Cache-Control": "private, max-age=60"}, {}, NoStore.PRIVATE),
    ("9111-3.5-authorization", {"Cache-Control": "max-age=60"},
     {"asked": Asked("GET", "/page", authorization=True)}, NoStore.AUTHORIZATION),
    ("9111-3.5-authorization-public", {"Cache-Control": "public, max-age=60"},
     {"asked": Asked("GET", "/page", authorization=True)}, None),
    ("set-cookie-not-stored", {"Cache-Control": "max-age=60", "Set-Cookie": "a=1"}, {}, NoStore.SET_COOKIE),
    ("set-cookie-stripped-by-policy", {"Cache-Control": "max-age=60", "Set-Cookie": "a=1"},
     {"pol": policy({"strip_set_cookie": True})}, None),
    ("9111-4.1-vary-star", {"Cache-Control": "max-age=60", "Vary": "*"}, {}, NoStore.VARY_STAR),
    ("policy-bypass-rule", {"Cache-Control": "max-age=60"},
     {"pol": policy(rules=[{"match": {"path_prefix": "/"}, "bypass": True}])}, NoStore.POLICY),
    ("deception-page-on-static-path", {"Cache-Control": "max-age=60", "Content-Type": "text/html"},
     {"asked": Asked("GET", "/account/x.css")}, NoStore.DECEPTION),
    ("deception-public-is-the-origins-word", {"Cache-Control": "public, max-age=60", "Content-Type": "text/html"},
     {"asked": Asked("GET", "/account/x.css")}, None),
    ("too-large-for-the-store", {"Cache-Control": "max-age=60"}, {"content_length": LARGEST + 1}, NoStore.TOO_LARGE),
    ("unknown-length-decided-while-streaming", {"Cache-Control": "max-age=60"}, {"content_length": None}, None),
    ("another-request-stores-it", {"Cache-Control": "max-age=60"}, {"may_store": False}, NoStore.FILLING),
    ("connection-removed-fields", {"Cache-Control": "max-age=60"},
     {"asked": Asked("GET", "/page", connection_fields=True)}, NoStore.CONNECTION),
    ("9111-4.2-stale-on-arrival-no-validator", {"Cache-Control": "max-age=0"}, {}, NoStore.NO_LIFETIME),
    ("9111-4.3-stale-on-arrival-with-etag", {"Cache-Control": "max-age=0", "ETag": '"a"'}, {}, None),
    ("9111-5.2.2.4-no-cache-with-validator", {"Cache-Control": "no-cache", "ETag": '"a"'}, {}, None),
    ("5861-3-stale-on-arrival-within-the-window", {"Cache-Control": "max-age=1, stale-while-revalidate=60", "Age": "5"},
     {}, None),
    ("5861-3-stale-on-arrival-past-the-window", {"Cache-Control": "max-age=1, stale-while-revalidate=2", "Age": "5"},
     {}, NoStore.NO_LIFETIME),
    ("5861-4-stale-on-arrival-with-stale-if-error", {"Cache-Control": "max-age=0, stale-if-error=60"}, {}, None),
    ("5861-4-tenant-stale-if-error", {"Cache-Control": "max-age=0"}, {"pol": policy({"stale_if_error": 60})}, None),
    ("9213-2.1-targeted-field-replaces-cache-control", {"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"},
     {}, None),
    ("9213-overlong-targeted-field-is-not-stored", {"Cache-Control": "max-age=60", "ETag": '"a"',
                                                   "CDN-Cache-Control": "max-age=60" + ", x" * 2100}, {},
     NoStore.NO_STORE),
    ("9213-2.1-targeted-field-replaces-expires", {"CDN-Cache-Control": "max-age=0", "Expires": format_http_date(T + 60)},
     {}, NoStore.NO_LIFETIME),
]


@pytest.mark.parametrize("headers, kw, expected", [c[1:] for c in REASON_CASES], ids=[c[0] for c in REASON_CASES])
def test_admit_reason(headers, kw, expected):
    d = fetched(headers, **kw)
    assert d.reason is expected
    assert (d.meta is None) == (expected is not None)


# --- lifetime and age ----------------------------------------------------------------

def test_9111_4_2_3_lifetime_and_age_on_arrival():
    d = fetched({"Cache-Control": "max-age=60", "Age": "10", "Date": format_http_date(T)}, response_time=T + 2)
    assert (d.lifetime, d.initial_age) == (60.0, 12.0)  # Age plus the response delay
    assert d.meta.lifetime == 60.0 and d.meta.initial_age == 12.0 and d.meta.detail == "max-age"


def test_the_origins_age_counts_not_the_forwarded_copy():
    d = fetched({"Cache-Control": "max-age=60"}, got={"Cache-Control": "max-age=60", "Age": "30"})
    assert d.initial_age == 30.0


def test_edge_ttl_override_replaces_the_origins_lifetime():
    pol = policy(rules=[{"match": {"path_prefix": "/"}, "edge_ttl": {"override": 600}}])
    d = fetched({"Cache-Control": "max-age=60"}, pol=pol)
    assert d.lifetime == 600.0 and d.meta.detail == "policy-override"


LIFETIME_CASES = [
    ("9111-4.2.1-s-maxage-first", {"Cache-Control": "s-maxage=10, max-age=60"}, False, (10.0, "s-maxage")),
    ("9111-4.2.1-expires", {"Expires": format_http_date(T + 30), "Date": format_http_date(T)}, False, (30.0, "expires")),
    ("9213-2.1-expires-ignored-with-targeted-field", {"Expires": format_http_date(T + 30)}, True, (0.0, "none")),
    ("9111-4.2.2-heuristic", {"Last-Modified": format_http_date(T - 1000), "Date": format_http_date(T)}, False,
     (100.0, "heuristic")),
]


@pytest.mark.parametrize("headers, targeted, expected", [c[1:] for c in LIFETIME_CASES], ids=[c[0] for c in LIFETIME_CASES])
def test_lifetime(headers, targeted, expected):
    pol = policy()
    h = CIMultiDict(headers)
    cc = parse_cache_control(h.get("Cache-Control"))
    assert lifetime(200, h, cc, pol.response_decision("/", None), pol.cache, T, targeted) == expected


# --- what is stored, what the client sees --------------------------------------------

def test_9111_5_2_2_7_private_fields_reach_this_client_not_the_store():
    d = fetched({"Cache-Control": 'max-age=60, private="X-Secret"', "X-Secret": "s", "X-Kept": "k"})
    assert d.reason is None  # a qualified private only names fields
    stored = CIMultiDict(d.meta.headers)
    assert "X-Secret" not in stored and stored["X-Kept"] == "k"
    assert d.client["X-Secret"] == "s"


def test_9111_5_2_2_4_no_cache_fields_reach_this_client_not_the_store():
    d = fetched({"Cache-Control": 'max-age=60, no-cache="X-Once"', "X-Once": "1"})
    assert "X-Once" not in CIMultiDict(d.meta.headers) and d.client["X-Once"] == "1"


def test_set_cookie_traded_for_cacheability_is_gone_for_every_client():
    d = fetched({"Cache-Control": "max-age=60", "Set-Cookie": "a=1"}, pol=policy({"strip_set_cookie": True}))
    assert "Set-Cookie" not in CIMultiDict(d.meta.headers) and "Set-Cookie" not in d.client


def test_9213_targeted_fields_are_stored_and_never_shown():
    d = fetched({"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60", "Surrogate-Control": "max-age=5"})
    assert d.lifetime == 60.0 and "CDN-Cache-Control" in CIMultiDict(d.meta.headers)
    assert "CDN-Cache-Control" not in d.client and "Surrogate-Control" not in d.client
    assert d.client["Cache-Control"] == "no-store"  # the browser's directives stay the origin's


def test_9111_4_1_vary_names_the_variants():
    d = fetched({"Cache-Control": "max-age=60", "Vary": "Accept-Language, accept-encoding"})
    assert d.vary == d.meta.vary and set(d.vary) == {"accept-language", "accept-encoding"}


def test_tags_are_read_from_the_origins_own_fields():
    d = fetched({"Cache-Control": "max-age=60"}, got={"Cache-Control": "max-age=60", "Surrogate-Key": "a b"})
    assert d.meta.extra["tags"] == ["a", "b"]


SERVED_CASES = [
    # (id, response headers, policy, status, stored?, expected fields (None: absent))
    ("9110-14.3-stored-200-announces-ranges", {"Cache-Control": "max-age=60"}, {}, 200,
     {"Accept-Ranges": "bytes"}),
    ("9110-14.3-origins-word-kept", {"Cache-Control": "max-age=60", "Accept-Ranges": "none"}, {}, 200,
     {"Accept-Ranges": "none"}),
    ("9110-14.3-not-stored-not-announced", {"Cache-Control": "no-store"}, {}, 200, {"Accept-Ranges": None}),
    ("9110-14.3-encoded-body-not-cut", {"Cache-Control": "max-age=60", "Content-Encoding": "gzip"}, {}, 200,
     {"Accept-Ranges": None}),
    ("9110-14.3-only-a-200-is-cut", {"Cache-Control": "max-age=60"}, {}, 404, {"Accept-Ranges": None}),
    ("browser-ttl-default-when-origin-silent", {"ETag": '"a"', "Last-Modified": format_http_date(T - 1000)},
     {"rules": [{"match": {"path_prefix": "/"}, "browser_ttl": {"default": 30}}]}, 200,
     {"Cache-Control": "max-age=30"}),
    ("browser-ttl-default-origin-speaks", {"Cache-Control": "max-age=60"},
     {"rules": [{"match": {"path_prefix": "/"}, "browser_ttl": {"default": 30}}]}, 200,
     {"Cache-Control": "max-age=60"}),
    ("browser-ttl-override", {"Cache-Control": "max-age=60"},
     {"rules": [{"match": {"path_prefix": "/"}, "browser_ttl": {"override": 30}}]}, 200,
     {"Cache-Control": "max-age=30"}),
    ("browser-ttl-never-loosens-private", {"Cache-Control": "private"},
     {"rules": [{"match": {"path_prefix": "/"}, "browser_ttl": {"override": 30}}]}, 200,
     {"Cache-Control": "private"}),
]


@pytest.mark.parametrize("headers, pol, status, expected", [c[1:] for c in SERVED_CASES], ids=[c[0] for c in SERVED_CASES])
def test_what_the_client_of_the_fetch_sees(headers, pol, status, expected):
    d = fetched(headers, status=status, pol=policy(**pol))
    for name, value in expected.items():
        assert d.client.get(name) == value, name


@pytest.mark.parametrize("headers, pol, status, expected", [c[1:] for c in SERVED_CASES], ids=[c[0] for c in SERVED_CASES])
def test_hits_show_what_the_client_of_the_fetch_was_shown(headers, pol, status, expected):
    """One rendering for the fetch and its hits: what a hit is served is
    what the stored response's first client saw."""
    p = policy(**pol)
    d = fetched(headers, status=status, pol=p)
    if d.meta is None:
        return
    hit = served_headers(d.meta.status, d.meta.headers, p, "/page", stored=True, compressed=bool(d.meta.extra.get("cz")))
    assert list(hit.items()) == list(d.client.items())


def test_9110_12_5_5_a_compressible_stored_response_varies_on_accept_encoding():
    d = fetched({"Cache-Control": "max-age=60", "Content-Type": "text/html"}, content_length=4096,
                asked=Asked("GET", "/page"))
    assert d.meta.extra.get("cz") == 1
    assert "accept-encoding" in d.client["Vary"].lower()
    hit = served_headers(200, d.meta.headers, policy(), "/page", stored=True, compressed=True)
    assert list(hit.items()) == list(d.client.items())


# --- a validated response (RFC 9111 §4.3.4) --------------------------------------------

def stored(headers: dict[str, str], **extra: Any) -> Meta:
    return Meta(status=200, headers=tuple(headers.items()), request_time=T - 100, response_time=T - 100,
                initial_age=0.0, lifetime=10.0, size=4, extra=extra)


def validated(old: Meta, fresh: dict[str, str], got: dict[str, str] | None = None, pol=None):
    return revalidated(old, CIMultiDict(fresh), CIMultiDict(got if got is not None else fresh), path="/page",
                       request_time=T, response_time=T + 1, policy=pol or policy())


def test_9111_4_3_4_a_304_freshens_the_stored_response():
    old = stored({"Cache-Control": "max-age=10", "ETag": '"a"', "X-Old": "1"}, tags=["t"])
    done = validated(old, {"Cache-Control": "max-age=600", "ETag": '"a"', "Date": format_http_date(T + 1)})
    assert done.keep and done.cookies == []
    headers = CIMultiDict(done.meta.headers)
    assert headers["Cache-Control"] == "max-age=600" and headers["X-Old"] == "1"
    assert done.meta.lifetime == 600.0 and done.meta.size == 4 and done.meta.extra["tags"] == ["t"]
    assert (done.meta.request_time, done.meta.response_time) == (T, T + 1)


def test_9111_4_3_4_the_304s_cookies_are_this_clients_alone():
    done = validated(stored({"Cache-Control": "max-age=10"}), {"Set-Cookie": "s=1", "Cache-Control": "max-age=60"})
    assert done.cookies == ["s=1"] and "Set-Cookie" not in CIMultiDict(done.meta.headers)


def test_9111_4_3_4_the_edges_server_stand_in_does_not_replace_the_origins():
    old = stored({"Cache-Control": "max-age=10", "Server": "origin/1"})
    done = validated(old, {"Cache-Control": "max-age=60", "Server": "edge"}, got={"Cache-Control": "max-age=60"})
    assert CIMultiDict(done.meta.headers)["Server"] == "origin/1"


def test_5861_a_304_renews_the_stale_windows():
    old = stored({"Cache-Control": "max-age=10, stale-while-revalidate=60"}, swr=60, cz=1)
    done = validated(old, {"Cache-Control": "max-age=60, must-revalidate"})
    assert "swr" not in done.meta.extra and done.meta.extra["nostale"] and done.meta.extra["cz"] == 1


KEEP_CASES = [
    ("9111-3-304-no-store-withdraws", {"Cache-Control": "no-store"}, {}, False),
    ("9111-5.2.2.7-304-private-withdraws", {"Cache-Control": "private"}, {}, False),
    ("9111-4.1-304-changes-vary", {"Cache-Control": "max-age=60", "Vary": "Accept-Language"}, {}, False),
    ("9213-304-overlong-targeted-field-withdraws", {"Cache-Control": "max-age=60",
                                                   "CDN-Cache-Control": "max-age=60" + ", x" * 2100}, {}, False),
    ("304-changes-tags", {"Cache-Control": "max-age=60"}, {"Surrogate-Key": "new"}, False),
    ("304-same-tags", {"Cache-Control": "max-age=60"}, {"Surrogate-Key": "t"}, True),
    ("304-silent-on-tags", {"Cache-Control": "max-age=60"}, {}, True),
]


@pytest.mark.parametrize("fresh, got_extra, keep", [c[1:] for c in KEEP_CASES], ids=[c[0] for c in KEEP_CASES])
def test_whether_the_validated_entry_stays(fresh, got_extra, keep):
    done = validated(stored({"Cache-Control": "max-age=10"}, tags=["t"]), fresh, got={**fresh, **got_extra})
    assert done.keep is keep
