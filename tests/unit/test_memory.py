"""The memory tier (edge.cache.memory): ``cache.memory_size`` bounds what
its entries really take, keys, header fields and bookkeeping included, not
only their bodies; its purge indexes follow every change."""
from __future__ import annotations

import gc
import random
import time
import tracemalloc

import pytest
from aiohttp import hdrs
from multidict import CIMultiDict, istr

from edge.cache.memory import MemoryStore, entry_cost
from edge.cache.store import Meta
from tests.purge_support import TENANTS, random_key

BOUND = 2 * 2**20
# Known names are shared (aiohttp's parser hands out one object per name).
FIELDS = [
    (hdrs.CONTENT_TYPE, "text/html; charset=utf-8"),
    (hdrs.CACHE_CONTROL, "public, max-age=600"),
    (hdrs.LAST_MODIFIED, "Tue, 01 Oct 2024 10:00:00 GMT"),
    (hdrs.DATE, "Tue, 01 Oct 2024 10:00:00 GMT"),
    (hdrs.SERVER, "nginx"),
    (hdrs.VARY, "Accept-Encoding"),
]


def _headers(i: int, more: int = 0) -> tuple:
    # As the pipeline stores them: pairs out of the origin's multidict, the
    # values read anew for each response.
    h = CIMultiDict((name, "".join(value)) for name, value in FIELDS)
    h.add(hdrs.ETAG, f'"v{i}"')
    for j in range(more):
        # Names of its own for every response: the worst an origin can send.
        h.add(istr(f"X-Trace-{i}-{j}"), f"{i}-{j}-" + "f" * 40)
    return tuple(h.items())


def _meta(i: int, **changes) -> Meta:
    now = time.time()
    fields = {"headers": _headers(i), "extra": {"cz": 1}}
    fields.update(changes)
    return Meta(200, fields["headers"], now, now, 0.0, 600.0 + i, 120, (), "max-age", fields["extra"])


def _long_urls(i: int):
    path = "/catalogue/" + "/".join(f"segment-{i}-{j}" for j in range(60))
    yield "shop\nwww.example.com\n" + path + f"\nq={i}&utm=" + "x" * 600, _meta(i)


def _tagged(i: int):
    tags = [f"product-{i}", f"category-{i % 40}", "catalogue", f"brand-{i % 7}"]
    yield f"shop\nwww.example.com\n/p/{i}\n", _meta(i, extra={"tags": tags})


def _vary_variants(i: int):
    key = f"shop\nwww.example.com\n/article/{i}-" + "t" * 300 + "\n"
    yield key, Meta.marker(("accept-language",), time.time(), 600.0)
    for lang in ("de", "en"):
        yield key + "\x1f" + f"accept-language={lang}", _meta(i)


def _many_fields(i: int):
    yield f"shop\nwww.example.com\n/api/{i}\n", _meta(i, headers=_headers(i, more=25))


def _compressed_copies(i: int):
    key = f"shop\nwww.example.com\n/app-{i}.js\n" + "v=" + "9" * 200
    yield key, _meta(i)
    yield key + "\x1ebr", _meta(i, extra={"of": time.time(), "tags": ["js"]})


# (case, entries for one number: (key, meta) pairs)
SHAPES = [
    ("long URLs", _long_urls),
    ("purge tags", _tagged),
    ("Vary markers and variants", _vary_variants),
    ("many header fields", _many_fields),
    ("compressed copies", _compressed_copies),
]


@pytest.mark.parametrize("case, entries", SHAPES, ids=[s[0] for s in SHAPES])
def test_small_entries_stay_within_the_bound(case, entries):
    """Tens of thousands of small entries (the bodies alone would fit many
    times over): the memory they take, as the interpreter counts it, stays
    within the bound, and the tier uses most of it."""
    store = MemoryStore(BOUND, 2**20)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3000):
            for key, meta in entries(i):
                store.put_now(key, meta, f"<p>{i}</p>".encode().ljust(100, b" ") if meta.status else b"")
                hit = store.get_now(key)
                if hit is not None and hit.meta.status:
                    # The first hit renders the headers as served (the pipeline's template).
                    tpl = CIMultiDict(hit.meta.headers)
                    tpl.setdefault("Accept-Ranges", "bytes")
                    hit.meta.template = tpl
                del key, meta, hit
        gc.collect()
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert store.bytes_used <= BOUND
    assert len(store) > 100  # small entries: many are kept
    assert taken <= 1.1 * BOUND, f"{taken} bytes for {len(store)} entries"
    assert taken >= 0.6 * BOUND, f"only {taken} bytes used of {BOUND}"  # no gross overcounting either


def test_cost_grows_with_key_headers_and_tags():
    meta = _meta(1)
    base = entry_cost("k", meta, b"")
    assert entry_cost("k" * 1001, meta, b"") == base + 1000
    assert entry_cost("k", meta, b"x" * 1000) == base + 1000
    assert entry_cost("k", _meta(1, headers=_headers(1, more=1)), b"") > base + 40
    assert entry_cost("k", _meta(1, extra={"cz": 1, "tags": ["a-tag"]}), b"") > base + 100


def test_a_replaced_entry_is_counted_anew():
    store = MemoryStore(BOUND, 2**20)
    store.put_now("k", _meta(1), b"body")
    first = store.bytes_used
    assert store.update_now("k", _meta(1, headers=_headers(1, more=10)))
    assert store.bytes_used > first + 10 * 40
    store.put_now("k", _meta(1), b"body")
    assert store.bytes_used == first


def test_an_entry_larger_than_the_bound_is_not_kept():
    store = MemoryStore(4096, 4096)
    assert not store.put_now("k" * 5000, _meta(1), b"")
    assert len(store) == 0 and store.bytes_used == 0
    assert store.put_now("k", _meta(1), b"")
    assert not store.update_now("k", _meta(1, headers=_headers(1, more=40)))
    assert len(store) == 0 and store.bytes_used == 0


# --- purge indexes (sorted keys, tags) ---------------------------------------------------------------------


def _tagged(tags=(), status=200, now=None):
    now = time.time() if now is None else now
    return Meta(status, (("Content-Type", "text/plain"),), now, now, 0.0, 600.0, extra={"tags": list(tags)} if tags else {})


def _check_indexes(store: MemoryStore) -> None:
    index, tags = store.indexes()
    assert index == sorted(store.keys())
    expected: dict = {}
    for key in store.keys():
        for tag in store.peek(key).extra.get("tags", ()):
            expected.setdefault((key.split("\n")[0], tag), set()).add(key)
    assert tags == expected


@pytest.mark.parametrize("seed", range(5))
def test_memory_indexes_follow_puts_replacements_evictions_and_deletes(seed):
    rng = random.Random(seed)
    store = MemoryStore(max_bytes=60_000, max_object=5_000)  # evicts constantly
    for _ in range(3000):
        key, _ = random_key(rng)
        op = rng.random()
        if op < 0.7:
            tags = rng.sample(["a", "b", "c", "d"], rng.randint(0, 2))
            store.put_now(key, _tagged(tags), b"x" * rng.randint(0, 3000))
        elif op < 0.8:
            store.put_now(key, _tagged(), b"x" * 6000)  # too large: removes the key
        elif op < 0.9:
            store.delete_now(key)
        else:
            store.get_now(key)
    _check_indexes(store)
    assert len(store) > 0
    store.clear()
    _check_indexes(store)


def test_memory_hosts_skip_scan_and_range_keys():
    store = MemoryStore(max_bytes=10**8, max_object=10**6)
    rng = random.Random(7)
    keys = {random_key(rng)[0] for _ in range(500)}
    for key in keys:
        store.put_now(key, _tagged(), b"")
    for tenant in TENANTS:
        assert store.hosts(tenant) == sorted({k.split("\n")[1] for k in keys if k.split("\n")[0] == tenant})
        lo, hi = f"{tenant}\na.example\n/a", f"{tenant}\na.example\n/a\U0010ffff"
        assert store.range_keys(lo, hi) == sorted(k for k in keys if lo <= k < hi)


def test_memory_purge_now_counts_responses_not_markers_and_soft_only_expires():
    store = MemoryStore(max_bytes=10**6, max_object=10**5)
    now = time.time()
    store.put_now("t\nh\n/a\n", Meta.marker(("accept",), now, 60.0), b"")
    store.put_now("t\nh\n/a\n\x1f6:accept1:x", _tagged(now=now - 10), b"v")
    assert store.purge_now("t\nh\n/a\n\x1f6:accept1:x", soft=True, now=now)
    meta = store.get_now("t\nh\n/a\n\x1f6:accept1:x").meta
    assert meta.lifetime == pytest.approx(10.0, abs=0.01)  # its age: stale from now on
    assert not store.purge_now("t\nh\n/a\n", soft=True, now=now)  # a marker: untouched, not counted
    assert len(store) == 2
    assert not store.purge_now("t\nh\n/a\n", soft=False, now=now)  # removed, not counted
    assert store.purge_now("t\nh\n/a\n\x1f6:accept1:x", soft=False, now=now)
    assert len(store) == 0 and not store.purge_now("t\nh\n/a\n", soft=False, now=now)
