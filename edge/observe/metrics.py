"""Process metrics (prometheus-client). Labels are tenant ids and small
fixed sets, never client addresses.

Every worker process counts its own requests; ``GET /metrics`` on the admin
listener shows the worker that answered it (the ``worker`` label of
``edge_worker_info`` says which).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

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

# Cache outcomes, from the fwd= parameter of Cache-Status (RFC 9211).
_OUTCOMES = {
    "uri-miss": "miss",
    "vary-miss": "miss",
    "miss": "miss",  # an origin error on the way to a miss
    "stale": "stale",
    "request": "bypass",  # the client asked to go to the origin
    "bypass": "bypass",
    "method": "bypass",
}
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


def cache_outcome(cache_status: str) -> str:
    """hit, miss, stale, bypass, or none (answered by the edge: refused, bad request)."""
    i = cache_status.find("fwd=")
    if i < 0:
        return "hit" if "; hit" in cache_status else "none"
    j = cache_status.find(";", i)
    return _OUTCOMES.get(cache_status[i + 4 : j] if j >= 0 else cache_status[i + 4 :], "miss")


# (tenant, outcome, status // 100) -> [requests, body bytes]. Plain integers
# bumped on the event loop and turned into counters when scraped: a request
# costs a dictionary probe and two additions, no lock and no formatting.
_counts: dict[tuple[str, str, int], list[int]] = {}
_origin_children: dict[str, object] = {}


def record_request(ctx) -> None:
    """Called once per request by the pipeline's log phase."""
    key = (ctx.tenant, cache_outcome(ctx.cache), ctx.status // 100)
    entry = _counts.get(key)
    if entry is None:
        entry = _counts[key] = [0, 0]
    entry[0] += 1
    entry[1] += ctx.size
    origin = ctx.origin_time
    if origin:
        child = _origin_children.get(ctx.tenant)
        if child is None:
            child = _origin_children[ctx.tenant] = ORIGIN_SECONDS.labels(ctx.tenant)
        child.observe(origin)


def record_purge(tenant: str, affected: int) -> None:
    PURGES.labels(tenant).inc()
    if affected:
        PURGED_ENTRIES.labels(tenant).inc(affected)


def requests_by_tenant() -> dict[str, int]:
    out: dict[str, int] = {}
    for (tenant, _, _), (n, _) in list(_counts.items()):
        out[tenant] = out.get(tenant, 0) + n
    return out


class _Requests(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "edge_requests",
            "Client requests, by tenant (- for an unknown host), status class and cache outcome "
            "(hit, miss, stale, bypass; none: answered by the edge itself).",
            labels=("tenant", "status", "cache"),
        )
        sent = CounterMetricFamily("edge_response_bytes", "Response body bytes sent to clients, by tenant.",
                                   labels=("tenant",))
        per_tenant: dict[str, int] = {}
        for (tenant, outcome, cls), (n, size) in sorted(list(_counts.items())):
            status = _STATUS_CLASSES[cls] if 0 <= cls < len(_STATUS_CLASSES) else "other"
            requests.add_metric((tenant, status, outcome), n)
            per_tenant[tenant] = per_tenant.get(tenant, 0) + size
        for tenant, size in per_tenant.items():
            sent.add_metric((tenant,), size)
        yield requests
        yield sent

    def describe(self) -> list:
        return []


REGISTRY.register(_Requests())


class _Scrape(Collector):
    """Read when scraped: this worker's pid, and entries and bytes per cache
    tier (a gauge kept up to date on every store would cost the hit path)."""

    def __init__(self) -> None:
        self.read: Callable[[], dict[str, tuple[int | None, int | None]]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        worker = GaugeMetricFamily("edge_worker_info", "The worker process that answered this scrape.",
                                   labels=("worker",))
        worker.add_metric((str(os.getpid()),), 1)
        yield worker
        entries = GaugeMetricFamily("edge_cache_entries", "Entries in each cache tier.", labels=("tier",))
        size = GaugeMetricFamily("edge_cache_bytes", "Bytes used by each cache tier.", labels=("tier",))
        if self.read is not None:
            for tier, (n, b) in self.read().items():
                if n is not None:
                    entries.add_metric((tier,), n)
                if b is not None:
                    size.add_metric((tier,), b)
        yield entries
        yield size

    def describe(self) -> list:
        return []


CACHE_SIZE = _Scrape()
REGISTRY.register(CACHE_SIZE)


class _Fills(Collector):
    """Read when scraped: body bytes that shared fills hold in memory
    (``edge/cache/collapse.py``; ``read`` is set by the pipeline)."""

    def __init__(self) -> None:
        self.read: Callable[[], int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "edge_fill_buffer_bytes",
            "Bytes of large bodies being fetched that this worker holds in memory for the requests reading them "
            "as they arrive (at most about cache.fill_buffer per fetch; the rest is read from the disk tier).",
        )
        if self.read is not None:
            gauge.add_metric((), self.read())
        yield gauge

    def describe(self) -> list:
        return []


FILL_BUFFER = _Fills()
REGISTRY.register(FILL_BUFFER)
