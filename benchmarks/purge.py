"""Purge latency on a large disk tier: no scans, whatever the number of entries.

Fills a disk tier directly through the DiskStore (no HTTP): ``--entries``
small entries (default 1,000,000) of one tenant and host, spread over
``--prefixes`` path prefixes (default 1,000: ``/p<j>/``, about 1,000 entries
each) and ``--tags`` surrogate keys (default 10,000: about 100 entries
each, spread over the prefixes). Batches of ``--batch`` entries are written
in one transaction per database (``DiskStore.bulk``). Then it times purges
through ``Purger(TieredStore).apply`` (the memory tier empty, as in a
worker that just started: all the work is the disk tier's), each on
``--repeat`` different targets, and prints a Markdown table.

    python benchmarks/purge.py                      # 1M entries, about 2-3 minutes with the fill
    python benchmarks/purge.py --entries 100000     # quicker
    python benchmarks/purge.py --dir /var/tmp/pb --keep   # reuse a filled tier on the next run
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.cache.disk import DiskStore
from edge.cache.key import KeyOptions, primary_key
from edge.cache.memory import MemoryStore
from edge.cache.purge import Purger, PurgeSpec, Target
from edge.cache.store import Meta
from edge.cache.tiered import TieredStore

TENANT = "bench"
HOST = "bench.example"
OPTS = KeyOptions()


def path_of(i: int, per_prefix: int) -> str:
    return f"/p{i // per_prefix}/item{i}"


def fill(disk: DiskStore, entries: int, prefixes: int, tags: int, batch: int) -> float:
    per_prefix = max(1, entries // prefixes)
    now = time.time()
    headers = (("Content-Type", "text/plain"), ("Cache-Control", "max-age=86400"))
    body = b"x" * 64
    start = time.perf_counter()
    for lo in range(0, entries, batch):
        with disk.bulk():
            for i in range(lo, min(lo + batch, entries)):
                key = primary_key(TENANT, HOST, path_of(i, per_prefix), "", OPTS, {}, {})
                meta = Meta(200, headers, now, now, 0.0, 86400.0, extra={"tags": [f"tag{i % tags}"]})
                disk._put_sync(key, meta, body)
        done = min(lo + batch, entries)
        rate = done / (time.perf_counter() - start)
        print(f"\r  filled {done:,}/{entries:,} ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - start


def count_entries(disk: DiskStore) -> int:
    lo, hi = f"m\0{TENANT}\n", f"m\0{TENANT}\n\U0010ffff"
    return disk.cache._sql("SELECT COUNT(*) FROM Cache WHERE key >= ? AND key < ?", (lo, hi)).fetchone()[0]


def query_plans(disk: DiskStore) -> list[str]:
    plans = []
    for sql, args in (
        ("SELECT key FROM Cache WHERE key >= ? AND key < ? ORDER BY key LIMIT ?", ("m\0a", "m\0b", 1000)),
    ):
        for row in disk.cache._sql("EXPLAIN QUERY PLAN " + sql, args):
            plans.append(f"cache.db: {row[-1]}")
    con = disk._tags_con()
    for row in con.execute("EXPLAIN QUERY PLAN SELECT key, ver FROM tags WHERE tag = ? AND key >= ? AND key < ?", ("t", "a", "b")):
        plans.append(f"tags.db:  {row[-1]}")
    return plans


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


async def timed(store: TieredStore, specs: list[PurgeSpec]) -> tuple[list[float], list[int]]:
    purger = Purger(store)
    times, counts = [], []
    for spec in specs:
        t = time.perf_counter()
        counts.append(await purger.apply(spec))
        times.append((time.perf_counter() - t) * 1000)
    return times, counts


async def run(args) -> None:
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="edge-purge-bench-"))
    disk = DiskStore(directory, max_bytes=1 << 40)
    try:
        entries = count_entries(disk)
        fill_s = None
        if entries < args.entries:
            if entries:
                sys.exit(f"{directory} holds {entries:,} entries, fewer than --entries; give an empty or new --dir")
            print(f"filling {args.entries:,} entries into {directory}", file=sys.stderr)
            fill_s = fill(disk, args.entries, args.prefixes, args.tags, args.batch)
            entries = count_entries(disk)
        size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
        store = TieredStore(MemoryStore(64 << 20, 1 << 20), disk)
        per_prefix = max(1, args.entries // args.prefixes)
        n = args.repeat
        # Targets spread over the key space, different for every row and run.
        picks = [(k * 7919 + 13) % args.entries for k in range(1, 6 * n + 1)]
        rows = [
            ("URL, absolute (one host)",
             [PurgeSpec(TENANT, urls=(Target(HOST, path_of(i, per_prefix), ""),)) for i in picks[0:n]]),
            ("URL, path only (hosts found by skip scan)",
             [PurgeSpec(TENANT, urls=(Target(None, path_of(i, per_prefix), ""),)) for i in picks[n:2 * n]]),
            (f"prefix `/p<j>/` (~{per_prefix:,} entries)",
             [PurgeSpec(TENANT, prefixes=(Target(HOST, f"/p{i // per_prefix}/", None),)) for i in picks[2 * n:3 * n]]),
            (f"prefix, soft (metadata rewritten, ~{per_prefix:,})",
             [PurgeSpec(TENANT, prefixes=(Target(HOST, f"/p{i // per_prefix}/", None),), soft=True) for i in picks[3 * n:4 * n]]),
            (f"tag (~{args.entries // args.tags:,} entries)",
             [PurgeSpec(TENANT, tags=(f"tag{i % args.tags}",)) for i in picks[4 * n:5 * n]]),
            ("tag, soft", [PurgeSpec(TENANT, tags=(f"tag{i % args.tags}",), soft=True) for i in picks[5 * n:6 * n]]),
        ]
        results = []
        for name, specs in rows:
            times, counts = await timed(store, specs)
            results.append((name, times, counts))

        cpu = cpu_model()
        print(f"\n{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
              f"SQLite {sqlite3.sqlite_version}")
        fill_text = f", filled in {fill_s:.0f} s ({entries / fill_s:,.0f} entries/s)" if fill_s else ""
        print(f"disk tier: {entries:,} entries, {args.prefixes:,} prefixes, {args.tags:,} tags, "
              f"{size / 2**20:,.0f} MiB{fill_text}\n")
        print(f"| purge (disk tier of {entries:,} entries) | p50 ms | max ms | entries affected |")
        print("| --- | --- | --- | --- |")
        for name, times, counts in results:
            affected = f"{min(counts):,}" if min(counts) == max(counts) else f"{min(counts):,} – {max(counts):,}"
            print(f"| {name} | {statistics.median(times):.1f} | {max(times):.1f} | {affected} |")
        print(f"\n{n} purges per row, each of a different target.")
        print("Query plans:")
        for plan in query_plans(disk):
            print(f"    {plan}")
    finally:
        await disk.close()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--prefixes", type=int, default=1_000)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50_000, help="entries per fill transaction")
    parser.add_argument("--repeat", type=int, default=5, help="purges per row")
    parser.add_argument("--dir", help="disk tier directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the directory (reuse it with --dir)")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
