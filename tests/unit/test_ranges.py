"""Range requests cut from a stored response (RFC 9110 §14, §13.1.5):
edge.cache.ranges."""
from __future__ import annotations

import email.parser
import random
import re

import pytest

from edge.cache import ranges as rg
from edge.cache.ranges import MAX_RANGES, Ignored, Outcome, if_range_allows, parse_range

UNSAT = "unsatisfiable"

# (case naming the section it checks, Range value, representation size, expected)
# expected: the satisfiable (first, last) spans, UNSAT (416), or an Ignored reason (200 full).
PARSE = [
    ("RFC 9110 §14.2 no Range field: full 200", None, 10, Ignored.ABSENT),
    ("RFC 9110 §14.1.2 int-range", "bytes=0-4", 10, [(0, 4)]),
    ("RFC 9110 §14.1.2 open int-range from 0", "bytes=0-", 10, [(0, 9)]),
    ("RFC 9110 §14.1.2 open int-range from 500", "bytes=500-", 1000, [(500, 999)]),
    ("RFC 9110 §14.1.2 suffix range", "bytes=-5", 10, [(5, 9)]),
    ("RFC 9110 §14.1.2 suffix longer than the representation: all of it", "bytes=-500", 10, [(0, 9)]),
    ("RFC 9110 §14.1.2 last-pos beyond the end is clamped", "bytes=5-100", 10, [(5, 9)]),
    ("RFC 9110 §14.1.2 last byte", "bytes=9-9", 10, [(9, 9)]),
    ("RFC 9110 §14.1.2 first byte", "bytes=0-0", 10, [(0, 0)]),
    ("RFC 9110 §14.1.2 first-pos at the length: unsatisfiable", "bytes=10-", 10, UNSAT),
    ("RFC 9110 §14.1.2 beyond the end: unsatisfiable", "bytes=10-20", 10, UNSAT),
    ("RFC 9110 §14.1.2 zero suffix-length: unsatisfiable", "bytes=-0", 10, UNSAT),
    ("RFC 9110 §14.1.1 one satisfiable spec is enough", "bytes=20-30, 2-3", 10, [(2, 3)]),
    ("RFC 9110 §14.1.1 all unsatisfiable", "bytes=20-30, 40-", 10, UNSAT),
    ("RFC 9110 §14.6 disjoint ranges keep the request order", "bytes=6-7,0-1", 10, [(6, 7), (0, 1)]),
    ("RFC 9110 §5.6.1 OWS around list commas", "bytes=0-1 ,\t4-5", 10, [(0, 1), (4, 5)]),
    ("RFC 9110 §5.6.1 empty list elements are ignored", "bytes=,0-1,,4-5,", 10, [(0, 1), (4, 5)]),
    ("RFC 9110 §5.5 field value OWS", " bytes=0-1 ", 10, [(0, 1)]),
    ("RFC 9110 §14.1 range unit is case-insensitive", "BYTES=0-1", 10, [(0, 1)]),
    ("RFC 9110 §14.1 range unit is case-insensitive (mixed)", "Bytes=0-1", 10, [(0, 1)]),
    ("RFC 9110 §14.1.2 leading zeros", "bytes=0003-0004", 10, [(3, 4)]),
    ("RFC 9110 §14.2 unknown range unit is ignored", "items=0-1", 10, Ignored.UNIT),
    ("RFC 9110 §14.2 no '=': invalid", "bytes 0-1", 10, Ignored.INVALID),
    ("RFC 9110 §14.2 empty unit: invalid", "=0-1", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.1 empty range-set: invalid", "bytes=", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.1 only empty elements: invalid", "bytes=, ,", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 last-pos < first-pos: invalid", "bytes=5-3", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 one invalid spec invalidates the field", "bytes=0-1,5-3", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 no whitespace inside a spec", "bytes=0 - 1", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 lone dash", "bytes=-", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 negative suffix", "bytes=--5", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 negative first-pos", "bytes=-5-", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 sign", "bytes=+5-", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 hexadecimal", "bytes=0x10-", 100, Ignored.INVALID),
    ("RFC 9110 §14.1.2 digit separators", "bytes=1_0-", 100, Ignored.INVALID),
    ("RFC 9110 §14.1.2 Arabic-Indic digits are not DIGIT", "bytes=\u0663-\u0665", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 full-width digits are not DIGIT", "bytes=\uff11-\uff12", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 letters", "bytes=a-b", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 other-range is not a byte range", "bytes=abc", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 parameters are not allowed", "bytes=0-1;q=1", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 control characters", "bytes=0-1\x00", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 smuggled field", "bytes=0-1\r\nX-Evil: 1", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 19 digits are read", "bytes=0-9999999999999999999", 10, [(0, 9)]),
    ("RFC 9110 §14.1.2 19-digit first-pos: unsatisfiable", "bytes=9999999999999999999-", 10, UNSAT),
    ("RFC 9110 §14.1.2 more than 19 digits: invalid", "bytes=0-" + "9" * 20, 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 huge numeral: invalid, no overflow", "bytes=" + "1" * 5000 + "-", 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 huge suffix: invalid", "bytes=-" + "9" * 40, 10, Ignored.INVALID),
    ("RFC 9110 §14.1.2 zero length: int-range unsatisfiable", "bytes=0-0", 0, UNSAT),
    ("RFC 9110 §14.1.2 zero length: open range unsatisfiable", "bytes=0-", 0, UNSAT),
    ("RFC 9110 §14.1.2 zero length: zero suffix unsatisfiable", "bytes=-0", 0, UNSAT),
    ("RFC 9110 §14.1.2/§14.2 zero length: suffix satisfiable, ignored", "bytes=-1", 0, Ignored.EMPTY),
    ("RFC 9110 §14.2 zero length: invalid stays invalid", "bytes=x", 0, Ignored.INVALID),
    ("RFC 9110 §14.6 overlapping ranges are coalesced", "bytes=0-4,2-8", 10, [(0, 8)]),
    ("RFC 9110 §14.2 same range thrice is sent once", "bytes=0-,0-,0-", 10, [(0, 9)]),
    ("RFC 9110 §14.6 adjacent ranges are coalesced", "bytes=0-4,5-9", 10, [(0, 9)]),
    ("RFC 9110 §14.6 suffix overlapping an int-range", "bytes=-5,0-", 10, [(0, 9)]),
    ("RFC 9110 §14.2 unsorted overlapping: sorted and merged", "bytes=8-9,0-1,1-2", 10, [(0, 2), (8, 9)]),
    ("RFC 9110 §14.2 repeated 0-0 below the cap", "bytes=" + ",".join(["0-0"] * 10), 10, [(0, 0)]),
    ("RFC 9110 §14.2 MAX_RANGES disjoint ranges are served",
     "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGES)), 100,
     [(2 * i, 2 * i) for i in range(MAX_RANGES)]),
    ("RFC 9110 §14.2 one more than MAX_RANGES: ignored",
     "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGES + 1)), 100, Ignored.TOO_MANY),
    ("RFC 9110 §14.2 1000 ranges: ignored", "bytes=" + ",".join(f"{i}-{i}" for i in range(1000)), 5000, Ignored.TOO_MANY),
    ("RFC 9110 §14.2 1000 x 0-0: ignored", "bytes=" + ",".join(["0-0"] * 1000), 10, Ignored.TOO_MANY),
    ("RFC 9110 §14.2 1000 x 0-: ignored", "bytes=" + ",".join(["0-"] * 1000), 10, Ignored.TOO_MANY),
    ("RFC 9110 §14.2 many empty elements are not ranges", "bytes=" + "," * 1000 + "0-1", 10, [(0, 1)]),
]


@pytest.mark.parametrize("case, value, size, expected", PARSE, ids=[c[0] for c in PARSE])
def test_parse_range(case, value, size, expected):
    result = parse_range(value, size)
    if expected == UNSAT:
        assert result.outcome is Outcome.UNSATISFIABLE
        assert result.ranges == ()
    elif isinstance(expected, Ignored):
        assert result.outcome is Outcome.IGNORE
        assert result.ignored is expected
        assert result.ranges == ()
    else:
        assert result.outcome is Outcome.PARTIAL
        assert list(result.ranges) == expected
        assert result.total == sum(last - first + 1 for first, last in expected)


def test_range_amplification_never_sends_more_than_the_representation():
    """RFC 9110 §14.2: whatever the client asks, a 206 carries at most the
    representation's bytes, in at most MAX_RANGES parts, none outside it."""
    rnd = random.Random(9110)
    for _ in range(2000):
        size = rnd.randint(1, 300)
        specs = []
        for _ in range(rnd.randint(1, MAX_RANGES)):
            kind = rnd.random()
            if kind < 0.4:
                a = rnd.randint(0, 320)
                specs.append(f"{a}-{a + rnd.randint(0, 200)}")
            elif kind < 0.7:
                specs.append(f"{rnd.randint(0, 320)}-")
            else:
                specs.append(f"-{rnd.randint(0, 400)}")
        result = parse_range("bytes=" + ",".join(specs), size)
        if result.outcome is Outcome.PARTIAL:
            assert result.total <= size
            assert 1 <= len(result.ranges) <= MAX_RANGES
            covered = set()
            for first, last in result.ranges:
                assert 0 <= first <= last < size
                part = set(range(first, last + 1))
                assert not covered & part  # no byte twice
                covered |= part
        else:
            assert result.outcome is Outcome.UNSATISFIABLE


def test_hostile_fields_never_raise():
    """Garbage of any kind is a precise outcome, never an exception."""
    rnd = random.Random(14)
    alphabet = "bytes=-,0123456789 \t;\x00\u0663\uff11é*"
    for _ in range(3000):
        value = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        result = parse_range(value, rnd.randint(0, 50))
        assert result.outcome in (Outcome.IGNORE, Outcome.PARTIAL, Outcome.UNSATISFIABLE)


LM = "Tue, 15 Nov 1994 08:12:31 GMT"
LM_RFC850 = "Tuesday, 15-Nov-94 08:12:31 GMT"
DATE_60 = "Tue, 15 Nov 1994 08:13:31 GMT"
DATE_59 = "Tue, 15 Nov 1994 08:13:30 GMT"
LATER = "Wed, 16 Nov 1994 08:12:31 GMT"

# (case, If-Range, stored ETag, stored Last-Modified, stored Date, range honoured?)
IF_RANGE = [
    ("RFC 9110 §13.1.5 no If-Range: range applies", None, '"v1"', LM, DATE_60, True),
    ("RFC 9110 §13.1.5 strong entity-tag match", '"v1"', '"v1"', LM, DATE_60, True),
    ("RFC 9110 §13.1.5 OWS around the tag", ' "v1"\t', ' "v1" ', None, None, True),
    ("RFC 9110 §13.1.5 entity-tag mismatch", '"v2"', '"v1"', LM, DATE_60, False),
    ("RFC 9110 §8.8.3.2 case-sensitive tags", '"V1"', '"v1"', None, None, False),
    ("RFC 9110 §13.1.5 weak tag in If-Range never matches", 'W/"v1"', '"v1"', LM, DATE_60, False),
    ("RFC 9110 §8.8.3.2 weak stored tag never matches strongly", '"v1"', 'W/"v1"', LM, DATE_60, False),
    ("RFC 9110 §13.1.5 no stored entity tag", '"v1"', None, LM, DATE_60, False),
    ("RFC 9110 §13.1.5 a list is not an entity-tag", '"v1", "v2"', '"v1"', None, None, False),
    ("RFC 9110 §13.1.5 unquoted tag is malformed", "v1", '"v1"', LM, DATE_60, False),
    ("RFC 9110 §13.1.5 unterminated tag", '"v1', '"v1"', LM, DATE_60, False),
    ("RFC 9110 §8.8.3 lowercase w/ is malformed", 'w/"v1"', '"v1"', None, None, False),
    ("RFC 9110 §13.1.5 malformed stored tag", '"v1"', "v1", None, None, False),
    ("RFC 9110 §13.1.5 empty If-Range", "", '"v1"', LM, DATE_60, False),
    ("RFC 9110 §13.1.5 date equal to a strong Last-Modified", LM, None, LM, DATE_60, True),
    ("RFC 9110 §13.1.5 date in the obsolete RFC 850 form", LM_RFC850, None, LM, DATE_60, True),
    ("RFC 9110 §8.8.2.2 Last-Modified under 60 s before Date is weak", LM, None, LM, DATE_59, False),
    ("RFC 9110 §8.8.2.2 Last-Modified equal to Date is weak", LM, None, LM, LM, False),
    ("RFC 9110 §8.8.2.2 no stored Date: cannot be strong", LM, '"v1"', LM, None, False),
    ("RFC 9110 §13.1.5 a later date is not an exact match", LATER, None, LM, "Thu, 17 Nov 1994 08:12:31 GMT", False),
    ("RFC 9110 §13.1.5 an earlier date is not a match", LM, None, LATER, "Thu, 17 Nov 1994 08:12:31 GMT", False),
    ("RFC 9110 §13.1.5 no stored Last-Modified", LM, '"v1"', None, DATE_60, False),
    ("RFC 9110 §13.1.5 unreadable date", "yesterday", None, LM, DATE_60, False),
    ("RFC 9110 §13.1.5 unreadable stored Last-Modified", LM, None, "soon", DATE_60, False),
    ("RFC 9110 §13.1.5 entity-tag against a date-only entry", '"v1"', None, LM, DATE_60, False),
    ("RFC 9110 §13.1.5 non-ASCII garbage", "\u00e9\u0663", '"v1"', LM, DATE_60, False),
]


@pytest.mark.parametrize("case, if_range, etag, last_modified, date, expected", IF_RANGE, ids=[c[0] for c in IF_RANGE])
def test_if_range(case, if_range, etag, last_modified, date, expected):
    assert if_range_allows(if_range, etag, last_modified, date) is expected


HEADERS = [
    ("RFC 9110 §14.4 first bytes", (0, 499, 1234), {"Content-Range": "bytes 0-499/1234", "Content-Length": "500"}),
    ("RFC 9110 §14.4 single byte", (9, 9, 10), {"Content-Range": "bytes 9-9/10", "Content-Length": "1"}),
    ("RFC 9110 §14.4 large offsets", (2**40, 2**41 - 1, 2**41),
     {"Content-Range": f"bytes {2**40}-{2**41 - 1}/{2**41}", "Content-Length": str(2**40)}),
]


@pytest.mark.parametrize("case, args, expected", HEADERS, ids=[c[0] for c in HEADERS])
def test_single_part_headers(case, args, expected):
    assert rg.single_part_headers(*args) == expected


@pytest.mark.parametrize("size", [0, 10, 2**50])
def test_unsatisfiable_headers(size):
    """RFC 9110 §15.5.17: a 416 tells the current length as bytes */length."""
    assert rg.unsatisfiable_headers(size) == {"Content-Range": f"bytes */{size}"}


# ------------------------------------------------------------------ multipart

def _parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """A strict reading of RFC 9110 §14.6 / RFC 2046 §5.1.1 framing."""
    m = re.fullmatch(r"multipart/byteranges; boundary=([0-9a-f]{16,})", content_type)
    assert m is not None, content_type
    delim = b"--" + m.group(1).encode()
    assert body.startswith(delim + b"\r\n")
    assert body.endswith(b"\r\n" + delim + b"--\r\n")
    inner = body[len(delim) + 2 : -(len(delim) + 6)]
    parts = []
    for raw in inner.split(b"\r\n" + delim + b"\r\n"):
        head, sep, data = raw.partition(b"\r\n\r\n")
        assert sep
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((fields, data))
    return parts


BODY = bytes(range(256)) * 8  # every byte value, CR and LF included
MULTI = [
    ("RFC 9110 §14.6 two parts", [(0, 9), (100, 199)]),
    ("RFC 9110 §14.6 request order kept", [(2000, 2047), (0, 0), (500, 1000)]),
    ("RFC 9110 §14.6 whole body in two parts", [(0, 1023), (1024, 2047)]),
    ("RFC 9110 §14.6 sixteen single bytes", [(i * 100, i * 100) for i in range(16)]),
]


@pytest.mark.parametrize("case, spans", MULTI, ids=[c[0] for c in MULTI])
@pytest.mark.parametrize("content_type", ["application/octet-stream", None])
def test_multipart_body_parses_back_to_the_slices(case, spans, content_type):
    ctype, body = rg.multipart(spans, BODY, content_type, len(BODY))
    parts = _parse_multipart(ctype, body)
    assert len(parts) == len(spans)
    for (fields, data), (first, last) in zip(parts, spans):
        assert data == BODY[first : last + 1]
        assert fields["Content-Range"] == f"bytes {first}-{last}/{len(BODY)}"
        if content_type is None:
            assert "Content-Type" not in fields
        else:
            assert fields["Content-Type"] == content_type
    boundary = ctype.rsplit("=", 1)[1]
    assert len(body) == rg.multipart_length(spans, content_type, len(BODY), boundary)


def test_multipart_reads_with_the_standard_library():
    """RFC 9110 §14.6: an ordinary MIME parser finds each part's bytes and fields."""
    text = b"".join(b"line %d of the document\r\n" % i for i in range(200))
    spans = [(10, 59), (1000, 1099), (3000, 3010)]
    ctype, body = rg.multipart(spans, text, "text/plain; charset=utf-8", len(text))
    msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    assert msg.is_multipart()
    parts = msg.get_payload()
    assert [p["Content-Range"] for p in parts] == [f"bytes {a}-{b}/{len(text)}" for a, b in spans]
    assert [p.get_payload(decode=True) for p in parts] == [text[a : b + 1] for a, b in spans]
    assert all(p["Content-Type"] == "text/plain; charset=utf-8" for p in parts)


def test_multipart_boundaries_are_random():
    seen = set()
    for _ in range(50):
        ctype, _ = rg.multipart([(0, 0), (2, 2)], b"abc", None, 3)
        boundary = ctype.rsplit("=", 1)[1]
        assert re.fullmatch("[0-9a-f]{16,}", boundary)
        seen.add(boundary)
    assert len(seen) == 50


def test_multipart_avoids_a_boundary_found_in_the_body(monkeypatch):
    """RFC 2046 §5.1.1: the delimiter must not occur in the encapsulated parts."""
    picks = iter(["ab" * 8, "cd" * 8])
    monkeypatch.setattr(rg, "new_boundary", lambda: next(picks))
    body = b"xx--" + b"ab" * 8 + b"xx"
    ctype, out = rg.multipart([(0, 3), (4, len(body) - 1)], body, None, len(body))
    assert ctype.endswith("cd" * 8)
    assert [d for _, d in _parse_multipart(ctype, out)] == [body[:4], body[4:]]


class Source:
    """An async chunk iterator that records how far it was read and whether
    it was closed (like a disk-tier hit's body)."""

    def __init__(self, body: bytes, chunk: int, short: int = 0) -> None:
        body = body[: len(body) - short]
        self.chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        self.read = 0
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self.closed or self.read >= len(self.chunks):
            raise StopAsyncIteration
        self.read += 1
        return self.chunks[self.read - 1]

    async def aclose(self) -> None:
        self.closed = True


async def _collect(agen) -> bytes:
    return b"".join([c async for c in agen])


@pytest.mark.parametrize("chunk", [1, 7, 256, 5000])
@pytest.mark.parametrize("case, spans", MULTI, ids=[c[0] for c in MULTI])
async def test_streamed_multipart_equals_the_in_memory_one(case, spans, chunk):
    """One pass over a disk body: parts ascending, exact announced length."""
    boundary = rg.new_boundary()
    src = Source(BODY, chunk)
    out = await _collect(rg.multipart_chunks(spans, src, "text/plain", len(BODY), boundary))
    _, expected = rg.multipart(sorted(spans), BODY, "text/plain", len(BODY), boundary)
    assert out == expected
    assert len(out) == rg.multipart_length(spans, "text/plain", len(BODY), boundary)
    assert src.closed


async def test_streamed_multipart_stops_reading_after_the_last_part():
    src = Source(BODY, 16)
    await _collect(rg.multipart_chunks([(0, 3), (20, 40)], src, None, len(BODY), rg.new_boundary()))
    assert src.read == 3  # bytes 0..47 of 2048
    assert src.closed


async def test_streamed_multipart_from_a_short_source_falls_short():
    """A stored body shorter than announced never looks complete."""
    boundary = rg.new_boundary()
    spans = [(0, 9), (2000, 2047)]
    src = Source(BODY, 64, short=100)
    out = await _collect(rg.multipart_chunks(spans, src, None, len(BODY), boundary))
    assert len(out) < rg.multipart_length(spans, None, len(BODY), boundary)
    assert not out.endswith(b"--\r\n")
    assert src.closed


SLICES = [
    ("RFC 9110 §14.1.2 from the start", 0, 99),
    ("RFC 9110 §14.1.2 inside one chunk", 10, 20),
    ("RFC 9110 §14.1.2 across chunks", 60, 700),
    ("RFC 9110 §14.1.2 to the end", 1500, 2047),
    ("RFC 9110 §14.1.2 single byte at a chunk edge", 64, 64),
    ("RFC 9110 §14.1.2 whole body", 0, 2047),
]


@pytest.mark.parametrize("chunk", [1, 64, 100, 4096])
@pytest.mark.parametrize("case, start, end", SLICES, ids=[c[0] for c in SLICES])
async def test_slice_chunks(case, start, end, chunk):
    src = Source(BODY, chunk)
    assert await _collect(rg.slice_chunks(src, start, end)) == BODY[start : end + 1]
    assert src.closed
    assert src.read == min(-(-(end + 1) // chunk), len(src.chunks))  # nothing read past the end


async def test_slice_chunks_closes_the_source_when_the_client_goes_away():
    src = Source(BODY, 16)
    sliced = rg.slice_chunks(src, 0, 2047)
    assert await sliced.__anext__() == BODY[:16]
    await sliced.aclose()  # what a failed write leads to
    assert src.closed
    assert src.read == 1


async def test_slice_chunks_of_a_short_source_yields_what_there_is():
    src = Source(BODY, 64, short=1000)
    out = await _collect(rg.slice_chunks(src, 1000, 2047))
    assert out == BODY[1000:1048]
    assert src.closed


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ("bytes=0-99", "bytes=0-99"),
        ("BYTES = 0-99", None),  # no OWS around "=": invalid, dropped
        ("bytes=0-,0-,0-", "bytes=0-"),  # one copy, not three (§14.2 amplification)
        ("bytes=0-99,50-150,300-400", "bytes=0-150,300-400"),
        ("bytes=100-199,0-99", "bytes=0-199"),  # adjacent: merged
        ("bytes=200-300,0-10", "bytes=200-300,0-10"),  # disjoint: the client's order
        ("bytes=5-,0-9,100-200", "bytes=0-"),  # an open range swallows what reaches it
        ("bytes=0-9,500-", "bytes=0-9,500-"),
        ("bytes=-10,-20", "bytes=-20"),
        ("bytes=0-,-500", "bytes=0-"),  # the suffix lies inside the whole
        ("bytes=0-1," + ",".join(["4-5"] * 20), None),  # more than MAX_RANGES
        ("items=1-2", None),
        ("bytes=9-5", None),
        ("bytes=", None),
    ],
)
def test_forwarded_range(sent, forwarded):
    assert rg.forwarded_range(sent) == forwarded
