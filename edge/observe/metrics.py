"""Metrics (prometheus-client). Labels are tenant ids and small fixed sets,
never client addresses.

A node with several workers keeps its metrics in prometheus-client's
multiprocess mode: ``edge serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
directory made for this run (edge.cli), every worker writes its values to
its own memory-mapped files there, and whichever worker answers a scrape
reads them all (``NodeView``). Counters are summed over the workers, also
those that died (their files stay, so a restart never makes a counter go
back); the gauges below are ``livesum``: a dead worker's are removed by the
supervisor (``mark_process_dead``), and a ``worker`` label keeps apart what
is per worker. With one worker the same names come from this process.

Counters bumped by every request are ``Tally``s: plain integers on the
event loop, added to their counters by ``publish()`` (at least every
``PUBLISH_INTERVAL`` seconds, and before a scrape is answered). A memory-
mapped write per request would cost several times what counting does.
"""
from __future__ import annotations

import asyncio
import glob
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# Read by prometheus-client when it is first imported, which chooses how
# every value is kept; read here after that import, so both agree.
MULTIPROCESS_DIR: str | None = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
PUBLISH_INTERVAL = 1.0  # seconds: what a worker killed with -9 can lose, at most
_HEADER = 8  # bytes at the start of every multiprocess file: its used length and padding


class Tally:
    """A counter child bumped as a plain number on the event loop; publish()
    adds what is new. Only the loop writes ``count`` and only publish()
    writes ``published``, so a publish from another thread loses nothing."""

    __slots__ = ("child", "count", "published")

    def __init__(self, child) -> None:
        self.child = child
        self.count = 0
        self.published = 0

    def inc(self, amount: int = 1) -> None:
        self.count += amount


_tallies: dict[tuple[object, tuple[str, ...]], Tally] = {}
_publish_lock = threading.Lock()


def tally(counter: Counter, *labels: str) -> Tally:
    """The one tally of ``counter`` with these label values."""
    key = (counter, labels)
    found = _tallies.get(key)
    if found is None:
        found = _tallies[key] = Tally(counter.labels(*labels))
    return found


def _flush() -> None:
    with _publish_lock:
        for t in list(_tallies.values()):
            count = t.count
            if count != t.published:
                t.child.inc(count - t.published)
                t.published = count


class _Flush(Collector):
    """Registered first, so that whoever collects REGISTRY sees every tally."""

    def collect(self) -> Iterator[Metric]:
        _flush()
        return iter(())

    def describe(self) -> list:
        return []


REGISTRY = CollectorRegistry(auto_describe=True)  # this process's metrics
REGISTRY.register(_Flush())

REQUESTS = Counter(
    "edge_requests",
    "Client requests, by tenant (- for an unknown host), status class and cache outcome "
    "(hit, miss, stale, bypass; none: answered by the edge itself).",
    ("tenant", "status", "cache"),
    registry=REGISTRY,
)

RESPONSE_BYTES = Counter(
    "edge_response_bytes",
    "Response body bytes sent to clients, by tenant.",
    ("tenant",),
    registry=REGISTRY,
)

DELIVERY_DECISIONS = Counter(
    "edge_delivery_decisions_total",
    "Regional delivery decisions, by tenant, client country (XX: unknown), outcome and deciding rule.",
    ("tenant", "country", "outcome", "rule"),
    registry=REGISTRY,
)

FILTER_DECISIONS = Counter(
    "edge_filter_decisions_total",
    "Filter chain decisions other than a plain pass, by tenant, filter (ip_lists, rate_limits), rule "
    "(deny, allow, or a rate limit rule id) and action (block; log: would have blocked; allow: allow-listed).",
    ("tenant", "filter", "rule", "action"),
    registry=REGISTRY,
)

ORIGIN_SECONDS = Histogram(
    "edge_origin_duration_seconds",
    "Time from sending a request to the origin until its response headers arrived, by tenant.",
    ("tenant",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

PURGES = Counter(
    "edge_purges_total",
    "Purge requests applied through the admin API, by tenant.",
    ("tenant",),
    registry=REGISTRY,
)

PURGED_ENTRIES = Counter(
    "edge_purged_entries_total",
    "Cache entries removed (or, soft, expired) by purges, by tenant.",
    ("tenant",),
    registry=REGISTRY,
)

ADMIN_AUTH_DELAYED = Counter(
    "edge_admin_auth_delayed_total",
    "Admin API requests slowed down because their address is over its failed-authentication limit.",
    registry=REGISTRY,
)

WORKERS = Gauge(
    "edge_worker_info",
    "The node's live worker processes, 1 each; worker is the process id.",
    ("worker",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

WORKER_STARTED = Gauge(
    "edge_worker_start_time_seconds",
    "When each live worker process started (Unix time).",
    ("worker",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

CERTIFICATE_CHANGES = Gauge(
    "edge_worker_certificate_changes",
    "Certificate writes and removals each live worker has taken since it started "
    "(its HTTPS listeners serve them from then on).",
    ("worker",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

# The memory tier is per worker (summed here); the disk tier is shared and
# is read by the worker that answers (NodeView), never summed.
_ENTRIES = "Entries in each cache tier (memory: over all workers)."
_BYTES = "Bytes used by each cache tier (memory: over all workers)."
CACHE_ENTRIES = Gauge(
    "edge_cache_entries",
    _ENTRIES,
    ("tier",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

CACHE_BYTES = Gauge(
    "edge_cache_bytes",
    _BYTES,
    ("tier",),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


# (tenant, outcome, status // 100) -> (requests, body bytes)
_request_tallies: dict[tuple[str, str, int], tuple[Tally, Tally]] = {}
_origin_children: dict[str, object] = {}


def record_request(tenant: str, status: int, cache: str, size: int, origin_time: float = 0.0) -> None:
    """Called once per request by the pipeline's log phase. ``cache``: the
    request's cache label (hit, miss, stale, bypass, none)."""
    key = (tenant, cache, status // 100)
    pair = _request_tallies.get(key)
    if pair is None:
        cls = key[2]
        status_class = _STATUS_CLASSES[cls] if 0 <= cls < len(_STATUS_CLASSES) else "other"
        pair = _request_tallies[key] = (tally(REQUESTS, tenant, status_class, cache), tally(RESPONSE_BYTES, tenant))
    pair[0].count += 1
    pair[1].count += size
    if origin_time:
        child = _origin_children.get(tenant)
        if child is None:
            child = _origin_children[tenant] = ORIGIN_SECONDS.labels(tenant)
        child.observe(origin_time)


def record_purge(tenant: str, affected: int) -> None:
    PURGES.labels(tenant).inc()
    if affected:
        PURGED_ENTRIES.labels(tenant).inc(affected)


# --- this worker's share ---------------------------------------------------------------


def start_worker() -> None:
    """Announce this process as a live worker of the node."""
    pid = str(os.getpid())
    WORKERS.labels(pid).set(1)
    WORKER_STARTED.labels(pid).set(time.time())
    CERTIFICATE_CHANGES.labels(pid).set(0)


def certificate_change() -> None:
    """This worker took a certificate write or removal."""
    CERTIFICATE_CHANGES.labels(str(os.getpid())).inc()


FILL_BUFFER = Gauge(
    "edge_fill_buffer_bytes",
    "Bytes of large bodies being fetched that the workers hold in memory for the requests reading them "
    "as they arrive (at most about cache.fill_buffer per fetch; the rest is read from the disk tier).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
_fill_bytes: Callable[[], int] | None = None


def watch_fills(held: Callable[[], int]) -> None:
    """``held``: the bytes this worker's shared fills hold (edge.cache.collapse)."""
    global _fill_bytes
    _fill_bytes = held


def publish(memory=None) -> None:
    """Make this worker's counts and gauges visible to whichever worker
    collects: the tallies, its memory tier (``len()``, ``bytes_used``) and
    what its fills hold."""
    _flush()
    if memory is not None:
        CACHE_ENTRIES.labels("memory").set(len(memory))
        CACHE_BYTES.labels("memory").set(memory.bytes_used)
    if _fill_bytes is not None:
        FILL_BUFFER.set(_fill_bytes())


async def publish_every(interval: float, memory=None) -> None:
    while True:
        await asyncio.sleep(interval)
        publish(memory)


# --- the node's view ------------------------------------------------------------------

Tiers = dict[str, tuple[int | None, int | None]]  # tier -> (entries, bytes)


class NodeView(Collector):
    """The node's metrics, whichever worker collects them: every worker's
    files in multiprocess mode, else this process's registry; plus the
    tiers the workers share, read here (``shared``), and families read
    from other shared state (``extra``: the certificate store's)."""

    def __init__(self, shared: Callable[[], Tiers] | None = None,
                 extra: Callable[[], Iterable[Metric]] | None = None) -> None:
        self.shared = shared
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        base = _worker_files(MULTIPROCESS_DIR) if MULTIPROCESS_DIR else REGISTRY.collect()
        shared = self.shared() if self.shared is not None else {}
        sizes = {"edge_cache_entries": (0, _ENTRIES), "edge_cache_bytes": (1, _BYTES)}
        for family in base:
            size = sizes.pop(family.name, None)
            if size is not None:
                _add_tiers(family, shared, size[0])
            yield family
        for name, (i, text) in sizes.items():  # no worker has published that gauge yet
            family = GaugeMetricFamily(name, text, labels=("tier",))
            _add_tiers(family, shared, i)
            yield family
        if self.extra is not None:
            yield from self.extra()

    def describe(self) -> list:
        return []


def _worker_files(directory: str) -> Iterable[Metric]:
    """Every worker's values, merged. A file is created empty and sized a
    moment later: one without its header yet holds nothing, and is skipped
    rather than failing the whole scrape (as it would, for good, when its
    worker was killed in that moment)."""
    files = []
    for path in glob.glob(os.path.join(directory, "*.db")):
        try:
            if os.stat(path).st_size >= _HEADER:
                files.append(path)
        except FileNotFoundError:  # a dead worker's gauges, just removed
            pass
    return MultiProcessCollector.merge(files, accumulate=True)


def _add_tiers(family: Metric, tiers: Tiers, i: int) -> None:
    for tier, values in tiers.items():
        if values[i] is not None:
            family.add_sample(family.name, {"tier": tier}, values[i])


@dataclass
class NodeStats:
    """What ``GET /v1/stats`` reports, read from the node's metrics."""

    requests: dict[str, int] = field(default_factory=dict)  # tenant -> requests
    tiers: dict[str, dict[str, int | None]] = field(default_factory=dict)  # tier -> entries, bytes
    workers: dict[int, float] = field(default_factory=dict)  # pid -> start time
    certificate_changes: dict[int, int] = field(default_factory=dict)  # pid -> certificate changes taken


def node_stats(families: Iterable[Metric]) -> NodeStats:
    out = NodeStats()
    for family in families:
        for sample in family.samples:
            if sample.name == "edge_requests_total":
                tenant = sample.labels["tenant"]
                out.requests[tenant] = out.requests.get(tenant, 0) + int(sample.value)
            elif sample.name in ("edge_cache_entries", "edge_cache_bytes"):
                tier = out.tiers.setdefault(sample.labels["tier"], {"entries": None, "bytes": None})
                tier["entries" if sample.name == "edge_cache_entries" else "bytes"] = int(sample.value)
            elif sample.name == "edge_worker_start_time_seconds":
                out.workers[int(sample.labels["worker"])] = sample.value
            elif sample.name == "edge_worker_certificate_changes":
                out.certificate_changes[int(sample.labels["worker"])] = int(sample.value)
    return out
