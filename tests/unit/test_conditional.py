"""Conditional requests against a stored response (RFC 9110 §13) and request
Cache-Control directives (RFC 9111 §5.2.1): edge.cache.conditional."""
from __future__ import annotations

import pytest
from multidict import CIMultiDict

from edge.cache.conditional import evaluate, has_conditional, parse_etags, reuse
from edge.http.directives import parse_cache_control

LM = "Tue, 15 Nov 1994 08:12:31 GMT"
BEFORE = "Mon, 14 Nov 1994 08:12:31 GMT"
AFTER = "Wed, 16 Nov 1994 08:12:31 GMT"
STORED = {"ETag": '"v1"', "Last-Modified": LM, "Date": AFTER}
WEAK = {"ETag": 'W/"v1"', "Last-Modified": LM}

# (id citing the section, method, request headers, stored headers, expected)
CASES = [
    ("9110-13.1.1-if-match-strong", "GET", {"If-Match": '"v1"'}, STORED, None),
    ("9110-13.1.1-if-match-list", "GET", {"If-Match": '"a", "v1"'}, STORED, None),
    ("9110-13.1.1-if-match-mismatch", "GET", {"If-Match": '"v2"'}, STORED, 412),
    ("9110-13.1.1-if-match-weak-request-tag", "GET", {"If-Match": 'W/"v1"'}, STORED, 412),
    ("9110-13.1.1-if-match-weak-stored-tag", "GET", {"If-Match": '"v1"'}, WEAK, 412),
    ("9110-13.1.1-if-match-star", "GET", {"If-Match": "*"}, STORED, None),
    ("9110-13.1.1-if-match-star-no-etag", "GET", {"If-Match": "*"}, {"Last-Modified": LM}, None),
    ("9110-13.1.1-if-match-no-stored-etag", "GET", {"If-Match": '"v1"'}, {}, 412),
    ("9110-13.1.1-if-match-malformed-false", "GET", {"If-Match": "v1"}, STORED, 412),
    ("9110-13.1.1-if-match-unterminated-false", "GET", {"If-Match": '"v1'}, STORED, 412),
    ("9110-13.1.1-if-match-empty-false", "GET", {"If-Match": ""}, STORED, 412),
    ("9110-13.1.4-ius-not-modified", "GET", {"If-Unmodified-Since": LM}, STORED, None),
    ("9110-13.1.4-ius-modified-412", "GET", {"If-Unmodified-Since": BEFORE}, STORED, 412),
    ("9110-13.1.4-ius-invalid-ignored", "GET", {"If-Unmodified-Since": "yesterday"}, STORED, None),
    ("9110-13.1.4-ius-no-last-modified-ignored", "GET", {"If-Unmodified-Since": BEFORE}, {"ETag": '"v1"'}, None),
    ("9110-13.2.2-ius-ignored-with-if-match", "GET", {"If-Match": '"v1"', "If-Unmodified-Since": BEFORE}, STORED, None),
    ("9110-13.1.2-inm-match-304", "GET", {"If-None-Match": '"v1"'}, STORED, 304),
    ("9110-13.1.2-inm-head-304", "HEAD", {"If-None-Match": '"v1"'}, STORED, 304),
    ("9110-13.1.2-inm-weak-request", "GET", {"If-None-Match": 'W/"v1"'}, STORED, 304),
    ("9110-13.1.2-inm-weak-stored", "GET", {"If-None-Match": '"v1"'}, WEAK, 304),
    ("9110-13.1.2-inm-list", "GET", {"If-None-Match": '"a" , W/"v1",'}, STORED, 304),
    ("9110-13.1.2-inm-comma-inside-tag", "GET", {"If-None-Match": '"a,b"'}, {"ETag": '"a,b"'}, 304),
    ("9110-13.1.2-inm-mismatch", "GET", {"If-None-Match": '"v2"'}, STORED, None),
    ("9110-13.1.2-inm-case-sensitive", "GET", {"If-None-Match": '"V1"'}, STORED, None),
    ("9110-8.8.3-lowercase-w-is-malformed", "GET", {"If-None-Match": 'w/"v1"'}, STORED, None),
    ("9110-13.1.2-inm-star", "GET", {"If-None-Match": "*"}, STORED, 304),
    ("9110-13.1.2-inm-star-in-list-malformed", "GET", {"If-None-Match": '*, "v1"'}, STORED, None),
    ("9110-13.1.2-inm-malformed-no-match", "GET", {"If-None-Match": "v1"}, STORED, None),
    ("9110-13.1.2-inm-junk-after-tag", "GET", {"If-None-Match": '"v1" x'}, STORED, None),
    ("9110-13.1.2-inm-control-char", "GET", {"If-None-Match": '"v\x001"'}, STORED, None),
    ("9110-13.1.2-inm-no-stored-etag", "GET", {"If-None-Match": '"v1"'}, {"Last-Modified": LM}, None),
    ("9110-13.1.2-inm-malformed-stored-etag", "GET", {"If-None-Match": '"v1"'}, {"ETag": "v1"}, None),
    ("9110-13.1.2-inm-other-method-412", "DELETE", {"If-None-Match": '"v1"'}, STORED, 412),
    ("9110-13.1.3-ims-equal-304", "GET", {"If-Modified-Since": LM}, STORED, 304),
    ("9110-13.1.3-ims-later-304", "GET", {"If-Modified-Since": AFTER}, STORED, 304),
    ("9110-13.1.3-ims-earlier-200", "GET", {"If-Modified-Since": BEFORE}, STORED, None),
    ("9110-13.1.3-ims-invalid-ignored", "GET", {"If-Modified-Since": "not a date"}, STORED, None),
    ("9110-13.1.3-ims-rfc850", "GET", {"If-Modified-Since": "Tuesday, 15-Nov-94 08:12:31 GMT"}, STORED, 304),
    ("9110-13.1.3-ims-only-get-head", "POST", {"If-Modified-Since": AFTER}, STORED, None),
    ("9110-13.2.2-ims-ignored-with-inm", "GET", {"If-None-Match": '"v2"', "If-Modified-Since": AFTER}, STORED, None),
    ("9111-4.3.2-ims-uses-date-without-lm", "GET", {"If-Modified-Since": AFTER}, {"Date": LM}, 304),
    ("9111-4.3.2-ims-nothing-to-compare", "GET", {"If-Modified-Since": AFTER}, {}, None),
    ("9110-13.2.2-if-match-before-inm", "GET", {"If-Match": '"v2"', "If-None-Match": '"v1"'}, STORED, 412),
    ("9110-13.2.2-if-match-ok-then-inm", "GET", {"If-Match": '"v1"', "If-None-Match": '"v1"'}, STORED, 304),
    ("9110-13.2.2-ius-fails-before-ims", "GET", {"If-Unmodified-Since": BEFORE, "If-Modified-Since": AFTER}, STORED, 412),
    ("no-preconditions", "GET", {}, STORED, None),
]


@pytest.mark.parametrize(("method", "request_headers", "stored", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(method, request_headers, stored, expected):
    assert evaluate(method, CIMultiDict(request_headers), CIMultiDict(stored)) == expected
    # Plain dicts work too.
    assert evaluate(method, request_headers, stored) == expected


def test_preconditions_ignored_for_non_2xx_stored_response():
    """RFC 9110 §13.2.1: only when the unconditional answer would be 2xx."""
    assert evaluate("GET", {"If-None-Match": '"v1"'}, STORED, status=404) is None
    assert evaluate("GET", {"If-Match": '"x"'}, STORED, status=301) is None


def test_repeated_if_none_match_lines_are_one_list():
    """RFC 9110 §5.3: field lines combine into one list."""
    h = CIMultiDict([("If-None-Match", '"a"'), ("If-None-Match", '"v1"')])
    assert evaluate("GET", h, STORED) == 304


def test_repeated_if_modified_since_is_ignored():
    """RFC 9110 §13.1.3: more than one member -> ignored."""
    h = CIMultiDict([("If-Modified-Since", AFTER), ("If-Modified-Since", AFTER)])
    assert evaluate("GET", h, STORED) is None


ETAG_CASES = [
    ('"abc"', ((False, "abc"),)),
    ('W/"abc"', ((True, "abc"),)),
    ('""', ((False, ""),)),
    ('"a", W/"b" ,, "c"', ((False, "a"), (True, "b"), (False, "c"))),
    ("", ()),
    ("abc", None),
    ('W/ "abc"', None),
    ('"a" "b"', None),
    ('"a"b', None),
    ('"a\\"', ((False, "a\\"),)),
    (None, None),
]


@pytest.mark.parametrize(("value", "expected"), ETAG_CASES)
def test_parse_etags(value, expected):
    """RFC 9110 §8.8.3 entity-tag grammar; malformed -> None, never raises."""
    assert parse_etags(value) == expected


@pytest.mark.parametrize("junk", ['"', "W/", ",", '\\"', "\x00", "\u00ff\"x\"", '"\u20ac"', "*" * 10000, '"' * 9999])
def test_evaluate_never_raises(junk):
    for name in ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"):
        evaluate("GET", {name: junk}, {"ETag": junk, "Last-Modified": junk, "Date": junk})


def test_has_conditional():
    assert not has_conditional(CIMultiDict({"Accept": "*/*"}))
    for name in ("If-None-Match", "if-modified-since", "If-Match", "If-Unmodified-Since"):
        assert has_conditional(CIMultiDict({name: "x"}))


# (id, request Cache-Control, age, lifetime, stored Cache-Control, expected)
REUSE_CASES = [
    ("9111-4.2-fresh", "", 10, 60, "max-age=60", None),
    ("9111-4.2-stale", "", 61, 60, "max-age=60", "stale"),
    ("9111-5.2.1.1-max-age-younger", "max-age=30", 10, 60, "", None),
    ("9111-5.2.1.1-max-age-equal", "max-age=10", 10, 60, "", None),
    ("9111-5.2.1.1-max-age-older", "max-age=5", 10, 60, "", "request"),
    ("9111-5.2.1.1-max-age-malformed-ignored", "max-age=x", 10, 60, "", None),
    ("9111-5.2.1.3-min-fresh-enough", "min-fresh=50", 10, 60, "", None),
    ("9111-5.2.1.3-min-fresh-too-little", "min-fresh=51", 10, 60, "", "request"),
    ("9111-5.2.1.2-max-stale-any", "max-stale", 100, 60, "max-age=60", None),
    ("9111-5.2.1.2-max-stale-within", "max-stale=40", 100, 60, "max-age=60", None),
    ("9111-5.2.1.2-max-stale-beyond", "max-stale=39", 100, 60, "max-age=60", "stale"),
    ("9111-5.2.1.2-max-stale-malformed", "max-stale=soon", 100, 60, "max-age=60", "stale"),
    ("9111-5.2.1.2-max-stale-fresh-anyway", "max-stale=0", 10, 60, "max-age=60", None),
    ("9111-5.2.2.2-must-revalidate-beats-max-stale", "max-stale", 100, 60, "max-age=60, must-revalidate", "stale"),
    ("9111-5.2.2.8-proxy-revalidate-beats-max-stale", "max-stale", 100, 60, "max-age=60, proxy-revalidate", "stale"),
    ("9111-5.2.2.10-s-maxage-beats-max-stale", "max-stale", 100, 60, "s-maxage=60", "stale"),
    ("9111-5.2.2.4-no-cache-beats-max-stale", "max-stale", 100, 60, "no-cache", "stale"),
    ("9111-5.2.1-max-age-limits-max-stale", "max-stale, max-age=80", 100, 60, "", "stale"),
    ("9111-5.2.1-only-if-cached-alone", "only-if-cached", 10, 60, "", None),
]


@pytest.mark.parametrize(("req", "age", "lifetime", "stored", "expected"), [c[1:] for c in REUSE_CASES], ids=[c[0] for c in REUSE_CASES])
def test_reuse(req, age, lifetime, stored, expected):
    assert reuse(parse_cache_control(req), age, lifetime, (("Cache-Control", stored),) if stored else ()) == expected
