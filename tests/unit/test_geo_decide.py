"""The delivery decision, branch by branch."""
from __future__ import annotations

from typing import Any

import pytest

from edge.geo.decide import RULES, UNRESTRICTED, DeliveryDecision, Outcome, decide
from edge.policy import Delivery, parse_policy

D, B, R, WR, W = (Outcome.DELIVER, Outcome.BLOCK, Outcome.REDIRECT, Outcome.WRONG_NODE_REDIRECT, Outcome.WRONG_NODE)
ELSEWHERE = "https://example.de/not-available"
IN_REGION = "https://de.cdn.example.de"
OFFICE = "192.0.2.0/24"


def delivery(**section: Any) -> Delivery:
    return parse_policy({"delivery": section}, tenant="t", source="t.json", quick_origin="http://o.example").delivery


GERMANY = {"allow_countries": ["DE"], "unknown": "deny"}
REDIRECTING = {**GERMANY, "action": "redirect", "redirect_url": ELSEWHERE}
RESIDENT = {**GERMANY, "exempt_cidrs": [OFFICE, "2001:db8::/32"], "edge_countries": ["DE"], "in_region_url": IN_REGION}

# (id, delivery section, client_ip, country, node_country, expected outcome, rule, location)
CASES = [
    # Nothing configured.
    ("unrestricted", {}, "203.0.113.1", "US", None, D, "unrestricted", None),
    ("unrestricted-unknown-everything", {}, None, None, None, D, "unrestricted", None),
    ("exempt-only-is-unrestricted", {"exempt_cidrs": [OFFICE]}, "192.0.2.1", "US", "DE", D, "unrestricted", None),
    # 1. The node side comes first.
    ("node-outside-redirects", RESIDENT, "198.51.100.1", "DE", "AT", WR, "edge_countries", IN_REGION + "/a/b?c=d"),
    ("node-without-country-fails-closed", RESIDENT, "198.51.100.1", "DE", None, WR, "edge_countries",
     IN_REGION + "/a/b?c=d"),
    ("node-empty-country-fails-closed", RESIDENT, "198.51.100.1", "DE", "", WR, "edge_countries", IN_REGION + "/a/b?c=d"),
    ("node-outside-even-for-exempt", RESIDENT, "192.0.2.5", "DE", "FR", WR, "edge_countries", IN_REGION + "/a/b?c=d"),
    ("node-outside-even-for-refused", RESIDENT, "198.51.100.1", "US", "FR", WR, "edge_countries",
     IN_REGION + "/a/b?c=d"),
    ("node-outside-no-url-421", {"edge_countries": ["DE"]}, "198.51.100.1", "DE", "AT", W, "edge_countries", None),
    ("node-outside-no-url-421-exempt", {**RESIDENT, "in_region_url": None}, "192.0.2.5", "DE", None, W,
     "edge_countries", None),
    ("node-outside-unrestricted-clients", {"edge_countries": ["DE"], "in_region_url": IN_REGION}, "198.51.100.1", "US",
     "US", WR, "edge_countries", IN_REGION + "/a/b?c=d"),
    ("node-inside-unrestricted-clients", {"edge_countries": ["DE"]}, "198.51.100.1", "US", "DE", D, "unrestricted", None),
    ("node-inside-lower-case", {"edge_countries": ["DE", "AT"]}, "198.51.100.1", "US", "at", D, "unrestricted", None),
    ("node-inside-goes-on", RESIDENT, "198.51.100.1", "US", "DE", B, "allow_countries", None),
    # 2. Exempt networks.
    ("exempt-v4", RESIDENT, "192.0.2.200", "US", "DE", D, "exempt", None),
    ("exempt-v4-mapped", RESIDENT, "::ffff:192.0.2.200", "US", "DE", D, "exempt", None),
    ("exempt-v6", RESIDENT, "2001:db8:1::1", None, "DE", D, "exempt", None),
    ("exempt-even-if-allowed", RESIDENT, "192.0.2.200", "DE", "DE", D, "exempt", None),
    ("not-exempt-v4", RESIDENT, "192.0.3.1", "US", "DE", B, "allow_countries", None),
    ("no-address-is-not-exempt", RESIDENT, None, "US", "DE", B, "allow_countries", None),
    ("garbage-address-is-not-exempt", RESIDENT, "unix:/run/x", "US", "DE", B, "allow_countries", None),
    ("exempt-from-deny", {"deny_countries": ["RU"], "exempt_cidrs": [OFFICE]}, "192.0.2.1", "RU", None, D, "exempt", None),
    # 3. Unknown country.
    ("unknown-deny-blocks", GERMANY, "198.51.100.1", None, None, B, "unknown", None),
    ("unknown-empty-string-is-unknown", GERMANY, "198.51.100.1", "", None, B, "unknown", None),
    ("unknown-deny-redirects", REDIRECTING, "198.51.100.1", None, None, R, "unknown", ELSEWHERE),
    ("unknown-allow-delivers", {"allow_countries": ["DE"]}, "198.51.100.1", None, None, D, "unknown", None),
    ("unknown-deny-alone", {"unknown": "deny"}, "198.51.100.1", None, None, B, "unknown", None),
    ("known-with-unknown-deny-alone", {"unknown": "deny"}, "198.51.100.1", "US", None, D, "countries", None),
    # 4. Allow list.
    ("allow-in", GERMANY, "198.51.100.1", "DE", None, D, "countries", None),
    ("allow-in-lower-case", GERMANY, "198.51.100.1", "de", None, D, "countries", None),
    ("allow-out-blocks", GERMANY, "198.51.100.1", "AT", None, B, "allow_countries", None),
    ("allow-out-redirects", REDIRECTING, "198.51.100.1", "AT", None, R, "allow_countries", ELSEWHERE),
    ("allow-out-unlisted-code", GERMANY, "198.51.100.1", "XK", None, B, "allow_countries", None),
    # 5. Deny list, after allow.
    ("deny-in-blocks", {"deny_countries": ["RU"]}, "198.51.100.1", "RU", None, B, "deny_countries", None),
    ("deny-lower-case-still-denied", {"deny_countries": ["RU"]}, "198.51.100.1", "ru", None, B, "deny_countries", None),
    ("deny-out-delivers", {"deny_countries": ["RU"]}, "198.51.100.1", "DE", None, D, "countries", None),
    ("deny-redirects", {"deny_countries": ["RU"], "action": "redirect", "redirect_url": ELSEWHERE},
     "198.51.100.1", "RU", None, R, "deny_countries", ELSEWHERE),
    ("in-both-is-denied", {"allow_countries": ["DE", "AT"], "deny_countries": ["AT"]}, "198.51.100.1", "AT", None,
     B, "deny_countries", None),
    ("in-allow-not-deny", {"allow_countries": ["DE", "AT"], "deny_countries": ["AT"]}, "198.51.100.1", "DE", None,
     D, "countries", None),
    ("unknown-allowed-skips-deny", {"deny_countries": ["RU"]}, "198.51.100.1", None, None, D, "unknown", None),
]


@pytest.mark.parametrize(
    ("section", "client_ip", "country", "node_country", "outcome", "rule", "location"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_decide(section, client_ip, country, node_country, outcome, rule, location):
    got = decide(delivery(**section), client_ip=client_ip, country=country, node_country=node_country,
                 path_and_query="/a/b?c=d")
    assert got == DeliveryDecision(outcome, rule, location)
    assert got.rule in RULES
    assert got.delivered is (outcome is D)


def test_every_outcome_and_rule_is_covered():
    assert {case[5] for case in CASES} == set(Outcome)
    assert {case[6] for case in CASES} == set(RULES)


def test_unrestricted_tenants_get_one_shared_decision():
    for d in (Delivery(), delivery(), delivery(action="redirect", redirect_url=ELSEWHERE),
              delivery(exempt_cidrs=[OFFICE])):
        assert not d.active
        assert decide(d, client_ip="192.0.2.1", country="US", node_country=None, path_and_query="/") is UNRESTRICTED


def test_location_free_decisions_are_shared():
    d = delivery(**GERMANY)
    a = decide(d, client_ip="198.51.100.1", country="US", node_country="DE", path_and_query="/x")
    b = decide(d, client_ip="198.51.100.2", country="FR", node_country="DE", path_and_query="/y")
    assert a is b


@pytest.mark.parametrize(
    ("in_region_url", "path_and_query", "location"),
    [
        pytest.param(IN_REGION, "/", IN_REGION + "/", id="root"),
        pytest.param(IN_REGION + "/", "/x?y=1", IN_REGION + "/x?y=1", id="trailing-slash-in-policy"),
        pytest.param(IN_REGION + "/eu", "/x", IN_REGION + "/eu/x", id="base-path"),
        pytest.param(IN_REGION, "*", IN_REGION + "/", id="asterisk-form"),
        pytest.param(IN_REGION, "", IN_REGION + "/", id="empty-target"),
    ],
)
def test_wrong_node_location(in_region_url, path_and_query, location):
    d = delivery(edge_countries=["DE"], in_region_url=in_region_url)
    got = decide(d, client_ip=None, country=None, node_country="NL", path_and_query=path_and_query)
    assert (got.outcome, got.location) == (WR, location)
    # Built directly, without the validator's trailing-slash normalisation.
    raw = Delivery(edge_countries=frozenset({"DE"}), in_region_url=in_region_url)
    assert decide(raw, client_ip=None, country=None, node_country="NL", path_and_query=path_and_query) == got


def test_redirect_action_without_url_blocks():
    # Only reachable by building Delivery by hand; the validator requires the URL.
    d = Delivery(allow_countries=frozenset({"DE"}), action="redirect")
    got = decide(d, client_ip=None, country="US", node_country=None, path_and_query="/")
    assert (got.outcome, got.location) == (B, None)


def test_statuses():
    assert [o.status for o in Outcome] == [None, 451, 307, 307, 421]


def test_decisions_are_immutable():
    with pytest.raises(AttributeError):
        UNRESTRICTED.rule = "x"  # type: ignore[misc]
