"""Under-attack mode: challenge and cookie signing, the proof of work, the
return URL, the filter's decisions, auto mode on a fake clock, validation."""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from types import SimpleNamespace

import pytest
from multidict import CIMultiDict, MultiDict

from edge.filters import under_attack as ua
from edge.filters.under_attack import UnderAttackFilter
from edge.policy.sections import under_attack as ua_section
from edge.policy.sections.under_attack import UnderAttack
from edge.schema.check import Check

SECRET = b"s" * 32
NOW = 1_700_000_000
V4 = "198.51.100.0/24"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


# --- networks -------------------------------------------------------------------------------

PREFIXES = [
    ("198.51.100.7", "198.51.100.0/24"),
    ("198.51.100.255", "198.51.100.0/24"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"),
    (None, "-"),
    ("", "-"),
    ("not an address", "-"),
]


@pytest.mark.parametrize(("peer", "prefix"), PREFIXES)
def test_client_prefix_is_the_v4_24_or_the_v6_64(peer, prefix):
    assert ua.client_prefix(peer) == prefix


@pytest.mark.parametrize("secret", [b"k" * 16, b"k" * 64, bytes(range(100)), b"\xff" * 33])
def test_signatures_are_hmac_sha256(secret):
    """Of everything signed: nodes that share EDGE_SECRET accept each other's cookies."""
    for tenant, prefix in (("", ""), ("shop", "198.51.100.0/24"), ("\u00e9" * 100, "2001:db8::/64")):
        cookie = ua.make_cookie(secret, tenant, prefix, 1700003600)
        message = f"clear|{tenant}|{prefix}|1700003600".encode()
        assert cookie == "v1.1700003600." + hmac.new(secret, message, hashlib.sha256).hexdigest()


# --- proof of work --------------------------------------------------------------------------


def _zero_bits(data: bytes) -> int:
    bits = "".join(f"{b:08b}" for b in data)
    return len(bits) - len(bits.lstrip("0"))


def test_leading_zero_bits_agree_with_the_digest_for_every_difficulty():
    challenge = ua.make_challenge(SECRET, "shop", V4, NOW, 16, rand="0123456789abcdef")
    seen = set()
    for n in range(3000):
        zeros = _zero_bits(hashlib.sha256(f"{challenge}:{n}".encode()).digest())
        seen.add(min(zeros, 12))
        for difficulty in range(1, 25):
            assert ua.leading_zero_bits_ok(challenge, str(n), difficulty) == (zeros >= difficulty), (n, difficulty)
    assert {0, 1, 2, 8} <= seen  # the sample had digests of several kinds


def test_solve_finds_the_first_nonce_with_enough_zero_bits():
    challenge = ua.make_challenge(SECRET, "shop", V4, NOW, 8, rand="0123456789abcdef")
    nonce = ua.solve(challenge, 8)
    assert _zero_bits(hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()) >= 8
    assert all(_zero_bits(hashlib.sha256(f"{challenge}:{n}".encode()).digest()) < 8 for n in range(int(nonce)))


# --- challenges -------------------------------------------------------------------------------


def _solved(difficulty: int = 8, prefix: str = V4, issued: int = NOW, tenant: str = "shop") -> tuple[str, str]:
    challenge = ua.make_challenge(SECRET, tenant, prefix, issued, difficulty)
    return challenge, ua.solve(challenge, difficulty)


def _verify(challenge: str, nonce: str, *, prefix: str = V4, now: float = NOW + 1, tenant: str = "shop"):
    return ua.verify_challenge(SECRET, challenge, nonce, tenant=tenant, prefix=prefix, now=now)


def test_challenge_has_the_documented_shape():
    challenge = ua.make_challenge(SECRET, "shop", V4, NOW, 16)
    assert re.fullmatch(rf"v1\.shop\.{NOW}\.[0-9a-f]{{16}}\.16\.[0-9a-f]{{64}}", challenge)
    assert challenge != ua.make_challenge(SECRET, "shop", V4, NOW, 16)  # random part


def test_a_solved_challenge_verifies():
    challenge, nonce = _solved()
    assert _verify(challenge, nonce) is None


def _tamper(challenge: str, index: int, value: str) -> str:
    parts = challenge.split(".")
    parts[index] = value
    return ".".join(parts)


def _flip(text: str) -> str:
    return ("1" if text[0] == "0" else "0") + text[1:]


@pytest.mark.parametrize(("name", "change", "expected"), [
    ("issued moved back", lambda c: _tamper(c, 2, str(NOW - 10)), "another network, or altered"),
    ("random part", lambda c: _tamper(c, 3, _flip(c.split(".")[3])), "another network, or altered"),
    ("difficulty lowered", lambda c: _tamper(c, 4, "8" if c.split(".")[4] != "8" else "9"), "another network"),
    ("mac", lambda c: _tamper(c, 5, _flip(c.split(".")[5])), "another network, or altered"),
    ("tenant", lambda c: _tamper(c, 1, "other"), "another site"),
    ("version", lambda c: _tamper(c, 0, "v2"), "malformed challenge"),
    ("field missing", lambda c: c.rsplit(".", 1)[0], "malformed challenge"),
    ("empty", lambda c: "", "malformed challenge"),
    ("junk", lambda c: "<script>", "malformed challenge"),
])
def test_tampered_challenges_are_refused(name, change, expected):
    challenge, nonce = _solved(difficulty=10)
    problem = _verify(change(challenge), nonce)
    assert problem is not None and expected in problem, (name, problem)


@pytest.mark.parametrize(("name", "now", "ok", "expected"), [
    ("fresh", NOW + 1, True, None),
    ("at the limit", NOW + ua.CHALLENGE_TTL, True, None),
    ("expired", NOW + ua.CHALLENGE_TTL + 1, False, "expired"),
    ("slight skew", NOW - ua.MAX_CLOCK_SKEW, True, None),
    ("from the future", NOW - ua.MAX_CLOCK_SKEW - 1, False, "future"),
])
def test_challenges_are_valid_for_five_minutes(name, now, ok, expected):
    challenge, nonce = _solved()
    problem = _verify(challenge, nonce, now=now)
    assert (problem is None) == ok and (expected is None or expected in problem), (name, problem)


@pytest.mark.parametrize(("issued_to", "solved_from", "ok"), [
    ("198.51.100.7", "198.51.100.200", True),  # same /24
    ("198.51.100.7", "198.51.101.7", False),
    ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),  # same /64
    ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
    ("2001:db8:1:2::1", "198.51.100.7", False),
])
def test_challenges_are_bound_to_the_client_network(issued_to, solved_from, ok):
    challenge, nonce = _solved(prefix=ua.client_prefix(issued_to))
    problem = _verify(challenge, nonce, prefix=ua.client_prefix(solved_from))
    assert (problem is None) == ok, problem
    if not ok:
        assert "another network" in problem


def test_wrong_or_malformed_work_is_refused():
    challenge, nonce = _solved(difficulty=12)
    wrong = next(str(n) for n in range(1000) if not ua.leading_zero_bits_ok(challenge, str(n), 12))
    assert _verify(challenge, wrong) == "wrong proof of work"
    for bad in ("", "-1", "1e3", " 1", "1" * 21, "0x10"):
        assert _verify(challenge, bad) == "malformed nonce", bad


def test_the_no_script_answer_is_accepted_after_the_wait():
    challenge = ua.make_challenge(SECRET, "shop", V4, NOW, 24)
    assert "too early" in _verify(challenge, "wait", now=NOW + ua.WAIT_SECONDS - 1)
    assert _verify(challenge, "wait", now=NOW + ua.WAIT_SECONDS) is None
    assert "another network" in _verify(challenge, "wait", now=NOW + 60, prefix="203.0.113.0/24")


# --- cookies ------------------------------------------------------------------------------------


def test_cookie_round_trip_and_binding():
    value = ua.make_cookie(SECRET, "shop", V4, NOW + 3600)
    assert re.fullmatch(rf"v1\.{NOW + 3600}\.[0-9a-f]{{64}}", value)
    assert ua.cookie_expiry(SECRET, value, tenant="shop", prefix=V4) == NOW + 3600
    assert ua.cookie_expiry(SECRET, value, tenant="blog", prefix=V4) is None
    assert ua.cookie_expiry(SECRET, value, tenant="shop", prefix="198.51.101.0/24") is None
    assert ua.cookie_expiry(b"t" * 32, value, tenant="shop", prefix=V4) is None


@pytest.mark.parametrize("value", [
    "", "v1", "v1.", "v1..", "v2.1.00", "v1.abc." + "0" * 64, "v1.-5." + "0" * 64, "v1.1." + "0" * 63,
    "v1.1." + "g" * 64, "v1." + "9" * 13 + "." + "0" * 64,
])
def test_malformed_cookies_are_rejected(value):
    assert ua.cookie_expiry(SECRET, value, tenant="shop", prefix=V4) is None


def test_a_cookie_cannot_be_extended_by_changing_its_expiry():
    value = ua.make_cookie(SECRET, "shop", V4, NOW + 60)
    _, _, mac = value.split(".")
    assert ua.cookie_expiry(SECRET, f"v1.{NOW + 86400}.{mac}", tenant="shop", prefix=V4) is None


# --- return URL ----------------------------------------------------------------------------------

URLS = [
    ("/", True), ("/shop/cart?id=5&x=%2F", True), ("/a/b#frag", True),
    ("", False), ("//evil.example/", False), ("/\\evil.example/", False), ("/a\\b", False),
    ("https://evil.example/", False), ("evil.example", False), ("/\t/evil.example", False),
    ("/a b", False), ("/caf\u00e9", False), ("/x\r\nSet-Cookie: a=b", False), ("/" + "a" * ua.MAX_RETURN_URL, False),
]


@pytest.mark.parametrize(("url", "ok"), URLS)
def test_only_local_return_urls_are_accepted(url, ok):
    assert ua.safe_return_url(url) is ok


# --- the filter -----------------------------------------------------------------------------------


def request(method="GET", path="/", query=None, cookie=None, secure=False, raw=None):
    headers = CIMultiDict()
    if cookie is not None:
        headers["Cookie"] = cookie
    return SimpleNamespace(method=method, headers=headers, query=MultiDict(query or {}),
                           raw_path=raw or path, secure=secure)


def ctx(path="/", peer="198.51.100.7", allowlisted=False):
    return SimpleNamespace(path=path, peer=peer, allowlisted=allowlisted)


def policy(tenant="shop", **settings):
    return SimpleNamespace(tenant=tenant, filters=SimpleNamespace(under_attack=UnderAttack(**settings)))


def page_challenge(verdict) -> str:
    return re.search(rb'name="challenge" value="([^"]+)"', verdict.body).group(1).decode()


def answer(f, verdict, *, nonce=None, peer="198.51.100.7", pol=None, url=None, secure=False):
    challenge = page_challenge(verdict)
    difficulty = int(challenge.split(".")[4])
    ret = url or re.search(rb'name="url" value="([^"]*)"', verdict.body).group(1).decode()
    q = {"challenge": challenge, "nonce": nonce or ua.solve(challenge, difficulty), "url": ret}
    return f.check(request(path=ua.CHALLENGE_PATH, query=q, secure=secure),
                   ctx(ua.CHALLENGE_PATH, peer), pol or policy(mode="on", difficulty=8))


def test_mode_off_changes_nothing():
    f = UnderAttackFilter(SECRET, clock=Clock())
    assert f.check(request(), ctx(), policy()) is None
    assert f.check(request("POST"), ctx(), policy()) is None
    assert f.check(request(path=ua.CHALLENGE_PATH), ctx(ua.CHALLENGE_PATH), policy()) is None


def test_a_new_client_gets_the_challenge_page():
    f = UnderAttackFilter(SECRET, clock=Clock())
    v = f.check(request(raw='/p?q="><x>'), ctx("/p"), policy(mode="on"))
    assert v.status == 503 and v.content_type == "text/html; charset=utf-8"
    assert v.detail == "filter.under_attack.challenge"
    assert v.headers["Retry-After"] == "5" and v.headers["X-Robots-Tag"] == "noindex"
    assert "script-src 'sha256-" in v.headers["Content-Security-Policy"]
    assert len(v.body) < 4096
    assert b'data-bits="16"' in v.body and b"<noscript>" in v.body and b"Continue" in v.body
    assert b'value="/p?q=&quot;&gt;&lt;x&gt;"' in v.body  # escaped, not markup
    assert b"http" not in v.body.lower().replace(b"http-equiv", b"")  # no external resources
    challenge = page_challenge(v)
    assert challenge.startswith(f"v1.shop.{NOW}.") and ".16." in challenge


def test_an_unsafe_request_target_returns_to_the_path():
    f = UnderAttackFilter(SECRET, clock=Clock())
    v = f.check(request(raw="//evil.example/x"), ctx("/evil.example/x"), policy(mode="on"))
    assert b'name="url" value="/evil.example/x"' in v.body


def test_solving_sets_a_cookie_that_lets_the_client_pass():
    clock = Clock()
    f = UnderAttackFilter(SECRET, clock=clock)
    pol = policy(mode="on", difficulty=8, cookie_ttl=600)
    page = f.check(request(raw="/shop?a=1"), ctx("/shop"), pol)
    done = answer(f, page, pol=pol)
    assert done.status == 303 and done.headers["Location"] == "/shop?a=1"
    cookie = done.headers["Set-Cookie"]
    assert re.fullmatch(rf"edge_clearance=v1\.{NOW + 600}\.[0-9a-f]{{64}}; Path=/; Max-Age=600; HttpOnly; SameSite=Lax",
                        cookie)
    pair = cookie.split(";")[0]
    assert f.check(request(cookie=f"lang=de; {pair}"), ctx("/shop"), pol) is None
    assert f.check(request("POST", cookie=pair), ctx("/cart"), pol) is None
    # Same /24, another address: still cleared; another /24: challenged.
    assert f.check(request(cookie=pair), ctx("/", "198.51.100.99"), pol) is None
    assert f.check(request(cookie=pair), ctx("/", "198.51.101.7"), pol).status == 503
    # Another tenant with the same secret does not accept it.
    assert f.check(request(cookie=pair), ctx("/"), policy("blog", mode="on")).status == 503
    # Expired: challenged again, though the value was verified (and cached) before.
    clock.now = NOW + 600
    assert f.check(request(cookie=pair), ctx("/shop"), pol).status == 503


def test_secure_requests_get_a_secure_cookie():
    f = UnderAttackFilter(SECRET, clock=Clock())
    pol = policy(mode="on", difficulty=8)
    done = answer(f, f.check(request(), ctx(), pol), pol=pol, secure=True)
    assert done.headers["Set-Cookie"].endswith("; Secure")


def test_a_lowered_cookie_ttl_shortens_cookies_already_issued():
    clock = Clock()
    f = UnderAttackFilter(SECRET, clock=clock)
    pair = f"{ua.COOKIE}={ua.make_cookie(SECRET, 'shop', V4, NOW + 86400)}"
    assert f.check(request(cookie=pair), ctx(), policy(mode="on", cookie_ttl=86400)) is None
    assert f.check(request(cookie=pair), ctx(), policy(mode="on", cookie_ttl=3600)).status == 503


def test_forged_cookies_are_challenged():
    f = UnderAttackFilter(SECRET, clock=Clock())
    pol = policy(mode="on")
    for value in ("", "v1", f"v1.{NOW + 60}.{'0' * 64}", ua.make_cookie(b"x" * 32, "shop", V4, NOW + 60)):
        assert f.check(request(cookie=f"{ua.COOKIE}={value}"), ctx(), pol).status == 503, value


def test_unverified_non_get_requests_are_refused_and_excluded_paths_pass():
    f = UnderAttackFilter(SECRET, clock=Clock())
    pol = policy(mode="on", exclude_paths=("/api/",))
    v = f.check(request("POST"), ctx("/cart"), pol)
    assert v.status == 403 and v.detail == "filter.under_attack.post-denied" and "browser" in v.reason
    assert f.check(request("POST"), ctx("/api/orders"), pol) is None
    assert f.check(request(), ctx("/api/orders"), pol) is None
    assert f.check(request(), ctx("/apiary"), pol).status == 503
    assert f.check(request("POST"), ctx("/cart", allowlisted=True), pol) is None
    assert f.check(request(), ctx("/", allowlisted=True), pol) is None


ENDPOINT_BAD = [
    ("missing all", {}, 400, "missing challenge"),
    ("missing url", {"challenge": "x", "nonce": "1"}, 400, "missing url"),
    ("offsite url", {"challenge": "x", "nonce": "1", "url": "//evil.example"}, 400, "url must be a path"),
    ("absolute url", {"challenge": "x", "nonce": "1", "url": "https://evil.example/"}, 400, "url must be a path"),
    ("bad challenge", {"challenge": "x", "nonce": "1", "url": "/"}, 403, "malformed challenge"),
]


@pytest.mark.parametrize(("name", "query", "status", "text"), ENDPOINT_BAD, ids=[b[0] for b in ENDPOINT_BAD])
def test_the_endpoint_refuses_bad_answers_precisely(name, query, status, text):
    f = UnderAttackFilter(SECRET, clock=Clock())
    v = f.check(request(path=ua.CHALLENGE_PATH, query=query), ctx(ua.CHALLENGE_PATH), policy(mode="on"))
    assert v.status == status and text in v.reason, v


def test_the_endpoint_refuses_repeated_fields_and_other_methods():
    f = UnderAttackFilter(SECRET, clock=Clock())
    q = MultiDict([("challenge", "a"), ("challenge", "b"), ("nonce", "1"), ("url", "/")])
    r = SimpleNamespace(method="GET", headers=CIMultiDict(), query=q, raw_path=ua.CHALLENGE_PATH, secure=False)
    v = f.check(r, ctx(ua.CHALLENGE_PATH), policy(mode="on"))
    assert v.status == 400 and v.reason == "exactly one challenge is required"
    v = f.check(request("PUT", path=ua.CHALLENGE_PATH), ctx(ua.CHALLENGE_PATH), policy(mode="on"))
    assert v.status == 400 and v.headers == {"Allow": "GET, HEAD, POST"}
    # POST is the pipeline's to read (verify_form): the chain lets it on.
    assert f.check(request("POST", path=ua.CHALLENGE_PATH), ctx(ua.CHALLENGE_PATH), policy(mode="on")) is None


def test_answers_from_another_network_or_with_wrong_work_get_403():
    f = UnderAttackFilter(SECRET, clock=Clock())
    pol = policy(mode="on", difficulty=10)
    page = f.check(request(), ctx(), pol)
    moved = answer(f, page, pol=pol, peer="203.0.113.5")
    assert moved.status == 403 and "another network" in moved.reason
    challenge = page_challenge(page)
    wrong = next(str(n) for n in range(1000) if not ua.leading_zero_bits_ok(challenge, str(n), 10))
    bad = answer(f, page, pol=pol, nonce=wrong)
    assert bad.status == 403 and bad.reason == "wrong proof of work"


def test_an_early_no_script_answer_gets_the_same_challenge_again():
    clock = Clock()
    f = UnderAttackFilter(SECRET, clock=clock)
    pol = policy(mode="on")
    page = f.check(request(), ctx(), pol)
    clock.now += 2
    again = answer(f, page, pol=pol, nonce="wait")
    assert again.status == 503 and page_challenge(again) == page_challenge(page)
    clock.now += 3
    assert answer(f, again, pol=pol, nonce="wait").status == 303


def test_the_secret_must_be_long_enough():
    with pytest.raises(ValueError, match="at least 16"):
        UnderAttackFilter(b"short")
    with pytest.raises(ValueError):
        UnderAttackFilter("s" * 32)  # type: ignore[arg-type]


# --- auto mode ---------------------------------------------------------------------------------


def test_auto_mode_switches_on_over_the_rate_and_off_after_the_hold(caplog):
    clock = Clock(NOW)
    f = UnderAttackFilter(SECRET, clock=clock)
    pol = policy(mode="auto", auto_rps=10, auto_hold=30)
    caplog.set_level(logging.WARNING, logger="edge.filters")

    def burst(n: int) -> list[int | None]:
        out = []
        for _ in range(n):
            v = f.check(request(), ctx(), pol)
            out.append(None if v is None else v.status)
        return out

    assert burst(10) == [None] * 10
    assert burst(1) == [503]  # the 11th request of the second
    assert f.is_on("shop")
    assert burst(5) == [503] * 5
    # Quiet, but within the hold: still on. A quiet tenant keeps its rate low.
    clock.now = NOW + 20.5
    assert burst(1) == [503]
    clock.now = NOW + 31.5
    assert burst(1) == [None]
    assert not f.is_on("shop")
    # The other tenant was never affected.
    assert f.check(request(), ctx(), policy("blog", mode="auto", auto_rps=10)) is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("under attack mode on: tenant=shop rate=11/s")
    assert messages[1].startswith("under attack mode off: tenant=shop")


def test_auto_mode_sees_a_rate_across_a_second_boundary():
    clock = Clock(NOW + 0.5)
    f = UnderAttackFilter(SECRET, clock=clock)
    pol = policy(mode="auto", auto_rps=10)
    for _ in range(8):
        assert f.check(request(), ctx(), pol) is None
    # 8 in the second half of one second, then 8 in the first tenth of the
    # next: 16 within the last second, though no bucket holds more than 10.
    clock.now = NOW + 1.1
    statuses = [getattr(f.check(request(), ctx(), pol), "status", None) for _ in range(8)]
    assert 503 in statuses


def test_auto_mode_answers_the_endpoint_after_it_went_off():
    clock = Clock()
    f = UnderAttackFilter(SECRET, clock=clock)
    pol = policy(mode="auto", auto_rps=1, auto_hold=0, difficulty=8)
    f.check(request(), ctx(), pol)
    page = f.check(request(), ctx(), pol)
    assert page.status == 503
    clock.now += 5
    assert answer(f, page, pol=pol).status == 303


# --- validation ------------------------------------------------------------------------------------

PARSE_BAD = [
    ("mode", {"mode": "block"}, "mode", ua_section.MODE, '"block"'),
    ("rps zero", {"auto_rps": 0}, "auto_rps", ua_section.AUTO_RPS, "0"),
    ("rps bool", {"auto_rps": True}, "auto_rps", ua_section.AUTO_RPS, "true"),
    ("hold negative", {"auto_hold": -1}, "auto_hold", ua_section.AUTO_HOLD, "-1"),
    ("hold float", {"auto_hold": 1.5}, "auto_hold", ua_section.AUTO_HOLD, "1.5"),
    ("difficulty low", {"difficulty": 7}, "difficulty", ua_section.DIFFICULTY, "7"),
    ("difficulty high", {"difficulty": 25}, "difficulty", ua_section.DIFFICULTY, "25"),
    ("difficulty string", {"difficulty": "16"}, "difficulty", ua_section.DIFFICULTY, '"16"'),
    ("ttl low", {"cookie_ttl": 59}, "cookie_ttl", ua_section.COOKIE_TTL, "59"),
    ("ttl high", {"cookie_ttl": 86401}, "cookie_ttl", ua_section.COOKIE_TTL, "86401"),
    ("excludes not list", {"exclude_paths": "/api/"}, "exclude_paths", ua_section.EXCLUDE_PATHS, '"/api/"'),
    ("exclude relative", {"exclude_paths": ["/ok", "api/"]}, "exclude_paths[1]", ua_section.PATH, '"api/"'),
    ("exclude space", {"exclude_paths": ["/a b"]}, "exclude_paths[0]", ua_section.PATH, '"/a b"'),
    ("too many", {"exclude_paths": ["/a"] * 101}, "exclude_paths", ua_section.EXCLUDE_PATHS, None),
]


@pytest.mark.parametrize(("name", "section", "key", "expected", "found"), PARSE_BAD, ids=[b[0] for b in PARSE_BAD])
def test_parse_reports_each_bad_value(name, section, key, expected, found):
    c = Check("shop.json")
    result = ua_section.parse_under_attack(c, section, "filters.under_attack")
    assert [(e.field, e.expected) for e in c.errors] == [(f"filters.under_attack.{key}", expected)]
    if found is not None:
        assert c.errors[0].found == found
    assert isinstance(result, UnderAttack)


def test_parse_defaults_and_values():
    c = Check("shop.json")
    assert ua_section.parse_under_attack(c, {}, "filters.under_attack") == UnderAttack()
    assert not UnderAttack().active
    got = ua_section.parse_under_attack(c, {"mode": "auto", "auto_rps": 250.5, "auto_hold": 60, "difficulty": 20,
                                    "cookie_ttl": 7200, "exclude_paths": ["/api/", "/hook%2f", "/api/"]},
                                "filters.under_attack")
    assert c.errors == []
    assert got == UnderAttack("auto", 250.5, 60, 20, 7200, ("/api/", "/hook%2F"))
    assert got.active
    assert ua_section.under_attack_data(got) == {"mode": "auto", "auto_rps": 250.5, "auto_hold": 60, "difficulty": 20,
                                         "cookie_ttl": 7200, "exclude_paths": ["/api/", "/hook%2F"]}
    assert set(ua_section.KEYS["under_attack"]) == set(ua_section.under_attack_data(got))


def test_parse_reports_every_error_at_once():
    c = Check("shop.json")
    ua_section.parse_under_attack(c, {"mode": 1, "difficulty": 99, "exclude_paths": [1, "/ok", "x"]}, "filters.under_attack")
    assert [e.field for e in c.errors] == ["filters.under_attack.exclude_paths[0]", "filters.under_attack.exclude_paths[2]",
                                           "filters.under_attack.mode", "filters.under_attack.difficulty"]
