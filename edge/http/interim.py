"""Interim (1xx) responses relayed from an origin to a client (RFC 9110 §15.2): pure."""
from __future__ import annotations

import http
from collections.abc import Iterable

from edge.http.headers import HOP_BY_HOP, connection_tokens, is_token

# A 1xx carries no content (RFC 9110 §8.6: never Content-Length), and the
# origin's purge tags are for the edge, never clients.
_NEVER_RELAYED = HOP_BY_HOP | {"content-length", "surrogate-key", "cache-tag"}
_BAD_IN_VALUE = frozenset("\r\n\x00")


def relayed(status: int) -> bool:
    """Whether an interim response from the origin goes on to the client.

    Not ``100 Continue``: the edge answers the client's ``Expect`` itself and
    never forwards it, and §15.2 lets a proxy keep a 1xx it asked for. ``101``
    is a final answer (a protocol switch) and not an interim one here.
    """
    return 102 <= status <= 199


def interim_head(status: int, fields: Iterable[tuple[str, str]], via: str) -> bytes:
    """The bytes of the interim response the client gets: the origin's
    fields less hop-by-hop ones (§7.6.1, also those named in Connection) and
    any a field line cannot carry, with this hop added to ``Via`` (§7.6.3).
    The reason phrase is the standard one: a client ignores it (RFC 9112 §4),
    and the origin's could carry anything."""
    fields = list(fields)
    drop = _NEVER_RELAYED | connection_tokens(v for n, v in fields if n.lower() == "connection")
    lines = [f"HTTP/1.1 {status} {_reason(status)}".rstrip().encode("ascii")]
    prior_via: list[str] = []
    for name, value in fields:
        lname = name.lower()
        if lname in drop or not is_token(name) or not _BAD_IN_VALUE.isdisjoint(value):
            continue
        if lname == "via":
            prior_via.append(value)
            continue
        # aiohttp decodes field bytes as UTF-8 with surrogateescape: this gives
        # back the bytes the origin sent.
        lines.append(name.encode("ascii") + b": " + value.encode("utf-8", "surrogateescape"))
    prior = ", ".join(prior_via)
    lines.append(b"Via: " + (f"{prior}, {via}" if prior else via).encode("utf-8", "surrogateescape"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""
