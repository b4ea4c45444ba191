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


def codings(values: Iterable[str]) -> list[str]:
    """The codings of Content-Encoding field lines, in the order applied."""
    out: list[str] = []
    for value in values:
        out.extend(token.strip().lower() for token in value.split(",") if token.strip())
    return [c for c in out if c != "identity"]


def inspection_view(data: bytes, content_encoding: Iterable[str], limit: int) -> bytes:
    """The head of ``data`` decoded, at most ``limit`` bytes (and at most
    MAX_RATIO per input byte). A coding this node does not know leaves the
    raw bytes to inspect.

    ``data`` may be only the head of a body: a truncated stream is not an
    error. Raises CodingError for data a named coding cannot decode.
    """
    names = codings(content_encoding)
    if not names or len(names) > _MAX_CODINGS or any(n not in _DECODERS for n in names):
        return data
    budget = min(limit, max(len(data), 1) * MAX_RATIO)
    for name in reversed(names):  # the last coding applied comes off first
        try:
            data = _DECODERS[name](data, budget)
        except (zlib.error, brotli.error) as exc:
            raise CodingError(f"the body is not valid {name}") from exc
    return data


def _zlib(wbits: int):
    def decode(data: bytes, limit: int) -> bytes:
        d = zlib.decompressobj(wbits)
        return d.decompress(data, limit)

    return decode


def _deflate(data: bytes, limit: int) -> bytes:
    # "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2), but some clients send raw deflate.
    try:
        return _zlib(zlib.MAX_WBITS)(data, limit)
    except zlib.error:
        return _zlib(-zlib.MAX_WBITS)(data, limit)


def _brotli(data: bytes, limit: int) -> bytes:
    d = brotli.Decompressor()
    out = d.process(data, output_buffer_limit=limit)
    return out[:limit]


_DECODERS = {
    "gzip": _zlib(16 + zlib.MAX_WBITS),
    "x-gzip": _zlib(16 + zlib.MAX_WBITS),
    "deflate": _deflate,
    "br": _brotli,
}
