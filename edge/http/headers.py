"""Header rules a proxy must apply in both directions (RFC 9110 §7.6.1)."""
from __future__ import annotations

import re
from collections.abc import Iterable

# Hop-by-hop fields: meaningful only for one connection, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Request fields that can change what an origin answers without being part
# of the cache key; forwarding them would let one client poison the entry
# everyone else is served (unkeyed-input cache poisoning).
UNKEYED_REQUEST_FIELDS = frozenset(
    {
        "x-forwarded-host",
        "x-forwarded-server",
        "x-forwarded-port",
        "x-forwarded-scheme",
        "x-original-url",
        "x-rewrite-url",
        "x-original-host",
        "x-host",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-forwarded-prefix",
        "x-forwarded-path",
        "x-forwarded-uri",
        "x-forwarded-ssl",
        "x-original-uri",
        "forwarded",
        # Client-address claims: the origin learns the client from
        # X-Forwarded-For, which the edge writes itself.
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
    }
)


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Field names listed in Connection, which are hop-by-hop too (§7.6.1)."""
    names: set[str] = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return frozenset(names)


def removes_fields(headers) -> bool:
    """Whether a message's Connection names end-to-end fields (not just
    options such as ``close``): they are removed on the way on (§7.6.1)."""
    conn = headers.getall("Connection", ())
    return bool(conn) and bool(connection_tokens(conn) - _CONNECTION_OPTIONS)


def is_token(value: str) -> bool:
    return bool(value) and all(c in _TCHAR for c in value)


# Connection tokens that are options, not names of fields to remove.
_CONNECTION_OPTIONS = HOP_BY_HOP | {"close"}
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


# Names a proxy forwards: letters, digits and "-" (what nginx accepts by
# default). CGI, WSGI and FastCGI stacks map every other character to "_",
# so "X_Forwarded_Prefix" or "X.Forwarded.Prefix" would reach an
# application as X-Forwarded-Prefix past every name check.
forwardable_name = re.compile(r"[A-Za-z0-9-]+").fullmatch
