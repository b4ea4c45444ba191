"""Purge barriers (edge/cache/barriers.py): their verdicts agree with the
key ranges of the purge, they expire, hard wins over soft, and they stay
bounded whatever the purges."""
from __future__ import annotations

import random

import pytest

from edge.cache.barriers import MAX_BARRIER_LIFETIME, MAX_KEYED_BARRIERS, MAX_PREFIX_BARRIERS, Barriers
from edge.cache.purge import PurgeSpec, Target
from edge.cache.store import Admit, Meta
from tests.purge_support import intended, random_key, random_spec


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


def test_barriers_stay_bounded_over_thousands_of_purges_and_collapse_conservatively():
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
