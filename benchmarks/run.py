#!/usr/bin/env python3
"""Benchmarks for the edge node; every subcommand prints a Markdown table.

    python benchmarks/run.py all            # hit, miss, herd, bigfile, geo, chain (about 5 minutes)
    python benchmarks/run.py hit            # cache-hit throughput/latency (wrk) + framework ceiling
    python benchmarks/run.py miss           # every request a miss (wrk + Lua unique paths)
    python benchmarks/run.py herd           # 200 concurrent requests for one cold URL
    python benchmarks/run.py uncacheable    # bursts of 100 for one no-store URL (origin: 200 ms), from 100 addresses and from 1
    python benchmarks/run.py bigfile        # 1 GiB through the edge: RSS and MB/s
    python benchmarks/run.py geo            # Germany-only delivery: decision cost in-process, hits with/without (wrk)
    python benchmarks/run.py chain          # filter chain on/off on hits, compressed hits, WAF µs in-process
    python benchmarks/run.py profile        # py-spy profile of the edge during the 2 KiB hit load
    python benchmarks/run.py micro          # the edge's own µs per memory hit, in-process
    python benchmarks/run.py micro --against ../other-checkout --iterations 5000 --rounds 40   # side by side

The edge is started as production starts it (``python -m edge serve --origin
... --listen ... --workers 1``) in a subprocess; the origin is a separate
plain aiohttp process (``run.py _origin``). See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
EDGE_CORE, LOAD_CORE = 0, 1  # edge on core 0; wrk/client/origin on core 1
USABLE_CORES = sorted(os.sched_getaffinity(0))  # before the driver pins itself

SMALL = (bytes(range(256)) * 8)[: 2 * KiB]
ONE_MIB = (bytes(range(256)) * 4096)[:MiB]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cores() -> int:
    return len(USABLE_CORES)


def can_pin() -> bool:
    return shutil.which("taskset") is not None and {EDGE_CORE, LOAD_CORE} <= set(USABLE_CORES)


def pinned(cmd: list[str], core: int | None) -> list[str]:
    if core is None or not can_pin():
        return cmd
    return ["taskset", "-c", str(core), *cmd]


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed; install it with `apt-get install wrk` (Debian/Ubuntu) and run again")
    return wrk


def machine_info() -> str:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for mod in ("aiohttp", "uvloop", "multidict", "yarl"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:
            versions.append(f"{mod} missing")
    wrk = "missing"
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (out.stdout + out.stderr).split("[")[0].replace("wrk", "").strip() or "?"
    commit = tree_commit(REPO)
    pin = f"edge on core {EDGE_CORE}, load on core {LOAD_CORE} (taskset)" if can_pin() else "not pinned (taskset missing or < 2 cores)"
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores ({cores()} usable); Linux {platform.release()}; "
        f"Python {platform.python_version()}; {', '.join(versions)}; wrk {wrk}; edge {commit}; {pin}"
    )


def tree_commit(tree: Path) -> str:
    commit = "?"
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "edge"], capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " (edge/ modified)"
    return commit


def table(title: str, headers: list[str], rows: list[list], notes: list[str] = ()) -> str:
    out = [f"### {title}", "", machine_info(), ""]
    out.append("| " + " | ".join(headers) + " |")
    out.append("| " + " | ".join("---" for _ in headers) + " |")
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    if notes:
        out.append("")
        out.extend(f"- {n}" for n in notes)
    out.append("")
    return "\n".join(out)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc:
    """A subprocess that is always killed; its output goes to files."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, cwd=str(REPO), env=full_env)
        self.pid = self.proc.pid  # taskset execs the command: same pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            data = self.err_path.read_bytes()
            return data[-n:].decode(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        self._err.close()


def http_get(url: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_ready(proc: Proc, url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.proc.returncode} before it was ready:\n{proc.stderr_tail()}")
        try:
            http_get(url, timeout=1.0)
            return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
            time.sleep(0.05)
    raise BenchError(f"{proc.name} not ready at {url} after {timeout:.0f}s ({last}):\n{proc.stderr_tail()}")


class Stack(contextlib.ExitStack):
    """Processes of one benchmark plus a temp directory, always cleaned up."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(self.enter_context(tempfile.TemporaryDirectory(prefix="edge-bench-")))

    def start(self, name: str, cmd: list[str], ready_url: str, core: int | None, env: dict | None = None) -> Proc:
        proc = Proc(name, pinned(cmd, core), self.dir, env)
        self.callback(proc.stop)
        wait_ready(proc, ready_url)
        return proc

    def origin(self) -> tuple[Proc, str]:
        port = free_port()
        proc = self.start("origin", [sys.executable, __file__, "_origin", "--port", str(port)], f"http://127.0.0.1:{port}/__stats", LOAD_CORE)
        return proc, f"http://127.0.0.1:{port}"

    def edge(self, origin_url: str, *, access_log: bool = False, cache_dir: Path | None = None, name: str = "edge",
             extra: list[str] = ()) -> tuple[Proc, str]:
        port = free_port()
        cmd = [sys.executable, "-m", "edge", "serve", "--origin", origin_url, "--listen", f"127.0.0.1:{port}", "--workers", "1"]
        if not access_log:
            cmd.append("--no-access-log")
        if cache_dir is not None:
            cmd += ["--cache-dir", str(cache_dir)]
        cmd += list(extra)
        # Readiness: the origin's stats path through the edge (no-store there).
        proc = self.start(name, cmd, f"http://127.0.0.1:{port}/__stats", EDGE_CORE)
        return proc, f"http://127.0.0.1:{port}"


def origin_stats(origin_url: str) -> dict:
    return json.loads(http_get(origin_url + "/__stats")[2])


# ------------------------------------------------------------------------ wrk

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

LUA_UNIQUE = r"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", PREFIX .. counter)
end
"""


def busy_ticks() -> dict[str, int]:
    """Busy jiffies per CPU line of /proc/stat ("cpu", "cpu0", ...)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if not line.startswith("cpu"):
            break
        name, *vals = line.split()
        v = [int(x) for x in vals]
        # user nice system steal; irq and softirq time (loopback traffic) is not
        # charged to any process and would look like foreign load.
        out[name] = v[0] + v[1] + v[2] + v[7]
    return out


class CpuWatch:
    """CPU use during a measurement: each watched process, and what the rest
    of the machine (other users, other processes) took meanwhile."""

    def __init__(self, watch: dict[str, int]) -> None:
        self.watch = watch

    def __enter__(self) -> "CpuWatch":
        import resource

        self._procs = {name: cpu_seconds(pid) for name, pid in self.watch.items()}
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        self._children = ru.ru_utime + ru.ru_stime
        self._self = me.ru_utime + me.ru_stime
        self._busy = busy_ticks()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        import resource

        self.wall = wall = time.monotonic() - self._t0
        hz = os.sysconf("SC_CLK_TCK")
        self.cpu = {name: (cpu_seconds(pid) - self._procs[name]) / wall for name, pid in self.watch.items()}
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        ours = sum(self.cpu.values()) + (ru.ru_utime + ru.ru_stime - self._children + me.ru_utime + me.ru_stime - self._self) / wall
        busy = busy_ticks()
        total = (busy["cpu"] - self._busy["cpu"]) / hz / wall
        self.other = max(0.0, total - ours)


def run_wrk(url: str, workdir: Path, *, duration: int, connections: int = 50, unique_prefix: str | None = None,
            watch: dict[str, int] | None = None, repeat: int = 1, headers: dict[str, str] | None = None) -> dict:
    """Runs wrk pinned to the load core ``repeat`` times and returns the
    run with the most requests/s (noise only ever slows a run down), with
    the CPU use of each watched process and of everything else. ``headers``
    go on every request (wrk.headers in the Lua script)."""
    runs = [_run_wrk_once(url, workdir, duration=duration, connections=connections, unique_prefix=unique_prefix,
                          watch=watch or {}, headers=headers or {}) for _ in range(max(1, repeat))]
    best = max(runs, key=lambda r: r["rps"])
    best["all_rps"] = [r["rps"] for r in runs]
    best["all_requests"] = sum(r["requests"] for r in runs)
    return best


def lua_headers(headers: dict[str, str]) -> str:
    # JSON string literals of ASCII text are valid Lua string literals.
    return "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())


def _run_wrk_once(url, workdir, *, duration, connections, unique_prefix, watch, headers=None) -> dict:
    wrk = require_wrk()
    script = lua_headers(headers or {}) + LUA_DONE
    if unique_prefix is not None:
        script = f'PREFIX = "{unique_prefix}{uuid.uuid4().hex[:6]}-"\n' + LUA_UNIQUE + script
    lua = workdir / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    lua.write_text(script)
    cmd = pinned([wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua), url], LOAD_CORE)
    with CpuWatch(watch) as cw:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("WRKJSON "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["mbps"] = r["bytes"] / (r["duration_us"] / 1e6) / 1e6
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    r["cpu"] = cw.cpu
    r["other"] = cw.other
    return r


def ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def fmt_errors(r: dict) -> str:
    if not r["errors"]:
        return "0"
    parts = [f"{k} {r[k]}" for k in ("connect", "read", "write", "status", "timeout") if r[k]]
    return ", ".join(parts)


def fmt_cpu(r: dict) -> str:
    return ", ".join(f"{k} {v * 100:.0f}%" for k, v in r["cpu"].items())


def fmt_other(r: dict) -> str:
    flag = " (!)" if r["other"] > 0.15 else ""
    return f"{r['other'] * 100:.0f}%{flag}"


def fmt_rps(r: dict) -> str:
    return f"{r['rps']:,.0f}"


# ------------------------------------------------------------------------ hit


def wrk_row(label: list, r: dict) -> list:
    return [*label, fmt_rps(r), ms(r["p50"]), ms(r["p90"]), ms(r["p99"]), ms(r["max"]), f"{r['mbps']:,.0f}", fmt_errors(r),
            fmt_cpu(r), fmt_other(r)]


WRK_HEADERS = ["req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "MB/s", "errors", "CPU", "other load"]


def wrk_notes(args, rows_runs: list[tuple[str, list[float]]]) -> list[str]:
    notes = [
        "CPU: CPU time of each process / wall time of the run (100% = one core; a server well below 100% was not "
        "the bottleneck of its row). other load: CPU the rest of the "
        "machine used during the run (other processes, interrupts), in % of one core; (!) above 15%: the figures "
        "of that row are disturbed, run again.",
    ]
    if args.repeat > 1:
        notes.append(f"Each row is the best of {args.repeat} runs (req/s of all runs: "
                     + "; ".join(f"{label}: {', '.join(f'{x:,.0f}' for x in runs)}" for label, runs in rows_runs) + ").")
    return notes


def bench_hit(args) -> str:
    require_wrk()
    rows, runs, notes = [], [], []
    with Stack() as st:
        origin, origin_url = st.origin()
        for access_log in (False, True):
            log(f"hit: starting edge (access log {'on' if access_log else 'off'})")
            edge, edge_url = st.edge(origin_url, access_log=access_log, name=f"edge-log{int(access_log)}")
            for label, path in (("2 KiB", "/2k/hit"), ("1 MiB", "/1m/hit")):
                url = edge_url + path
                for _ in range(2):
                    status, headers, body = http_get(url)
                cs = headers.get("Cache-Status", "")
                if status != 200 or "hit" not in cs or "fwd=" in cs:
                    raise BenchError(f"{url} is not a hit after warming: {status} {cs!r}")
                before = origin_stats(origin_url)["total"]
                log(f"hit: wrk {label}, access log {'on' if access_log else 'off'}, {args.duration}s x {args.repeat}")
                r = run_wrk(url, st.dir, duration=args.duration, watch={"edge": edge.pid}, repeat=args.repeat)
                origin_reqs = origin_stats(origin_url)["total"] - before
                if origin_reqs:
                    notes.append(f"**{label}, access log {access_log}: {origin_reqs} requests reached the origin during the run**")
                rows.append(wrk_row([f"edge hit {label}", "on" if access_log else "off"], r))
                if label == "2 KiB":
                    ok_rps, ok_p99 = r["rps"] >= 20000, r["p99"] < 10000
                    notes.append(f"Spec, 2 KiB, access log {'on' if access_log else 'off'}: >= 20,000 req/s "
                                 f"{'**met**' if ok_rps else '**NOT met**'} ({r['rps']:,.0f}); p99 < 10 ms "
                                 f"{'**met**' if ok_p99 else '**NOT met**'} ({ms(r['p99'])} ms)"
                                 + (" (row disturbed by other load)" if r["other"] > 0.15 else "") + ".")
                runs.append((f"{label}/log {'on' if access_log else 'off'}", r["all_rps"]))
        refs = [("2k", "constant 2 KiB, 2 headers"), ("2k-edge", "constant 2 KiB, the 9 headers of an edge hit")]
        if args.reference_1m:
            refs.append(("1m", "constant 1 MiB, 2 headers"))
        for size, label in refs:
            port = free_port()
            ref = st.start(f"reference-{size}", [sys.executable, __file__, "_reference", "--port", str(port), "--size", size],
                           f"http://127.0.0.1:{port}/", EDGE_CORE)
            log(f"hit: wrk reference server, {label}, {args.duration}s x {args.repeat}")
            r = run_wrk(f"http://127.0.0.1:{port}/", st.dir, duration=args.duration, watch={"server": ref.pid},
                        repeat=args.repeat)
            rows.append(wrk_row([f"reference: aiohttp low-level server + uvloop, {label}", "-"], r))
            runs.append((f"reference {size}", r["all_rps"]))
    notes = [
        f"wrk -t1 -c50 -d{args.duration}s --latency against `python -m edge serve --origin ... --workers 1` "
        "(quick mode, memory tier); the object is warmed first and checked to be a hit, and the origin's request "
        "counter is checked unchanged after each run.",
        "Spec targets: >= 20,000 hits/s for 2 KiB on one worker and one core; p99 < 10 ms at 50 connections.",
        "Access log on: JSON lines go to the edge's stderr, which is redirected to a file in a temp dir.",
        "Reference rows: the framework ceiling on this machine; the second one sends the same 9 header fields an "
        "edge hit sends (Cache-Control, Content-Type, Date, Server, Via, Age, Cache-Status, X-Request-Id, "
        "Content-Length), built the way the edge builds them (copy of a CIMultiDict template).",
        *wrk_notes(args, runs),
        *notes,
    ]
    headers = ["case", "access log", *WRK_HEADERS]
    return table("Cache hits (wrk, 50 connections, one edge worker on one core)", headers, rows, notes)


# ----------------------------------------------------------------------- miss


def bench_miss(args) -> str:
    require_wrk()
    rows, runs = [], []
    with Stack() as st:
        origin, origin_url = st.origin()
        edge, edge_url = st.edge(origin_url)
        run = uuid.uuid4().hex[:8]
        cases = [
            ("unique URLs, cacheable 2 KiB (each stored)", f"/2k/miss-{run}-", "stored", True),
            ("unique URLs, origin answers no-store", f"/nostore/miss-{run}-", "no-store", True),
            ("one URL, origin answers no-store (collapse, then release)", f"/nostore/same-{run}", "no-store", False),
        ]
        for label, prefix, expect, unique in cases:
            status, headers, _ = http_get(edge_url + prefix + ("probe" if unique else ""))
            cs = headers.get("Cache-Status", "")
            if status != 200 or "fwd=uri-miss" not in cs or expect not in cs:
                raise BenchError(f"{label}: unexpected probe answer {status} {cs!r}")
            before = origin_stats(origin_url)["total"]
            log(f"miss: wrk {label}, {args.duration}s x {args.repeat}")
            r = run_wrk(edge_url + ("/" if unique else prefix), st.dir, duration=args.duration,
                        unique_prefix=prefix if unique else None, watch={"edge": edge.pid, "origin": origin.pid},
                        repeat=args.repeat)
            origin_reqs = origin_stats(origin_url)["total"] - before
            rows.append([*wrk_row([label], r)[:-2], f"{origin_reqs:,} / {r['all_requests']:,}", fmt_cpu(r), fmt_other(r)])
            runs.append((label.split(",")[0] + ("" if unique else " (one URL)"), r["all_rps"]))
    notes = [
        f"wrk -t1 -c50 -d{args.duration}s --latency; for unique URLs a Lua request() numbers every path, so every "
        "request is a new cache key (uri-miss).",
        f"Cores: the edge has core {EDGE_CORE} to itself; the origin (aiohttp low-level server + uvloop) and wrk share "
        f"core {LOAD_CORE} (a 2-core machine), see their CPU.",
        "origin / client requests (all runs of the row): every request should reach the origin once; the origin "
        "also counts the up to 50 requests wrk had in flight when it stopped, which wrk does not count.",
        *wrk_notes(args, runs),
    ]
    headers = ["case", *WRK_HEADERS[:-2], "origin / client requests", "CPU", "other load"]
    return table("Misses through the edge to the origin (wrk, 50 connections)", headers, rows, notes)


# ----------------------------------------------------------------------- herd


async def _herd(edge_url: str, path: str, n: int, size: int | None = None,
                sources: list[str] | None = None) -> tuple[list[float], collections.Counter, float]:
    """``n`` requests released at once; with ``sources``, request i is sent
    from the local address sources[i % len(sources)] (any of 127.0.0.0/8)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=120)
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True,
                                                                     local_addr=(src, 0) if src else None),
                                      timeout=timeout)
                for src in (sources or [None])]
    async with contextlib.AsyncExitStack() as stack:
        for session in sessions:
            await stack.enter_async_context(session)
        start = asyncio.Event()

        async def one(session) -> tuple[float, str]:
            await start.wait()
            t0 = time.perf_counter()
            got = 0
            async with session.get(edge_url + path) as resp:
                async for chunk in resp.content.iter_any():  # counted, not kept: bodies may be large
                    got += len(chunk)
                cs = resp.headers.get("Cache-Status", "")
                status = resp.status
            dt = time.perf_counter() - t0
            if status == 200 and size is not None and got != size:
                kind = f"short body ({got} of {size} bytes)"
            elif status != 200:
                kind = f"status {status}"
            elif "collapsed" in cs:
                kind = "hit; collapsed"
            elif "stored" in cs:
                kind = "fwd=uri-miss; stored"
            elif "hit" in cs:
                kind = "hit"
            else:
                kind = cs
            return dt, kind

        tasks = [asyncio.ensure_future(one(sessions[i % len(sessions)])) for i in range(n)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        start.set()
        results = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return [r[0] for r in results], collections.Counter(r[1] for r in results), wall


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


def _stalled_leader(edge_url: str, path: str) -> socket.socket:
    """A client that asks for ``path`` and then stops reading (a slow mobile
    client, say): it becomes the collapse leader and never finishes."""
    host, port = edge_url.rsplit("/", 1)[1].rsplit(":", 1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    s.settimeout(10)
    if not s.recv(1024).startswith(b"HTTP/1.1 200"):
        raise BenchError("stalled leader: no 200 from the edge")
    return s


def bench_herd(args) -> str:
    rows = []
    with Stack() as st:
        origin, origin_url = st.origin()
        edge, edge_url = st.edge(origin_url, cache_dir=st.dir / "cache")
        nodisk, nodisk_url = st.edge(origin_url, name="edge-nodisk")
        big = args.herd_big
        cases = [
            ("2 KiB, origin answers after 100 ms", "slow", edge, edge_url, args.herd, False, None),
            ("4 MiB (streamed), origin answers after 100 ms", "slowbig", edge, edge_url, args.herd, False, 4 * MiB),
            ("4 MiB, edge without a disk tier (quick mode default)", "slowbig", nodisk, nodisk_url, args.herd, False,
             4 * MiB),
            (f"{big // MiB} MiB, Content-Length", f"big/cache/{big}", edge, edge_url, args.herd_large, False, big),
            (f"{big // MiB} MiB, chunked (no Content-Length)", f"big/chunked/{big}", edge, edge_url, args.herd_large,
             False, big),
        ]
        if args.slow_leader:
            cases.append(("32 MiB, first client stalls after the headers; then 20 requests", f"big/cache/{32 * MiB}",
                          edge, edge_url, 20, True, 32 * MiB))
        for label, kind, proc, url, n, stall, size in cases:
            path = f"/{kind}/herd-{uuid.uuid4().hex[:8]}"
            log(f"herd: {n} concurrent requests for {path}{' behind a stalled first client' if stall else ''}")
            leader = None
            time.sleep(0.3)  # let the previous row's disk writes settle before the RSS baseline
            start_rss = rss_kib(proc.pid)
            sampler = RssSampler(proc.pid, 0.02)
            sampler.start()
            try:
                if stall:
                    leader = _stalled_leader(url, path)
                    time.sleep(0.5)
                lat, kinds, wall = asyncio.run(_herd(url, path, n, size))
            finally:
                samples = sampler.stop()
                if leader is not None:
                    leader.close()
            origin_reqs = origin_stats(origin_url)["paths"].get(path, 0)
            growth = (max(samples + [start_rss]) - start_rss) / 1024
            rows.append([label, n, origin_reqs, "; ".join(f"{k}: {v}" for k, v in sorted(kinds.items())),
                         f"{min(lat) * 1000:.0f}", f"{statistics.median(lat) * 1000:.0f}", f"{pct(lat, 99) * 1000:.0f}",
                         f"{max(lat) * 1000:.0f}", f"{wall * 1000:.0f}", f"{growth:.1f}"])
    notes = [
        "aiohttp client, one connection per request (no pool limit), all requests released at once; the client "
        f"runs on core {LOAD_CORE} with the origin, the edge on core {EDGE_CORE}. Bodies are counted and checked "
        "for length, not kept.",
        "Expected origin requests: 1 (request collapsing). Latency includes the 100 ms the origin takes (the "
        f"{big // MiB} MiB rows: the origin streams at once, in 1 MiB writes).",
        "RSS growth: the edge's peak VmRSS during the row (sampled every 20 ms) minus its VmRSS before it.",
        "The edge runs with a disk tier (--cache-dir in a temp dir) so that the 4 MiB object is storable, except in "
        "the row that says otherwise (memory_max_object is 1 MiB, so a 4 MiB object needs the disk tier).",
    ]
    if args.slow_leader:
        notes.append("Stalled-leader row: origin requests include the stalled client's own.")
    headers = ["object", "concurrent requests", "origin requests", "answers (Cache-Status)", "min ms", "p50 ms", "p99 ms",
               "max ms", "burst wall ms", "RSS growth MiB"]
    return table("Herd: a burst for one cold URL", headers, rows, notes)


# ---------------------------------------------------------------- uncacheable


def quick_mode_share(origin_url: str) -> tuple[int, float, int]:
    """What one client address may hold of the origin's connections in
    quick mode (request_limits.origin_share of origins[].max_connections),
    as the edge computes it; with the share and the pool size."""
    sys.path.insert(0, str(REPO))
    from edge.filters.request_limits import share_of
    from edge.policy.sources import FileSource

    source = FileSource(None, tenant="default", quick_origin=origin_url)
    source.load()
    policy = source.current.resolve("127.0.0.1")
    limits = policy.filters.request_limits
    return share_of(limits, policy.origins), limits.origin_share, min(o.max_connections for o in policy.origins)


def bench_uncacheable(args) -> str:
    """Bursts for one URL whose answer turns out unstorable. The first burst
    cannot know that and queues behind its leader; later bursts should not.
    Run twice: one client address per request, and every request from one
    address, which holds only its share of the origin's connections."""
    rows = []
    n = 100
    with Stack() as st:
        origin, origin_url = st.origin()
        edge, edge_url = st.edge(origin_url)
        share, fraction, pool = quick_mode_share(origin_url)
        # 127.0.1.1 ... : any 127.0.0.0/8 address reaches the edge on 127.0.0.1.
        many = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(n)]
        for clients, sources in ((f"{n} (one per request)", many), ("1 (127.0.0.1)", ["127.0.0.1"])):
            path = f"/slownostore/burst-{uuid.uuid4().hex[:8]}"
            seen = 0
            for burst in range(1, args.bursts + 1):
                log(f"uncacheable: burst {burst} of {n} concurrent requests for {path} from {len(sources)} address(es)")
                lat, kinds, wall = asyncio.run(_herd(edge_url, path, n, sources=sources))
                total = origin_stats(origin_url)["paths"].get(path, 0)
                rows.append([clients, burst, n, total - seen, "; ".join(f"{k}: {v}" for k, v in sorted(kinds.items())),
                             f"{min(lat) * 1000:.0f}", f"{statistics.median(lat) * 1000:.0f}",
                             f"{max(lat) * 1000:.0f}", f"{wall * 1000:.0f}"])
                seen = total
    rounds = -(-n // share)
    notes = [
        f"One URL per client setting; the origin answers 2 KiB with Cache-Control: no-store after 200 ms. Each burst "
        f"releases {n} requests at once (aiohttp client, one connection per request); the next burst starts when the "
        f"previous one has finished. Client and origin on core {LOAD_CORE}, the edge (quick mode, one worker) on core "
        f"{EDGE_CORE}.",
        f"One client address may hold only {share} origin connections at once (request_limits.origin_share "
        f"{fraction:g} of the origin's max_connections {pool}); its further requests wait for its own to end. So a "
        f"burst of {n} from one address goes to the origin in ceil({n}/{share}) = {rounds} rounds (about "
        f"{rounds * 200} ms) however the edge collapses; the rows with one address per request show the collapsing "
        "alone.",
        "With one address per request: a burst that queues behind one leader takes two origin round trips (about "
        "400 ms); one that goes to the origin in parallel takes one (about 200 ms).",
    ]
    headers = ["client addresses", "burst", "concurrent requests", "origin requests", "answers (Cache-Status)", "min ms",
               "p50 ms", "max ms", "burst wall ms"]
    return table("Uncacheable URL: bursts for one URL answered no-store", headers, rows, notes)


# -------------------------------------------------------------------- bigfile


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(rss_kib(self.pid))
            self._halt.wait(self.interval)

    def stop(self) -> list[int]:
        self._halt.set()
        self.join()
        with contextlib.suppress(Exception):
            self.samples.append(rss_kib(self.pid))
        return self.samples


async def _download(url: str) -> tuple[int, float, int, str]:
    import aiohttp

    async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter()
        async with session.get(url) as resp:
            n = 0
            async for chunk in resp.content.iter_any():
                n += len(chunk)
            dt = time.perf_counter() - t0
            return n, dt, resp.status, resp.headers.get("Cache-Status", "")


def bench_bigfile(args) -> str:
    size = args.big_size
    rows = []
    with Stack() as st:
        origin, origin_url = st.origin()
        cache_dir = st.dir / "cache"
        edge, edge_url = st.edge(origin_url, cache_dir=cache_dir)
        # One small request through every path first, so the start RSS
        # includes what any running node has loaded (client session, etc.).
        http_get(edge_url + "/2k/warm")
        http_get(edge_url + "/nostore/warm")
        run = uuid.uuid4().hex[:8]
        cacheable = f"/big/cache/{size}/{run}"
        cases = [
            ("(a) uncacheable (no-store), pass-through", f"/big/nostore/{size}/{run}"),
            ("(b) cacheable, streamed to the disk tier", cacheable),
            ("(c) disk-tier hit of (b)", cacheable),
        ]
        for label, path in cases:
            time.sleep(0.3)
            sampler = RssSampler(edge.pid)
            start_rss = rss_kib(edge.pid)
            sampler.start()
            log(f"bigfile: {label}: GET {path}")
            with CpuWatch({"edge": edge.pid, "origin": origin.pid}) as cw:
                n, dt, status, cs = asyncio.run(_download(edge_url + path))
            samples = sampler.stop()
            if n != size:
                raise BenchError(f"{label}: got {n} bytes of {size} (status {status}, {cs})")
            peak = max(samples + [start_rss])
            end = samples[-1]
            growth = (peak - start_rss) / 1024
            rows.append([label, cs, f"{n / 1e6 / dt:,.0f}", f"{dt:.2f}", f"{start_rss / 1024:.1f}", f"{peak / 1024:.1f}",
                         f"{end / 1024:.1f}", f"{growth:.1f}", "yes" if growth < 64 else "**NO**", len(samples),
                         ", ".join(f"{k} {v * 100:.0f}%" for k, v in cw.cpu.items()), f"{cw.other * 100:.0f}%"])
            if "(b)" in label:
                # The entry is committed just after the client got its last
                # byte; (c) would be a collapsed hit if it came first.
                time.sleep(1.0)
        du = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
    notes = [
        f"Object: {size / GiB:g} GiB generated by the origin in 1 MiB writes (Content-Length known). The client (aiohttp, "
        "iter_any, bytes discarded) and the origin share core 1; the edge has core 0.",
        "RSS: VmRSS of the edge process from /proc/PID/status every 100 ms; start = just before the request; "
        "end = after the download. Target: growth < 64 MiB.",
        f"The edge runs with --cache-dir in a temp dir; the disk tier held {du / 1e6:,.0f} MB after the run.",
    ]
    headers = ["case", "Cache-Status", "MB/s", "seconds", "start RSS MiB", "peak RSS MiB", "end RSS MiB", "growth MiB",
               "< 64 MiB", "RSS samples", "CPU", "other load"]
    return table(f"{size / GiB:g} GiB through the edge: memory and throughput", headers, rows, notes)


# -------------------------------------------------------------------- profile


def bench_profile(args) -> str:
    require_wrk()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise BenchError("py-spy is not installed; `pip install py-spy`")
    with Stack() as st:
        origin, origin_url = st.origin()
        edge, edge_url = st.edge(origin_url)
        url = edge_url + "/2k/hit"
        http_get(url)
        http_get(url)
        raw = st.dir / "profile.txt"
        prof_cmd = [pyspy, "record", "--pid", str(edge.pid), "--format", "raw", "--rate", str(args.rate),
                    "--duration", str(args.duration), "--output", str(raw)]
        if not args.blocking:
            prof_cmd.append("--nonblocking")
        if args.native:
            prof_cmd.append("--native")
        prof = subprocess.Popen(pinned(prof_cmd, LOAD_CORE), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            log(f"profile: py-spy on the edge while wrk runs {args.duration}s of 2 KiB hits")
            r = run_wrk(url, st.dir, duration=args.duration, watch={"edge": edge.pid})
            _, err = prof.communicate(timeout=args.duration + 30)
        finally:
            if prof.poll() is None:
                prof.kill()
        if not raw.exists():
            raise BenchError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
        if args.keep:
            shutil.copy(raw, args.keep)
        text = raw.read_text()
    return profile_report(text, r, args)


_LIFECYCLE = ("edge/__main__.py", "edge/cli.py", "edge/app.py")


def _is_edge(frame_file: str) -> bool:
    """Request-path code of the edge (not the frames that start the loop)."""
    rel = frame_file.replace(f"{REPO}/", "")
    return rel.startswith("edge/") and rel not in _LIFECYCLE


def profile_report(text: str, r: dict, args, what: str = "2 KiB hits", unit: str = "req/s") -> str:
    """Self and inclusive time per function, and self time per line of edge/
    code, from py-spy's raw (collapsed stack) output; ``what`` names the load, ``unit`` its rate."""
    selfc: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    lines: collections.Counter = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        names = []
        for f in stack.split(";"):
            fn, _, loc = f.partition(" (")
            file, _, lineno = loc.rstrip(")").rpartition(":")
            names.append((f"{fn} ({file or loc.rstrip(')')})", file, lineno))
        selfc[names[-1][0]] += c
        for name in {n[0] for n in names}:
            incl[name] += c
        # Self time per edge line: the innermost edge frame of the stack is
        # charged for everything below it that is not edge code.
        for name, file, lineno in reversed(names):
            if _is_edge(file):
                lines[f"{file}:{lineno} {name.split(' (')[0]}"] += c
                break
    if not total:
        raise BenchError("py-spy recorded no samples")

    def short(name: str) -> str:
        return name.replace(str(REPO) + "/", "").replace(sys.prefix + "/lib/python3.11/site-packages/", "").replace(sys.prefix, "<py>")

    rows = [[i + 1, short(name), f"{c / total * 100:.1f}", f"{incl[name] / total * 100:.1f}"]
            for i, (name, c) in enumerate(selfc.most_common(args.top))]
    out = table(
        f"py-spy: the edge during {what} ({r['rps']:,.0f} {unit} under the profiler, {total:,} samples)",
        ["#", "function (file)", "self %", "inclusive %"], rows,
        ["Self time: samples whose innermost Python frame is that function (idle samples excluded); without "
         "--native, time in C code (uvloop, multidict, syscalls) is charged to the Python function that called it. "
         "--nonblocking samples can be torn (a frame missing), so inclusive figures are approximate.",
         f"py-spy record --rate {args.rate}{'' if args.blocking else ' --nonblocking'}{' --native' if args.native else ''} --format raw; "
         "the profiler costs throughput itself, so req/s here is not the benchmark figure.",
         f"other load during the run: {r['other'] * 100:.0f}% of a core; edge CPU {r['cpu']['edge'] * 100:.0f}%."])
    edge_funcs = sorted(((n, c) for n, c in incl.items() if _is_edge(n.rpartition(" (")[2].rstrip(")"))),
                        key=lambda x: -x[1])[: args.top]
    out += "\n| edge function | inclusive % |\n| --- | --- |\n"
    out += "".join(f"| {short(n)} | {c / total * 100:.1f} |\n" for n, c in edge_funcs)
    out += "\n| edge line (innermost edge frame: its own work and the library/C calls it makes) | % |\n| --- | --- |\n"
    out += "".join(f"| {short(n)} | {c / total * 100:.1f} |\n" for n, c in lines.most_common(args.top))
    return out


# ------------------------------------------------------------------------ geo

GEO_COUNTRIES = ("DE", "US", "FR")
GEO_DE_ONLY = {"allow_countries": ["DE"], "unknown": "deny"}
GEO_PATH = "/2k/geo-hit"
GEO_SHORT_LOOP = 20_000  # calls per timed loop where no distinct addresses are needed


def write_geo_db(path: Path, networks: int, seed: int = 24) -> tuple[dict[str, list[tuple[int, int, int]]], set]:
    """A test country MMDB written with tests/geo_support.write_country_db:
    ``networks`` random IPv4 /24s mapped to DE, US, FR in turn, plus
    127.0.0.0/8 -> DE (wrk's source address: the lookup and the allow-list
    check run and the request is delivered) and 127.0.0.2/32 -> US (a probe
    that a Germany-only edge must refuse). Returns the /24s per country (as
    (a, b, c) octet triples) and the set of all of them."""
    sys.path.insert(0, str(REPO))
    try:
        from tests.geo_support import write_country_db
    except ImportError as exc:
        raise BenchError(f"geo: cannot write the test database ({exc}); install the test extras: pip install -e '.[test]'")
    rng = random.Random(seed)
    by_country: dict[str, list[tuple[int, int, int]]] = {c: [] for c in GEO_COUNTRIES}
    seen: set[tuple[int, int, int]] = set()
    mapping: dict[str, str | None] = {}
    while len(seen) < networks:
        net = (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256))
        if net[0] in (10, 127) or net in seen:
            continue
        country = GEO_COUNTRIES[len(seen) % len(GEO_COUNTRIES)]
        seen.add(net)
        by_country[country].append(net)
        mapping["%d.%d.%d.0/24" % net] = country
    mapping["127.0.0.0/8"] = "DE"
    mapping["127.0.0.2/32"] = "US"
    write_country_db(path, mapping)
    return by_country, seen


def _hosts_in(rng: random.Random, nets: list[tuple[int, int, int]], n: int) -> list[str]:
    """``n`` distinct host addresses inside the given /24s, in random order."""
    out: set[str] = set()
    while len(out) < n:
        a, b, c = rng.choice(nets)
        out.add(f"{a}.{b}.{c}.{rng.randrange(1, 255)}")
    addrs = sorted(out)
    rng.shuffle(addrs)
    return addrs


def _free_nets(rng: random.Random, taken: set, n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct random /24s (first octet 1..223, not 10 or 127) outside ``taken``."""
    out: set[tuple[int, int, int]] = set()
    while len(out) < n:
        net = (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256))
        if net[0] not in (10, 127) and net not in taken:
            out.add(net)
    return sorted(out)


def _ns_per_call(stmt: str, ns: dict, repeat: int) -> float:
    """Best of ``repeat`` timeit runs of ``stmt`` (a loop over ``ns["L"]``), in
    ns per call. One unmeasured run first: caches filled, an LRU in steady state."""
    timer = timeit.Timer(stmt, globals=ns)
    timer.timeit(1)
    return min(timer.repeat(repeat, 1)) / len(ns["L"]) * 1e9


def fmt_ns(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns < 1000 else f"{ns / 1000:,.2f} µs"


def bench_geo_decisions(args, db_path: Path, by_country: dict, mapped: set) -> str:
    """In-process cost of the Germany-only decision per request: the country
    lookup, decide(), and DeliveryFilter.check as the filter chain calls it."""
    import logging
    from types import SimpleNamespace

    from edge.filters.delivery import DeliveryFilter
    from edge.geo.db import GeoDB, find_default_database
    from edge.geo.decide import Outcome, decide
    from edge.policy import parse_policy

    n, repeat = args.geo_calls, args.geo_repeat  # n: distinct addresses for the uncached rows
    k = min(n, GEO_SHORT_LOOP)  # calls per loop of the other rows
    rng = random.Random(7)
    db = GeoDB(db_path)
    if n <= db.cache_size:
        raise BenchError(f"geo: --geo-calls must exceed the GeoDB cache ({db.cache_size:,}) for uncached lookups")
    reader = type(db._active.reader)
    reader_kind = f"{reader.__module__}.{reader.__name__}"
    all_nets = [net for c in GEO_COUNTRIES for net in by_country[c]]
    de_addrs = _hosts_in(rng, by_country["DE"], n)
    mixed_addrs = _hosts_in(rng, all_nets, n)
    unmapped_addrs = _hosts_in(rng, _free_nets(rng, mapped, 20000), n)
    exempt_nets = _free_nets(rng, mapped, 10_000)
    exempt_addrs = _hosts_in(rng, exempt_nets, n)
    de_one, us_one = de_addrs[0], _hosts_in(rng, by_country["US"], 1)[0]
    for addr, want in ((de_one, "DE"), (us_one, "US"), (unmapped_addrs[0], None), ("127.0.0.1", "DE")):
        if db.country(addr) != want:
            raise BenchError(f"geo: test database answers {db.country(addr)!r} for {addr}, expected {want!r}")

    def policy(delivery: dict | None):
        return parse_policy({"delivery": delivery} if delivery else {}, tenant="shop", source="bench",
                            quick_origin="http://127.0.0.1:1")

    exempt_cidrs = ["%d.%d.%d.0/24" % net for net in exempt_nets]
    ranges = 0
    pol = {
        "none": policy(None),
        "de": policy(GEO_DE_ONLY),
        "de_edge": policy({**GEO_DE_ONLY, "edge_countries": ["DE"]}),
        "de_exempt": policy({**GEO_DE_ONLY, "exempt_cidrs": exempt_cidrs}),
    }
    if len(pol["de_exempt"].delivery.exempt_cidrs) != 10_000:
        raise BenchError("geo: the exempt CIDR list was not parsed to 10,000 networks")
    with contextlib.suppress(Exception):  # private detail, for the note only
        ranges = len(pol["de_exempt"].delivery.exempt_cidrs._v4[0])

    def noop(_a):
        return None

    rows: list[list] = []

    def row(function: str, case: str, stmt: str, ns: dict, detail: str) -> float:
        t = _ns_per_call(stmt, ns, repeat)
        rows.append([function, case, fmt_ns(t), f"{1e9 / t:,.0f}", detail])
        return t

    log(f"geo: in-process timings ({n:,} calls per loop for uncached lookups, {k:,} otherwise; best of {repeat})")
    base = row("(loop overhead)", "`for a in L: noop(a)`", "for a in L: noop(a)", {"L": de_addrs[:k], "noop": noop},
               "the bare loop and one Python call; included in every row below")

    # GeoDB.country
    loop = "for a in L: db.country(a)"
    row("GeoDB.country", "cached (one DE address)", loop, {"L": [de_one] * k, "db": db}, "LRU hit: dict get + move_to_end")
    row("GeoDB.country", "uncached, address in a mapped /24", loop, {"L": mixed_addrs, "db": db},
        f"{n:,} distinct addresses > LRU size {db.cache_size:,}: each call parses, looks up, inserts and evicts")
    row("GeoDB.country", "uncached, address in no network", loop, {"L": unmapped_addrs, "db": db},
        "not in the database: None (also cached)")
    geoacumen = find_default_database()
    acu_note = "Geoacumen (python-geoacumen) not installed: its rows are left out"
    if geoacumen is not None:
        gdb = GeoDB(geoacumen)
        acu_set: set[str] = set()
        while len(acu_set) < n:
            a = rng.randrange(1, 224)
            if a not in (10, 127):
                acu_set.add(f"{a}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
        acu_addrs = sorted(acu_set)
        rng.shuffle(acu_addrs)
        known = sum(1 for a in acu_addrs[:2000] if gdb.country(a)) / 2000
        gdb = GeoDB(geoacumen)  # fresh cache
        acu_one = next(a for a in acu_addrs if gdb.country(a))
        row("GeoDB.country", "Geoacumen DB, cached", loop, {"L": [acu_one] * k, "db": gdb}, "LRU hit")
        row("GeoDB.country", "Geoacumen DB, uncached", loop, {"L": acu_addrs, "db": gdb},
            f"{n:,} distinct random public IPv4 addresses ({known * 100:.0f}% with a country)")
        meta = gdb.metadata
        acu_note = (f"Geoacumen rows: the bundled `{geoacumen.name}` ({meta.database_type}, built "
                    f"{time.strftime('%Y-%m-%d', time.gmtime(meta.build_epoch))}, {meta.node_count:,} nodes, "
                    f"{geoacumen.stat().st_size / MiB:.1f} MiB).")

    # decide()
    checks = [
        ("unrestricted tenant (no delivery section)", "none", "DE", de_addrs, Outcome.DELIVER, "returns at `delivery.active`"),
        ("DE only, DE client: allowed", "de", "DE", de_addrs, Outcome.DELIVER, "allow-list check"),
        ("DE only, US client: refused", "de", "US", de_addrs, Outcome.BLOCK, "451 (shared constant decision)"),
        ("DE only, no country: refused", "de", None, de_addrs, Outcome.BLOCK, "`unknown: deny`"),
        ("DE only + edge_countries DE, DE client", "de_edge", "DE", de_addrs, Outcome.DELIVER, "node check + allow list"),
        ("DE only + 10,000 exempt CIDRs, DE client not exempt", "de_exempt", "DE", de_addrs, Outcome.DELIVER,
         "exempt check misses (bisect over 10,000 ranges), then allow list"),
        ("DE only + 10,000 exempt CIDRs, exempt client", "de_exempt", "US", exempt_addrs, Outcome.DELIVER,
         "exempt check hits"),
    ]
    stmt = "for a in L: decide(d, client_ip=a, country=c, node_country='DE', path_and_query='/2k/geo')"
    for case, key, country, addrs, want, detail in checks:
        d = pol[key].delivery
        got = decide(d, client_ip=addrs[0], country=country, node_country="DE", path_and_query="/2k/geo").outcome
        if got is not want:
            raise BenchError(f"geo: decide() for {case!r} gave {got}, expected {want}")
        row("decide()", case, stmt, {"L": addrs[:k], "decide": decide, "d": d, "c": country},
            f"{detail}; distinct client addresses")

    # The part of check that neither the lookup nor decide() covers: the decision counter.
    from edge.observe.metrics import DELIVERY_DECISIONS, tally

    row("counter", "`tally(DELIVERY_DECISIONS, ...).inc()`",
        "for a in L: t.inc()",
        {"L": de_addrs[:k], "t": tally(DELIVERY_DECISIONS, "shop", "DE", "deliver", "countries")},
        "the tally every active decision bumps (added to the prometheus counter in batches)")

    # DeliveryFilter.check, as FilterChain calls it (GeoDB lookup + decide + metrics counter).
    filt = DeliveryFilter(db, "DE", "bench")
    request = SimpleNamespace(raw_path="/2k/geo", method="GET")
    cached_de = [SimpleNamespace(peer=de_one)] * k
    cached_us = [SimpleNamespace(peer=us_one)] * k
    uncached_de = [SimpleNamespace(peer=a) for a in de_addrs]
    exempt_ctx = [SimpleNamespace(peer=exempt_addrs[0])] * k
    fcases = [
        ("unrestricted tenant", "none", cached_de, None, "returns at `delivery.active`: no lookup"),
        ("DE only, DE client, cached lookup", "de", cached_de, None, "delivered"),
        ("DE only, DE client, uncached lookup", "de", uncached_de, None, f"{n:,} distinct DE addresses; delivered"),
        ("DE only, US client, cached lookup: refused", "de", cached_us, 451,
         "Verdict built; refusal log line skipped (logger at WARNING)"),
        ("DE only + edge_countries DE, DE client, cached", "de_edge", cached_de, None, "delivered"),
        ("DE only + 10,000 exempt CIDRs, DE client, cached", "de_exempt", cached_de, None, "exempt miss; delivered"),
        ("DE only + 10,000 exempt CIDRs, exempt client, cached", "de_exempt", exempt_ctx, None,
         "the lookup runs before the exempt check; delivered"),
    ]
    fstmt = "for c in L: f.check(req, c, p)"
    for case, key, ctxs, want, detail in fcases:
        verdict = filt.check(request, ctxs[0], pol[key])
        if (verdict.status if verdict else None) != want:
            raise BenchError(f"geo: DeliveryFilter.check for {case!r} gave {verdict}, expected {want}")
        row("DeliveryFilter.check", case, fstmt, {"L": ctxs, "f": filt, "req": request, "p": pol[key]}, detail)
    # The refusal with the node's default log level (info): one log line per refused request.
    dlog = logging.getLogger("edge.delivery")
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    dlog.addHandler(handler)
    dlog.setLevel(logging.INFO)
    dlog.propagate = False
    try:
        row("DeliveryFilter.check", "DE only, US client, cached lookup: refused, logged", fstmt,
            {"L": cached_us, "f": filt, "req": request, "p": pol["de"]},
            "as above plus the INFO log line (node default `log.level = info`), written to /dev/null")
    finally:
        dlog.removeHandler(handler)
        dlog.setLevel(logging.NOTSET)
        dlog.propagate = True
        handler.stream.close()

    notes = [
        f"Test database: `tests/geo_support.write_country_db`, {sum(len(v) for v in by_country.values()):,} random "
        f"IPv4 /24s mapped to DE/US/FR in turn plus 127.0.0.0/8 -> DE and 127.0.0.2/32 -> US "
        f"({db_path.stat().st_size / KiB:,.0f} KiB, {db.metadata.node_count:,} nodes); reader `{reader_kind}` "
        "(GeoDB's default MODE_AUTO); GeoDB LRU of "
        f"{db.cache_size:,} entries (the default).",
        acu_note,
        f"Each figure: `timeit` of a loop over a list ({n:,} distinct addresses for the uncached lookups, {k:,} calls "
        f"otherwise), one unmeasured warm-up loop, best of {repeat} loops, divided by the calls; the loop itself costs "
        f"{fmt_ns(base)} per iteration (first row) and is included. calls/s: on one core, for that function alone.",
        "Uncached: the list holds more distinct addresses than the LRU has entries, so in steady state every call "
        "misses, looks the address up in the MMDB and evicts the oldest entry.",
        "decide(): the country is passed in (as the filter passes the lookup's result); node country DE. "
        f"Exempt networks: 10,000 random /24s ({f'{ranges:,}' if ranges else '?'} IPv4 ranges after merging).",
        "DeliveryFilter.check: fake request (`raw_path`) and ctx (`peer`), policies from `edge.policy.parse_policy("
        "{...}, tenant=\"shop\", source=\"bench\", quick_origin=\"http://127.0.0.1:1\")`; includes the prometheus "
        "counter `edge_delivery_decisions_total` increment that every active decision makes (its own row): a "
        "delivered check is the cached lookup + decide() + that counter + the filter's own code.",
        f"In-process, single thread, the benchmark driver on core {LOAD_CORE if can_pin() else '(not pinned)'}.",
    ]
    return table("Germany-only delivery: decision cost per request (in-process)",
                 ["function", "case", "per call", "calls/s", "detail"], rows, notes)


def _status_from(edge_url: str, path: str, source: str) -> int:
    """The status of one GET sent from the local address ``source``."""
    import http.client

    host, port = edge_url.rsplit("/", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _pct_change(value: float, base: float) -> str:
    return f"{(value / base - 1) * 100:+.1f}%" if base else "-"


def bench_geo_hit(args, db_path: Path) -> str:
    """2 KiB hit throughput with a Germany-only delivery policy versus none."""
    require_wrk()
    cases = [
        ("(a) no policy file: unrestricted", None),
        ("(b) Germany only", {"delivery": GEO_DE_ONLY}),
        ("(c) Germany only + edge_countries DE", {"delivery": {**GEO_DE_ONLY, "edge_countries": ["DE"]}}),
    ]
    rows, runs, notes = [], [], []
    with Stack() as st:
        origin, origin_url = st.origin()
        edges = []
        for i, (label, pol) in enumerate(cases):
            extra = ["--geoip", str(db_path), "--node-country", "DE"]  # Stack.edge adds --no-access-log
            if pol is not None:
                pf = st.dir / f"geo-policy-{i}.json"
                pf.write_text(json.dumps(pol))
                extra += ["--policy", str(pf)]
            log(f"geo: starting edge {label}")
            edge, edge_url = st.edge(origin_url, name=f"edge-geo{i}", extra=extra)
            url = edge_url + GEO_PATH
            for _ in range(2):
                status, headers, _ = http_get(url)
            cs = headers.get("Cache-Status", "")
            if status != 200 or "hit" not in cs or "fwd=" in cs:
                raise BenchError(f"{label}: {url} is not a hit after warming: {status} {cs!r}")
            # The geo check really runs: 127.0.0.2 is US in the test database.
            probe = _status_from(edge_url, GEO_PATH, "127.0.0.2")
            want = 200 if pol is None else 451
            if probe != want:
                raise BenchError(f"{label}: a request from 127.0.0.2 (US) got {probe}, expected {want}")
            edges.append((label, edge, url))
        # Rounds a, b, c, a, b, c, ...: a slow drift of the machine hits every case alike.
        results: dict[str, list[dict]] = {label: [] for label, _, _ in edges}
        before = origin_stats(origin_url)["total"]
        for rnd in range(max(1, args.repeat)):
            for label, edge, url in edges:
                log(f"geo: wrk {label}, {args.duration}s (round {rnd + 1}/{max(1, args.repeat)})")
                results[label].append(run_wrk(url, st.dir, duration=args.duration, watch={"edge": edge.pid}))
        origin_reqs = origin_stats(origin_url)["total"] - before
        if origin_reqs:
            notes.append(f"**{origin_reqs} requests reached the origin during the runs**")
    base = None
    for label, _, _ in edges:
        r = max(results[label], key=lambda x: x["rps"])
        r["all_rps"] = [x["rps"] for x in results[label]]
        first = base is None
        base = base or r
        rows.append([label, fmt_rps(r), "(baseline)" if first else _pct_change(r["rps"], base["rps"]), ms(r["p50"]),
                     "-" if first else _pct_change(r["p50"], base["p50"]), ms(r["p90"]), ms(r["p99"]),
                     "-" if first else _pct_change(r["p99"], base["p99"]), ms(r["max"]), fmt_errors(r), fmt_cpu(r),
                     fmt_other(r)])
        runs.append((label.split(" ", 1)[0], r["all_rps"]))
    notes = [
        f"wrk -t1 -c50 -d{args.duration}s --latency on a 2 KiB memory hit, against `python -m edge serve --origin ... "
        f"--listen ... --workers 1 --no-access-log --geoip TESTDB --node-country DE [--policy P]` (quick mode); "
        "the object is warmed and checked to be a hit, the origin's counter is checked unchanged after the runs.",
        f"P: (b) `{json.dumps({'delivery': GEO_DE_ONLY})}`; (c) the same plus `\"edge_countries\": [\"DE\"]`. "
        "The test database (see the table above) maps 127.0.0.0/8 to DE, so wrk's requests (from 127.0.0.1) "
        "go through the country lookup and the allow-list check and are delivered; no exempt networks.",
        "Checked before the runs: a request from 127.0.0.2 (US in the test database) gets 451 from (b) and (c) "
        "and 200 from (a).",
        "All of wrk's requests come from one address, so every lookup is a GeoDB LRU hit: this is the cached "
        "path of the table above. Clients from many addresses add the uncached lookup cost for each new address.",
        "Δ: change against (a), in % (negative req/s, positive latency = slower). The three edges run side by side "
        "(the idle ones on the same core) and the wrk runs alternate a, b, c, a, b, c, ...; each row shows its "
        "fastest run.",
        *wrk_notes(args, runs),
        *notes,
    ]
    headers = ["case", "req/s", "Δ req/s", "p50 ms", "Δ p50", "p90 ms", "p99 ms", "Δ p99", "max ms", "errors", "CPU",
               "other load"]
    return table("Germany-only delivery: 2 KiB hits with and without the policy (wrk, 50 connections, one worker "
                 "on one core)", headers, rows, notes)


def bench_geo(args) -> str:
    with tempfile.TemporaryDirectory(prefix="edge-bench-geo-") as tmp:
        db_path = Path(tmp) / "geo-test.mmdb"
        log(f"geo: writing a test database with {args.geo_networks:,} /24 networks")
        by_country, mapped = write_geo_db(db_path, args.geo_networks)
        decisions = bench_geo_decisions(args, db_path, by_country, mapped)
        hits = bench_geo_hit(args, db_path)
    return decisions + "\n" + hits


# ---------------------------------------------------------------------- chain

# What a current desktop Chrome sends for a page, with a session cookie;
# Accept-Encoding identity so the 2 KiB rows measure the chain, not a variant.
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
              "application/signed-exchange;v=b3;q=0.7",
    "Accept-Language": "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
    "Accept-Encoding": "identity",
    "Cookie": "sid=9f86d081884c7d659a2feaa0c55ad015; lang=de",
    "Referer": "https://shop.example.de/de/produkte/schuhe?page=1",
}
CHAIN_OFF = {"filters": {"waf": {"mode": "off"}, "request_limits": {"mode": "off"}}}
CHAIN_QUERY = "q=red+shoes&page=2&sort=price&size=42&color=blue"
HTML_SIZE = 30 * KiB


def html_page() -> bytes:
    """The generated HTML page of benchmarks/compress.py (seeded: the same bytes every run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edge_bench_compress", Path(__file__).resolve().parent / "compress.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.html_body(HTML_SIZE)


def _warm_hit(url: str, headers: dict, label: str, encoding: str | None = None) -> tuple[dict, bytes]:
    """Two requests; the second must be a hit (with ``encoding`` as its Content-Encoding if given)."""
    for _ in range(2):
        status, got, body = http_get(url, headers=headers)
    cs = got.get("Cache-Status", "")
    if status != 200 or "hit" not in cs or "fwd=" in cs:
        raise BenchError(f"{label}: {url} is not a hit after warming: {status} {cs!r}")
    if encoding is not None and got.get("Content-Encoding", "identity") != encoding:
        raise BenchError(f"{label}: {url} with Accept-Encoding {headers.get('Accept-Encoding')!r} is a hit with "
                         f"Content-Encoding {got.get('Content-Encoding')!r}, expected {encoding!r}")
    return got, body


def bench_chain_hits(args) -> str:
    """2 KiB hits with browser headers: the default filter chain against none."""
    require_wrk()
    rows, runs, notes = [], [], []
    with Stack() as st:
        origin, origin_url = st.origin()
        pf = st.dir / "chain-off.json"
        pf.write_text(json.dumps(CHAIN_OFF))
        log("chain: starting edge (default policy) and edge (chain off)")
        on, on_url = st.edge(origin_url, name="edge-chain-on")
        off, off_url = st.edge(origin_url, name="edge-chain-off", extra=["--policy", str(pf)])
        # A request the WAF blocks tells the two edges apart: the chain really is on, and really off.
        probe = "/2k/probe?q=1%27%20UNION%20SELECT%20password%20FROM%20users--"
        got = (http_get(on_url + probe, headers=BROWSER_HEADERS)[0], http_get(off_url + probe, headers=BROWSER_HEADERS)[0])
        if got != (403, 200):
            raise BenchError(f"chain: an SQL injection probe got {got[0]} (default policy) and {got[1]} (chain off), "
                             "expected 403 and 200")
        cases = [
            ("(a) default policy", on, on_url + "/2k/hit"),
            ("(b) chain off", off, off_url + "/2k/hit"),
            ("(c) default policy, 5-argument query", on, on_url + "/2k/hit?" + CHAIN_QUERY),
            ("(d) chain off, 5-argument query", off, off_url + "/2k/hit?" + CHAIN_QUERY),
        ]
        for label, _, url in cases:
            _warm_hit(url, BROWSER_HEADERS, label)
        # Rounds a, b, c, d, a, ...: a slow drift of the machine hits every case alike.
        results: dict[str, list[dict]] = {label: [] for label, _, _ in cases}
        before = origin_stats(origin_url)["total"]
        rounds = max(1, args.repeat)
        for rnd in range(rounds):
            for label, edge, url in cases:
                log(f"chain: wrk {label}, {args.duration}s (round {rnd + 1}/{rounds})")
                results[label].append(run_wrk(url, st.dir, duration=args.duration, watch={"edge": edge.pid},
                                              headers=BROWSER_HEADERS))
        origin_reqs = origin_stats(origin_url)["total"] - before
        if origin_reqs:
            notes.append(f"**{origin_reqs} requests reached the origin during the runs**")
    best = {}
    for label, _, _ in cases:
        r = max(results[label], key=lambda x: x["rps"])
        r["all_rps"] = [x["rps"] for x in results[label]]
        best[label] = r
        runs.append((label.split(" ", 1)[0], r["all_rps"]))
    labels = [label for label, _, _ in cases]
    for i, label in enumerate(labels):
        r = best[label]
        if i % 2 == 0:  # chain on: its cost against the next row
            off_r = best[labels[i + 1]]
            cost = f"{(1 - r['rps'] / off_r['rps']) * 100:+.1f}%"
            us = f"{1e6 / r['rps'] - 1e6 / off_r['rps']:+.1f}"
        else:
            cost, us = "(baseline)", "-"
        rows.append([label, fmt_rps(r), cost, us, ms(r["p50"]), ms(r["p90"]), ms(r["p99"]), ms(r["max"]),
                     fmt_errors(r), fmt_cpu(r), fmt_other(r)])
    worst = max(1 - best[labels[0]]["rps"] / best[labels[1]]["rps"], 1 - best[labels[2]]["rps"] / best[labels[3]]["rps"])
    notes = [
        f"wrk -t1 -c50 -d{args.duration}s --latency on a 2 KiB memory hit, against `python -m edge serve --origin ... "
        "--listen ... --workers 1 --no-access-log [--policy P]` (quick mode). (a), (c): no policy file, the chain as "
        "shipped (request limits on, WAF in block mode: the cheap pass on every hit); (b), (d): P = "
        f"`{json.dumps(CHAIN_OFF)}`.",
        "Every request carries a browser's header fields (wrk.headers): " + "; ".join(
            f"{k}: {v}" for k, v in BROWSER_HEADERS.items()) + ". (c), (d) ask for `/2k/hit?" + CHAIN_QUERY + "`.",
        "Checked before the runs: each URL is a hit with these headers; an SQL injection probe gets 403 from the "
        "default policy and 200 with the chain off. The origin's counter is checked unchanged after the runs.",
        "chain cost: 1 - req/s(on) / req/s(off) of the pair; µs/req: 1e6/req/s(on) - 1e6/req/s(off), the chain's "
        "CPU per request on the edge's saturated core. The two edges run side by side (the idle one on the same "
        "core) and the wrk runs alternate a, b, c, d, a, ...; each row shows its fastest run.",
        f"Target: default chain on hits costs under 10% of hit throughput: "
        f"{'**met**' if worst < 0.10 else '**NOT met**'} (worst pair {worst * 100:.1f}%).",
        *wrk_notes(args, runs),
        *notes,
    ]
    headers = ["case", "req/s", "chain cost", "µs/req", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "CPU",
               "other load"]
    return table("Filter chain on 2 KiB hits with browser headers, on and off (wrk, 50 connections, one worker "
                 "on one core)", headers, rows, notes)


def bench_chain_compressed(args) -> str:
    """Hits on a stored br or gzip variant against identity hits of the same page."""
    require_wrk()
    cases = [
        ("identity hit", "identity", "identity"),
        ("br hit", "gzip, deflate, br", "br"),
        ("gzip hit", "gzip", "gzip"),
    ]
    rows, runs, notes, sizes = [], [], [], {}
    with Stack() as st:
        origin, origin_url = st.origin()
        log("chain: starting edge (default policy) for compressed hits")
        edge, edge_url = st.edge(origin_url, name="edge-compressed")
        url = edge_url + "/html/page"
        # Identity first (the miss stores it), then one br request: the edge compresses
        # once and stores the variant; the second br request must be a hit on it.
        ident = {**BROWSER_HEADERS, "Accept-Encoding": "identity"}
        status, _, _ = http_get(url, headers=ident)
        if status != 200:
            raise BenchError(f"compressed: {url} answered {status}")
        status, got, _ = http_get(url, headers={**BROWSER_HEADERS, "Accept-Encoding": "br"})
        if status != 200:
            raise BenchError(f"compressed: {url} with Accept-Encoding br answered {status}")
        for label, accept, coding in cases:
            got, body = _warm_hit(url, {**BROWSER_HEADERS, "Accept-Encoding": accept}, label, coding)
            sizes[label] = len(body)
        if sizes["identity hit"] != HTML_SIZE:
            raise BenchError(f"compressed: the identity hit has {sizes['identity hit']} bytes, expected {HTML_SIZE}")
        before = origin_stats(origin_url)["total"]
        rounds = max(1, args.repeat)
        results: dict[str, list[dict]] = {label: [] for label, _, _ in cases}
        for rnd in range(rounds):
            for label, accept, _ in cases:
                log(f"chain: wrk {label}, {args.duration}s (round {rnd + 1}/{rounds})")
                results[label].append(run_wrk(url, st.dir, duration=args.duration, watch={"edge": edge.pid},
                                              headers={**BROWSER_HEADERS, "Accept-Encoding": accept}))
        origin_reqs = origin_stats(origin_url)["total"] - before
        if origin_reqs:
            notes.append(f"**{origin_reqs} requests reached the origin during the runs**")
    base = None
    for label, accept, coding in cases:
        r = max(results[label], key=lambda x: x["rps"])
        r["all_rps"] = [x["rps"] for x in results[label]]
        first = base is None
        base = base or r
        ratio = sizes["identity hit"] / sizes[label]
        rows.append([label, f"`{accept}`", coding, f"{sizes[label]:,}", f"{ratio:.2f}", fmt_rps(r),
                     "(baseline)" if first else _pct_change(r["rps"], base["rps"]), f"{r['mbps']:,.1f}",
                     ms(r["p50"]), ms(r["p99"]), fmt_errors(r), fmt_cpu(r), fmt_other(r)])
        runs.append((label.split(" ", 1)[0], r["all_rps"]))
    notes = [
        f"wrk -t1 -c50 -d{args.duration}s --latency on `/html/page`: a generated {HTML_SIZE // KiB} KiB HTML page "
        "(benchmarks/compress.py, seeded), `Content-Type: text/html; charset=utf-8`, `Cache-Control: max-age=3600`; "
        "edge in quick mode with the default policy (filter chain on), access log off. The browser header fields "
        "of the table above, with the Accept-Encoding shown.",
        "Warming: one identity request (the miss that stores the page), one `Accept-Encoding: br` request (the edge "
        "compresses once, brotli quality 5, and stores the variant beside the identity copy); then each row's "
        "request twice, the second checked to be a hit with the Content-Encoding shown (`gzip, deflate, br` is "
        "bucketed to br). The origin's counter is checked unchanged after the runs.",
        "body bytes: what one response carries; ratio: identity bytes / these bytes. MB/s counts what wrk read "
        "(headers and body). Δ req/s: against the identity row.",
        "Target: hits on a compressed variant as fast as on identity.",
        *wrk_notes(args, runs),
        *notes,
    ]
    headers = ["case", "Accept-Encoding", "Content-Encoding", "body bytes", "ratio", "req/s", "Δ req/s", "MB/s",
               "p50 ms", "p99 ms", "errors", "CPU", "other load"]
    return table(f"Compressed hits against identity hits, {HTML_SIZE // KiB} KiB HTML page (wrk, 50 connections, "
                 "one worker on one core)", headers, rows, notes)


def _us_per_call(fn, inputs: list, repeat: int = 5) -> float:
    """Best of ``repeat`` loops over ``inputs`` (built beforehand), in µs per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for x in inputs:
            fn(x)
        best = min(best, (time.perf_counter() - t0) / len(inputs))
    return best * 1e6


def bench_chain_waf(args) -> str:
    """The WAF's own cost per request, in-process: the cheap pass of a hit and
    the full pass plus body of an origin request, memo warm and cold."""
    sys.path.insert(0, str(REPO))
    from multidict import CIMultiDict

    from edge.policy.sections.waf import WafSettings
    from edge.waf import default_rules_dir
    from edge.waf.engine import compiled

    _, waf = compiled(default_rules_dir())
    s = WafSettings()
    n = args.waf_calls
    rng = random.Random(7)
    words = ["red", "blue", "shoes", "boots", "leather", "summer", "sale", "black", "running", "kids", "women", "men",
             "sandals", "white", "classic", "sport", "winter", "green", "size", "wide"]

    def headers(sid: str, extra: dict | None = None) -> CIMultiDict:
        h = {"Host": "shop.example.de", **BROWSER_HEADERS, "Cookie": f"sid={sid}; lang=de", **(extra or {})}
        return CIMultiDict(h)

    warm_h = headers("9f86d081884c7d659a2feaa0c55ad015")
    counter = iter(range(1 << 62))

    # Fresh values for every case: one case must not warm the memo for the next.
    def cold_h(k: int) -> list[CIMultiDict]:
        return [headers(f"{rng.getrandbits(128):032x}") for _ in range(k)]

    def cold_q(k: int) -> list[str]:
        return [f"q={rng.choice(words)}+{rng.choice(words)}+{next(counter)}&page=2&sort=price&size=42&color=blue"
                for _ in range(k)]

    doc = {"title": "Spring sale", "author": {"name": "Anna Müller", "email": "anna@example.de"},
           "tags": ["news", "sale", "shoes"], "body": "<p>Our <strong>spring sale</strong> starts today. " * 40}
    pad = len(json.dumps(doc).encode()) - len(doc["body"])

    def body_of(title: str) -> bytes:
        d = {**doc, "title": title}
        d["body"] = doc["body"][: 2 * KiB - pad - (len(title) - len(doc["title"])) - 4] + "</p>"
        return json.dumps(d).encode()

    warm_body = body_of(doc["title"])
    cold_bodies = [body_of(f"Spring sale {rng.choice(words)} {next(counter)}") for _ in range(n // 4)]

    # A cart of 27 products (about 2 KiB): JSON of ordinary values, no markup.
    def cart_of(ref: str) -> bytes:
        items = [{"sku": f"SH-{i:05d}", "name": f"{words[i % len(words)]} leather boots", "size": 42, "qty": 1}
                 for i in range(27)]
        return json.dumps({"ref": ref, "items": items, "currency": "EUR"}).encode()

    warm_cart = cart_of("c-0")
    cold_carts = [cart_of(f"c-{next(counter)}-{rng.choice(words)}") for _ in range(n // 4)]
    post_warm = CIMultiDict({**warm_h, "Content-Type": "application/json"})
    post_cold = [CIMultiDict({**h, "Content-Type": "application/json"}) for h in cold_h(n // 4)]

    def hit(x):
        q, h = x
        waf.inspect_request("GET", "/2k/hit", q, h, s, full=False)

    def origin_get(x):
        q, h = x
        waf.inspect_request("GET", "/search", q, h, s, full=True)

    def origin_post(x):
        h, b = x
        r = waf.inspect_request("POST", "/api/posts", "", h, s, full=True)
        waf.inspect_body(b, "application/json", "/api/posts", s, r)

    # A request the rules must catch: the engine under test is the real one.
    if waf.inspect_request("GET", "/s", "q=1%27%20UNION%20SELECT%20password%20FROM%20users--", warm_h, s) is None:
        raise BenchError("waf: the default rules do not match an SQL injection")
    cases = [
        ("hit: cheap pass, no query", hit, [("", warm_h)] * n, list(zip([""] * n, cold_h(n))), "sid cookie"),
        ("hit: cheap pass, 5-argument query", hit, [(CHAIN_QUERY, warm_h)] * n, list(zip(cold_q(n), cold_h(n))),
         "q value and sid cookie"),
        ("origin: full pass, GET with 5-argument query", origin_get, [(CHAIN_QUERY, warm_h)] * n,
         list(zip(cold_q(n), cold_h(n))), "q value and sid cookie"),
        (f"origin: full pass + inspect_body, POST {len(warm_body):,} byte JSON (article with HTML markup)",
         origin_post, [(post_warm, warm_body)] * (n // 4), list(zip(post_cold, cold_bodies)),
         "sid cookie and JSON title"),
        (f"origin: full pass + inspect_body, POST {len(warm_cart):,} byte JSON (cart, no markup)",
         origin_post, [(post_warm, warm_cart)] * (n // 4), list(zip(cold_h(n // 4), cold_carts)),
         "sid cookie and JSON ref"),
    ]
    rows = []
    for label, fn, warm, cold, varied in cases:
        w = _us_per_call(fn, warm)
        c = _us_per_call(fn, cold, repeat=1)  # one loop: a second would find the values memoised
        rows.append([label, f"{w:.2f}", f"{c:.2f}", varied])
    notes = [
        "In-process, one core: `Waf.inspect_request` of the default rules (`edge.waf.compiled(default_rules_dir())`, "
        "default `WafSettings`: block, threshold 5, paranoia 1) on the browser header fields of the first table "
        "(plus Host). The hit path runs the cheap pass (`full=False`); a request bound for the origin the full "
        "pass (`full=True`, after the cheap pass, which the chain runs first) and, with a body, `inspect_body`.",
        f"memo warm: the same request {n:,} times (best of 5 loops); the engine remembers what each value "
        "matched (bounded memo per target). memo cold: every request carries values never seen before (the "
        "column 'varied'; random 32-hex sid, a q of two ordinary words and a counter, a JSON title with a "
        f"counter), one loop over {n:,} prepared requests ({n // 4:,} for the POST); the memo is also cleared "
        "when full, as a flood of new values would make it.",
        "Bodies: the article is the JSON of benchmarks/waf.py (title, author, tags, an HTML `body` field) cut to "
        "2 KiB; the cart is 27 line items of ordinary words and numbers. Values longer than 512 characters "
        "(the article's HTML field, the raw body) are never memoised: they are scanned on every request.",
        "A real request adds the filter's own work (raw_path split, settings lookup, the verdict); the wrk table "
        "above measures the whole chain.",
    ]
    return table("WAF cost per request in-process (µs)", ["request", "memo warm µs", "memo cold µs", "varied"], rows,
                 notes)


def bench_chain(args) -> str:
    return "\n".join([bench_chain_hits(args), bench_chain_compressed(args), bench_chain_waf(args)])


# ---------------------------------------------------------------------- micro


@contextlib.asynccontextmanager
async def _micro_pipeline():
    """A quick-mode Pipeline of the edge on sys.path, with one 2 KiB object
    stored in its memory tier: yields (pipeline, a request for it to clone)."""
    import dataclasses

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from edge.app import build_state
    from edge.config import default_config
    from edge.pipeline import Pipeline
    from edge.policy.sources import FileSource

    async def origin_handler(request):
        return web.Response(body=SMALL, headers={"Cache-Control": "max-age=3600", "Content-Type": "application/octet-stream"})

    runner = web.ServerRunner(web.Server(origin_handler, access_log=None), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = default_config()
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, access=False))
    source = FileSource(None, tenant="default", quick_origin=f"http://127.0.0.1:{port}")
    source.load()
    state = build_state(cfg, source)
    pipeline = Pipeline(state)
    headers = {"Host": "127.0.0.1:8080", "User-Agent": "wrk", "Accept": "*/*"}
    try:
        first = await pipeline.handle(make_mocked_request("GET", "/2k/micro", headers=headers))
        hit = await pipeline.handle(make_mocked_request("GET", "/2k/micro", headers=headers))
        if "hit" not in hit.headers.get("Cache-Status", ""):
            raise BenchError(f"micro: no hit ({first.headers.get('Cache-Status')!r}, {hit.headers.get('Cache-Status')!r})")
        # Fresh request objects (their reified properties are computed once
        # per request, as in production); clone() is much cheaper than
        # make_mocked_request().
        yield pipeline, make_mocked_request("GET", "/2k/micro", headers=headers)
    finally:
        await state.origins.close()
        await state.store.close()
        await runner.cleanup()


def bench_micro(args) -> str:
    """The edge's own work per 2 KiB memory hit, in-process: Pipeline.handle
    on mocked requests (no sockets, no header serialisation, no syscalls)."""
    if args.against:
        return bench_micro_against(args)
    import cProfile
    import pstats

    from aiohttp import web

    sys.path.insert(0, str(REPO))
    n = args.iterations

    async def main():
        async with _micro_pipeline() as (pipeline, proto):
            reqs = [proto.clone() for _ in range(n)]
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for rq in reqs:
                    await pipeline.handle(rq)
                best = min(best, (time.perf_counter() - t0) / n)
            resp_best = float("inf")
            h = {"Cache-Control": "max-age=3600", "Content-Type": "application/octet-stream"}
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(n):
                    web.Response(body=SMALL, headers=h)
                resp_best = min(resp_best, (time.perf_counter() - t0) / n)
            prof = cProfile.Profile()
            prof.enable()
            for rq in reqs:
                await pipeline.handle(rq)
            prof.disable()
            return best, resp_best, prof

    _use_uvloop()
    per_hit, per_response, prof = asyncio.run(main())
    stats = pstats.Stats(prof)
    total = stats.total_tt
    rows = []
    entries = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: args.top]
    for (file, line, fn), (cc, nc, tt, ct, callers) in entries:
        where = file.replace(str(REPO) + "/", "").replace(sys.prefix + "/lib/python3.11/site-packages/", "")
        rows.append([f"{fn} ({where}:{line})", f"{nc / n:g}", f"{tt / n * 1e6:.2f}", f"{ct / n * 1e6:.2f}",
                     f"{tt / total * 100:.1f}"])
    out = table(
        "The edge's own work per 2 KiB memory hit (in-process, no sockets)",
        ["function (cProfile, sorted by self time)", "calls per hit", "self µs/hit", "incl. µs/hit", "self %"], rows,
        [f"Pipeline.handle per hit without a profiler: **{per_hit * 1e6:.2f} µs** (best of 3 x {n:,} mocked requests); "
         f"constructing a plain web.Response with the same body: {per_response * 1e6:.2f} µs. "
         f"At the measured hit rate, one request costs 1e6 / (req/s) µs of CPU in all (e.g. 40 µs at 25,000 req/s): "
         "the remainder is aiohttp's parser, response serialisation, uvloop and the kernel.",
         "The µs columns are under cProfile, which inflates every Python call; use them to rank, not as absolutes.",
         "Requests are clones of one aiohttp.test_utils.make_mocked_request; the origin is an in-process aiohttp "
         "server used once (for the miss that stores the object)."])
    return out


def micro_worker(args) -> None:
    """``micro --against``: one tree's pipeline, timing a batch of hits each
    time a line ``go`` arrives on stdin; answers CPU and wall s per hit."""
    sys.path.insert(0, args.tree)
    n = args.iterations

    async def main():
        async with _micro_pipeline() as (pipeline, proto):
            print("ready", flush=True)
            for line in sys.stdin:  # blocks between batches: nothing else is due meanwhile
                if line.strip() != "go":
                    break
                reqs = [proto.clone() for _ in range(n)]
                c0, w0 = time.process_time(), time.perf_counter()
                for rq in reqs:
                    await pipeline.handle(rq)
                print(f"{(time.process_time() - c0) / n} {(time.perf_counter() - w0) / n}", flush=True)

    _use_uvloop()
    asyncio.run(main())


def bench_micro_against(args) -> str:
    """This tree's µs per hit beside other checkouts', on a noisy machine:
    one long-lived process per tree, batches taken in turn (the order rotated
    each round), so that every tree meets the same disturbances."""
    trees = [REPO] + [Path(t).resolve() for t in args.against]
    procs = []
    try:
        for tree in trees:
            cmd = [sys.executable, str(Path(__file__).resolve()), "_micro_worker", "--tree", str(tree), "--iterations",
                   str(args.iterations)]
            p = subprocess.Popen(pinned(cmd, EDGE_CORE), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            if p.stdout.readline().strip() != "ready":
                raise BenchError(f"micro: the worker for {tree} did not start")
        cpu: list[list[float]] = [[] for _ in trees]
        wall: list[list[float]] = [[] for _ in trees]
        for r in range(args.rounds):
            for i in [(r + k) % len(trees) for k in range(len(trees))]:
                procs[i].stdin.write("go\n")
                procs[i].stdin.flush()
                c, w = procs[i].stdout.readline().split()
                cpu[i].append(float(c) * 1e6)
                wall[i].append(float(w) * 1e6)
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                p.stdin.close()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    base = statistics.median(cpu[0])
    rows = []
    for tree, c, w in zip(trees, cpu, wall):
        q = statistics.quantiles(c, n=4)
        mid = statistics.median(c)
        rows.append([f"{tree} ({tree_commit(tree)})", f"**{mid:.2f}**", f"{q[0]:.2f} – {q[2]:.2f}",
                     f"{statistics.median(w):.2f}", f"{(mid / base - 1) * 100:+.1f}%"])
    return table(
        "The edge's own work per 2 KiB memory hit, trees side by side (in-process, no sockets)",
        ["tree (commit)", "CPU µs per hit, median", "interquartile range", "wall µs, median", "vs. the first"], rows,
        [f"{args.rounds} rounds; in each, every tree's process times a batch of {args.iterations:,} hits "
         "(Pipeline.handle on fresh clones of one mocked request, as `micro` does) in turn, the order rotated "
         "each round. CPU time is the process's own (time.process_time); the medians over rounds damp what "
         "other load on the machine does to single batches.",
         f"The processes run on core {EDGE_CORE}; each imports edge from its own tree."])


# ----------------------------------------------------------- origin/reference


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def origin_main(args) -> None:
    """A plain aiohttp origin (low-level server, uvloop). Paths:
    /2k/*, /1m/* (max-age=3600), /nostore/* (2 KiB, no-store), /slow/* (2 KiB
    after 100 ms), /slownostore/* (2 KiB, no-store, after 200 ms), /slowbig/* (4 MiB after 100 ms), /big/<cache|nostore|chunked>/<bytes>/*
    (streamed, generated; chunked: cacheable, without Content-Length), /html/* (a 30 KiB HTML page, max-age=3600, made on
    first use), /__stats (counters, never stored)."""
    from aiohttp import web

    counts: collections.Counter = collections.Counter()
    paths: collections.Counter = collections.Counter()
    chunk = memoryview(ONE_MIB)
    cacheable = {"Cache-Control": "max-age=3600", "Content-Type": "application/octet-stream"}
    nostore = {"Cache-Control": "no-store", "Content-Type": "application/octet-stream"}
    html = {"Cache-Control": "max-age=3600", "Content-Type": "text/html; charset=utf-8"}
    page: list[bytes] = []

    async def handler(request):
        path = request.path
        kind = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        if kind == "__stats":
            return web.Response(body=json.dumps({"total": counts["total"], "kinds": counts, "paths": paths}).encode(),
                                headers={"Cache-Control": "no-store", "Content-Type": "application/json"})
        counts["total"] += 1
        counts[kind] += 1
        if kind == "2k":
            return web.Response(body=SMALL, headers=cacheable)
        if kind == "1m":
            return web.Response(body=ONE_MIB, headers=cacheable)
        if kind == "nostore":
            return web.Response(body=SMALL, headers=nostore)
        if kind == "html":
            if not page:
                page.append(html_page())
            return web.Response(body=page[0], headers=html)
        if kind == "slownostore":
            paths[path] += 1
            await asyncio.sleep(0.2)
            return web.Response(body=SMALL, headers=nostore)
        if kind in ("slow", "slowbig"):
            paths[path] += 1
            await asyncio.sleep(0.1)
            return web.Response(body=SMALL if kind == "slow" else ONE_MIB * 4, headers=cacheable)
        if kind == "big":
            paths[path] += 1
            _, _, mode, size, *_ = path.split("/")
            size = int(size)
            resp = web.StreamResponse(headers=nostore if mode == "nostore" else cacheable)
            if mode != "chunked":
                resp.content_length = size
            await resp.prepare(request)
            if request.method == "HEAD":  # aiohttp's StreamResponse would send the body
                await resp.write_eof()
                return resp
            left = size
            while left > 0:
                n = min(left, len(chunk))
                await resp.write(chunk[:n])
                left -= n
            await resp.write_eof()
            return resp
        return web.Response(status=404, body=b"not found\n", headers=nostore)

    _serve(handler, args.port)


def reference_main(args) -> None:
    """The framework ceiling: aiohttp's low-level server with uvloop answering
    a constant body, no routing, no cache logic."""
    from aiohttp import web

    from multidict import CIMultiDict

    body = ONE_MIB if args.size == "1m" else SMALL
    headers = {"Cache-Control": "max-age=3600", "Content-Type": "application/octet-stream"}
    # What an edge hit sends: the origin's fields plus Via, Age, Cache-Status,
    # X-Request-Id (and Content-Length), from a copied CIMultiDict template.
    template = CIMultiDict([("Cache-Control", "max-age=3600"), ("Content-Type", "application/octet-stream"),
                            ("Date", "Fri, 27 Nov 2026 01:46:17 GMT"), ("Server", "Python/3.11 aiohttp/3.14.5"),
                            ("Via", "1.1 edge")])
    counter = iter(range(1, 1 << 62))

    async def handler(request):
        if args.size != "2k-edge":
            return web.Response(body=body, headers=headers)
        h = template.copy()
        h["Age"] = "12"
        h.add("Cache-Status", "edge; hit; ttl=3588")
        h["X-Request-Id"] = f"2f7a08e0e8-{next(counter):x}"
        return web.Response(status=200, body=body, headers=h)

    _serve(handler, args.port)


def _serve(handler, port: int) -> None:
    from aiohttp import web

    _use_uvloop()

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handler, access_log=None), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# ----------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("all", "hit", "miss", "herd", "uncacheable", "bigfile", "geo", "chain", "profile", "micro"):
        s = sub.add_parser(name)
        s.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
        s.add_argument("--herd", type=int, default=200, help="concurrent requests in the herd (default 200)")
        s.add_argument("--bursts", type=int, default=3, help="uncacheable: bursts of 100 for the same URL, per client setting (default 3)")
        s.add_argument("--herd-large", type=int, default=20, help="concurrent requests in the large-object herd rows (default 20)")
        s.add_argument("--herd-big", type=int, default=64 * MiB, help="bytes of the large-object herd rows (default 64 MiB)")
        s.add_argument("--slow-leader", action="store_true",
                       help="herd: add a row where the first client of a cold 32 MiB URL stalls (takes ~35 s)")
        s.add_argument("--big-size", type=int, default=GiB, help="bytes of the big object (default 1 GiB)")
        s.add_argument("--reference-1m", action="store_true", help="also measure the reference server with 1 MiB")
        s.add_argument("--repeat", type=int, default=1, help="wrk runs per row; the best is shown (default 1)")
        s.add_argument("--output", help="also append the tables to this file")
        if name in ("geo", "all"):
            s.add_argument("--geo-networks", type=int, default=3000, help="geo: /24 networks in the test database (default 3000)")
            s.add_argument("--geo-calls", type=int, default=70_000,
                           help="geo: distinct addresses per loop for uncached lookups; more than the GeoDB LRU (65,536) "
                                "(default 70,000)")
            s.add_argument("--geo-repeat", type=int, default=3, help="geo: timed loops per row, the best is shown (default 3)")
        if name in ("chain", "all"):
            s.add_argument("--waf-calls", type=int, default=20000,
                           help="chain: requests per in-process WAF loop (default 20,000; a quarter for the POST)")
        if name == "micro":
            s.add_argument("--iterations", type=int, default=30000, help="hits per timed loop (per batch with --against)")
            s.add_argument("--top", type=int, default=20)
            s.add_argument("--against", action="append", default=[], metavar="TREE",
                           help="also time another checkout of edge (repeatable), batches taken in turn")
            s.add_argument("--rounds", type=int, default=20, help="with --against: batches per tree (default 20)")
        if name == "profile":
            s.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
            s.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
            s.add_argument("--blocking", action="store_true",
                           help="py-spy without --nonblocking: whole stacks, but each sample stops the edge and "
                                "inflates the time seen in syscalls")
            s.add_argument("--top", type=int, default=25)
            s.add_argument("--keep", help="copy the raw py-spy output here")
    for name, fn in (("_origin", origin_main), ("_reference", reference_main)):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--size", default="2k")
        s.set_defaults(fn=fn)
    s = sub.add_parser("_micro_worker")
    s.add_argument("--tree", required=True)
    s.add_argument("--iterations", type=int, required=True)
    s.set_defaults(fn=micro_worker)
    args = p.parse_args(argv)
    if args.cmd.startswith("_"):
        args.fn(args)
        return 0

    # SIGTERM must run the finally blocks that stop the subprocesses.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if can_pin():
        # The driver (herd client, big download client) stays off the edge's core.
        os.sched_setaffinity(0, {LOAD_CORE})
    benches = {"hit": bench_hit, "miss": bench_miss, "herd": bench_herd, "uncacheable": bench_uncacheable, "bigfile": bench_bigfile, "profile": bench_profile,
               "micro": bench_micro, "geo": bench_geo, "chain": bench_chain}
    names = ["hit", "miss", "herd", "bigfile", "geo", "chain"] if args.cmd == "all" else [args.cmd]
    return emit((benches[name](args) for name in names), args.output)


def emit(tables, output: str | None) -> int:
    """Prints each table of the iterable ``tables`` as it comes (and appends
    it to the file ``output``); returns the exit status."""
    t0 = time.monotonic()
    try:
        for out in tables:
            print(out, flush=True)
            if output:
                with open(output, "a") as f:
                    f.write(out + "\n")
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    log(f"done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
