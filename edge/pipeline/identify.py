"""The identify phase: a request id, the client's address (behind trusted
proxies, the one they name), the HTTPS connection's server name, the
tenant from the request target's host, and the normalised path; and what a
tenant's ``tls`` section asks of the connection (a redirect to https,
Strict-Transport-Security)."""
from __future__ import annotations

import itertools
import os
import time

from aiohttp import web

from edge.cache.key import host_key, normalise_path
from edge.geo.client import Trusted, client_address
from edge.http.aiohttp_adapter import tls_session
from edge.pipeline.context import Ctx
from edge.policy.sections.tls import ACME_CHALLENGE_PREFIX
from edge.tls.context import below

# status, text, Cache-Status detail[, header fields]
Refusal = tuple[int, str, str] | tuple[int, str, str, dict[str, str]]
UNKNOWN_HOST = "unknown-host"  # the detail of a request for a host no tenant serves


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
        """A new request's context: its id, its client, its HTTPS connection."""
        peer = request.remote
        if self.trusted and peer and self.trusted.contains(peer):
            # Behind a trusted proxy the client is the right-most untrusted hop.
            h = request.headers
            if self.forwarded:
                peer = client_address(peer, (), h.getall("Forwarded", ()), self.trusted)
            else:
                peer = client_address(peer, h.getall("X-Forwarded-For", ()), (), self.trusted)
        return Ctx(f"{self._rid_prefix}-{next(self._rid):x}", time.monotonic(), request.method, peer,
                   tls=tls_session(request))


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
        return 421, "this node serves no site for that host", UNKNOWN_HOST
    tls = ctx.tls
    if tls is not None:
        if tls.tenant is not None and tls.tenant != policy.tenant:
            # RFC 9110 §15.5.20: the connection was opened for another tenant's
            # name (and certificate); the client must open one for this host.
            return 421, "this connection was opened for another site", "misdirected"
        minimum = policy.tls.min_version
        if below(tls.version, minimum):
            # The handshake judged the server name's tenant; a connection with
            # no name, or a name no tenant has, reaches this one by Host alone.
            return 421, f"this site is served over TLS {minimum} or later only", "tls-version"
    ctx.policy = policy
    ctx.tenant = policy.tenant
    raw_path, _, ctx.raw_query = raw.partition("?")
    path = normalise_path(raw_path)
    if path is None:
        return 400, "malformed path", "bad-path"
    ctx.path = path
    https = policy.tls
    if tls is not None:
        if https.answer_fields:
            request.answer_fields = https.answer_fields  # RFC 6797 §7.2: over HTTPS only
    elif https.redirect_http and not path.startswith(ACME_CHALLENGE_PREFIX):
        # The same target as sent, on the default https port.
        return 308, "this site is served over HTTPS", "https-redirect", {"Location": f"https://{host}{raw}"}
    return None
