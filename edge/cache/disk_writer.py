"""Bodies streamed into the disk tier: from the event loop to a worker
thread with back-pressure, into a file written aside and renamed into place
when complete, readable by followers while it is written.

The body is written first, straight into its final file, and the metadata
(which names the body) only after the body is complete, so a process killed
mid-write leaves at most an unreferenced body that LRU eviction reclaims,
never an entry that is served truncated.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path

import diskcache

from edge.cache.disk_items import new_body_key
from edge.cache.store import Follower, Meta

CHUNK = 256 * 1024
PARTIAL_DIR = "partial"
_END = object()


class BodyDisk(diskcache.Disk):
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


class DiskWriter:
    """One body on its way into the disk tier ``cache``, written in
    ``executor``; ``commit(key, meta)`` stores the metadata that names it
    once it is complete. ``limit``: the most its tenant may hold (None: no
    quota)."""

    def __init__(self, cache: diskcache.Cache, executor: Executor, key: str, limit: int | None,
                 commit: Callable[[str, Meta], Awaitable[None]], follower: Follower | None = None) -> None:
        self._cache = cache
        self._executor = executor
        self._key = key
        self._limit = limit
        self._commit = commit
        self._follower = follower
        self._body_key = new_body_key(key)
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=8)
        self._size = 0
        self._task: asyncio.Future | None = None
        self._closed = False

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        reader = _QueueReader(loop, self._queue, self._follower)
        self._task = loop.run_in_executor(
            self._executor, functools.partial(self._cache.set, self._body_key, reader, read=True)
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
        await self._commit(self._key, meta)

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is None:
            return
        await self._queue.put(None)
        with contextlib.suppress(_Aborted, Exception):
            await self._task
