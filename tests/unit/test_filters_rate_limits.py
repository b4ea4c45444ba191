"""Token buckets: refill, burst, Retry-After; the filter's bounded bucket store; CIDR lists."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from edge.filters.ip_lists import IpListFilter
from edge.filters.rate_limits import RateLimitFilter, TokenBucket, retry_after
from edge.policy import parse_policy

BASE = {"hosts": ["shop.example"], "origins": [{"url": "http://10.0.0.5:8080"}]}


# (rate, burst, [(time, expected wait or 0)])
BUCKETS = [
    ("burst then empty", 1.0, 3, [(0, 0), (0, 0), (0, 0), (0, 1.0)]),
    ("refill one a second", 1.0, 2, [(0, 0), (0, 0), (0.5, 0.5), (1.0, 0), (1.0, 1.0)]),
    ("refill capped at burst", 10.0, 2, [(0, 0), (0, 0), (100, 0), (100, 0), (100, 0.1)]),
    ("slow rate", 0.5, 1, [(0, 0), (1, 1.0), (2, 0)]),
    ("clock going back is harmless", 1.0, 1, [(5, 0), (4, 1.0)]),
]


@pytest.mark.parametrize(("name", "rate", "burst", "steps"), BUCKETS, ids=[b[0] for b in BUCKETS])
def test_token_bucket(name, rate, burst, steps):
    bucket = TokenBucket(float(burst), 0.0)
    for now, expected in steps:
        assert bucket.take(rate, burst, now) == pytest.approx(expected), (name, now)


@pytest.mark.parametrize(("wait", "header"), [(0.001, "1"), (0.5, "1"), (1.0, "1"), (1.01, "2"), (59.2, "60")])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(wait, header):
    assert retry_after(wait) == header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(filters: dict, tenant: str = "shop"):
    return parse_policy({**BASE, "filters": filters}, tenant=tenant, source="shop.json")


def ctx(peer: str = "192.0.2.1", path: str = "/"):
    return SimpleNamespace(peer=peer, path=path, allowlisted=False)


LIMITS = {"rate_limits": {"mode": "block", "rules": [
    {"id": "login", "path_prefix": "/login", "rate": 1, "burst": 2},
    {"id": "site", "per": "tenant", "rate": 100, "burst": 3},
]}}


def test_rate_limit_filter_scopes_by_path_and_client_and_tenant():
    clock = Clock()
    f = RateLimitFilter(clock=clock)
    p = policy(LIMITS)
    assert f.check(None, ctx(path="/login"), p) is None
    assert f.check(None, ctx(path="/login/x"), p) is None
    v = f.check(None, ctx(path="/login"), p)
    assert (v.status, v.detail, v.headers) == (429, "filter.rate_limits.login", {"Retry-After": "1"})
    # The tenant bucket (burst 3) gave tokens to the first two; the third was refused before it.
    assert f.check(None, ctx(peer="192.0.2.2", path="/other"), p) is None
    v = f.check(None, ctx(peer="192.0.2.3", path="/other"), p)
    assert (v.status, v.detail) == (429, "filter.rate_limits.site")
    clock.now += 1
    assert f.check(None, ctx(path="/login"), p) is None


def test_allowlisted_and_inactive_pass_without_buckets():
    f = RateLimitFilter(clock=Clock())
    c = ctx()
    c.allowlisted = True
    for _ in range(10):
        assert f.check(None, c, policy(LIMITS)) is None
    off = policy({"rate_limits": {"mode": "off", "rules": LIMITS["rate_limits"]["rules"]}})
    for _ in range(10):
        assert f.check(None, ctx(path="/login"), off) is None
    assert f.bucket_count() == 0


def test_log_mode_passes():
    f = RateLimitFilter(clock=Clock())
    p = policy({"rate_limits": {"mode": "log", "rules": [{"id": "r", "rate": 1, "burst": 1}]}})
    assert all(f.check(None, ctx(), p) is None for _ in range(5))


def test_bucket_store_is_bounded():
    f = RateLimitFilter(clock=Clock(), max_buckets=100)
    p = policy({"rate_limits": {"mode": "block", "rules": [{"id": "r", "rate": 1, "burst": 1}]}})
    for i in range(5000):
        f.check(None, ctx(peer=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"), p)
    assert f.bucket_count() == 100


# (the lists, client, (status or None, allowlisted))
IP_CASES = [
    ("denied", {"deny": ["198.51.100.0/24"]}, "198.51.100.7", (403, False)),
    ("not listed", {"deny": ["198.51.100.0/24"]}, "198.51.101.7", (None, False)),
    ("allowed", {"allow": ["192.0.2.0/24"]}, "192.0.2.9", (None, True)),
    ("allow wins", {"allow": ["198.51.100.7"], "deny": ["198.51.100.0/24"]}, "198.51.100.7", (None, True)),
    ("ipv6", {"deny": ["2001:db8::/32"]}, "2001:db8::1", (403, False)),
    ("mapped ipv4", {"deny": ["198.51.100.0/24"]}, "::ffff:198.51.100.1", (403, False)),
    ("log mode", {"mode": "log", "allow": ["192.0.2.0/24"], "deny": ["198.51.100.0/24"]}, "198.51.100.7", (None, False)),
    ("log mode allow", {"mode": "log", "allow": ["192.0.2.0/24"]}, "192.0.2.1", (None, False)),
    ("off", {"mode": "off", "deny": ["198.51.100.0/24"]}, "198.51.100.7", (None, False)),
    ("no peer", {"deny": ["0.0.0.0/0"]}, None, (None, False)),
]


@pytest.mark.parametrize(("name", "lists", "client", "expected"), IP_CASES, ids=[c[0] for c in IP_CASES])
def test_ip_lists(name, lists, client, expected):
    c = ctx(peer=client)
    v = IpListFilter().check(None, c, policy({"ip_lists": lists}))
    assert (v and v.status, c.allowlisted) == expected
    if v is not None:
        assert v.detail == "filter.ip_lists"


def test_large_deny_list():
    nets = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(20000)]
    p = policy({"ip_lists": {"deny": nets}})
    f = IpListFilter()
    assert f.check(None, ctx(peer="10.78.31.200"), p).status == 403
    assert f.check(None, ctx(peer="11.0.0.1"), p) is None


@pytest.mark.parametrize(
    "peer, key",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        (None, "-"),
    ],
)
def test_ipv6_clients_share_a_bucket_per_64(peer, key):
    from edge.filters.rate_limits import client_key

    assert client_key(peer) == key
