"""Compressed variants of cached responses (RFC 9110 §8.4, §12.5.3):
edge.cache.compress."""
from __future__ import annotations

import gzip
import random
import threading

import brotli
import pytest
from multidict import CIMultiDict

from edge.cache import compress as cz
from edge.cache.compress import (
    MAX_SIZE,
    MIN_SIZE,
    accept_bucket,
    compressible,
    identity_headers_vary,
    variant_headers,
)
from edge.cache.conditional import evaluate

# (case naming the section it checks, Accept-Encoding, bucket)
ACCEPT = [
    ("RFC 9110 §12.5.3 no field: identity", None, "identity"),
    ("RFC 9110 §12.5.3 empty field: identity only", "", "identity"),
    ("RFC 9110 §12.5.3 gzip", "gzip", "gzip"),
    ("RFC 9110 §12.5.3 br", "br", "br"),
    ("RFC 9110 §12.5.3 equal q: br before gzip", "gzip, deflate, br", "br"),
    ("RFC 9110 §12.5.3 equal q: br before gzip (reversed)", "br, gzip", "br"),
    ("RFC 9110 §12.4.2 higher q wins", "br;q=0.5, gzip", "gzip"),
    ("RFC 9110 §12.4.2 higher q wins (br)", "br, gzip;q=0.9", "br"),
    ("RFC 9110 §12.4.2 q with three decimals", "br;q=0.001, gzip;q=0.002", "gzip"),
    ("RFC 9110 §12.4.2 q=1.000", "gzip;q=1.000", "gzip"),
    ("RFC 9110 §12.4.2 q=0 excludes", "br;q=0", "identity"),
    ("RFC 9110 §12.4.2 q=0.000 excludes", "br;q=0.000, gzip;q=0", "identity"),
    ("RFC 9110 §12.4.2 q=0 excludes one", "br;q=0, gzip", "gzip"),
    ("RFC 9110 §12.5.3 * accepts every coding", "*", "br"),
    ("RFC 9110 §12.5.3 *;q=0 accepts none", "*;q=0", "identity"),
    ("RFC 9110 §12.5.3 listed q=0 beats *", "*, br;q=0", "gzip"),
    ("RFC 9110 §12.5.3 listed coding beats lower *", "*;q=0.5, gzip", "gzip"),
    ("RFC 9110 §12.5.3 identity;q=0 alone: identity anyway", "identity;q=0", "identity"),
    ("RFC 9110 §12.5.3 nothing acceptable: identity anyway", "identity;q=0, *;q=0", "identity"),
    ("RFC 9110 §12.5.3 identity preferred explicitly", "br;q=0.1, identity", "identity"),
    ("RFC 9110 §12.5.3 identity tie: compressed wins", "gzip, identity;q=1", "gzip"),
    ("RFC 9110 §12.5.3 unlisted identity is never preferred", "gzip;q=0.001", "gzip"),
    ("RFC 9110 §12.5.3 only unknown codings", "deflate, compress, zstd", "identity"),
    ("RFC 9110 §12.5.3 identity", "identity", "identity"),
    ("RFC 9110 §8.4.1.3 x-gzip is gzip", "x-gzip", "gzip"),
    ("RFC 9110 §8.4.1 codings are case-insensitive", "GZIP", "gzip"),
    ("RFC 9110 §8.4.1 codings are case-insensitive (br)", "Br", "br"),
    ("RFC 9110 §5.6.6 parameter names are case-insensitive", "br;Q=0, gzip", "gzip"),
    ("RFC 9110 §5.6.1 OWS and empty elements", " ,, gzip ; q=0.5 ,, ", "gzip"),
    ("RFC 9110 §12.4.2 q above 1 is malformed", "br;q=2, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.4.2 q=1.001 is malformed", "br;q=1.001, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.4.2 four decimals are malformed", "br;q=0.5555, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.4.2 negative q is malformed", "br;q=-1, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.4.2 exponent is malformed", "br;q=1e0, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.4.2 empty q is malformed", "br;q=, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.5.3 unknown parameter is malformed", "br;level=5, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.5.3 two weights are malformed", "br;q=0.5;q=0.9, gzip;q=0.1", "gzip"),
    ("RFC 9110 §12.5.3 repeated coding: lower q counts", "gzip;q=0, gzip", "identity"),
    ("RFC 9110 §5.6.2 not a token", "b r, \u00fcbr, gzip;q=0.1", "gzip"),
    ("RFC 9110 §5.6.2 control characters", "\x00br, gzip;q=0.5", "gzip"),
    ("RFC 9110 §12.5.3 garbage", ";;;,=,q=1,;q=1", "identity"),
    ("RFC 9110 §12.5.3 thousands of elements", "x," * 4000 + "br", "br"),
]


@pytest.mark.parametrize("case, value, expected", ACCEPT, ids=[c[0] for c in ACCEPT])
def test_accept_bucket(case, value, expected):
    assert accept_bucket(value) == expected


def test_accept_bucket_survives_random_input():
    rnd = random.Random(1253)
    alphabet = "brgzipdentity*x-;q=0.15,  \t\u00e9\x00"
    for _ in range(3000):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 30)))
        assert accept_bucket(value) in ("br", "gzip", "identity")


OK = (200, "text/html", None, False, 10_000)
# (case, status, Content-Type, Content-Encoding, no-transform, size, compressible?)
COMPRESSIBLE = [
    ("RFC 9110 §8.3 text/html", *OK, True),
    ("RFC 9110 §8.3.1 parameters ignored", 200, "text/html; charset=utf-8", None, False, 10_000, True),
    ("RFC 9110 §8.3.1 media type is case-insensitive", 200, "TEXT/CSS", None, False, 10_000, True),
    ("RFC 9110 §8.3 text/plain", 200, "text/plain", None, False, 10_000, True),
    ("RFC 9110 §8.3 application/json", 200, "application/json", None, False, 10_000, True),
    ("RFC 6839 +json suffix", 200, "application/ld+json", None, False, 10_000, True),
    ("RFC 6839 +json suffix (vnd)", 200, "application/vnd.api+json", None, False, 10_000, True),
    ("RFC 6839 +xml suffix (rss)", 200, "application/rss+xml", None, False, 10_000, True),
    ("RFC 6839 +xml suffix (atom)", 200, "application/atom+xml", None, False, 10_000, True),
    ("RFC 8259 manifest", 200, "application/manifest+json", None, False, 10_000, True),
    ("RFC 9239 application/javascript", 200, "application/javascript", None, False, 10_000, True),
    ("RFC 9239 application/x-javascript", 200, "application/x-javascript", None, False, 10_000, True),
    ("RFC 9239 application/ecmascript", 200, "application/ecmascript", None, False, 10_000, True),
    ("RFC 9239 text/javascript", 200, "text/javascript", None, False, 10_000, True),
    ("RFC 7303 application/xml", 200, "application/xml", None, False, 10_000, True),
    ("SVG image/svg+xml", 200, "image/svg+xml", None, False, 10_000, True),
    ("WebAssembly application/wasm", 200, "application/wasm", None, False, 10_000, True),
    ("RFC 8081 font/ttf", 200, "font/ttf", None, False, 10_000, True),
    ("RFC 8081 font/otf", 200, "font/otf", None, False, 10_000, True),
    ("EOT fonts", 200, "application/vnd.ms-fontobject", None, False, 10_000, True),
    ("legacy TTF type", 200, "application/x-font-ttf", None, False, 10_000, True),
    ("icons", 200, "image/x-icon", None, False, 10_000, True),
    ("RFC 8081 font/woff2 is compressed already", 200, "font/woff2", None, False, 10_000, False),
    ("images are compressed already", 200, "image/png", None, False, 10_000, False),
    ("images are compressed already (jpeg)", 200, "image/jpeg", None, False, 10_000, False),
    ("video", 200, "video/mp4", None, False, 10_000, False),
    ("archives", 200, "application/zip", None, False, 10_000, False),
    ("opaque bytes", 200, "application/octet-stream", None, False, 10_000, False),
    ("PDF", 200, "application/pdf", None, False, 10_000, False),
    ("server-sent events are a stream", 200, "text/event-stream", None, False, 10_000, False),
    ("+json outside application/", 200, "image/x+json", None, False, 10_000, False),
    ("RFC 9110 §8.3 no Content-Type", 200, None, None, False, 10_000, False),
    ("RFC 9110 §8.3 empty Content-Type", 200, "", None, False, 10_000, False),
    ("RFC 9110 §8.3.1 no subtype", 200, "text", None, False, 10_000, False),
    ("RFC 9110 §8.3.1 empty subtype", 200, "text/", None, False, 10_000, False),
    ("RFC 9110 §8.3.1 empty type", 200, "/html", None, False, 10_000, False),
    ("RFC 9110 §8.3.1 not a token", 200, "text/ht ml", None, False, 10_000, False),
    ("RFC 9110 §15.3.7 206", 206, "text/html", None, False, 10_000, False),
    ("RFC 9110 §15.4.5 304", 304, "text/html", None, False, 10_000, False),
    ("RFC 9110 §15.5.5 404", 404, "text/html", None, False, 10_000, False),
    ("RFC 9110 §15.4.2 301", 301, "text/html", None, False, 10_000, False),
    ("RFC 9110 §8.4 already gzip", 200, "text/html", "gzip", False, 10_000, False),
    ("RFC 9110 §8.4 already br", 200, "text/html", "br", False, 10_000, False),
    ("RFC 9110 §8.4 unknown coding", 200, "text/html", "zstd", False, 10_000, False),
    ("RFC 9110 §8.4.1 identity is no coding", 200, "text/html", "identity", False, 10_000, True),
    ("RFC 9110 §8.4.1 identity is no coding (case)", 200, "text/html", " Identity ", False, 10_000, True),
    ("RFC 9110 §8.4 empty Content-Encoding", 200, "text/html", "", False, 10_000, True),
    ("RFC 9111 §5.2.2.6 no-transform", 200, "text/html", None, True, 10_000, False),
    ("MIN_SIZE - 1 too small", 200, "text/html", None, False, MIN_SIZE - 1, False),
    ("MIN_SIZE", 200, "text/html", None, False, MIN_SIZE, True),
    ("MAX_SIZE", 200, "text/html", None, False, MAX_SIZE, True),
    ("MAX_SIZE + 1 too large", 200, "text/html", None, False, MAX_SIZE + 1, False),
    ("unknown size (chunked)", 200, "text/html", None, False, None, False),
    ("empty body", 200, "text/html", None, False, 0, False),
]


@pytest.mark.parametrize("case, status, ctype, cenc, no_transform, size, expected", COMPRESSIBLE, ids=[c[0] for c in COMPRESSIBLE])
def test_compressible(case, status, ctype, cenc, no_transform, size, expected):
    assert compressible(status, ctype, cenc, no_transform, size) is expected


DECODE = {"br": brotli.decompress, "gzip": gzip.decompress}
_rnd = random.Random(8)
BODIES = [
    ("empty", b""),
    ("one byte", b"a"),
    ("html", b"<html><body>" + b"<p class='x'>Hallo Welt, wie geht es?</p>\n" * 3000 + b"</body></html>"),
    ("random bytes", bytes(_rnd.getrandbits(8) for _ in range(100_000))),
    ("utf-8 text", ("Gr\u00fc\u00dfe aus K\u00f6ln \u2013 \u00e9t\u00e9 \U0001F600 " * 2000).encode()),
]


@pytest.mark.parametrize("coding", ["br", "gzip"])
@pytest.mark.parametrize("name, body", BODIES, ids=[b[0] for b in BODIES])
def test_compress_round_trip(name, body, coding):
    """RFC 9110 §8.4.1: the client decodes exactly the identity bytes."""
    out = cz.compress(body, coding)
    assert DECODE[coding](out) == body
    assert out == cz.compress(body, coding)  # deterministic: workers store the same variant


def test_compress_shrinks_text():
    body = BODIES[2][1]
    assert len(cz.compress(body, "br")) < len(body) // 10
    assert len(cz.compress(body, "gzip")) < len(body) // 10


def test_gzip_carries_no_timestamp():
    """RFC 1952 §2.3.1 MTIME 0: the same body gives the same bytes at any time."""
    out = cz.compress(b"hello" * 200, "gzip")
    assert out[:3] == b"\x1f\x8b\x08"
    assert out[4:8] == b"\x00\x00\x00\x00"


@pytest.mark.parametrize("coding", ["identity", "deflate", "x-gzip", "", "BR"])
def test_compress_refuses_other_codings(coding):
    with pytest.raises(ValueError, match="unsupported content coding"):
        cz.compress(b"x" * 1000, coding)


async def _chunks(body: bytes, cuts: list[int]):
    last = 0
    for cut in cuts + [len(body)]:
        yield body[last:cut]
        last = cut


async def _encoded(source, coding: str) -> bytes:
    return b"".join([piece async for piece in cz.encode(source, coding)])


TEXT = BODIES[2][1] * 40  # 5.2 MB: several of brotli's windows and of the store's chunks
# (case, cut points into TEXT)
CHUNKINGS = [
    ("whole", []),
    ("one byte first", [1]),
    ("the store's chunks", list(range(256 * 1024, len(TEXT), 256 * 1024))),
    ("uneven", [7, 7, 70_000, 1_048_575, 1_048_577, len(TEXT) - 1]),
    ("many small", list(range(0, len(TEXT), 9_973))),
]


@pytest.mark.parametrize("coding", ["br", "gzip"])
@pytest.mark.parametrize("name, cuts", CHUNKINGS, ids=[c[0] for c in CHUNKINGS])
async def test_encode_round_trip_whatever_the_chunks(name, cuts, coding):
    """RFC 9110 §8.4.1: the client decodes exactly the identity bytes; and
    the bytes do not depend on how the stored body is cut (two workers, one
    reading memory and one the disk, store the same variant)."""
    out = await _encoded(_chunks(TEXT, cuts), coding)
    assert DECODE[coding](out) == TEXT
    assert out == cz.compress(TEXT, coding) == await _encoded(TEXT, coding)


@pytest.mark.parametrize("coding", ["br", "gzip"])
@pytest.mark.parametrize("name, body", BODIES, ids=[b[0] for b in BODIES])
async def test_encode_round_trip_of_a_body_in_memory(name, body, coding):
    assert DECODE[coding](await _encoded(body, coding)) == body


@pytest.mark.parametrize("coding", ["br", "gzip"])
async def test_encode_streams(coding):
    """Output comes while input still does: the whole body is never held
    (brotli keeps about two windows of input)."""
    taken = 0
    first_output_at = None

    async def source():
        nonlocal taken
        for start in range(0, len(TEXT), 64 * 1024):
            taken += 64 * 1024
            yield TEXT[start : start + 64 * 1024]

    async for _ in cz.encode(source(), coding):
        if first_output_at is None:
            first_output_at = taken
    assert first_output_at is not None and first_output_at <= 2 * 2**20 + 64 * 1024 < len(TEXT)


@pytest.mark.parametrize("coding", ["br", "gzip"])
@pytest.mark.parametrize("size, off_loop", [(100, False), (cz.INLINE_LIMIT - 1, False), (cz.INLINE_LIMIT, True), (1_000_000, True)])
async def test_encode_moves_large_chunks_off_the_event_loop(monkeypatch, coding, size, off_loop):
    threads = []

    class Spy(cz.Encoder):
        def feed(self, data):
            threads.append(threading.get_ident())
            return super().feed(data)

    monkeypatch.setattr(cz, "Encoder", Spy)
    body = (b"edge cache " * (size // 11 + 1))[:size]
    out = await _encoded(_chunks(body, []), coding)
    assert DECODE[coding](out) == body
    assert (threads[0] != threading.get_ident()) is off_loop


@pytest.mark.parametrize("coding", ["identity", "deflate", "x-gzip", "", "BR"])
async def test_encode_refuses_other_codings(coding):
    with pytest.raises(ValueError, match="unsupported content coding"):
        await _encoded(b"x" * 100_000, coding)


# (case, limit, operations as (take n | give n), expected answers, used, peak)
BUDGET = [
    ("fits", 100, [("take", 60)], [True], 60, 60),
    ("exactly full", 100, [("take", 60), ("take", 40)], [True, True], 100, 100),
    ("over: refused, nothing taken", 100, [("take", 60), ("take", 41)], [True, False], 60, 60),
    ("given back: fits again", 100, [("take", 60), ("give", 60), ("take", 100)], [True, None, True], 100, 100),
    ("peak stays", 100, [("take", 70), ("give", 70), ("take", 10)], [True, None, True], 10, 70),
    ("zero budget: nothing compressed", 0, [("take", 1)], [False], 0, 0),
    ("larger than the budget: never", 10, [("take", 11)], [False], 0, 0),
]


@pytest.mark.parametrize("case, limit, ops, answers, used, peak", BUDGET, ids=[b[0] for b in BUDGET])
def test_budget(case, limit, ops, answers, used, peak):
    budget = cz.Budget(limit)
    got = [budget.take(n) if op == "take" else budget.give(n) for op, n in ops]
    assert got == answers
    assert (budget.used, budget.peak) == (used, peak)


@pytest.mark.parametrize("coding", ["br", "gzip"])
def test_cost_counts_the_body_and_the_coder(coding):
    assert cz.cost(cz.MAX_SIZE, coding) == cz.MAX_SIZE + cz.CODER_STATE[coding]
    assert cz.cost(0, coding) > 0


def _fields(pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


BASE = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "max-age=60"),
    ("Accept-Ranges", "bytes"),
    ("Last-Modified", "Tue, 15 Nov 1994 08:12:31 GMT"),
]

# (case, extra stored fields, coding, {field: expected values} (None: absent))
VARIANT = [
    ("RFC 9110 §8.8.3 strong tag gets a br suffix", [("ETag", '"abc"')], "br", {"etag": ['"abc-br"']}),
    ("RFC 9110 §8.8.3 strong tag gets a gz suffix", [("ETag", '"abc"')], "gzip", {"etag": ['"abc-gz"']}),
    ("RFC 9110 §8.8.1 weak tag stays weak", [("ETag", 'W/"abc"')], "br", {"etag": ['W/"abc-br"']}),
    ("RFC 9110 §8.8.3 empty tag", [("ETag", '""')], "gzip", {"etag": ['"-gz"']}),
    ("RFC 9110 §8.8.3 malformed tag is dropped, not shared", [("ETag", "abc")], "br", {"etag": None}),
    ("RFC 9110 §8.8.3 repeated tag is dropped", [("ETag", '"a"'), ("ETag", '"b"')], "br", {"etag": None}),
    ("RFC 9110 §12.5.5 Vary added", [], "br", {"vary": ["Accept-Encoding"]}),
    ("RFC 9110 §12.5.5 Vary merged", [("Vary", "Accept-Language")], "br", {"vary": ["Accept-Language, Accept-Encoding"]}),
    ("RFC 9110 §12.5.5 Vary not duplicated", [("Vary", "accept-encoding")], "gzip", {"vary": ["accept-encoding"]}),
    ("RFC 9110 §12.5.5 Vary lines merged once",
     [("Vary", "Cookie"), ("Vary", "Accept-Encoding, cookie,")], "br", {"vary": ["Cookie, Accept-Encoding"]}),
    ("RFC 9110 §12.5.5 Vary * kept", [("Vary", "Origin, *")], "br", {"vary": ["*"]}),
    ("RFC 9110 §8.6 Content-Length replaced", [("Content-Length", "12345")], "br", {"content-length": ["321"]}),
    ("RFC 9110 §8.6 no Content-Length added", [], "br", {"content-length": None}),
    ("RFC 9110 §8.4 Content-Encoding set", [], "gzip", {"content-encoding": ["gzip"]}),
    ("RFC 9110 §8.4 identity coding replaced", [("Content-Encoding", "identity")], "br", {"content-encoding": ["br"]}),
    ("RFC 1864 Content-MD5 dropped", [("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ==")], "br", {"content-md5": None}),
    ("RFC 3230 Digest dropped", [("Digest", "sha-256=abc")], "br", {"digest": None}),
    ("RFC 9530 Content-Digest dropped", [("Content-Digest", "sha-256=:abc=:")], "br", {"content-digest": None}),
    ("RFC 9530 Repr-Digest dropped", [("Repr-Digest", "sha-256=:abc=:")], "gzip", {"repr-digest": None}),
    ("RFC 9110 §14.3 Accept-Ranges kept", [], "br", {"accept-ranges": ["bytes"]}),
    ("RFC 9110 §8.3 Content-Type kept", [], "br", {"content-type": ["text/html; charset=utf-8"]}),
    ("RFC 9111 §5.2 Cache-Control kept", [], "gzip", {"cache-control": ["max-age=60"]}),
]


@pytest.mark.parametrize("case, extra, coding, expected", VARIANT, ids=[c[0] for c in VARIANT])
def test_variant_headers(case, extra, coding, expected):
    out = _fields(variant_headers(BASE + extra, coding, 321))
    for name, values in expected.items():
        assert out.get(name) == values, name
    assert out["content-encoding"] == [coding]


def test_variant_headers_from_a_multidict_keep_order():
    stored = CIMultiDict(BASE + [("ETag", '"v1"'), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    out = variant_headers(stored, "br", 10)
    assert out == [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "max-age=60"),
        ("Accept-Ranges", "bytes"),
        ("Last-Modified", "Tue, 15 Nov 1994 08:12:31 GMT"),
        ("ETag", '"v1-br"'),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Vary", "Accept-Encoding"),
        ("Content-Encoding", "br"),
    ]


def test_variant_etag_never_matches_the_identity_tag():
    """RFC 9110 §8.8.3, §13.1.1: an If-Match for the identity bytes fails
    against the compressed ones, and the variant's own tag matches."""
    stored = CIMultiDict(variant_headers(BASE + [("ETag", '"v1"')], "gzip", 10))
    assert evaluate("GET", {"If-Match": '"v1"'}, stored) == 412
    assert evaluate("GET", {"If-Match": '"v1-gz"'}, stored) is None
    assert evaluate("GET", {"If-None-Match": '"v1-gz"'}, stored) == 304


def test_variant_headers_refuse_other_codings():
    with pytest.raises(ValueError, match="unsupported content coding"):
        variant_headers(BASE, "deflate", 1)


ORIGIN_ETAG = [
    ("strong br", '"abc-br"', "br", '"abc"'),
    ("weak gzip", 'W/"abc-gz"', "gzip", 'W/"abc"'),
    ("OWS", ' "abc-br" ', "br", '"abc"'),
    ("not a variant tag", '"abc"', "br", None),
    ("other coding's suffix", '"abc-gz"', "br", None),
    ("malformed", "abc-br", "br", None),
    ("unknown coding", '"abc-br"', "deflate", None),
]


@pytest.mark.parametrize("case, value, coding, expected", ORIGIN_ETAG, ids=[c[0] for c in ORIGIN_ETAG])
def test_origin_etag(case, value, coding, expected):
    """RFC 9111 §4.3.1: validating a variant with the origin needs the origin's own tag."""
    assert cz.origin_etag(value, coding) == expected


@pytest.mark.parametrize("coding", ["br", "gzip"])
@pytest.mark.parametrize("tag", ['"v1"', 'W/"v1"', '"a-br"', '"a-gz"'])
def test_origin_etag_reverses_the_variant_tag(tag, coding):
    variant = _fields(variant_headers([("ETag", tag)], coding, 1))["etag"][0]
    assert cz.origin_etag(variant, coding) == tag


IDENTITY_VARY = [
    ("RFC 9110 §12.5.5 added", [("Content-Type", "text/css")], [("Content-Type", "text/css"), ("Vary", "Accept-Encoding")]),
    ("RFC 9110 §12.5.5 merged in place",
     [("Vary", "Origin"), ("ETag", '"x"')], [("Vary", "Origin, Accept-Encoding"), ("ETag", '"x"')]),
    ("RFC 9110 §12.5.5 present already", [("Vary", "Accept-Encoding")], [("Vary", "Accept-Encoding")]),
    ("RFC 9110 §12.5.5 * kept", [("Vary", "*")], [("Vary", "*")]),
    ("RFC 9110 §12.5.5 two lines become one",
     [("Vary", "Origin"), ("Content-Length", "9"), ("vary", "Cookie")],
     [("Vary", "Origin, Cookie, Accept-Encoding"), ("Content-Length", "9")]),
]


@pytest.mark.parametrize("case, headers, expected", IDENTITY_VARY, ids=[c[0] for c in IDENTITY_VARY])
def test_identity_headers_vary(case, headers, expected):
    assert identity_headers_vary(headers) == expected
    assert identity_headers_vary(CIMultiDict(headers)) == expected
