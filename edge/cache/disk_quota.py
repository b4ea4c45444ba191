"""Each tenant's share of the disk tier, counted in cache.db itself.

SQLite triggers on diskcache's table keep the bytes of each tenant's items
(file or in-table value, plus key) in ``EdgeTenantBytes``, in the
transaction of every write, delete and eviction, whichever process or code
path runs it; a tenant over its quota loses its own entries, the least
recently used of its oldest stored first (``fit``), so a flood of distinct
keys never pushes out other tenants' entries.
"""
from __future__ import annotations

from collections.abc import Callable

import diskcache

from edge.cache.disk_items import delete_rows, entry_key, load_meta, meta_key, read_rows, version
from edge.cache.disk_tags import Version

# An item's key is "m\0tenant\n..." or "b\0tenant\n...": the tenant is the
# bytes between the two-byte prefix and the first "\n". Keys hold NUL, so
# they are read as blobs (SQLite's text functions stop at a NUL).
_TENANT_OF = "substr(CAST({r}key AS BLOB), 3, instr(CAST({r}key AS BLOB), X'0A') - 3)"
_IS_ENTRY_ITEM = "{r}raw = 1 AND instr(CAST({r}key AS BLOB), X'0A') > 3"
# A body in a file counts its size, one in the table its length; both count
# the key (a flood of tiny entries is mostly keys and metadata).
_ITEM_BYTES = "{r}size + coalesce(length({r}value), 0) + length(CAST({r}key AS BLOB))"
QUOTA_TABLE = "EdgeTenantBytes"
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {QUOTA_TABLE} (tenant BLOB PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID",
    # A tenant's items in the order they were stored (rowid), for eviction
    # to sample its oldest. Not by access time: every read sets that, and an
    # index on it would cost every disk hit a write.
    f"CREATE INDEX IF NOT EXISTS EdgeTenantItems ON Cache ({_TENANT_OF.format(r='')})",
    f"INSERT INTO {QUOTA_TABLE} (tenant, bytes) SELECT {_TENANT_OF.format(r='')}, sum({_ITEM_BYTES.format(r='')})"
    f" FROM Cache WHERE {_IS_ENTRY_ITEM.format(r='')} GROUP BY 1",
    f"CREATE TRIGGER IF NOT EXISTS EdgeTenantBytes_insert AFTER INSERT ON Cache"
    f" WHEN {_IS_ENTRY_ITEM.format(r='NEW.')} BEGIN"
    f" INSERT INTO {QUOTA_TABLE} (tenant, bytes) VALUES ({_TENANT_OF.format(r='NEW.')}, {_ITEM_BYTES.format(r='NEW.')})"
    f" ON CONFLICT (tenant) DO UPDATE SET bytes = bytes + excluded.bytes; END",
    # diskcache never changes a row's key; only the columns counted matter
    # (not the access time every read updates).
    f"CREATE TRIGGER IF NOT EXISTS EdgeTenantBytes_update AFTER UPDATE OF size, value ON Cache"
    f" WHEN {_IS_ENTRY_ITEM.format(r='NEW.')} BEGIN"
    f" UPDATE {QUOTA_TABLE} SET bytes = bytes + ({_ITEM_BYTES.format(r='NEW.')}) - ({_ITEM_BYTES.format(r='OLD.')})"
    f" WHERE tenant = {_TENANT_OF.format(r='NEW.')}; END",
    f"CREATE TRIGGER IF NOT EXISTS EdgeTenantBytes_delete AFTER DELETE ON Cache"
    f" WHEN {_IS_ENTRY_ITEM.format(r='OLD.')} BEGIN"
    f" UPDATE {QUOTA_TABLE} SET bytes = bytes - ({_ITEM_BYTES.format(r='OLD.')})"
    f" WHERE tenant = {_TENANT_OF.format(r='OLD.')}; END",
)
TENANT_OLDEST_QUERY = (
    f"SELECT rowid, key, filename, access_time, {_ITEM_BYTES.format(r='')} FROM Cache"
    f" WHERE {_TENANT_OF.format(r='')} = ? ORDER BY rowid LIMIT ?"
)
EVICT_SAMPLE = 64  # a tenant's oldest-stored items among which the least recently used go first
EVICT_ROWS = 1000  # items evicted at most per put of a tenant over its quota


def ensure_schema(cache: diskcache.Cache) -> None:
    """Create the accounting once per database, counting what a tier
    written before it already holds. One transaction: workers starting
    together wait for it (retry) instead of counting twice."""
    exists = f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{QUOTA_TABLE}'"
    if cache._sql(exists).fetchone():
        return
    with cache.transact(retry=True):
        if cache._sql(exists).fetchone():
            return
        for statement in _SCHEMA:
            cache._sql(statement)


def tenant_bytes(cache: diskcache.Cache, tenant: str) -> int:
    """The bytes ``tenant`` holds in the tier (as the quota counts them)."""
    row = cache._sql(f"SELECT bytes FROM {QUOTA_TABLE} WHERE tenant = ?", (tenant.encode(),)).fetchone()
    return int(row[0]) if row else 0


def fit(cache: diskcache.Cache, tenant: str, quota: int, untag: Callable[[list[Version]], None]) -> int:
    """Evict ``tenant``'s entries while it holds more than ``quota``:
    among its EVICT_SAMPLE oldest-stored items the least recently used
    go first, so an entry still read outlives a flood of new ones. At
    most EVICT_ROWS items per call: a lowered quota is reached over the
    tenant's next puts, and each put's work stays bounded. ``untag`` is
    given the tagged versions that went. Returns the items removed."""
    files: list[str | None] = []
    tagged: list[Version] = []
    with cache.transact():
        sql = cache._sql
        while len(files) < EVICT_ROWS:
            # Read again each round: another worker may have evicted.
            excess = tenant_bytes(cache, tenant) - quota
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
            drop = _whole_entries(cache, picked, tagged)
            delete_rows(sql, list(drop))
            files.extend(drop.values())
    for filename in files:
        if filename is not None:
            cache._disk.remove(filename)
    untag(tagged)
    return len(files)


def _whole_entries(cache: diskcache.Cache, items: dict[str, tuple[int, str | None]],
                   tagged: list[Version]) -> dict[int, str | None]:
    """The rows (rowid -> filename) that go with diskcache ``items`` (key
    -> (rowid, filename)) for whole entries to go: a metadata item takes
    its body, a body the metadata naming it. Adds their tagged versions
    to ``tagged``."""
    sql = cache._sql
    drop = dict(items.values())
    bodies: list[str] = []
    for mk, (rowid, mode, filename, value) in read_rows(sql, list(dict.fromkeys(meta_key(entry_key(k)) for k in items))).items():
        try:
            meta = load_meta(cache, mode, filename, value)
        except Exception:
            meta = None  # corrupt: goes with its body
        body_key = meta.extra.get("body") if meta is not None else None
        if mk in items or body_key in items or meta is None:
            drop[rowid] = filename
            if body_key:
                bodies.append(body_key)
                if meta.extra.get("tags"):
                    tagged.append((mk[2:], version(body_key)))
    for rowid, filename in read_rows(sql, [b for b in bodies if b not in items], "rowid, filename").values():
        drop[rowid] = filename
    return drop
