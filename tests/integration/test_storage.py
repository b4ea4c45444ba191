"""The two tiers behind the pipeline: what lives where, streaming, bounds,
and that a broken write never becomes a served entry."""
from __future__ import annotations

import asyncio
import hashlib
import os
import re

from aiohttp import web

from edge.cache.disk import DiskStore
from edge.cache.store import Meta, Removal
from tests.conftest import on_disk, until

MiB = 1024 * 1024


def _blob(n: int) -> bytes:
    return (hashlib.sha256(str(n).encode()).digest() * (n // 32 + 1))[:n]


async def _stream(request: web.Request, data: bytes, chunked: bool = False) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"})
    if not chunked:
        resp.content_length = len(data)
    await resp.prepare(request)
    if request.method != "HEAD":
        for i in range(0, len(data), 256 * 1024):
            await resp.write(data[i : i + 256 * 1024])
    await resp.write_eof()
    return resp


async def test_large_objects_are_streamed_from_disk_not_kept_in_memory(origin, make_edge, client):
    data = _blob(5 * MiB)
    origin.route("/big", lambda r: _stream(r, data))
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/big") as r:
        assert await r.read() == data
    async with client.get(edge.url + "/big") as r:
        assert await r.read() == data
        assert "hit" in r.headers["Cache-Status"]
        assert r.headers["Content-Length"] == str(len(data))
    assert origin.hits["/big"] == 1
    assert edge.store.memory.bytes_used < MiB


async def test_chunked_body_switches_to_disk_when_it_outgrows_memory(origin, make_edge, client):
    data = _blob(3 * MiB + 17)
    origin.route("/chunked", lambda r: _stream(r, data, chunked=True))
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/chunked") as r:
        assert await r.read() == data
    async with client.get(edge.url + "/chunked") as r:
        assert await r.read() == data and "hit" in r.headers["Cache-Status"]


async def test_without_disk_tier_large_objects_pass_through_uncached(origin, make_edge, client):
    data = _blob(2 * MiB)
    origin.route("/big", lambda r: _stream(r, data))
    edge = await make_edge(quick_origin=origin.url, disk=False)
    for _ in range(2):
        async with client.get(edge.url + "/big") as r:
            assert await r.read() == data
    assert origin.hits["/big"] == 2


async def test_tenant_max_object_size_is_enforced(origin, make_edge, client):
    data = _blob(300_000)
    origin.route("/known", lambda r: _stream(r, data))
    origin.route("/unknown", lambda r: _stream(r, data, chunked=True))
    edge = await make_edge(quick_origin=origin.url, policy={"cache": {"max_object_size": "100KiB"}})
    for path in ("/known", "/known", "/unknown", "/unknown"):
        async with client.get(edge.url + path) as r:
            assert await r.read() == data
    assert origin.hits["/known"] == 2 and origin.hits["/unknown"] == 2


async def test_small_objects_survive_a_restart_via_disk(origin, make_edge, client, tmp_path):
    origin.respond("/keep", "persisted", headers={"Cache-Control": "max-age=600"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/keep")).read()
    await edge.store.drain()
    await edge.node.stop()
    again = await make_edge(quick_origin=origin.url)
    async with client.get(again.url + "/keep") as r:
        assert await r.text() == "persisted"
        assert "hit" in r.headers["Cache-Status"]
    assert origin.hits["/keep"] == 1


async def test_memory_tier_stays_within_its_bound(origin, make_edge, client):
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=b"z" * 10_000, headers={"Cache-Control": "max-age=600"})

    for i in range(60):
        origin.route(f"/p{i}", page)
    edge = await make_edge(quick_origin=origin.url, disk=False, cache={"memory_size": 200_000, "memory_max_object": 50_000})
    for i in range(60):
        await (await client.get(edge.url + f"/p{i}")).read()
    assert edge.store.memory.bytes_used <= 200_000
    async with client.get(edge.url + "/p59") as r:
        assert "hit" in r.headers["Cache-Status"]  # most recent kept
    async with client.get(edge.url + "/p0") as r:
        assert "miss" in r.headers["Cache-Status"]  # least recent evicted


# ------------------------------------------------------------ the disk tier


def _body_files(directory) -> list[str]:
    """The body files diskcache keeps outside its SQLite index."""
    return [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs if f.endswith(".val")]


def _meta(n: int = 0) -> Meta:
    return Meta(200, (("Content-Type", "text/plain"),), 1.0, 1.0, 0.0, 60.0, n)


async def test_disk_writer_abort_leaves_no_entry_and_no_file(tmp_path):
    disk = DiskStore(tmp_path / "d", 100 * MiB)
    try:
        w = disk.writer("k")
        await w.write(b"a" * 100_000)
        await w.abort()
        assert await disk.get("k") is None
        files = _body_files(tmp_path / "d")
        assert files == []
    finally:
        await disk.close()


async def test_disk_entry_with_truncated_body_is_dropped(tmp_path):
    """A body file cut short (crash, disk trouble) is never served."""
    disk = DiskStore(tmp_path / "d", 100 * MiB)
    try:
        w = disk.writer("k")
        await w.write(b"b" * 200_000)
        await w.commit(_meta())
        hit = await disk.get("k")
        assert hit is not None and hit.meta.size == 200_000
        await hit.chunks.aclose()
        body_files = _body_files(tmp_path / "d")
        assert len(body_files) == 1
        with open(body_files[0], "r+b") as f:
            f.truncate(1000)
        assert await disk.get("k") is None
        assert await disk.get("k") is None
    finally:
        await disk.close()


async def test_disk_replace_and_delete_remove_old_bodies(tmp_path):
    disk = DiskStore(tmp_path / "d", 100 * MiB)
    try:
        await disk.put("k", _meta(), b"1" * 100_000)
        await disk.put("k", _meta(), b"2" * 100_000)
        hit = await disk.get("k")
        assert await disk.read_all(hit) == b"2" * 100_000
        files = _body_files(tmp_path / "d")
        assert len(files) == 1
        assert await disk.delete("k", Removal.INVALIDATION)
        assert await disk.get("k") is None
        files = _body_files(tmp_path / "d")
        assert files == []
    finally:
        await disk.close()


async def test_corrupt_metadata_is_a_miss_not_an_error(tmp_path):
    disk = DiskStore(tmp_path / "d", 100 * MiB)
    try:
        disk.cache.set("m\0k", b"{not json")
        assert await disk.get("k") is None
    finally:
        await disk.close()


async def test_concurrent_writers_of_one_key_leave_one_complete_entry(tmp_path):
    disk = DiskStore(tmp_path / "d", 100 * MiB)
    try:

        async def write(fill: bytes) -> None:
            w = disk.writer("k")
            for _ in range(10):
                await w.write(fill * 50_000)
                await asyncio.sleep(0)
            await w.commit(_meta())

        await asyncio.gather(write(b"x"), write(b"y"))
        body = await disk.read_all(await disk.get("k"))
        assert body in (b"x" * 500_000, b"y" * 500_000)
    finally:
        await disk.close()


async def test_head_on_a_disk_hit_sends_no_body(origin, make_edge, client):
    """RFC 9110 §9.3.2; a body after a HEAD answer would desynchronise the connection."""
    data = _blob(3 * MiB)
    origin.route("/big", lambda r: _stream(r, data))
    origin.respond("/next", "next", headers={"Cache-Control": "max-age=60"})
    edge = await make_edge(quick_origin=origin.url)
    await (await client.get(edge.url + "/big")).read()
    await until(lambda: on_disk(edge) >= 1, "the entry reached the disk tier")
    edge.store.memory.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    host = f"Host: 127.0.0.1:{edge.port}\r\n".encode()
    writer.write(b"HEAD /big HTTP/1.1\r\n" + host + b"\r\nGET /next HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % len(data) in head and b"hit" in head
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"next")


async def test_without_disk_tier_large_objects_say_too_large(origin, make_edge, client):
    data = _blob(2 * MiB)
    origin.route("/big", lambda r: _stream(r, data))
    edge = await make_edge(quick_origin=origin.url, disk=False)
    async with client.get(edge.url + "/big") as r:
        await r.read()
        assert "detail=too-large" in r.headers["Cache-Status"]


async def test_a_stalled_client_filling_a_large_object_does_not_hold_others(origin, make_edge, client):
    import socket

    data = _blob(32 * MiB)
    origin.route("/video", lambda r: _stream(r, data))
    edge = await make_edge(quick_origin=origin.url)
    # The first client asks and then stops reading: the fill goes on at the
    # origin's pace, and the next client reads along.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", edge.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /video HTTP/1.1\r\nHost: 127.0.0.1:{edge.port}\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    try:
        async with client.get(edge.url + "/video") as r:
            body = await asyncio.wait_for(r.read(), 20)
            assert body == data
            # The 32 MiB fill may take seconds on a loaded machine: ttl counts down meanwhile.
            assert re.fullmatch(r"edge; hit; ttl=(\d+); collapsed", r.headers["Cache-Status"])
            assert 500 < int(r.headers["Cache-Status"].split("ttl=")[1].split(";")[0]) <= 600
        assert origin.hits["/video"] == 1
    finally:
        writer.close()


async def test_a_disk_tier_that_cannot_write_still_serves_the_body(origin, make_edge, client):
    data = _blob(4 * MiB)
    origin.route("/big", lambda r: _stream(r, data))
    edge = await make_edge(quick_origin=origin.url)
    partial = edge.store.disk.cache.directory + "/partial"
    os.rmdir(partial)
    with open(partial, "w"):  # where bodies are written while they arrive: now unusable
        pass
    for _ in range(2):
        async with asyncio.timeout(20):  # against a hang only
            async with client.get(edge.url + "/big") as r:
                assert r.status == 200 and await r.read() == data
    assert origin.hits["/big"] == 2  # nothing was stored
