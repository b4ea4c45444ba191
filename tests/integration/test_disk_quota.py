"""Per-tenant quotas of the disk tier: a tenant flooding the tier with
distinct keys pushes out its own least recently used entries, never other
tenants', and the bytes counted per tenant stay true through overwrites,
deletes, purges, evictions, several processes and restarts."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from edge.cache.disk import DiskStore
from edge.cache.disk_quota import TENANT_OLDEST_QUERY
from edge.cache.key import KeyOptions, primary_key
from edge.cache.memory import MemoryStore
from edge.cache.purge import PurgeSpec, Target
from edge.cache.purger import Purger
from edge.cache.store import Meta, Removal
from edge.cache.tiered import TieredStore

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture
async def open_disk(tmp_path):
    """``open_disk(max_bytes, quota)``: the disk tier in ``tmp_path/d`` (the
    same directory each time, as a restarted node opens it), closed at the end."""
    opened: list[DiskStore] = []

    def open_(max_bytes: int = 100 * MiB, quota: dict[str, int] | None = None) -> DiskStore:
        disk = DiskStore(tmp_path / "d", max_bytes)
        disk.quota = quota.get if quota is not None else None
        opened.append(disk)
        return disk

    yield open_
    for disk in opened:
        await disk.close()


def _key(tenant: str, path: str, query: str = "") -> str:
    return primary_key(tenant, f"{tenant}.example", path, query, KeyOptions(), {}, {})


def _meta(tags: list[str] | None = None) -> Meta:
    now = time.time()
    return Meta(200, (("Content-Type", "text/plain"),), now, now, 0.0, 600.0, extra={"tags": tags} if tags else {})


def _truth(disk: DiskStore, tenant: str) -> int:
    """What ``tenant`` holds, summed item by item in Python (not by the
    triggers under test): file size or in-table value, plus the key."""
    total = 0
    for key, size, value in disk.cache._sql("SELECT key, size, value FROM Cache WHERE raw = 1"):
        if key[2:].partition("\n")[0] == tenant and "\n" in key:
            total += size + (len(value) if value is not None else 0) + len(key.encode())
    return total


def _stored(disk: DiskStore, key: str) -> bool:
    return disk.cache.get("m\0" + key) is not None


async def _body(disk: DiskStore, key: str) -> bytes | None:
    hit = await disk.get(key)
    return None if hit is None else await disk.read_all(hit)


async def test_a_flooding_tenant_evicts_its_own_oldest_entries_and_no_other_tenants(open_disk):
    """The tier is far smaller than the flood: without a per-tenant cap its
    LRU would push out the quiet tenant's older entries first."""
    quota = 1 * MiB
    disk = open_disk(6 * MiB, {"flood": quota})
    quiet: dict[str, bytes] = {}
    for i in range(30):  # in-table bodies and bodies in files
        quiet[_key("quiet", f"/asset/{i}")] = body = os.urandom(40 * KiB if i % 2 else 1 * KiB)
        await disk.put(_key("quiet", f"/asset/{i}"), _meta(), body)
    flood = [_key("flood", "/search", f"q={i}") for i in range(400)]
    most = 0
    for i, key in enumerate(flood):
        await disk.put(key, _meta(), os.urandom(40 * KiB if i % 3 == 0 else 2 * KiB))
        most = max(most, disk.tenant_bytes_sync("flood"))

    for key, body in quiet.items():
        assert await _body(disk, key) == body, "a quiet tenant's entry was evicted by another tenant's flood"
    assert most <= quota, "over its quota after a put"
    kept = [k for k in flood if _stored(disk, k)]
    assert flood[-5:] == kept[-5:], "the flooding tenant's newest entries must stay"
    assert not any(_stored(disk, k) for k in flood[:100]), "its oldest entries go first"
    assert quota - 50 * KiB < disk.tenant_bytes_sync("flood") <= quota  # evicts no more than it must
    assert disk.tenant_bytes_sync("flood") == _truth(disk, "flood")
    assert disk.tenant_bytes_sync("quiet") == _truth(disk, "quiet")


async def test_eviction_follows_use_not_age(open_disk):
    """Least recently used: an old entry read again outlives newer ones."""
    disk = open_disk(quota={"a": 200 * KiB})
    keys = [_key("a", f"/p/{i}") for i in range(8)]
    for key in keys:
        await disk.put(key, _meta(), b"x" * (20 * KiB))
    assert await _body(disk, keys[0]) is not None  # read: now the most recently used
    for i in range(8, 14):
        await disk.put(_key("a", f"/p/{i}"), _meta(), b"x" * (20 * KiB))
    assert _stored(disk, keys[0])
    assert not _stored(disk, keys[1])


async def test_a_tenants_oldest_entries_are_found_by_an_index_not_a_scan(open_disk):
    """Eviction reads a tenant's oldest items at every put over its quota: on
    a tier of millions of entries that must be an index search, sorted by
    the index itself."""
    disk = open_disk()
    plan = [row[-1] for row in disk.cache._sql("EXPLAIN QUERY PLAN " + TENANT_OLDEST_QUERY, (b"a", 10))]
    assert plan == ["SEARCH Cache USING INDEX EdgeTenantItems (<expr>=?)"]


async def test_an_object_larger_than_the_quota_is_not_stored_and_evicts_nothing(open_disk, tmp_path):
    disk = open_disk(quota={"a": 300 * KiB})
    small = [_key("a", f"/s/{i}") for i in range(5)]
    for key in small:
        await disk.put(key, _meta(), b"s" * (20 * KiB))
    await disk.put(_key("a", "/big-put"), _meta(), b"b" * (400 * KiB))
    writer = disk.writer(_key("a", "/big-stream"))
    for _ in range(8):
        await writer.write(b"b" * (64 * KiB))
    await writer.commit(_meta())
    assert not _stored(disk, _key("a", "/big-put"))
    assert not _stored(disk, _key("a", "/big-stream"))
    assert all(_stored(disk, k) for k in small)
    assert disk.tenant_bytes_sync("a") == _truth(disk, "a")
    assert [f for _, _, fs in os.walk(tmp_path / "d" / "partial") for f in fs] == []


async def test_counts_stay_true_through_overwrite_update_delete_and_purges(open_disk):
    disk = open_disk()
    purger = Purger(TieredStore(MemoryStore(8 * MiB, 1 * MiB), disk))

    def check() -> None:
        for tenant in ("a", "b"):
            assert disk.tenant_bytes_sync(tenant) == _truth(disk, tenant), tenant

    await disk.put(_key("a", "/x"), _meta(), b"1" * 100)
    await disk.put(_key("a", "/y"), _meta(["t1"]), b"2" * (50 * KiB))
    await disk.put(_key("a", "/z"), _meta(["t2"]), b"3" * (2 * KiB))
    await disk.put(_key("b", "/x"), _meta(), b"4" * (3 * KiB))
    check()
    await disk.put(_key("a", "/x"), _meta(), b"5" * (60 * KiB))  # in the table -> a file
    await disk.put(_key("a", "/y"), _meta(["t1"]), b"6" * 10)  # a file -> in the table
    check()
    validated = _meta(["t2"])
    validated.headers += (("X-Validated", "1" * 500),)  # RFC 9111 §4.3.4: new metadata, same body
    assert await disk.update(_key("a", "/z"), validated)
    check()
    assert await disk.delete(_key("a", "/x"), Removal.INVALIDATION)
    check()
    await purger.apply(PurgeSpec("a", soft=True, urls=(Target("a.example", "/z"),)))
    check()
    await purger.apply(PurgeSpec("a", tags=("t1",)))
    assert not _stored(disk, _key("a", "/y"))
    check()
    await purger.apply(PurgeSpec("a", all=True))
    check()
    assert disk.tenant_bytes_sync("a") == 0
    assert disk.tenant_bytes_sync("b") > 3 * KiB


async def test_counts_survive_a_restart_and_an_older_tier_is_counted_once(open_disk):
    disk = open_disk()
    for i in range(20):
        await disk.put(_key("a" if i % 2 else "b", f"/p/{i}"), _meta(), os.urandom((i + 1) * 3 * KiB))
    counted = disk.tenant_bytes_sync("a"), disk.tenant_bytes_sync("b")
    await disk.close()

    disk = open_disk()  # a restart
    assert (disk.tenant_bytes_sync("a"), disk.tenant_bytes_sync("b")) == counted == (_truth(disk, "a"), _truth(disk, "b"))
    # A tier written before the counting existed: counted when first opened.
    with disk.cache.transact():
        for statement in (
            "DROP TRIGGER EdgeTenantBytes_insert", "DROP TRIGGER EdgeTenantBytes_update",
            "DROP TRIGGER EdgeTenantBytes_delete", "DROP INDEX EdgeTenantItems", "DROP TABLE EdgeTenantBytes",
        ):
            disk.cache._sql(statement)
    await disk.put(_key("a", "/before"), _meta(), b"z" * (5 * KiB))
    await disk.close()

    disk = open_disk(quota={"a": 40 * KiB})
    assert disk.tenant_bytes_sync("a") == _truth(disk, "a") > 40 * KiB
    await disk.put(_key("a", "/after"), _meta(), b"y" * KiB)  # evicts down to the quota
    assert disk.tenant_bytes_sync("a") == _truth(disk, "a") <= 40 * KiB
    assert disk.tenant_bytes_sync("b") == _truth(disk, "b") == counted[1]


_WORKER = """
import asyncio, os, sys, time
from edge.cache.disk import DiskStore
from edge.cache.key import KeyOptions, primary_key
from edge.cache.store import Meta

async def main(path, name):
    disk = DiskStore(path, 100 * 2**20)
    disk.quota = {"a": 300 * 1024}.get
    now = time.time()
    for i in range(150):
        key = primary_key("a", "a.example", f"/{name}/{i}", "", KeyOptions(), {}, {})
        await disk.put(key, Meta(200, (), now, now, 0.0, 600.0), os.urandom((i % 7 + 1) * 5 * 1024))
    await disk.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_worker_processes_share_one_count(open_disk, tmp_path):
    """The node's workers are processes writing one tier at once."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER, str(tmp_path / "d"), f"w{n}", stderr=subprocess.PIPE
        )
        for n in range(3)
    ]
    for proc in procs:
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    disk = open_disk()
    assert disk.tenant_bytes_sync("a") == _truth(disk, "a")
    assert 200 * KiB < disk.tenant_bytes_sync("a") <= 300 * KiB


def _tenant(origin_url: str, host: str, **cache) -> dict:
    return {"hosts": [host], "origins": [{"url": origin_url}], "cache": cache}


async def test_a_tenant_flooding_distinct_urls_leaves_the_others_their_hits(origin, make_edge, client):
    """Through the edge: the flooding tenant mints one URL per request with a
    query string. The memory tier is small, so the quiet tenant's hits come
    from the disk tier, which is far smaller than the flood."""
    page = os.urandom(20 * KiB)
    origin.respond("/page", page, headers={"Cache-Control": "max-age=600"})
    origin.respond("/search", os.urandom(24 * KiB), headers={"Cache-Control": "max-age=600"})
    edge = await make_edge(
        policies={
            "quiet": _tenant(origin.url, "quiet.example"),
            "flood": _tenant(origin.url, "flood.example", disk_quota="256KiB"),
        },
        cache={"memory_size": 256 * KiB, "memory_max_object": 64 * KiB, "disk_size": 3 * MiB},
    )
    quiet = [f"/page?v={i}" for i in range(20)]
    for path in quiet:
        async with client.get(edge.url + path, headers={"Host": "quiet.example"}) as r:
            assert r.status == 200 and await r.read() == page
    await edge.store.drain()

    for i in range(250):
        async with client.get(edge.url + f"/search?q={i}", headers={"Host": "flood.example"}) as r:
            assert r.status == 200
            await r.read()
    await edge.store.drain()

    served_before = origin.hits["/page"]
    for path in quiet:
        async with client.get(edge.url + path, headers={"Host": "quiet.example"}) as r:
            assert await r.read() == page
            assert "hit" in r.headers["Cache-Status"], f"{path}: {r.headers['Cache-Status']}"
    assert origin.hits["/page"] == served_before
    async with client.get(edge.url + "/search?q=249", headers={"Host": "flood.example"}) as r:
        assert "hit" in r.headers["Cache-Status"], "the flooding tenant keeps its newest entries"
    assert edge.store.disk.tenant_bytes_sync("flood") <= 256 * KiB
