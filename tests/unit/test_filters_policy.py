"""The policy's filters section: validation messages, defaults, round trip."""
from __future__ import annotations

from typing import Any

import pytest

from edge.policy import Filters, PolicyError, parse_policy, to_data

BASE: dict[str, Any] = {"hosts": ["shop.example"], "origins": [{"url": "http://10.0.0.5:8080"}]}
MODE = '"block", "log" or "off"'
CIDR = 'an IP network such as "192.0.2.0/24" or "2001:db8::/32"'
RATE = "a number of requests per second > 0 and <= 1e+06"
RULE_ID = 'an id of 1 to 64 letters, digits, "_" or "-"'


def parse(filters: object):
    return parse_policy({**BASE, "filters": filters}, tenant="shop", source="shop.json")


def errors_of(filters: object) -> list[tuple[str, str, str]]:
    with pytest.raises(PolicyError) as info:
        parse(filters)
    return [(e.field, e.expected, e.found) for e in info.value.errors]


def rule(**kw):
    return {"rate_limits": {"rules": [{"id": "r", "rate": 1, **kw}]}}


BAD = [
    ("not an object", [], [("filters", "an object", "[]")]),
    ("unknown section", {"captcha": {}}, [("filters.captcha", "one of the keys ip_lists, request_limits, rate_limits, under_attack, waf, events", "an unknown key")]),
    ("unknown key", {"ip_lists": {"denied": []}},
     [("filters.ip_lists.denied", 'a known key (did you mean "deny"?)', "an unknown key")]),
    ("mode", {"ip_lists": {"mode": "on"}}, [("filters.ip_lists.mode", MODE, '"on"')]),
    ("rl mode", {"rate_limits": {"mode": True}}, [("filters.rate_limits.mode", MODE, "true")]),
    ("cidr", {"ip_lists": {"deny": ["10.0.0.0/8", "nope"]}}, [("filters.ip_lists.deny[1]", CIDR, '"nope"')]),
    ("host bits", {"ip_lists": {"allow": ["192.0.2.1/24"]}},
     [("filters.ip_lists.allow[0]", 'a network address without host bits, such as "192.0.2.0/24"', '"192.0.2.1/24"')]),
    ("list not a list", {"ip_lists": {"allow": "192.0.2.0/24"}},
     [("filters.ip_lists.allow", "a list of at most 100000 IP networks", '"192.0.2.0/24"')]),
    ("rules not a list", {"rate_limits": {"rules": {}}}, [("filters.rate_limits.rules", "a list of at most 100 rules", "{}")]),
    ("rate zero", rule(rate=0), [("filters.rate_limits.rules[0].rate", RATE, "0")]),
    ("rate negative", rule(rate=-1), [("filters.rate_limits.rules[0].rate", RATE, "-1")]),
    ("rate string", rule(rate="5"), [("filters.rate_limits.rules[0].rate", RATE, '"5"')]),
    ("burst zero", rule(burst=0), [("filters.rate_limits.rules[0].burst", "an integer 1..1000000000", "0")]),
    ("burst float", rule(burst=1.5), [("filters.rate_limits.rules[0].burst", "an integer 1..1000000000", "1.5")]),
    ("per", rule(per="ip"), [("filters.rate_limits.rules[0].per", '"client" or "tenant"', '"ip"')]),
    ("path", rule(path_prefix="login"),
     [("filters.rate_limits.rules[0].path_prefix", 'a path starting with "/" (printable ASCII; percent-encode the rest)', '"login"')]),
    ("bad id", rule(id="a b"), [("filters.rate_limits.rules[0].id", RULE_ID, '"a b"')]),
    ("missing id and rate", {"rate_limits": {"rules": [{}]}},
     [("filters.rate_limits.rules[0].id", RULE_ID, "nothing"), ("filters.rate_limits.rules[0].rate", RATE, "nothing")]),
    ("duplicate id", {"rate_limits": {"rules": [{"id": "login", "rate": 1}, {"id": "login", "rate": 2}]}},
     [("filters.rate_limits.rules[1].id", "an id no other rule of the list has", '"login"')]),
    ("unknown rule key", rule(limit=3),
     [("filters.rate_limits.rules[0].limit", "one of the keys id, path_prefix, per, rate, burst", "an unknown key")]),
]


@pytest.mark.parametrize(("name", "filters", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_filters(name, filters, expected):
    assert errors_of(filters) == expected


def test_defaults_run_only_the_waf():
    p = parse_policy(BASE, tenant="shop", source="shop.json")
    assert p.filters == Filters() and p.filters.waf.mode == "block"
    off = {"waf": {"mode": "off"}}
    assert not parse(off).filters.active
    assert not parse({**off, "ip_lists": {}}).filters.active  # "block", but nothing listed
    assert not parse({**off, **rule()}).filters.active  # rate_limits default to "off"
    assert not parse({**off, "under_attack": {}}).filters.active  # "off" unless set


def test_rule_defaults_and_round_trip():
    p = parse({"ip_lists": {"deny": ["198.51.100.0/24"]},
               "rate_limits": {"mode": "block", "rules": [{"id": "r", "rate": 2.5}]}})
    r = p.filters.rate_limits.rules[0]
    assert (r.per, r.burst, r.path_prefix, r.rate) == ("client", 3, None, 2.5)
    assert p.filters.active and p.filters.ip_lists.active and p.filters.rate_limits.active
    again = parse_policy(to_data(p), tenant="shop", source="shop.json")
    assert again == p and again.version == p.version
    assert parse({"rate_limits": {"mode": "block", "rules": [{"id": "r", "rate": 3}]}}).version != p.version
