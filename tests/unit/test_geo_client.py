"""Client address behind trusted proxies (edge.geo.client), table-driven."""
from __future__ import annotations

import ipaddress

import pytest

from edge.geo.client import (
    MAX_HOPS,
    Trusted,
    client_address,
    normalise_address,
    parse_hop,
)

T = Trusted(["10.0.0.0/8", "192.168.0.0/16", "2001:db8:ffff::/48", ipaddress.ip_network("127.0.0.1/32")])
NONE = Trusted()
P = "10.0.0.1"  # a trusted peer (the load balancer)
C = "198.51.100.7"  # the real client

# (id, peer, X-Forwarded-For lines, Forwarded lines, trusted, expected)
CASES: list[tuple[str, str | None, list[str], list[str], Trusted, str | None]] = [
    # --- untrusted peers: headers change nothing
    ("untrusted-peer", "203.0.113.9", [], [], T, "203.0.113.9"),
    ("untrusted-peer-ignores-xff", "203.0.113.9", ["1.2.3.4"], [], T, "203.0.113.9"),
    ("untrusted-peer-ignores-forwarded", "203.0.113.9", [], ["for=1.2.3.4"], T, "203.0.113.9"),
    ("no-trusted-proxies-configured", P, [C], ["for=1.2.3.4"], NONE, P),
    ("untrusted-peer-v4-mapped-normalised", "::ffff:203.0.113.9", [C], [], T, "203.0.113.9"),
    ("untrusted-peer-v6-normalised", "2001:DB8:0:0::9", [C], [], T, "2001:db8::9"),
    ("peer-none", None, [C], [], T, None),
    ("peer-empty", "", [C], [], T, None),
    ("peer-not-an-address", "unix:/run/edge.sock", [C], [], T, None),
    # --- X-Forwarded-For from a trusted peer
    ("trusted-peer-no-headers", P, [], [], T, P),
    ("xff-single", P, [C], [], T, C),
    ("xff-right-most-untrusted-wins", P, [f"1.1.1.1, {C}"], [], T, C),
    ("xff-skips-trusted-hops", P, [f"{C}, 10.0.0.5, 192.168.1.1"], [], T, C),
    ("xff-spoofed-left-part-ignored", P, [f"6.6.6.6, 5.5.5.5, {C}, 10.0.0.5"], [], T, C),
    ("xff-field-lines-joined", P, ["6.6.6.6", f"{C}, 10.0.0.5"], [], T, C),
    ("xff-last-line-trusted-only", P, [C, "10.0.0.5"], [], T, C),
    ("xff-all-trusted-left-most", P, ["10.0.0.9, 10.0.0.5", "192.168.0.1"], [], T, "10.0.0.9"),
    ("xff-ipv4-port-stripped", P, [f"{C}:4711"], [], T, C),
    ("xff-ipv6", P, ["2001:db8::7"], [], T, "2001:db8::7"),
    ("xff-ipv6-compressed", P, ["2001:0DB8:0000:0:0:0:0:0007"], [], T, "2001:db8::7"),
    ("xff-ipv6-brackets", P, ["[2001:db8::7]"], [], T, "2001:db8::7"),
    ("xff-ipv6-brackets-port", P, ["[2001:db8::7]:443"], [], T, "2001:db8::7"),
    ("xff-ipv4-mapped", P, [f"::ffff:{C}"], [], T, C),
    ("xff-ipv4-mapped-brackets-port", P, [f"[::ffff:{C}]:80"], [], T, C),
    ("xff-zone-id-dropped", P, ["fe80::1%eth0"], [], T, "fe80::1"),
    ("xff-trusted-v6-hop-skipped", P, [f"{C}, 2001:db8:ffff::2"], [], T, C),
    ("peer-v4-mapped-trusted", "::ffff:10.0.0.1", [C], [], T, C),
    ("peer-v6-trusted", "2001:db8:ffff::1", [C], [], T, C),
    ("xff-ows-tabs", P, [f"\t{C} ,\t10.0.0.5 "], [], T, C),
    ("xff-empty-elements-skipped", P, [f"{C}, , ,10.0.0.5,"], [], T, C),
    ("xff-only-commas-means-peer", P, [", , ,"], [], T, P),
    # --- unusable hops stop the walk: the last hop known good
    ("xff-garbage-right-most-gives-peer", P, [f"{C}, garbage"], [], T, P),
    ("xff-garbage-after-trusted-hop", P, [f"{C}, garbage, 10.0.0.5"], [], T, "10.0.0.5"),
    ("xff-garbage-left-of-client-unreached", P, [f"garbage, {C}, 10.0.0.5"], [], T, C),
    ("xff-unicode-digits", P, ["١٩٨.٥١.١٠٠.٧"], [], T, P),
    ("xff-unicode-junk", P, [f"{C}, ☃"], [], T, P),
    ("xff-nbsp-not-ows", P, [f"{C}\u00a0"], [], T, P),
    ("xff-fullwidth-digits", P, ["１９８.５１.１００.７"], [], T, P),
    ("xff-leading-zero-ipv4", P, ["010.0.0.1"], [], T, P),
    ("xff-bad-port", P, [f"{C}:99x"], [], T, P),
    ("xff-port-too-long", P, [f"{C}:123456"], [], T, P),
    ("xff-empty-port", P, [f"{C}:"], [], T, P),
    ("xff-brackets-around-ipv4", P, [f"[{C}]"], [], T, P),
    ("xff-unclosed-bracket", P, ["[2001:db8::7"], [], T, P),
    ("xff-quoted", P, [f'"{C}"'], [], T, P),
    ("xff-cidr", P, ["198.51.100.0/24"], [], T, P),
    ("xff-obfuscated", P, ["_hidden"], [], T, P),
    ("xff-unknown", P, ["unknown"], [], T, P),
    ("xff-nul-byte", P, [f"{C}\x00"], [], T, P),
    ("xff-very-long-element", P, ["1" * 10_000], [], T, P),
    # --- RFC 7239 Forwarded (used when there is no X-Forwarded-For)
    ("fwd-simple", P, [], [f"for={C}"], T, C),
    ("fwd-names-case-insensitive", P, [], [f"For={C};Proto=https"], T, C),
    ("fwd-quoted-ipv6-port", P, [], ['for="[2001:db8:cafe::17]:4711"'], T, "2001:db8:cafe::17"),
    ("fwd-quoted-ipv6", P, [], ['for="[2001:db8:cafe::17]"'], T, "2001:db8:cafe::17"),
    ("fwd-quoted-ipv4-port", P, [], [f'for="{C}:80"'], T, C),
    ("fwd-obfuscated-port-accepted", P, [], [f'for="{C}:_p1"'], T, C),
    ("fwd-unquoted-brackets-lenient", P, [], ["for=[2001:db8::7]"], T, "2001:db8::7"),
    ("fwd-escaped-quoted-string", P, [], ['for="198.51.100.\\7"'], T, C),
    ("fwd-elements", P, [], [f"for={C};proto=https;by=10.0.0.5, for=10.0.0.5"], T, C),
    ("fwd-field-lines", P, [], ["for=6.6.6.6", f"for={C}, for=10.0.0.5"], T, C),
    ("fwd-all-trusted-left-most", P, [], ["for=10.0.0.9, for=10.0.0.5"], T, "10.0.0.9"),
    ("fwd-pair-ows", P, [], [f"for = {C} ; proto=http"], T, C),
    ("fwd-empty-elements", P, [], [f"for={C}, , for=10.0.0.5,"], T, C),
    ("fwd-hidden-right-most-gives-peer", P, [], [f"for={C}, for=_hidden"], T, P),
    ("fwd-unknown-after-trusted", P, [], [f"for={C}, for=unknown, for=10.0.0.5"], T, "10.0.0.5"),
    ("fwd-unknown-quoted", P, [], [f'for={C}, for="unknown"'], T, P),
    ("fwd-element-without-for", P, [], [f"for={C}, proto=https;by=10.0.0.5"], T, P),
    ("fwd-two-for-in-element", P, [], [f"for=1.1.1.1;for={C}"], T, P),
    ("fwd-empty-for", P, [], [f"for={C}, for="], T, P),
    ("fwd-empty-quoted-for", P, [], [f'for={C}, for=""'], T, P),
    ("fwd-pair-without-value", P, [], [f"for={C};secure"], T, P),
    ("fwd-unbalanced-quote", P, [], [f'for="{C}'], T, P),
    ("fwd-quote-inside-token", P, [], [f'for={C}"x"'], T, P),
    ("fwd-quoted-comma-stops", P, [], [f'for={C};ext="a,b"'], T, P),
    ("fwd-garbage-value", P, [], ["for=garbage"], T, P),
    ("fwd-unicode", P, [], ["for=١.٢.٣.٤"], T, P),
    ("fwd-only-for-others", P, [], ["by=10.0.0.5;proto=https"], T, P),
    # --- which header
    ("xff-preferred-over-forwarded", P, [C], ["for=203.0.113.1"], T, C),
    ("blank-xff-falls-back-to-forwarded", P, ["", "  "], [f"for={C}"], T, C),
    ("blank-forwarded-means-peer", P, [], ["", " "], T, P),
]


@pytest.mark.parametrize(
    ("peer", "xff", "forwarded", "trusted", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_client_address(peer, xff, forwarded, trusted, expected) -> None:
    assert client_address(peer, xff, forwarded, trusted) == expected


# --- hostile sizes: the walk examines at most MAX_HOPS elements

def _trusted_hops(n: int) -> list[str]:
    return [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(n)]


def test_huge_xff_with_real_client_on_the_right() -> None:
    xff = [", ".join(["6.6.6.6"] * 20_000 + [C])]
    assert client_address(P, xff, [], T) == C


def test_huge_xff_of_trusted_hops_stops_at_the_bound() -> None:
    hops = _trusted_hops(5_000)
    # Left of the bound is never read: the answer is the last hop examined.
    assert client_address(P, [", ".join(hops)], [], T) == hops[-MAX_HOPS]


def test_thousands_of_field_lines() -> None:
    hops = _trusted_hops(3_000)
    assert client_address(P, hops, [], T) == hops[-MAX_HOPS]


def test_bound_is_exact() -> None:
    within = ["203.0.113.1"] + _trusted_hops(MAX_HOPS - 1)
    beyond = ["203.0.113.1"] + _trusted_hops(MAX_HOPS)
    assert client_address(P, [", ".join(within)], [], T) == "203.0.113.1"
    assert client_address(P, [", ".join(beyond)], [], T) == beyond[-MAX_HOPS]


def test_empty_elements_count_towards_the_bound() -> None:
    xff = [C + "," * 10_000]
    assert client_address(P, xff, [], T) == P


def test_huge_forwarded() -> None:
    line = ", ".join(["for=6.6.6.6"] * 20_000 + [f'for="{C}:1"', "for=10.0.0.5"])
    assert client_address(P, [], [line], T) == C
    hops = _trusted_hops(2_000)
    assert client_address(P, [], [", ".join(f"for={h}" for h in hops)], T) == hops[-MAX_HOPS]


# --- Trusted

@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.1.2.3", True),
        ("192.168.255.255", True),
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("11.0.0.1", False),
        ("::ffff:10.1.2.3", True),
        ("2001:db8:ffff:1::1", True),
        ("2001:db8:fffe::1", False),
        ("::1", False),
        ("", False),
        ("garbage", False),
        ("10.1.2.3:80", False),
        ("x" * 1000, False),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_trusted_contains(address: str, expected: bool) -> None:
    assert T.contains(address) is expected
    assert T.contains(address) is expected  # cached answer


def test_trusted_empty_is_fast_and_false() -> None:
    assert not NONE
    assert NONE.contains("10.0.0.1") is False
    assert NONE.cached == ()


def test_trusted_cache_is_bounded_and_skips_junk() -> None:
    t = Trusted(["10.0.0.0/8"], cache_size=8)
    for i in range(1000):
        t.contains(f"10.0.{i // 256}.{i % 256}")
        t.contains("y" * (100 + i))
        assert len(t.cached) <= 8
    assert all(len(k) < 100 for k in t.cached)
    assert t.contains("10.0.0.1") and not t.contains("11.0.0.1")


def test_trusted_ipv4_mapped_network_matches_ipv4() -> None:
    t = Trusted(["::ffff:10.0.0.0/104"])
    assert t.contains("10.1.2.3") and t.contains("::ffff:10.1.2.3")
    assert not t.contains("11.0.0.1") and not t.contains("::ffff:a00:1:0")
    assert Trusted(["::ffff:0:0/96"]).contains("203.0.113.1")


def test_trusted_accepts_host_bits_and_objects() -> None:
    t = Trusted(["10.0.0.1/8", ipaddress.ip_network("2001:db8::/32")])
    assert [str(n) for n in t.networks] == ["10.0.0.0/8", "2001:db8::/32"]
    assert t.contains("10.9.9.9") and t.contains("2001:db8::1")


# --- the parsers on their own

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::FFFF:192.0.2.1", "192.0.2.1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("192.0.2.1:80", None),
        ("[2001:db8::1]", None),
        ("", None),
        (" 192.0.2.1", None),
    ],
)
def test_normalise_address(text: str, expected: str | None) -> None:
    assert normalise_address(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1:80", "192.0.2.1"),
        ("[2001:db8::1]:80", "2001:db8::1"),
        ("[::ffff:192.0.2.1]", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]80", None),
        ("[2001:db8::1]:", None),
        ("192.0.2.1:_obf", "192.0.2.1"),
        ("192.0.2.1:_", None),
        ("_hidden", None),
    ],
)
def test_parse_hop(text: str, expected: str | None) -> None:
    assert parse_hop(text) == expected
