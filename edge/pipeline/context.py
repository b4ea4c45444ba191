"""What the phases learn about one request, in one place."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Ctx:
    """What the phases learn about one request."""

    rid: str
    start: float
    method: str
    peer: str | None
    tenant: str = "-"
    host: str = "-"
    path: str = "-"
    cache: str = ""
    status: int = 0
    size: int = 0
    body_too_large: bool = False
    origin_time: float = 0.0  # seconds until the origin's response headers (metrics)
    allowlisted: bool = False  # set by the ip_lists filter: later filters (rate limits, WAF) let it pass
    waf: object = None  # the WAF's finding on the request head, added to by the body
    blocked: str | None = None  # "waf:<rule ids>" when the WAF refused (or would, in log mode)
    slot: tuple[str, str] | None = None  # (tenant, client) counted by request_limits' max_concurrent
    body_max: int = 0  # the request body's size limit (tenant's, within the node's)
    body: object = None  # the one reader of the request body, shared by the WAF and the forwarding
    body_timeout: bool = False
    directives: object = None  # the request's cache directives (edge.cache.reuse.Directives)
    gated: bool = False  # passed the origin gate (the WAF's full pass, a concurrency slot)
