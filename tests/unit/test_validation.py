"""Validation with the origin (RFC 9111 §4.3): the pure parts."""
from __future__ import annotations

from multidict import CIMultiDict

from edge.cache.validation import has_validator, updated_headers, validator_headers

STORED = (
    ("Content-Type", "text/plain"),
    ("Content-Length", "5"),
    ("ETag", '"v1"'),
    ("Cache-Control", "max-age=0"),
    ("X-Version", "1"),
    ("Set-Cookie", "a=1"),
    ("Set-Cookie", "b=2"),
)


def test_9111_3_2_fields_in_the_304_replace_the_stored_ones():
    out = updated_headers(STORED, CIMultiDict({"Cache-Control": "max-age=60", "x-version": "2"}))
    d = CIMultiDict(out)
    assert d["Cache-Control"] == "max-age=60" and d["X-Version"] == "2"
    assert d["Content-Type"] == "text/plain" and d["ETag"] == '"v1"'
    assert len(d.getall("X-Version")) == 1
    # Replaced in place, the others keep their order.
    assert [k.lower() for k, _ in out] == [k.lower() for k, _ in STORED]


def test_9111_3_2_new_fields_are_added_and_repeated_fields_replaced_whole():
    out = CIMultiDict(updated_headers(STORED, [("Set-Cookie", "c=3"), ("X-New", "y")]))
    assert out.getall("Set-Cookie") == ["c=3"]
    assert out["X-New"] == "y"


def test_9111_3_2_content_length_and_hop_by_hop_are_never_taken():
    fresh = CIMultiDict(
        {"Content-Length": "0", "Connection": "close", "Keep-Alive": "timeout=5", "Transfer-Encoding": "chunked",
         "Proxy-Authenticate": "Basic", "X-Hop": "1", "ETag": '"v1"'}
    )
    out = CIMultiDict(updated_headers(STORED, fresh, exclude=("x-hop",)))
    assert out["Content-Length"] == "5"
    for name in ("Connection", "Keep-Alive", "Transfer-Encoding", "Proxy-Authenticate", "X-Hop"):
        assert name not in out


def test_9111_4_3_4_an_empty_304_changes_nothing():
    assert updated_headers(STORED, ()) == STORED


def test_9111_4_3_1_if_none_match_with_the_etag():
    assert validator_headers(STORED) == {"If-None-Match": '"v1"'}


def test_9111_4_3_1_if_modified_since_only_without_an_etag():
    lm = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert validator_headers([("Last-Modified", lm)]) == {"If-Modified-Since": lm}
    assert validator_headers([("Last-Modified", lm), ("ETag", 'W/"x"')]) == {"If-None-Match": 'W/"x"'}
    assert validator_headers([("Content-Type", "text/plain")]) == {}


def test_has_validator():
    assert has_validator(STORED) and has_validator(CIMultiDict({"last-modified": "x"}))
    assert not has_validator([("Date", "x")])
