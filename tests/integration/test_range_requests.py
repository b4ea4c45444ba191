"""Range requests (RFC 9110 §14, §13.1.5) answered from stored objects, in
memory and streamed from disk, and range misses, over real sockets."""
from __future__ import annotations

import email
import email.policy
import re

from aiohttp import web

from tests.conftest import on_disk, stored, until

BODY = bytes(range(256)) * 8  # 2048 bytes


def _origin_with_body(origin, path="/f", body=BODY, headers=None):
    async def handler(request: web.Request) -> web.StreamResponse:
        h = {"Cache-Control": "max-age=600", "ETag": '"f1"', "Content-Type": "application/octet-stream", **(headers or {})}
        return web.Response(body=body, headers=h)

    origin.route(path, handler)


async def _warm(client, url):
    async with client.get(url) as r:
        assert r.status == 200 and "stored" in r.headers["Cache-Status"]
        await r.read()


async def test_14_single_range_from_memory(origin, make_edge, client):
    _origin_with_body(origin)
    edge = await make_edge(quick_origin=origin.url)
    await _warm(client, edge.url + "/f")
    async with client.get(edge.url + "/f", headers={"Range": "bytes=10-19"}) as r:
        assert r.status == 206 and await r.read() == BODY[10:20]
        assert r.headers["Content-Range"] == "bytes 10-19/2048"
        assert r.headers["Cache-Status"].startswith("edge; hit")
    async with client.get(edge.url + "/f", headers={"Range": "bytes=-5"}) as r:
        assert r.status == 206 and await r.read() == BODY[-5:]
    async with client.get(edge.url + "/f") as r:
        assert r.headers["Accept-Ranges"] == "bytes"
    assert origin.hits["/f"] == 1


async def test_14_3_the_miss_that_stores_an_object_announces_ranges_as_its_hits_do(origin, make_edge, client):
    """The client of the miss is shown what every later hit shows: a
    stored 200 is cut into ranges by the edge, so both say Accept-Ranges."""
    origin.respond("/plain", BODY, headers={"Cache-Control": "max-age=600", "Content-Type": "application/octet-stream"})
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/plain") as miss:
        await miss.read()
    async with client.get(edge.url + "/plain") as hit:
        await hit.read()
    assert "stored" in miss.headers["Cache-Status"] and hit.headers["Cache-Status"].startswith("edge; hit")
    assert miss.headers.get("Accept-Ranges") == hit.headers.get("Accept-Ranges") == "bytes"
    # Not stored, not cut by the edge: not announced.
    origin.respond("/private", BODY, headers={"Cache-Control": "private"})
    async with client.get(edge.url + "/private") as passed:
        await passed.read()
    assert "detail=private" in passed.headers["Cache-Status"] and "Accept-Ranges" not in passed.headers


async def test_14_6_multiple_ranges_are_multipart_byteranges(origin, make_edge, client):
    _origin_with_body(origin)
    edge = await make_edge(quick_origin=origin.url)
    await _warm(client, edge.url + "/f")
    async with client.get(edge.url + "/f", headers={"Range": "bytes=0-1, 100-103"}) as r:
        assert r.status == 206
        ctype = r.headers["Content-Type"]
        assert ctype.startswith("multipart/byteranges; boundary=")
        raw = await r.read()
        assert int(r.headers["Content-Length"]) == len(raw)
    msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw, policy=email.policy.HTTP)
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in msg.iter_parts()]
    assert parts == [("bytes 0-1/2048", BODY[0:2]), ("bytes 100-103/2048", BODY[100:104])]


async def test_14_1_2_unsatisfiable_range_is_416(origin, make_edge, client):
    _origin_with_body(origin)
    edge = await make_edge(quick_origin=origin.url)
    await _warm(client, edge.url + "/f")
    async with client.get(edge.url + "/f", headers={"Range": "bytes=5000-"}) as r:
        assert r.status == 416 and r.headers["Content-Range"] == "bytes */2048"
        assert re.fullmatch(r"edge; hit; ttl=(599|600); detail=range-unsatisfiable", r.headers["Cache-Status"])
    async with client.get(edge.url + "/f", headers={"Range": "bytes=0-0"}) as r:
        assert r.status == 206 and re.fullmatch(r"edge; hit; ttl=(599|600)", r.headers["Cache-Status"])


async def test_14_2_invalid_range_is_ignored(origin, make_edge, client):
    _origin_with_body(origin)
    edge = await make_edge(quick_origin=origin.url)
    await _warm(client, edge.url + "/f")
    for value in ("bytes=abc", "items=0-1", "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 100, 2))):
        async with client.get(edge.url + "/f", headers={"Range": value}) as r:
            assert r.status == 200 and await r.read() == BODY, value


async def test_13_1_5_if_range(origin, make_edge, client):
    _origin_with_body(origin)
    edge = await make_edge(quick_origin=origin.url)
    await _warm(client, edge.url + "/f")
    async with client.get(edge.url + "/f", headers={"Range": "bytes=0-3", "If-Range": '"f1"'}) as r:
        assert r.status == 206 and await r.read() == BODY[:4]
    async with client.get(edge.url + "/f", headers={"Range": "bytes=0-3", "If-Range": '"other"'}) as r:
        assert r.status == 200 and await r.read() == BODY
    async with client.get(edge.url + "/f", headers={"Range": "bytes=0-3", "If-Range": 'W/"f1"'}) as r:
        assert r.status == 200  # a weak tag never matches


async def test_ranges_streamed_from_the_disk_tier(origin, make_edge, client):
    big = bytes(range(256)) * 4096  # 1 MiB
    _origin_with_body(origin, "/big", big)
    edge = await make_edge(quick_origin=origin.url, cache={"memory_max_object": 64 * 1024})
    await _warm(client, edge.url + "/big")
    await until(lambda: on_disk(edge) >= 1, "the entry reached the disk tier")
    async with client.get(edge.url + "/big", headers={"Range": "bytes=300000-300099"}) as r:
        assert r.status == 206 and await r.read() == big[300000:300100]
        assert r.headers["Content-Range"] == f"bytes 300000-300099/{len(big)}"
    async with client.get(edge.url + "/big", headers={"Range": "bytes=0-0,-1"}) as r:
        assert r.status == 206
        raw = await r.read()
        assert int(r.headers["Content-Length"]) == len(raw)
    assert origin.hits["/big"] == 1


async def test_range_miss_passes_the_range_and_fills_the_whole_object(origin, make_edge, client):
    seen = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Range"))
        rng = request.headers.get("Range")
        if rng == "bytes=0-9":
            return web.Response(status=206, body=BODY[:10], headers={"Content-Range": "bytes 0-9/2048", "Cache-Control": "max-age=600"})
        return web.Response(body=BODY, headers={"Cache-Control": "max-age=600"})

    origin.route("/m", handler)
    edge = await make_edge(quick_origin=origin.url)
    async with client.get(edge.url + "/m", headers={"Range": "bytes=0-9"}) as r:
        assert r.status == 206 and await r.read() == BODY[:10]
        assert "fwd=range" in r.headers["Cache-Status"]
    await until(lambda: len(seen) == 2, "the whole object was asked for")
    await until(lambda: stored(edge, "/m") is not None, "the whole object was stored")
    assert sorted(seen, key=str) == sorted(["bytes=0-9", None], key=str)
    async with client.get(edge.url + "/m", headers={"Range": "bytes=20-29"}) as r:
        assert r.status == 206 and await r.read() == BODY[20:30]
        assert r.headers["Cache-Status"].startswith("edge; hit")
    assert len(seen) == 2


async def test_a_range_miss_asks_the_origin_for_each_byte_once(origin, make_edge, client):
    """A client's range set goes to the origin canonical and bounded: overlaps
    merged, too many ranges or a broken field dropped (the origin then
    answers in full, which the client may always be given)."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        if "Range" in request.headers:
            seen.append(request.headers["Range"])
        return web.Response(body=BODY, headers={"Cache-Control": "no-store"})

    origin.route("/big", handler)
    edge = await make_edge(quick_origin=origin.url)
    cases = {
        "bytes=0-,0-,0-,0-": "bytes=0-",
        "bytes=0-99,50-150, 400-499": "bytes=0-150,400-499",
        "bytes=" + ",".join(["0-1"] * 40): None,  # more than MAX_RANGES
        "bytes=9-5": None,
    }
    for sent, forwarded in cases.items():
        seen.clear()
        async with client.get(f"{edge.url}/big", headers={"Range": sent}) as r:
            assert r.status == 200 and await r.read() == BODY
        assert seen == ([] if forwarded is None else [forwarded])
