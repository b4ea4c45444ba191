"""Keys remembered as uncacheable (edge/pipeline/fills.py, Varnish's
hit-for-miss): what an admission teaches about a key, and the bounded,
expiring memory of it. Times are passed in: no clock is read here."""
from __future__ import annotations

import tracemalloc

import pytest

from edge.cache.freshness import NoStore
from edge.cache.key import KeyOptions, primary_key
from edge.pipeline.fills import Uncacheable, uncacheable_key


def key(path: str, tenant: str = "shop") -> str:
    return primary_key(tenant, "a.example", path, "", KeyOptions(), {}, {})


LEARNED = [
    # (id, reason, status, the request said no-store, what the key is now)
    ("stored-forgets", None, 200, False, False),
    ("9111-5.2.2.5-no-store", NoStore.NO_STORE, 200, False, True),
    ("9111-5.2.2.7-private", NoStore.PRIVATE, 200, False, True),
    ("set-cookie", NoStore.SET_COOKIE, 200, False, True),
    ("9111-4.1-vary-star", NoStore.VARY_STAR, 200, False, True),
    ("too-large", NoStore.TOO_LARGE, 200, False, True),
    ("stale-on-arrival-without-validator", NoStore.NO_LIFETIME, 200, False, True),
    ("bypass-decided-on-the-response", NoStore.POLICY, 200, False, True),
    ("deception", NoStore.DECEPTION, 200, False, True),
    ("9111-3-status-without-freshness", NoStore.STATUS, 302, False, True),
    # The request's own doing: another request may get a storable answer.
    ("9111-5.2.1.5-request-no-store", NoStore.NO_STORE, 200, True, None),
    ("9111-3.5-authorization", NoStore.AUTHORIZATION, 200, False, None),
    ("head", NoStore.METHOD, 200, False, None),
    ("another-stores-it", NoStore.FILLING, 200, False, None),
    ("connection-fields", NoStore.CONNECTION, 200, False, None),
    ("9110-13-not-modified-to-the-clients-precondition", NoStore.STATUS, 304, False, None),
    ("9110-13-precondition-failed", NoStore.STATUS, 412, False, None),
    # The origin in trouble: collapsing shields it once it recovers.
    ("origin-error", NoStore.STATUS, 503, False, None),
    ("origin-error-no-store", NoStore.NO_STORE, 500, False, None),
    ("rate-limited", NoStore.STATUS, 429, False, None),
]


@pytest.mark.parametrize("reason, status, no_store, expected", [c[1:] for c in LEARNED], ids=[c[0] for c in LEARNED])
def test_what_an_admission_teaches_about_its_key(reason, status, no_store, expected):
    assert uncacheable_key(reason, status, no_store) is expected


def test_a_mark_lasts_its_seconds_from_the_latest_unstorable_answer():
    memory = Uncacheable(120.0, 10)
    memory.mark(key("/a"), now=1000.0, fetched=5.0)
    assert memory.get(key("/a"), 1119.9) == 5.0
    memory.mark(key("/a"), now=1100.0, fetched=6.0)  # answered unstorable again
    assert memory.get(key("/a"), 1219.9) == 6.0
    assert memory.get(key("/a"), 1220.0) is None
    assert len(memory) == 0  # an expired mark is dropped when met


def test_at_most_size_keys_the_least_recently_marked_go_first():
    memory = Uncacheable(120.0, 3)
    for i, path in enumerate(("/a", "/b", "/c")):
        memory.mark(key(path), now=float(i), fetched=0.0)
    memory.mark(key("/a"), now=3.0, fetched=0.0)  # marked again: the most recent
    memory.mark(key("/d"), now=4.0, fetched=0.0)
    assert len(memory) == 3
    assert [p for p in ("/a", "/b", "/c", "/d") if memory.get(key(p), 5.0) is not None] == ["/a", "/c", "/d"]


def test_a_mark_costs_the_same_however_long_the_url():
    memory = Uncacheable(120.0, 2000)
    keys = [key(f"/{i}/" + "x" * 8000) for i in range(1000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in keys:
            memory.mark(k, now=0.0, fetched=0.0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert memory.get(keys[0], 1.0) == 0.0
    assert held / len(keys) < 400  # bytes a key, not the 8 KB of its URL


def test_forgotten_keys_and_tenants_apart():
    memory = Uncacheable(120.0, 10)
    memory.mark(key("/a"), now=0.0, fetched=0.0)
    memory.mark(key("/b"), now=0.0, fetched=0.0)
    assert memory.get(key("/a", tenant="shop2"), 1.0) is None  # the same URL of another tenant
    memory.forget(key("/a"))
    assert memory.get(key("/a"), 1.0) is None and memory.get(key("/b"), 1.0) == 0.0
    memory.forget(key("/never"))  # forgetting what is not there is no error


def test_zero_seconds_remembers_nothing():
    memory = Uncacheable(0.0, 10)
    memory.mark(key("/a"), now=0.0, fetched=0.0)
    assert len(memory) == 0 and memory.get(key("/a"), 0.0) is None
