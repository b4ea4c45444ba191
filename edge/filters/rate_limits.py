"""Per-tenant request rate limits (``filters.rate_limits``): token buckets.

Each rule is a bucket that holds at most ``burst`` tokens and gains ``rate``
tokens a second; a request takes one token from every rule it matches (in
order; the first rule without a token refuses it, with 429 and
``Retry-After``). ``"per": "client"`` gives every client address of the
tenant its own bucket, ``"per": "tenant"`` shares one bucket among all.

Memory is bounded: the client buckets of a rule live in an LRU of at most
``max_buckets`` entries. A flood from millions of addresses evicts the least
recently seen buckets; an evicted bucket comes back full, which is what an
idle bucket would be anyway (only a client that was both limited and among
the least recent ``max_buckets`` gets a fresh burst early).

Buckets are per worker process: with N workers a client may get up to N times
the rate (connections are spread by the kernel). Divide the rate by the
number of workers when it must hold exactly.
"""
from __future__ import annotations

import functools
import ipaddress

import math
import time
from collections.abc import Callable

from cachetools import LRUCache

from edge.cache.key import decoded_view
from edge.filters._record import Recorder
from edge.filters.chain import Verdict

DEFAULT_MAX_BUCKETS = 100_000


class TokenBucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.last = now

    def take(self, rate: float, burst: int, now: float) -> float:
        """Take one token: 0.0 when there was one, else the seconds until one is available."""
        elapsed = now - self.last
        if elapsed > 0:
            tokens = self.tokens + elapsed * rate
            self.tokens = tokens if tokens < burst else float(burst)
            self.last = now
        elif self.tokens > burst:  # the rule was lowered by a reload
            self.tokens = float(burst)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate


def retry_after(wait: float) -> str:
    """Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3)."""
    return str(max(1, math.ceil(wait)))


class RateLimitFilter:
    name = "rate_limits"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = DEFAULT_MAX_BUCKETS, client_rate: float = 0.0, client_burst: int = 0) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        # The node's own limit per client address, over all its tenants
        # (``[filters] client_rate``); 0: none.
        self.client_rate = client_rate
        self.client_burst = client_burst or max(1, math.ceil(client_rate))
        self._node: LRUCache = LRUCache(maxsize=max_buckets)
        # (tenant, rule id) -> LRU of client -> bucket, or the tenant's one bucket.
        # Kept across reloads, so a changed rate applies to the buckets as they are.
        self._clients: dict[tuple[str, str], LRUCache] = {}
        self._tenant: dict[tuple[str, str], TokenBucket] = {}
        self._record = Recorder(self.name)

    def bucket_count(self) -> int:
        """Client buckets held in this worker (for tests and debugging)."""
        return sum(len(lru) for lru in self._clients.values())

    def check(self, request, ctx, policy) -> Verdict | None:
        if self.client_rate and not ctx.allowlisted:
            now = self.clock()
            client = client_key(ctx.peer)
            bucket = self._node.get(client)
            if bucket is None:
                bucket = self._node[client] = TokenBucket(float(self.client_burst), now)
            wait = bucket.take(self.client_rate, self.client_burst, now)
            if wait:
                self._record.refused(policy.tenant, "node", "block", ctx.peer)
                return Verdict(429, "too many requests", "filter.rate_limits.node", {"Retry-After": retry_after(wait)})
        filters = policy.filters
        if not filters.active:
            return None
        limits = filters.rate_limits
        if not limits.active or ctx.allowlisted:
            return None
        now = self.clock()
        tenant = policy.tenant
        path = ctx.path
        folded = None
        for rule in limits.rules:
            prefix = rule.path_prefix
            if prefix is not None and not path.startswith(prefix):
                if folded is None:
                    folded = decoded_view(path).lower()
                # Counted when the path as a lenient origin reads it matches,
                # so "/LOGIN" or "/login;x" do not escape a limit on "/login".
                if not folded.startswith(prefix.lower()):
                    continue
            key = (tenant, rule.id)
            if rule.per == "tenant":
                bucket = self._tenant.get(key)
                if bucket is None:
                    bucket = self._tenant[key] = TokenBucket(float(rule.burst), now)
            else:
                lru = self._clients.get(key)
                if lru is None:
                    lru = self._clients[key] = LRUCache(maxsize=self.max_buckets)
                client = client_key(ctx.peer)
                bucket = lru.get(client)
                if bucket is None:
                    bucket = lru[client] = TokenBucket(float(rule.burst), now)
            wait = bucket.take(rule.rate, rule.burst, now)
            if not wait:
                continue
            self._record.refused(tenant, rule.id, limits.mode, ctx.peer)
            if limits.mode != "block":
                continue
            return Verdict(429, "too many requests", f"filter.rate_limits.{rule.id}",
                           {"Retry-After": retry_after(wait)})
        return None


@functools.lru_cache(maxsize=65536)
def client_key(peer: str | None) -> str:
    """IPv4 clients by address, IPv6 clients by their /64: one subscriber
    holds a whole /64 and could take a fresh address (and a full bucket)
    for every request."""
    if not peer:
        return "-"
    if ":" not in peer:
        return peer
    try:
        return str(ipaddress.ip_network(f"{peer.split('%', 1)[0]}/64", strict=False))
    except ValueError:
        return peer
