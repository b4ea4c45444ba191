"""Cache-Control parsing, RFC 9111 §5.2 (and §1.2.2 delta-seconds, §4.2.1 invalid values)."""
from __future__ import annotations

import random

import pytest

from edge.http.directives import (
    INVALID,
    MAX_DELTA_SECONDS,
    MAX_TARGETED_LENGTH,
    CacheControl,
    delta_seconds,
    parse_cache_control,
    parse_targeted,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("60", 60),
        ("00060", 60),
        ("2147483647", 2147483647),
        ("2147483648", MAX_DELTA_SECONDS),
        ("2147483649", MAX_DELTA_SECONDS),
        ("99999999999999999999", MAX_DELTA_SECONDS),
        ("9" * 5000, MAX_DELTA_SECONDS),
        ("0" * 5000 + "7", 7),
        (None, None),
        ("", None),
        ("-1", None),
        ("+5", None),
        ("1.5", None),
        ("1e3", None),
        ("1_000", None),
        (" 5", None),
        ("abc", None),
        ("\u0663", None),
        ("\u00b2", None),
    ],
    ids=[
        "9111-1.2.2-zero",
        "9111-1.2.2-plain",
        "9111-1.2.2-leading-zeros",
        "9111-1.2.2-int32-max",
        "9111-1.2.2-2^31",
        "9111-1.2.2-overflow-capped",
        "9111-1.2.2-20-digits-capped",
        "9111-1.2.2-5000-digits-capped-no-error",
        "9111-1.2.2-long-leading-zeros",
        "absent",
        "empty",
        "9111-1.2.2-negative",
        "9111-1.2.2-plus-sign",
        "9111-1.2.2-fraction",
        "9111-1.2.2-exponent",
        "9111-1.2.2-underscore",
        "9111-1.2.2-whitespace",
        "9111-1.2.2-letters",
        "9111-1.2.2-arabic-indic-digit",
        "9111-1.2.2-superscript-digit",
    ],
)
def test_delta_seconds(value: str | None, expected: int | None) -> None:
    assert delta_seconds(value) == expected


MAX_AGE_CASES = [
    (None, None),
    ("", None),
    ("public", None),
    ("max-age=60", 60),
    ("max-age=0", 0),
    ("MAX-AGE=60", 60),
    ("Max-Age=60", 60),
    ('max-age="60"', 60),
    ("  max-age=60  ", 60),
    ("\tmax-age = 60\t", 60),
    ("public,max-age=60", 60),
    (",, ,max-age=60,,", 60),
    ("max-age=60, max-age=60", 60),
    ("max-age=060, max-age=60", 60),
    ("max-age=99999999999", MAX_DELTA_SECONDS),
    ("max-age=60, max-age=120", INVALID),
    ("max-age=60, max-age=abc", INVALID),
    ("max-age=60, max-age", INVALID),
    ("max-age=abc", INVALID),
    ("max-age=-1", INVALID),
    ("max-age=1.5", INVALID),
    ("max-age", INVALID),
    ("max-age=", INVALID),
    ('max-age=""', INVALID),
    ('max-age="60', INVALID),
    ("max-age=6 0", INVALID),
    ("max-age=\u0666\u0660", INVALID),
]
MAX_AGE_IDS = [
    "absent-header",
    "empty-header",
    "9111-5.2.2.8-absent-directive",
    "9111-5.2.2.8-plain",
    "9111-5.2.2.8-zero",
    "9111-5.2-names-case-insensitive-upper",
    "9111-5.2-names-case-insensitive-mixed",
    "9111-5.2-quoted-form-accepted",
    "9110-5.6.1-surrounding-ows",
    "ows-around-equals-tolerated",
    "9110-5.6.1-no-space-after-comma",
    "9110-5.6.1-empty-list-elements",
    "9111-4.2.1-duplicate-same-value",
    "9111-4.2.1-duplicate-same-number",
    "9111-1.2.2-overflow-capped",
    "9111-4.2.1-duplicate-conflict-invalid",
    "9111-4.2.1-duplicate-one-bad-invalid",
    "9111-4.2.1-duplicate-one-valueless-invalid",
    "9111-4.2.1-letters-invalid",
    "9111-4.2.1-negative-invalid",
    "9111-4.2.1-fraction-invalid",
    "9111-4.2.1-no-value-invalid",
    "9111-4.2.1-empty-value-invalid",
    "9111-4.2.1-empty-quoted-invalid",
    "9111-4.2.1-unterminated-quote-invalid",
    "9111-4.2.1-inner-space-invalid",
    "9111-4.2.1-non-ascii-digits-invalid",
]


@pytest.mark.parametrize(("value", "expected"), MAX_AGE_CASES, ids=MAX_AGE_IDS)
def test_max_age(value: str | None, expected: object) -> None:
    assert parse_cache_control(value).max_age == expected


@pytest.mark.parametrize(("value", "expected"), MAX_AGE_CASES, ids=MAX_AGE_IDS)
def test_s_maxage_parses_like_max_age(value: str | None, expected: object) -> None:
    """RFC 9111 §5.2.2.10: s-maxage takes the same delta-seconds argument."""
    s_value = value.replace("max-age", "s-maxage").replace("MAX-AGE", "S-MAXAGE").replace(
        "Max-Age", "S-Maxage"
    ) if value else value
    cc = parse_cache_control(s_value)
    assert cc.s_maxage == expected
    assert cc.max_age is None


def test_max_age_and_s_maxage_are_independent() -> None:
    """RFC 9111 §4.2.1: a shared cache needs both to pick s-maxage over max-age."""
    cc = parse_cache_control("max-age=60, s-maxage=600")
    assert (cc.max_age, cc.s_maxage) == (60, 600)


@pytest.mark.parametrize(
    ("value", "name", "present", "get"),
    [
        ("no-store", "no-store", True, None),
        ("NO-STORE", "no-store", True, None),
        ("No-Cache, Public", "public", True, None),
        ('no-cache="Set-Cookie, X-Foo"', "no-cache", True, "Set-Cookie, X-Foo"),
        ('no-cache="Set-Cookie, X-Foo", max-age=5', "max-age", True, "5"),
        ('no-cache="Set-Cookie, X-Foo", max-age=5', "x-foo", False, None),
        ('private="a,b", no-store', "no-store", True, None),
        ('ext="a \\"quoted\\" word", public', "ext", True, 'a "quoted" word'),
        ('ext="a \\"q, x\\"", public', "public", True, None),
        ('ext="trailing"junk, public', "public", True, None),
        ('private="x, no-store', "no-store", True, None),
        ('private="x, no-store', "private", True, None),
        ("private=set-cookie", "private", True, "set-cookie"),
        ("community=\"UCI\"", "community", True, "UCI"),
        ("\u00fcber=1, no-store", "no-store", True, None),
        ("\u00fcber=1, no-store", "\u00fcber", False, None),
        ("no-store\u212a", "no-storek", False, None),
        ("public, =5, =", "", False, None),
    ],
    ids=[
        "9111-5.2.2.5-bare",
        "9111-5.2-case-insensitive",
        "9111-5.2-case-insensitive-multiple",
        "9111-5.2.2.4-quoted-list-keeps-comma",
        "9111-5.2.2.4-directive-after-quoted-comma",
        "9111-5.2.2.4-quoted-field-not-a-directive",
        "9111-5.2.2.7-quoted-then-no-store",
        "9110-5.6.4-quoted-pair-unescaped",
        "9110-5.6.4-escaped-quote-does-not-end-string",
        "9110-5.6.4-junk-after-closing-quote-skipped",
        "unterminated-quote-cannot-hide-no-store",
        "unterminated-quote-private-present",
        "9111-5.2-token-form-accepted",
        "9111-5.2.3-extension-quoted",
        "non-ascii-directive-does-not-break-others",
        "non-ascii-name-not-a-token",
        "kelvin-sign-not-folded-to-k",
        "empty-names-ignored",
    ],
)
def test_directive_lookup(value: str, name: str, present: bool, get: str | None) -> None:
    cc = parse_cache_control(value)
    assert cc.has(name) is present
    assert (name in cc) is present
    assert cc.get(name) == get


@pytest.mark.parametrize(
    ("value", "name", "expected"),
    [
        ("public", "private", None),
        ("private", "private", ()),
        ("PRIVATE", "private", ()),
        ('private="Set-Cookie"', "private", ("set-cookie",)),
        ("private=Set-Cookie", "private", ("set-cookie",)),
        ('private="Set-Cookie, X-Foo ,\tx-bar"', "private", ("set-cookie", "x-foo", "x-bar")),
        ('private="a", private="b, a"', "private", ("a", "b")),
        ('private="a", private', "private", ()),
        ("private, private=\"a\"", "private", ()),
        ('private=""', "private", ()),
        ('private=" , "', "private", ()),
        ("private=", "private", ()),
        ('private="a, no-store', "private", ()),
        ('no-cache="Set-Cookie, X-Foo"', "no-cache", ("set-cookie", "x-foo")),
        ("no-cache", "no-cache", ()),
    ],
    ids=[
        "9111-5.2.2.7-absent",
        "9111-5.2.2.7-unqualified",
        "9111-5.2.2.7-uppercase",
        "9111-5.2.2.7-qualified-lowercased",
        "9111-5.2-token-form",
        "9111-5.2.2.7-list-with-ows",
        "9111-4.2.1-duplicates-union",
        "9111-4.2.1-qualified-then-bare-most-restrictive",
        "9111-4.2.1-bare-then-qualified-most-restrictive",
        "9111-5.2.2.7-empty-list-whole-response",
        "9111-5.2.2.7-blank-list-whole-response",
        "9111-5.2.2.7-empty-token-whole-response",
        "unterminated-quote-whole-response",
        "9111-5.2.2.4-qualified",
        "9111-5.2.2.4-unqualified",
    ],
)
def test_field_names(value: str, name: str, expected: tuple[str, ...] | None) -> None:
    assert parse_cache_control(value).field_names(name) == expected


def test_values_keeps_every_occurrence_in_order() -> None:
    cc = parse_cache_control("stale-if-error=5, public, Stale-If-Error=10")
    assert cc.get("stale-if-error") == "5"
    assert cc.values("stale-if-error") == ("5", "10")
    assert cc.seconds("stale-if-error") is INVALID
    assert cc.values("absent") == ()


def test_empty_header_is_empty() -> None:
    for value in (None, "", ",", " , \t,"):
        cc = parse_cache_control(value)
        assert isinstance(cc, CacheControl)
        assert len(cc) == 0 and list(cc) == []
        assert cc.max_age is None and cc.s_maxage is None
        assert not cc.has("no-store")
    assert parse_cache_control(None) is parse_cache_control("")
    # Empty elements are skipped, not mistaken for the end of the list (RFC 9110 §5.6.1).
    assert parse_cache_control(" , ,no-store,").has("no-store")


_FUZZ_ALPHABET = 'aenoprst-=,;"\\ \t\x00\x7f\xe9\u212a\U0001f600\ud8000129'


@pytest.mark.parametrize("position", ["before", "after"], ids=["garbage-then", "then-garbage"])
def test_garbage_never_raises_nor_hides_no_store(position: str) -> None:
    """A malformed neighbour must not swallow no-store (a privacy leak if it did)."""
    rng = random.Random(9111)
    for _ in range(3000):
        junk = "".join(rng.choice(_FUZZ_ALPHABET) for _ in range(rng.randrange(0, 40)))
        value = f"{junk}, no-store" if position == "before" else f"no-store, {junk}"
        assert parse_cache_control(value).has("no-store"), value


def test_huge_header() -> None:
    """Parsing stays correct (and linear) on megabyte headers."""
    big = "x-ext=" + "9" * 1_000_000 + ', private="' + "a," * 100_000 + '", max-age=5'
    cc = parse_cache_control(big)
    assert cc.max_age == 5
    assert len(cc.field_names("private") or ()) == 1
    many = ", ".join(["max-age=5"] * 50_000)
    assert parse_cache_control(many).max_age == 5


def test_results_stay_correct_past_memo_capacity() -> None:
    for i in range(5000):
        assert parse_cache_control(f"public, max-age={i}").max_age == i
    assert parse_cache_control("public, max-age=17").max_age == 17


# --- RFC 9213 targeted fields: Structured Field Dictionaries, strictly ------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="9213-2.1-absent"),
        pytest.param("", None, id="9213-2.1-empty-is-ignored"),
        pytest.param("max-age=60,", None, id="9213-2.1-trailing-comma-is-ignored"),
        pytest.param("max-age=60, , no-store", None, id="9213-2.1-empty-member-is-ignored"),
        pytest.param("Max-Age=60", None, id="9213-2.1-uppercase-name-is-ignored"),
        pytest.param('max-age="60', None, id="9213-2.1-unterminated-string-is-ignored"),
        pytest.param("max-age=60 no-store", None, id="9213-2.1-missing-comma-is-ignored"),
        pytest.param("private=x y", None, id="9213-2.1-bare-list-value-is-ignored"),
        pytest.param("max-age=60", {"max-age": "60"}, id="9213-2.1-integer"),
        pytest.param("no-store", {"no-store": None}, id="9213-2.1-boolean-true-no-value"),
        pytest.param("no-store=?1", {"no-store": None}, id="9213-2.1-explicit-true"),
        pytest.param("no-store=?0, max-age=5", {"max-age": "5"}, id="9213-2.1-false-is-no-directive"),
        pytest.param("no-store=?0", {}, id="9213-2.1-valid-but-silent"),
        pytest.param("none", {"none": None}, id="9213-3.1-none-governs"),
        pytest.param('no-cache="set-cookie, x-a"', {"no-cache": "set-cookie, x-a"}, id="9213-2.1-string"),
        pytest.param("private=set-cookie", {"private": "set-cookie"}, id="9213-2.1-token"),
        pytest.param("private=:AAAA:", {"private": ""}, id="9213-2.1-byte-sequence-unusable"),
        pytest.param("private=(a b)", {"private": ""}, id="9213-2.1-inner-list-unusable"),
        pytest.param("no-store;x=1, max-age=9;y", {"no-store": None, "max-age": "9"}, id="9213-2.1-parameters-ignored"),
        pytest.param("max-age=60, max-age=0", {"max-age": "0"}, id="8941-4.2.2-duplicate-last-wins"),
        pytest.param("max-age=60.0", {"max-age": ""}, id="9213-2.1-decimal-max-age-not-coerced"),
        pytest.param('max-age="60"', {"max-age": ""}, id="9213-2.1-string-max-age-not-coerced"),
        pytest.param("s-maxage=?1", {"s-maxage": ""}, id="9213-2.1-boolean-s-maxage-invalid"),
        pytest.param("stale-if-error=-5", {"stale-if-error": "-5"}, id="9111-1.2.2-negative-window"),
    ],
)
def test_parse_targeted(value: str | None, expected: dict | None) -> None:
    cc = parse_targeted(value)
    assert (None if cc is None else {name: cc.get(name) for name in cc}) == expected


@pytest.mark.parametrize(
    ("value", "max_age"),
    [
        pytest.param("max-age=60", 60, id="9213-2.1-integer"),
        pytest.param("max-age=60.0", INVALID, id="9213-2.1-decimal-is-invalid-not-60"),
        pytest.param('max-age="60"', INVALID, id="9213-2.1-string-is-invalid-not-60"),
        pytest.param("max-age", INVALID, id="9111-4.2.1-valueless-is-invalid"),
        pytest.param("max-age=-1", INVALID, id="9111-1.2.2-negative-is-invalid"),
        pytest.param("max-age=999999999999999", MAX_DELTA_SECONDS, id="9111-1.2.2-capped"),
        pytest.param("max-age=60, max-age=0", 0, id="8941-4.2.2-last-wins-not-conflict"),
    ],
)
def test_targeted_max_age(value: str, max_age: object) -> None:
    cc = parse_targeted(value)
    assert cc is not None and cc.max_age == max_age


def test_targeted_field_names() -> None:
    cc = parse_targeted('no-cache="Set-Cookie, X-A", private=(a)')
    assert cc is not None
    assert cc.field_names("no-cache") == ("set-cookie", "x-a")
    assert cc.field_names("private") == ()  # unusable list: the whole response


def test_an_overlong_targeted_field_is_ignored() -> None:
    value = "max-age=60"
    for i in range(MAX_TARGETED_LENGTH):
        member = f", x{i}"
        if len(value) + len(member) > MAX_TARGETED_LENGTH:
            break
        value += member
    assert parse_targeted(value) is not None  # within the bound: read
    longer = value + ", " + "y" * (MAX_TARGETED_LENGTH - len(value))
    assert len(longer) > MAX_TARGETED_LENGTH and parse_targeted(longer) is None
