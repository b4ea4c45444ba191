"""Which certificate a server name gets (edge/tls/sni.py): the pure
selection over stored certificates' metadata and the tenants' hosts.
Contexts are stand-in strings here; tests/integration/test_tls_listener.py
makes real handshakes."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from edge.policy.parse import parse_policy
from edge.policy.resolve import PolicySet
from edge.tls.certs import CertificateInfo
from edge.tls.sni import CertificateIndex, Selection, belongs, serving
from edge.tls.store import StoredCertificate

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

POLICIES = PolicySet(
    parse_policy({"hosts": hosts, "origins": [{"url": "http://127.0.0.1:9"}]}, tenant=tenant, source=f"{tenant}.json")
    for tenant, hosts in {
        "shop": ["shop.example", "*.shop.example"],
        "blog": ["blog.example", "news.blog.example"],
        "api": ["api.shop.example"],  # one name below shop's wildcard, exact: api's
        "ip": ["192.0.2.7"],
    }.items()
)
ANY = PolicySet([parse_policy({}, tenant="default", source="--origin", quick_origin="http://127.0.0.1:9")])


def cert(tenant: str, name: str, *hosts: str, key: str = "ecdsa-p256", days: int = 90) -> StoredCertificate:
    info = CertificateInfo(hosts, T0, T0 + dt.timedelta(days=days), "00", key)
    return StoredCertificate(tenant, name, Path(f"/certs/{tenant}/{name}.pem"), info)


@pytest.mark.parametrize(
    ("name", "tenant", "policies", "expected"),
    [
        ("shop.example", "shop", POLICIES, True),
        ("www.shop.example", "shop", POLICIES, True),  # under the tenant's wildcard host
        ("*.shop.example", "shop", POLICIES, True),  # the wildcard host itself
        ("api.shop.example", "shop", POLICIES, False),  # api's exact host wins over shop's wildcard
        ("api.shop.example", "api", POLICIES, True),
        ("*.shop.example", "api", POLICIES, True),  # covers api's host; only served for it
        ("*.blog.example", "blog", POLICIES, True),  # covers news.blog.example
        ("blog.example", "shop", POLICIES, False),  # another tenant's host
        ("*.other.example", "shop", POLICIES, False),
        ("elsewhere.example", "shop", POLICIES, False),
        ("shop.example", "gone", POLICIES, False),  # no such tenant (removed)
        ("anything.example", "default", ANY, True),  # quick mode: "*" serves every host
        ("*.anything.example", "default", ANY, True),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_which_names_belong_to_a_tenant(name, tenant, policies, expected):
    assert belongs(name, tenant, policies) is expected


def test_a_group_holds_the_longest_valid_certificate_of_each_key_type():
    chosen = serving([
        cert("shop", "old-ec", "shop.example", days=30),
        cert("shop", "new-ec", "shop.example", days=90),
        cert("shop", "rsa", "shop.example", key="rsa-2048"),
        cert("shop", "wild", "*.shop.example", "shop.example", key="ecdsa-p384", days=10),
    ], POLICIES)
    assert {g: [c.name for c in cs] for g, cs in chosen.items()} == {
        ("shop", "shop.example"): ["new-ec", "rsa"],  # ecdsa before rsa; "wild" is valid shorter
        ("shop", "*.shop.example"): ["wild"],
    }


def test_names_that_are_not_the_tenants_are_left_out():
    chosen = serving([
        cert("shop", "mixed", "shop.example", "blog.example", "api.shop.example"),
        cert("gone", "orphan", "shop.example"),
    ], POLICIES)
    assert list(chosen) == [("shop", "shop.example")]


INDEX = CertificateIndex(POLICIES, {
    ("shop", "shop.example"): "shop-exact",
    ("shop", "*.shop.example"): "shop-wild",
    ("shop", "www.shop.example"): "shop-www",
    ("api", "*.shop.example"): "api-wild",
    ("blog", "blog.example"): "blog",
}, default="default")
NO_DEFAULT = CertificateIndex(POLICIES, INDEX.groups)


@pytest.mark.parametrize(
    ("index", "server_name", "expected"),
    [
        (INDEX, "shop.example", Selection("shop-exact", "shop", "shop.example")),
        (INDEX, "SHOP.Example.", Selection("shop-exact", "shop", "shop.example")),  # case and a trailing dot
        (INDEX, "www.shop.example", Selection("shop-www", "shop", "www.shop.example")),  # exact before wildcard
        (INDEX, "img.shop.example", Selection("shop-wild", "shop", "img.shop.example")),
        (INDEX, "api.shop.example", Selection("api-wild", "api", "api.shop.example")),  # api's own wildcard group
        # A wildcard covers one label: a.img.shop.example is shop's host, but no certificate covers it.
        (INDEX, "a.img.shop.example", Selection("default", "shop", "a.img.shop.example")),
        (NO_DEFAULT, "a.img.shop.example", Selection(None, "shop", "a.img.shop.example")),
        (INDEX, "news.blog.example", Selection("default", "blog", "news.blog.example")),
        (INDEX, "unknown.example", Selection("default", None, "unknown.example")),
        (NO_DEFAULT, "unknown.example", Selection(None, None, "unknown.example")),
        (INDEX, None, Selection("default", None, None)),  # no server name
        (NO_DEFAULT, None, Selection(None, None, None)),
        (INDEX, "192.0.2.7", Selection("default", "ip", "192.0.2.7")),
    ],
)
def test_select(index, server_name, expected):
    assert index.select(server_name) == expected
