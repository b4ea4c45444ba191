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
    def __init__(self, stream: BinaryIO | None = None, flush_interval: float = 0.5, limit: int = 512) -> None:
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._buf: list[tuple] = []
        self._limit = limit  # rows
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
        blocked: str | None = None,
        tls: str | None = None,
    ) -> None:
        """``tls``: the HTTPS connection's TLS version ("TLSv1.3"); None over plain HTTP."""
        # Only a tuple per request: formatting happens in batches at flush.
        self._buf.append((time.time(), rid, tenant, peer, method, host, path, status, size, cache, duration, blocked,
                          tls))
        if len(self._buf) >= self._limit:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        rows, self._buf = self._buf, []
        dumps = orjson.dumps
        data = b"".join(
            dumps(
                _row(t, rid, tenant, peer, method, host, path, status, size, cache, duration, blocked, tls),
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for t, rid, tenant, peer, method, host, path, status, size, cache, duration, blocked, tls in rows
        )
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


def _row(t, rid, tenant, peer, method, host, path, status, size, cache, duration, blocked, tls) -> dict:
    row = {
        "t": round(t, 3),
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
        "tls": tls or "-",
    }
    if blocked is not None:
        # The WAF rules that refused it (or would have, in log mode): a
        # request id the customer quotes leads here.
        row["waf"] = blocked
    return row
