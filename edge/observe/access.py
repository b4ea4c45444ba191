"""Access log: one JSON line per request, anonymised, buffered.

Never logged: query strings (they carry personal data often enough),
cookies, Authorization, full client addresses.
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import BinaryIO

import orjson

from edge.observe.anon import anonymise


class AccessLog:
    def __init__(self, stream: BinaryIO | None = None, flush_interval: float = 0.5, limit: int = 64 * 1024) -> None:
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._buf: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._interval = flush_interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._flusher())

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.flush()

    def write(
        self,
        *,
        rid: str,
        tenant: str,
        peer: str | None,
        method: str,
        host: str,
        path: str,
        status: int,
        size: int,
        cache: str,
        duration: float,
    ) -> None:
        line = orjson.dumps(
            {
                "t": round(time.time(), 3),
                "id": rid,
                "tenant": tenant,
                "client": anonymise(peer),
                "method": method,
                "host": host,
                "path": path,
                "status": status,
                "bytes": size,
                "cache": cache,
                "ms": round(duration * 1000, 2),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        self._buf.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.flush()
