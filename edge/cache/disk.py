"""Disk tier: diskcache (SQLite index + one file per body), shared by all
worker processes of a node and surviving restarts.

Each entry is two diskcache items: the metadata under ``m\\0<key>`` and the
body under ``b\\0<key>\\0<id>``. The body is written first, straight into
its final file, and the metadata (which names the body) only after the body
is complete, so a process killed mid-write leaves at most an unreferenced
body that LRU eviction reclaims, never an entry that is served truncated.
Reads check the body's size against the metadata for the same reason.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import diskcache

from edge.cache.store import Hit, Meta, Removal

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
            size = self._write(partial, iter(functools.partial(value.read, CHUNK), b""), "xb")
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            os.rename(partial, full_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise
        return size, diskcache.core.MODE_BINARY, filename, None


PARTIAL_DIR = "partial"


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

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self._loop = loop
        self._queue = queue
        self._done = False

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


class DiskWriter:
    def __init__(self, store: DiskStore, key: str) -> None:
        self._store = store
        self._key = key
        self._body_key = f"b\0{key}\0{uuid.uuid4().hex}"
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=8)
        self._size = 0
        self._task: asyncio.Future | None = None
        self._closed = False

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = _QueueReader(loop, self._queue)
        self._task = loop.run_in_executor(
            self._store.executor, functools.partial(self._store.cache.set, self._body_key, reader, read=True)
        )

    async def write(self, chunk: bytes) -> None:
        if self._task is None:
            self._start()
        self._size += len(chunk)
        await self._queue.put(bytes(chunk))

    async def commit(self, meta: Meta) -> None:
        if self._task is None:
            self._start()
        await self._queue.put(_END)
        self._closed = True
        await self._task
        meta.size = self._size
        meta.extra["body"] = self._body_key
        await self._store._set_meta(self._key, meta)

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
        if meta.vary and not body and meta.status == 0:
            meta.extra.pop("body", None)
        else:
            body_key = f"b\0{key}\0{uuid.uuid4().hex}"
            self.cache.set(body_key, body)
            meta.size = len(body)
            meta.extra["body"] = body_key
        self._set_meta_sync(key, meta)

    async def _set_meta(self, key: str, meta: Meta) -> None:
        await self._run(self._set_meta_sync, key, meta)

    def _set_meta_sync(self, key: str, meta: Meta) -> None:
        mk = _meta_key(key)
        old = self.cache.get(mk)
        self.cache.set(mk, meta.dumps())
        if old is not None:
            self._drop_body(old)

    def _drop_body(self, raw_meta: bytes) -> None:
        with contextlib.suppress(Exception):
            body_key = Meta.loads(raw_meta).extra.get("body")
            if body_key:
                self.cache.delete(body_key)

    def writer(self, key: str) -> DiskWriter:
        return DiskWriter(self, key)

    async def delete(self, key: str, reason: Removal) -> bool:
        return await self._run(self._delete_sync, key)

    def _delete_sync(self, key: str) -> bool:
        raw = self.cache.pop(_meta_key(key))
        if raw is None:
            return False
        self._drop_body(raw)
        return True

    @property
    def bytes_used(self) -> int:
        return int(self.cache.volume())

    async def close(self) -> None:
        self.cache.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
