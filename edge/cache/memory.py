"""Memory tier: an LRU bounded by bytes, for hot small objects."""
from __future__ import annotations

from cachetools import LRUCache

from edge.cache.store import Hit, Meta, Removal

# Rough per-entry overhead (dict slot, tuples, strings) so that many tiny
# entries cannot exceed the configured bound by an order of magnitude.
_OVERHEAD = 512


def _cost(item: tuple[Meta, bytes]) -> int:
    meta, body = item
    return len(body) + _OVERHEAD + sum(len(k) + len(v) for k, v in meta.headers)


class MemoryStore:
    name = "memory"

    def __init__(self, max_bytes: int, max_object: int) -> None:
        self.max_object = max_object
        self._lru: LRUCache[str, tuple[Meta, bytes]] = LRUCache(maxsize=max(max_bytes, 1), getsizeof=_cost)

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

    def writer(self, key: str):  # pragma: no cover - large bodies never go to memory
        raise NotImplementedError("the memory tier stores whole bodies only")

    async def delete(self, key: str, reason: Removal) -> bool:
        return self._lru.pop(key, None) is not None

    async def close(self) -> None:
        self._lru.clear()
