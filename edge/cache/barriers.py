"""Purge barriers: a purge as a rule over time, so that what it removed
cannot come back.

Kept by the TieredStore: a purge first records "nothing fetched before time
T and covered by this spec may be stored or served", checked where entries
enter the memory tier and when they are committed to or read from the disk
tier. So an origin response that was in flight during the purge, a disk
read racing it, or an entry a sibling worker is just writing can never
bring purged content back (see ``Barriers``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge.cache.key import SEP, VARIANT_SEP
from edge.cache.store import Admit, Meta

if TYPE_CHECKING:
    from edge.cache.purge import PurgeSpec

# Barriers per tenant before they are collapsed into one tenant-wide barrier.
MAX_PREFIX_BARRIERS = 256  # scanned on every put and disk read
MAX_KEYED_BARRIERS = 4096  # URLs and tags: dictionary probes, copied on each add
MAX_BARRIER_LIFETIME = 900.0  # seconds, whatever streamed writes still run


@dataclass(frozen=True, slots=True)
class _TenantBarriers:
    """One tenant's barriers in force, never changed once built (disk threads
    read it while the loop builds the next). Times are (hard, soft)."""

    all: tuple[float, float] | None = None
    urls: dict[tuple[str | None, str], tuple[float, float]] = field(default_factory=dict)
    prefixes: tuple[tuple[str | None, str, float, float], ...] = ()
    tags: dict[str, tuple[float, float]] = field(default_factory=dict)

    def collapsed(self) -> _TenantBarriers:
        """One tenant-wide barrier at the latest of these times. Safe: a
        barrier only refuses what was fetched before its time, and this one
        is no earlier than any it replaces (it refuses more, never less)."""
        hard_t, soft_t = self.all or (0.0, 0.0)
        for times in itertools.chain(self.urls.values(), (p[2:] for p in self.prefixes), self.tags.values()):
            hard_t, soft_t = max(hard_t, times[0]), max(soft_t, times[1])
        return _TenantBarriers((hard_t, soft_t))


def _later(times: tuple[float, float] | None, soft: bool, now: float) -> tuple[float, float]:
    hard_t, soft_t = times or (0.0, 0.0)
    return (hard_t, max(soft_t, now)) if soft else (max(hard_t, now), soft_t)


def _max_times(a: tuple[float, float] | None, b: tuple[float, float]) -> tuple[float, float]:
    return b if a is None else (max(a[0], b[0]), max(a[1], b[1]))


class Barriers:
    """Purges as rules over time: an entry whose origin request started
    before a purge that covers it (``Meta.request_time`` < purge time) is not
    stored and not served from disk (hard) or only as stale (soft).

    Without them a purge races: a response in flight from the origin, a
    disk read that started before the disk delete, or a sibling worker's
    disk write would put the purged content back after ``apply`` returned.
    Checked by the TieredStore on puts and disk reads (the memory hit path
    never: the memory tier is purged at once, and whatever enters it later
    went through a check) and by the DiskStore inside the transaction that
    commits an entry.

    Bounded whatever the purges: per tenant, more than MAX_PREFIX_BARRIERS
    prefixes or MAX_KEYED_BARRIERS URLs and tags collapse into one
    tenant-wide barrier at the latest time (conservative, see
    ``_TenantBarriers.collapsed``); an ``add`` copies only its tenant's
    entry. Lookups are dictionary probes per URL, tag and tenant plus a scan
    of at most MAX_PREFIX_BARRIERS prefixes.

    A barrier is kept ``ttl`` seconds (origin fetches and collapsed waits end
    long before), and beyond that while a streamed disk write that began
    before it is still running, but never more than MAX_BARRIER_LIFETIME.
    What is dropped while such a write runs is remembered per tenant as one
    ``retired`` (hard, soft) time pair, checked only when a streamed write
    commits (``verdict(..., streamed=True)``): a write that long which
    overlapped a purge of its tenant is not stored (or stored stale).
    """

    def __init__(self, ttl: float = 600.0) -> None:
        self.ttl = ttl
        self._snap: dict[str, _TenantBarriers] | None = None
        self._retired: dict[str, tuple[float, float]] = {}
        self._next_prune = 0.0

    @property
    def active(self) -> bool:
        return self._snap is not None

    def tenant(self, tenant: str) -> _TenantBarriers | None:
        """The barriers of ``tenant`` in force (for inspection and tests)."""
        return (self._snap or {}).get(tenant)

    def add(self, spec: PurgeSpec, now: float, oldest_writer: float | None = None) -> None:
        tenant, soft = spec.tenant, spec.soft
        old = (self._snap or {}).get(tenant) or _TenantBarriers()
        everything = old.all
        if spec.all:
            everything = _later(everything, soft, now)
        urls = old.urls
        if spec.urls:
            urls = dict(urls)
            for u in spec.urls:
                k = (u.host, u.fragment)
                urls[k] = _later(urls.get(k), soft, now)
        prefixes = old.prefixes
        if spec.prefixes:
            prefixes = prefixes + tuple((p.host, p.fragment, *_later(None, soft, now)) for p in spec.prefixes)
        tags = old.tags
        if spec.tags:
            tags = dict(tags)
            for tag in spec.tags:
                tags[tag] = _later(tags.get(tag), soft, now)
        entry = _TenantBarriers(everything, urls, prefixes, tags)
        if len(prefixes) > MAX_PREFIX_BARRIERS or len(urls) + len(tags) > MAX_KEYED_BARRIERS:
            entry = entry.collapsed()
        snap = dict(self._snap or {})  # one reference per tenant: nothing deep is copied
        snap[tenant] = entry
        self._snap = snap
        if self.due(now):
            self.prune(now, oldest_writer)

    def prune(self, now: float, oldest_writer: float | None = None) -> None:
        """Forget barriers older than ``ttl`` that no running streamed write
        (started at ``oldest_writer``) predates, and every barrier older than
        MAX_BARRIER_LIFETIME (then retired for streamed commits)."""
        self._next_prune = now + min(self.ttl, 30.0)
        retired = {t: v for t, v in self._retired.items() if oldest_writer is not None and oldest_writer < max(v)}
        snap = self._snap
        if snap is None:
            self._retired = retired
            return
        cutoff = now - self.ttl
        if oldest_writer is not None:
            cutoff = max(min(cutoff, oldest_writer), now - MAX_BARRIER_LIFETIME)
        pruned: dict[str, _TenantBarriers] = {}
        for tenant, entry in snap.items():
            gone: list[tuple[float, float]] = []

            def keep(times, gone=gone):
                hard_t, soft_t = (t if t >= cutoff else 0.0 for t in times)
                if (hard_t, soft_t) != tuple(times):
                    gone.append(tuple(times))
                return (hard_t, soft_t) if hard_t or soft_t else None

            def kept(d: dict) -> dict:
                out = {}
                for k, v in d.items():
                    v = keep(v)
                    if v is not None:
                        out[k] = v
                return out

            left = _TenantBarriers(
                keep(entry.all) if entry.all else None,
                kept(entry.urls),
                tuple(p for p in entry.prefixes if keep(p[2:]) is not None),
                kept(entry.tags),
            )
            if not gone:
                left = entry  # unchanged: the same object (readers may hold it)
            if left.all or left.urls or left.prefixes or left.tags:
                pruned[tenant] = left
            if gone and oldest_writer is not None:
                # A streamed write may predate what was dropped: its commit
                # still checks the tenant-wide latest time of it.
                for times in gone:
                    if oldest_writer < max(times):
                        retired[tenant] = _max_times(retired.get(tenant), times)
        self._snap = pruned or None
        self._retired = retired

    def due(self, now: float) -> bool:
        return now >= self._next_prune

    def verdict(self, key: str, meta: Meta, streamed: bool = False) -> Admit:
        """Whether a purge since ``meta``'s fetch covers the entry at ``key``;
        ``streamed``: a streamed write commits it (long-gone barriers count).
        Safe from any thread (reads immutable snapshots)."""
        snap = self._snap
        if snap is None and not streamed:
            return Admit.KEEP
        tenant, _, rest = key.partition(SEP)
        hard_t = soft_t = 0.0
        if streamed:
            times = self._retired.get(tenant)
            if times:
                hard_t, soft_t = times
        entry = snap.get(tenant) if snap is not None else None
        if entry is not None:
            host, _, rest = rest.partition(SEP)  # rest: path \n query [\n extras] [\x1f variant]
            if entry.all:
                hard_t, soft_t = max(hard_t, entry.all[0]), max(soft_t, entry.all[1])
            if entry.urls:
                start = rest.find(SEP) + 1
                end = len(rest)
                for sep in (SEP, VARIANT_SEP):
                    i = rest.find(sep, start)
                    if 0 <= i < end:
                        end = i
                fragment = rest[:end]
                for h in (host, None):
                    times = entry.urls.get((h, fragment))
                    if times:
                        hard_t, soft_t = max(hard_t, times[0]), max(soft_t, times[1])
            for h, fragment, ht, st in entry.prefixes:
                if (h is None or h == host) and rest.startswith(fragment):
                    hard_t, soft_t = max(hard_t, ht), max(soft_t, st)
            if entry.tags:
                for tag in meta.extra.get("tags") or ():
                    times = entry.tags.get(tag)
                    if times:
                        hard_t, soft_t = max(hard_t, times[0]), max(soft_t, times[1])
        t = meta.request_time
        if hard_t > t:
            return Admit.DROP
        if soft_t > t:
            return Admit.STALE
        return Admit.KEEP
