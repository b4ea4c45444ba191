"""The one check of a URL a policy names (edge.http.urls.check_url), per field shape."""
from __future__ import annotations

import pytest

from edge.http.urls import check_url

ORIGIN = {"path": False, "idn": True}
REDIRECT = {"schemes": ("https",)}
IN_REGION = {"schemes": ("https",), "query": False, "fragment": False}
WEBHOOK = {"fragment": False, "max_length": 40}


@pytest.mark.parametrize(
    ("name", "value", "shape", "ok"),
    [
        ("origin", "http://o.example:8080", ORIGIN, True),
        ("origin with slash", "https://o.example/", ORIGIN, True),
        ("origin with path", "http://o.example/x", ORIGIN, False),
        ("origin with query", "http://o.example?x", ORIGIN, False),
        ("origin IDN host", "http://bücher.example", ORIGIN, True),
        ("origin IDN space", "http://b\u00a0cher.example", ORIGIN, False),
        ("origin control character", "http://o.example\x01", ORIGIN, False),
        ("IDN elsewhere", "https://bücher.example/x", REDIRECT, False),
        ("redirect", "https://example.de/unavailable?from=edge#top", REDIRECT, True),
        ("redirect http", "http://example.de/", REDIRECT, False),
        ("redirect quote", 'https://example.de/"x', REDIRECT, False),
        ("redirect bad escape", "https://example.de/%zz", REDIRECT, False),
        ("redirect user info", "https://u@example.de/", REDIRECT, False),
        ("in-region", "https://de.cdn.example.de/", IN_REGION, True),
        ("in-region query", "https://de.cdn.example.de/?a", IN_REGION, False),
        ("in-region fragment", "https://de.cdn.example.de/#a", IN_REGION, False),
        ("webhook", "https://hooks.example/edge?t=1", WEBHOOK, True),
        ("webhook fragment", "https://hooks.example/edge#t", WEBHOOK, False),
        ("webhook too long", "https://hooks.example/" + "a" * 19, WEBHOOK, False),
        ("webhook bad escape", "https://hooks.example/%2", WEBHOOK, False),
        ("not a string", 5, {}, False),
        ("relative", "/x", {}, False),
        ("port 0", "http://o.example:0/", {}, False),
        ("numeric host", "http://2130706433/", {}, False),
    ],
)
def test_check_url(name, value, shape, ok):
    assert (check_url(value, **shape) is not None) is ok


def test_check_url_gives_the_parts():
    u = check_url("http://Bücher.example:8080/", path=False, idn=True)
    assert u is not None and (u.origin, u.address, u.effective_port) == ("http://xn--bcher-kva.example:8080",
                                                                        "xn--bcher-kva.example", 8080)
