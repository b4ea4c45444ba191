"""Compression at the edge (RFC 9110 §8.4, §12.5.3): brotli and gzip
variants made once from the stored identity response, over real sockets."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import random
import tracemalloc
import zlib

import brotli
from aiohttp import web

from edge.cache import compress as cz

TEXT = ("<p>Ein Satz, der sich oft wiederholt, damit er sich gut packen lässt.</p>\n" * 200).encode()


def _origin(origin, path="/page.html", body=TEXT, headers=None):
    async def handler(request: web.Request) -> web.StreamResponse:
        h = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "max-age=600", "ETag": '"p1"', **(headers or {})}
        return web.Response(body=body, headers=h)

    origin.route(path, handler)


async def _get(client, url, **headers):
    async with client.get(url, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def test_br_and_gzip_variants_are_made_once_and_served_from_cache(origin, make_edge, client):
    _origin(origin)
    edge = await make_edge(quick_origin=origin.url)
    status, h, body = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "gzip, deflate, br"})
    assert status == 200 and body == TEXT  # the fill itself: identity
    assert "Accept-Encoding" in h["Vary"]
    sent = origin.requests[0]["headers"]
    assert sent["Accept-Encoding"] == "br"  # the bucket, not the client's list
    for _ in range(2):
        status, h, body = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "gzip, deflate, br"})
        assert h["Content-Encoding"] == "br" and brotli.decompress(body) == TEXT
        assert h["ETag"] == '"p1-br"' and "Accept-Encoding" in h["Vary"]
        assert int(h["Content-Length"]) == len(body) < len(TEXT) // 5
        assert h["Cache-Status"].startswith("edge; hit")
    status, h, body = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "gzip"})
    assert h["Content-Encoding"] == "gzip" and gzip.decompress(body) == TEXT and h["ETag"] == '"p1-gz"'
    status, h, body = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in h and body == TEXT and h["ETag"] == '"p1"'
    assert origin.hits["/page.html"] == 1


async def test_conditional_request_on_the_compressed_variant(origin, make_edge, client):
    _origin(origin)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/page.html")
    await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "br"})
    status, h, _ = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "br", "If-None-Match": '"p1-br"'})
    assert status == 304 and h["ETag"] == '"p1-br"'
    status, _, _ = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "br", "If-None-Match": '"p1"'})
    assert status == 200  # the identity tag names another representation


async def test_never_compressed_ranges_tiny_encoded_or_no_transform(origin, make_edge, client):
    _origin(origin)
    _origin(origin, "/tiny.html", b"<p>hi</p>")
    _origin(origin, "/img.png", TEXT, {"Content-Type": "image/png"})
    _origin(origin, "/nt.html", TEXT, {"Cache-Control": "max-age=600, no-transform"})
    _origin(origin, "/enc.html", gzip.compress(TEXT), {"Content-Encoding": "gzip"})
    edge = await make_edge(quick_origin=origin.url)
    for path in ("/page.html", "/tiny.html", "/img.png", "/nt.html", "/enc.html"):
        await _get(client, edge.url + path, **{"Accept-Encoding": "gzip"})
    status, h, body = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "br", "Range": "bytes=0-9"})
    assert status == 206 and body == TEXT[:10] and "Content-Encoding" not in h
    for path in ("/tiny.html", "/img.png", "/nt.html"):
        _, h, _ = await _get(client, edge.url + path, **{"Accept-Encoding": "br"})
        assert "Content-Encoding" not in h, path
    _, h, body = await _get(client, edge.url + "/enc.html", **{"Accept-Encoding": "gzip"})
    assert h["Content-Encoding"] == "gzip" and gzip.decompress(body) == TEXT  # the origin's own, untouched


async def test_a_purge_of_the_url_removes_the_variants(origin, make_edge, client):
    from edge.cache.purge import PurgeSpec, Target
    from edge.cache.purger import Purger

    _origin(origin)
    edge = await make_edge(quick_origin=origin.url)
    await _get(client, edge.url + "/page.html")
    await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "br"})
    await Purger(edge.store).apply(PurgeSpec("default", urls=(Target(None, "/page.html", ""),)))
    _, h, _ = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "br"})
    assert h["Cache-Status"].startswith("edge; fwd=uri-miss")


async def test_large_disk_entries_are_compressed_too(origin, make_edge, client):
    big = TEXT * 20  # ~1.4 MB, past the memory tier's object limit below
    _origin(origin, "/big.js", big, {"Content-Type": "application/javascript"})
    edge = await make_edge(quick_origin=origin.url, cache={"memory_max_object": 64 * 1024})
    await _until_hit(client, edge.url + "/big.js")
    _, h, body = await _get(client, edge.url + "/big.js", **{"Accept-Encoding": "br"})
    assert h["Content-Encoding"] == "br" and brotli.decompress(body) == big


def _words(size: int, seed: int) -> bytes:
    """Text that packs about as well as a real page (not a repeated line)."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyzäöü", k=rng.randint(2, 9))) for _ in range(2000)]
    text = " ".join(rng.choices(vocabulary, k=size // 5)).encode()
    return text[:size].ljust(size, b".")


async def _until_hit(client, url: str) -> None:
    """Wait until ``url`` is stored (a streamed body is committed after its last byte went out)."""
    for _ in range(200):
        async with client.get(url, headers={"Accept-Encoding": "identity"}) as r:
            await r.read()
            if "; hit" in r.headers["Cache-Status"]:
                return
    raise AssertionError(f"{url} never became a hit")


async def _fetch_decoded(client, url: str, accept: str) -> tuple[str, str]:
    """(Content-Encoding, SHA-256 of the decoded body), decoded as it comes:
    the client holds no whole body, so that only the edge's memory is measured."""
    digest = hashlib.sha256()
    async with client.get(url, headers={"Accept-Encoding": accept}) as r:
        assert r.status == 200
        coding = r.headers.get("Content-Encoding", "identity")
        decoder = {"br": brotli.Decompressor().process, "gzip": zlib.decompressobj(31).decompress}.get(coding)
        async for chunk in r.content.iter_chunked(64 * 1024):
            digest.update(decoder(chunk) if decoder else chunk)
    return coding, digest.hexdigest()


async def test_compressions_at_once_stay_within_the_budget(origin, make_edge, client):
    """Clients asking at once for many large objects, each in a coding not
    made yet: every answer is right (compressed, or identity while the
    worker's compression budget is spent), and the worker's memory grows by
    less than the budget, not by a copy of every body."""
    size = 4 * 2**20
    base = _words(size, 1)
    bodies = {str(i): f"{i:08d}".encode() + base[8:] for i in range(6)}
    digests = {v: hashlib.sha256(b).hexdigest() for v, b in bodies.items()}

    async def handler(request: web.Request) -> web.Response:
        headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "max-age=600"}
        return web.Response(body=bodies[request.query["v"]], headers=headers)

    origin.route("/big.txt", handler)
    budget = cz.cost(size, "br") + size // 2  # one brotli compression at a time
    edge = await make_edge(quick_origin=origin.url, cache={"compress_budget": budget})
    for v in bodies:
        await _until_hit(client, f"{edge.url}/big.txt?v={v}")
    accepts = ["br", "gzip, deflate, br", "br;q=0.5, gzip", "br", "gzip", "br"]

    tracemalloc.start()
    try:
        answers = await asyncio.gather(
            *(_fetch_decoded(client, f"{edge.url}/big.txt?v={v}", a) for v, a in zip(bodies, accepts))
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [digest for _, digest in answers] == list(digests.values())
    assert peak < budget, f"{peak} bytes traced at the peak, budget {budget}"
    codings = [coding for coding, _ in answers]
    assert "identity" in codings and {"br", "gzip"} & set(codings), codings

    # Later hits compress what was served as identity meanwhile, and once.
    for v, accept in zip(bodies, accepts):
        coding, digest = await _fetch_decoded(client, f"{edge.url}/big.txt?v={v}", accept)
        assert coding == cz.accept_bucket(accept) and digest == digests[v]
    assert origin.hits["/big.txt"] == len(bodies)


async def test_a_zero_budget_serves_identity(origin, make_edge, client):
    _origin(origin)
    edge = await make_edge(quick_origin=origin.url, cache={"compress_budget": 0})
    for _ in range(3):
        status, h, body = await _get(client, edge.url + "/page.html", **{"Accept-Encoding": "br, gzip"})
        assert status == 200 and body == TEXT and "Content-Encoding" not in h
        assert "Accept-Encoding" in h["Vary"]


async def test_an_incompressible_disk_entry_is_tried_once(origin, make_edge, client, monkeypatch):
    """A disk entry is read anew on every hit: that compressing it did not pay
    must be remembered elsewhere, or every hit compresses it again."""
    noise = random.Random(7).randbytes(300_000)
    _origin(origin, "/noise.txt", noise, {"Content-Type": "text/plain"})
    edge = await make_edge(quick_origin=origin.url, cache={"memory_max_object": 64 * 1024})
    await _until_hit(client, edge.url + "/noise.txt")
    runs: list[str] = []
    encode = cz.encode

    def counted(source, coding):
        runs.append(coding)
        return encode(source, coding)

    monkeypatch.setattr(cz, "encode", counted)
    for _ in range(3):
        _, h, body = await _get(client, edge.url + "/noise.txt", **{"Accept-Encoding": "br"})
        assert "Content-Encoding" not in h and body == noise
    assert runs == ["br"]
