"""Purge requests (edge/cache/purge.py): request bodies -> PurgeSpec (good
and hostile, every error with its field), the key ranges a spec covers
(property tests over random keys with extras, variants and markers) and
their bounds, and the origin's tags."""
from __future__ import annotations

import json
import random

import pytest
from multidict import CIMultiDict

from edge.cache.purge import (
    MAX_RANGE_CHARS,
    MAX_RANGES,
    MAX_TAGS,
    PurgeError,
    PurgeSpec,
    Target,
    merge_ranges,
    parse_purge,
    surrogate_keys,
)
from edge.policy import PolicySet, parse_policy
from tests.purge_support import intended, random_key, random_spec, selected

SHOP = parse_policy(
    {
        "hosts": ["shop.example", "*.shop.example"],
        "origins": [{"url": "http://o.example"}],
        "rules": [{"match": {"path_prefix": "/search"}, "key": {"keep_params": ["q"]}}],
    },
    tenant="shop",
    source="shop.json",
)
NEWS = parse_policy({"hosts": ["news.example"], "origins": [{"url": "http://n.example"}]}, tenant="news", source="news.json")
POLICIES = PolicySet([SHOP, NEWS])


def parse(body):
    return parse_purge(body, SHOP, POLICIES.resolve)


# --- good bodies ---------------------------------------------------------------------

GOOD = [
    # (body, expected fields of the spec besides tenant, id)
    ({"urls": ["/a"]}, {"urls": (Target(None, "/a", ""),)}, "path-only"),
    ({"urls": ["https://shop.example/a"]}, {"urls": (Target("shop.example", "/a", ""),)}, "absolute"),
    ({"urls": ["http://shop.example/a?utm_source=x&b=1"]}, {"urls": (Target("shop.example", "/a", "b=1"),)}, "tracking-dropped"),
    ({"urls": ["/a?z=1&utm_medium=m&a=2&fbclid=f"]}, {"urls": (Target(None, "/a", "a=2&z=1"),)}, "sorted-and-filtered"),
    ({"urls": ["HTTPS://Shop.Example.:8443/x/../b"]}, {"urls": (Target("shop.example", "/b", ""),)}, "host-and-path-normalised"),
    ({"urls": ["https://www.shop.example"]}, {"urls": (Target("www.shop.example", "/", ""),)}, "wildcard-host-no-path"),
    ({"urls": ["https://shop.example?b=1"]}, {"urls": (Target("shop.example", "/", "b=1"),)}, "query-without-path"),
    ({"urls": ["/a%7e%41#section"]}, {"urls": (Target(None, "/a~A", ""),)}, "escapes-and-fragment"),
    ({"urls": ["/search?page=2&q=shoes"]}, {"urls": (Target(None, "/search", "q=shoes"),)}, "rule-key-options"),
    ({"urls": ["/a", "/a?", "/./a"]}, {"urls": (Target(None, "/a", ""),)}, "duplicates-once"),
    ({"urls": ["/a b"]}, {"urls": (Target(None, "/a%20b", ""),)}, "space-encoded"),
    ({"urls": [f"/p{i}" for i in range(1000)]}, {"urls": tuple(Target(None, f"/p{i}", "") for i in range(1000))}, "1000-items"),
    ({"prefixes": ["/static/"]}, {"prefixes": (Target(None, "/static/", None),)}, "prefix-path"),
    ({"prefixes": ["/a?"]}, {"prefixes": (Target(None, "/a", ""),)}, "prefix-every-query-of-a-path"),
    ({"prefixes": ["/search?q=sh&utm_source=x"]}, {"prefixes": (Target(None, "/search", "q=sh"),)}, "prefix-query-normalised"),
    ({"prefixes": ["https://img.shop.example/"]}, {"prefixes": (Target("img.shop.example", "/", None),)}, "prefix-whole-host"),
    ({"tags": ["product-1", "Cat:2", "product-1"]}, {"tags": ("product-1", "Cat:2")}, "tags"),
    ({"tags": ["x" * 1024]}, {"tags": ("x" * 1024,)}, "longest-tag"),
    ({"all": True}, {"all": True}, "all"),
    ({"all": True, "soft": True}, {"all": True, "soft": True}, "soft"),
    ({"urls": ["/a"], "soft": False}, {"urls": (Target(None, "/a", ""),)}, "soft-false"),
]


@pytest.mark.parametrize(("body", "expected"), [g[:2] for g in GOOD], ids=[g[2] for g in GOOD])
def test_good_bodies(body, expected):
    assert parse(body) == PurgeSpec("shop", **expected)


# --- hostile bodies ------------------------------------------------------------------

ANOTHER = "belongs to another tenant"
NOT_URL = "must be an absolute http(s) URL or a path starting with /"
TAG = "a tag is 1 to 1024 visible ASCII characters without spaces"
ONE_OF = "one of urls, prefixes, tags or all is required"

BAD = [
    # (body, [(field, message)], id)
    ([], [("body", "must be a JSON object")], "list"),
    ("urls", [("body", "must be a JSON object")], "string"),
    (None, [("body", "must be a JSON object")], "null"),
    ({}, [("body", ONE_OF)], "empty-object"),
    ({"soft": True}, [("body", ONE_OF)], "only-soft"),
    ({"urls": ["/a"], "tags": ["t"]}, [("body", "only one of urls, prefixes, tags or all per purge, not urls and tags")], "two-kinds"),
    ({"url": ["/a"]}, [("url", "unknown field (expected urls, prefixes, tags, all, soft)"), ("body", ONE_OF)], "typo"),
    ({"urls": ["/a"], "hard": True}, [("hard", "unknown field (expected urls, prefixes, tags, all, soft)")], "unknown-key"),
    ({"urls": ["/a"], "x" * 100: 1}, [("x" * 61 + "...", "unknown field (expected urls, prefixes, tags, all, soft)")], "long-unknown-key-cut"),
    ({"urls": "/a"}, [("urls", "must be a list")], "not-a-list"),
    ({"urls": {"0": "/a"}}, [("urls", "must be a list")], "object-not-list"),
    ({"urls": []}, [("urls", "must not be empty")], "empty-list"),
    ({"urls": ["/a"] * 1001}, [("urls", "at most 1000 items per purge, got 1001")], "too-many"),
    ({"urls": ["/a", 5, None, ["/b"]]}, [(f"urls[{i}]", "must be a string") for i in (1, 2, 3)], "not-strings"),
    ({"urls": ["/a", "/b", "https://news.example/x"]}, [("urls[2]", f"host news.example {ANOTHER}")], "other-tenant"),
    ({"urls": ["https://nobody.example/x"]}, [("urls[0]", f"host nobody.example {ANOTHER}")], "no-tenant-same-message"),
    ({"urls": ["https://NEWS.example:443/x"]}, [("urls[0]", f"host news.example {ANOTHER}")], "other-tenant-normalised"),
    ({"urls": ["ftp://shop.example/x"]}, [("urls[0]", NOT_URL)], "ftp"),
    ({"urls": ["shop.example/x"]}, [("urls[0]", NOT_URL)], "no-scheme"),
    ({"urls": ["javascript:alert(1)"]}, [("urls[0]", NOT_URL)], "javascript"),
    ({"urls": ["//shop.example/x"]}, [("urls[0]", "must be an absolute http(s) URL or a path starting with a single /")], "scheme-relative"),
    ({"urls": ["https://u:p@shop.example/x"]}, [("urls[0]", "must not contain user information")], "userinfo"),
    ({"urls": ["https://sh op.example/x"]}, [("urls[0]", "malformed host")], "space-in-host"),
    ({"urls": ["https:///x"]}, [("urls[0]", "malformed host")], "empty-host"),
    ({"urls": ["https://shop.example:99999/x"]}, [("urls[0]", "malformed host")], "bad-port"),
    ({"urls": ["https://shöp.example/x"]}, [("urls[0]", "malformed host")], "raw-idn"),
    ({"urls": ["/a%zz"]}, [("urls[0]", "malformed path")], "bad-escape"),
    ({"urls": ["/a%00b"]}, [("urls[0]", "malformed path")], "nul-escape"),
    ({"urls": ["/a\nb"]}, [("urls[0]", "contains control characters")], "newline"),
    ({"urls": ["/a\x1fb"]}, [("urls[0]", "contains control characters")], "variant-separator"),
    ({"urls": [""]}, [("urls[0]", "must not be empty")], "empty-string"),
    ({"urls": ["/" + "a" * 16384]}, [("urls[0]", "longer than 16384 characters")], "too-long"),
    ({"prefixes": ["https://news.example/"]}, [("prefixes[0]", f"host news.example {ANOTHER}")], "prefix-other-tenant"),
    ({"prefixes": ["static/"]}, [("prefixes[0]", NOT_URL)], "prefix-relative"),
    ({"tags": "a"}, [("tags", "must be a list")], "tags-not-list"),
    ({"tags": ["a", "a b", "", "x" * 1025, "é", "a\tb", 7]},
     [("tags[1]", TAG), ("tags[2]", TAG), ("tags[3]", TAG), ("tags[4]", TAG), ("tags[5]", TAG), ("tags[6]", "must be a string")],
     "bad-tags"),
    ({"all": False}, [("all", "must be true")], "all-false"),
    ({"all": "yes"}, [("all", "must be true")], "all-string"),
    ({"all": 1}, [("all", "must be true")], "all-one"),
    ({"urls": ["/a"], "soft": "yes"}, [("soft", "must be true or false")], "soft-string"),
    ({"urls": ["/a", 1, "https://news.example/"], "soft": 0, "zap": 1},
     [("zap", "unknown field (expected urls, prefixes, tags, all, soft)"), ("soft", "must be true or false"),
      ("urls[1]", "must be a string"), ("urls[2]", f"host news.example {ANOTHER}")],
     "every-error-reported"),
]


@pytest.mark.parametrize(("body", "errors"), [b[:2] for b in BAD], ids=[b[2] for b in BAD])
def test_hostile_bodies(body, errors):
    with pytest.raises(PurgeError) as info:
        parse(body)
    assert [(e["field"], e["message"]) for e in info.value.errors] == errors
    json.dumps(info.value.errors)  # the admin API sends them as they are


def test_another_tenant_and_no_tenant_are_told_apart_by_nothing_but_the_host():
    def message(url):
        with pytest.raises(PurgeError) as info:
            parse({"urls": [url]})
        return info.value.errors[0]["message"].replace("news.example", "H").replace("nobody.example", "H")

    assert message("https://news.example/") == message("https://nobody.example/")


# --- serialisation -------------------------------------------------------------------


@pytest.mark.parametrize("body", [g[0] for g in GOOD], ids=[g[2] for g in GOOD])
def test_to_json_from_json_round_trip(body):
    spec = parse(body)
    wire = spec.to_json()
    assert PurgeSpec.from_json(wire) == spec
    assert PurgeSpec.from_json(json.dumps(wire)) == spec
    assert PurgeSpec.from_json(json.dumps(wire).encode()) == spec


@pytest.mark.parametrize(
    "wire",
    [
        "not json",
        "[]",
        {"tenant": "shop", "all": True},  # no version
        {"v": 2, "tenant": "shop", "all": True},
        {"v": 1, "tenant": "sh\nop", "all": True},
        {"v": 1, "tenant": 5, "all": True},
        {"v": 1, "tenant": "shop"},  # nothing to purge
        {"v": 1, "tenant": "shop", "all": True, "tags": ["a"]},  # two kinds
        {"v": 1, "tenant": "shop", "urls": [["h", "a", ""]]},  # path without "/"
        {"v": 1, "tenant": "shop", "urls": [["h", "/a", None]]},  # a URL always has a query
        {"v": 1, "tenant": "shop", "urls": [["h", "/a\n", ""]]},
        {"v": 1, "tenant": "shop", "urls": [["h", "/a"]]},
        {"v": 1, "tenant": "shop", "urls": "x"},
        {"v": 1, "tenant": "shop", "tags": [1]},
    ],
)
def test_from_json_refuses_what_to_json_never_writes(wire):
    with pytest.raises(ValueError):
        PurgeSpec.from_json(wire if isinstance(wire, str) else json.dumps(wire))


# --- key ranges (property tests) ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_ranges_select_exactly_the_intended_keys(seed):
    rng = random.Random(seed)
    keys = [random_key(rng) for _ in range(400)]
    for _ in range(40):
        spec = random_spec(rng)
        hosts = sorted({parts[1] for _, parts in keys if parts[0] == spec.tenant})
        ranges = spec.ranges(lambda hosts=hosts: hosts)
        for key, parts in keys:
            assert selected(ranges, key) == intended(spec, parts), (spec, key)


def test_url_range_excludes_longer_queries_and_other_paths():
    (lo, hi), = PurgeSpec("t", urls=(Target("h", "/a", "a=1"),)).ranges()
    inside = ["t\nh\n/a\na=1", "t\nh\n/a\na=1\nh2:xx~", "t\nh\n/a\na=1\x1f3:acc2:de"]
    outside = ["t\nh\n/a\na=1&b=2", "t\nh\n/a\na=10", "t\nh\n/a/\na=1", "t\nh\n/ab\na=1", "t\nh2\n/a\na=1", "t2\nh\n/a\na=1"]
    assert all(lo <= k < hi for k in inside)
    assert not any(lo <= k < hi for k in outside)


def test_path_only_targets_use_every_host_and_ask_for_them_once():
    calls = []

    def hosts():
        calls.append(1)
        return ["x", "y"]

    spec = PurgeSpec("t", urls=(Target(None, "/a", ""), Target(None, "/b", ""), Target("z", "/c", "")))
    assert spec.ranges(hosts) == [
        ("t\nx\n/a\n", "t\nx\n/a\n "), ("t\nx\n/b\n", "t\nx\n/b\n "),
        ("t\ny\n/a\n", "t\ny\n/a\n "), ("t\ny\n/b\n", "t\ny\n/b\n "),
        ("t\nz\n/c\n", "t\nz\n/c\n "),
    ]
    assert len(calls) == 1
    assert PurgeSpec("t", urls=(Target("z", "/c", ""),)).ranges(lambda: pytest.fail("not needed")) == [("t\nz\n/c\n", "t\nz\n/c\n ")]


def test_merge_ranges():
    assert merge_ranges([("c", "d"), ("a", "b"), ("a", "c"), ("e", "f"), ("e", "e1")]) == [("a", "d"), ("e", "f")]
    assert merge_ranges([]) == []


# --- bounds: path-only purges x hosts -------------------------------------------------------


def test_path_only_purge_over_too_many_hosts_is_refused_with_the_field_and_advice():
    spec = PurgeSpec("t", urls=tuple(Target(None, f"/p{i}", "") for i in range(1000)))
    asked = []

    def hosts():  # counting stops just past the limit: never every host
        for i in range(20_000):
            asked.append(i)
            yield f"h{i}.example"

    with pytest.raises(PurgeError) as info:
        spec.ranges(hosts)
    (error,) = info.value.errors
    assert error["field"] == "urls"
    assert "absolute URLs" in error["message"] and str(MAX_RANGES) in error["message"]
    assert len(asked) == MAX_RANGES // 1000 + 1
    # Within the limit: every (URL, host) pair.
    allowed = [f"h{i}.example" for i in range(MAX_RANGES // 1000)]
    assert len(spec.ranges(lambda: allowed)) == MAX_RANGES
    # Absolute URLs and a single path-only prefix over the same hosts are fine.
    assert len(PurgeSpec("t", prefixes=(Target(None, "/", None),)).ranges(hosts)) == 20_000
    with pytest.raises(PurgeError) as info:
        PurgeSpec("t", prefixes=tuple(Target(None, f"/p{i}", None) for i in range(10))).ranges(hosts)
    assert info.value.errors[0]["field"] == "prefixes"


def test_very_long_path_only_urls_are_bounded_by_characters_too():
    spec = PurgeSpec("t", urls=tuple(Target(None, f"/{i}" + "x" * 16000, "") for i in range(1000)))
    assert spec.host_limit() * 1000 * 16000 <= MAX_RANGE_CHARS
    with pytest.raises(PurgeError):
        spec.ranges(lambda: [f"h{i}" for i in range(10)])


# --- tags from the origin ------------------------------------------------------------------

TAG_HEADERS = [
    ([("Surrogate-Key", "a b  c")], ["a", "b", "c"], "surrogate-key-spaces"),
    ([("Cache-Tag", "a, b ,c,,")], ["a", "b", "c"], "cache-tag-commas"),
    ([("Surrogate-Key", "a b"), ("Cache-Tag", "c,a")], ["a", "b", "c"], "both-deduplicated"),
    ([("Surrogate-Key", "x"), ("Surrogate-Key", "y")], ["x", "y"], "repeated-fields"),
    ([("Surrogate-Key", "a,b")], ["a,b"], "comma-is-data-in-surrogate-key"),
    ([("Cache-Tag", "has space, ok")], ["ok"], "inner-space-skipped"),
    ([("Surrogate-Key", "x" * 1025 + " y")], ["y"], "too-long-skipped"),
    ([("Surrogate-Key", "caf\u00e9 ok")], ["ok"], "non-ascii-skipped"),
    ([("Surrogate-Key", "\udcff ok")], ["ok"], "undecodable-skipped"),
    ([("Content-Type", "text/plain")], [], "none"),
    ([("Surrogate-Key", " ".join(f"t{i}" for i in range(300)))], [f"t{i}" for i in range(MAX_TAGS)], "at-most-256"),
]


@pytest.mark.parametrize(("fields", "tags"), [t[:2] for t in TAG_HEADERS], ids=[t[2] for t in TAG_HEADERS])
def test_tags_from_response_fields(fields, tags):
    assert surrogate_keys(CIMultiDict(fields)) == tags
