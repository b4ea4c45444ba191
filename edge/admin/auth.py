"""Admin authentication: bearer tokens known only by their SHA-256, and
counters of failed attempts per client address and per presented token,
shared by the workers of a node.

No aiohttp: the routes in ``app.py`` apply it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import math
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge.config import OPERATOR, AdminToken

log = logging.getLogger("edge.admin")

# A token longer than this is not one we issued; hashing megabytes per
# request would be a cheap way to burn CPU.
MAX_TOKEN_LENGTH = 512
# A token short enough to guess is refused at start (16 of these characters
# carry about 96 bits when random; `edge token new` makes 256).
MIN_TOKEN_LENGTH = 16
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")


def token_hash(token: str) -> str:
    """What goes into the configuration for ``token``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_from_env(value: str) -> AdminToken:
    """``EDGE_ADMIN_TOKEN``: an operator token given in plain text, kept as its hash."""
    return AdminToken(hashlib.sha256(value.strip().encode()).digest(), OPERATOR)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id (never the token) and its tenant scope."""

    token_id: str
    tenant: str  # "*" for operators

    @property
    def operator(self) -> bool:
        return self.tenant == OPERATOR

    def may(self, tenant: str) -> bool:
        return self.tenant == OPERATOR or self.tenant == tenant


class AuthFailure(Exception):
    """``reason`` is "missing", "malformed" or "unknown" (RFC 6750 §3.1 error
    codes follow); ``presented`` is the SHA-256 of an unknown token."""

    def __init__(self, reason: str, presented: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.presented = presented

    @property
    def counts(self) -> bool:
        """A guess at a token (limited), rather than a request that forgot one."""
        return self.reason != "missing"

    @property
    def challenge(self) -> str:
        if self.reason == "missing":
            return 'Bearer realm="edge-admin"'
        code = "invalid_request" if self.reason == "malformed" else "invalid_token"
        return f'Bearer realm="edge-admin", error="{code}"'


class TokenSet:
    """The configured tokens. ``check`` hashes the presented token once and
    compares it with every configured hash in constant time, without
    stopping at the first mismatch, so timing tells nothing about how many
    tokens exist or which one came close."""

    def __init__(self, tokens: Iterable[AdminToken] = ()) -> None:
        self.tokens: tuple[AdminToken, ...] = tuple(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def check(self, authorization: str | None) -> Principal:
        if authorization is None:
            raise AuthFailure("missing")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH or not TOKEN_CHARS.issuperset(token):
            raise AuthFailure("malformed")
        presented = hashlib.sha256(token.encode()).digest()
        found: AdminToken | None = None
        for candidate in self.tokens:
            # compare_digest on equal-length digests; every candidate is compared.
            if hmac.compare_digest(presented, candidate.digest) and found is None:
                found = candidate
        if found is None:
            raise AuthFailure("unknown", presented)
        return Principal(found.id, found.tenant)


MAX_KEYS = 10_000  # counters kept at most; the oldest windows are forgotten first


class FailureKeys:
    """What failures are counted against, as keyed hashes: the raw client
    address and the presented token never reach memory tables or files.
    IPv6 counts per /64, which one host usually holds whole."""

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.blake2b(secret, digest_size=32, person=b"edge-admin-auth").digest()

    def _hash(self, kind: str, value: bytes) -> str:
        return kind + hashlib.blake2b(value, key=self._key, digest_size=16).hexdigest()

    def address(self, remote: str | None) -> str:
        try:
            ip = ipaddress.ip_address((remote or "").split("%", 1)[0])
        except ValueError:
            return self._hash("a:", (remote or "-").encode())
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv6Address):
            return self._hash("a:", ipaddress.ip_network(f"{ip}/64", strict=False).network_address.packed)
        return self._hash("a:", ip.packed)

    def token(self, presented: bytes) -> str:
        return self._hash("t:", presented)


def _wait(starts: Iterable[float], window: float, now: float) -> int:
    return max(1, math.ceil(max(start + window - now for start in starts)))


class MemoryFailures:
    """Failed attempts counted in this process: right for a node with one worker.

    A fixed window per key opens at its first failure; ``limit`` failures
    in it are answered as such, the next ones with the seconds left.
    """

    def __init__(self, limit: int = 10, window: float = 60.0, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (window start, failures)

    def __len__(self) -> int:
        return len(self._keys)

    async def failed(self, keys: Sequence[str]) -> int | None:
        return self.count(keys)

    async def over(self, key: str) -> bool:
        return self.is_over(key)

    def is_over(self, key: str) -> bool:
        """Whether ``key`` is over its limit now (counts nothing)."""
        start, n = self._keys.get(key, (0.0, 0))
        return n > self.limit and self.clock() - start < self.window

    def count(self, keys: Sequence[str]) -> int | None:
        """Count one failure against each key: seconds until the window of
        every key over its limit ends, or None when none is over."""
        now = self.clock()
        over = []
        for key in keys:
            start, n = self._keys.pop(key, (now, 0))
            if now - start >= self.window:
                start, n = now, 0
            self._keys[key] = (start, n + 1)
            if n + 1 > self.limit:
                over.append(start)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return _wait(over, self.window, now) if over else None


class SharedFailures:
    """Failed attempts counted in a SQLite file that every worker of a node
    opens, so the limit holds whichever worker answers. One transaction per
    failure; successful authentications never touch it.

    The file lives in the node's run directory (mode 0700, removed when the
    node stops); the clock is CLOCK_MONOTONIC, the same in every process of
    the host. While the file fails, this worker counts alone and says so.
    """

    def __init__(self, path: Path, limit: int = 10, window: float = 60.0, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        self._fallback = MemoryFailures(limit, window, max_keys, clock)
        self._degraded = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-admin-auth")

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")  # counters need no durability
                db.execute("CREATE TABLE IF NOT EXISTS failures "
                           "(key TEXT PRIMARY KEY, start REAL NOT NULL, n INTEGER NOT NULL)")
                db.execute("CREATE INDEX IF NOT EXISTS failures_start ON failures (start)")
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def count(self, keys: Sequence[str]) -> int | None:
        """As ``MemoryFailures.count``, over every worker of the node."""
        try:
            wait = self._count(keys)
        except sqlite3.Error as exc:
            if not self._degraded:
                log.error("admin API: the shared count of failed authentications (%s) failed; this worker "
                          "counts its own until it works again: %s", self.path, exc)
                self._degraded = True
            return self._fallback.count(keys)
        if self._degraded:
            log.warning("admin API: the shared count of failed authentications works again")
            self._degraded = False
        return wait

    def _count(self, keys: Sequence[str]) -> int | None:
        db = self._connect()
        over = []
        db.execute("BEGIN IMMEDIATE")
        now = self.clock()  # after waiting for another worker's transaction
        try:
            db.execute("DELETE FROM failures WHERE start <= ?", (now - self.window,))
            for key in keys:
                db.execute("INSERT INTO failures (key, start, n) VALUES (?, ?, 1) "
                           "ON CONFLICT (key) DO UPDATE SET n = n + 1", (key, now))
                start, n = db.execute("SELECT start, n FROM failures WHERE key = ?", (key,)).fetchone()
                if n > self.limit:
                    over.append(start)
            db.execute("DELETE FROM failures WHERE key IN (SELECT key FROM failures ORDER BY start DESC "
                       "LIMIT -1 OFFSET ?)", (self.max_keys,))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return _wait(over, self.window, now) if over else None

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM failures").fetchone()[0])

    async def failed(self, keys: Sequence[str]) -> int | None:
        # A thread of its own: another worker's transaction may hold the file for a moment.
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.count, keys)

    def is_over(self, key: str) -> bool:
        """As ``MemoryFailures.is_over``, over every worker of the node."""
        try:
            row = self._connect().execute("SELECT start, n FROM failures WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return self._fallback.is_over(key)
        return row is not None and row[1] > self.limit and self.clock() - row[0] < self.window

    async def over(self, key: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.is_over, key)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None
