"""``--workers 2``: several processes on one port, sharing the disk tier."""
from __future__ import annotations

import itertools
import json
import os
import signal
import urllib.request

from aiohttp import web

from .support import alive, cmdline, descendants, free_port, request, wait_until


def test_two_workers_share_the_port_and_the_disk_tier_and_stop_together(run_edge, upstream, port, tmp_path):
    fetches = itertools.count(1)

    async def shared(req: web.Request) -> web.Response:
        # Each origin fetch has its own body: a hit shows whose fetch it was.
        n = next(fetches) if req.method == "GET" else 0
        return web.Response(text=f"fetch {n}\n", headers={"Cache-Control": "max-age=600"}, content_type="text/plain")

    upstream.route("/shared", shared)
    upstream.respond("/who", "who\n", headers={"Cache-Control": "no-store"})
    cache_dir = tmp_path / "cache"

    node = run_edge("--origin", upstream.url, "--workers", "2", "--cache-dir", str(cache_dir), port=port)
    assert "(2 workers)" in node.stdout, node.describe()

    # 1. Both workers answer on the one port: two distinct request id prefixes,
    #    each the pid of a process the node started.
    seen: set[int] = set()

    def two_workers() -> bool:
        seen.add(node.get("/who").worker)
        return len(seen) == 2

    wait_until(two_workers, timeout=20, interval=0.01,
               message=lambda: f"only saw workers {seen} answer\n{node.describe()}")
    tree = descendants(node.pid)
    assert seen <= {pid & 0xFFFF for pid in tree}, (seen, {p: cmdline(p) for p in tree})

    # 2. What one worker fetched, the other serves from the shared disk tier.
    first = node.get("/shared")
    assert first.status == 200 and "stored" in first.cache_status, first
    assert first.body == b"fetch 1\n"
    a = first.worker
    (b,) = seen - {a}

    def other_worker_hits() -> bool:
        # HEAD is never stored, so probing the other worker before the
        # background disk write is done cannot plant its own copy.
        r = node.get("/shared", method="HEAD")
        return r.worker == b and r.is_hit

    wait_until(other_worker_hits, timeout=15, interval=0.02,
               message=lambda: f"worker {b:04x} never served worker {a:04x}'s entry\n{node.describe()}")

    def get_from_b():
        r = node.get("/shared")
        return r if r.worker == b else None

    from_b = wait_until(get_from_b, timeout=15, interval=0.01, message="worker b never answered a GET")
    assert from_b.status == 200 and from_b.is_hit, from_b
    assert from_b.body == b"fetch 1\n", from_b
    assert upstream.count("/shared") == 1

    # 3. A worker that dies is replaced; the replacement starts with empty
    #    memory and still serves the entry, from disk.
    (victim,) = [pid for pid in descendants(node.pid) if pid & 0xFFFF == a]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), timeout=10, message="the killed worker did not die")

    def from_replacement():
        r = node.get("/shared")
        return r if r.worker not in (a, b) else None

    replaced = wait_until(from_replacement, timeout=20, interval=0.01,
                          message=lambda: f"no replacement for the killed worker answered\n{node.describe()}")
    assert replaced.status == 200 and replaced.is_hit, replaced
    assert replaced.body == b"fetch 1\n", replaced
    assert upstream.count("/shared") == 1
    seen = {b, replaced.worker}

    # 4. SIGTERM to the main process stops the whole tree.
    tree = descendants(node.pid)
    workers = [pid for pid in tree if (pid & 0xFFFF) in seen]
    assert len(workers) == 2, {p: cmdline(p) for p in tree}
    status = node.terminate()
    assert status == 0, node.describe()
    wait_until(lambda: not any(alive(pid) for pid in tree), timeout=15,
               message=lambda: "left running after SIGTERM: "
               + str({pid: cmdline(pid) for pid in tree if alive(pid)}))
    try:
        request(port, "/who", timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("something still answers on the port after SIGTERM")



def test_a_post_through_one_worker_invalidates_the_other_workers_memory(run_edge, upstream, port):
    """RFC 9111 §4.4 across workers: after a successful POST answered by one
    worker, no worker serves what it had stored for that URL."""
    versions = {"/item": 1}

    async def item(req: web.Request) -> web.Response:
        if req.method == "POST":
            versions["/item"] += 1
            return web.Response(text="changed\n", headers={"Cache-Control": "no-store"})
        return web.Response(text=f"item v{versions['/item']}\n", headers={"Cache-Control": "max-age=600"})

    upstream.route("/item", item)
    # Memory tiers only: each worker holds its own copy.
    node = run_edge("--origin", upstream.url, "--workers", "2", port=port)

    hits: set[int] = set()

    def both_hit() -> bool:
        r = node.get("/item")
        assert r.body == b"item v1\n", r
        if r.is_hit:
            hits.add(r.worker)
        return len(hits) == 2

    wait_until(both_hit, timeout=20, interval=0.01, message=lambda: f"workers with hits: {hits}\n{node.describe()}")

    posted = node.get("/item", method="POST")
    assert posted.status == 200, posted
    seen: set[int] = set()

    def every_worker_fresh() -> bool:
        r = node.get("/item")
        assert r.body == b"item v2\n", (r, f"POST answered by {posted.worker:04x}")
        seen.add(r.worker)
        return len(seen) == 2

    wait_until(every_worker_fresh, timeout=20, interval=0.01, message=lambda: f"answered: {seen}\n{node.describe()}")


TOKEN = "e2e-operator-token"


def admin(port: int, path: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=15) as r:  # a new connection each: any worker may answer
        assert r.status == 200
        return r.read()


def scraped(port: int) -> dict[str, float]:
    """Sums over label sets of the samples a scrape of /metrics shows."""
    sums: dict[str, float] = {}
    for line in admin(port, "/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{", 1)[0].split(" ", 1)[0], float(line.rsplit(" ", 1)[1])
            sums[name] = sums.get(name, 0.0) + value
    return sums


def test_metrics_and_stats_count_the_whole_node_whichever_worker_answers(run_edge, upstream, port):
    upstream.respond("/page", "page\n", headers={"Cache-Control": "max-age=600"})
    admin_port = free_port()
    node = run_edge("--origin", upstream.url, "--workers", "2", "--admin", f"127.0.0.1:{admin_port}", port=port,
                    env={"EDGE_ADMIN_TOKEN": TOKEN})
    sent = 0
    served_by: set[int] = set()

    def both_serve() -> bool:
        nonlocal sent
        r = node.get("/page")
        sent += 1
        assert r.status == 200, r
        served_by.add(r.worker)
        return len(served_by) == 2

    wait_until(both_serve, timeout=20, interval=0.01, message=lambda: f"only {served_by} served\n{node.describe()}")
    for _ in range(20):
        assert node.get("/page").status == 200
        sent += 1
    assert upstream.count("/page") == 2  # one miss per worker: each holds its own copy in memory

    def agree(expected: int, workers: int, memory_entries: int) -> set[int]:
        """20 scrapes of each, and more until both workers have answered; all tell the same."""
        answered: set[int] = set()
        scrapes = 0

        def scrape() -> bool:
            nonlocal scrapes
            sums = scraped(admin_port)
            assert sums.get("edge_requests_total") == expected, (sums.get("edge_requests_total"), expected)
            assert sums.get("edge_worker_info") == workers, sums.get("edge_worker_info")
            stats = json.loads(admin(admin_port, "/v1/stats"))
            assert sum(stats["requests"].values()) == expected, stats
            assert len(stats["workers"]) == workers, stats
            assert stats["tiers"]["memory"]["entries"] == memory_entries, stats
            answered.add(stats["worker"])
            scrapes += 1
            return scrapes >= 20 and len(answered) == 2

        wait_until(scrape, timeout=30, interval=0,
                   message=lambda: f"only workers {answered} answered the admin port\n{node.describe()}")
        return answered

    pids = agree(sent, 2, 2)

    # A worker killed with -9 is replaced: the node's counters keep what it
    # counted, and its gauges go with it.
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), timeout=10, message="the killed worker did not die")

    def replaced() -> bool:
        workers = {w["worker"] for w in json.loads(admin(admin_port, "/v1/stats"))["workers"]}
        return len(workers) == 2 and victim not in workers

    wait_until(replaced, timeout=20, interval=0.05, message=lambda: f"no replacement answered\n{node.describe()}")
    agree(sent, 2, 1)
    for _ in range(10):
        assert node.get("/page").status == 200
        sent += 1
    agree(sent, 2, upstream.count("/page") - 1)
