"""The storage protocol every tier implements, and what it stores.

An entry is its metadata (status, headers, timing) plus a body. Small
bodies travel as bytes; large ones as a stream so that a 1 GiB object never
sits whole in memory. Tiers compose (see ``tiered.py``); the pipeline only
ever sees this interface.
"""
from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import orjson


class Removal(enum.Enum):
    """Why an entry left a store: capacity pressure or an explicit decision."""

    EVICTION = "eviction"
    INVALIDATION = "invalidation"
    REPLACED = "replaced"
    CORRUPT = "corrupt"


class Admit(enum.IntEnum):
    """What a purge decided about an entry that was fetched before it
    (``edge/cache/barriers.py``, ``Barriers``): store or serve it as it is,
    only as stale (a soft purge), or not at all (a hard purge)."""

    KEEP = 0
    STALE = 1
    DROP = 2


@dataclass(slots=True)
class Meta:
    """What is kept of a response besides its body.

    ``vary`` is non-empty on a *marker*: the entry stored under a primary key
    whose response carried ``Vary``; the variants live under secondary keys.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    request_time: float
    response_time: float
    initial_age: float  # RFC 9111 §4.2.3 corrected_initial_age
    lifetime: float  # freshness lifetime the edge applies (after policy)
    size: int = 0
    vary: tuple[str, ...] = ()
    detail: str = ""  # how the lifetime was decided, for Cache-Status/debugging
    extra: dict = field(default_factory=dict)
    # Not persisted: the response headers as served, built on the first hit
    # and rebuilt when the tenant's policy changes (browser TTL rules).
    template: object = field(default=None, compare=False, repr=False)
    template_version: str = field(default="", compare=False, repr=False)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "s": self.status,
                "h": self.headers,
                "rq": self.request_time,
                "rs": self.response_time,
                "ia": self.initial_age,
                "lt": self.lifetime,
                "n": self.size,
                "v": self.vary,
                "d": self.detail,
                "x": self.extra,
            }
        )

    @classmethod
    def loads(cls, data: bytes) -> Meta:
        d = orjson.loads(data)
        return cls(
            status=int(d["s"]),
            headers=tuple((str(k), str(v)) for k, v in d["h"]),
            request_time=float(d["rq"]),
            response_time=float(d["rs"]),
            initial_age=float(d["ia"]),
            lifetime=float(d["lt"]),
            size=int(d["n"]),
            vary=tuple(d["v"]),
            detail=str(d["d"]),
            extra=dict(d["x"]),
        )

    @classmethod
    def marker(cls, vary: tuple[str, ...], now: float, lifetime: float) -> Meta:
        return cls(0, (), now, now, 0.0, lifetime, 0, vary)

    def expire(self, now: float) -> bool:
        """Make the entry stale as of ``now`` (a soft purge) without touching
        anything else, so that stale serving still finds it. Returns whether
        it was fresh. The age is RFC 9111's current_age (freshness.py)."""
        resident = now - self.response_time
        age = self.initial_age + resident if resident > 0.0 else self.initial_age
        if self.lifetime > age:
            self.lifetime = age
            return True
        return False


@dataclass(slots=True)
class Hit:
    """A stored entry as a tier returns it: ``body`` for small entries, or
    ``chunks`` (an async iterator that must be consumed or closed)."""

    meta: Meta
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    tier: str = "memory"
    key: str | None = None  # set by the pipeline's lookup: where it was found


class BodyWriter(Protocol):
    """Streaming write of one entry. Nothing is visible before ``commit``;
    ``abort`` (or a crash) leaves no entry behind."""

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self, meta: Meta) -> None: ...

    async def abort(self) -> None: ...


class Follower(Protocol):
    """Reads a streamed body while it is written (``collapse.Fill``). Called
    on the event loop, in this order."""

    def opened(self, fd: int) -> None:
        """A read-only descriptor of the body's file, the follower's to close;
        it stays valid when the file is renamed, evicted or aborted."""
        ...

    def written(self, size: int) -> None:
        """The first ``size`` bytes of the body are in the file."""
        ...


class Store(Protocol):
    name: str

    async def get(self, key: str) -> Hit | None: ...

    async def put(self, key: str, meta: Meta, body: bytes) -> None: ...

    def writer(self, key: str, follower: Follower | None = None) -> BodyWriter: ...

    async def update(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        """Replace the metadata of the entry under ``key``, keeping its body
        (a validated response, RFC 9111 §4.3.4); False when none is stored."""
        ...

    async def delete(self, key: str, reason: Removal) -> bool: ...

    async def close(self) -> None: ...
