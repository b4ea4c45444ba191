"""Validating a stored response with the origin (RFC 9111 §4.3).

Pure functions: no I/O, no clock. Headers are (name, value) pairs or any
mapping with ``items()`` (multidict's CIMultiDict keeps repeated fields).
"""
from __future__ import annotations

from collections.abc import Iterable

from edge.http.headers import HOP_BY_HOP

__all__ = ["CLIENT_CONDITIONALS", "has_validator", "selects", "updated_headers", "validator_headers"]

# Preconditions a client may send; the edge replaces them with its own when it
# validates a stored response (§4.3.1) and evaluates the client's against the
# result itself (§4.3.2, edge/cache/conditional.py).
CLIENT_CONDITIONALS = frozenset({"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"})

# §3.2: never taken from a 304 (or a HEAD answer) into a stored response.
_NOT_UPDATED = HOP_BY_HOP | {"content-length"}


def _pairs(headers) -> Iterable[tuple[str, str]]:
    items = getattr(headers, "items", None)
    return items() if items is not None else headers


def _first(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def has_validator(headers) -> bool:
    """An ETag or a Last-Modified to validate with (RFC 9110 §8.8)."""
    return any(k.lower() in ("etag", "last-modified") for k, _ in _pairs(headers))


def validator_headers(stored) -> dict[str, str]:
    """The conditional fields for validating ``stored`` (RFC 9111 §4.3.1):
    If-None-Match with its entity tag; If-Modified-Since with its
    Last-Modified only when there is no entity tag. Empty: nothing to
    validate with."""
    pairs = list(_pairs(stored))
    etags = [v for k, v in pairs if k.lower() == "etag"]
    if etags:
        return {"If-None-Match": ", ".join(etags)}
    last_modified = _first(pairs, "last-modified")
    if last_modified is not None:
        return {"If-Modified-Since": last_modified}
    return {}


def selects(stored, fresh) -> bool:
    """Does a 304 with the fields ``fresh`` (a mapping) identify the stored
    response for update (§4.3.4)? A strong ETag must be the stored one; a
    304 with only weak or no validators answers the validation it was
    asked, so it selects it."""
    etag = fresh.get("ETag")
    if etag is None or etag.startswith("W/"):
        return True
    found = _first(_pairs(stored), "etag")
    return found is not None and found == etag


def updated_headers(stored, fresh, exclude: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
    """The stored response's header fields after a 304 (RFC 9111 §3.2, §4.3.4).

    Each field in ``fresh`` replaces all stored lines of that name (a
    repeated field in ``fresh`` keeps all its lines); the others stay as
    stored, in their order. Never taken over: Content-Length and the
    hop-by-hop fields (§3.2, §3.1), nor the lower-case names in ``exclude``
    (e.g. those the 304's Connection lists).
    """
    skip = _NOT_UPDATED | {n.lower() for n in exclude}
    new: dict[str, list[tuple[str, str]]] = {}
    for name, value in _pairs(fresh):
        lname = name.lower()
        if lname in skip or lname.startswith("proxy-"):
            continue
        new.setdefault(lname, []).append((name, value))
    out: list[tuple[str, str]] = []
    placed: set[str] = set()
    for name, value in _pairs(stored):
        lname = name.lower()
        if lname in new:
            if lname not in placed:
                out.extend(new[lname])  # where the stored field stood
                placed.add(lname)
            continue
        out.append((name, value))
    for lname, lines in new.items():
        if lname not in placed:
            out.extend(lines)
    return tuple(out)
