"""The address policy for origins and webhooks that tenant tokens set: which
addresses and hosts it refuses, and what the admin API records as who wrote
a URL. Pure tables; the connect-time check over real sockets is in
tests/integration/test_outbound_guard.py."""
from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from edge.admin.provenance import stamp_operator_write, stamp_tenant_write
from edge.origin.guard import AddressPolicy
from edge.policy import parse_policy

PLAIN = AddressPolicy()
# An operator who lets tenant tokens reach a private interconnect and the CGNAT range.
OPENED = AddressPolicy((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("100.64.0.0/10")))


@pytest.mark.parametrize(
    ("address", "plain", "opened"),
    [
        # public: allowed
        ("93.184.215.14", None, None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None, None),
        ("64:ff9b::5db8:d70e", None, None),  # NAT64 of a public address
        # the node itself
        ("127.0.0.1", "loopback", "loopback"),
        ("127.255.0.9", "loopback", "loopback"),
        ("::1", "loopback", "loopback"),
        ("0.0.0.0", "unspecified", "unspecified"),
        ("::", "unspecified", "unspecified"),
        # its networks
        ("10.1.2.3", "private", None),
        ("172.16.0.1", "private", "private"),
        ("192.168.1.1", "private", "private"),
        ("100.64.0.1", "shared (carrier-grade NAT)", None),
        ("169.254.1.1", "link-local", "link-local"),
        ("fe80::1%eth0", "link-local", "link-local"),
        ("fd12:3456::1", "private (unique local)", "private (unique local)"),
        ("fec0::1", "site-local", "site-local"),
        ("224.0.0.1", "multicast", "multicast"),
        ("ff02::1", "multicast", "multicast"),
        ("255.255.255.255", "reserved", "reserved"),
        ("192.0.2.10", "documentation", "documentation"),
        ("2001:db8::1", "documentation", "documentation"),
        # metadata services: refused even where the operator opened the range
        ("169.254.169.254", "a metadata service", "a metadata service"),
        ("169.254.170.2", "a metadata service", "a metadata service"),
        ("fd00:ec2::254", "a metadata service", "a metadata service"),
        ("100.100.100.200", "a metadata service", "a metadata service"),
        # IPv4 inside IPv6: judged as the IPv4 address carried
        ("::ffff:127.0.0.1", "loopback", "loopback"),
        ("::ffff:169.254.169.254", "a metadata service", "a metadata service"),
        ("::ffff:10.0.0.1", "private", None),
        ("64:ff9b::7f00:1", "loopback", "loopback"),
        ("64:ff9b::a9fe:a9fe", "a metadata service", "a metadata service"),
        ("64:ff9b:1::a00:1", "private (local-use NAT64)", "private (local-use NAT64)"),
        ("::127.0.0.1", "reserved", "reserved"),  # IPv4-compatible, deprecated
        ("::ffff:0:7f00:1", "reserved", "reserved"),  # IPv4-translated
        ("2002:7f00:1::1", "6to4", "6to4"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "reserved", "reserved"),  # Teredo
        # not an address at all
        ("localhost", "not an IP address", "not an IP address"),
    ],
)
def test_which_addresses_a_guarded_connection_may_reach(address, plain, opened):
    assert PLAIN.refusal(address) == plain
    assert OPENED.refusal(address) == opened


@pytest.mark.parametrize(
    ("host", "refusal"),
    [
        ("origin.example", None),
        ("127.0.0.1.nip.io", None),  # a name: its addresses are checked at connect
        ("93.184.215.14", None),
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("::ffff:7f00:1", "loopback"),
        ("100.100.100.200", "a metadata service"),
        ("fd00:ec2::254", "a metadata service"),
        ("metadata.google.internal", "a metadata service"),
        ("Metadata.Google.Internal.", "a metadata service"),
        ("metadata.goog", "a metadata service"),
        ("localhost", "loopback"),
        ("api.localhost", "loopback"),
    ],
)
def test_hosts_refused_when_a_tenant_token_writes_them(host, refusal):
    assert PLAIN.host_refusal(host) == refusal


def test_an_opened_range_opens_its_names_too_but_never_metadata():
    loopback = AddressPolicy((ipaddress.ip_network("127.0.0.0/8"),))
    assert loopback.host_refusal("localhost") is None
    assert loopback.host_refusal("metadata.google.internal") == "a metadata service"


# --- who wrote a URL --------------------------------------------------------------

INTERNAL = {"url": "http://10.0.0.5"}
HOOK = {"webhook_url": "https://hooks.example/e", "secret": "0123456789abcdef0123"}


def policy(data: dict[str, Any]):
    return parse_policy(data, tenant="shop", source="test")


def doc(*urls: str | dict[str, Any], hook: str | None = None, **marks: str) -> dict[str, Any]:
    """A policy with these origins (a URL, or a whole origin) and a webhook;
    ``o0="tenant"`` marks the first origin, ``h=`` the webhook."""
    out: dict[str, Any] = {"hosts": ["shop.example"],
                           "origins": [{**({"url": u} if isinstance(u, str) else u),
                                        **({"set_by": marks[f"o{i}"]} if f"o{i}" in marks else {})}
                                       for i, u in enumerate(urls)]}
    if hook is not None:
        events = {**HOOK, "webhook_url": hook}
        if "h" in marks:
            events["set_by"] = marks["h"]
        out["filters"] = {"events": events}
    return out


def marks(data: dict[str, Any]) -> tuple[list[str | None], str | None]:
    return ([o.get("set_by") for o in data["origins"]],
            data.get("filters", {}).get("events", {}).get("set_by"))


def stamped(new: dict[str, Any], before: dict[str, Any] | None, guard: AddressPolicy = PLAIN):
    data, refused = stamp_tenant_write(new, policy(new), policy(before) if before is not None else None, guard)
    return *marks(data), [r["field"] for r in refused]


@pytest.mark.parametrize(
    ("before", "new", "marks", "hook", "refused"),
    [
        pytest.param(doc("http://10.0.0.5"), doc("http://10.0.0.5"), ["operator"], None, [],
                     id="keeps-the-operators-origin"),
        pytest.param(doc("http://10.0.0.5"), doc("http://10.0.0.5/", "https://b.example"), ["operator", "tenant"], None, [],
                     id="adds-one-of-its-own"),
        pytest.param(doc("http://10.0.0.5"), doc("https://b.example", o0="operator"), ["tenant"], None, [],
                     id="cannot-claim-operator"),
        pytest.param(doc("http://10.0.0.5", o0="tenant"), doc("http://10.0.0.5", o0="operator"), ["tenant"], None, [],
                     id="cannot-promote-its-own"),
        pytest.param(None, doc("http://10.0.0.5"), ["tenant"], None, ["origins[0].url"],
                     id="nothing-on-disk-vouches"),
        pytest.param(doc("https://a.example"), doc("http://127.0.0.1:9000"), ["tenant"], None, ["origins[0].url"],
                     id="loopback-literal"),
        pytest.param(doc("https://a.example"), doc("http://[::ffff:a9fe:a9fe]"), ["tenant"], None, ["origins[0].url"],
                     id="mapped-metadata"),
        pytest.param(doc("https://a.example"), doc("http://metadata.google.internal"), ["tenant"], None,
                     ["origins[0].url"], id="metadata-name"),
        pytest.param(doc("https://a.example"), doc("http://localhost:8080"), ["tenant"], None, ["origins[0].url"],
                     id="localhost"),
        pytest.param(doc("https://a.example", o0="tenant"), doc("https://a.example"), ["tenant"], None, [],
                     id="its-own-stays-its-own"),
        pytest.param(doc("https://a.example", hook="http://10.0.0.9/e"), doc("https://a.example", hook="http://10.0.0.9/e"),
                     ["operator"], "operator", [], id="keeps-the-operators-webhook"),
        pytest.param(doc("https://a.example", hook="http://10.0.0.9/e"), doc("https://a.example", hook="http://10.0.0.9/f"),
                     ["operator"], "tenant", ["filters.events.webhook_url"], id="changed-webhook"),
        pytest.param(doc("https://a.example"), doc("https://a.example", hook="http://127.0.0.1:8/internal"),
                     ["operator"], "tenant", ["filters.events.webhook_url"], id="loopback-webhook"),
        pytest.param(doc("https://a.example"), doc("https://a.example", hook="https://hooks.example/e", h="operator"),
                     ["operator"], "tenant", [], id="cannot-claim-the-webhook"),
        # An origin is the operator's as a whole: another virtual host behind
        # the same internal address, or more load on it, is the tenant's.
        pytest.param(doc(INTERNAL), doc({**INTERNAL, "host_header": "grafana.internal"}), ["tenant"], None,
                     ["origins[0].url"], id="host-header-on-the-operators-origin"),
        pytest.param(doc({**INTERNAL, "host_header": "shop.internal"}), doc(INTERNAL), ["tenant"], None,
                     ["origins[0].url"], id="host-header-dropped"),
        pytest.param(doc(INTERNAL), doc({**INTERNAL, "max_connections": 10000}), ["tenant"], None,
                     ["origins[0].url"], id="more-connections"),
        pytest.param(doc(INTERNAL), doc({**INTERNAL, "read_timeout": 3600}), ["tenant"], None,
                     ["origins[0].url"], id="longer-timeout"),
        pytest.param(doc(INTERNAL), doc({**INTERNAL, "connect_timeout": 1}), ["tenant"], None,
                     ["origins[0].url"], id="any-change"),
        pytest.param(doc({**INTERNAL, "host_header": "shop.internal", "max_connections": 50}),
                     doc({"url": "http://10.0.0.5/", "max_connections": 50, "host_header": "shop.internal",
                          "read_timeout": 30.0}),
                     ["operator"], None, [], id="the-same-origin-written-otherwise"),
        pytest.param(doc(INTERNAL), doc(INTERNAL, {**INTERNAL, "host_header": "grafana.internal"}),
                     ["operator", "tenant"], None, ["origins[1].url"], id="a-second-vhost-beside-it"),
        pytest.param(doc("https://a.example"), doc({"url": "https://a.example", "host_header": "b.example"}),
                     ["tenant"], None, [], id="public-origin-changed"),
        pytest.param(doc({"url": "https://a.example", "set_by": "tenant"}),
                     doc({"url": "https://a.example", "host_header": "b.example"}), ["tenant"], None, [],
                     id="its-own-changed"),
    ],
)
def test_what_a_tenant_token_write_records(before, new, marks, hook, refused):
    assert stamped(new, before) == (marks, hook, refused)


def test_an_opened_range_lets_a_tenant_token_write_it():
    assert stamped(doc("http://10.0.0.7"), None, OPENED) == (["tenant"], None, [])


def test_a_changed_operators_origin_is_refused_with_what_to_do():
    new = doc({**INTERNAL, "host_header": "grafana.internal"})
    _, refused = stamp_tenant_write(new, policy(new), policy(doc(INTERNAL)), PLAIN)
    assert refused[0]["message"] == (
        'expected a URL on a public address, or the operator\'s origin at this URL unchanged (only operators '
        'change its host_header, timeouts or max_connections), found "http://10.0.0.5" (private)')


TENANTS = {"url": "http://10.0.0.5", "host_header": "shop.internal", "set_by": "tenant"}


@pytest.mark.parametrize(
    ("before", "new", "origins", "hook"),
    [
        pytest.param(doc(TENANTS), doc({"url": "http://10.0.0.5", "host_header": "shop.internal"}),
                     ["tenant"], None, id="keeps-the-tenants-origin"),
        pytest.param(doc(TENANTS), doc("http://10.0.0.5"), ["tenant"], None, id="keeps-the-tenants-url"),
        pytest.param(doc(TENANTS), doc({"url": "http://10.0.0.5", "set_by": "operator"}), ["operator"], None,
                     id="vouches-when-it-says-so"),
        pytest.param(doc(TENANTS), doc("https://b.example"), [None], None, id="a-new-url-is-the-operators"),
        pytest.param(doc(TENANTS, INTERNAL), doc(INTERNAL), [None], None,
                     id="the-operators-own-beside-the-tenants"),
        pytest.param(doc(TENANTS, INTERNAL), doc({**INTERNAL, "read_timeout": 5}), ["tenant"], None,
                     id="changed-where-the-tenant-has-the-url"),
        pytest.param(None, doc("http://10.0.0.5"), [None], None, id="a-new-tenant"),
        pytest.param(doc("https://a.example", hook="http://10.0.0.9/e", h="tenant"),
                     doc("https://a.example", hook="http://10.0.0.9/e"), [None], "tenant",
                     id="keeps-the-tenants-webhook"),
        pytest.param(doc("https://a.example", hook="http://10.0.0.9/e", h="tenant"),
                     doc("https://a.example", hook="http://10.0.0.9/e", h="operator"), [None], "operator",
                     id="vouches-for-the-webhook-when-it-says-so"),
        pytest.param(doc("https://a.example", hook="http://10.0.0.9/e", h="tenant"),
                     doc("https://a.example", hook="http://10.0.0.9/f"), [None], None,
                     id="its-own-webhook"),
    ],
)
def test_what_an_operator_token_write_records(before, new, origins, hook):
    """``None``: left out, so "operator" when read."""
    data = stamp_operator_write(new, policy(new), policy(before) if before is not None else None)
    assert marks(data) == (origins, hook)
