"""The address policy for origins and webhooks that tenant tokens set: which
addresses and hosts it refuses, and what the admin API records as who wrote
a URL. Pure tables; the connect-time check over real sockets is in
tests/integration/test_outbound_guard.py."""
from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from edge.admin.provenance import stamp_tenant_write
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

HOOK = {"webhook_url": "https://hooks.example/e", "secret": "0123456789abcdef0123"}


def policy(data: dict[str, Any]):
    return parse_policy(data, tenant="shop", source="test")


def doc(*urls: str, hook: str | None = None, **marks: str) -> dict[str, Any]:
    """A policy with these origins and a webhook; ``o0="tenant"`` marks the first origin, ``h=`` the webhook."""
    out: dict[str, Any] = {"hosts": ["shop.example"],
                           "origins": [{"url": u, **({"set_by": marks[f"o{i}"]} if f"o{i}" in marks else {})}
                                       for i, u in enumerate(urls)]}
    if hook is not None:
        events = {**HOOK, "webhook_url": hook}
        if "h" in marks:
            events["set_by"] = marks["h"]
        out["filters"] = {"events": events}
    return out


def stamped(new: dict[str, Any], before: dict[str, Any] | None, guard: AddressPolicy = PLAIN):
    data, refused = stamp_tenant_write(new, policy(new), policy(before) if before is not None else None, guard)
    marks = [o["set_by"] for o in data["origins"]]
    hook = data.get("filters", {}).get("events", {}).get("set_by")
    return marks, hook, [r["field"] for r in refused]


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
    ],
)
def test_what_a_tenant_token_write_records(before, new, marks, hook, refused):
    assert stamped(new, before) == (marks, hook, refused)


def test_an_opened_range_lets_a_tenant_token_write_it():
    assert stamped(doc("http://10.0.0.7"), None, OPENED) == (["tenant"], None, [])
