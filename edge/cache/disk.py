"""Disk tier: diskcache (SQLite index + one file per body), shared by all
worker processes of a node and surviving restarts.

Each entry is two diskcache items: the metadata under ``m\\0<key>`` and the
body under ``b\\0<key>\\0<id>``. The body is written first, straight into
its final file, and the metadata (which names the body) only after the body
is complete, so a process killed mid-write leaves at most an unreferenced
body that LRU eviction reclaims, never an entry that is served truncated.
Reads check the body's size against the metadata for the same reason.

Purges (``edge/cache/purger.py``) never scan: a URL, a prefix or a tenant is
a range over diskcache's unique index on ``key`` (metadata keys sort as
``m\0tenant\nhost\npath\nquery...``), and tags live in ``tags.db`` next to
``cache.db``: one row ``(tag, key, ver)`` per tag of a stored entry, where
``ver`` names the entry's body, so a row always says which version of an
entry it belongs to. Rows are written before their entry is committed (a tag
purge never misses a stored entry) and deleted with it when it is purged,
replaced or deleted. Eviction (diskcache's own SQL) leaves its rows behind:
they are harmless (a purge checks the entry's version and tags before acting)
and are removed when a tag purge meets them and by a sweep that tagged puts
advance a few rows at a time (``prune_tags_sync``).

Each tenant has a quota of the tier (``quota``): SQLite triggers on
diskcache's table keep the bytes of each tenant's items (file or in-table
value, plus key) in ``EdgeTenantBytes``, in the transaction of every write,
delete and eviction, whichever process or code path runs it; a tenant over
its quota loses its own entries, the least recently used of its oldest
stored first (``_fit_quota_sync``), so a flood of distinct keys never pushes
out other tenants' entries.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import diskcache

from edge.cache.key import SEP
from edge.cache.store import Admit, Follower, Hit, Meta, Removal

log = logging.getLogger("edge.cache.disk")

CHUNK = 256 * 1024
_END = object()


class _Disk(diskcache.Disk):
    """Removes the partial file when a streamed write fails, instead of
    leaving an orphan on disk (diskcache would keep it)."""

    def store(self, value, read, key=diskcache.core.UNKNOWN):
        if not read:
            return super().store(value, read, key=key)
        filename, full_path = self.filename(key, value)
        # Written aside, named by this process, and renamed into place when
        # complete: what a killed process leaves is found and removed by the
        # next DiskStore (remove_partial), never kept outside the accounting.
        partial = os.path.join(self._directory, PARTIAL_DIR, f"{os.getpid()}-{os.path.basename(full_path)}")
        try:
            size = _write_body(partial, value)
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(partial, full_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise
        return size, diskcache.core.MODE_BINARY, filename, None


PARTIAL_DIR = "partial"


def _write_body(path: str, source: _QueueReader) -> int:
    """Write a streamed body, unbuffered: what ``source`` is told is written
    can be read back at once through another descriptor of the file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "xb", buffering=0) as out:
        source.opened(path)
        size = 0
        while chunk := source.read(CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[out.write(view) :]
            size += len(chunk)
            source.wrote(size)
        return size


def remove_partial(directory: Path) -> None:
    """Delete bodies left half-written by processes that no longer run."""
    folder = directory / PARTIAL_DIR
    folder.mkdir(exist_ok=True)
    for entry in os.scandir(folder):
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # its writer still runs
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        with contextlib.suppress(OSError):
            os.remove(entry.path)


class _Aborted(Exception):
    pass


class _QueueReader:
    """A file-like object whose ``read`` pulls chunks the event loop pushes,
    so diskcache writes a streamed body in its worker thread with one copy
    and with back-pressure towards the origin."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, follower: Follower | None = None) -> None:
        self._loop = loop
        self._queue = queue
        self._done = False
        self._follower = follower

    def opened(self, path: str) -> None:
        """In the writing thread: the body's file exists. A follower gets a
        descriptor of its own to read it with (it closes it)."""
        follower = self._follower
        if follower is None:
            return
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._loop.call_soon_threadsafe(follower.opened, fd)
        except RuntimeError:  # the loop is closed: nobody will read
            os.close(fd)

    def wrote(self, size: int) -> None:
        """In the writing thread: the first ``size`` bytes are in the file."""
        if self._follower is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._follower.written, size)

    def read(self, _size: int = -1) -> bytes:
        if self._done:
            return b""
        # Bounded: a loop that went away must not pin this thread forever.
        item = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result(timeout=300)
        if item is _END:
            self._done = True
            return b""
        if item is None:
            raise _Aborted()
        return item


def _meta_key(key: str) -> str:
    return "m\0" + key


TAGS_DB = "tags.db"
SWEEP_EVERY = 100  # tagged puts between two steps of the stale-row sweep
SWEEP_STEP = 200  # entry versions checked per step
_TAGS_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, key TEXT NOT NULL, ver TEXT NOT NULL,"
        " PRIMARY KEY (tag, key, ver)) WITHOUT ROWID"
    ),
    "CREATE INDEX IF NOT EXISTS tags_key ON tags (key, ver)",
)
# The character after the key separator "\n": "m\0tenant\nhost" + this is
# above every key of that host (skip scans over hosts).
_AFTER_SEP = "\x0b"


def _version(body_key: str | None) -> str:
    """The version of an entry: the unique id at the end of its body key."""
    return body_key.rpartition("\0")[2] if body_key else ""


# --- per-tenant accounting, in cache.db itself ---------------------------------
# An item's key is "m\0tenant\n..." or "b\0tenant\n...": the tenant is the
# bytes between the two-byte prefix and the first "\n". Keys hold NUL, so
# they are read as blobs (SQLite's text functions stop at a NUL).
_TENANT_OF = "substr(CAST({r}key AS BLOB), 3, instr(CAST({r}key AS BLOB), X'0A') - 3)"
_IS_ENTRY_ITEM = "{r}raw = 1 AND instr(CAST({r}key AS BLOB), X'0A') > 3"
# A body in a file counts its size, one in the table its length; both count
# the key (a flood of tiny entries is mostly keys and metadata).
_ITEM_BYTES = "{r}size + coalesce(length({r}value), 0) + length(CAST({r}key AS BLOB))"
_QUOTA_TABLE = "EdgeTenantBytes"
_QUOTA_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {_QUOTA_TABLE} (tenant BLOB PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID",
    # A tenant's items in the order they were stored (rowid), for eviction
    # to sample its oldest. Not by access time: every read sets that, and an
    # index on it would cost every disk hit a write.
    f"CREATE INDEX IF NOT EXISTS EdgeTenantItems ON Cache ({_TENANT_OF.format(r='')})",
    f"INSERT INTO {_QUOTA_TABLE} (tenant, bytes) SELECT {_TENANT_OF.format(r='')}, sum({_ITEM_BYTES.format(r='')})"
    f" FROM Cache WHERE {_IS_ENTRY_ITEM.format(r='')} GROUP BY 1",
    f"CREATE TRIGGER IF NOT EXISTS EdgeTenantBytes_insert AFTER INSERT ON Cache"
    f" WHEN {_IS_ENTRY_ITEM.format(r='NEW.')} BEGIN"
    f" INSERT INTO {_QUOTA_TABLE} (tenant, bytes) VALUES ({_TENANT_OF.format(r='NEW.')}, {_ITEM_BYTES.format(r='NEW.')})"
    f" ON CONFLICT (tenant) DO UPDATE SET bytes = bytes + excluded.bytes; END",
    # diskcache never changes a row's key; only the columns counted matter
    # (not the access time every read updates).
    f"CREATE TRIGGER IF NOT EXISTS EdgeTenantBytes_update AFTER UPDATE OF size, value ON Cache"
    f" WHEN {_IS_ENTRY_ITEM.format(r='NEW.')} BEGIN"
    f" UPDATE {_QUOTA_TABLE} SET bytes = bytes + ({_ITEM_BYTES.format(r='NEW.')}) - ({_ITEM_BYTES.format(r='OLD.')})"
    f" WHERE tenant = {_TENANT_OF.format(r='NEW.')}; END",
    f"CREATE TRIGGER IF NOT EXISTS EdgeTenantBytes_delete AFTER DELETE ON Cache"
    f" WHEN {_IS_ENTRY_ITEM.format(r='OLD.')} BEGIN"
    f" UPDATE {_QUOTA_TABLE} SET bytes = bytes - ({_ITEM_BYTES.format(r='OLD.')})"
    f" WHERE tenant = {_TENANT_OF.format(r='OLD.')}; END",
)
TENANT_OLDEST_QUERY = (
    f"SELECT rowid, key, filename, access_time, {_ITEM_BYTES.format(r='')} FROM Cache"
    f" WHERE {_TENANT_OF.format(r='')} = ? ORDER BY rowid LIMIT ?"
)
EVICT_SAMPLE = 64  # a tenant's oldest-stored items among which the least recently used go first
EVICT_ROWS = 1000  # items evicted at most per put of a tenant over its quota


def _entry_key(item_key: str) -> str:
    """The entry a diskcache item belongs to: ``m\\0<key>`` or ``b\\0<key>\\0<id>``."""
    return item_key[2:] if item_key.startswith("m\0") else item_key[2:].rpartition("\0")[0]


def _ensure_quota_schema(cache: diskcache.Cache) -> None:
    """Create the accounting once per database, counting what a tier
    written before it already holds. One transaction: workers starting
    together wait for it (retry) instead of counting twice."""
    exists = f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{_QUOTA_TABLE}'"
    if cache._sql(exists).fetchone():
        return
    with cache.transact(retry=True):
        if cache._sql(exists).fetchone():
            return
        for statement in _QUOTA_SCHEMA:
            cache._sql(statement)


def _rows(sql, item_keys: list[str], columns: str = "rowid, mode, filename, value") -> dict[str, tuple]:
    """diskcache item key -> ``columns`` of those stored."""
    found = {}
    for chunk in _chunks(item_keys):
        marks = ",".join("?" * len(chunk))
        for row in sql(f"SELECT key, {columns} FROM Cache WHERE key IN ({marks}) AND raw = 1", chunk):
            found[row[0]] = row[1:]
    return found


def _delete_rows(sql, rowids: list[int]) -> None:
    for chunk in _chunks(rowids):
        sql(f"DELETE FROM Cache WHERE rowid IN ({','.join('?' * len(chunk))})", chunk)


def _chunks(items: list, size: int = 500) -> list[list]:
    """SQLite takes a bounded number of parameters per statement."""
    return [items[i : i + size] for i in range(0, len(items), size)]


class DiskWriter:
    def __init__(self, store: DiskStore, key: str, follower: Follower | None = None) -> None:
        self._store = store
        self._key = key
        self._follower = follower
        self._body_key = f"b\0{key}\0{uuid.uuid4().hex}"
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=8)
        self._size = 0
        self._task: asyncio.Future | None = None
        self._closed = False
        self._limit = store.quota_of(key)

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = _QueueReader(loop, self._queue, self._follower)
        self._task = loop.run_in_executor(
            self._store.executor, functools.partial(self._store.cache.set, self._body_key, reader, read=True)
        )
        self._task.add_done_callback(self._ended)

    def _ended(self, _task) -> None:
        # Nothing takes from the queue any more: a write waiting for room
        # must not wait forever when the thread failed (a full disk).
        while not self._queue.empty():
            self._queue.get_nowait()

    async def write(self, chunk: bytes) -> None:
        """Raises OSError when the writing thread failed; ``commit`` then
        raises its error."""
        if self._closed:
            return
        self._size += len(chunk)
        if self._limit is not None and self._size > self._limit:
            # Larger than its tenant's whole quota: stored, it would only
            # push out everything else of the tenant. Not written on.
            await self.abort()
            return
        if self._task is None:
            self._start()
        elif self._task.done():
            raise OSError("writing the body to the disk tier failed")
        await self._queue.put(bytes(chunk))

    async def commit(self, meta: Meta) -> None:
        if self._closed:
            return  # refused by the quota (write), or aborted
        if self._task is None:
            self._start()
        await self._queue.put(_END)
        self._closed = True
        await self._task
        meta.size = self._size
        meta.extra["body"] = self._body_key
        await self._store._set_meta(self._key, meta, streamed=True)

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(_Aborted, Exception):
            await self._task


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
            disk=_Disk,
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
        _ensure_quota_schema(self.cache)
        self._tags_path = str(Path(path) / TAGS_DB)
        self._tags_local = threading.local()
        self._tags_cons: list[sqlite3.Connection] = []
        self._tags_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._sweep_after: tuple[str, str] | None = None
        self._tagged_puts = 0
        con = self._tags_con()
        con.execute("PRAGMA journal_mode=WAL")
        for statement in _TAGS_SCHEMA:
            con.execute(statement)

    async def _run(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def get(self, key: str) -> Hit | None:
        return await self._run(self._get_sync, key)

    def _get_sync(self, key: str) -> Hit | None:
        raw = self.cache.get(_meta_key(key))
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
                if self.cache.get(_meta_key(key)) == raw:
                    self.cache.delete(_meta_key(key))
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
        meta.extra["body"] = body_key = f"b\0{key}\0{uuid.uuid4().hex}"
        if len(body) < self.cache._disk.min_file_size:
            # Kept in the table: written in the transaction of the metadata
            # (one commit, not two), as no file is written under the lock.
            self._set_meta_sync(key, meta, body=body)
            return
        self.cache.set(body_key, body)
        self._set_meta_sync(key, meta)

    async def _set_meta(self, key: str, meta: Meta, streamed: bool = False) -> None:
        await self._run(self._set_meta_sync, key, meta, streamed)

    def _set_meta_sync(self, key: str, meta: Meta, streamed: bool = False, body: bytes | None = None) -> None:
        """Commit ``meta``; its body is stored already, or is ``body`` (small:
        then stored in the same transaction)."""
        mk = _meta_key(key)
        body_key = meta.extra.get("body")
        ver = _version(body_key)
        tags = meta.extra.get("tags") if ver else None
        if tags:
            # Before the entry: a committed entry always has its rows.
            self._tags_write("INSERT OR IGNORE INTO tags (tag, key, ver) VALUES (?, ?, ?)", [(t, key, ver) for t in tags])
        verdict = Admit.KEEP
        old = None
        tenant = key.partition(SEP)[0]
        quota = self.quota(tenant) if self.quota is not None else None
        over = False
        # One transaction for the decision and the write: a purge's deletes
        # (also transactions) run wholly before it, and then its barrier is
        # seen here, or wholly after it, and then they remove this entry.
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
                row = _rows(self.cache._sql, [mk]).get(mk)
                old = self.cache._disk.fetch(*row[1:], False) if row is not None else None
                self.cache.set(mk, meta.dumps())
                # Read here, where it costs no lock of its own.
                over = quota is not None and self.tenant_bytes_sync(tenant) > quota
        if verdict == Admit.DROP:
            # Fetched before a purge that covers it: never becomes visible.
            if body_key and body is None:
                self.cache.delete(body_key)
            if tags:
                self._untag_sync([(key, ver)])
            return
        if old is not None:
            self._forget(key, old, keep_body=body_key)
        if over:
            self._fit_quota_sync(tenant, quota)
        if tags:
            # Eviction leaves rows behind: sweep SWEEP_STEP versions every
            # SWEEP_EVERY tagged puts, faster than puts can leave stale ones.
            self._tagged_puts += 1
            if self._tagged_puts % SWEEP_EVERY == 0:
                self._sweep_tags()

    async def update(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        return await self._run(self._update_sync, key, meta, expected)

    def _update_sync(self, key: str, meta: Meta, expected: float | None = None) -> bool:
        """Rewrite only the metadata item of a stored entry (RFC 9111 §4.3.4):
        the body item and its key stay, so nothing is copied or deleted (unlike
        ``_set_meta_sync``, which retires the replaced entry's body)."""
        mk = _meta_key(key)
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
                    self._untag_sync([(key, _version(body_key))])

    def writer(self, key: str, follower: Follower | None = None) -> DiskWriter:
        return DiskWriter(self, key, follower)

    async def delete(self, key: str, reason: Removal) -> bool:
        return await self._run(self._delete_sync, key)

    def _delete_sync(self, key: str) -> bool:
        raw = self.cache.pop(_meta_key(key))
        if raw is None:
            return False
        self._forget(key, raw)
        return True

    @property
    def bytes_used(self) -> int:
        return int(self.cache.volume())

    # ------------------------------------------------------------------ quotas

    def quota_of(self, key: str) -> int | None:
        """The quota of the tenant of ``key`` (None: none)."""
        return self.quota(key.partition(SEP)[0]) if self.quota is not None else None

    def tenant_bytes_sync(self, tenant: str) -> int:
        """The bytes ``tenant`` holds in this tier (as the quota counts them)."""
        row = self.cache._sql(f"SELECT bytes FROM {_QUOTA_TABLE} WHERE tenant = ?", (tenant.encode(),)).fetchone()
        return int(row[0]) if row else 0

    def _fit_quota_sync(self, tenant: str, quota: int) -> int:
        """Evict ``tenant``'s entries while it holds more than ``quota``:
        among its EVICT_SAMPLE oldest-stored items the least recently used
        go first, so an entry still read outlives a flood of new ones. At
        most EVICT_ROWS items per call: a lowered quota is reached over the
        tenant's next puts, and each put's work stays bounded. Returns the
        items removed."""
        cache = self.cache
        files: list[str | None] = []
        untag: list[tuple[str, str]] = []
        with cache.transact():
            sql = cache._sql
            while len(files) < EVICT_ROWS:
                # Read again each round: another worker may have evicted.
                excess = self.tenant_bytes_sync(tenant) - quota
                if excess <= 0:
                    break
                sample = sql(TENANT_OLDEST_QUERY, (tenant.encode(), EVICT_SAMPLE)).fetchall()
                if not sample:
                    break
                sample.sort(key=lambda row: row[3])
                picked: dict[str, tuple[int, str | None]] = {}
                freed = 0
                for rowid, item_key, filename, _, nbytes in sample:
                    if freed >= excess:
                        break
                    picked[item_key] = (rowid, filename)
                    freed += nbytes
                drop = self._whole_entries(sql, picked, untag)
                _delete_rows(sql, list(drop))
                files.extend(drop.values())
        for filename in files:
            if filename is not None:
                cache._disk.remove(filename)
        self._untag_sync(untag)
        return len(files)

    def _whole_entries(self, sql, items: dict[str, tuple[int, str | None]], untag: list) -> dict[int, str | None]:
        """The rows (rowid -> filename) that go with diskcache ``items`` (key
        -> (rowid, filename)) for whole entries to go: a metadata item takes
        its body, a body the metadata naming it. Adds their tag rows to
        ``untag``."""
        cache = self.cache
        drop = dict(items.values())
        bodies: list[str] = []
        for mk, (rowid, mode, filename, value) in _rows(sql, list(dict.fromkeys(_meta_key(_entry_key(k)) for k in items))).items():
            try:
                meta = Meta.loads(cache._disk.fetch(mode, filename, value, False))
            except Exception:
                meta = None  # corrupt: goes with its body
            body_key = meta.extra.get("body") if meta is not None else None
            if mk in items or body_key in items or meta is None:
                drop[rowid] = filename
                if body_key:
                    bodies.append(body_key)
                    if meta.extra.get("tags"):
                        untag.append((mk[2:], _version(body_key)))
        for rowid, filename in _rows(sql, [b for b in bodies if b not in items], "rowid, filename").values():
            drop[rowid] = filename
        return drop

    async def close(self) -> None:
        self.cache.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self._tags_lock:
            cons, self._tags_cons = self._tags_cons, []
        for con in cons:
            with contextlib.suppress(Exception):
                con.close()

    async def run(self, fn, *args, **kwargs):
        """Run ``fn`` in this tier's executor (purges: never on the event loop)."""
        return await self._run(fn, *args, **kwargs)

    @contextlib.contextmanager
    def bulk(self):
        """Many writes of this thread as one transaction on each database
        (bulk loads, benchmarks): ``with disk.bulk(): disk._put_sync(...)``.
        Other workers' writes wait until it ends, so keep it short."""
        con = self._tags_con()
        con.execute("BEGIN IMMEDIATE")
        try:
            with self.cache.transact():
                yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # ------------------------------------------------------------------- tags

    def _tags_con(self) -> sqlite3.Connection:
        """This thread's connection to tags.db (SQLite connections are per
        thread; a forked process opens its own)."""
        local = self._tags_local
        con = getattr(local, "con", None)
        if con is None or local.pid != os.getpid():
            con = sqlite3.connect(self._tags_path, timeout=10, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA synchronous=NORMAL")
            local.con, local.pid = con, os.getpid()
            with self._tags_lock:
                self._tags_cons.append(con)
        return con

    def _tags_write(self, statement: str, rows: list[tuple]) -> None:
        con = self._tags_con()
        if con.in_transaction:  # inside bulk()
            con.executemany(statement, rows)
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(statement, rows)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _untag_sync(self, versions: list[tuple[str, str]]) -> None:
        """Delete the tag rows of these (key, ver) entry versions."""
        if versions:
            self._tags_write("DELETE FROM tags WHERE key = ? AND ver = ?", versions)

    def tagged_sync(self, lo: str, hi: str, tag: str) -> list[tuple[str, str]]:
        """(key, ver) of the rows for ``tag`` with a key in ``[lo, hi)`` (the
        tenant's range): one seek on the primary key (tag, key, ver)."""
        rows = self._tags_con().execute(
            "SELECT key, ver FROM tags WHERE tag = ? AND key >= ? AND key < ?", (tag, lo, hi)
        )
        return [(k, v) for k, v in rows]

    def prune_tags_sync(self, after: tuple[str, str] | None = None, limit: int = 1000) -> tuple[tuple[str, str] | None, int]:
        """Remove the stale tag rows (left by eviction) among the next
        ``limit`` entry versions of tags.db, walking its key index from
        ``after``. Returns where to go on (None: the end was reached) and
        how many versions were stale. Puts call it a little at a time
        (``_sweep_tags``), so tags.db stays near the size of what is stored."""
        con = self._tags_con()
        if after is None:
            rows = con.execute("SELECT DISTINCT key, ver FROM tags ORDER BY key, ver LIMIT ?", (limit,)).fetchall()
        else:
            rows = con.execute(
                "SELECT DISTINCT key, ver FROM tags WHERE (key, ver) > (?, ?) ORDER BY key, ver LIMIT ?", (*after, limit)
            ).fetchall()
        current = self._versions_sync([key for key, _ in rows])
        stale = [(key, ver) for key, ver in rows if current.get(key) != ver]
        self._untag_sync(stale)
        return (tuple(rows[-1]) if len(rows) == limit else None), len(stale)

    def _versions_sync(self, keys: list[str]) -> dict[str, str]:
        """key -> version of the stored entries among ``keys``, read without
        touching their LRU access time (a sweep must not keep them alive)."""
        cache = self.cache
        found: dict[str, str] = {}
        for chunk in _chunks([_meta_key(k) for k in dict.fromkeys(keys)]):
            marks = ",".join("?" * len(chunk))
            for mk, mode, filename, value in cache._sql(
                f"SELECT key, mode, filename, value FROM Cache WHERE key IN ({marks}) AND raw = 1", chunk
            ):
                with contextlib.suppress(Exception):
                    found[mk[2:]] = _version(Meta.loads(cache._disk.fetch(mode, filename, value, False)).extra.get("body"))
        return found

    def _sweep_tags(self) -> None:
        """One step of the background sweep of stale tag rows; at most one
        thread of this process at a time, never failing a put."""
        if not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._sweep_after, _ = self.prune_tags_sync(self._sweep_after, SWEEP_STEP)
        except Exception:
            log.warning("tag index sweep failed; retried later", exc_info=True)
        finally:
            self._sweep_lock.release()

    # -------------------------------------------------------------- purge index

    def range_keys_sync(self, lo: str, hi: str, after: str | None = None, limit: int = 1000) -> list[str]:
        """Entry keys in ``[lo, hi)`` (or ``(after, hi)``), in order, at most
        ``limit``: a range over diskcache's unique index on (key, raw)."""
        sql = self.cache._sql
        if after is None:
            rows = sql("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key LIMIT ?", (_meta_key(lo), _meta_key(hi), limit))
        else:
            rows = sql("SELECT key FROM Cache WHERE key > ? AND key < ? ORDER BY key LIMIT ?", (_meta_key(after), _meta_key(hi), limit))
        return [k[2:] for (k,) in rows]

    def hosts_sync(self, tenant: str, limit: int | None = None) -> list[str]:
        """The hosts ``tenant`` has entries for (the first ``limit``), from the
        index alone: a skip scan, one index seek per host, whatever the
        number of entries."""
        sql = self.cache._sql
        prefix = _meta_key(tenant + "\n")
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

        A few statements per batch rather than diskcache's per-item calls
        (several statements each): rows are read and deleted by key and rowid
        on its schema, ``Cache(rowid, key, raw, ..., mode, filename, value)``;
        its triggers keep the count and size, files go after the commit.
        """
        cache = self.cache
        want: dict[str, set[str] | None] = {}
        for key, ver in items:
            if ver is None:
                want[key] = None
            else:
                want.setdefault(key, set()).add(ver)  # type: ignore[union-attr]
        affected: list[str] = []
        untag: list[tuple[str, str]] = []
        files: list[str] = []
        with cache.transact():
            sql = cache._sql
            rows = _rows(sql, [_meta_key(k) for k in want])
            drop: list[int] = []
            bodies: list[str] = []
            for key, vers in want.items():
                row = rows.get(_meta_key(key))
                if row is None:
                    untag.extend((key, v) for v in vers or ())
                    continue
                rowid, mode, filename, value = row
                try:
                    meta = Meta.loads(cache._disk.fetch(mode, filename, value, False))
                except Exception:  # corrupt: goes whatever the purge
                    drop.append(rowid)
                    files.append(filename)
                    continue
                body_key = meta.extra.get("body")
                ver = _version(body_key)
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
                            cache.set(_meta_key(key), data)
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
            for rowid, filename in _rows(sql, bodies, "rowid, filename").values():
                drop.append(rowid)
                files.append(filename)
            _delete_rows(sql, drop)
        for filename in files:
            if filename is not None:
                cache._disk.remove(filename)
        self._untag_sync(untag)
        return affected
