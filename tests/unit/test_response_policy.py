"""Tenant rules against the origin's answer (edge/cache/response_policy.py)."""
from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edge.cache.freshness import Lifetime
from edge.cache.response_policy import (
    browser_cache_control,
    deceptive,
    edge_cache_control,
    edge_lifetime,
    stale_window,
    stale_windows,
)
from edge.http.directives import parse_cache_control as cc
from edge.policy.model import Ttl


@pytest.mark.parametrize(
    "lifetime, ttl, directives, expected",
    [
        pytest.param(Lifetime(60, "max-age"), None, "max-age=60", (60, "max-age"), id="no-rule-origin-wins"),
        pytest.param(Lifetime(60, "max-age"), Ttl("override", 3600), "max-age=60", (3600, "policy-override"), id="override-replaces"),
        pytest.param(Lifetime(0, "max-age"), Ttl("override", 3600), "no-cache", (3600, "policy-override"), id="override-beats-no-cache"),
        pytest.param(Lifetime(60, "max-age"), Ttl("default", 10), "max-age=60", (60, "max-age"), id="default-ignored-when-origin-speaks"),
        pytest.param(Lifetime(0, "none"), Ttl("default", 10), "", (10, "policy-default"), id="default-when-silent"),
        pytest.param(Lifetime(30, "heuristic"), Ttl("default", 10), "", (10, "policy-default"), id="default-beats-heuristic"),
        pytest.param(Lifetime(0, "invalid"), Ttl("default", 10), "max-age=abc", (0, "invalid"), id="invalid-is-explicit-stale"),
        pytest.param(Lifetime(60, "max-age"), None, "no-cache, max-age=60", (0, "max-age"), id="rfc9111-5.2.2.4-no-cache-validates"),
    ],
)
def test_edge_lifetime(lifetime, ttl, directives, expected):
    assert edge_lifetime(lifetime, ttl, cc(directives)) == expected


@pytest.mark.parametrize(
    "path, content_type, directives, expected",
    [
        pytest.param("/account/settings/x.css", "text/html", "", True, id="html-on-css"),
        pytest.param("/account/x.js", "application/json; charset=utf-8", "", True, id="json-on-js"),
        pytest.param("/account/x.CSS", "TEXT/HTML", "", True, id="case-insensitive"),
        pytest.param("/static/app.css", "text/css", "", False, id="css-on-css"),
        pytest.param("/account/x.css", "text/html", "public, max-age=60", False, id="origin-says-public"),
        pytest.param("/account/x.css", "text/html", "s-maxage=60", False, id="origin-says-s-maxage"),
        pytest.param("/page.html", "text/html", "", False, id="html-on-html"),
        pytest.param("/robots.txt", "text/plain", "", False, id="txt-plain"),
        pytest.param("/sitemap.xml", "application/xml", "", False, id="xml-xml"),
        pytest.param("/a.b/page", "text/html", "", False, id="dot-in-directory"),
        pytest.param("/account/", "text/html", "", False, id="no-extension"),
        pytest.param("/x.png", None, "", False, id="no-content-type"),
    ],
)
def test_web_cache_deception(path, content_type, directives, expected):
    assert deceptive(path, content_type, cc(directives)) is expected


@pytest.mark.parametrize(
    "ttl, directives, spoke, expected",
    [
        pytest.param(None, "max-age=60", True, None, id="no-rule"),
        pytest.param(Ttl("override", 3600), "max-age=60", True, "max-age=3600", id="override"),
        pytest.param(Ttl("override", 3600), "private, max-age=60", True, None, id="never-loosen-private"),
        pytest.param(Ttl("override", 3600), "no-store", True, None, id="never-loosen-no-store"),
        pytest.param(Ttl("default", 60), "", False, "max-age=60", id="default-when-silent"),
        pytest.param(Ttl("default", 60), "max-age=5", True, None, id="default-origin-spoke"),
        pytest.param(Ttl("override", 0), "max-age=60", True, "max-age=0", id="override-zero"),
    ],
)
def test_browser_cache_control(ttl, directives, spoke, expected):
    assert browser_cache_control(ttl, cc(directives), spoke) == expected


# --- RFC 9213 targeted fields and RFC 5861 windows ------------------------------------

_TARGETS = ("edge-cache-control", "cdn-cache-control", "surrogate-control")


@pytest.mark.parametrize(
    ("rule", "headers", "directive", "targeted"),
    [
        ("RFC 9213 §2.1 CDN-Cache-Control replaces Cache-Control", {"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=5"}, "max-age", True),
        ("RFC 9213 §2.1 first target in list order wins", {"Edge-Cache-Control": "no-store", "CDN-Cache-Control": "max-age=5"}, "no-store", True),
        ("RFC 9213 §2.1 an empty targeted value is skipped", {"CDN-Cache-Control": "", "Surrogate-Control": "max-age=9"}, "max-age", True),
        ("RFC 9213 §2.1 an invalid value falls back", {"CDN-Cache-Control": ",,", "Cache-Control": "private"}, "private", False),
        ("RFC 9213 §2.1 no target: Cache-Control", {"Cache-Control": "max-age=3"}, "max-age", False),
        ("RFC 9213 §2.1 a trailing comma is a parsing error: ignored", {"CDN-Cache-Control": "max-age=60,", "Cache-Control": "no-store"}, "no-store", False),
        ("RFC 9213 §2.1 Cache-Control syntax that is no SF dictionary: ignored", {"CDN-Cache-Control": "Max-Age=60", "Cache-Control": "no-store"}, "no-store", False),
        ("RFC 9213 §2.2 an invalid first target yields to the next", {"Edge-Cache-Control": "max-age=60 no-store", "CDN-Cache-Control": "no-store"}, "no-store", True),
        ("RFC 9213 §3.1 an unknown directive still governs", {"CDN-Cache-Control": "none", "Cache-Control": "no-store"}, "none", True),
        ("RFC 9213 an overlong target fails closed, not back to Cache-Control", {"CDN-Cache-Control": "max-age=60" + ", x" * 2100, "Cache-Control": "max-age=60"}, "no-store", True),
        ("RFC 9213 an overlong first target does not yield to the next", {"Edge-Cache-Control": "max-age=60" + ", x" * 2100, "CDN-Cache-Control": "max-age=60"}, "no-store", True),
        ("RFC 9213 the bound counts the field lines joined", [("CDN-Cache-Control", "max-age=60")] + [("CDN-Cache-Control", "x" * 1000)] * 5 + [("Cache-Control", "max-age=60")], "no-store", True),
        ("RFC 8941 §4.2 field lines are joined before parsing", [("CDN-Cache-Control", "max-age=60"), ("CDN-Cache-Control", "must-revalidate"), ("Cache-Control", "no-store")], "must-revalidate", True),
    ],
)
def test_edge_cache_control(rule, headers, directive, targeted):
    cc, was_targeted = edge_cache_control(CIMultiDict(headers), _TARGETS)
    assert directive in cc, rule
    assert was_targeted is targeted, rule


@pytest.mark.parametrize(
    ("rule", "directives", "tenant", "swr", "sie"),
    [
        ("RFC 5861 §3 origin's window", "max-age=1, stale-while-revalidate=30", (0, 0), 30, 0),
        ("RFC 5861 §4 origin's window", "max-age=1, stale-if-error=90", (0, 0), 0, 90),
        ("tenant default when the origin names none", "max-age=1", (10, 20), 10, 20),
        ("origin's value beats the tenant's", "max-age=1, stale-while-revalidate=5", (10, 20), 5, 20),
        ("RFC 9111 §5.2.2.2 must-revalidate forbids stale", "max-age=1, must-revalidate, stale-if-error=90", (10, 20), 0, 0),
        ("RFC 9111 §5.2.2.8 proxy-revalidate forbids stale", "max-age=1, proxy-revalidate", (10, 20), 0, 0),
        ("RFC 9111 §5.2.2.4 no-cache forbids stale", "no-cache", (10, 20), 0, 0),
        ("RFC 9111 §5.2.2.10 s-maxage: no tenant default", "s-maxage=1", (10, 20), 0, 0),
        ("s-maxage with the origin's own window", "s-maxage=1, stale-if-error=60", (10, 20), 0, 60),
        ("a malformed window is no window", "max-age=1, stale-while-revalidate=soon", (0, 0), 0, 0),
    ],
)
def test_stale_windows(rule, directives, tenant, swr, sie):
    extra = stale_windows(cc(directives))
    assert stale_window(extra, "swr", tenant[0]) == swr, rule
    assert stale_window(extra, "sie", tenant[1]) == sie, rule
