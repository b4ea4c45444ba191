"""Content codings of request bodies (RFC 9110 §8.4), decoded for inspection only.

Request bodies go to the origin byte for byte, under the client's own
Content-Encoding and Content-Length; only the WAF reads a decoded view, and
a bounded one: a small compressed body must not become a large one in the
node's memory, nor a way to hide a payload from the WAF.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable

import brotli

# Decoded bytes per encoded byte at most; gzip and deflate top out near 1032,
# so only bombs (brotli's reach into the millions) are cut short.
MAX_RATIO = 1100
_MAX_CODINGS = 4


class CodingError(ValueError):
    """The body does not decode with the codings it names."""


class UnknownCoding(CodingError):
    """A coding this node cannot decode, so it cannot inspect the body."""


def codings(values: Iterable[str]) -> list[str]:
    """The codings of Content-Encoding field lines, in the order applied."""
    out: list[str] = []
    for value in values:
        out.extend(token.strip().lower() for token in value.split(",") if token.strip())
    return [c for c in out if c != "identity"]


def inspection_view(data: bytes, content_encoding: Iterable[str], limit: int) -> bytes:
    """The head of ``data`` decoded, at most ``limit`` bytes (and at most
    MAX_RATIO per input byte).

    ``data`` may be only the head of a body: a truncated stream is not an
    error. Raises CodingError for data a named coding cannot decode, and
    UnknownCoding for a coding it cannot decode at all (or too many): what
    the WAF cannot read must not pass as if it had been read.
    """
    names = codings(content_encoding)
    if not names:
        return data
    if len(names) > _MAX_CODINGS:
        raise UnknownCoding(f"more than {_MAX_CODINGS} content codings")
    for name in names:
        if name not in _DECODERS:
            raise UnknownCoding(f"content coding {name!r} is not supported")
    budget = min(limit, max(len(data), 1) * MAX_RATIO)
    for name in reversed(names):  # the last coding applied comes off first
        try:
            data = _DECODERS[name](data, budget)
        except (zlib.error, brotli.error) as exc:
            raise CodingError(f"the body is not valid {name}") from exc
    return data


def _gzip(data: bytes, limit: int) -> bytes:
    # Every member, as gzip readers decode them (RFC 1952 §2.2): a payload in
    # a second member must not pass unseen.
    out: list[bytes] = []
    size = 0
    while data and size < limit:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = d.decompress(data, limit - size)
        out.append(chunk)
        size += len(chunk)
        if not d.eof:
            break  # the head of the body ends here, or the budget does
        data = d.unused_data
    return b"".join(out)


def _whole(wbits: int):
    def decode(data: bytes, limit: int) -> bytes:
        d = zlib.decompressobj(wbits)
        out = d.decompress(data, limit)
        if d.eof and d.unused_data:
            raise zlib.error("data after the end of the stream")
        return out

    return decode


def _deflate(data: bytes, limit: int) -> bytes:
    # "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2), but some clients send raw deflate.
    try:
        return _whole(zlib.MAX_WBITS)(data, limit)
    except zlib.error:
        return _whole(-zlib.MAX_WBITS)(data, limit)


def _brotli(data: bytes, limit: int) -> bytes:
    d = brotli.Decompressor()
    return d.process(data, output_buffer_limit=limit)[:limit]


_DECODERS = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "br": _brotli,
}
