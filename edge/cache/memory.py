"""Memory tier: an LRU bounded by bytes, for hot small objects.

Besides the LRU it keeps two indexes for purges (``edge/cache/purge.py``):
the keys in sorted order, so that a URL, a prefix or a whole tenant is a
range lookup rather than a scan, and the keys per (tenant, tag). Both are
kept in step with every insert, replacement, eviction and delete by the
LRU itself (``_IndexedLRU``); the hit path (``get_now``) does not touch them.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator

from cachetools import Cache, LRUCache
from sortedcontainers import SortedList

from edge.cache.key import SEP
from edge.cache.store import Hit, Meta, Removal

# Rough per-entry overhead (dict slot, tuples, strings) so that many tiny
# entries cannot exceed the configured bound by an order of magnitude.
_OVERHEAD = 512
# The character after SEP: "tenant\nhost" + _AFTER_SEP is above every key of that host.
_AFTER_SEP = chr(ord(SEP) + 1)


def _cost(item: tuple[Meta, bytes]) -> int:
    meta, body = item
    return len(body) + _OVERHEAD + sum(len(k) + len(v) for k, v in meta.headers)


def _tenant(key: str) -> str:
    return key[: key.find(SEP)]


class _IndexedLRU(LRUCache):
    """cachetools' LRU plus a sorted key index and a (tenant, tag) -> keys map.

    cachetools routes every removal (``pop``, eviction via ``popitem``,
    ``clear``) through ``__delitem__`` and every insert or replacement
    through ``__setitem__``, so overriding those two keeps the indexes exact.
    ``__getitem__`` (the hit path) is LRUCache's own.
    """

    def __init__(self, maxsize: int, getsizeof) -> None:
        super().__init__(maxsize, getsizeof)
        self.index: SortedList = SortedList()
        self.tags: dict[tuple[str, str], set[str]] = {}

    def __setitem__(self, key: str, value: tuple[Meta, bytes]) -> None:
        if key in self:
            # Replaced: the old entry's tags go (an eviction of this very key
            # while making room would untag it again, harmlessly).
            self._untag(key, Cache.__getitem__(self, key))
        super().__setitem__(key, value)
        index = self.index
        i = index.bisect_left(key)
        if i == len(index) or index[i] != key:
            index.add(key)
        tags = value[0].extra.get("tags")
        if tags:
            tenant = _tenant(key)
            for tag in tags:
                keys = self.tags.get((tenant, tag))
                if keys is None:
                    self.tags[(tenant, tag)] = {key}
                else:
                    keys.add(key)

    def __delitem__(self, key: str) -> None:
        value = Cache.__getitem__(self, key)
        super().__delitem__(key)
        self.index.discard(key)
        self._untag(key, value)

    def _untag(self, key: str, value: tuple[Meta, bytes]) -> None:
        tags = value[0].extra.get("tags")
        if not tags:
            return
        tenant = _tenant(key)
        for tag in tags:
            keys = self.tags.get((tenant, tag))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.tags[(tenant, tag)]

    def clear(self) -> None:
        # Fresh indexes first: the removals below then find nothing to update.
        self.index = SortedList()
        self.tags = {}
        super().clear()


class MemoryStore:
    name = "memory"

    def __init__(self, max_bytes: int, max_object: int) -> None:
        self.max_object = max_object
        self._lru: _IndexedLRU = _IndexedLRU(maxsize=max(max_bytes, 1), getsizeof=_cost)

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def bytes_used(self) -> int:
        return int(self._lru.currsize)

    def get_now(self, key: str) -> Hit | None:
        """Synchronous lookup: the hit path must not yield to the loop."""
        item = self._lru.get(key)
        if item is None:
            return None
        return Hit(item[0], item[1], None, "memory")

    async def get(self, key: str) -> Hit | None:
        return self.get_now(key)

    def put_now(self, key: str, meta: Meta, body: bytes) -> bool:
        item = (meta, body)
        if len(body) > self.max_object or _cost(item) > self._lru.maxsize:
            self._lru.pop(key, None)
            return False
        self._lru[key] = item
        return True

    async def put(self, key: str, meta: Meta, body: bytes) -> None:
        self.put_now(key, meta, body)

    def update_now(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        """New metadata for a stored entry, same body (RFC 9111 §4.3.4).
        ``expected``: the response time of the entry that was validated; an
        entry replaced meanwhile (another body) is left alone."""
        item = self._lru.get(key)
        if item is None or expected is not None and item[0].response_time != expected:
            return False
        self._lru[key] = (meta, item[1])
        return True

    async def update(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        return self.update_now(key, meta, expected)

    def writer(self, key: str, follower=None):  # pragma: no cover - large bodies never go to memory
        raise NotImplementedError("the memory tier stores whole bodies only")

    async def delete(self, key: str, reason: Removal) -> bool:
        return self._lru.pop(key, None) is not None

    async def close(self) -> None:
        self._lru.clear()

    # ------------------------------------------------------------- purge index

    def range_keys(self, lo: str, hi: str) -> list[str]:
        """The stored keys in ``[lo, hi)``, in order (O(log n + k))."""
        return list(self._lru.index.irange(lo, hi, inclusive=(True, False)))

    def hosts(self, tenant: str, limit: int | None = None) -> list[str]:
        """The hosts ``tenant`` has entries for (the first ``limit``): a skip
        scan over the sorted index, one O(log n) probe per host, whatever the
        number of entries."""
        return list(itertools.islice(self.iter_hosts(tenant), limit))

    def iter_hosts(self, tenant: str) -> Iterator[str]:
        """``hosts`` one at a time; each step probes the index afresh, so the
        caller may return to the loop (and the index change) in between."""
        index = self._lru.index
        prefix = tenant + SEP
        lo = prefix
        while True:
            i = index.bisect_left(lo)
            if i == len(index):
                return
            key = index[i]
            if not key.startswith(prefix):
                return
            end = key.find(SEP, len(prefix))
            host = key[len(prefix) : end]
            yield host
            lo = prefix + host + _AFTER_SEP  # above every key of this host

    def tag_keys(self, tenant: str, tag: str) -> list[str]:
        return list(self._lru.tags.get((tenant, tag), ()))

    def purge_now(self, key: str, soft: bool, now: float) -> bool:
        """Remove (hard) or expire (soft) one entry; True when it was a stored
        response (a Vary marker is removed too, but not counted)."""
        lru = self._lru
        if key not in lru:
            return False
        meta, _ = Cache.__getitem__(lru, key)  # no LRU bump
        if not soft:
            del lru[key]
            return meta.status != 0
        if meta.status == 0:
            return False  # markers carry no content; their lifetime is never checked
        # Expired as of now, kept for stale serving. Changed in place: the
        # memory tier owns this object and nothing caches the lifetime.
        meta.expire(now)
        return True
