"""Structured Field Values, RFC 8941 (edge/http/structured.py): the parsing
algorithms of §4.2, case by case, and the public structured-field-tests
suite when a checkout of it is named by EDGE_SF_TESTS."""
from __future__ import annotations

import base64
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from edge.http.structured import (
    InnerList,
    Item,
    StructuredFieldError,
    Token,
    parse_dictionary,
    parse_item,
    parse_list,
)

T = Token


def _i(value, **params) -> Item:
    return Item(value, dict(params))


def _plain(v):
    """Values with their types, so that True is not 1 and a Token not a String."""
    if isinstance(v, Item):
        return ("item", _plain(v.value), _plain(v.params))
    if isinstance(v, InnerList):
        return ("inner", [_plain(i) for i in v.items], _plain(v.params))
    if isinstance(v, dict):
        return [(k, _plain(x)) for k, x in v.items()]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return (type(v).__name__, v)


DICTIONARIES = [
    # §3.2, §4.2.2
    ("8941-3.2-empty-field-is-empty-dictionary", "", {}),
    ("8941-3.2-boolean-true-member", "no-store", {"no-store": _i(True)}),
    ("8941-3.2-integer-member", "max-age=60", {"max-age": _i(60)}),
    ("8941-3.2-several-members", "max-age=60, must-revalidate", {"max-age": _i(60), "must-revalidate": _i(True)}),
    ("8941-4.2.2-ows-around-comma", "a=1 ,\tb=2", {"a": _i(1), "b": _i(2)}),
    ("8941-4.2.2-no-space-after-comma", "a=1,b=2", {"a": _i(1), "b": _i(2)}),
    ("8941-4.2.2-duplicate-last-value-first-place", "a=1, b=2, a=3", {"a": _i(3), "b": _i(2)}),
    ("8941-4.2.2-member-parameters", "a=1;x=2;y, b;z", {"a": _i(1, x=2, y=True), "b": _i(True, z=True)}),
    ("8941-4.2.2-inner-list-member", "a=(1 2);q", {"a": InnerList((_i(1), _i(2)), {"q": True})}),
    ("8941-4.2-leading-and-trailing-sp", "  a=1  ", {"a": _i(1)}),
    ("8941-4.2.2-ows-after-last-member", "a=1\t", {"a": _i(1)}),
    ("8941-4.2.3.3-key-may-start-with-star", "*a=1", {"*a": _i(1)}),
    ("8941-4.2.3.3-key-chars", "a_b-c.d*9=1", {"a_b-c.d*9": _i(1)}),
    ("8941-3.3.3-string-member", 'no-cache="set-cookie, x"', {"no-cache": _i("set-cookie, x")}),
    ("8941-3.3.4-token-member", "private=set-cookie", {"private": _i(T("set-cookie"))}),
    ("8941-3.3.6-boolean-false-member", "no-store=?0", {"no-store": _i(False)}),
]

LISTS = [
    ("8941-3.1-empty", "", []),
    ("8941-3.1-items", "a, 1, \"s\"", [_i(T("a")), _i(1), _i("s")]),
    ("8941-3.1.1-inner-lists", "(a b), ()", [InnerList((_i(T("a")), _i(T("b"))), {}), InnerList((), {})]),
    ("8941-4.2.1.2-inner-list-sp-inside", "( a  b )", [InnerList((_i(T("a")), _i(T("b"))), {})]),
    ("8941-4.2.1.2-inner-list-item-params", "(a;x=1 b);y", [InnerList((_i(T("a"), x=1), _i(T("b"))), {"y": True})]),
]

ITEMS = [
    # §3.3.1 / §4.2.4 numbers
    ("8941-3.3.1-zero", "0", 0),
    ("8941-3.3.1-negative", "-42", -42),
    ("8941-3.3.1-leading-zeros", "007", 7),
    ("8941-3.3.1-fifteen-digits", "999999999999999", 999999999999999),
    ("8941-3.3.1-negative-fifteen-digits", "-999999999999999", -999999999999999),
    ("8941-3.3.2-decimal", "1.5", Decimal("1.5")),
    ("8941-3.3.2-decimal-three-fraction-digits", "-0.125", Decimal("-0.125")),
    ("8941-3.3.2-decimal-twelve-integer-digits", "123456789012.123", Decimal("123456789012.123")),
    # §3.3.3 / §4.2.5 strings
    ("8941-3.3.3-empty-string", '""', ""),
    ("8941-3.3.3-escapes", r'"a \"b\" \\ c"', 'a "b" \\ c'),
    ("8941-3.3.3-printable-ascii", '"~ !#"', "~ !#"),
    # §3.3.4 / §4.2.6 tokens
    ("8941-3.3.4-token", "foo123/456", T("foo123/456")),
    ("8941-3.3.4-token-star-start", "*foo", T("*foo")),
    ("8941-3.3.4-token-uppercase", "FooBar", T("FooBar")),
    ("8941-3.3.4-token-tchars", "a!#$%&'*+-.^_`|~:/z", T("a!#$%&'*+-.^_`|~:/z")),
    # §3.3.5 / §4.2.7 byte sequences
    ("8941-3.3.5-bytes", ":aGVsbG8=:", b"hello"),
    ("8941-3.3.5-empty-bytes", "::", b""),
    ("8941-4.2.7-missing-padding-accepted", ":aGVsbG8:", b"hello"),
    # §3.3.6 / §4.2.8 booleans
    ("8941-3.3.6-true", "?1", True),
    ("8941-3.3.6-false", "?0", False),
]

INVALID_DICTIONARIES = [
    ("8941-4.2.2-trailing-comma", "max-age=60,"),
    ("8941-4.2.2-trailing-comma-and-space", "max-age=60, "),
    ("8941-4.2.2-leading-comma", ", max-age=60"),
    ("8941-4.2.2-empty-member", "a=1,,b=2"),
    ("8941-4.2.2-missing-comma", "a=1 b=2"),
    ("8941-4.2.2-semicolon-separator", "a=1; b=2;"),
    ("8941-4.2.3.3-uppercase-key", "Max-Age=60"),
    ("8941-4.2.3.3-key-starts-with-digit", "1a=1"),
    ("8941-4.2.3.3-key-starts-with-dash", "-a=1"),
    ("8941-4.2.3.3-key-with-bad-char", "a!b=1"),
    ("8941-4.2.2-empty-value", "a="),
    ("8941-4.2.2-space-before-equals", "a =1"),
    ("8941-4.2.2-space-after-equals", "a= 1"),
    ("8941-4.2-leading-tab", "\ta=1"),
    ("8941-4.2-non-ascii", "a=1, b=\u00e9"),
    ("8941-4.2.3.2-parameter-uppercase-key", "a;Q=1"),
    ("8941-4.2.3.2-parameter-space-before-semicolon", "a=1 ;q"),
    ("8941-4.2.3.2-parameter-inner-list-value", "a;q=(1)"),
    ("8941-4.2.1.2-unterminated-inner-list", "a=(1 2"),
    ("8941-4.2.1.2-inner-list-comma", "a=(1,2)"),
    ("8941-4.2.1.2-inner-list-no-space", "a=(1\"x\")"),
    ("8941-4.2.1.2-inner-list-nested", "a=((1))"),
    ("cache-control-quoted-key-is-not-sf", '"max-age"=60'),
    ("8941-4.2.2-space-inside-value", "a=1, b=x y"),
]

INVALID_ITEMS = [
    ("8941-4.2.3.1-empty", ""),
    ("8941-4.2.3.1-unknown-start", "<a>"),
    ("8941-4.2-two-items", "1 2"),
    ("8941-4.2.4-sixteen-digit-integer", "1234567890123456"),
    ("8941-4.2.4-minus-alone", "-"),
    ("8941-4.2.4-minus-space", "- 1"),
    ("8941-4.2.4-plus-sign", "+1"),
    ("8941-4.2.4-decimal-trailing-dot", "1."),
    ("8941-4.2.4-decimal-four-fraction-digits", "1.1234"),
    ("8941-4.2.4-decimal-thirteen-integer-digits", "1234567890123.1"),
    ("8941-4.2.4-decimal-leading-dot", ".5"),
    ("8941-4.2.4-two-dots", "1.2.3"),
    ("8941-4.2.4-exponent", "1e3"),
    ("8941-4.2.5-unterminated-string", '"abc'),
    ("8941-4.2.5-bad-escape", r'"a\nb"'),
    ("8941-4.2.5-backslash-at-end", '"a\\'),
    ("8941-4.2.5-control-char", '"a\tb"'),
    ("8941-4.2.5-del-char", '"a\x7fb"'),
    ("8941-4.2.5-non-ascii", '"caf\u00e9"'),
    ("8941-4.2.5-single-quotes", "'abc'"),
    ("8941-4.2.6-token-bad-char", "a[b"),
    ("8941-4.2.4-digits-then-letters", "1a"),
    ("8941-4.2.7-unterminated-bytes", ":aGVsbG8="),
    ("8941-4.2.7-bad-base64-char", ":aGV$bG8=:"),
    ("8941-4.2.7-padding-inside", ":aG=sbG8=:"),
    ("8941-4.2.8-boolean-two", "?2"),
    ("8941-4.2.8-boolean-word", "?true"),
    ("8941-4.2.8-boolean-empty", "?"),
    ("rfc9651-date-is-not-rfc8941", "@1659578233"),
    ("rfc9651-display-string-is-not-rfc8941", '%"foo"'),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in DICTIONARIES], ids=[c[0] for c in DICTIONARIES])
def test_dictionary(value, expected):
    assert _plain(parse_dictionary(value)) == _plain(expected)


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in LISTS], ids=[c[0] for c in LISTS])
def test_list(value, expected):
    assert _plain(parse_list(value)) == _plain(expected)


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in ITEMS], ids=[c[0] for c in ITEMS])
def test_bare_item(value, expected):
    item = parse_item(value)
    assert _plain(item) == _plain(_i(expected))
    # The same value as a dictionary member and a parameter value (§4.2.3.2).
    assert _plain(parse_dictionary(f"k={value}")) == _plain({"k": _i(expected)})
    assert _plain(parse_item(f"t;p={value}").params) == _plain({"p": expected})


@pytest.mark.parametrize("value", [c[1] for c in INVALID_DICTIONARIES], ids=[c[0] for c in INVALID_DICTIONARIES])
def test_invalid_dictionary(value):
    with pytest.raises(StructuredFieldError):
        parse_dictionary(value)


@pytest.mark.parametrize("value", [c[1] for c in INVALID_ITEMS], ids=[c[0] for c in INVALID_ITEMS])
def test_invalid_item_fails_everywhere_it_can_appear(value):
    with pytest.raises(StructuredFieldError):
        parse_item(value)
    if value.strip():
        with pytest.raises(StructuredFieldError):
            parse_dictionary(f"k={value}")


def test_every_ascii_character_as_a_key_start_and_as_a_key_character():
    """§3.1.2: key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )."""
    for code in range(0x20, 0x7F):
        c = chr(code)
        if c in ",=; ":
            continue  # separators: their own cases above
        starts = c.islower() or c == "*"
        follows = starts or c.isdigit() or c in "_-."
        for value, valid in ((f"{c}a=1", starts), (f"a{c}=1", follows)):
            try:
                parsed = parse_dictionary(value)
            except StructuredFieldError:
                parsed = None
            assert (parsed is not None) is valid, repr(value)


# --- the public suite: https://github.com/httpwg/structured-field-tests -------------------
# Its JSON files are not part of this repository. To run them, point
# EDGE_SF_TESTS at a checkout. date.json and display-string.json are left
# out: those types came with RFC 9651, after the RFC 8941 that RFC 9213 names.

_SUITE = os.environ.get("EDGE_SF_TESTS")
_RFC9651_ONLY = {"date.json", "display-string.json"}


def _suite_cases():
    if not _SUITE:
        return []
    cases = []
    for path in sorted(Path(_SUITE).glob("*.json")):
        if path.name in _RFC9651_ONLY:
            continue
        for case in json.loads(path.read_text()):
            cases.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return cases


def _suite_form(v):
    """A parsed value in the suite's JSON form (its README, "Test Format")."""
    if isinstance(v, Item):
        return [_suite_form(v.value), [[k, _suite_form(x)] for k, x in v.params.items()]]
    if isinstance(v, InnerList):
        return [[_suite_form(i) for i in v.items], [[k, _suite_form(x)] for k, x in v.params.items()]]
    if isinstance(v, Token):
        return {"__type": "token", "value": str(v)}
    if isinstance(v, bytes):
        return {"__type": "binary", "value": base64.b32encode(v).decode()}
    if isinstance(v, Decimal):
        return float(v)
    return v


@pytest.mark.skipif(not _SUITE, reason="EDGE_SF_TESTS names no checkout of structured-field-tests")
@pytest.mark.parametrize("case", _suite_cases())
def test_public_suite(case):
    raw = ", ".join(case["raw"])
    parse = {"dictionary": parse_dictionary, "list": parse_list, "item": parse_item}[case["header_type"]]
    try:
        parsed = parse(raw)
    except StructuredFieldError:
        assert case.get("must_fail") or case.get("can_fail"), f"{raw!r} should parse"
        return
    assert not case.get("must_fail"), f"{raw!r} must fail"
    if isinstance(parsed, dict):
        got = [[k, _suite_form(v)] for k, v in parsed.items()]
    elif isinstance(parsed, list):
        got = [_suite_form(v) for v in parsed]
    else:
        got = _suite_form(parsed)
    # Through JSON, so that a Python bool and int are told apart as JSON does.
    assert json.dumps(got, sort_keys=True) == json.dumps(case["expected"], sort_keys=True)
