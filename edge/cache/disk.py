"""Disk tier: diskcache (SQLite index + one file per body), shared by all
worker processes of a node and surviving restarts.

An entry is two diskcache items, its metadata and its body
(``disk_items.py``); bodies are streamed in before the metadata that names
them (``disk_writer.py``). Reads check the body's size against the
metadata, so an entry is never served truncated.

Purges (``edge/cache/purger.py``) never scan: a URL, a prefix or a tenant is
a range over diskcache's unique index on ``key`` (metadata keys sort as
``m\0tenant\nhost\npath\nquery...``), and tags have an index of their own
(``disk_tags.py``). Each tenant may hold at most its quota of the tier
(``quota``; the accounting is ``disk_quota.py``).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import diskcache

from edge.cache import disk_quota
from edge.cache.disk_items import (
    META_PREFIX,
    delete_rows,
    load_meta,
    meta_key,
    new_body_key,
    read_rows,
    stored_versions,
    version,
)
from edge.cache.disk_tags import TagIndex, Version
from edge.cache.disk_writer import CHUNK, BodyDisk, DiskWriter, remove_partial
from edge.cache.key import SEP
from edge.cache.store import Admit, Follower, Hit, Meta, Removal

log = logging.getLogger("edge.cache.disk")

# The character after the key separator "\n": "m\0tenant\nhost" + this is
# above every key of that host (skip scans over hosts).
_AFTER_SEP = "\x0b"


class DiskStore:
    name = "disk"

    def __init__(self, path: str | Path, max_bytes: int, threads: int = 4) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        remove_partial(Path(path))
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="edge-disk")
        self.cache = diskcache.Cache(
            str(path),
            size_limit=max_bytes,
            eviction_policy="least-recently-used",
            disk=BodyDisk,
            # Several worker processes share the index; wait for locks rather
            # than fail a request.
            timeout=10,
            statistics=False,
        )
        # Set by the TieredStore: decides, inside the transaction that
        # commits an entry, whether a purge since its fetch forbids it.
        self.admit = None
        # Set by the node: tenant -> bytes of this tier it may hold (None: no
        # cap but the tier's size). Called from any thread, at every write.
        self.quota: Callable[[str], int | None] | None = None
        disk_quota.ensure_schema(self.cache)
        self.tags = TagIndex(str(path), functools.partial(stored_versions, self.cache))

    async def _run(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def get(self, key: str) -> Hit | None:
        return await self._run(self._get_sync, key)

    def _get_sync(self, key: str) -> Hit | None:
        raw = self.cache.get(meta_key(key))
        if raw is None:
            return None
        try:
            meta = Meta.loads(raw)
        except Exception:
            log.warning("corrupt metadata in the disk tier; entry dropped")
            self._delete_sync(key)
            return None
        body_key = meta.extra.get("body")
        if not body_key:  # a Vary marker
            return Hit(meta, b"", None, "disk")
        handle = self.cache.get(body_key, read=True)
        if handle is None:
            # Evicted body: drop the entry, unless another process has just
            # replaced it with a new one.
            with self.cache.transact():
                if self.cache.get(meta_key(key)) == raw:
                    self.cache.delete(meta_key(key))
            return None
        if isinstance(handle, bytes):  # small bodies live inside SQLite
            body, size = handle, len(handle)
        else:
            body, size = None, os.fstat(handle.fileno()).st_size
        if size != meta.size:
            if body is None:
                handle.close()
            log.warning("disk entry with a body of %d bytes, expected %d; dropped", size, meta.size)
            self._delete_sync(key)
            return None
        if body is not None:
            return Hit(meta, body, None, "disk")
        return Hit(meta, None, self._chunks(handle), "disk")

    async def _chunks(self, handle) -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await self._run(handle.read, CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def read_all(self, hit: Hit) -> bytes:
        if hit.body is not None:
            return hit.body
        assert hit.chunks is not None
        return b"".join([c async for c in hit.chunks])

    async def put(self, key: str, meta: Meta, body: bytes) -> None:
        await self._run(self._put_sync, key, meta, body)

    def _put_sync(self, key: str, meta: Meta, body: bytes) -> None:
        limit = self.quota_of(key)
        if limit is not None and len(body) > limit:
            return  # larger than its tenant's whole quota (see DiskWriter.write)
        if meta.vary and not body and meta.status == 0:
            meta.extra.pop("body", None)
            self._set_meta_sync(key, meta)
            return
        meta.size = len(body)
        meta.extra["body"] = body_key = new_body_key(key)
        if len(body) < self.cache._disk.min_file_size:
            # Kept in the table: written in the transaction of the metadata
            # (one commit, not two), as no file is written under the lock.
            self._set_meta_sync(key, meta, body=body)
            return
        self.cache.set(body_key, body)
        self._set_meta_sync(key, meta)

    async def _commit_streamed(self, key: str, meta: Meta) -> None:
        await self._run(self._set_meta_sync, key, meta, True)

    def _set_meta_sync(self, key: str, meta: Meta, streamed: bool = False, body: bytes | None = None) -> None:
        """Commit ``meta``; its body is stored already, or is ``body`` (small:
        then stored in the same transaction)."""
        mk = meta_key(key)
        body_key = meta.extra.get("body")
        ver = version(body_key)
        tags = meta.extra.get("tags") if ver else None
        if tags:
            # Before the entry: a committed entry always has its rows.
            self.tags.add(key, ver, tags)
        verdict = Admit.KEEP
        old = None
        tenant = key.partition(SEP)[0]
        quota = self.quota(tenant) if self.quota is not None else None
        over = False
        # One transaction for the decision and the write, and a purge takes
        # this lock (``settle``) after adding its barrier and before it looks
        # for entries: either this commit lands first and the purge finds it,
        # or it decides after the barrier is in place.
        with self.cache.transact():
            if self.admit is not None:
                # A streamed write may have outlived the barriers: it is
                # also checked against what they left (``Barriers.verdict``).
                verdict = self.admit(key, meta, streamed=True) if streamed else self.admit(key, meta)
            if verdict != Admit.DROP:
                if verdict == Admit.STALE:
                    meta.expire(time.time())
                if body is not None:
                    self.cache.set(body_key, body)
                # Read without diskcache's get, which would also write its
                # access time (the row is overwritten next anyway).
                row = read_rows(self.cache._sql, [mk]).get(mk)
                old = self.cache._disk.fetch(*row[1:], False) if row is not None else None
                self.cache.set(mk, meta.dumps())
                # Read here, where it costs no lock of its own.
                over = quota is not None and self.tenant_bytes_sync(tenant) > quota
        if verdict == Admit.DROP:
            # Fetched before a purge that covers it: never becomes visible.
            if body_key and body is None:
                self.cache.delete(body_key)
            if tags:
                self.tags.remove([(key, ver)])
            return
        if old is not None:
            self._forget(key, old, keep_body=body_key)
        if over:
            disk_quota.fit(self.cache, tenant, quota, self.tags.remove)
        if tags:
            self.tags.stored()

    async def update(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        return await self._run(self._update_sync, key, meta, expected)

    def _update_sync(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        """Rewrite only the metadata item of a stored entry (RFC 9111 §4.3.4):
        the body item and its key stay, so nothing is copied or deleted (unlike
        ``_set_meta_sync``, which retires the replaced entry's body)."""
        mk = meta_key(key)
        with self.cache.transact():
            raw = self.cache.get(mk)
            if raw is None:
                return False
            try:
                old = Meta.loads(raw)
            except Exception:
                return False
            body_key = old.extra.get("body")
            if not body_key or old.status == 0:
                return False  # a Vary marker has nothing to update
            if expected is not None and old.response_time != expected:
                return False  # replaced since it was validated: another body
            new = Meta(
                status=meta.status,
                headers=meta.headers,
                request_time=meta.request_time,
                response_time=meta.response_time,
                initial_age=meta.initial_age,
                lifetime=meta.lifetime,
                size=old.size,
                vary=meta.vary,
                detail=meta.detail,
                # The same body and tag rows; the rest (stale-serving windows)
                # as the validation said.
                extra={**meta.extra, "body": body_key, **({"tags": old.extra["tags"]} if "tags" in old.extra else {})},
            )
            if "tags" not in old.extra:
                new.extra.pop("tags", None)
            verdict = self.admit(key, new) if self.admit is not None else Admit.KEEP
            if verdict == Admit.DROP:
                return False  # purged since the validation began: the purge removes it
            if verdict == Admit.STALE:
                new.expire(time.time())
            self.cache.set(mk, new.dumps())
        return True

    def _forget(self, key: str, raw_meta: bytes, keep_body: str | None = None) -> None:
        """Remove what a replaced or deleted entry's metadata referred to:
        its body and its tag rows."""
        with contextlib.suppress(Exception):
            meta = Meta.loads(raw_meta)
            body_key = meta.extra.get("body")
            if body_key and body_key != keep_body:
                self.cache.delete(body_key)
                if meta.extra.get("tags"):
                    self.tags.remove([(key, version(body_key))])

    def writer(self, key: str, follower: Follower | None = None) -> DiskWriter:
        return DiskWriter(self.cache, self.executor, key, self.quota_of(key), self._commit_streamed, follower)

    async def delete(self, key: str, reason: Removal) -> bool:
        return await self._run(self._delete_sync, key)

    def _delete_sync(self, key: str) -> bool:
        raw = self.cache.pop(meta_key(key))
        if raw is None:
            return False
        self._forget(key, raw)
        return True

    @property
    def bytes_used(self) -> int:
        return int(self.cache.volume())

    def entries_sync(self) -> int:
        """The entries stored (Vary markers included), not their bodies:
        the metadata items, counted on the key index."""
        row = self.cache._sql(
            "SELECT COUNT(*) FROM Cache WHERE raw = 1 AND key >= ? AND key < ?", (META_PREFIX, "m\1")
        ).fetchone()
        return int(row[0])

    def probe_sync(self) -> None:
        """Write, read back and delete an item that is no entry: raises
        (OSError, a SQLite error) when the tier takes no writes."""
        key = f"readyz\0{uuid.uuid4().hex}"
        self.cache.set(key, b"probe")
        if self.cache.get(key) != b"probe":
            raise OSError("the probe read back differently")
        self.cache.delete(key)

    # ------------------------------------------------------------------ quotas

    def quota_of(self, key: str) -> int | None:
        """The quota of the tenant of ``key`` (None: none)."""
        return self.quota(key.partition(SEP)[0]) if self.quota is not None else None

    def tenant_bytes_sync(self, tenant: str) -> int:
        """The bytes ``tenant`` holds in this tier (as the quota counts them)."""
        return disk_quota.tenant_bytes(self.cache, tenant)

    async def close(self) -> None:
        self.cache.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.tags.close()

    async def run(self, fn, *args, **kwargs):
        """Run ``fn`` in this tier's executor (purges: never on the event loop)."""
        return await self._run(fn, *args, **kwargs)

    async def settle(self) -> None:
        """Wait until no commit that is deciding now is still under way, in
        any worker. A commit reads the purge barriers inside its transaction,
        so one that read them before a purge added its own may still be
        writing, unseen by the purge's scan; after this it has landed (the
        scan finds it), and every later one sees the barrier."""
        await self._run(self._settle_sync)

    def _settle_sync(self) -> None:
        with self.cache.transact():
            pass  # the commit lock, taken once every holder before has let go

    @contextlib.contextmanager
    def bulk(self):
        """Many writes of this thread as one transaction on each database
        (bulk loads, benchmarks): ``with disk.bulk(): disk._put_sync(...)``.
        Other workers' writes wait until it ends, so keep it short."""
        with self.tags.transaction(), self.cache.transact():
            yield

    # -------------------------------------------------------------- purge index

    def range_keys_sync(self, lo: str, hi: str, after: str | None = None, limit: int = 1000) -> list[str]:
        """Entry keys in ``[lo, hi)`` (or ``(after, hi)``), in order, at most
        ``limit``: a range over diskcache's unique index on (key, raw)."""
        sql = self.cache._sql
        if after is None:
            rows = sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key LIMIT ?", (meta_key(lo), meta_key(hi), limit))
        else:
            rows = sql("SELECT key FROM Cache WHERE key > ? AND key < ? ORDER BY key LIMIT ?", (meta_key(after), meta_key(hi), limit))
        return [k[2:] for (k,) in rows]

    def hosts_sync(self, tenant: str, limit: int | None = None) -> list[str]:
        """The hosts ``tenant`` has entries for (the first ``limit``), from the
        index alone: a skip scan, one index seek per host, whatever the
        number of entries."""
        sql = self.cache._sql
        prefix = meta_key(tenant + "\n")
        hi = prefix + "\U0010ffff"
        lo = prefix
        found: list[str] = []
        while True:
            row = sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key LIMIT 1", (lo, hi)).fetchone()
            if row is None or not isinstance(row[0], str):
                return found
            rest = row[0][len(prefix) :]
            host = rest.split("\n", 1)[0]
            found.append(host)
            if limit is not None and len(found) >= limit:
                return found
            lo = prefix + host + _AFTER_SEP

    def purge_sync(
        self, items: list[tuple[str, str | None]], soft: bool, now: float, tags: frozenset[str] | None = None
    ) -> list[str]:
        """Purge entries in one transaction: ``items`` are (key, ver); with a
        ver (tag purges) only that version of the entry, and only while it
        carries one of ``tags``, else the row that named it is stale and goes.
        Hard: the metadata and body are removed; soft: the metadata is
        rewritten as expired, the body stays. Returns the keys of the stored
        responses affected (Vary markers are removed but not returned).
        Rows are read and deleted by the batch (``disk_items``); files go
        after the commit.
        """
        cache = self.cache
        want: dict[str, set[str] | None] = {}
        for key, ver in items:
            if ver is None:
                want[key] = None
            else:
                want.setdefault(key, set()).add(ver)  # type: ignore[union-attr]
        affected: list[str] = []
        untag: list[Version] = []
        files: list[str] = []
        with cache.transact():
            sql = cache._sql
            found = read_rows(sql, [meta_key(k) for k in want])
            drop: list[int] = []
            bodies: list[str] = []
            for key, vers in want.items():
                row = found.get(meta_key(key))
                if row is None:
                    untag.extend((key, v) for v in vers or ())
                    continue
                rowid, mode, filename, value = row
                try:
                    meta = load_meta(cache, mode, filename, value)
                except Exception:  # corrupt: goes whatever the purge
                    drop.append(rowid)
                    files.append(filename)
                    continue
                body_key = meta.extra.get("body")
                ver = version(body_key)
                if vers is not None:
                    untag.extend((key, v) for v in vers if v != ver)
                    if ver not in vers or not tags.intersection(meta.extra.get("tags") or ()):
                        continue
                if soft:
                    if meta.status == 0:
                        continue  # a marker's lifetime is never checked
                    if meta.expire(now):
                        data = meta.dumps()
                        if filename is None and mode == diskcache.core.MODE_RAW:
                            sql("UPDATE Cache SET value = ? WHERE rowid = ?", (sqlite3.Binary(data), rowid))
                        else:
                            cache.set(meta_key(key), data)
                    affected.append(key)
                    continue
                drop.append(rowid)
                files.append(filename)
                if body_key:
                    bodies.append(body_key)
                    if meta.extra.get("tags"):
                        untag.append((key, ver))
                if meta.status != 0:
                    affected.append(key)
            for rowid, filename in read_rows(sql, bodies, "rowid, filename").values():
                drop.append(rowid)
                files.append(filename)
            delete_rows(sql, drop)
        for filename in files:
            if filename is not None:
                cache._disk.remove(filename)
        self.tags.remove(untag)
        return affected
