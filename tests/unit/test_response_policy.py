"""Tenant rules against the origin's answer (edge/cache/response_policy.py)."""
from __future__ import annotations

import pytest

from edge.cache.freshness import Lifetime
from edge.cache.response_policy import browser_cache_control, deceptive, edge_lifetime
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
