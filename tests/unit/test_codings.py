"""The WAF's bounded, decoded view of a compressed request body."""
from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from edge.http.codings import MAX_RATIO, CodingError, UnknownCoding, codings, inspection_view

TEXT = b"q=' OR 1=1 -- " + b"lorem ipsum " * 500


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ((), []),
        (("gzip",), ["gzip"]),
        (("GZip ,  br",), ["gzip", "br"]),
        (("deflate", "br"), ["deflate", "br"]),
        (("identity",), []),
    ],
)
def test_codings(fields, expected):
    assert codings(fields) == expected


@pytest.mark.parametrize(
    ("data", "fields", "limit", "expected"),
    [
        (TEXT, (), 100, TEXT),  # identity: inspected as it is
        (gzip.compress(TEXT), ("gzip",), 10_000, TEXT),
        (gzip.compress(TEXT), ("x-gzip",), 20, TEXT[:20]),
        (zlib.compress(TEXT), ("deflate",), 10_000, TEXT),
        (zlib.compress(TEXT)[2:-4], ("deflate",), 10_000, TEXT),  # raw deflate, as some clients send it
        (brotli.compress(TEXT), ("br",), 50, TEXT[:50]),
        (gzip.compress(brotli.compress(TEXT)), ("br", "gzip"), 10_000, TEXT),  # the last applied comes off first
        (gzip.compress(TEXT)[:40], ("gzip",), 10_000, None),  # only the body's head was read
        (gzip.compress(b"q=1&") + gzip.compress(TEXT), ("gzip",), 10_000, b"q=1&" + TEXT),  # every member
    ],
)
def test_inspection_view(data, fields, limit, expected):
    view = inspection_view(data, fields, limit)
    if expected is None:
        assert TEXT.startswith(view)
    else:
        assert view == expected


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress, brotli.compress])
def test_a_bomb_decodes_no_further_than_its_bounds(compress):
    bomb = compress(b"\0" * 5_000_000)
    view = inspection_view(bomb, ({gzip.compress: "gzip", zlib.compress: "deflate"}.get(compress, "br"),), 1 << 20)
    assert len(view) <= min(1 << 20, len(bomb) * MAX_RATIO)


@pytest.mark.parametrize(("coding", "data"), [("gzip", b"not gzip"), ("br", b"\xff" * 40), ("deflate", b"\xff" * 40)])
def test_broken_data_is_an_error_that_names_the_coding(coding, data):
    with pytest.raises(CodingError, match=coding):
        inspection_view(data, (coding,), 1000)


@pytest.mark.parametrize(
    ("data", "coding"),
    [(zlib.compress(TEXT) + b"junk", "deflate"), (brotli.compress(TEXT) + b"junk", "br")],
)
def test_data_after_the_end_of_the_stream_is_an_error(data, coding):
    with pytest.raises(CodingError):
        inspection_view(data, (coding,), 100_000)


@pytest.mark.parametrize("fields", [("zstd",), ("compress",), ("gzip, gzip, gzip, gzip, gzip",)])
def test_codings_the_node_cannot_read_are_refused(fields):
    with pytest.raises(UnknownCoding):
        inspection_view(b"whatever", fields, 1000)
