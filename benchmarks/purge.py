"""Purge latency on a large disk tier, request to 200 through the admin API.

Fills a disk tier directly through the DiskStore (no HTTP, no origin):
``--entries`` small entries (default 1,000,000) of tenant ``default`` (quick
mode's tenant) and one host, spread over ``--prefixes`` path prefixes
(default 1,000: ``/p<j>/``, about 1,000 entries each) and ``--tags``
surrogate keys (default 10,000: about 100 entries each, spread over the
prefixes). Keys are built with ``edge.cache.key.primary_key`` and default
``KeyOptions`` (quick mode's default policy), so they are the keys the node
computes for ``GET http://bench.example/p<j>/item<i>``. Batches of
``--batch`` entries are written in one transaction per database
(``DiskStore.bulk``).

Then it starts the node as production starts it, in a subprocess::

    EDGE_ADMIN_TOKEN=<random> python -m edge serve --origin http://127.0.0.1:<unused port> \\
        --listen 127.0.0.1:P --cache-dir DIR --admin 127.0.0.1:A --no-access-log

waits for ``GET /readyz`` on the admin port to answer 200, checks that a
filled URL is a disk hit through the public port (the origin does not
exist: a miss would be a 502), and times ``POST /v1/tenants/default/purge``
(``Authorization: Bearer``, one keep-alive connection) from sending the
request to having read the whole 200, each on ``--repeat`` different
targets. Every answer's ``affected`` must equal the entries the target
covers (targets never overlap, so that is exact); the node is always
stopped. Then, with the node stopped, the same purges (on other targets)
are timed in-process through ``Purger(TieredStore).apply`` (memory tier
empty, as in a worker that just started) as a second table: the
difference is HTTP, auth, JSON, audit and the admin handler.

    python benchmarks/purge.py                      # 1M entries: fill ~100 s (2-core Xeon), purges ~2 s
    python benchmarks/purge.py --entries 100000     # quicker
    python benchmarks/purge.py --no-direct          # admin API table only
    python benchmarks/purge.py --dir /var/tmp/pb --keep   # reuse a filled tier on the next run
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.cache.disk import DiskStore
from edge.cache.key import KeyOptions, host_key, normalise_path, primary_key
from edge.cache.memory import MemoryStore
from edge.cache.purge import PurgeSpec, Target
from edge.cache.purger import Purger
from edge.cache.store import Meta
from edge.cache.tiered import TieredStore

TENANT = "default"  # quick mode's only tenant
HOST = "bench.example"  # quick mode serves any Host; the key holds it (host_key form)
OPTS = KeyOptions()  # the default policy's cache-key options
READY_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0


class BenchError(Exception):
    pass


# ------------------------------------------------------------------------- fill


def path_of(i: int, per_prefix: int) -> str:
    return f"/p{i // per_prefix}/item{i}"


def key_of(i: int, per_prefix: int) -> str:
    return primary_key(TENANT, HOST, path_of(i, per_prefix), "", OPTS, {}, {})


def put_entries(disk: DiskStore, indices: Iterable[int], per_prefix: int, tags: int) -> None:
    """Store entries ``indices`` (inside ``disk.bulk()``): 64-byte body,
    fresh for a day, tag ``tag<i % tags>``."""
    now = time.time()
    headers = (("Content-Type", "text/plain"), ("Cache-Control", "max-age=86400"))
    body = b"x" * 64
    for i in indices:
        meta = Meta(200, headers, now, now, 0.0, 86400.0, extra={"tags": [f"tag{i % tags}"]})
        disk._put_sync(key_of(i, per_prefix), meta, body)


def fill(disk: DiskStore, entries: int, prefixes: int, tags: int, batch: int) -> float:
    per_prefix = max(1, entries // prefixes)
    # The node normalises host and path before keying; ours must already be in that form.
    if host_key(HOST) != HOST or normalise_path(path_of(entries - 1, per_prefix)) != path_of(entries - 1, per_prefix):
        raise BenchError("the fill's host or paths are not in the node's normalised form")
    start = time.perf_counter()
    for lo in range(0, entries, batch):
        with disk.bulk():
            put_entries(disk, range(lo, min(lo + batch, entries)), per_prefix, tags)
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
    con = disk.tags.connection()
    for row in con.execute("EXPLAIN QUERY PLAN SELECT key, ver FROM tags WHERE tag = ? AND key >= ? AND key < ?", ("t", "a", "b")):
        plans.append(f"tags.db:  {row[-1]}")
    return plans


# ---------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Purge:
    """One purge: its admin API body, its in-process spec, the entries it covers."""

    body: dict
    spec: PurgeSpec
    covers: tuple[int, ...]


class Targets:
    """Purge targets spread over the key space that never overlap one
    another (nor the entry read as a hit check), so each purge's
    ``affected`` is exactly the number of entries it covers."""

    def __init__(self, entries: int, prefixes: int, tags: int) -> None:
        self.entries, self.tags = entries, tags
        self.per_prefix = max(1, entries // prefixes)
        self.used: set[int] = set()
        self._k = 0

    def _next(self) -> int:
        self._k += 1
        if self._k > 4 * self.entries:
            raise BenchError("not enough entries for that many non-overlapping targets; raise --entries")
        return (self._k * 7919 + 13) % self.entries

    def _take(self, cover) -> tuple[int, ...] | None:
        covers = tuple(cover)
        if not covers or self.used.intersection(covers):
            return None
        self.used.update(covers)
        return covers

    def entry(self) -> int:
        while (c := self._take((self._next(),))) is None:
            pass
        return c[0]

    def make(self, kind: str, soft: bool, n: int) -> list[Purge]:
        out: list[Purge] = []
        pp = self.per_prefix
        while len(out) < n:
            i = self._next()
            if kind in ("url", "path"):
                covers = self._take((i,))
                if covers is None:
                    continue
                path = path_of(i, pp)
                if kind == "url":
                    body = {"urls": [f"http://{HOST}{path}"]}
                    spec = PurgeSpec(TENANT, urls=(Target(HOST, path, ""),), soft=soft)
                else:
                    body = {"urls": [path]}
                    spec = PurgeSpec(TENANT, urls=(Target(None, path, ""),), soft=soft)
            elif kind == "prefix":
                j = i // pp
                covers = self._take(range(j * pp, min((j + 1) * pp, self.entries)))
                if covers is None:
                    continue
                body = {"prefixes": [f"http://{HOST}/p{j}/"]}
                spec = PurgeSpec(TENANT, prefixes=(Target(HOST, f"/p{j}/", None),), soft=soft)
            else:  # tag
                t = i % self.tags
                covers = self._take(range(t, self.entries, self.tags))
                if covers is None:
                    continue
                body = {"tags": [f"tag{t}"]}
                spec = PurgeSpec(TENANT, tags=(f"tag{t}",), soft=soft)
            if soft:
                body["soft"] = True
            out.append(Purge(body, spec, covers))
        return out

    def rows(self, n: int) -> list[tuple[str, list[Purge]]]:
        pp, per_tag = self.per_prefix, self.entries // self.tags
        return [
            ("URL, absolute", self.make("url", False, n)),
            ("URL, absolute, soft", self.make("url", True, n)),
            ("URL, path only (hosts found by skip scan)", self.make("path", False, n)),
            (f"prefix `http://{HOST}/p<j>/` (~{pp:,} entries)", self.make("prefix", False, n)),
            (f"prefix, soft (metadata rewritten, ~{pp:,})", self.make("prefix", True, n)),
            (f"tag (~{per_tag:,} entries)", self.make("tag", False, n)),
            (f"tag, soft (~{per_tag:,})", self.make("tag", True, n)),
        ]


def check_affected(table: str, name: str, purges: list[Purge], counts: list[int]) -> None:
    for purge, count in zip(purges, counts):
        if count != len(purge.covers):
            hint = " (0: the filled keys are not the keys the node computes)" if count == 0 else ""
            raise BenchError(f"{table}, {name}: {json.dumps(purge.body)} affected {count}, "
                             f"expected {len(purge.covers)}{hint}")


# ------------------------------------------------------------------------- node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """``python -m edge serve`` in quick mode with the admin API; its output
    goes to files; ``stop`` always ends it (SIGTERM, then SIGKILL to its
    process group)."""

    def __init__(self, cache_dir: Path, logs: Path) -> None:
        self.port, self.admin_port, origin_port = free_port(), free_port(), free_port()
        self.token = secrets.token_hex(32)
        self.cmd = [
            sys.executable, "-m", "edge", "serve",
            "--origin", f"http://127.0.0.1:{origin_port}",  # nothing listens there
            "--listen", f"127.0.0.1:{self.port}",
            "--cache-dir", str(cache_dir),
            "--admin", f"127.0.0.1:{self.admin_port}",
            "--no-access-log",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["EDGE_ADMIN_TOKEN"] = self.token
        self.err_path = logs / "edge.err"
        # The child keeps its own descriptors of the two files.
        with open(logs / "edge.out", "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=err, cwd=str(REPO), env=env,
                                         start_new_session=True)
        self.conn: http.client.HTTPConnection | None = None

    def stderr_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.err_path.read_bytes()[-n:].decode(errors="replace")
        return ""

    def wait_ready(self) -> float:
        """Seconds until ``GET /readyz`` answers 200."""
        start = time.perf_counter()
        last = "no answer"
        while time.perf_counter() - start < READY_TIMEOUT:
            if self.proc.poll() is not None:
                raise BenchError(f"the node exited with {self.proc.returncode} before it was ready:\n{self.stderr_tail()}")
            try:
                status, body = self.request("GET", "/readyz", auth=False, timeout=5.0)
                if status == 200:
                    return time.perf_counter() - start
                last = f"{status} {body[:300]!r}"
            except OSError as exc:
                last = repr(exc)
                self._drop()
            time.sleep(0.05)
        raise BenchError(f"the node was not ready after {READY_TIMEOUT:.0f} s ({last}):\n{self.stderr_tail()}")

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: dict | None = None, *, auth: bool = True,
                timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
        """One request on the kept-alive admin connection (reopened if the node closed it)."""
        headers = {"Host": f"127.0.0.1:{self.admin_port}"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop()
                if attempt == 2:
                    raise
                continue
            if resp.will_close:
                self._drop()
            return resp.status, payload
        raise AssertionError("unreachable")

    def purge(self, body: dict) -> tuple[float, int]:
        """(ms from sending the request to having read the whole 200, affected)."""
        if self.conn is None:  # connecting is not part of a purge
            self.request("GET", "/healthz", auth=False)
        t = time.perf_counter()
        status, payload = self.request("POST", f"/v1/tenants/{TENANT}/purge", body)
        ms = (time.perf_counter() - t) * 1000
        if status != 200:
            raise BenchError(f"POST /v1/tenants/{TENANT}/purge {json.dumps(body)}: {status} {payload[:500]!r}")
        return ms, json.loads(payload)["affected"]

    def get_public(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("GET", path, headers={"Host": HOST})
            resp = conn.getresponse()
            resp.read()
            return resp.status, resp.getheader("Cache-Status", "")
        finally:
            conn.close()

    def stop(self) -> None:
        self._drop()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            # Whatever happened, nothing of this node (it is its own process group) survives.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)


def bench_api(directory: Path, targets: Targets, n: int) -> tuple[list, dict]:
    logs = Path(tempfile.mkdtemp(prefix="edge-purge-bench-logs-"))
    node = Node(directory, logs)
    info: dict = {}
    try:
        info["ready_s"] = node.wait_ready()
        # The filled keys are the node's: a filled URL is a hit without an origin.
        check = targets.entry()
        status, cache_status = node.get_public(path_of(check, targets.per_prefix))
        if status != 200 or "hit" not in cache_status:
            raise BenchError(f"GET {path_of(check, targets.per_prefix)} (Host: {HOST}) answered {status}, "
                             f"Cache-Status {cache_status!r}: the filled keys are not the node's")
        info["check"] = (path_of(check, targets.per_prefix), cache_status)
        # One untimed purge first (a fresh entry): the node's first purge pays for lazy setup.
        warm = targets.make("url", False, 1)[0]
        _, warm_affected = node.purge(warm.body)
        if warm_affected != 1:
            raise BenchError(f"warm-up purge {json.dumps(warm.body)} affected {warm_affected}, expected 1")
        results = []
        for name, purges in targets.rows(n):
            times, counts = [], []
            for purge in purges:
                ms, affected = node.purge(purge.body)
                times.append(ms)
                counts.append(affected)
            check_affected("admin API", name, purges, counts)
            results.append((name, times, counts))
        if node.proc.poll() is not None:
            raise BenchError(f"the node exited with {node.proc.returncode}:\n{node.stderr_tail()}")
        return results, info
    finally:
        node.stop()
        shutil.rmtree(logs, ignore_errors=True)


async def bench_direct(store: TieredStore, targets: Targets, n: int) -> list:
    purger = Purger(store)
    results = []
    for name, purges in targets.rows(n):
        times, counts = [], []
        for purge in purges:
            t = time.perf_counter()
            counts.append(await purger.apply(purge.spec))
            times.append((time.perf_counter() - t) * 1000)
        check_affected("in-process", name, purges, counts)
        results.append((name, times, counts))
    return results


# ---------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    versions = []
    for mod in ("aiohttp", "diskcache"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except (ImportError, AttributeError):
            versions.append(f"{mod} missing")
    commit = "?"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=False).stdout.strip() or "?"
        if subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "edge"],
                          capture_output=True, text=True, check=False).stdout.strip():
            commit += " (edge/ modified)"
    return (f"{cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {', '.join(versions)}, edge {commit}")


def print_table(title: str, results: list) -> None:
    print(f"| {title} | p50 ms | max ms | entries affected |")
    print("| --- | --- | --- | --- |")
    for name, times, counts in results:
        affected = f"{min(counts):,}" if min(counts) == max(counts) else f"{min(counts):,} – {max(counts):,}"
        print(f"| {name} | {statistics.median(times):.1f} | {max(times):.1f} | {affected} |")


# ------------------------------------------------------------------------- main


async def close_store(disk: DiskStore) -> None:
    await disk.close()


def run(args) -> None:
    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="edge-purge-bench-"))
    disk: DiskStore | None = DiskStore(directory, max_bytes=1 << 40)
    targets = Targets(args.entries, args.prefixes, args.tags)
    remove = not args.keep
    try:
        entries = count_entries(disk)
        fill_s = None
        if entries != args.entries:
            if entries:
                remove = False  # not ours to delete
                sys.exit(f"{directory} holds {entries:,} entries of tenant {TENANT!r}, not --entries; "
                         "give an empty or new --dir")
            print(f"filling {args.entries:,} entries into {directory}", file=sys.stderr)
            fill_s = fill(disk, args.entries, args.prefixes, args.tags, args.batch)
            entries = count_entries(disk)
        size = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
        plans = query_plans(disk)
        # The node opens the tier itself; this process holds nothing open meanwhile.
        asyncio.run(close_store(disk))
        disk = None

        print("starting the node, timing purges through the admin API", file=sys.stderr)
        api, info = bench_api(directory, targets, args.repeat)

        direct = None
        if args.direct:
            print("timing purges in-process", file=sys.stderr)
            disk = DiskStore(directory, max_bytes=1 << 40)

            async def go():
                return await bench_direct(TieredStore(MemoryStore(64 << 20, 1 << 20), disk), targets, args.repeat)

            direct = asyncio.run(go())

        n = args.repeat
        print(f"\n{machine_line()}")
        fill_text = f", filled in {fill_s:.0f} s ({entries / fill_s:,.0f} entries/s)" if fill_s else ""
        print(f"disk tier: {entries:,} entries of tenant `{TENANT}`, host `{HOST}`, {args.prefixes:,} prefixes, "
              f"{args.tags:,} tags, {size / 2**20:,.0f} MiB{fill_text}")
        print(f"node ready (`GET /readyz` 200) {info['ready_s']:.1f} s after start; "
              f"`GET {info['check'][0]}` (Host: {HOST}) → `{info['check'][1]}`\n")
        print_table(f"`POST /v1/tenants/{TENANT}/purge`, request → 200 ({entries:,} entries on disk)", api)
        print(f"\n{n} purges per row, each of a different target, none overlapping another, on one kept-alive "
              "connection after one untimed warm-up purge; `affected` from the answer, checked against the "
              "entries each target covers. Node: `EDGE_ADMIN_TOKEN=... python -m edge serve --origin "
              "http://127.0.0.1:<unused> --listen 127.0.0.1:P --cache-dir DIR --admin 127.0.0.1:A --no-access-log` "
              "(quick mode, 1 worker, memory tier empty but for the checked entry).")
        if direct is not None:
            print()
            print_table(f"in-process `Purger.apply` (disk tier of {entries:,} entries)", direct)
            print(f"\nThe node stopped; {n} more targets per row, disjoint from the ones above; memory tier empty.")
        print("Query plans:")
        for plan in plans:
            print(f"    {plan}")
    finally:
        if disk is not None:
            if args.keep:
                # Put back what the purges removed or expired, so --dir can be reused.
                with disk.bulk():
                    put_entries(disk, sorted(targets.used), targets.per_prefix, args.tags)
            asyncio.run(close_store(disk))
        elif args.keep:
            disk = DiskStore(directory, max_bytes=1 << 40)
            with disk.bulk():
                put_entries(disk, sorted(targets.used), targets.per_prefix, args.tags)
            asyncio.run(close_store(disk))
        if remove:
            shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--prefixes", type=int, default=1_000)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50_000, help="entries per fill transaction")
    parser.add_argument("--repeat", type=int, default=5, help="purges per row")
    parser.add_argument("--no-direct", dest="direct", action="store_false",
                        help="skip the in-process Purger.apply table")
    parser.add_argument("--dir", help="disk tier directory (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the directory, purged entries put back (reuse it with --dir)")
    args = parser.parse_args()
    try:
        run(args)
    except BenchError as exc:
        sys.exit(f"purge benchmark failed: {exc}")


if __name__ == "__main__":
    main()
