"""What the ACME manager orders and when (edge/tls/acme_plan.py): pure
decisions, the clock passed in."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from edge.tls.acme_plan import (
    MAX_RETRY_AFTER,
    Due,
    Failures,
    Held,
    Wanted,
    backoff,
    certificate_name,
    plan,
    renew_at,
    skip_reason,
    wanted,
)
from edge.tls.certs import valid_name
from edge.tls.challenges import token_of

DAY = 86400.0
NOW = 1_800_000_000.0
RENEW = 30 * DAY


def policy(hosts, acme=True):
    return SimpleNamespace(hosts=tuple(hosts), tls=SimpleNamespace(acme=acme))


@pytest.mark.parametrize(("host", "reason"), [
    ("shop.example", None),
    ("xn--bcher-kva.example", None),
    ("*", "a wildcard: HTTP-01 validates exact names only"),
    ("*.shop.example", "a wildcard: HTTP-01 validates exact names only"),
    ("192.0.2.10", "an IP address"),
    ("[2001:db8::1]", "an IP address"),
    ("localhost", "not a DNS name a CA issues certificates for"),
    ("under_score.example", "not a DNS name a CA issues certificates for"),
], ids=["name", "idn", "any", "wildcard", "ipv4", "ipv6", "single-label", "underscore"])
def test_which_hosts_http01_can_validate(host, reason):
    assert skip_reason(host) == reason


def test_wanted_takes_the_exact_hosts_of_tenants_that_ask():
    tenants = {"shop": policy(["shop.example", "*.shop.example"]), "news": policy(["news.example"], acme=False)}
    want, skipped = wanted(tenants)
    assert want == [Wanted("shop", "shop.example", "acme-shop.example")]
    assert skipped == [("shop", "*.shop.example", "a wildcard: HTTP-01 validates exact names only")]


@pytest.mark.parametrize(("host", "name"), [
    ("shop.example", "acme-shop.example"),
    ("a" * 59, "acme-" + "a" * 59),
    ("a" * 63 + ".example", "acme-" + "a" * 42 + "-" + "0" * 16),
], ids=["short", "fits-exactly", "too-long-hashed"])
def test_certificate_names(host, name):
    got = certificate_name(host)
    assert valid_name(got)
    assert got[:-16] == name[:-16] and len(got) == len(name)


def test_long_hosts_get_distinct_names():
    assert certificate_name("a" * 63 + ".example") != certificate_name("a" * 63 + ".example.net")


@pytest.mark.parametrize(("not_before", "not_after", "renew_before", "expected"), [
    (NOW - 60 * DAY, NOW + 30 * DAY, RENEW, NOW),  # 90 days, 30 ahead: Let's Encrypt's usual
    (NOW, NOW + 90 * DAY, 10 * DAY, NOW + 80 * DAY),
    (NOW, NOW + 6 * DAY, RENEW, NOW + 3 * DAY),  # short-lived: half its lifetime, not at once
], ids=["renew-before", "small-renew-before", "short-lived-half"])
def test_renewal_time(not_before, not_after, renew_before, expected):
    assert renew_at(Held("t", ("h",), not_before, not_after), renew_before) == expected


SHOP = Wanted("shop", "shop.example", "acme-shop.example")


def held(tenant="shop", hosts=("shop.example",), days_left=80.0, lifetime=90.0):
    return Held(tenant, hosts, NOW - (lifetime - days_left) * DAY, NOW + days_left * DAY)


@pytest.mark.parametrize(("certificates", "failures", "due", "wake_at"), [
    ((), {}, [Due(SHOP, None)], None),
    ((held(),), {}, [], NOW + 50 * DAY),
    ((held(days_left=20),), {}, [Due(SHOP, NOW + 20 * DAY)], None),
    ((held(days_left=20), held(days_left=80)), {}, [], NOW + 50 * DAY),  # the best of several counts
    ((held(hosts=("*.example",)),), {}, [], NOW + 50 * DAY),  # a wildcard upload covers it
    ((held(hosts=("www.shop.example",)),), {}, [Due(SHOP, None)], None),
    ((held(tenant="other"),), {}, [Due(SHOP, None)], None),  # another tenant's never counts
    ((held(days_left=-1),), {}, [Due(SHOP, None)], None),  # expired
    ((Held("shop", ("shop.example",), NOW + DAY, NOW + 90 * DAY),), {}, [Due(SHOP, None)], None),  # not yet valid
    ((), {"acme-shop.example": Failures(2, NOW + 60, "x")}, [], NOW + 60),  # backing off
    ((), {"acme-shop.example": Failures(2, NOW, "x")}, [Due(SHOP, None)], None),  # its time has come
    ((held(days_left=20),), {"acme-shop.example": Failures(1, NOW + 600, "x")}, [], NOW + 600),
], ids=["none-held", "valid", "within-renew-before", "best-of-several", "wildcard-covers", "other-name",
        "other-tenant", "expired", "not-yet-valid", "backing-off", "backoff-over", "renewal-backing-off"])
def test_plan(certificates, failures, due, wake_at):
    p = plan([SHOP], certificates, failures, NOW, RENEW)
    assert list(p.due) == due
    assert p.wake_at == wake_at


@pytest.mark.parametrize(("failures", "retry_after", "wait"), [
    (1, None, 600),
    (2, None, 1200),
    (4, None, 4800),
    (8, None, 76800),
    (9, None, 86400),  # bounded by retry_max
    (500, None, 86400),
    (1, 3600, 3600),  # the CA's Retry-After, when longer
    (3, 60, 2400),  # not shorter than the backoff
    (1, 30 * DAY, MAX_RETRY_AFTER),  # a week at most
], ids=["first", "second", "fourth", "eighth", "capped", "many", "retry-after", "retry-after-shorter", "retry-after-capped"])
def test_backoff(failures, retry_after, wait):
    assert backoff(failures, 600, 86400, retry_after) == wait


@pytest.mark.parametrize(("path", "token"), [
    ("/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
     "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"),
    ("/.well-known/acme-challenge/", None),
    ("/.well-known/acme-challenge/short", None),
    ("/.well-known/acme-challenge/../../etc/passwd-passwd", None),
    ("/.well-known/acme-challenge/abcdefghijklmnop/x", None),
    ("/.well-known/acme-challenge/" + "a" * 129, None),
], ids=["token", "empty", "short", "dots", "sub-path", "too-long"])
def test_challenge_tokens(path, token):
    assert token_of(path) == token
