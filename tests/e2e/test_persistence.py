"""The disk tier across restarts and crashes (``--cache-dir``)."""
from __future__ import annotations

import asyncio
import http.client
import os
import signal

import pytest
from aiohttp import web

from .support import MiB, sha256, tree_size, wait_until

SIZE = 20 * MiB
CHUNK = 64 * 1024


def _large(body: bytes, gate=None, stall_at: int = 0):
    """A cacheable large object with Content-Length, streamed in chunks;
    with ``gate`` it stops after ``stall_at`` bytes until the gate opens
    (a slow origin the test controls, without timing)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "max-age=3600", "Content-Type": "application/octet-stream"})
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            for offset in range(0, len(body), CHUNK):
                if gate is not None and offset >= stall_at:
                    await gate.wait()
                await resp.write(body[offset:offset + CHUNK])
            await resp.write_eof()
        except ConnectionError:
            pass  # the node was killed mid-download: expected in these tests
        return resp

    return handler


def test_cached_object_survives_a_restart_without_its_origin(run_edge, upstream, port, tmp_path):
    upstream.respond("/doc", "a document\n", headers={"Cache-Control": "max-age=3600", "Content-Type": "text/plain"})
    args = ("--origin", upstream.url, "--cache-dir", str(tmp_path / "cache"))

    node = run_edge(*args, port=port)
    first = node.get("/doc")
    assert first.status == 200 and "stored" in first.cache_status, first
    assert node.terminate() == 0, node.describe()
    upstream.call(upstream.stop())  # the origin is gone from now on

    node = run_edge(*args, port=port)
    again = node.get("/doc")
    assert again.status == 200, again
    assert again.body == b"a document\n", again
    assert again.cache_status.startswith("edge; hit"), again


@pytest.mark.parametrize("origin_after", ["new-body", "503"])
def test_killed_mid_download_never_serves_a_truncated_object(run_edge, upstream, port, tmp_path, origin_after):
    cache_dir = tmp_path / "cache"
    args = ("--origin", upstream.url, "--cache-dir", str(cache_dir))
    old = os.urandom(SIZE)
    gate = asyncio.Event()
    upstream.route("/big.bin", _large(old, gate, stall_at=8 * MiB))

    node = run_edge(*args, port=port)
    baseline = tree_size(cache_dir)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", "/big.bin")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Length") == str(SIZE)
        assert "stored" in resp.getheader("Cache-Status", ""), resp.getheader("Cache-Status")
        assert resp.read(4 * MiB) == old[: 4 * MiB]
        # The crash must hit while part of the body is already in the cache directory.
        wait_until(lambda: tree_size(cache_dir) - baseline >= 2 * MiB, timeout=15,
                   message=lambda: f"the node wrote no part of the body to {cache_dir}\n{node.describe()}")
        node.kill_group()  # kill -9 mid-download
        assert node.proc.returncode == -signal.SIGKILL
    finally:
        conn.close()
        upstream.call_soon(gate.set)

    new = os.urandom(SIZE)
    if origin_after == "new-body":
        upstream.route("/big.bin", _large(new))
    else:
        upstream.respond("/big.bin", "origin down\n", status=503, headers={"Content-Type": "text/plain"})

    node = run_edge(*args, port=port)
    r = node.get("/big.bin")
    assert not r.is_hit, r
    assert "fwd=uri-miss" in r.cache_status, r
    assert r.body[:CHUNK] != old[:CHUNK], "served (part of) the old, cut body"
    if origin_after == "new-body":
        assert r.status == 200, r
        assert len(r.body) == SIZE and sha256(r.body) == sha256(new), r
    else:
        assert r.status == 503, r
    assert upstream.count("/big.bin") == 2


def test_complete_large_download_is_a_hit_with_the_same_bytes_after_restart(run_edge, upstream, port, tmp_path):
    body = os.urandom(SIZE)
    upstream.route("/big.bin", _large(body))
    args = ("--origin", upstream.url, "--cache-dir", str(tmp_path / "cache"))

    node = run_edge(*args, port=port)
    first = node.get("/big.bin")
    assert first.status == 200 and "stored" in first.cache_status, first
    assert sha256(first.body) == sha256(body)
    assert node.terminate() == 0, node.describe()
    upstream.respond("/big.bin", "origin down\n", status=503)

    node = run_edge(*args, port=port)
    again = node.get("/big.bin")
    assert again.status == 200, again
    assert again.cache_status.startswith("edge; hit"), again
    assert again.headers.get("Content-Length") == str(SIZE), again
    assert len(again.body) == SIZE and sha256(again.body) == sha256(body), again
    assert upstream.count("/big.bin") == 1


def test_partial_body_left_by_a_crash_does_not_push_the_disk_tier_over_its_size(run_edge, upstream, port, tmp_path):
    """A node killed mid-download leaves part of a body in the cache
    directory. The disk tier is bounded by --cache-size (README: the partial
    body is "an unreferenced body that LRU eviction reclaims"), so after the
    restart the directory must not hold that part on top of a full tier."""
    cache_dir = tmp_path / "cache"
    args = ("--origin", upstream.url, "--cache-dir", str(cache_dir), "--cache-size", "24MiB")
    gate = asyncio.Event()
    upstream.route("/big.bin", _large(os.urandom(SIZE), gate, stall_at=16 * MiB))

    node = run_edge(*args, port=port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", "/big.bin")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read(14 * MiB)  # the node forwards what it writes to disk: read past 12 MiB
        wait_until(lambda: tree_size(cache_dir) >= 12 * MiB, timeout=15,
                   message=lambda: f"the node wrote no part of the body to {cache_dir}\n{node.describe()}")
        node.kill_group()  # kill -9 mid-download
    finally:
        conn.close()
        upstream.call_soon(gate.set)

    # After the restart, 16 MiB of new objects: well within the 24 MiB tier.
    for i in range(8):
        upstream.route(f"/obj/{i}", _large(os.urandom(2 * MiB)))
    node = run_edge(*args, port=port)
    for i in range(8):
        r = node.get(f"/obj/{i}")
        assert r.status == 200 and "stored" in r.cache_status, r
    assert node.terminate() == 0, node.describe()

    used = tree_size(cache_dir)
    assert used <= 25 * MiB, (
        f"--cache-size 24MiB, but the cache directory holds {used / MiB:.1f} MiB: "
        f"the partial body from the crash is still there, outside the tier's accounting"
    )
