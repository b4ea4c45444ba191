"""Memory in front of disk, composed behind the one Store interface.

Small objects live in both tiers (memory for speed, disk to survive a
restart and to be shared by the node's workers); large ones only on disk,
streamed. A disk hit for a small object is promoted to memory.
A failing disk tier degrades to misses, never to errors for clients.

Purges (``purger.py``) leave ``barriers`` here: an entry whose fetch began
before a purge that covers it is neither put into memory nor served or
promoted from disk (or only as stale, for a soft purge). The memory hit
path (``get_now``) never checks them: the purge empties memory at once.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time

from edge.cache.disk import DiskStore
from edge.cache.memory import MemoryStore
from edge.cache.barriers import Barriers
from edge.cache.store import Admit, Follower, Hit, Meta, Removal

log = logging.getLogger("edge.cache")

_WRITER_MAX_AGE = 3600.0


class _MemoryOnlyWriter:
    """Used when there is no disk tier: a body too large for memory is
    simply not stored."""

    async def write(self, chunk: bytes) -> None:
        pass

    async def commit(self, meta: Meta) -> None:
        pass

    async def abort(self) -> None:
        pass


class _TrackedWriter:
    """A disk writer whose start is known to the barriers: a purge's barrier
    outlives its ttl while a streamed write that began before it runs (up to
    ``barriers.MAX_BARRIER_LIFETIME``; after that the commit checks the tenant's
    retired barrier time, see ``Barriers``)."""

    def __init__(self, inner, writers: dict[int, float], wid: int) -> None:
        self._inner = inner
        self._writers = writers
        self._id = wid
        writers[wid] = time.time()

    async def write(self, chunk: bytes) -> None:
        await self._inner.write(chunk)

    async def commit(self, meta: Meta) -> None:
        try:
            await self._inner.commit(meta)
        finally:
            self._writers.pop(self._id, None)

    async def abort(self) -> None:
        try:
            await self._inner.abort()
        finally:
            self._writers.pop(self._id, None)


class TieredStore:
    name = "tiered"

    def __init__(self, memory: MemoryStore, disk: DiskStore | None) -> None:
        self.memory = memory
        self.disk = disk
        self._background: set[asyncio.Task] = set()
        self._puts: dict[str, asyncio.Task] = {}  # the latest background disk write of each key
        self.barriers = Barriers()
        self._writers: dict[int, float] = {}
        self._writer_ids = itertools.count()
        if disk is not None:
            disk.admit = self.barriers.verdict

    def oldest_writer(self) -> float | None:
        """When the oldest running streamed disk write began (None: none runs).
        A writer never committed nor aborted (a bug elsewhere) is forgotten
        after an hour rather than keeping every barrier forever."""
        writers = self._writers
        if not writers:
            return None
        horizon = time.time() - _WRITER_MAX_AGE
        for wid in [w for w, started in writers.items() if started < horizon]:
            del writers[wid]
        return min(writers.values(), default=None)

    @property
    def max_memory_object(self) -> int:
        return self.memory.max_object

    @property
    def can_stream(self) -> bool:
        return self.disk is not None

    def get_now(self, key: str) -> Hit | None:
        return self.memory.get_now(key)

    async def get(self, key: str) -> Hit | None:
        hit = self.memory.get_now(key)
        if hit is not None or self.disk is None:
            return hit
        try:
            hit = await self.disk.get(key)
        except Exception:
            log.exception("disk tier read failed; treated as a miss")
            return None
        if hit is None:
            return None
        if self.barriers.active:
            verdict = self.barriers.verdict(key, hit.meta)
            if verdict == Admit.DROP:
                # Purged, and its disk delete has not run yet (or runs in
                # another worker): as good as gone.
                if hit.chunks is not None:
                    await hit.chunks.aclose()
                return None
            if verdict == Admit.STALE:
                hit.meta.expire(time.time())
        if hit.chunks is not None and hit.meta.size <= self.memory.max_object:
            try:
                hit.body = b"".join([c async for c in hit.chunks])
            except Exception:
                log.exception("disk tier read failed; treated as a miss")
                return None
            hit.chunks = None
        if hit.body is not None:
            self.memory.put_now(key, hit.meta, hit.body)
        return hit

    async def put(self, key: str, meta: Meta, body: bytes) -> None:
        """Memory at once (the next request must hit), disk in the background."""
        barriers = self.barriers
        if barriers.active:
            now = time.time()
            if barriers.due(now):
                barriers.prune(now, self.oldest_writer())
            verdict = barriers.verdict(key, meta)
            if verdict == Admit.DROP:
                return  # fetched before a purge that covers it
            if verdict == Admit.STALE:
                meta.expire(now)
        self.memory.put_now(key, meta, body)
        if self.disk is not None:
            # Copied now: the memory entry's meta may change before the
            # background write runs (the disk tier records its body id).
            disk_meta = dataclasses.replace(meta, extra=dict(meta.extra), template=None)
            task = asyncio.ensure_future(self._disk_put(key, disk_meta, body))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            self._puts[key] = task
            task.add_done_callback(lambda t, key=key: self._puts.pop(key, None) if self._puts.get(key) is t else None)

    async def _disk_put(self, key: str, meta: Meta, body: bytes) -> None:
        try:
            await self.disk.put(key, meta, body)
        except Exception:
            log.exception("disk tier write failed; entry kept in memory only")

    async def update(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        """New metadata for a stored entry, its body kept (RFC 9111 §4.3.4):
        memory at once, disk in the background, never copying the body."""
        barriers = self.barriers
        if barriers.active:
            now = time.time()
            verdict = barriers.verdict(key, meta)
            if verdict == Admit.DROP:
                return False
            if verdict == Admit.STALE:
                meta.expire(now)
        found = self.memory.update_now(key, meta, expected)
        if self.disk is not None:
            disk_meta = dataclasses.replace(meta, extra=dict(meta.extra), template=None)
            task = asyncio.ensure_future(self._disk_update(key, disk_meta, expected))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            found = True
        return found

    async def _disk_update(self, key: str, meta: Meta, expected: float | None) -> None:
        try:
            await self.disk.update(key, meta, expected)
        except Exception:
            log.exception("disk tier update failed")

    def writer(self, key: str, follower: Follower | None = None):
        if self.disk is None:
            return _MemoryOnlyWriter()
        return _TrackedWriter(self.disk.writer(key, follower), self._writers, next(self._writer_ids))

    async def delete(self, key: str, reason: Removal) -> bool:
        found = await self.memory.delete(key, reason)
        pending = self._puts.get(key)
        if pending is not None:
            # A background write of this key still running would bring the
            # entry back on disk after the delete: let it land first.
            await asyncio.gather(asyncio.shield(pending), return_exceptions=True)
        if self.disk is not None:
            try:
                found = await self.disk.delete(key, reason) or found
            except Exception:
                log.exception("disk tier delete failed")
        return found

    async def drain(self) -> None:
        """Wait for background disk writes (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.memory.close()
        if self.disk is not None:
            await self.disk.close()
