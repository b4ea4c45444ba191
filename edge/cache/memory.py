"""Memory tier: an LRU bounded by bytes, for hot small objects. An entry
costs what it takes in this process (``entry_cost``), not only its body.

Besides the LRU it keeps two indexes for purges (``edge/cache/purge.py``):
the keys in sorted order, so that a URL, a prefix or a whole tenant is a
range lookup rather than a scan, and the keys per (tenant, tag). Both are
kept in step with every insert, replacement, eviction and delete by the
LRU itself (``_IndexedLRU``); the hit path (``get_now``) does not touch them.
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator

from cachetools import Cache, LRUCache
from sortedcontainers import SortedList

from edge.cache.key import SEP
from edge.cache.store import Hit, Meta, Removal

# The character after SEP: "tenant\nhost" + _AFTER_SEP is above every key of that host.
_AFTER_SEP = chr(ord(SEP) + 1)

# What an entry holds besides its strings, measured with tracemalloc
# (CPython 3.11, 64-bit): the LRU's slots in its data, size and order maps,
# the sorted key index, the stored tuple, Meta with its floats and extra
# dict, and the served headers (``Meta.template``, built on the first hit).
_ENTRY = 800
# Per header field: its pair tuple and slot, and its share of the template.
# A name counts twice: a case-insensitive name carries a lower-case copy.
_FIELD = 90
# Per member of a tuple or list, and per tag in the (tenant, tag) index.
_SLOT = 8
_TAG = 96
_getsizeof = sys.getsizeof


def _extra_size(value) -> int:
    if isinstance(value, (list, tuple)):
        return _getsizeof(value) + sum(_getsizeof(v) for v in value)
    return _getsizeof(value)


def entry_cost(key: str, meta: Meta, body: bytes) -> int:
    """The bytes an entry costs this process, not only its body: the key
    (long URLs), the header fields, Vary names, the extra fields (tags, a
    disk body's name) and the fixed part of every entry. Many small entries
    must not take a multiple of ``cache.memory_size``."""
    size = _ENTRY + _getsizeof(key) + _getsizeof(body)
    for name, value in meta.headers:
        size += 2 * _getsizeof(name) + _getsizeof(value) + _FIELD
    for name in meta.vary:
        size += _getsizeof(name) + _SLOT
    extra = meta.extra
    if extra:
        size += _getsizeof(extra) + sum(_extra_size(v) for v in extra.values())
        size += _TAG * len(extra.get("tags", ()))
    return size


def _stored_cost(item: tuple[Meta, bytes, int]) -> int:
    return item[2]


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

    def __setitem__(self, key: str, value: tuple[Meta, bytes, int]) -> None:
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

    def _untag(self, key: str, value: tuple[Meta, bytes, int]) -> None:
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
        self._lru: _IndexedLRU = _IndexedLRU(maxsize=max(max_bytes, 1), getsizeof=_stored_cost)

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
        cost = entry_cost(key, meta, body)
        if len(body) > self.max_object or cost > self._lru.maxsize:
            self._lru.pop(key, None)
            return False
        self._lru[key] = (meta, body, cost)
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
        cost = entry_cost(key, meta, item[1])
        if cost > self._lru.maxsize:
            self._lru.pop(key, None)
            return False
        self._lru[key] = (meta, item[1], cost)
        return True

    async def update(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        return self.update_now(key, meta, expected)

    def writer(self, key: str, follower=None):  # pragma: no cover - large bodies never go to memory
        raise NotImplementedError("the memory tier stores whole bodies only")

    def delete_now(self, key: str) -> bool:
        return self._lru.pop(key, None) is not None

    async def delete(self, key: str, reason: Removal) -> bool:
        return self.delete_now(key)

    def clear(self) -> None:
        """Forget every entry, as a restart of the worker does."""
        self._lru.clear()

    async def close(self) -> None:
        self.clear()

    def keys(self) -> list[str]:
        """The stored keys, as the entries have them (in no order)."""
        return list(self._lru)

    def peek(self, key: str) -> Meta | None:
        """The metadata stored under ``key``; unlike a lookup, this leaves
        the entry's place in the eviction order alone."""
        if key not in self._lru:
            return None
        return Cache.__getitem__(self._lru, key)[0]

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

    def indexes(self) -> tuple[list[str], dict[tuple[str, str], frozenset[str]]]:
        """Copies of the purge indexes: the sorted keys, and (tenant, tag) -> keys."""
        return list(self._lru.index), {k: frozenset(v) for k, v in self._lru.tags.items()}

    def purge_now(self, key: str, soft: bool, now: float) -> bool:
        """Remove (hard) or expire (soft) one entry; True when it was a stored
        response (a Vary marker is removed too, but not counted)."""
        lru = self._lru
        meta = self.peek(key)
        if meta is None:
            return False
        if not soft:
            del lru[key]
            return meta.status != 0
        if meta.status == 0:
            return False  # markers carry no content; their lifetime is never checked
        # Expired as of now, kept for stale serving. Changed in place: the
        # memory tier owns this object and nothing caches the lifetime.
        meta.expire(now)
        return True
