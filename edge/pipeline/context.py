"""What the phases learn about one request, in one place: each phase reads
what the earlier ones found here rather than from its arguments."""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any

from edge.cache.reuse import NO_DIRECTIVES, Directives
from edge.cache.store import Hit
from edge.pipeline.outcome import Fwd, Outcome


@dataclass(slots=True)
class Ctx:
    """One request's context, from identify to log."""

    rid: str
    start: float
    method: str
    peer: str | None  # the client's address (behind trusted proxies, the one they name)
    # The rest by name only: a field added later cannot shift another's value.
    _: KW_ONLY
    tls: Any = None  # the HTTPS connection's edge.tls.listener.TlsSession; None over plain HTTP
    tenant: str = "-"
    host: str = "-"
    path: str = "-"  # normalised
    raw_query: str = ""
    policy: Any = None  # the tenant's policy as the request found it: one version from start to end
    # lookup and decide
    key: str = ""  # the primary cache key
    target: str = ""  # path and normalised query, as the origin gets them
    keyed: tuple[str, ...] = ()  # request fields in the key: the origin gets them
    directives: Directives = NO_DIRECTIVES  # the request's cache directives as the tenant obeys them
    fwd: Fwd | None = None  # why the request goes to the origin
    stale: Hit | None = None  # a stored entry kept for validation or stale-if-error; closed at the end
    uncacheable: bool = False  # the key is remembered as uncacheable: fetched without waiting for others
    # how it ended
    outcome: Outcome | None = None
    ttl: int | None = None  # the answer's seconds of freshness left, in Cache-Status
    cache: str = ""  # Cache-Status as sent: ``outcome`` rendered (the access log's field)
    status: int = 0
    size: int = 0
    origin_time: float = 0.0  # seconds until the origin's response headers (metrics)
    # what the filters note
    allowlisted: bool = False  # set by the ip_lists filter: later filters (rate limits, WAF) let it pass
    waf: object = None  # the WAF's finding on the request head, added to by the body
    blocked: str | None = None  # "waf:<rule ids>" when the WAF refused (or would, in log mode)
    slot: tuple[str, str] | None = None  # (tenant, client) counted by request_limits' max_concurrent
    gated: bool = False  # passed the filters' before-origin hooks: not asked again, released at the end
    # the request body
    body_max: int = 0  # its size limit (the tenant's, within the node's)
    body: object = None  # its one reader, shared by the filters and the forwarding
    body_too_large: bool = False
    body_timeout: bool = False
