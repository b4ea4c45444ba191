"""The disk tier's tag index: ``tags.db`` next to diskcache's ``cache.db``,
one row ``(tag, key, ver)`` per tag of a stored entry, where ``ver`` names
the entry's body (``disk_items.version``), so a row always says which
version of an entry it belongs to.

The store writes an entry's rows before it commits the entry (a tag purge
never misses a stored entry) and deletes them with it when it is purged,
replaced or deleted. Eviction (diskcache's own SQL) leaves its rows behind:
they are harmless (a purge checks the entry's version and tags before
acting) and are removed when a tag purge meets them and by a sweep that
tagged puts advance a few rows at a time (``stored``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("edge.cache.disk")

TAGS_DB = "tags.db"
SWEEP_EVERY = 100  # tagged puts between two steps of the stale-row sweep
SWEEP_STEP = 200  # entry versions checked per step
_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS tags (tag TEXT NOT NULL, key TEXT NOT NULL, ver TEXT NOT NULL,"
        " PRIMARY KEY (tag, key, ver)) WITHOUT ROWID"
    ),
    "CREATE INDEX IF NOT EXISTS tags_key ON tags (key, ver)",
)

Version = tuple[str, str]  # (key, ver): one version of an entry


class TagIndex:
    """The tag rows of one disk tier. ``versions(keys)`` says which version
    of each of ``keys`` is stored now (the sweep's measure of stale rows).
    Thread-safe: each thread has its own connection."""

    def __init__(self, directory: str, versions: Callable[[list[str]], dict[str, str]]) -> None:
        self._path = os.path.join(directory, TAGS_DB)
        self._versions = versions
        self._local = threading.local()
        self._cons: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._sweep_after: Version | None = None
        self._tagged_puts = 0
        con = self.connection()
        con.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            con.execute(statement)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection to tags.db (SQLite connections are per
        thread; a forked process opens its own)."""
        local = self._local
        con = getattr(local, "con", None)
        if con is None or local.pid != os.getpid():
            con = sqlite3.connect(self._path, timeout=10, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA synchronous=NORMAL")
            local.con, local.pid = con, os.getpid()
            with self._lock:
                self._cons.append(con)
        return con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """This thread's writes as one transaction (other processes' wait)."""
        con = self.connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _write(self, statement: str, rows: list[tuple]) -> None:
        con = self.connection()
        if con.in_transaction:  # inside transaction()
            con.executemany(statement, rows)
            return
        with self.transaction():
            con.executemany(statement, rows)

    def add(self, key: str, ver: str, tags) -> None:
        """The rows of a version about to be committed."""
        self._write("INSERT OR IGNORE INTO tags (tag, key, ver) VALUES (?, ?, ?)", [(t, key, ver) for t in tags])

    def remove(self, versions: list[Version]) -> None:
        """Delete the tag rows of these (key, ver) entry versions."""
        if versions:
            self._write("DELETE FROM tags WHERE key = ? AND ver = ?", versions)

    def tagged(self, lo: str, hi: str, tag: str) -> list[Version]:
        """(key, ver) of the rows for ``tag`` with a key in ``[lo, hi)`` (the
        tenant's range): one seek on the primary key (tag, key, ver)."""
        rows = self.connection().execute(
            "SELECT key, ver FROM tags WHERE tag = ? AND key >= ? AND key < ?", (tag, lo, hi)
        )
        return [(k, v) for k, v in rows]

    def prune(self, after: Version | None = None, limit: int = 1000) -> tuple[Version | None, int]:
        """Remove the stale tag rows (left by eviction) among the next
        ``limit`` entry versions of tags.db, walking its key index from
        ``after``. Returns where to go on (None: the end was reached) and
        how many versions were stale. Puts call it a little at a time
        (``stored``), so tags.db stays near the size of what is stored."""
        con = self.connection()
        if after is None:
            rows = con.execute("SELECT DISTINCT key, ver FROM tags ORDER BY key, ver LIMIT ?", (limit,)).fetchall()
        else:
            rows = con.execute(
                "SELECT DISTINCT key, ver FROM tags WHERE (key, ver) > (?, ?) ORDER BY key, ver LIMIT ?", (*after, limit)
            ).fetchall()
        current = self._versions([key for key, _ in rows])
        stale = [(key, ver) for key, ver in rows if current.get(key) != ver]
        self.remove(stale)
        return (tuple(rows[-1]) if len(rows) == limit else None), len(stale)

    def stored(self) -> None:
        """A tagged entry was stored. Eviction leaves rows behind: one sweep
        step of SWEEP_STEP versions every SWEEP_EVERY tagged puts, faster
        than puts can leave stale ones."""
        self._tagged_puts += 1
        if self._tagged_puts % SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        """One step of the sweep of stale rows; at most one thread of this
        process at a time, never failing a put."""
        if not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._sweep_after, _ = self.prune(self._sweep_after, SWEEP_STEP)
        except Exception:
            log.warning("tag index sweep failed; retried later", exc_info=True)
        finally:
            self._sweep_lock.release()

    def close(self) -> None:
        with self._lock:
            cons, self._cons = self._cons, []
        for con in cons:
            with contextlib.suppress(Exception):
                con.close()
