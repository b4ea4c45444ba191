"""How the disk tier lays out its entries as diskcache items, and reading
and deleting those items by the batch.

Each entry is two items: its metadata under ``m\\0<key>`` and its body under
``b\\0<key>\\0<id>``, where ``<id>`` (unique per write) is the entry's
version. The metadata names its body (``Meta.extra["body"]``); a Vary marker
has none. Rows are read and deleted on diskcache's schema,
``Cache(rowid, key, raw, ..., mode, filename, value)``: a few statements per
batch rather than diskcache's per-item calls (several statements each).
"""
from __future__ import annotations

import contextlib
import uuid

import diskcache

from edge.cache.store import Meta

META_PREFIX = "m\0"
BODY_PREFIX = "b\0"


def meta_key(key: str) -> str:
    return META_PREFIX + key


def new_body_key(key: str) -> str:
    """The item a new version of the body of ``key`` is written to."""
    return f"{BODY_PREFIX}{key}\0{uuid.uuid4().hex}"


def entry_key(item_key: str) -> str:
    """The entry a diskcache item belongs to: ``m\\0<key>`` or ``b\\0<key>\\0<id>``."""
    return item_key[2:] if item_key.startswith(META_PREFIX) else item_key[2:].rpartition("\0")[0]


def version(body_key: str | None) -> str:
    """The version of an entry: the unique id at the end of its body key."""
    return body_key.rpartition("\0")[2] if body_key else ""


def load_meta(cache: diskcache.Cache, mode: int, filename: str | None, value) -> Meta:
    """The metadata stored in a row's ``mode, filename, value`` (raises when corrupt)."""
    return Meta.loads(cache._disk.fetch(mode, filename, value, False))


def read_rows(sql, item_keys: list[str], columns: str = "rowid, mode, filename, value") -> dict[str, tuple]:
    """diskcache item key -> ``columns`` of those stored."""
    found = {}
    for chunk in chunks(item_keys):
        marks = ",".join("?" * len(chunk))
        for row in sql(f"SELECT key, {columns} FROM Cache WHERE key IN ({marks}) AND raw = 1", chunk):
            found[row[0]] = row[1:]
    return found


def delete_rows(sql, rowids: list[int]) -> None:
    """Delete items by rowid; diskcache's triggers keep its count and size
    (their files are the caller's to remove, after the commit)."""
    for chunk in chunks(rowids):
        sql(f"DELETE FROM Cache WHERE rowid IN ({','.join('?' * len(chunk))})", chunk)


def chunks(items: list, size: int = 500) -> list[list]:
    """SQLite takes a bounded number of parameters per statement."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def stored_versions(cache: diskcache.Cache, keys: list[str]) -> dict[str, str]:
    """key -> version of the stored entries among ``keys``, read without
    touching their LRU access time (a sweep must not keep them alive)."""
    found: dict[str, str] = {}
    for mk, (mode, filename, value) in read_rows(cache._sql, [meta_key(k) for k in dict.fromkeys(keys)],
                                            "mode, filename, value").items():
        with contextlib.suppress(Exception):
            found[mk[2:]] = version(load_meta(cache, mode, filename, value).extra.get("body"))
    return found
