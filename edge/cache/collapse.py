"""One origin fetch of a large body, read by every request that wants it
while it arrives (a tee).

Concurrent misses for one key make one origin request (edge/pipeline/
fills.py). A small body is read whole, stored, and the requests that
waited are answered from the store. A large one (no Content-Length, or more
than the pipeline reads whole) becomes a ``Fill``: the request that caused
the fetch copies the body from the origin into the store at the origin's
pace, never at a client's, and every client (its own and those of the
requests that came meanwhile) reads the body from its first byte as it
arrives, each at its own pace.

Memory. A chunk stays in memory while it is among the newest ``buffer``
bytes, or while nothing else could give it back: the store still collects
the body in memory (a body not yet known to outgrow the memory tier), or
the disk tier's writer has not reached it yet. Older bytes are read back
from the file the disk tier is writing (the very file that becomes the
stored entry), through a descriptor of the fill's own, which a rename, an
eviction or an abort does not disturb. A reader that falls behind, or never
reads, costs a file offset, not memory.

No file behind it (no disk tier, or a body that outgrew what may be
stored): a chunk leaves memory once every reader has it; beyond ``buffer``
bytes the fill waits for its slowest reader, as one client's pass-through
would, and a client that takes nothing is cut by the send deadline
(``timeouts.send``). From then on the fill admits no new reader, who could
not get the first bytes.

Waiters start only once the body is sure to be kept: its length fits what
the store collects in memory, the disk tier is writing it, or it is
complete. A body found too large to store before that releases them
(``released``) to fetch for themselves, as an uncacheable response does.

A fill that fails mid-body (the origin cuts it, times out, or sends less
than it announced) fails every reader at once: a reader that has sent
bytes cuts its connection, so no client takes a truncated body for a
complete one; one that has sent nothing may fetch for itself. A fill made
for a client stops (and stores nothing) when its last reader leaves, as a
lone client's fetch does; a background fill goes on while the body may
still be stored.
"""
from __future__ import annotations

import asyncio
import enum
import os
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

from edge.cache.store import BodyWriter, Meta

# Bytes a reader behind the memory window reads from the file at a time:
# small, since every such reader holds one read in flight.
READ_CHUNK = 64 * 1024

_held = 0  # body bytes in memory over all fills of this process


def held_bytes() -> int:
    """Body bytes the fills of this process hold in memory (a gauge)."""
    return _held


class FillBroken(Exception):
    """The fill ended before the body was complete."""


class Sink(Protocol):
    """Where the fill stores the body (edge.pipeline.storage.Sink): collected
    in memory, or streamed to ``writer`` once it has one."""

    dead: bool  # aborted (too large, or gone) or committed: takes nothing more
    writer: BodyWriter | None

    async def feed(self, chunk: bytes) -> None: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...


class State(enum.Enum):
    FILLING = "filling"
    COMPLETE = "complete"  # every byte arrived, as many as announced, and the store has it
    FAILED = "failed"


class Fill:
    """The body of one response on its way from the origin into the store,
    and the readers following it. Everything runs on the event loop; the
    disk tier's writing thread reports through ``opened`` and ``written``."""

    def __init__(self, meta: Meta, store_key: str, length: int | None, buffer: int, *, for_client: bool = True) -> None:
        self.meta = meta  # as stored: what the readers' responses are built from
        self.store_key = store_key
        self.length = length  # the announced Content-Length; None: unknown until the end
        self.released = False  # found too large to store before waiters could start
        self.state = State.FILLING
        self._buffer = buffer
        self._for_client = for_client
        self._chunks: deque[bytes] = deque()
        self._base = 0  # body offset of the first chunk in memory
        self._end = 0  # body bytes received
        self._size = 0  # bytes in _chunks
        self._fd: int | None = None
        self._visible = 0  # body bytes in the file, readable through _fd
        self._readers: set[Reader] = set()
        self._error: BaseException | None = None
        # A body of known length is kept whole: the store collects it in
        # memory (it fits) or streams it to disk from the first byte.
        self._kept = length is not None
        self._storing = True  # the store may still take the body
        self._admitting = True
        self._closed = False
        self._changed = asyncio.Event()  # replaced at every change readers wait for
        self._taken = asyncio.Event()  # a reader moved on or left: a waiting fill looks again

    @property
    def error(self) -> BaseException | None:
        """Why the fill failed; None when it stopped for want of readers."""
        return self._error

    @property
    def received(self) -> int:
        """Body bytes the origin sent so far."""
        return self._end

    # ---------------------------------------------------------------- readers

    def join(self) -> Reader | None:
        """A reader from the first byte; None when the fill can no longer
        give that (failed, stopped, or its first bytes left memory with no
        file to read them from). Close it when done."""
        if not self._admitting or self._closed or self.state is State.FAILED:
            return None
        reader = Reader(self)
        self._readers.add(reader)
        return reader

    async def ready(self) -> bool:
        """Wait until a waiter may start sending the body: True once it is
        sure to be kept; False when the fill failed or was ``released``."""
        while True:
            changed = self._changed
            if self.state is State.FAILED or self.released:
                return False
            if self._kept or self.state is State.COMPLETE:
                return True
            await changed.wait()

    def _leave(self, reader: Reader) -> None:
        if reader in self._readers:
            self._readers.discard(reader)
            self._taken.set()
            if not self._readers and self.state is not State.FILLING:
                self._close()

    def _at(self, offset: int) -> bytes:
        """The bytes in memory from ``offset`` to the end of its chunk."""
        pos = self._end
        for chunk in reversed(self._chunks):
            pos -= len(chunk)
            if pos <= offset:
                return chunk if pos == offset else chunk[offset - pos :]
        raise AssertionError("offset below the memory window")

    # ---------------------------------------------------------------- the disk tier's writer (store.Follower)

    def opened(self, fd: int) -> None:
        if self._closed or self._fd is not None:
            os.close(fd)
            return
        self._fd = fd

    def written(self, size: int) -> None:
        if self._closed or self._fd is None:
            return
        self._visible = size
        self._trim()
        self._wake()

    # ---------------------------------------------------------------- the fetch

    async def run(self, source: AsyncIterator[bytes], sink: Sink) -> None:
        """Copy the body from ``source`` (the origin) into ``sink`` (the
        store) and to the readers. A failed body fails the fill, not this
        call; cancelling it fails the fill too."""
        try:
            async for chunk in source:
                if not chunk:
                    continue
                self._append(chunk)
                if self._storing:
                    await sink.feed(chunk)
                    self._follow(sink)
                await self._pace()
                if self._pointless():
                    await sink.abort()
                    self._finish(State.FAILED)
                    return
            if self.length is not None and self._end != self.length:
                raise FillBroken(f"the origin sent {self._end} of {self.length} bytes")
            if self._storing:
                await sink.commit()
            self._finish(State.COMPLETE)
        except asyncio.CancelledError:
            await sink.abort()
            self._finish(State.FAILED, FillBroken("stopped"))
            raise
        except Exception as exc:
            await sink.abort()
            self._finish(State.FAILED, exc)

    def _follow(self, sink: Sink) -> None:
        """What the store did with the last chunk."""
        if sink.dead:
            # Too large to store: only the readers still want the rest.
            self._storing = False
            if not self._kept:
                self.released = True
                self._admitting = False
                self._wake()
        elif sink.writer is not None and not self._kept:
            self._kept = True  # on its way to disk, from the first byte
            self._wake()

    def _pointless(self) -> bool:
        """Nobody reads, and no one will need what is fetched."""
        return not self._readers and (self._for_client or not self._storing)

    async def _pace(self) -> None:
        """With nothing but memory behind the newest bytes, wait for the
        slowest reader rather than hold more than ``buffer`` bytes."""
        while not self._storing and self._readers and self._size > self._buffer:
            self._taken.clear()
            self._trim()
            if self._size <= self._buffer:
                return
            await self._taken.wait()

    def _append(self, chunk: bytes) -> None:
        global _held
        self._chunks.append(chunk)
        self._end += len(chunk)
        self._size += len(chunk)
        _held += len(chunk)
        self._trim()
        self._wake()

    def _trim(self) -> None:
        """Drop the oldest chunks beyond ``buffer`` bytes that can be had
        again from the file, or that no one can need any more."""
        global _held
        chunks = self._chunks
        while chunks and self._size > self._buffer:
            first = chunks[0]
            end = self._base + len(first)
            if end > self._visible:
                if self._storing or any(r.offset < end for r in self._readers):
                    return
                self._admitting = False  # a newcomer could not get these bytes
            chunks.popleft()
            self._base = end
            self._size -= len(first)
            _held -= len(first)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _finish(self, state: State, error: BaseException | None = None) -> None:
        self.state = state
        self._error = error
        self._storing = False
        if state is State.FAILED:
            self._admitting = False
        self._wake()
        self._taken.set()
        if not self._readers:
            self._close()

    def _close(self) -> None:
        """Forget the body: the fill is over and nobody reads it."""
        global _held
        if self._closed:
            return
        self._closed = True
        self._admitting = False
        _held -= self._size
        self._size = 0
        self._chunks.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Reader:
    """One request's view of a fill: its own offset into the body."""

    __slots__ = ("_fill", "offset")

    def __init__(self, fill: Fill) -> None:
        self._fill = fill
        self.offset = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from ``offset`` as it arrives; raises FillBroken if the
        fill fails before the end. Leaves the fill when closed."""
        fill = self._fill
        loop = asyncio.get_running_loop()
        try:
            while True:
                changed = fill._changed
                if fill.state is State.FAILED:
                    raise FillBroken("the shared fetch failed") from fill._error
                offset = self.offset
                if fill._base <= offset < fill._end:
                    data = fill._at(offset)
                elif offset < fill._visible:
                    size = min(READ_CHUNK, fill._visible - offset)
                    data = await loop.run_in_executor(None, os.pread, fill._fd, size, offset)
                    if not data:
                        raise FillBroken("the body's file is shorter than written")
                elif offset < fill._end:
                    raise FillBroken("bytes no longer held")  # never: trimming keeps what readers need
                elif fill.state is State.COMPLETE:
                    return
                else:
                    await changed.wait()
                    continue
                self.offset = offset + len(data)
                fill._taken.set()
                yield data
        finally:
            self.close()

    def close(self) -> None:
        self._fill._leave(self)
