"""The policy's delivery section: validation messages, defaults, round trip, exempt networks."""
from __future__ import annotations

import ipaddress
import itertools
import random
import json
import re
import string
from pathlib import Path
from typing import Any

import pytest

from edge.schema.values import ISO_COUNTRIES
from edge.policy import CidrSet, Delivery, PolicyError, load_policy_file, parse_policy, to_data

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "policies" / "schema.json").read_text())
SOURCE = "policies/shop.json"
BASE: dict[str, Any] = {"hosts": ["shop.example"], "origins": [{"url": "http://10.0.0.5:8080"}]}

COUNTRY = 'an ISO 3166-1 alpha-2 country code such as "DE"'
COUNTRIES = "a list of ISO 3166-1 alpha-2 country codes"
CIDR = 'an IP network such as "192.0.2.0/24" or "2001:db8::/32"'
CIDRS = "a list of at most 10000 IP networks"
REDIRECT_URL = 'an absolute https:// URL without user info, such as "https://example.de/unavailable"'
IN_REGION_URL = 'an absolute https:// URL without user info, query or fragment, such as "https://de.cdn.example.de"'


def parse(delivery: object) -> Any:
    return parse_policy({**BASE, "delivery": delivery}, tenant="shop", source=SOURCE)


def errors_of(delivery: object) -> list[tuple[str, str, str]]:
    with pytest.raises(PolicyError) as info:
        parse(delivery)
    return [(e.field, e.expected, e.found) for e in info.value.errors]


# (the mistake, the delivery section, [(field, expected, found), ...])
BAD = [
    ("not an object", ["DE"], [("delivery", "an object", '["DE"]')]),
    ("unknown key", {"allow_country": ["DE"]},
     [("delivery.allow_country", 'a known key (did you mean "allow_countries"?)', "an unknown key")]),
    ("unassigned country", {"allow_countries": ["DE", "XX"]}, [("delivery.allow_countries[1]", COUNTRY, '"XX"')]),
    ("reserved code", {"deny_countries": ["UK"]}, [("delivery.deny_countries[0]", COUNTRY, '"UK"')]),
    ("alpha-3", {"allow_countries": ["DEU"]}, [("delivery.allow_countries[0]", COUNTRY, '"DEU"')]),
    ("country as number", {"edge_countries": [49]}, [("delivery.edge_countries[0]", COUNTRY, "49")]),
    ("countries as string", {"allow_countries": "DE"}, [("delivery.allow_countries", COUNTRIES, '"DE"')]),
    ("unknown setting", {"unknown": "block"}, [("delivery.unknown", '"allow" or "deny"', '"block"')]),
    ("unknown as bool", {"unknown": False}, [("delivery.unknown", '"allow" or "deny"', "false")]),
    ("action", {"action": "451"}, [("delivery.action", '"block" or "redirect"', '"451"')]),
    ("redirect without url", {"action": "redirect"},
     [("delivery.redirect_url", REDIRECT_URL + ' (required when "action" is "redirect")', "nothing")]),
    ("redirect with null url", {"action": "redirect", "redirect_url": None},
     [("delivery.redirect_url", REDIRECT_URL + ' (required when "action" is "redirect")', "null")]),
    ("url without redirect", {"redirect_url": "https://example.de/"},
     [("delivery.redirect_url", 'null unless "action" is "redirect"', '"https://example.de/"')]),
    ("url with block", {"action": "block", "redirect_url": "https://example.de/"},
     [("delivery.redirect_url", 'null unless "action" is "redirect"', '"https://example.de/"')]),
    ("redirect http", {"action": "redirect", "redirect_url": "http://example.de/x"},
     [("delivery.redirect_url", REDIRECT_URL, '"http://example.de/x"')]),
    ("redirect relative", {"action": "redirect", "redirect_url": "/blocked"},
     [("delivery.redirect_url", REDIRECT_URL, '"/blocked"')]),
    ("redirect scheme-relative", {"action": "redirect", "redirect_url": "//example.de/x"},
     [("delivery.redirect_url", REDIRECT_URL, '"//example.de/x"')]),
    ("redirect javascript", {"action": "redirect", "redirect_url": "javascript:alert(1)"},
     [("delivery.redirect_url", REDIRECT_URL, '"javascript:alert(1)"')]),
    ("redirect userinfo", {"action": "redirect", "redirect_url": "https://user:pw@example.de/"},
     [("delivery.redirect_url", REDIRECT_URL, '"https://user:pw@example.de/"')]),
    ("redirect userinfo behind backslash", {"action": "redirect", "redirect_url": "https://good.example\\@evil.example/"},
     [("delivery.redirect_url", REDIRECT_URL, '"https://good.example\\\\@evil.example/"')]),
    ("redirect whitespace", {"action": "redirect", "redirect_url": "https://example.de/a b"},
     [("delivery.redirect_url", REDIRECT_URL, '"https://example.de/a b"')]),
    ("redirect header injection", {"action": "redirect", "redirect_url": "https://example.de/\r\nSet-Cookie: a=b"},
     [("delivery.redirect_url", REDIRECT_URL, '"https://example.de/\\r\\nSet-Cookie: a=b"')]),
    ("redirect angle bracket", {"action": "redirect", "redirect_url": "https://example.de/>"},
     [("delivery.redirect_url", REDIRECT_URL, '"https://example.de/>"')]),
    ("redirect bad escape", {"action": "redirect", "redirect_url": "https://example.de/%zz"},
     [("delivery.redirect_url", REDIRECT_URL, '"https://example.de/%zz"')]),
    ("redirect no host", {"action": "redirect", "redirect_url": "https:///x"},
     [("delivery.redirect_url", REDIRECT_URL, '"https:///x"')]),
    ("redirect bad port", {"action": "redirect", "redirect_url": "https://example.de:99999/"},
     [("delivery.redirect_url", REDIRECT_URL, '"https://example.de:99999/"')]),
    ("redirect not a string", {"action": "redirect", "redirect_url": 7}, [("delivery.redirect_url", REDIRECT_URL, "7")]),
    ("cidr host bits", {"exempt_cidrs": ["10.0.0.0/8", "192.0.2.1/24"]},
     [("delivery.exempt_cidrs[1]", 'a network address without host bits, such as "192.0.2.0/24"', '"192.0.2.1/24"')]),
    ("cidr v6 host bits", {"exempt_cidrs": ["2001:db8::1/32"]},
     [("delivery.exempt_cidrs[0]", 'a network address without host bits, such as "2001:db8::/32"', '"2001:db8::1/32"')]),
    ("cidr prefix too long", {"exempt_cidrs": ["192.0.2.0/33"]}, [("delivery.exempt_cidrs[0]", CIDR, '"192.0.2.0/33"')]),
    ("cidr netmask", {"exempt_cidrs": ["192.0.2.0/255.255.255.0"]},
     [("delivery.exempt_cidrs[0]", CIDR, '"192.0.2.0/255.255.255.0"')]),
    ("cidr name", {"exempt_cidrs": ["office.example"]}, [("delivery.exempt_cidrs[0]", CIDR, '"office.example"')]),
    ("cidr zone id", {"exempt_cidrs": ["fe80::%eth0/64"]}, [("delivery.exempt_cidrs[0]", CIDR, '"fe80::%eth0/64"')]),
    ("cidr leading zeros", {"exempt_cidrs": ["010.0.0.0/8"]}, [("delivery.exempt_cidrs[0]", CIDR, '"010.0.0.0/8"')]),
    ("cidr as number", {"exempt_cidrs": [167772160]}, [("delivery.exempt_cidrs[0]", CIDR, "167772160")]),
    ("cidrs as string", {"exempt_cidrs": "10.0.0.0/8"}, [("delivery.exempt_cidrs", CIDRS, '"10.0.0.0/8"')]),
    ("too many cidrs", {"exempt_cidrs": [f"10.{i >> 8}.{i & 255}.0/24" for i in range(10_001)]},
     [("delivery.exempt_cidrs", CIDRS, "10001 entries")]),
    ("in-region url without edge countries", {"in_region_url": "https://de.cdn.example.de"},
     [("delivery.in_region_url", 'null unless "edge_countries" lists countries', '"https://de.cdn.example.de"')]),
    ("in-region url with query", {"edge_countries": ["DE"], "in_region_url": "https://de.cdn.example.de/?x=1"},
     [("delivery.in_region_url", IN_REGION_URL, '"https://de.cdn.example.de/?x=1"')]),
    ("in-region url http", {"edge_countries": ["DE"], "in_region_url": "http://de.cdn.example.de"},
     [("delivery.in_region_url", IN_REGION_URL, '"http://de.cdn.example.de"')]),
    ("in-region url relative", {"edge_countries": ["DE"], "in_region_url": "de.cdn.example.de"},
     [("delivery.in_region_url", IN_REGION_URL, '"de.cdn.example.de"')]),
    ("every error at once",
     {"allow_countries": ["XX"], "unknown": "maybe", "action": "redirect", "exempt_cidrs": ["1.2.3.4/8"],
      "edge_countries": ["ZZ"], "in_region_url": "ftp://x"},
     [("delivery.allow_countries[0]", COUNTRY, '"XX"'),
      ("delivery.unknown", '"allow" or "deny"', '"maybe"'),
      ("delivery.redirect_url", REDIRECT_URL + ' (required when "action" is "redirect")', "nothing"),
      ("delivery.exempt_cidrs[0]", 'a network address without host bits, such as "1.0.0.0/8"', '"1.2.3.4/8"'),
      ("delivery.edge_countries[0]", COUNTRY, '"ZZ"'),
      ("delivery.in_region_url", IN_REGION_URL, '"ftp://x"')]),
    ("bad action still checks the url", {"action": "redir", "redirect_url": "http://x.example"},
     [("delivery.action", '"block" or "redirect"', '"redir"'),
      ("delivery.redirect_url", REDIRECT_URL, '"http://x.example"')]),
]


@pytest.mark.parametrize(("delivery", "expected"), [pytest.param(d, e, id=i) for i, d, e in BAD])
def test_each_mistake_names_its_field(delivery, expected):
    assert errors_of(delivery) == expected


def test_errors_name_the_file():
    with pytest.raises(PolicyError) as info:
        parse({"allow_countries": ["XX"]})
    assert str(info.value) == f'{SOURCE}: delivery.allow_countries[0]: expected {COUNTRY}, found "XX"'


def test_no_section_restricts_nothing():
    d = parse_policy(BASE, tenant="shop", source=SOURCE).delivery
    assert d == Delivery() and not d.restricted and not d.active
    assert to_data(parse_policy(BASE, tenant="shop", source=SOURCE))["delivery"] == {
        "allow_countries": [], "deny_countries": [], "unknown": "allow", "action": "block",
        "redirect_url": None, "exempt_cidrs": [], "edge_countries": [], "in_region_url": None,
    }


@pytest.mark.parametrize(
    ("delivery", "restricted", "active"),
    [
        pytest.param({}, False, False, id="empty"),
        pytest.param({"action": "redirect", "redirect_url": "https://x.example/"}, False, False, id="action-only"),
        pytest.param({"exempt_cidrs": ["192.0.2.0/24"]}, False, False, id="exempt-only"),
        pytest.param({"allow_countries": ["DE"]}, True, True, id="allow"),
        pytest.param({"deny_countries": ["RU"]}, True, True, id="deny"),
        pytest.param({"unknown": "deny"}, True, True, id="unknown-deny"),
        pytest.param({"edge_countries": ["DE"]}, False, True, id="edge-only"),
    ],
)
def test_restricted_and_active_flags(delivery, restricted, active):
    d = parse(delivery).delivery
    assert (d.restricted, d.active) == (restricted, active)


def test_values_are_normalised():
    d = parse({
        "allow_countries": ["de", "At", "DE"], "deny_countries": ["ch"], "edge_countries": ["de"],
        "action": "redirect", "redirect_url": "HTTPS://example.de/Not-Here?x=%2F#top",
        "exempt_cidrs": ["192.0.2.7", "2001:DB8::/32", "::ffff:198.51.100.0/120", "192.0.2.0/24", "192.0.2.0/24"],
        "in_region_url": "https://de.cdn.example.de/base/",
    }).delivery
    assert d.allow_countries == {"DE", "AT"} and d.deny_countries == {"CH"} and d.edge_countries == {"DE"}
    assert d.redirect_url == "https://example.de/Not-Here?x=%2F#top"
    assert d.in_region_url == "https://de.cdn.example.de/base"  # the path appended brings its own "/"
    # Canonical, sorted, duplicates gone; a bare address is one host; IPv4-mapped is IPv4.
    assert [str(n) for n in d.exempt_cidrs.networks] == [
        "192.0.2.0/24", "192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32"]


def test_https_urls_that_are_fine():
    for url in ("https://example.de", "https://[2001:db8::1]:8443/x", "https://192.0.2.1/a;b=c?q=1&r=%20#f",
                "https://xn--mnchen-3ya.example/"):
        assert parse({"action": "redirect", "redirect_url": url}).delivery.redirect_url == url


def test_round_trip_and_version():
    doc = {**BASE, "delivery": {
        "allow_countries": ["DE", "at"], "deny_countries": ["AT"], "unknown": "deny", "action": "redirect",
        "redirect_url": "https://example.de/unavailable", "exempt_cidrs": ["2001:db8::/32", "192.0.2.0/24"],
        "edge_countries": ["DE"], "in_region_url": "https://de.cdn.example.de/",
    }}
    p = parse_policy(doc, tenant="shop", source=SOURCE)
    again = parse_policy(to_data(p), tenant="shop", source=SOURCE)
    assert again == p and again.version == p.version and again.delivery == p.delivery
    # Order and spelling do not change the version; the effect does.
    shuffled = json.loads(json.dumps(doc))
    shuffled["delivery"].update(allow_countries=["at", "de"], exempt_cidrs=["192.0.2.0/24", "2001:db8::/32"],
                                in_region_url="https://de.cdn.example.de")
    assert parse_policy(shuffled, tenant="shop", source=SOURCE).version == p.version
    for change in ({"unknown": "allow"}, {"deny_countries": []}, {"exempt_cidrs": ["192.0.2.0/24"]},
                   {"edge_countries": ["DE", "AT"]}, {"in_region_url": None}):
        other = json.loads(json.dumps(doc))
        other["delivery"].update(change)
        assert parse_policy(other, tenant="shop", source=SOURCE).version != p.version, change
    assert parse_policy(BASE, tenant="shop", source=SOURCE).version != p.version


def test_germany_only_example_loads_in_quick_mode():
    path = REPO / "policies" / "examples" / "germany-only.json"
    p = load_policy_file(path, tenant="default", quick_origin="http://127.0.0.1:3000")
    d = p.delivery
    assert p.hosts == ("*",) and p.origins[0].url == "http://127.0.0.1:3000"
    assert (d.allow_countries, d.deny_countries, d.unknown, d.action) == ({"DE"}, frozenset(), "deny", "block")
    assert d.edge_countries == {"DE"} and d.in_region_url and d.in_region_url.startswith("https://")
    assert d.exempt_cidrs, "an exempt monitoring network"
    documentation = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]
    for net in d.exempt_cidrs.networks:
        assert any(net.version == doc.version and net.subnet_of(doc) for doc in documentation), net  # type: ignore[arg-type]


def test_the_schema_country_pattern_is_the_iso_list():
    pattern = re.compile(SCHEMA["$defs"]["country"]["pattern"])
    letters = string.ascii_uppercase
    accepted = {a + b for a, b in itertools.product(letters, repeat=2) if pattern.fullmatch(a + b)}
    assert accepted == ISO_COUNTRIES
    assert all(pattern.fullmatch(c.lower()) and pattern.fullmatch(c[0] + c[1].lower()) for c in ISO_COUNTRIES)


@pytest.mark.parametrize(
    "delivery",
    [
        {"allow_countries": ["XX"]},
        {"unknown": "block"},
        {"action": "redirect"},
        {"redirect_url": "https://example.de/"},
        {"action": "redirect", "redirect_url": "http://example.de/"},
        {"action": "redirect", "redirect_url": "https://example.de/a b"},
        {"action": "redirect", "redirect_url": "https://u@example.de/"},
        {"exempt_cidrs": ["192.0.2.0/255.255.255.0"]},
        {"in_region_url": "https://de.cdn.example.de"},
        {"edge_countries": [], "in_region_url": "https://de.cdn.example.de"},
        {"edge_countries": ["DE"], "in_region_url": "https://de.cdn.example.de/?q"},
        {"surplus": 1},
    ],
)
def test_the_schema_rejects_what_the_validator_rejects(delivery):
    jsonschema = pytest.importorskip("jsonschema")
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors({"delivery": delivery})) != []
    with pytest.raises(PolicyError):
        parse(delivery)


# --- exempt networks ---------------------------------------------------------------


def cidrs(*texts: str) -> CidrSet:
    return parse({"exempt_cidrs": list(texts)}).delivery.exempt_cidrs


@pytest.mark.parametrize(
    ("networks", "address", "inside"),
    [
        pytest.param(["192.0.2.0/24"], "192.0.2.0", True, id="v4-first"),
        pytest.param(["192.0.2.0/24"], "192.0.2.255", True, id="v4-last"),
        pytest.param(["192.0.2.0/24"], "192.0.1.255", False, id="v4-just-below"),
        pytest.param(["192.0.2.0/24"], "192.0.3.0", False, id="v4-just-above"),
        pytest.param(["192.0.2.7"], "192.0.2.7", True, id="v4-host"),
        pytest.param(["192.0.2.7"], "192.0.2.6", False, id="v4-host-neighbour"),
        pytest.param(["0.0.0.0/0"], "255.255.255.255", True, id="v4-everything"),
        pytest.param(["0.0.0.0/0"], "2001:db8::1", False, id="v4-everything-not-v6"),
        pytest.param(["10.0.0.0/8", "10.1.2.0/24"], "10.200.0.1", True, id="v4-overlapping-short"),
        pytest.param(["10.0.0.0/8", "10.1.2.0/24"], "10.1.2.3", True, id="v4-overlapping-long"),
        pytest.param(["192.0.2.0/24"], "::ffff:192.0.2.9", True, id="mapped-client-v4-network"),
        pytest.param(["192.0.2.0/24"], "::ffff:192.0.3.9", False, id="mapped-client-outside"),
        pytest.param(["::ffff:192.0.2.0/120"], "192.0.2.9", True, id="mapped-network-v4-client"),
        pytest.param(["192.0.2.0/24"], "::192.0.2.9", False, id="v4-compatible-is-not-mapped"),
        pytest.param(["192.0.2.0/24"], "64:ff9b::192.0.2.9", False, id="nat64-is-not-mapped"),
        pytest.param(["2001:db8::/32"], "2001:db8::", True, id="v6-first"),
        pytest.param(["2001:db8::/32"], "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", True, id="v6-last"),
        pytest.param(["2001:db8::/32"], "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", False, id="v6-just-below"),
        pytest.param(["2001:db8::/32"], "2001:db9::", False, id="v6-just-above"),
        pytest.param(["2001:db8::/32"], "2001:DB8::A", True, id="v6-upper-case"),
        pytest.param(["2001:db8::1/128"], "2001:db8::1", True, id="v6-host"),
        pytest.param(["fe80::/10"], "fe80::1%eth0", True, id="v6-zone-id"),
        pytest.param(["::/0"], "192.0.2.1", False, id="v6-everything-not-v4"),
        pytest.param(["192.0.2.0/24"], "", False, id="empty"),
        pytest.param(["192.0.2.0/24"], "not an address", False, id="garbage"),
        pytest.param(["192.0.2.0/24"], "192.0.2.1\x00", False, id="nul"),
        pytest.param(["192.0.2.0/24"], "192.0.2", False, id="short-v4"),
    ],
)
def test_exempt_membership(networks, address, inside):
    assert (address in cidrs(*networks)) is inside


def test_exempt_membership_of_non_strings_and_empty_sets():
    assert None not in cidrs("0.0.0.0/0")
    assert "192.0.2.1" not in CidrSet()
    assert len(CidrSet()) == 0 and not CidrSet()


def test_many_networks_are_merged_into_ranges():
    texts = [f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(5000)]
    texts += [f"2001:db8:{i:x}::/48" for i in range(4000)]
    texts += [f"172.16.{i >> 2}.{(i & 3) * 64}/26" for i in range(1000)]
    c = cidrs(*texts)
    assert len(c) == 10_000
    # Adjacent networks become one range: 10.0.0.0-10.19.135.255, 172.16.0.0-172.16.249.255, one IPv6 run.
    assert [len(c._v4[0]), len(c._v6[0])] == [2, 1]
    assert "10.0.42.9" in c and "2001:db8:f9f::1" in c and "172.16.3.130" in c
    assert "11.0.0.1" not in c and "2001:db8:fa0::1" not in c and "172.16.250.1" not in c


def test_membership_agrees_with_ipaddress():
    rng = random.Random(7)
    nets: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for _ in range(400):  # nested, overlapping and adjacent networks of every length
        nets.add(ipaddress.ip_network((rng.getrandbits(8) << 24, rng.randint(0, 32)), strict=False))
        nets.add(ipaddress.ip_network((0x20010DB8 << 96 | rng.getrandbits(16) << 80, rng.randint(16, 128)), strict=False))
    c = CidrSet(tuple(nets))
    probes: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for net in nets:
        first, last = int(net.network_address), int(net.broadcast_address)
        top = (1 << net.max_prefixlen) - 1
        probes += [ipaddress.ip_address(n) if net.version == 4 else ipaddress.IPv6Address(n)
                   for n in (first - 1, first, last, last + 1) if 0 <= n <= top]
    for a in probes:
        assert (str(a) in c) is any(a in n for n in nets if n.version == a.version), a
