"""Purges (edge/cache/purge.py): request bodies -> PurgeSpec (good and
hostile, every error with its field), the key ranges a spec covers
(property tests over random keys with extras, variants and markers), the
barriers, the origin's tags, and the memory tier's purge indexes."""
from __future__ import annotations

import json
import random
import time

import pytest
from multidict import CIMultiDict

from edge.cache.key import KeyOptions, primary_key
from edge.cache.memory import MemoryStore
from edge.cache.purge import (
    MAX_TAGS,
    Barriers,
    PurgeError,
    PurgeSpec,
    Target,
    merge_ranges,
    parse_purge,
    surrogate_keys,
)
from edge.cache.store import Admit, Meta
from edge.policy import PolicySet, parse_policy

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

TENANTS = ("shop", "shop2", "sho")
HOSTS = ("a.example", "a.example.de", "b.example", "a.exampl")
PATHS = ("/", "/a", "/a/", "/a/b", "/ab", "/a%20b", "/b", "/static/x.css")
QUERIES = ("", "a=1", "a=1&b=2", "a=10", "b=1", "a=1&a=2")
KEYED = KeyOptions(headers=("accept-language",), cookies=("lang",))


def random_key(rng: random.Random) -> tuple[str, tuple[str, str, str, str]]:
    """A key as the pipeline writes it: primary (with extras or not), a Vary
    variant of it, or both; returned with its parts."""
    parts = (rng.choice(TENANTS), rng.choice(HOSTS), rng.choice(PATHS), rng.choice(QUERIES))
    opts = KEYED if rng.random() < 0.4 else KeyOptions()
    headers = {"accept-language": rng.choice(["de", "en", "a\nb\x1f"])} if rng.random() < 0.7 else {}
    cookies = {"lang": rng.choice(["x", "\U0010ffff", ""])} if rng.random() < 0.5 else {}
    key = primary_key(*parts, opts, headers, cookies)
    if rng.random() < 0.4:
        key += "\x1f" + rng.choice(["", "15:accept-encoding2:br", "1:x~"])
    return key, parts


def random_spec(rng: random.Random) -> PurgeSpec:
    kind = rng.choice(["urls", "prefixes", "all"])
    tenant = rng.choice(TENANTS)
    soft = rng.random() < 0.5
    if kind == "all":
        return PurgeSpec(tenant, all=True, soft=soft)

    def host():
        return rng.choice(HOSTS + (None, None))

    if kind == "urls":
        return PurgeSpec(tenant, urls=tuple(Target(host(), rng.choice(PATHS), rng.choice(QUERIES)) for _ in range(rng.randint(1, 3))), soft=soft)
    prefixes = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(PATHS)
        if rng.random() < 0.5:
            prefixes.append(Target(host(), path[: rng.randint(1, len(path))], None))
        else:
            q = rng.choice(QUERIES)
            prefixes.append(Target(host(), path, q[: rng.randint(0, len(q))]))
    return PurgeSpec(tenant, prefixes=tuple(prefixes), soft=soft)


def intended(spec: PurgeSpec, parts: tuple[str, str, str, str]) -> bool:
    """What a spec means, stated on the parts of a key rather than on strings."""
    tenant, host, path, query = parts
    if tenant != spec.tenant:
        return False
    if spec.all:
        return True
    for u in spec.urls:
        if u.host in (None, host) and u.path == path and u.query == query:
            return True
    for p in spec.prefixes:
        if p.host not in (None, host):
            continue
        if p.query is None and path.startswith(p.path):
            return True
        if p.query is not None and path == p.path and query.startswith(p.query):
            return True
    return False


def selected(ranges, key):
    return any(lo <= key < hi for lo, hi in ranges)


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


@pytest.mark.parametrize("seed", range(5))
def test_barrier_verdicts_agree_with_the_ranges(seed):
    rng = random.Random(1000 + seed)
    keys = [random_key(rng) for _ in range(300)]
    for _ in range(30):
        spec = random_spec(rng)
        barriers = Barriers()
        barriers.add(spec, now=1000.0)
        for key, parts in keys:
            before = Meta(200, (), 999.0, 999.0, 0.0, 60.0)
            after = Meta(200, (), 1001.0, 1001.0, 0.0, 60.0)
            expected = Admit.KEEP
            if intended(spec, parts):
                expected = Admit.STALE if spec.soft else Admit.DROP
            assert barriers.verdict(key, before) == expected, (spec, key)
            assert barriers.verdict(key, after) == Admit.KEEP


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


def test_barriers_expire_after_their_ttl_unless_a_streamed_write_predates_them():
    barriers = Barriers(ttl=10)
    spec = PurgeSpec("t", all=True)
    barriers.add(spec, now=100.0)
    meta = Meta(200, (), 50.0, 50.0, 0.0, 60.0)
    barriers.prune(105.0)
    assert barriers.verdict("t\nh\n/a\n", meta) == Admit.DROP
    barriers.prune(111.0, oldest_writer=99.0)  # a write that began before the purge still runs
    assert barriers.verdict("t\nh\n/a\n", meta) == Admit.DROP
    barriers.prune(111.0, oldest_writer=101.0)
    assert not barriers.active and barriers.verdict("t\nh\n/a\n", meta) == Admit.KEEP


def test_hard_wins_over_an_earlier_or_later_soft_barrier_and_tags_match_by_tenant():
    barriers = Barriers()
    barriers.add(PurgeSpec("t", tags=("a",), soft=True), now=100.0)
    barriers.add(PurgeSpec("t", tags=("a",)), now=101.0)
    barriers.add(PurgeSpec("t", tags=("b",), soft=True), now=102.0)
    tagged = Meta(200, (), 50.0, 50.0, 0.0, 60.0, extra={"tags": ["b", "a"]})
    assert barriers.verdict("t\nh\n/a\n", tagged) == Admit.DROP
    assert barriers.verdict("u\nh\n/a\n", tagged) == Admit.KEEP
    only_b = Meta(200, (), 50.0, 50.0, 0.0, 60.0, extra={"tags": ["b"]})
    assert barriers.verdict("t\nh\n/a\n", only_b) == Admit.STALE
    assert barriers.verdict("t\nh\n/a\n", Meta(200, (), 50.0, 50.0, 0.0, 60.0)) == Admit.KEEP


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


# --- memory tier indexes ---------------------------------------------------------------------


def _meta(tags=(), status=200, now=None):
    now = time.time() if now is None else now
    return Meta(status, (("Content-Type", "text/plain"),), now, now, 0.0, 600.0, extra={"tags": list(tags)} if tags else {})


def _check_indexes(store: MemoryStore) -> None:
    lru = store._lru
    assert list(lru.index) == sorted(lru.keys())
    expected: dict = {}
    for key in lru:
        meta = lru._Cache__data[key][0]
        for tag in meta.extra.get("tags", ()):
            expected.setdefault((key.split("\n")[0], tag), set()).add(key)
    assert lru.tags == expected


@pytest.mark.parametrize("seed", range(5))
def test_memory_indexes_follow_puts_replacements_evictions_and_deletes(seed):
    rng = random.Random(seed)
    store = MemoryStore(max_bytes=60_000, max_object=5_000)  # evicts constantly
    for _ in range(3000):
        key, _ = random_key(rng)
        op = rng.random()
        if op < 0.7:
            tags = rng.sample(["a", "b", "c", "d"], rng.randint(0, 2))
            store.put_now(key, _meta(tags), b"x" * rng.randint(0, 3000))
        elif op < 0.8:
            store.put_now(key, _meta(), b"x" * 6000)  # too large: removes the key
        elif op < 0.9:
            store._lru.pop(key, None)
        else:
            store.get_now(key)
    _check_indexes(store)
    assert len(store) > 0
    store._lru.clear()
    _check_indexes(store)


def test_memory_hosts_skip_scan_and_range_keys():
    store = MemoryStore(max_bytes=10**8, max_object=10**6)
    rng = random.Random(7)
    keys = {random_key(rng)[0] for _ in range(500)}
    for key in keys:
        store.put_now(key, _meta(), b"")
    for tenant in TENANTS:
        assert store.hosts(tenant) == sorted({k.split("\n")[1] for k in keys if k.split("\n")[0] == tenant})
        lo, hi = f"{tenant}\na.example\n/a", f"{tenant}\na.example\n/a\U0010ffff"
        assert store.range_keys(lo, hi) == sorted(k for k in keys if lo <= k < hi)


def test_memory_purge_now_counts_responses_not_markers_and_soft_only_expires():
    store = MemoryStore(max_bytes=10**6, max_object=10**5)
    now = time.time()
    store.put_now("t\nh\n/a\n", Meta.marker(("accept",), now, 60.0), b"")
    store.put_now("t\nh\n/a\n\x1f6:accept1:x", _meta(now=now - 10), b"v")
    assert store.purge_now("t\nh\n/a\n\x1f6:accept1:x", soft=True, now=now)
    meta = store.get_now("t\nh\n/a\n\x1f6:accept1:x").meta
    assert meta.lifetime == pytest.approx(10.0, abs=0.01)  # its age: stale from now on
    assert not store.purge_now("t\nh\n/a\n", soft=True, now=now)  # a marker: untouched, not counted
    assert len(store) == 2
    assert not store.purge_now("t\nh\n/a\n", soft=False, now=now)  # removed, not counted
    assert store.purge_now("t\nh\n/a\n\x1f6:accept1:x", soft=False, now=now)
    assert len(store) == 0 and not store.purge_now("t\nh\n/a\n", soft=False, now=now)


# --- bounds: path-only purges x hosts, and the barriers -----------------------------


def test_path_only_purge_over_too_many_hosts_is_refused_with_the_field_and_advice():
    from edge.cache.purge import MAX_RANGES

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
    from edge.cache.purge import MAX_RANGE_CHARS

    spec = PurgeSpec("t", urls=tuple(Target(None, f"/{i}" + "x" * 16000, "") for i in range(1000)))
    assert spec.host_limit() * 1000 * 16000 <= MAX_RANGE_CHARS
    with pytest.raises(PurgeError):
        spec.ranges(lambda: [f"h{i}" for i in range(10)])


def test_barriers_stay_bounded_over_thousands_of_purges_and_collapse_conservatively():
    from edge.cache.purge import MAX_KEYED_BARRIERS, MAX_PREFIX_BARRIERS

    barriers = Barriers()
    barriers.add(PurgeSpec("other", urls=(Target("h", "/x", ""),)), now=999.0)
    other = barriers.tenant("other")
    for i in range(2000):
        now = 1000.0 + i / 10
        barriers.add(PurgeSpec("t", urls=(Target("h", f"/u{i}", ""),)), now=now)
        barriers.add(PurgeSpec("t", prefixes=(Target(None, f"/p{i}/", None),)), now=now)
        barriers.add(PurgeSpec("t", tags=(f"tag{i}",), soft=True), now=now)
        entry = barriers.tenant("t")
        assert len(entry.prefixes) <= MAX_PREFIX_BARRIERS
        assert len(entry.urls) + len(entry.tags) <= MAX_KEYED_BARRIERS
    assert barriers.tenant("other") is other  # another tenant's barriers are not copied
    # Collapsed: whatever any purge covered is still refused if fetched before it ...
    old = Meta(200, (), 1199.0, 1199.0, 0.0, 60.0)
    assert barriers.verdict("t\nh\n/u1998\n", old) == Admit.DROP
    assert barriers.verdict("t\nh\n/p1998/a\n", old) == Admit.DROP
    # ... nothing fetched after the latest purge is, nor other tenants' entries.
    new = Meta(200, (), 1200.0, 1200.0, 0.0, 60.0)
    assert barriers.verdict("t\nh\n/u1999\n", new) == Admit.KEEP
    assert barriers.verdict("u\nh\n/u1999\n", old) == Admit.KEEP
    assert barriers.verdict("other\nh\n/x\n", Meta(200, (), 998.0, 998.0, 0.0, 60.0)) == Admit.DROP


def test_a_barrier_never_outlives_its_cap_but_a_long_streamed_write_still_sees_it():
    from edge.cache.purge import MAX_BARRIER_LIFETIME

    barriers = Barriers(ttl=10)
    barriers.add(PurgeSpec("t", urls=(Target("h", "/a", ""),)), now=100.0)
    meta = Meta(200, (), 99.0, 99.0, 0.0, 60.0)
    barriers.prune(100.0 + MAX_BARRIER_LIFETIME - 1, oldest_writer=50.0)
    assert barriers.verdict("t\nh\n/a\n", meta) == Admit.DROP
    barriers.prune(100.0 + MAX_BARRIER_LIFETIME + 1, oldest_writer=50.0)  # the write still runs
    assert not barriers.active and barriers.verdict("t\nh\n/a\n", meta) == Admit.KEEP
    # The write that predates the purge cannot commit purged content ...
    assert barriers.verdict("t\nh\n/b\n", meta, streamed=True) == Admit.DROP
    assert barriers.verdict("u\nh\n/a\n", meta, streamed=True) == Admit.KEEP
    # ... and once no such write runs, nothing is left.
    barriers.prune(100.0 + MAX_BARRIER_LIFETIME + 2, oldest_writer=None)
    assert barriers.verdict("t\nh\n/a\n", meta, streamed=True) == Admit.KEEP
