"""Policy validation: what an operator sees for each mistake, and the defaults they get."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from edge.cache.key import DEFAULT_TRACKING_PARAMS, KeyOptions
from edge.policy import (
    FieldError,
    PolicyError,
    Ttl,
    default_policy,
    parse_policy,
    parse_size,
    to_data,
)

SOURCE = "policies/shop.json"
BASE: dict[str, Any] = {"hosts": ["shop.example"], "origins": [{"url": "http://10.0.0.5:8080"}]}


def parse(data: object, **kw: Any):
    return parse_policy(data, tenant=kw.pop("tenant", "shop"), source=SOURCE, **kw)


def with_(path: str, value: object) -> dict[str, Any]:
    """BASE with one value set at a dotted path ("rules.0.edge_ttl" style, numbers index lists)."""
    doc = copy.deepcopy(BASE)
    parts = path.split(".")
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        nxt: Any = [] if parts[i + 1].isdigit() else {}
        if isinstance(node, list):
            idx = int(part)
            while len(node) <= idx:
                node.append(copy.deepcopy(nxt))
            node = node[idx]
        else:
            node = node.setdefault(part, nxt)
    last = parts[-1]
    if isinstance(node, list):
        node.append(value)
    else:
        node[last] = value
    return doc


def errors_of(data: object, **kw: Any) -> list[FieldError]:
    with pytest.raises(PolicyError) as info:
        parse(data, **kw)
    return info.value.errors


SECONDS = "an integer number of seconds 0..31536000"
TIMEOUT = "a number of seconds > 0 and <= 3600"
SIZE = 'a size: bytes as an integer, or a string with a unit B, KB, KiB, MB, MiB, GB, GiB, TB or TiB like "1.5MiB"'
DISK_QUOTA = ("null (the node's cache.tenant_disk_quota) or a size from 1 byte to 1048576GiB (1 PiB): bytes as an"
              ' integer, or a string with a unit B, KB, KiB, MB, MiB, GB, GiB, TB or TiB like "2GB"')
URL = "an absolute http:// or https:// URL with a host and no path, query or fragment"
HOST = 'a hostname, an IP address, "*.suffix" or "*"'

# (the mistake, the document, field, expected, found)
BAD_FIELDS = [
    ("swr negative", with_("cache", {"stale_while_revalidate": -1}), "cache.stale_while_revalidate", SECONDS, "-1"),
    ("sie text", with_("cache", {"stale_if_error": "1h"}), "cache.stale_if_error", SECONDS, '"1h"'),
    ("client no-cache unknown", with_("cache", {"client_no_cache": "obey"}), "cache.client_no_cache",
     '"revalidate" or "ignore"', '"obey"'),
    ("targeted field is Cache-Control", with_("cache", {"targeted_field": "Cache-Control"}), "cache.targeted_field",
     'a header field name such as "Edge-Cache-Control" (not Cache-Control, Expires or Pragma), or null', '"Cache-Control"'),
    ("targeted field with space", with_("cache", {"targeted_field": "Edge Cache"}), "cache.targeted_field",
     'a header field name such as "Edge-Cache-Control" (not Cache-Control, Expires or Pragma), or null', '"Edge Cache"'),
    ("ttl as text", with_("rules", [{"edge_ttl": {"override": "1h"}}]), "rules[0].edge_ttl.override", SECONDS, '"1h"'),
    ("ttl negative", with_("rules", [{"browser_ttl": {"default": -1}}]), "rules[0].browser_ttl.default", SECONDS, "-1"),
    ("ttl over a year", with_("rules", [{"edge_ttl": {"default": 31536001}}]), "rules[0].edge_ttl.default", SECONDS, "31536001"),
    ("ttl float", with_("rules", [{"edge_ttl": {"override": 1.5}}]), "rules[0].edge_ttl.override", SECONDS, "1.5"),
    ("ttl bool", with_("rules", [{"edge_ttl": {"override": True}}]), "rules[0].edge_ttl.override", SECONDS, "true"),
    ("ttl both modes", with_("rules", [{"edge_ttl": {"override": 1, "default": 2}}]), "rules[0].edge_ttl",
     'exactly one of "override" or "default"', "both"),
    ("ttl no mode", with_("rules", [{"edge_ttl": {}}]), "rules[0].edge_ttl", 'exactly one of "override" or "default"', "neither"),
    ("ttl as number", with_("rules", [{"edge_ttl": 60}]), "rules[0].edge_ttl", "an object", "60"),
    ("rule sets nothing", with_("rules", [{"match": {"path_prefix": "/a/"}}]), "rules[0]",
     'at least one of "edge_ttl", "browser_ttl", "bypass" or "key"', "none"),
    ("key on content_type rule", with_("rules", [{"match": {"content_type": ["text/html"]}, "key": {"cookies": ["x"]}}]),
     "rules[0].key",
     '"key" only on rules without a "content_type" condition (the cache key is chosen before the response exists)',
     '"key" with "content_type"'),
    ("prefix without slash", with_("rules", [{"match": {"path_prefix": "static/"}, "bypass": True}]), "rules[0].match.path_prefix",
     'a path starting with "/" (printable ASCII; percent-encode the rest)', '"static/"'),
    ("glob without slash", with_("rules", [{"match": {"path_glob": "*.png"}, "bypass": True}]), "rules[0].match.path_glob",
     'a path starting with "/" (printable ASCII; percent-encode the rest)', '"*.png"'),
    ("media type without subtype", with_("rules", [{"match": {"content_type": ["text/html", "html"]}, "bypass": True}]),
     "rules[0].match.content_type[1]", 'a media type like "text/html" or "image/*"', '"html"'),
    ("any media type", with_("rules", [{"match": {"content_type": ["*/*"]}, "bypass": True}]),
     "rules[0].match.content_type[0]", 'a media type like "text/html" or "image/*"', '"*/*"'),
    ("empty content_type", with_("rules", [{"match": {"content_type": []}, "bypass": True}]),
     "rules[0].match.content_type", "a non-empty list of media types", "[]"),
    ("bypass as text", with_("rules", [{"bypass": "yes"}]), "rules[0].bypass", "true or false", '"yes"'),
    ("rules not a list", with_("rules", {"bypass": True}), "rules", "a list of at most 1000 rules", '{"bypass": true}'),
    ("ftp origin", with_("origins", [{"url": "ftp://10.0.0.5"}]), "origins[0].url", URL, '"ftp://10.0.0.5"'),
    ("origin with path", with_("origins", [{"url": "http://10.0.0.5/app"}]), "origins[0].url", URL, '"http://10.0.0.5/app"'),
    ("origin with query", with_("origins", [{"url": "http://10.0.0.5/?a=1"}]), "origins[0].url", URL, '"http://10.0.0.5/?a=1"'),
    ("origin with fragment", with_("origins", [{"url": "http://10.0.0.5#x"}]), "origins[0].url", URL, '"http://10.0.0.5#x"'),
    ("origin relative", with_("origins", [{"url": "/backend"}]), "origins[0].url", URL, '"/backend"'),
    ("origin with password", with_("origins", [{"url": "http://u:p@10.0.0.5"}]), "origins[0].url", URL, '"http://u:p@10.0.0.5"'),
    ("origin bad port", with_("origins", [{"url": "http://10.0.0.5:99999"}]), "origins[0].url", URL, '"http://10.0.0.5:99999"'),
    ("origin without url", with_("origins", [{"read_timeout": 3}]), "origins[0].url", URL, "nothing"),
    # Numbers spelt as names: the resolver reads each as 127.0.0.1.
    ("origin hex host", with_("origins", [{"url": "http://0x7f000001:8080"}]), "origins[0].url", URL, '"http://0x7f000001:8080"'),
    ("origin decimal host", with_("origins", [{"url": "http://2130706433"}]), "origins[0].url", URL, '"http://2130706433"'),
    ("origin octal host", with_("origins", [{"url": "http://0177.0.0.1"}]), "origins[0].url", URL, '"http://0177.0.0.1"'),
    ("origin short host", with_("origins", [{"url": "http://127.1"}]), "origins[0].url", URL, '"http://127.1"'),
    ("origin hex last part", with_("origins", [{"url": "http://127.0.0.0x1"}]), "origins[0].url", URL, '"http://127.0.0.0x1"'),
    ("origin set_by unknown", with_("origins", [{"url": "http://o.example", "set_by": "admin"}]), "origins[0].set_by",
     '"operator" or "tenant"', '"admin"'),
    ("zero timeout", with_("origins", [{"url": "http://o.example", "connect_timeout": 0}]), "origins[0].connect_timeout", TIMEOUT, "0"),
    ("huge timeout", with_("origins", [{"url": "http://o.example", "read_timeout": 3601}]), "origins[0].read_timeout", TIMEOUT, "3601"),
    ("timeout as text", with_("origins", [{"url": "http://o.example", "read_timeout": "30s"}]), "origins[0].read_timeout", TIMEOUT, '"30s"'),
    ("no connections", with_("origins", [{"url": "http://o.example", "max_connections": 0}]), "origins[0].max_connections",
     "an integer 1..10000", "0"),
    ("host header with path", with_("origins", [{"url": "http://o.example", "host_header": "shop.example/x"}]),
     "origins[0].host_header", "a hostname or IP address with an optional :port", '"shop.example/x"'),
    ("host header bad port", with_("origins", [{"url": "http://o.example", "host_header": "shop.example:http"}]),
     "origins[0].host_header", "a hostname or IP address with an optional :port", '"shop.example:http"'),
    ("empty origins", with_("origins", []), "origins", "a non-empty list of origins", "[]"),
    ("retry on 200", with_("origin_failover", {"retry_on_status": [502, 200]}), "origin_failover.retry_on_status[1]",
     "an HTTP status code 400..599", "200"),
    ("never down", with_("origin_failover", {"failures_before_down": 0}), "origin_failover.failures_before_down",
     "an integer 1..1000", "0"),
    ("size with unknown unit", with_("cache", {"max_object_size": "1PB"}), "cache.max_object_size", SIZE, '"1PB"'),
    ("size without unit, not whole", with_("cache", {"max_object_size": "100.5"}), "cache.max_object_size", SIZE,
     '"100.5"'),
    ("size over 1 TiB", with_("cache", {"max_object_size": "2TB"}), "cache.max_object_size", SIZE, '"2TB"'),
    ("negative size", with_("cache", {"max_object_size": -5}), "cache.max_object_size", SIZE, "-5"),
    ("zero size", with_("cache", {"max_object_size": 0}), "cache.max_object_size", SIZE, "0"),
    ("negative disk quota", with_("cache", {"disk_quota": -1}), "cache.disk_quota", DISK_QUOTA, "-1"),
    ("negative disk quota text", with_("cache", {"disk_quota": "-2GB"}), "cache.disk_quota", DISK_QUOTA, '"-2GB"'),
    ("zero disk quota", with_("cache", {"disk_quota": 0}), "cache.disk_quota", DISK_QUOTA, "0"),
    ("garbage disk quota", with_("cache", {"disk_quota": "lots"}), "cache.disk_quota", DISK_QUOTA, '"lots"'),
    ("disk quota unit unknown", with_("cache", {"disk_quota": "2PB"}), "cache.disk_quota", DISK_QUOTA, '"2PB"'),
    ("disk quota as boolean", with_("cache", {"disk_quota": True}), "cache.disk_quota", DISK_QUOTA, "true"),
    ("disk quota fraction", with_("cache", {"disk_quota": 2.5}), "cache.disk_quota", DISK_QUOTA, "2.5"),
    ("disk quota over 1 PiB", with_("cache", {"disk_quota": "1048577GiB"}), "cache.disk_quota", DISK_QUOTA, '"1048577GiB"'),
    ("disk quota over 1 PiB in bytes", with_("cache", {"disk_quota": (1 << 50) + 1}), "cache.disk_quota", DISK_QUOTA,
     str((1 << 50) + 1)),
    ("fraction over 1", with_("cache", {"heuristic_fraction": 1.5}), "cache.heuristic_fraction", "a number 0..1", "1.5"),
    ("enabled as text", with_("cache", {"enabled": "false"}), "cache.enabled", "true or false", '"false"'),
    ("cookie header in key", with_("cache", {"key": {"headers": ["Accept-Language", "Cookie"]}}), "cache.key.headers[1]",
     'a header name of letters, digits and "-" (cookies go in "cookies")', '"Cookie"'),
    ("header with space", with_("cache", {"key": {"headers": ["X Lang"]}}), "cache.key.headers[0]",
     'a header name of letters, digits and "-" (cookies go in "cookies")', '"X Lang"'),
    ("header with underscore", with_("cache", {"key": {"headers": ["X_Lang"]}}), "cache.key.headers[0]",
     'a header name of letters, digits and "-" (cookies go in "cookies")', '"X_Lang"'),
    ("star inside param", with_("cache", {"key": {"drop_params": ["a*b"]}}), "cache.key.drop_params[0]",
     'a query parameter name, optionally ending in "*"', '"a*b"'),
    ("keep_params not a list", with_("cache", {"key": {"keep_params": "q"}}), "cache.key.keep_params",
     "null or a list of query parameter names", '"q"'),
    ("bad cookie name", with_("rules", [{"key": {"cookies": ["a;b"]}}]), "rules[0].key.cookies[0]", "a cookie name", '"a;b"'),
    ("host with space", with_("hosts", ["shop example"]), "hosts[0]", HOST, '"shop example"'),
    ("host with port", with_("hosts", ["shop.example:8080"]), "hosts[0]", HOST, '"shop.example:8080"'),
    ("host with inner wildcard", with_("hosts", ["shop.*.example"]), "hosts[0]", HOST, '"shop.*.example"'),
    ("host that is a bad IP", with_("hosts", ["256.1.1.1"]), "hosts[0]", HOST, '"256.1.1.1"'),
    ("empty hosts", with_("hosts", []), "hosts", "a non-empty list of hosts", "[]"),
    ("host label too long", with_("hosts", ["a" * 64 + ".example"]), "hosts[0]", HOST, '"' + "a" * 58 + "…"),
    ("unknown top-level key, close", with_("rule", []), "rule", 'a known key (did you mean "rules"?)', "an unknown key"),
    ("unknown nested key", with_("cache", {"ttl": 5}), "cache.ttl",
     "one of the keys enabled, max_object_size, strip_set_cookie, heuristic_fraction, heuristic_max, stale_while_revalidate, stale_if_error, client_no_cache, targeted_field, disk_quota, key", "an unknown key"),
    ("unknown key in rule match", with_("rules", [{"match": {"path": "/a"}, "bypass": True}]), "rules[0].match.path",
     'a known key (did you mean "path_glob"?)', "an unknown key"),
    ("unknown key with odd name", with_("cache", {"max size": 5}), 'cache["max size"]',
     'a known key (did you mean "max_object_size"?)', "an unknown key"),
    ("$schema not text", with_("$schema", 5), "$schema", "a string", "5"),
    ("tls not an object", with_("tls", True), "tls", "an object", "true"),
    ("tls.acme not a boolean", with_("tls.acme", "yes"), "tls.acme", "true or false", '"yes"'),
    ("unknown key in tls", with_("tls.redirect", True), "tls.redirect", 'a known key (did you mean "redirect_http"?)', "an unknown key"),
]


@pytest.mark.parametrize(
    ("doc", "field", "expected", "found"),
    [case[1:] for case in BAD_FIELDS],
    ids=[case[0] for case in BAD_FIELDS],
)
def test_each_bad_field_is_named_with_what_was_expected(doc, field, expected, found):
    assert errors_of(doc) == [FieldError(SOURCE, field, expected, found)]


def test_a_bad_tenant_id_is_refused():
    assert errors_of(BASE, tenant="Shop") == [
        FieldError(SOURCE, "", "a tenant id matching ^[a-z0-9][a-z0-9_-]{0,62}$", '"Shop"')
    ]


def test_error_text_reads_source_field_expected_found():
    [err] = errors_of(with_("rules", [{}, {}, {"edge_ttl": {"override": "1h"}}]))[-1:]
    assert str(err) == (
        'policies/shop.json: rules[2].edge_ttl.override: expected an integer number of seconds 0..31536000, found "1h"'
    )


def test_all_errors_of_a_file_are_reported_in_one_go():
    doc = {
        "hosts": ["ok.example", "bad host"],
        "origins": [{"url": "gopher://x"}],
        "cache": {"max_object_size": "big"},
        "rules": [{"edge_ttl": {"override": "1h"}}, {"bypass": "no"}],
    }
    fields = [e.field for e in errors_of(doc)]
    assert fields == ["hosts[1]", "origins[0].url", "cache.max_object_size", "rules[0].edge_ttl.override", "rules[1].bypass"]


def test_missing_hosts_and_origins_are_named():
    errs = errors_of({})
    assert [str(e) for e in errs] == [
        "policies/shop.json: hosts: expected a non-empty list of hosts, found nothing",
        "policies/shop.json: origins: expected a non-empty list of origins, found nothing",
    ]


def test_a_policy_that_is_not_an_object_is_one_error():
    assert errors_of([1, 2]) == [FieldError(SOURCE, "", "an object", "[1, 2]")]


def test_long_found_values_are_cut():
    [err] = errors_of(with_("rules", [{"bypass": "x" * 500}]))
    assert len(err.found) == 60 and err.found.endswith("…")


def test_comments_are_allowed_everywhere_and_change_nothing():
    plain = {
        "hosts": ["shop.example"],
        "origins": [{"url": "http://o.example"}],
        "origin_failover": {"cooldown": 5},
        "cache": {"key": {"cookies": ["lang"]}},
        "rules": [{"match": {"path_prefix": "/a/"}, "edge_ttl": {"override": 5}}],
    }
    commented = copy.deepcopy(plain)
    commented["$comment"] = "top"
    commented["$schema"] = "./schema.json"
    commented["origins"][0]["$comment"] = ["lists", "too"]
    commented["origin_failover"]["$comment"] = "x"
    commented["cache"]["$comment"] = "x"
    commented["cache"]["key"]["$comment"] = "x"
    commented["rules"][0]["$comment"] = "x"
    commented["rules"][0]["match"]["$comment"] = "x"
    commented["rules"][0]["edge_ttl"]["$comment"] = "x"
    a, b = parse(plain), parse(commented)
    assert a == b
    assert a.version == b.version


def test_defaults():
    p = parse(BASE)
    [origin] = p.origins
    assert (origin.url, origin.scheme, origin.host, origin.port) == ("http://10.0.0.5:8080", "http", "10.0.0.5", 8080)
    assert (origin.host_header, origin.connect_timeout, origin.read_timeout, origin.max_connections) == (None, 5.0, 30.0, 100)
    assert p.failover.retry_on_status == frozenset({502, 503, 504})
    assert (p.failover.failures_before_down, p.failover.cooldown) == (3, 10.0)
    c = p.cache
    assert (c.enabled, c.max_object_size, c.strip_set_cookie) == (True, 1 << 30, False)
    assert (c.heuristic_fraction, c.heuristic_max) == (0.1, 86400)
    assert c.key == KeyOptions()
    assert c.key.tracking_params == DEFAULT_TRACKING_PARAMS
    assert p.rules == ()
    assert p.tls.acme is False
    assert (p.tenant, p.source) == ("shop", SOURCE)


@pytest.mark.parametrize(
    ("url", "normalised", "host", "port"),
    [
        ("http://Origin.Example", "http://origin.example", "origin.example", 80),
        ("https://origin.example/", "https://origin.example", "origin.example", 443),
        ("https://origin.example:443", "https://origin.example", "origin.example", 443),
        ("HTTP://10.0.0.5:8080", "http://10.0.0.5:8080", "10.0.0.5", 8080),
        ("http://[::1]:8081", "http://[::1]:8081", "::1", 8081),
        ("http://bücher.example", "http://xn--bcher-kva.example", "xn--bcher-kva.example", 80),
    ],
)
def test_origin_urls_are_normalised(url, normalised, host, port):
    [origin] = parse(with_("origins", [{"url": url}])).origins
    assert (origin.url, origin.host, origin.port) == (normalised, host, port)


def test_host_header_is_lower_cased_and_keeps_its_port():
    doc = with_("origins", [{"url": "http://o.example", "host_header": "Shop.Example:8443"}])
    assert parse(doc).origins[0].host_header == "shop.example:8443"


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("Shop.Example", "shop.example"),
        ("shop.example.", "shop.example"),
        ("*.Shop.Example", "*.shop.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "[::1]"),
        ("[2001:DB8::0:1]", "[2001:db8::1]"),
        ("localhost", "localhost"),
        ("*", "*"),
    ],
)
def test_hosts_are_normalised(written, stored):
    assert parse(with_("hosts", [written])).hosts == (stored,)


def test_duplicate_hosts_in_one_file_count_once():
    assert parse(with_("hosts", ["a.example", "A.example", "a.example."])).hosts == ("a.example",)


@pytest.mark.parametrize(
    ("size", "nbytes"),
    [
        (1024, 1024),
        ("1GiB", 1 << 30),
        ("1gib", 1 << 30),
        ("1.5MiB", 1572864),
        ("1.5 MB", 1_500_000),
        ("512KiB", 524288),
        ("2KB", 2000),
        ("10B", 10),
        ("0.5kb", 500),
    ],
)
def test_sizes(size, nbytes):
    assert parse_size(size) == nbytes
    assert parse(with_("cache", {"max_object_size": size})).cache.max_object_size == nbytes


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        (None, None),
        ("2GB", 2_000_000_000),
        ("500MiB", 500 << 20),
        (1, 1),
        ("1048576GiB", 1 << 50),
    ],
    ids=["null-node-default", "2GB", "500MiB", "one-byte", "1PiB"],
)
def test_disk_quota(value, nbytes):
    assert parse(with_("cache", {"disk_quota": value})).cache.disk_quota == nbytes


# One size grammar for policies and edge.toml (edge.schema.values.parse_size):
# what either accepted before, the same bytes in both (tests/unit/test_config.py
# has the same table for edge.toml).
@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        ("1TB", 10**12),  # TB and TiB were edge.toml's only
        ("2tib", 2 << 40),
        ("100", 100),  # a string without a unit: bytes
        ("17.0", 17),
        (1024.0, 1024),  # a whole number written with a point
        ("1.5B", 1),  # with a unit, fractions of a byte are dropped
        ("1.MiB", 1 << 20),
        (".5KiB", 512),
    ],
)
def test_one_size_grammar_with_edge_toml(value, nbytes):
    assert parse(with_("cache", {"disk_quota": value})).cache.disk_quota == nbytes


@pytest.mark.parametrize("value", ["1.5", 0.5, "1PB", "١٠MiB", "1 000KiB", True])
def test_one_size_grammar_refuses(value):
    assert [e.field for e in errors_of(with_("cache", {"disk_quota": value}))] == ["cache.disk_quota"]


def test_disk_quota_defaults_to_the_node_and_round_trips():
    assert parse(BASE).cache.disk_quota is None
    p = parse(with_("cache", {"disk_quota": "2GB"}))
    assert to_data(p)["cache"]["disk_quota"] == 2_000_000_000
    assert parse(to_data(p)).cache.disk_quota == 2_000_000_000


def test_rule_key_replaces_only_the_fields_it_names():
    doc = with_("cache", {"key": {"drop_params": ["ref"], "headers": ["Accept-Language"]}})
    doc["rules"] = [{"match": {"path_prefix": "/de/"}, "key": {"cookies": ["lang"], "sort_params": False}}]
    p = parse(doc)
    assert p.cache.key == KeyOptions(drop_params=("ref",), headers=("accept-language",))
    assert p.rules[0].key == KeyOptions(drop_params=("ref",), headers=("accept-language",), cookies=("lang",), sort_params=False)


def test_keep_params_null_and_list():
    assert parse(with_("cache", {"key": {"keep_params": None}})).cache.key.keep_params is None
    assert parse(with_("cache", {"key": {"keep_params": ["q", "page"]}})).cache.key.keep_params == ("q", "page")


def test_ttls_are_modelled_with_their_mode():
    doc = with_("rules", [{"edge_ttl": {"override": 3600}, "browser_ttl": {"default": 60}}])
    rule = parse(doc).rules[0]
    assert (rule.edge_ttl, rule.browser_ttl) == (Ttl("override", 3600), Ttl("default", 60))


def test_quick_mode_defaults_hosts_to_any_and_takes_the_flag_origin():
    p = parse({"rules": [{"bypass": True}]}, quick_origin="http://localhost:3000")
    assert p.hosts == ("*",)
    assert [o.url for o in p.origins] == ["http://localhost:3000"]


def test_quick_mode_origin_flag_overrides_the_files_origins():
    p = parse(BASE, quick_origin="http://localhost:3000")
    assert [o.url for o in p.origins] == ["http://localhost:3000"]
    assert p.hosts == ("shop.example",)


def test_a_bad_origin_flag_is_blamed_on_the_flag():
    [err] = errors_of({}, quick_origin="localhost:3000")
    assert str(err) == f'--origin: expected {URL}, found "localhost:3000"'


def test_default_policy_serves_any_host_from_the_origin():
    p = default_policy("http://127.0.0.1:8081")
    assert (p.tenant, p.hosts, p.origins[0].url, p.rules) == ("default", ("*",), "http://127.0.0.1:8081", ())
    assert default_policy("http://127.0.0.1:8081", tenant="mine").tenant == "mine"
    with pytest.raises(PolicyError):
        default_policy("not a url")


def test_version_follows_effect_not_spelling():
    spelled_out = with_("cache", {"enabled": True, "max_object_size": "1GiB"})
    spelled_out["origins"][0]["connect_timeout"] = 5
    assert parse(spelled_out).version == parse(BASE).version
    assert parse(with_("cache", {"enabled": False})).version != parse(BASE).version
    assert len(parse(BASE).version) == 16 and int(parse(BASE).version, 16) >= 0


def test_effective_policy_round_trips_through_to_data():
    doc = with_("rules", [
        {"match": {"path_prefix": "/a/", "path_glob": "/a/*.js"}, "edge_ttl": {"override": 5}, "key": {"cookies": ["x"]}},
        {"match": {"content_type": ["Text/HTML"]}, "browser_ttl": {"default": 0}, "bypass": False},
    ])
    doc["origins"][0].update(host_header="h.example:81", max_connections=7)
    p = parse(doc)
    again = parse(to_data(p))
    assert again == p and again.version == p.version


def test_policies_are_immutable():
    p = parse(BASE)
    with pytest.raises(AttributeError):
        p.hosts = ("other.example",)  # type: ignore[misc]
