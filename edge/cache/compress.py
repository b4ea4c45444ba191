"""Compressed variants of cached responses (RFC 9110 §8.4, §12.5.3).

The edge compresses a text-like response once, on the first hit that asks
for a coding, and keeps the compressed bytes as a variant of its own; later
hits are served without compressing again. A body is compressed as a stream
(``encode``), one stored chunk at a time, and a worker's compressions running
at once are bounded by bytes (``Budget``, the node's
``cache.compress_budget``): past it, clients get identity meanwhile. To keep the number of variants per URL small, a client's
Accept-Encoding is reduced to one of three buckets ("br", "gzip",
"identity") before it selects a variant: two clients that accept the same
coding share one stored copy however they spell their header.

A compressed variant is a different representation: it gets its own
Content-Length, Content-Encoding and entity tag, loses the digests computed
over the uncompressed bytes, and both it and the identity response of a
compressible type carry ``Vary: Accept-Encoding`` so that caches downstream
keep them apart.
"""
from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import brotli

from edge.http.headers import is_token

__all__ = [
    "BROTLI_QUALITY",
    "CODINGS",
    "GZIP_LEVEL",
    "INLINE_LIMIT",
    "MAX_SIZE",
    "MIN_SIZE",
    "Budget",
    "Encoder",
    "accept_bucket",
    "compress",
    "compressible",
    "cost",
    "encode",
    "identity_headers_vary",
    "origin_etag",
    "variant_headers",
]

# Quality 5 (benchmarks/compress.py, generated HTML, JS and JSON): output
# within 0.5-2.5 % of q6 at 10-25 % more MB/s, smaller than gzip 6 and on
# HTML and JS faster too; q11 saves another 10 % at about 1 MB/s, too slow
# even for a once-per-object cost on the fill path.
BROTLI_QUALITY = 5
# The streaming coder's window and input block (log2): 1 MiB each. Its state
# grows with the window, to about 30 MiB with the library's 4 MiB default on
# large bodies and to about 7 MiB here; blocks of 1 MiB give the ratio of a
# one-shot compression, the default 64 KiB ones about 5 % less.
BROTLI_LGWIN = 20
BROTLI_LGBLOCK = 20
GZIP_LEVEL = 6
# zlib's window bits for a gzip wrapper (RFC 1952) with MTIME 0.
_GZIP_WBITS = 16 + 15
# What a coder's state may take at most (measured on large text bodies):
# counted against the compression budget besides the body.
CODER_STATE = {"br": 8 * 1024 * 1024, "gzip": 512 * 1024}
# Below this the savings do not pay for the coding headers and the CPU.
MIN_SIZE = 512
# Once per stored object; larger ones are served as they are.
MAX_SIZE = 16 * 1024 * 1024
# Chunks from this size on are compressed in a worker thread (brotli and
# zlib release the GIL) so the event loop keeps serving meanwhile.
INLINE_LIMIT = 64 * 1024
# Pieces a body held in memory is fed to the coder in.
_PIECE = 256 * 1024

CODINGS = ("br", "gzip")
_ETAG_SUFFIX = {"br": "-br", "gzip": "-gz"}

_OWS = " \t"
# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )  (RFC 9110 §12.4.2)
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_ENTITY_TAG = re.compile('(W/)?"([\x21\x23-\x7e\x80-\U0010ffff]*)"')

_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "application/wasm",
        "application/manifest+json",
        "application/vnd.ms-fontobject",
        "application/x-font-ttf",
        "font/ttf",
        "font/otf",
        "image/svg+xml",
        "image/x-icon",
        "image/vnd.microsoft.icon",
    }
)
# Digests of the uncompressed bytes: wrong for the compressed ones.
_DIGESTS = frozenset({"content-md5", "digest", "content-digest", "repr-digest"})


# ------------------------------------------------------------ negotiation


def accept_bucket(accept_encoding: str | None) -> str:
    """The coding to serve for an Accept-Encoding field (all lines joined).

    The acceptable coding with the highest qvalue wins; on equal qvalues br
    before gzip before identity. A coding not listed gets the qvalue of "*"
    (none without "*"); identity, when neither it nor "*" is listed, is
    acceptable but never preferred. ``x-gzip`` is gzip (§8.4.1.3). Elements
    that do not parse are skipped; a coding listed twice counts with its
    lower qvalue. No field at all: identity (§12.5.3 would allow any coding,
    but an old client that sends nothing may not decode one). When nothing
    is acceptable, identity is sent anyway: §12.5.3 allows 406, yet a page
    the client may fail to decode beats an error page it surely cannot use.
    """
    if not accept_encoding:
        return "identity"
    weights: dict[str, float] = {}
    for element in accept_encoding.split(","):
        coding, *params = element.split(";")
        coding = coding.strip(_OWS).lower()
        if coding != "*" and not is_token(coding):
            continue
        if len(params) > 1:
            continue  # only one parameter exists: the weight
        q = 1.0
        if params:
            name, eq, value = params[0].strip(_OWS).partition("=")
            if name.lower() != "q" or not eq or not _QVALUE.fullmatch(value):
                continue
            q = float(value)
        if coding == "x-gzip":
            coding = "gzip"
        weights[coding] = min(q, weights.get(coding, q))
    star = weights.get("*", 0.0)
    best = max(
        (weights.get("br", star), 2, "br"),
        (weights.get("gzip", star), 1, "gzip"),
        (weights.get("identity", star), 0, "identity"),
    )
    return best[2] if best[0] > 0 else "identity"


def compressible(
    status: int,
    content_type: str | None,
    content_encoding: str | None,
    cache_control_no_transform: bool,
    size: int | None,
) -> bool:
    """Whether the edge may store a compressed variant of this response.

    Only 200s of text-like types between ``MIN_SIZE`` and ``MAX_SIZE``
    bytes (a known size: the budget counts it). Never a body that
    already has a content coding, nor one whose origin said ``no-transform``
    (RFC 9111 §5.2.2.6, RFC 9110 §7.7).
    """
    if status != 200 or cache_control_no_transform:
        return False
    if size is None or size < MIN_SIZE or size > MAX_SIZE:
        return False
    if content_encoding is not None and content_encoding.strip(_OWS).lower() not in ("", "identity"):
        return False
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip(_OWS).lower()
    kind, slash, sub = media.partition("/")
    if not slash or not is_token(kind) or not is_token(sub):
        return False
    if kind == "text":
        return sub != "event-stream"  # a stream, sent as it comes
    if media in _TYPES:
        return True
    return kind == "application" and sub.endswith(("+json", "+xml"))


# ------------------------------------------------------------ coding


class Encoder:
    """One body in content coding ``coding`` ("br" or "gzip"), fed in pieces.

    The bytes out do not depend on how the input is cut, and gzip's carry
    MTIME 0: the same body always gives the same bytes, so two workers that
    compress one object store identical variants (their entity tag is the
    same, and ranges are cut from them)."""

    __slots__ = ("_feed", "_finish")

    def __init__(self, coding: str) -> None:
        if coding == "br":
            c = brotli.Compressor(quality=BROTLI_QUALITY, lgwin=BROTLI_LGWIN, lgblock=BROTLI_LGBLOCK)
            self._feed, self._finish = c.process, c.finish
        elif coding == "gzip":
            z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
            self._feed, self._finish = z.compress, z.flush
        else:
            raise ValueError(f"unsupported content coding {coding!r}")

    def feed(self, data) -> bytes:
        """Compressed bytes that ``data`` (any bytes-like) completed; often none yet."""
        return self._feed(data)

    def finish(self) -> bytes:
        """The rest of the stream; the encoder is done."""
        return self._finish()


def compress(body: bytes, coding: str) -> bytes:
    """``body`` in content coding ``coding``, at once: the bytes ``encode``
    gives for it."""
    encoder = Encoder(coding)
    return encoder.feed(body) + encoder.finish()


async def _pieces(body: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(body)
    for start in range(0, len(view), _PIECE):
        yield view[start : start + _PIECE]


async def encode(source: bytes | AsyncIterable[bytes], coding: str) -> AsyncIterator[bytes]:
    """``source`` (a body, or its chunks as stored) in content coding
    ``coding``, piece by piece as the coder gives them: one input chunk and
    its output are held at a time, never the whole body. Chunks from
    ``INLINE_LIMIT`` on, and the end of a stream that long, are compressed in
    a worker thread."""
    encoder = Encoder(coding)
    chunks = _pieces(source) if isinstance(source, (bytes, bytearray)) else source
    fed = 0
    async for chunk in chunks:
        fed += len(chunk)
        out = encoder.feed(chunk) if len(chunk) < INLINE_LIMIT else await asyncio.to_thread(encoder.feed, chunk)
        if out:
            yield out
    # Brotli keeps up to a block of input until the end: that is compressed now.
    out = encoder.finish() if fed < INLINE_LIMIT else await asyncio.to_thread(encoder.finish)
    if out:
        yield out


def cost(size: int, coding: str) -> int:
    """What compressing a body of ``size`` bytes counts against the budget:
    the compressed copy, which may grow to the body's size while it is
    collected (a streamed one holds less), and the coder's state."""
    return size + CODER_STATE[coding]


class Budget:
    """Bytes the compressions running at once in one worker may hold.

    Taken and given back on the event loop only. ``peak``: the most ever
    taken at once."""

    __slots__ = ("limit", "used", "peak")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) when they do not fit."""
        if self.used + n > self.limit:
            return False
        self.used += n
        if self.used > self.peak:
            self.peak = self.used
        return True

    def give(self, n: int) -> None:
        self.used -= n


# ------------------------------------------------------------ header fields


def _pairs(headers) -> Iterable[tuple[str, str]]:
    items = getattr(headers, "items", None)
    return items() if items is not None else headers


def _merged_vary(pairs: list[tuple[str, str]]) -> str:
    """All Vary lines as one value that includes Accept-Encoding; "*" stays
    "*" (it already varies on everything, §12.5.5)."""
    members: list[str] = []
    seen: set[str] = set()
    for name, value in pairs:
        if name.lower() != "vary":
            continue
        for member in value.split(","):
            member = member.strip(_OWS)
            if member == "*":
                return "*"
            if member and member.lower() not in seen:
                seen.add(member.lower())
                members.append(member)
    if "accept-encoding" not in seen:
        members.append("Accept-Encoding")
    return ", ".join(members)


def _with_vary(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    vary = _merged_vary(pairs)
    out: list[tuple[str, str]] = []
    placed = False
    for name, value in pairs:
        if name.lower() == "vary":
            if not placed:
                out.append((name, vary))  # where the first Vary line stood
                placed = True
            continue
        out.append((name, value))
    if not placed:
        out.append(("Vary", vary))
    return out


def _variant_etag(value: str, coding: str) -> str | None:
    m = _ENTITY_TAG.fullmatch(value.strip(_OWS))
    if m is None:
        return None
    return f'{m.group(1) or ""}"{m.group(2)}{_ETAG_SUFFIX[coding]}"'


def origin_etag(value: str, coding: str) -> str | None:
    """The origin's entity tag behind a variant's (``"abc-br"`` -> ``"abc"``),
    to validate a stored variant with the origin; None when ``value`` is not
    a variant tag of ``coding``."""
    m = _ENTITY_TAG.fullmatch(value.strip(_OWS))
    suffix = _ETAG_SUFFIX.get(coding)
    if m is None or suffix is None or not m.group(2).endswith(suffix):
        return None
    return f'{m.group(1) or ""}"{m.group(2)[: -len(suffix)]}"'


def variant_headers(headers, coding: str, compressed_len: int) -> list[tuple[str, str]]:
    """The header fields to store with the ``coding`` variant of a response.

    ``headers``: the identity response's fields, as pairs or a multidict.
    Content-Encoding is set; a Content-Length is replaced by
    ``compressed_len`` (none is added: the store keeps lengths apart); Vary
    gains Accept-Encoding; the entity tag gets a coding suffix and keeps its
    strength (``"abc"`` -> ``"abc-br"``, ``W/"abc"`` -> ``W/"abc-br"``):
    the variant is another representation and must never strongly match the
    identity one (RFC 9110 §8.8.3); an ETag that does not parse is dropped
    rather than shared. Digests of the identity bytes are dropped. Everything
    else (Accept-Ranges included: ranges then apply to the compressed bytes)
    is kept, in order.
    """
    if coding not in CODINGS:
        raise ValueError(f"unsupported content coding {coding!r}")
    pairs = list(_pairs(headers))
    etags = [value for name, value in pairs if name.lower() == "etag"]
    etag = _variant_etag(etags[0], coding) if len(etags) == 1 else None
    out: list[tuple[str, str]] = []
    length_placed = etag_placed = False
    for name, value in _with_vary(pairs):
        lname = name.lower()
        if lname in _DIGESTS or lname == "content-encoding":
            continue
        if lname == "content-length":
            if not length_placed:
                out.append((name, str(compressed_len)))
                length_placed = True
            continue
        if lname == "etag":
            if etag is not None and not etag_placed:
                out.append((name, etag))
                etag_placed = True
            continue
        out.append((name, value))
    out.append(("Content-Encoding", coding))
    return out


def identity_headers_vary(headers) -> list[tuple[str, str]]:
    """The identity response of a compressible type, with ``Vary:
    Accept-Encoding`` merged in: it too was selected by Accept-Encoding, and
    a downstream cache must not hand it to a client that asked for br."""
    return _with_vary(list(_pairs(headers)))
