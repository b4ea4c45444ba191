"""Validation with the origin (RFC 9111 §4.3): the pure parts."""
from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edge.cache.validation import has_validator, selects, updated_headers, validator_headers

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


def test_late_304_does_not_update_an_entry_replaced_meanwhile():
    """§4.3.4 selects the stored response that was validated: a newer one
    with another body must keep its own headers."""
    from edge.cache.memory import MemoryStore
    from edge.cache.store import Meta

    store = MemoryStore(1 << 20, 1 << 16)
    validated = Meta(200, (("ETag", '"v1"'),), 1.0, 1.0, 0.0, 0.0)
    replacement = Meta(200, (("ETag", '"v2"'),), 2.0, 2.0, 0.0, 60.0)
    store.put_now("k", replacement, b"new body")
    freshened = Meta(200, (("ETag", '"v1"'),), 3.0, 3.0, 0.0, 60.0)
    assert not store.update_now("k", freshened, expected=validated.response_time)
    assert store.get_now("k").meta.headers == (("ETag", '"v2"'),)
    assert store.update_now("k", freshened, expected=replacement.response_time)


SELECTS_CASES = [
    ("9111-4.3.4-strong-etag-matches", (("ETag", '"a"'),), {"ETag": '"a"'}, True),
    ("9111-4.3.4-strong-etag-names-another", (("ETag", '"a"'),), {"ETag": '"b"'}, False),
    ("9111-4.3.4-strong-etag-nothing-stored-to-match", (), {"ETag": '"a"'}, False),
    ("9111-4.3.4-weak-etag-answers-the-question-asked", (("ETag", '"a"'),), {"ETag": 'W/"b"'}, True),
    ("9111-4.3.4-no-etag-answers-the-question-asked", (("ETag", '"a"'),), {}, True),
]


@pytest.mark.parametrize("stored, fresh, expected", [c[1:] for c in SELECTS_CASES], ids=[c[0] for c in SELECTS_CASES])
def test_selects(stored, fresh, expected):
    assert selects(stored, CIMultiDict(fresh)) is expected
