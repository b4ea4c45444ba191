"""The identify phase: a request id, the client's address (behind trusted
proxies, the one they name), the tenant from the request target's host,
and the normalised path."""
from __future__ import annotations

import itertools
import os
import time

from aiohttp import web

from edge.cache.key import host_key, normalise_path
from edge.geo.client import Trusted, client_address
from edge.pipeline.context import Ctx

Refusal = tuple[int, str, str]  # status, text, Cache-Status detail


class Identify:
    def __init__(self, config) -> None:
        self.trusted = Trusted(config.trusted_proxies)
        # Only the field the trusted proxies write is read; a client could add the other.
        self.forwarded = config.client_address_header == "forwarded"
        self._rid_prefix = f"{os.getpid() & 0xFFFF:04x}{int(time.time()) & 0xFFFFFF:06x}"
        self._rid = itertools.count(1)

    def trusted_peer(self, peer: str | None) -> bool:
        return bool(self.trusted) and bool(peer) and self.trusted.contains(peer)

    def client(self, request: web.BaseRequest) -> Ctx:
        """A new request's context: its id, and its client."""
        peer = request.remote
        if self.trusted and peer and self.trusted.contains(peer):
            # Behind a trusted proxy the client is the right-most untrusted hop.
            h = request.headers
            if self.forwarded:
                peer = client_address(peer, (), h.getall("Forwarded", ()), self.trusted)
            else:
                peer = client_address(peer, h.getall("X-Forwarded-For", ()), (), self.trusted)
        return Ctx(f"{self._rid_prefix}-{next(self._rid):x}", time.monotonic(), request.method, peer)


def site(request: web.BaseRequest, ctx: Ctx, policies) -> Refusal | None:
    """The tenant and path the request is for, in ``ctx``; or why it cannot be served."""
    if request.version.major != 1:
        return 505, "HTTP version not supported", "bad-version"
    raw = request.raw_path
    if "#" in raw:
        # A fragment never belongs in a request target (RFC 9112 §3.2).
        return 400, "fragment in request target", "bad-target"
    hosts = request.headers.getall("Host", ())
    if raw[:1] != "/":
        # Absolute-form target: its authority replaces Host (RFC 9112 §3.2.2).
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            return 400, "bad request target", "bad-target"
        authority, slash, tail = rest.partition("/")
        raw = "/" + tail
        hosts = (authority,)
    if len(hosts) != 1:
        return 400, "exactly one Host header is required", "bad-host"
    host = host_key(hosts[0])
    if host is None:
        return 400, "malformed Host header", "bad-host"
    ctx.host = host
    policy = policies.resolve(host)
    if policy is None:
        return 421, "this node serves no site for that host", "unknown-host"
    ctx.policy = policy
    ctx.tenant = policy.tenant
    raw_path, _, ctx.raw_query = raw.partition("?")
    path = normalise_path(raw_path)
    if path is None:
        return 400, "malformed path", "bad-path"
    ctx.path = path
    return None
