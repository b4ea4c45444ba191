"""Whose names a certificate may carry (edge.tls.ownership): the host
matching of requests, and for a wildcard name every name it covers."""
from __future__ import annotations

import pytest

from edge.policy.parse import parse_policy
from edge.policy.resolve import PolicySet
from edge.tls.ownership import Unserved, unserved_names


def policies(**tenants: list[str]) -> PolicySet:
    return PolicySet(parse_policy({"hosts": hosts, "origins": [{"url": "http://127.0.0.1:1"}]}, tenant=t,
                                  source=f"{t}.json") for t, hosts in tenants.items())


NODE = policies(shop=["shop.de", "www.shop.de", "*.img.shop.de"],
                news=["news.de", "*.news.de", "live.img.shop.de"],
                blog=["*.de"])

CASES = [
    # (id, tenant, certificate names, expected unserved as (name, owner))
    ("exact-hosts", "shop", ["shop.de", "www.shop.de"], []),
    ("name-under-its-wildcard-host", "shop", ["a.img.shop.de"], []),
    ("deeper-than-its-wildcard-host", "shop", ["a.b.img.shop.de"], []),  # as requests match *.img.shop.de
    ("another-tenants-exact-host", "shop", ["news.de"], [("news.de", "news")]),
    ("exact-host-inside-its-wildcard", "shop", ["live.img.shop.de"], [("live.img.shop.de", "news")]),
    ("a-wider-wildcard-of-another", "shop", ["api.shop.de"], [("api.shop.de", "blog")]),
    ("its-own-wildcard-name", "news", ["*.news.de"], []),
    ("wildcard-over-another-tenants-exact-host", "shop", ["*.img.shop.de"], [("*.img.shop.de", "news")]),
    ("wildcard-over-exact-hosts-only", "shop", ["*.shop.de"], [("*.shop.de", "blog")]),
    ("wildcard-over-a-wider-wildcard-host", "blog", ["*.example.de"], []),
    ("wildcard-where-a-more-specific-host-wins", "blog", ["*.news.de"], [("*.news.de", "news")]),
    ("nobodys-name", "news", ["other.example"], [("other.example", None)]),
    ("nobodys-wildcard", "news", ["*.other.example"], [("*.other.example", None)]),
    ("one-bad-name-among-good", "shop", ["shop.de", "news.de", "www.shop.de"], [("news.de", "news")]),
]


@pytest.mark.parametrize(("tenant", "names", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_unserved_names(tenant, names, expected):
    assert unserved_names(NODE, tenant, names) == [Unserved(n, o) for n, o in expected]


def test_quick_mode_serves_every_name():
    quick = policies(default=["*"])
    assert unserved_names(quick, "default", ["www.shop.de", "*.shop.de", "*.a.b.example"]) == []
