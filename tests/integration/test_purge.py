"""Purges over real sockets (edge/cache/purge.py, purger.py): URL (every Vary variant
and key extra, both tiers), query normalisation, prefix, tag, all, soft,
path-only URLs over several hosts, and races: hits, disk reads and origin
fetches running while a purge does never bring purged content back."""
from __future__ import annotations

import asyncio
import threading
import time

import diskcache
import pytest
from aiohttp import web

from edge.cache.disk import DiskStore
from edge.cache.disk_tags import SWEEP_EVERY
from edge.cache.memory import MemoryStore
from edge.cache.purge import PurgeSpec, parse_purge
from edge.cache.purger import Purger
from edge.cache.store import Meta
from edge.cache.tiered import TieredStore
from tests.conftest import until


def tenant(origin, *hosts: str, **extra) -> dict:
    return {"hosts": list(hosts), "origins": [{"url": origin.url}], **extra}


async def purge(edge, body: dict, tenant: str = "shop", **where) -> int:
    policies = edge.node.state.policies.current
    spec = parse_purge(body, policies.get(tenant), policies.resolve)
    return await Purger(edge.store).apply(spec, **where)


async def get(client, edge, path: str, host: str = "shop.test", **headers) -> tuple[str, str, dict]:
    async with client.get(edge.url + path, headers={"Host": host, **headers}) as r:
        return await r.text(), r.headers.get("Cache-Status", ""), dict(r.headers)


def disk_keys(edge) -> list[str]:
    return sorted(k[2:] for k in edge.store.disk.cache.iterkeys() if k.startswith("m\0"))


def versioned(origin, path: str, versions: dict, **headers):
    """An origin route answering ``<path> <version>``, cacheable for 10 min."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text=f"{path} {versions[path]}",
            headers={"Cache-Control": "max-age=600", "Content-Type": "text/plain", **headers},
        )

    origin.route(path, handler)


@pytest.fixture
async def shop(origin, make_edge):
    """Tenant shop (two host names, keyed on the lang cookie) and tenant news."""
    return await make_edge(
        policies={
            "shop": tenant(origin, "shop.test", "*.shop.test", cache={"key": {"cookies": ["lang"]}}),
            "news": tenant(origin, "news.test"),
        }
    )


async def test_url_purge_removes_every_variant_and_key_extra_from_both_tiers(origin, shop, client):
    versions = {"/v": "v1", "/keep": "v1"}
    versioned(origin, "/v", versions, Vary="Accept-Language")
    versioned(origin, "/keep", versions)
    requests = [{"Accept-Language": "de"}, {"Accept-Language": "en"}, {"Accept-Language": "de", "Cookie": "lang=fr"}]
    for headers in requests:
        await get(client, shop, "/v", **headers)
    await get(client, shop, "/keep")
    assert origin.hits["/v"] == 3
    for headers in requests:
        assert "hit" in (await get(client, shop, "/v", **headers))[1]
    await shop.store.drain()
    assert len([k for k in disk_keys(shop) if "\n/v\n" in k]) == 5  # 3 variants, 2 markers (two key extras)

    versions["/v"] = "v2"
    affected = await purge(shop, {"urls": ["http://shop.test/v"]})
    assert affected == 3  # the variants, each once though held by both tiers; markers do not count
    assert not [k for k in disk_keys(shop) if "\n/v\n" in k]
    assert not [k for k in shop.store.memory.range_keys("shop\n", "shop\n\U0010ffff") if "\n/v\n" in k]
    for headers in requests:
        text, status, _ = await get(client, shop, "/v", **headers)
        assert text == "/v v2" and "miss" in status  # uri-miss, then vary-miss (new marker)
    assert origin.hits["/v"] == 6
    assert "hit" in (await get(client, shop, "/keep"))[1]


async def test_url_purge_of_another_host_or_a_longer_query_leaves_the_entry(origin, shop, client):
    versions = {"/p": "v1"}
    versioned(origin, "/p", versions)
    await get(client, shop, "/p?a=1")
    await get(client, shop, "/p?a=1&b=2")
    await get(client, shop, "/p?a=1", host="www.shop.test")
    assert await purge(shop, {"urls": ["https://shop.test/p?a=1"]}) == 1
    assert "miss" in (await get(client, shop, "/p?a=1"))[1]
    assert "hit" in (await get(client, shop, "/p?a=1&b=2"))[1]
    assert "hit" in (await get(client, shop, "/p?a=1", host="www.shop.test"))[1]


async def test_path_only_url_purges_it_on_every_host_of_the_tenant(origin, shop, client):
    versions = {"/p": "v1"}
    versioned(origin, "/p", versions)
    hosts = ["shop.test", "a.shop.test", "b.shop.test"]
    for host in hosts:
        await get(client, shop, "/p", host=host)
    await shop.store.drain()
    shop.store.memory.clear()  # the disk tier must find the hosts on its own
    assert await purge(shop, {"urls": ["/p"]}) == 3
    for host in hosts:
        assert "miss" in (await get(client, shop, "/p", host=host))[1]


async def test_query_is_normalised_like_a_request(origin, shop, client):
    versions = {"/q": "v1"}
    versioned(origin, "/q", versions)
    await get(client, shop, "/q?b=1&utm_source=news")
    assert "hit" in (await get(client, shop, "/q?gclid=x&b=1"))[1]
    versions["/q"] = "v2"
    assert await purge(shop, {"urls": ["/q?utm_campaign=y&b=1"]}) == 1
    text, status, _ = await get(client, shop, "/q?b=1")
    assert text == "/q v2" and "miss" in status


async def test_prefix_purge(origin, shop, client):
    versions = {"/static/a": "v1", "/static/b/c": "v1", "/static": "v1", "/other": "v1"}
    for path in versions:
        versioned(origin, path, versions)
        await get(client, shop, path)
    await get(client, shop, "/static/a?v=2")
    await shop.store.drain()
    assert await purge(shop, {"prefixes": ["/static/"]}) == 3
    assert [k.split("\n")[2] for k in disk_keys(shop)] == ["/other", "/static"]
    for path in ("/static/a", "/static/b/c", "/static/a?v=2"):
        assert "miss" in (await get(client, shop, path))[1]
    assert "hit" in (await get(client, shop, "/static"))[1]
    assert "hit" in (await get(client, shop, "/other"))[1]


async def test_tags_purge_and_never_reach_clients(origin, shop, client):
    versions = {"/t1": "v1", "/t2": "v1", "/t3": "v1"}
    versioned(origin, "/t1", versions, **{"Surrogate-Key": "a b", "Cache-Tag": "c"})
    versioned(origin, "/t2", versions, **{"Surrogate-Key": "b"})
    versioned(origin, "/t3", versions, **{"Cache-Tag": "c, d"})
    for path in versions:
        for _ in range(2):  # a miss and a hit: neither shows the tags
            _, _, headers = await get(client, shop, path)
            assert "Surrogate-Key" not in headers and "Cache-Tag" not in headers
    await shop.store.drain()
    stored = shop.store.memory.get_now(next(k for k in disk_keys(shop) if "/t1" in k))
    assert stored.meta.extra["tags"] == ["a", "b", "c"]
    assert not any(n.lower() in ("surrogate-key", "cache-tag") for n, _ in stored.meta.headers)

    assert await purge(shop, {"tags": ["a"]}) == 1
    assert "miss" in (await get(client, shop, "/t1"))[1]  # stored again, tags and all
    assert "hit" in (await get(client, shop, "/t2"))[1]
    await shop.store.drain()
    # The disk tier alone (a restarted worker's memory is empty): tags.db.
    shop.store.memory.clear()
    assert await purge(shop, {"tags": ["c"]}) == 2
    assert "miss" in (await get(client, shop, "/t1"))[1]
    assert "miss" in (await get(client, shop, "/t3"))[1]
    assert "hit" in (await get(client, shop, "/t2"))[1]
    assert await purge(shop, {"tags": ["nothing-has-it"]}) == 0


async def test_tag_rows_follow_their_entries(origin, shop, client):
    versions = {"/t": "v1"}
    tags = {"Surrogate-Key": "old"}

    async def handler(request):
        return web.Response(text="x", headers={"Cache-Control": "max-age=600", **tags})

    origin.route("/t", handler)
    await get(client, shop, "/t")
    await shop.store.drain()
    con = shop.store.disk.tags.connection()
    assert [r[0] for r in con.execute("SELECT tag FROM tags")] == ["old"]
    tags["Surrogate-Key"] = "new"
    await get(client, shop, "/t", **{"Cache-Control": "no-cache"})  # replaced
    await shop.store.drain()
    assert [r[0] for r in con.execute("SELECT tag FROM tags")] == ["new"]
    assert await purge(shop, {"tags": ["old"]}) == 0
    assert await purge(shop, {"tags": ["new"]}) == 1
    assert list(con.execute("SELECT * FROM tags")) == []
    assert versions  # unchanged


async def test_all_purges_one_tenant_only(origin, shop, client):
    versions = {"/a": "v1", "/b": "v1"}
    for path in versions:
        versioned(origin, path, versions)
        await get(client, shop, path)
        await get(client, shop, path, host="x.shop.test")
        await get(client, shop, path, host="news.test")
    await shop.store.drain()
    assert await purge(shop, {"all": True}) == 4
    for path in versions:
        assert "miss" in (await get(client, shop, path))[1]
        assert "hit" in (await get(client, shop, path, host="news.test"))[1]
    assert all(k.startswith(("news\n", "shop\nshop.test\n")) for k in disk_keys(shop))


async def test_soft_purge_keeps_entries_but_the_next_request_fetches_again(origin, shop, client):
    versions = {"/s": "v1", "/s2": "v1"}
    versioned(origin, "/s", versions)
    versioned(origin, "/s2", versions)
    await get(client, shop, "/s")
    await get(client, shop, "/s2")
    await shop.store.drain()
    before = (len(shop.store.memory), disk_keys(shop))
    versions["/s"] = "v2"
    assert await purge(shop, {"urls": ["/s"], "soft": True}) == 1
    assert (len(shop.store.memory), disk_keys(shop)) == before  # expired, not removed
    meta = shop.store.memory.get_now(next(k for k in before[1] if "/s\n" in k)).meta
    assert meta.lifetime <= time.time() - meta.response_time + meta.initial_age
    text, status, _ = await get(client, shop, "/s")
    assert text == "/s v2" and "fwd=stale" in status
    assert "hit" in (await get(client, shop, "/s2"))[1]
    # The disk copy was expired too, not only the memory one.
    await shop.store.drain()
    assert await purge(shop, {"urls": ["/s"], "soft": True}) == 1
    shop.store.memory.clear()
    text, status, _ = await get(client, shop, "/s")
    assert "fwd=stale" in status


async def test_sibling_worker_form_purges_memory_only(origin, shop, client):
    """What the admin API sends the other workers: the spec as JSON, applied
    with disk=False (the disk tier is shared and purged once)."""
    versions = {"/w": "v1"}
    versioned(origin, "/w", versions)
    await get(client, shop, "/w")
    await shop.store.drain()
    policies = shop.node.state.policies.current
    wire = parse_purge({"urls": ["/w"]}, policies.get("shop"), policies.resolve).to_json()
    assert await Purger(shop.store).apply(PurgeSpec.from_json(wire), disk=False) == 1
    assert len(disk_keys(shop)) == 1  # left for the worker that purges the disk


# --- races -------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["memory", "disk"])
async def test_no_request_started_after_the_purge_sees_the_old_body(origin, shop, client, tier):
    """Hits hammer the URL from several tasks while it is purged; every
    response whose request started after apply() returned is the new one.
    "disk": memory is emptied first, so the hits race disk reads and
    promotions into memory against the purge."""
    versions = {"/r": "v1"}
    versioned(origin, "/r", versions)
    await get(client, shop, "/r")
    await shop.store.drain()
    versions["/r"] = "v2"
    seen: list[tuple[float, str]] = []
    stop = False

    async def hammer():
        while not stop:
            started = time.monotonic()
            text, _, _ = await get(client, shop, "/r")
            seen.append((started, text))

    tasks = [asyncio.create_task(hammer()) for _ in range(8)]
    await until(lambda: len(seen) >= 16, "hits before the purge")
    if tier == "disk":
        shop.store.memory.clear()
        cleared = len(seen)
        await until(lambda: len(seen) >= cleared + 8, "hits racing disk reads")
    assert await purge(shop, {"urls": ["/r"]}) == 1
    done = time.monotonic()
    await until(lambda: sum(started >= done for started, _ in seen) > 20, "hits after the purge")
    stop = True
    await asyncio.gather(*tasks)
    before = [text for started, text in seen if started < done]
    after = [text for started, text in seen if started >= done]
    assert "/r v1" in before and len(after) > 20
    assert set(after) == {"/r v2"}


async def test_a_response_in_flight_during_the_purge_is_not_stored(origin, shop, client):
    release = asyncio.Event()
    body = {"text": "v1"}

    async def handler(request):
        text = body["text"]  # what the origin had when the request came
        if text == "v1":
            await release.wait()
        return web.Response(text=text, headers={"Cache-Control": "max-age=600"})

    origin.route("/slow", handler)
    first = asyncio.create_task(get(client, shop, "/slow"))
    await until(lambda: origin.hits["/slow"], "the request reached the origin")
    assert await purge(shop, {"urls": ["/slow"]}) == 0  # nothing stored yet
    body["text"] = "v2"
    release.set()
    assert (await first)[0] == "v1"  # it started before the purge
    await shop.store.drain()
    assert disk_keys(shop) == []
    text, status, _ = await get(client, shop, "/slow")
    assert text == "v2" and "miss" in status


class SiblingTransaction:
    """A sibling worker's write transaction on the shared disk tier: while it
    is open, this worker's disk commits (and lookups) wait for it."""

    def __init__(self, edge) -> None:
        self.directory = str(edge.store.disk.cache.directory)
        self.began = False
        self._held, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        cache = diskcache.Cache(self.directory)
        try:
            with cache.transact():
                self._held.set()
                self._release.wait(30)  # a bound: a failing test must not hang
        finally:
            cache.close()

    async def begin(self) -> None:
        self.began = True
        self._thread.start()
        await until(self._held.is_set, "the sibling's transaction began")

    async def end(self) -> None:
        self._release.set()
        if self.began:
            await asyncio.to_thread(self._thread.join)


def suspended_in(task: asyncio.Task, function) -> bool:
    """Whether ``task`` waits inside the coroutine function ``function``."""
    awaited = task.get_coro()
    while awaited is not None:
        if getattr(awaited, "cr_code", None) is function.__code__:
            return True
        awaited = getattr(awaited, "cr_await", None)
    return False


async def test_a_disk_write_still_queued_when_the_purge_runs_never_lands(origin, shop, client):
    """The write waits behind a sibling's transaction until the purge's
    barrier is in place, then decides, and is dropped."""
    sibling = SiblingTransaction(shop)
    versions = {"/d": "v1"}

    async def handler(request: web.Request) -> web.Response:
        if not sibling.began:
            await sibling.begin()  # after the lookup, before the store's commit
        return web.Response(text=f"/d {versions['/d']}", headers={"Cache-Control": "max-age=600"})

    origin.route("/d", handler)
    try:
        await get(client, shop, "/d")  # memory now, the disk write queued
        purging = asyncio.create_task(purge(shop, {"urls": ["/d"]}))
        await until(lambda: shop.store.barriers.tenant("shop") is not None, "the purge's barrier")
    finally:
        await sibling.end()
    assert await purging == 1
    await shop.store.drain()
    assert disk_keys(shop) == []
    versions["/d"] = "v2"
    assert (await get(client, shop, "/d"))[0] == "/d v2"


async def test_a_disk_write_that_decided_before_the_purge_never_lands_after_it(origin, shop, client):
    """The write read the barriers before the purge added its own, and
    commits once the purge looks for entries on disk: the purge waits for
    the commit (DiskStore.settle) and finds it, rather than missing it and
    leaving the old body on disk for every worker."""
    versions = {"/e": "v1"}
    versioned(origin, "/e", versions)
    disk = shop.store.disk
    verdict = disk.admit
    decided, go = threading.Event(), threading.Event()

    def decide_then_wait(key, meta, **how):
        answer = verdict(key, meta, **how)
        if not decided.is_set():
            decided.set()
            go.wait(30)  # a bound: a failing test must not hang
        return answer

    disk.admit = decide_then_wait
    try:
        await get(client, shop, "/e")
        await until(decided.is_set, "the disk write decided")
        purging = asyncio.create_task(purge(shop, {"urls": ["/e"]}))
        # Done already: the purge looked without waiting, and missed the write.
        await until(lambda: purging.done() or suspended_in(purging, DiskStore.settle), "the purge at the disk tier")
    finally:
        go.set()
        disk.admit = verdict
    assert await purging == 1
    await shop.store.drain()
    assert disk_keys(shop) == []
    versions["/e"] = "v2"
    assert (await get(client, shop, "/e"))[0] == "/e v2"


# --- the disk tier's tag index ------------------------------------------------------------


def _tagged(i: int, tags: list[str]) -> tuple[str, Meta, bytes]:
    now = time.time()
    meta = Meta(200, (("Content-Type", "text/plain"),), now, now, 0.0, 600.0, extra={"tags": tags})
    return f"t\nh\n/e{i}\n", meta, b"body"


async def test_rows_left_by_eviction_are_swept_and_never_purge_a_new_entry(tmp_path):
    disk = DiskStore(tmp_path / "c", max_bytes=1 << 30)
    try:
        for i in range(50):
            await disk.put(*_tagged(i, ["x", f"e{i}"]))
        con = disk.tags.connection()
        assert con.execute("SELECT COUNT(*) FROM tags").fetchone()[0] == 100
        # Eviction as diskcache does it: rows go behind the entries' backs.
        for i in range(0, 50, 2):
            disk.cache.delete(f"m\0t\nh\n/e{i}\n")
        # A stale row's key stored again: the new entry (new version) keeps its rows.
        await disk.put(*_tagged(0, ["y"]))
        after, stale = disk.tags.prune(limit=1000)
        assert after is None and stale == 25
        assert sorted(r[0] for r in con.execute("SELECT tag FROM tags WHERE key = ?", ("t\nh\n/e0\n",))) == ["y"]
        assert con.execute("SELECT COUNT(*) FROM tags").fetchone()[0] == 51

        # The sweep that puts drive gets there on its own.
        for i in range(1, 50, 2):
            disk.cache.delete(f"m\0t\nh\n/e{i}\n")
        for i in range(100, 100 + SWEEP_EVERY):
            await disk.put(*_tagged(i, ["z"]))
        assert con.execute("SELECT COUNT(*) FROM tags WHERE tag = 'x'").fetchone()[0] == 0
        store = TieredStore(MemoryStore(1 << 20, 1 << 16), disk)
        spec = PurgeSpec("t", tags=("y",))
        assert await Purger(store).apply(spec) == 1
    finally:
        await disk.close()


async def test_a_path_only_purge_over_too_many_cached_hosts_is_refused_before_anything_is_done(tmp_path):
    from edge.cache.purge import MAX_RANGES, PurgeError, Target

    disk = DiskStore(tmp_path / "c", max_bytes=1 << 30)
    store = TieredStore(MemoryStore(1 << 24, 1 << 16), disk)
    try:
        now = time.time()
        hosts = MAX_RANGES // 1000 + 1
        for i in range(hosts):
            await store.put(f"t\nh{i}.example\n/p0\n", Meta(200, (), now - 1, now - 1, 0.0, 600.0), b"x")
        await store.drain()
        spec = PurgeSpec("t", urls=tuple(Target(None, f"/p{i}", "") for i in range(1000)))
        for where in ({}, {"disk": False}, {"memory": False}):
            with pytest.raises(PurgeError) as info:
                await Purger(store).apply(spec, **where)
            assert info.value.errors[0]["field"] == "urls"
            assert "absolute URLs" in info.value.errors[0]["message"]
        assert not store.barriers.active and len(store.memory) == hosts and len(disk_keys_of(disk)) == hosts
        # One host fewer: within the limit, every host's entry goes, in both tiers.
        await store.delete(f"t\nh{hosts - 1}.example\n/p0\n", None)
        assert await Purger(store).apply(spec) == hosts - 1
        assert len(store.memory) == 0 and disk_keys_of(disk) == []
    finally:
        await store.close()


def disk_keys_of(disk) -> list[str]:
    return sorted(k[2:] for k in disk.cache.iterkeys() if k.startswith("m\0"))
