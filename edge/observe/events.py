"""Security events: a tenant told, once, that it is under attack.

When the requests of a tenant that the filter chain blocks cross a threshold
within a time window, the node emits one event: to the log (logger
``edge.events``, WARNING, one line) and, when the tenant's policy names a
webhook, as a signed JSON POST to it. Configured per tenant in
``filters.events`` (:mod:`edge.policy.sections.events`)::

    "events": {"webhook_url": "https://hooks.example.de/edge", "secret": "<16+ characters>",
               "tenant_threshold": 1000, "client_threshold": 100, "window": 60}

Aggregation, not one message per request
    Windows are fixed, aligned to multiples of ``window`` seconds since the
    epoch, per tenant. In a window, the first time the tenant's blocked count
    reaches ``tenant_threshold`` emits one ``tenant_block_rate`` event; the
    first time one source's count reaches ``client_threshold`` emits one
    ``client_blocks`` event for it (at most ``MAX_CLIENT_EVENTS`` sources per
    window: a botnet of a million sources is one tenant event and a few client
    events, its size is in the summary). A window in which anything fired ends
    with one ``window_summary`` event carrying the final counts. A sustained
    flood therefore gives about two to three events per window, whatever its
    rate; a window without alerts emits nothing.

A source is one IPv4 address or one IPv6 /64
    (one subscriber holds a whole /64 and could use a fresh address for every
    request). Events name sources only anonymised (/24, /48, see
    :mod:`edge.observe.anon`); raw addresses live in memory only, as the rate
    limiter's buckets do.

The request path pays a dictionary update
    :meth:`SecurityEvents.record` runs synchronously for every blocked request:
    no I/O, no awaiting. Per tenant, sources are counted in an LRU of at most
    ``max_clients`` (10,000) entries. A flood from millions of addresses evicts
    the least recently blocked ones, so memory stays bounded; a source that
    keeps attacking stays recent and keeps its count, which is what the
    threshold must see (an exact count-min/top-k sketch would cost more per
    request for no better alert). An evicted source starts again from zero.
    Events are built when a threshold is crossed (a few times per window) and
    put on a bounded queue (``max_pending``, oldest dropped and counted in
    ``edge_security_events_dropped_total``). A background task logs them and
    hands webhook deliveries to :class:`WebhookSender`.

Delivery
    ``POST`` with ``Content-Type: application/json``, ``User-Agent:
    edge-events/1``, ``Edge-Event-Id`` (the event's id, the same on every
    retry) and ``Edge-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
    HMAC-SHA256 with the tenant's ``secret`` over ``"<t>." + body`` (the raw
    body bytes). Connection errors, timeouts, 429 and 5xx are retried with
    exponential backoff and jitter (``Retry-After`` is honoured up to the
    maximum backoff); other answers are final. Redirects are never followed
    and proxy settings from the environment are ignored: the destination is
    exactly the configured URL. Each attempt is signed anew, so a retry an
    hour later still passes the receiver's replay check. Attempts run as
    separate tasks, at most ``concurrency`` at a time, each bounded by a
    timeout, and a retry waits without holding a slot: a hanging webhook
    delays no other tenant's. A URL that a tenant token wrote (``set_by``
    "tenant") is sent only to addresses :mod:`edge.origin.guard` allows,
    checked on every connect; a refused one is not retried.

Verifying a delivery (receiver side)
    1. Read ``Edge-Signature``; split at ``,`` into ``key=value`` pairs; take
       ``t`` (decimal seconds) and every ``v1`` (ignore unknown keys, so that a
       later scheme can be added alongside).
    2. Reject if ``|now - t|`` exceeds a tolerance (300 s): an old captured
       request cannot be replayed later.
    3. Compute HMAC-SHA256(secret, ``f"{t}."`` + raw body) in hex and compare
       it with each ``v1`` in constant time; accept if one matches.
    4. Drop repeats of an ``Edge-Event-Id`` already seen within the tolerance:
       that defeats a replay inside the window and de-duplicates retries whose
       answer was lost.

    :func:`verify_signature` does steps 1 to 3::

        ok = verify_signature(secret, request.headers["Edge-Signature"], body, time.time())

The event
    ``{"type": "edge.security_event", "id", "node", "tenant", "what",
    "time", "window": {"start", "end", "seconds"}, "counts": {"blocked",
    "by_filter": {...}}, "top_sources": [{"client", "blocked"}] (at most 10),
    "rules": {rule id: count} (at most 20), "threshold"}``; a
    ``client_blocks`` event adds ``"client": {"source", "blocked"}``, a
    ``window_summary`` adds ``"alerts": {"tenant_block_rate", "client_blocks"}``
    and ``"partial"`` (true when the node stopped before the window ended).
    Times are ISO 8601 UTC with ``Z``.

    Other events share ``type``, ``id``, ``node``, ``tenant``, ``what`` and
    ``time`` and the delivery, and carry their own fields instead of the
    counts (:meth:`SecurityEvents.notify`): ``certificate_expiry`` and
    ``certificate_renewal_failed`` (:mod:`edge.tls.expiry`).

Counts are per worker process, like the rate limits: with N workers each
counts the requests the kernel gave it.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import heapq
import hmac
import ipaddress
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import aiohttp
import orjson
from prometheus_client import Counter

from edge.http.urls import split_url
from edge.observe.anon import anonymise
from edge.observe.metrics import REGISTRY
from edge.origin.guard import AddressPolicy, connector, forbidden
from edge.policy.sections.events import EventSettings

log = logging.getLogger("edge.events")

# --- bounds and defaults (one place) -----------------------------------------

DEFAULT_MAX_CLIENTS = 10_000  # sources counted per tenant and window
DEFAULT_MAX_PENDING = 1000  # events waiting to be logged and sent
MAX_CLIENT_EVENTS = 10  # client_blocks events per tenant and window
MAX_RULE_IDS = 1000  # distinct rule ids counted per tenant and window
MAX_FILTER_NAMES = 32
TOP_SOURCES = 10
TOP_RULES = 20
OTHER = "(other)"  # the counter for rule ids and filters beyond the bounds

SIGNATURE_TOLERANCE = 300  # seconds a receiver accepts between signing and now
USER_AGENT = "edge-events/1"

TENANT_BLOCK_RATE = "tenant_block_rate"
CLIENT_BLOCKS = "client_blocks"
WINDOW_SUMMARY = "window_summary"
# Certificates (edge.tls.acme): an ACME order for a host that a valid
# certificate still covers failed, or one for a host no certificate covers.
CERTIFICATE_RENEWAL_FAILED = "certificate_renewal_failed"
CERTIFICATE_ISSUE_FAILED = "certificate_issue_failed"

EVENTS = Counter(
    "edge_security_events_total",
    "Security events emitted, by tenant and kind (tenant_block_rate, client_blocks, window_summary, "
    "certificate_expiry, certificate_renewal_failed, certificate_issue_failed).",
    ("tenant", "what"),
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "edge_security_events_dropped_total",
    "Security events dropped before they were logged or sent: the queue was full.",
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "edge_security_event_deliveries_total",
    "Webhook deliveries of security events, by tenant and outcome "
    "(delivered; refused: a final answer other than 2xx; failed: gave up after retries; "
    "forbidden: a URL set by a tenant token at an address the node refuses; "
    "abandoned: still pending at shutdown; dropped: too many deliveries pending).",
    ("tenant", "outcome"),
    registry=REGISTRY,
)


# --- signatures ---------------------------------------------------------------


def sign(secret: str, t: int, body: bytes) -> str:
    """The ``Edge-Signature`` value for ``body`` signed at unix time ``t``."""
    mac = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, now: float, tolerance: float = SIGNATURE_TOLERANCE) -> bool:
    """True when ``header`` (an ``Edge-Signature`` value) signs ``body`` with
    ``secret`` and was made within ``tolerance`` seconds of ``now``. Never
    raises: anything malformed is False."""
    if not isinstance(header, str) or not isinstance(body, (bytes, bytearray)) or len(header) > 1024:
        return False
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if t is not None or not (value.isascii() and value.isdigit() and len(value) <= 12):
                return False
            t = int(value)
        elif key == "v1":
            candidates.append(value.lower())
    if t is None or not candidates or abs(now - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), b"%d." % t + bytes(body), hashlib.sha256).hexdigest()
    matched = False
    for candidate in candidates:
        # compare_digest takes ASCII strings only; and check every candidate, not just until one matches.
        if len(candidate) == len(expected) and candidate.isascii():
            matched |= hmac.compare_digest(candidate, expected)
    return matched


# --- delivery -----------------------------------------------------------------


def _shown(url: str) -> str:
    """scheme://host[:port] only: hosted webhook services put tokens into the
    path or the query, and logs are read by more people than policies."""
    u = split_url(url)
    return u.origin if u is not None else "(invalid URL)"


def _retry_after(value: str | None) -> float | None:
    if value and value.isascii() and value.strip().isdigit():
        return float(value.strip())
    return None


class WebhookSender:
    """POSTs signed event bodies, with retries; one instance per worker."""

    def __init__(self, *, tries: int = 5, backoff: float = 1.0, max_backoff: float = 60.0, timeout: float = 5.0,
                 concurrency: int = 8, clock: Callable[[], float] = time.time,
                 guard: AddressPolicy = AddressPolicy()) -> None:
        self.tries = max(1, tries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.clock = clock
        self.guard = guard
        self._concurrency = max(1, concurrency)
        # Guarded URLs (written by tenant tokens) and the others never share a pool.
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._slots = asyncio.Semaphore(self._concurrency)

    def _client(self, guarded: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(guarded)
        if session is None or session.closed:
            session = self._sessions[guarded] = aiohttp.ClientSession(
                trust_env=False,  # no HTTP(S)_PROXY from the environment: exactly the configured URL
                timeout=self.timeout,
                connector=connector(self.guard if guarded else None, limit=self._concurrency),
            )
        return session

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, with jitter so
        that many nodes retrying one receiver spread out."""
        base = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        wait = base / 2 + random.random() * base / 2
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait

    async def deliver(self, url: str, secret: str, event_id: str, body: bytes, *, tenant: str = "-",
                      guarded: bool = False) -> bool:
        """True once the receiver answered 2xx; False when it refused or every
        try failed. ``guarded``: the URL came from a tenant token, so its
        address must pass the node's address policy."""
        last = ""
        for attempt in range(1, self.tries + 1):
            async with self._slots:  # held for one attempt only, never while waiting to retry
                outcome, last, hint = await self._attempt(url, secret, event_id, body, guarded)
            if outcome == "delivered":
                DELIVERIES.labels(tenant, "delivered").inc()
                return True
            if outcome == "refused":
                DELIVERIES.labels(tenant, "refused").inc()
                log.warning("webhook of tenant %s refused event %s: %s from %s (not retried)",
                            tenant, event_id, last, _shown(url))
                return False
            if outcome == "forbidden":
                DELIVERIES.labels(tenant, "forbidden").inc()
                log.warning("webhook of tenant %s not sent event %s: the address of %s is not allowed "
                            "(%s; not retried)", tenant, event_id, _shown(url), last)
                return False
            if attempt < self.tries:
                await asyncio.sleep(self.delay(attempt, hint))
        DELIVERIES.labels(tenant, "failed").inc()
        log.warning("webhook of tenant %s did not take event %s: gave up after %d tries to %s (last: %s)",
                    tenant, event_id, self.tries, _shown(url), last)
        return False

    async def _attempt(self, url: str, secret: str, event_id: str, body: bytes,
                       guarded: bool) -> tuple[str, str, float | None]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Edge-Event-Id": event_id,
            "Edge-Signature": sign(secret, int(self.clock()), body),
        }
        try:
            async with self._client(guarded).post(url, data=body, headers=headers, allow_redirects=False,
                                                  timeout=self.timeout) as resp:
                status = resp.status
                hint = _retry_after(resp.headers.get("Retry-After"))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return "retry", "timeout", None
        except aiohttp.ClientConnectorError as exc:
            refused = forbidden(exc)
            if refused is not None:
                return "forbidden", str(refused), None
            return "retry", type(exc).__name__, None
        except Exception as exc:  # noqa: BLE001 - any failure to connect or talk is worth another try
            # The type only: some messages repeat the URL, query included.
            return "retry", type(exc).__name__, None
        if 200 <= status < 300:
            return "delivered", f"status {status}", None
        if status == 429 or status >= 500:
            return "retry", f"status {status}", hint
        if 300 <= status < 400:
            return "refused", f"status {status} (redirects are not followed)", None
        return "refused", f"status {status}", None

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()


# --- counting and emitting ----------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _ipv6_source(peer: str) -> str:
    try:
        ip = ipaddress.IPv6Address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def _source(client: str | None) -> str:
    if not client:
        return "-"
    if ":" not in client:
        return client
    return _ipv6_source(client)


def _anonymised(source: str) -> str:
    return anonymise(source.partition("/")[0]) if source != "-" else "-"


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Window:
    """What one tenant's blocked requests were within one window."""

    __slots__ = ("alerts_clients", "alerts_tenant", "blocked", "by_filter", "clients", "rules", "seconds",
                 "settings", "start")

    def __init__(self, start: int, settings: EventSettings) -> None:
        self.start = start
        self.seconds = settings.window
        self.settings = settings
        self.blocked = 0
        self.by_filter: dict[str, int] = {}
        self.rules: dict[str, int] = {}
        # source -> [blocked, alerted]; least recently blocked first.
        self.clients: OrderedDict[str, list] = OrderedDict()
        self.alerts_tenant = 0
        self.alerts_clients = 0


class SecurityEvents:
    """Counts blocked requests per tenant and window; emits aggregated events."""

    def __init__(self, node: str, *, clock: Callable[[], float] = time.time, sender: WebhookSender | None = None,
                 max_clients: int = DEFAULT_MAX_CLIENTS, max_pending: int = DEFAULT_MAX_PENDING,
                 max_deliveries: int = DEFAULT_MAX_PENDING, tick: float = 1.0, close_timeout: float = 2.0) -> None:
        self.node = node
        self.clock = clock
        self.sender = sender if sender is not None else WebhookSender()
        self.max_clients = max(1, max_clients)
        self.max_deliveries = max_deliveries
        self.tick_interval = tick
        self.close_timeout = close_timeout
        self._windows: dict[str, _Window] = {}
        # (event, webhook URL or None, secret or None, guarded, log text); the oldest go first when full.
        self._queue: deque[tuple[dict[str, Any], str | None, str | None, bool, str]] = deque(maxlen=max(1, max_pending))
        self.dropped = 0
        self._dropped_logged = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._deliveries: dict[asyncio.Task, str] = {}  # -> tenant

    # --------------------------------------------------------- request path

    def record(self, tenant: str, settings: EventSettings, filter_name: str, rule_ids: tuple[str, ...],
               client: str | None) -> None:
        """One blocked request. Synchronous and cheap: counters, and an event
        object built only when a threshold is crossed."""
        now = self.clock()
        seconds = settings.window
        start = int(now) // seconds * seconds
        w = self._windows.get(tenant)
        if w is None or w.start != start or w.seconds != seconds:
            if w is not None:
                self._end(tenant, w, partial=False)
            w = self._windows[tenant] = _Window(start, settings)
        w.settings = settings  # a reload applies from the next request on
        w.blocked += 1
        by_filter = w.by_filter
        if filter_name not in by_filter and len(by_filter) >= MAX_FILTER_NAMES:
            filter_name = OTHER
        by_filter[filter_name] = by_filter.get(filter_name, 0) + 1
        rules = w.rules
        for rule in rule_ids:
            if rule not in rules and len(rules) >= MAX_RULE_IDS:
                rule = OTHER
            rules[rule] = rules.get(rule, 0) + 1
        source = _source(client)
        clients = w.clients
        entry = clients.get(source)
        if entry is None:
            entry = clients[source] = [0, False]
            if len(clients) > self.max_clients:
                clients.popitem(last=False)
        else:
            clients.move_to_end(source)
        entry[0] += 1
        if not w.alerts_tenant and w.blocked >= settings.tenant_threshold:
            w.alerts_tenant = 1
            self._emit(tenant, w, TENANT_BLOCK_RATE, now, settings.tenant_threshold)
        if not entry[1] and entry[0] >= settings.client_threshold and w.alerts_clients < MAX_CLIENT_EVENTS:
            entry[1] = True
            w.alerts_clients += 1
            self._emit(tenant, w, CLIENT_BLOCKS, now, settings.client_threshold,
                       client={"source": _anonymised(source), "blocked": entry[0]})

    def record_verdict(self, tenant: str, settings: EventSettings, detail: str, client: str | None,
                       rules: tuple[str, ...] = ()) -> None:
        """A refusal of the filter chain, from its ``Verdict.detail`` and
        ``Verdict.rules``: ``filter.<name>[.<rule>]`` counts, for ``rules``
        when there are any, else for the rule the detail names; anything
        else (method, delivery region) is not an attack and is ignored."""
        if not detail.startswith("filter."):
            return
        name, _, rule = detail[7:].partition(".")
        self.record(tenant, settings, name, rules or ((rule,) if rule else ()), client)

    # ------------------------------------------------------------ windows

    def tick(self, now: float | None = None, *, final: bool = False) -> None:
        """End the windows that are over (all of them with ``final``): a
        summary for each that raised an alert, and their memory freed."""
        now = self.clock() if now is None else now
        for tenant, w in list(self._windows.items()):
            if final or w.start + w.seconds <= now:
                del self._windows[tenant]
                self._end(tenant, w, partial=w.start + w.seconds > now)

    def _end(self, tenant: str, w: _Window, *, partial: bool) -> None:
        if w.alerts_tenant or w.alerts_clients:
            self._emit(tenant, w, WINDOW_SUMMARY, w.start + w.seconds if not partial else self.clock(),
                       w.settings.tenant_threshold, partial=partial)

    def _top_sources(self, w: _Window) -> list[dict[str, Any]]:
        # The heaviest addresses, anonymised; several of one network merge into one entry.
        merged: dict[str, int] = {}
        for source, (n, _) in heapq.nlargest(TOP_SOURCES * 3, w.clients.items(), key=lambda kv: kv[1][0]):
            anon = _anonymised(source)
            merged[anon] = merged.get(anon, 0) + n
        top = heapq.nlargest(TOP_SOURCES, merged.items(), key=itemgetter(1))
        return [{"client": anon, "blocked": n} for anon, n in top]

    def _emit(self, tenant: str, w: _Window, what: str, now: float, threshold: int, *,
              client: dict[str, Any] | None = None, partial: bool | None = None) -> None:
        event = self._event(tenant, what, now)
        event.update({
            "window": {"start": _iso(w.start), "end": _iso(w.start + w.seconds), "seconds": w.seconds},
            "counts": {"blocked": w.blocked, "by_filter": dict(w.by_filter)},
            "top_sources": self._top_sources(w),
            "rules": dict(heapq.nlargest(TOP_RULES, w.rules.items(), key=itemgetter(1))),
            "threshold": threshold,
        })
        if client is not None:
            event["client"] = client
        if partial is not None:
            event["alerts"] = {TENANT_BLOCK_RATE: w.alerts_tenant, CLIENT_BLOCKS: w.alerts_clients}
            event["partial"] = partial
        source = event.get("client", {}).get("source")
        text = (f"tenant={tenant} blocked={w.blocked} window={event['window']['start']}+{w.seconds}s"
                f"{f' source={source}' if source else ''}")
        self._queue_event(event, w.settings, text)

    def notify(self, tenant: str, settings: EventSettings, what: str, fields: dict[str, Any], text: str) -> None:
        """An event that is no block count (a certificate about to expire,
        say): ``fields`` join the common ones, ``text`` follows the tenant
        in the log line. Logged and sent like the others."""
        event = self._event(tenant, what, self.clock())
        event.update(fields)
        self._queue_event(event, settings, f"tenant={tenant} {text}")

    def certificate(self, tenant: str, settings: EventSettings, what: str, certificate: dict[str, Any]) -> None:
        """A certificate event (``CERTIFICATE_*``) for ``tenant``; ``certificate``
        describes it (name, hosts, error, ...)."""
        self.notify(tenant, settings, what, {"certificate": certificate},
                    f"certificate={certificate.get('name')} hosts={','.join(certificate.get('hosts', ()))} "
                    f"error={certificate.get('error')}")

    def _event(self, tenant: str, what: str, now: float) -> dict[str, Any]:
        """The fields every event starts with."""
        return {"type": "edge.security_event", "id": uuid.uuid4().hex, "node": self.node, "tenant": tenant,
                "what": what, "time": _iso(now)}

    def _queue_event(self, event: dict[str, Any], settings: EventSettings, text: str) -> None:
        EVENTS.labels(event["tenant"], event["what"]).inc()
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1
            EVENTS_DROPPED.inc()
        queue.append((event, settings.webhook_url, settings.secret, settings.guarded, text))
        self._wake.set()

    def source_count(self) -> int:
        """Sources counted in the open windows of this worker (for tests and debugging)."""
        return sum(len(w.clients) for w in self._windows.values())

    # ----------------------------------------------------- background side

    def pending(self) -> int:
        """Events queued and not yet logged."""
        return len(self._queue)

    def queued(self) -> list[dict[str, Any]]:
        """The events queued and not yet logged, oldest first."""
        return [item[0] for item in self._queue]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_interval)
            self._wake.clear()
            try:
                self.tick()
                self._drain()
            except Exception:
                log.exception("security events: processing failed; continuing")

    def _drain(self) -> None:
        if self.dropped != self._dropped_logged:
            log.warning("security events: %d dropped, the queue was full", self.dropped - self._dropped_logged)
            self._dropped_logged = self.dropped
        queue = self._queue
        while queue:
            event, url, secret, guarded, text = queue.popleft()
            log.warning("security event %s: %s", event["what"], text)
            if url is None or secret is None:
                continue
            if len(self._deliveries) >= self.max_deliveries:
                DELIVERIES.labels(event["tenant"], "dropped").inc()
                log.warning("security events: event %s of tenant %s not sent, %d deliveries pending",
                            event["id"], event["tenant"], len(self._deliveries))
                continue
            task = asyncio.ensure_future(
                self.sender.deliver(url, secret, event["id"], orjson.dumps(event), tenant=event["tenant"],
                                    guarded=guarded))
            self._deliveries[task] = event["tenant"]
            task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task) -> None:
        self._deliveries.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("security events: a webhook delivery failed unexpectedly: %r", task.exception())

    async def close(self, timeout: float | None = None) -> None:
        """Stop: summaries for the open windows that raised alerts, every
        queued event logged, and pending deliveries given ``timeout`` seconds
        (default ``close_timeout``) before they are abandoned."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.tick(final=True)
        self._drain()
        pending = dict(self._deliveries)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.close_timeout if timeout is None else timeout)
            for task in late:
                task.cancel()
                DELIVERIES.labels(pending[task], "abandoned").inc()
            await asyncio.gather(*late, return_exceptions=True)
            if late:
                log.warning("security events: %d webhook deliveries abandoned at shutdown", len(late))
        await self.sender.close()


__all__ = [
    "EventSettings",
    "SecurityEvents",
    "WebhookSender",
    "sign",
    "verify_signature",
]
