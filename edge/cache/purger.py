"""Applying a purge to one worker's tiers: the memory tier by index
lookups on the loop, the disk tier in its executor (SQL ranges over
diskcache's key index and the tags table), after the barrier
(``barriers.py``) that keeps the purged entries from coming back and once
the disk commits that decided before it have landed (``DiskStore.settle``).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from edge.cache.purge import PurgeSpec, tenant_range

if TYPE_CHECKING:
    from edge.cache.disk import DiskStore
    from edge.cache.tiered import TieredStore

BATCH = 1000  # disk entries per transaction: other workers' writes interleave
_YIELD_EVERY = 2000  # memory entries between returns to the event loop
_RANGES_PER_YIELD = 500  # memory key ranges (index lookups) between returns to the loop


class Purger:
    """Applies purges to one worker's TieredStore. Holds no state of its own
    (the barriers live in the store), so one may be made per purge."""

    def __init__(self, store: TieredStore) -> None:
        self.store = store

    async def apply(self, spec: PurgeSpec, *, memory: bool = True, disk: bool = True) -> int:
        """Purge ``spec`` from this worker's memory tier and/or the shared disk
        tier; returns the stored responses affected, each counted once
        whichever tiers held it (Vary variants count, their markers do not;
        soft: entries expired, already stale ones included).

        When it returns, no request of this worker that starts afterwards is
        answered with a purged entry. The memory tier is per worker: the
        other workers need ``apply(spec, disk=False)`` each.
        """
        store = self.store
        limit = spec.host_limit()
        if limit is not None:
            # Refused before anything is done: path-only targets x hosts
            # beyond MAX_RANGES (counting stops there).
            if memory:
                spec.check_hosts(len(await self._memory_hosts(spec.tenant, limit + 1)))
            if disk and store.disk is not None:
                spec.check_hosts(len(await store.disk.run(store.disk.hosts_sync, spec.tenant, limit + 1)))
        now = time.time()
        store.barriers.add(spec, now, store.oldest_writer())
        in_memory: set[str] = set()
        if memory:
            in_memory = await self._memory(spec, now)
        count = len(in_memory)
        if disk and store.disk is not None:
            # Commits of this worker or a sibling that decided before the
            # barriers: landed before the scan, or the scan would miss them.
            await store.disk.settle()
            count += await store.disk.run(_purge_disk, store.disk, spec, now, in_memory)
        return count

    async def _memory_hosts(self, tenant: str, limit: int) -> list[str]:
        """The memory tier's hosts of ``tenant`` (at most ``limit``), returning
        to the loop between batches of index probes."""
        found: list[str] = []
        for host in self.store.memory.iter_hosts(tenant):
            found.append(host)
            if len(found) >= limit:
                break
            if len(found) % _RANGES_PER_YIELD == 0:
                await asyncio.sleep(0)
        return found

    async def _memory(self, spec: PurgeSpec, now: float) -> set[str]:
        mem = self.store.memory
        affected: set[str] = set()
        if spec.tags:
            keys: Iterable[str] = sorted({k for tag in spec.tags for k in mem.tag_keys(spec.tenant, tag)})
        else:
            known: list[str] = []
            limit = None if spec.all else spec.host_limit()
            if limit is not None:
                known = await self._memory_hosts(spec.tenant, limit + 1)
                spec.check_hosts(len(known))  # hosts added since apply() checked
            keys = self._range_keys(spec, known)
        done = 0
        for key in keys:
            if key is None:
                await asyncio.sleep(0)  # after _RANGES_PER_YIELD index lookups
                continue
            if mem.purge_now(key, spec.soft, now):
                affected.add(key)
            done += 1
            if done % _YIELD_EVERY == 0:
                # A whole tenant must not stall every other request; the
                # barrier already keeps purged entries from coming back.
                await asyncio.sleep(0)
        return affected

    def _range_keys(self, spec: PurgeSpec, known: list[str]) -> Iterable[str | None]:
        """The memory keys in ``spec``'s ranges, made lazily (the ranges are
        neither built all at once nor merged: a key met twice is purged once,
        ``affected`` is a set); None after every _RANGES_PER_YIELD ranges."""
        mem = self.store.memory
        for i, (lo, hi) in enumerate(spec.iter_ranges(known), 1):
            yield from mem.range_keys(lo, hi)
            if i % _RANGES_PER_YIELD == 0:
                yield None


def _purge_disk(disk: DiskStore, spec: PurgeSpec, now: float, in_memory: set[str]) -> int:
    """The disk part of a purge, in the disk tier's executor: batches of at
    most BATCH entries, one transaction each. Returns the entries affected
    that are not in ``in_memory`` (already counted)."""
    count = 0
    if spec.tags:
        lo, hi = tenant_range(spec.tenant)
        rows: set[tuple[str, str]] = set()
        for tag in spec.tags:
            rows.update(disk.tags.tagged(lo, hi, tag))
        items: list[tuple[str, str | None]] = sorted(rows)
        tags = frozenset(spec.tags)
        for i in range(0, len(items), BATCH):
            count += sum(k not in in_memory for k in disk.purge_sync(items[i : i + BATCH], spec.soft, now, tags))
        return count
    limit = spec.host_limit()
    for lo, hi in spec.ranges(lambda: disk.hosts_sync(spec.tenant, None if limit is None else limit + 1)):
        after = None
        while True:
            keys = disk.range_keys_sync(lo, hi, after, BATCH)
            if keys:
                affected = disk.purge_sync([(k, None) for k in keys], spec.soft, now)
                count += sum(k not in in_memory for k in affected)
            if len(keys) < BATCH:
                break
            after = keys[-1]
    return count
