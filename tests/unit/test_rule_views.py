"""Which path a rule sees: lenient origins read "%2F", ";params", "\\" and
case otherwise than the key does, and a bypass must not be escaped by any of
those spellings (web cache deception)."""
from __future__ import annotations

from typing import Any

import pytest

from edge.cache.key import decoded_view, normalise_path
from edge.policy import parse_policy
from edge.policy.sections.waf import Exclusion, WafSettings


@pytest.mark.parametrize(
    ("path", "view"),
    [
        ("/account/orders", "/account/orders"),  # nothing to do: the same string
        ("/account%2Forders", "/account/orders"),  # decoded by most origins
        ("/account%252Forders", "/account/orders"),  # decoded twice by some
        ("/account;x=1/orders", "/account/orders"),  # Tomcat, Spring: ;params dropped
        ("/account;/orders/", "/account/orders/"),
        ("/account%3Bx/orders", "/account/orders"),
        ("/static/..%2Faccount/orders", "/account/orders"),  # the dot-segment decoding uncovers
        ("/a\\account\\..\\b", "/a/b"),  # IIS reads "\" as "/"
        ("/%2F%2Faccount", "/account"),
        ("/..%2F..%2F", "/"),
        ("/a/", "/a/"),
        ("/", "/"),
    ],
)
def test_decoded_view(path, view):
    assert decoded_view(path) == view


def shop(**top: Any):
    doc = {
        "hosts": ["shop.example"],
        "origins": [{"url": "http://o.example"}],
        "rules": [
            {"match": {"path_prefix": "/account/public/"}, "bypass": False},
            {"match": {"path_prefix": "/account/"}, "bypass": True},
            {"match": {"path_glob": "/Private/*"}, "bypass": True},
            {"match": {"path_prefix": "/lang/"}, "key": {"cookies": ["lang"]}},
            {"match": {"path_prefix": "/static/"}, "edge_ttl": {"override": 60}},
        ],
        **top,
    }
    return parse_policy(doc, tenant="shop", source="shop.json")


@pytest.mark.parametrize(
    ("raw", "bypass"),
    [
        ("/account/orders", True),
        ("/account%2Forders", True),
        ("/account%252Forders", True),
        ("/ACCOUNT/orders", True),  # case-insensitive origins: fails safe even without the setting
        ("/Account%2FOrders", True),
        ("/account;x=1/orders", True),
        ("/static/..%2Faccount/orders", True),
        ("/static/%2e%2e%2Faccount/orders", True),
        ("/private/x", True),  # the folded view against the folded pattern
        ("/account", False),  # "/account/" does not match "/account"
        ("/accounts/x", False),
        ("/products/account", False),
        ("/products%2Faccount%2F", False),
        ("/ACCOUNT/x%2F..%2F..%2Fhome", True),  # upper case and a traversal only decoding uncovers
        ("/ACCOUNT/x/..;/..;/home", True),
        ("/account/public/x", False),  # the narrower bypass: false rule wins in every view
        ("/account/PUBLIC/x", True),  # ... but not where a view escapes it
    ],
)
def test_bypass_fails_safe_for_every_spelling(raw, bypass):
    path = normalise_path(raw)
    assert path is not None
    assert shop().request_decision(path).bypass is bypass
    # The store-time decision agrees (it guards the response side).
    assert shop().response_decision(path, "text/html").bypass is bypass


def test_keys_and_ttls_follow_the_path_as_sent_and_a_spelling_that_changes_them_is_not_cached():
    policy = shop()
    assert policy.request_decision("/lang/de").key.cookies == ("lang",)
    # A lenient origin reads "/lang/de", a strict one "/lang%2Fde": which
    # key is right depends on the origin, so neither is used.
    decision = policy.request_decision("/lang%2Fde")
    assert decision.bypass and decision.key.cookies == ()
    assert policy.response_decision("/static/app.js", "text/javascript").edge_ttl.seconds == 60
    ttl = policy.response_decision("/static;v=2/app.js", "text/javascript")
    assert ttl.bypass
    # A spelling both read alike changes nothing.
    assert not policy.request_decision("/products%20list").bypass
    # Case matters for keys and TTLs unless the tenant says otherwise.
    assert policy.request_decision("/LANG/de").key.cookies == ()
    assert shop(rules_case_insensitive=True).request_decision("/LANG/de").key.cookies == ("lang",)
    assert shop(rules_case_insensitive=True).response_decision("/Static/a", None).edge_ttl.seconds == 60


def test_rules_case_insensitive_is_validated():
    with pytest.raises(Exception, match="rules_case_insensitive"):
        shop(rules_case_insensitive="yes")


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("/cms/edit", True),
        ("/cms/..%2Fadmin", False),  # an origin reads "/admin": the WAF stays on
        ("/cms;x/..%2F..%2Fadmin", False),
        ("/CMS/edit", False),  # an exclusion never widens by folding
    ],
)
def test_waf_exclusions_hold_only_where_every_view_is_inside(path, excluded):
    settings = WafSettings(exclusions=(Exclusion("xss-libinjection", "/cms/"),))
    assert ("xss-libinjection" in settings.excluded_for(normalise_path(path))) is excluded


def test_folding_is_unicode_casefolding():
    """.NET and IIS read "ſ" (U+017F) as "s" when they compare without case."""
    policy = parse_policy({"hosts": ["shop.example"], "origins": [{"url": "http://o.example"}],
                           "rules": [{"match": {"path_prefix": "/session/"}, "bypass": True}]},
                          tenant="shop", source="shop.json")
    assert policy.request_decision(normalise_path("/%C5%BFession/x")).bypass
    assert policy.request_decision(normalise_path("/SESSION/x")).bypass
    assert not policy.request_decision(normalise_path("/sessions/x")).bypass
