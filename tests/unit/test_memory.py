"""The memory tier's bound (edge.cache.memory): ``cache.memory_size`` bounds
what its entries really take, keys, header fields and bookkeeping included,
not only their bodies."""
from __future__ import annotations

import gc
import time
import tracemalloc

import pytest
from aiohttp import hdrs
from multidict import CIMultiDict, istr

from edge.cache.memory import MemoryStore, entry_cost
from edge.cache.store import Meta

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
