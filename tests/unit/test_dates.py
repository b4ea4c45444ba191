"""HTTP-date parsing/formatting, RFC 9110 §5.6.7."""
from __future__ import annotations

import calendar
import email.utils
import random

import pytest

from edge.http.dates import format_http_date, parse_http_date

SUN_06_NOV_1994 = 784111777.0  # the RFC's example instant, 08:49:37 UTC
NOW_2025 = 1735689600.0  # 2025-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", SUN_06_NOV_1994),
        ("Sunday, 06-Nov-94 08:49:37 GMT", SUN_06_NOV_1994),
        ("Sun Nov  6 08:49:37 1994", SUN_06_NOV_1994),
        ("Sun Nov 06 08:49:37 1994", SUN_06_NOV_1994),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Tue, 29 Feb 2000 12:00:00 GMT", float(calendar.timegm((2000, 2, 29, 12, 0, 0)))),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 253402300799.0),
        ("Wed, 31 Dec 1969 23:59:59 GMT", -1.0),
        ("  Sun, 06 Nov 1994 08:49:37 GMT\t", SUN_06_NOV_1994),
        # The day name is not cross-checked against the date: recipients are
        # asked to be robust (§5.6.7), and the date fields are unambiguous.
        ("Mon, 06 Nov 1994 08:49:37 GMT", SUN_06_NOV_1994),
        ("Sat, 31 Dec 2016 23:59:60 GMT", float(calendar.timegm((2017, 1, 1, 0, 0, 0)))),
    ],
    ids=[
        "9110-5.6.7-imf-fixdate",
        "9110-5.6.7-obsolete-rfc850",
        "9110-5.6.7-obsolete-asctime-space-padded-day",
        "9110-5.6.7-asctime-two-digit-day",
        "9110-5.6.7-epoch",
        "9110-5.6.7-leap-day-2000",
        "9110-5.6.7-4digit-year-max",
        "9110-5.6.7-before-epoch",
        "9110-5.6.7-surrounding-whitespace",
        "9110-5.6.7-wrong-day-name-tolerated",
        "9110-5.6.7-leap-second-60",
    ],
)
def test_parse_valid(value: str, expected: float) -> None:
    assert parse_http_date(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "0",
        "-1",
        "garbage",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 06 Nov 1994 08:49:37 gmt",
        "sun, 06 nov 1994 08:49:37 GMT",
        "06 Nov 1994 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 30 Feb 1994 08:49:37 GMT",
        "Thu, 29 Feb 1900 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT trailing",
        "Sun, 06 Nov 1994 08:49:37 GMT\r\n",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov  6 08:49:37 94",
        "Sun, 06 Nov 1994 08:49:37 GMT" * 1000,
        "\x00\xff\ud800",
    ],
    ids=[
        "absent",
        "empty",
        "9111-5.3-expires-zero",
        "9111-5.3-expires-minus-one",
        "garbage",
        "9110-5.6.7-utc-not-gmt",
        "9110-5.6.7-numeric-zone",
        "9110-5.6.7-case-sensitive-gmt",
        "9110-5.6.7-case-sensitive-names",
        "9110-5.6.7-missing-day-name",
        "9110-5.6.7-one-digit-day",
        "9110-5.6.7-two-digit-year-in-fixdate",
        "9110-5.6.7-feb-30",
        "9110-5.6.7-1900-not-leap",
        "9110-5.6.7-day-zero",
        "9110-5.6.7-hour-24",
        "9110-5.6.7-minute-60",
        "9110-5.6.7-second-61",
        "9110-5.6.7-non-ascii-digits",
        "trailing-text",
        "trailing-crlf",
        "9110-5.6.7-rfc850-four-digit-year",
        "9110-5.6.7-asctime-two-digit-year",
        "very-long",
        "control-and-surrogate-chars",
    ],
)
def test_parse_invalid_is_none(value: str | None) -> None:
    assert parse_http_date(value) is None


@pytest.mark.parametrize(
    ("value", "now", "year"),
    [
        ("Sunday, 06-Nov-94 08:49:37 GMT", NOW_2025, 1994),
        ("Wednesday, 06-Nov-30 08:49:37 GMT", NOW_2025, 2030),
        ("Saturday, 06-Nov-75 08:49:37 GMT", NOW_2025, 2075),
        ("Thursday, 06-Nov-76 08:49:37 GMT", NOW_2025, 1976),
        ("Thursday, 06-Nov-10 08:49:37 GMT", 3944678400.0, 2110),  # now = 2095
        ("Tuesday, 06-Nov-69 08:49:37 GMT", None, 2069),
        ("Thursday, 06-Nov-70 08:49:37 GMT", None, 1970),
    ],
    ids=[
        "9110-5.6.7-rfc850-past-century",
        "9110-5.6.7-rfc850-near-future-kept",
        "9110-5.6.7-rfc850-exactly-50y-ahead-kept",
        "9110-5.6.7-rfc850-over-50y-ahead-is-past",
        "9110-5.6.7-rfc850-next-century",
        "no-now-posix-pivot-69",
        "no-now-posix-pivot-70",
    ],
)
def test_rfc850_two_digit_year(value: str, now: float | None, year: int) -> None:
    ts = parse_http_date(value, now=now)
    assert ts is not None
    assert calendar.timegm((year, 11, 6, 8, 49, 37)) == ts


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (SUN_06_NOV_1994, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (SUN_06_NOV_1994 + 0.999, "Sun, 06 Nov 1994 08:49:37 GMT"),
        (0.0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (-0.5, "Wed, 31 Dec 1969 23:59:59 GMT"),
        (1e20, "Fri, 31 Dec 9999 23:59:59 GMT"),
        (float("inf"), "Fri, 31 Dec 9999 23:59:59 GMT"),
        (-1e20, "Mon, 01 Jan 0001 00:00:00 GMT"),
    ],
    ids=[
        "9110-5.6.7-imf-fixdate",
        "fraction-floors",
        "epoch",
        "negative-fraction-floors",
        "clamped-to-year-9999",
        "infinity-clamped",
        "clamped-to-year-1",
    ],
)
def test_format(ts: float, expected: str) -> None:
    assert format_http_date(ts) == expected


def test_format_consecutive_seconds_not_stale() -> None:
    """The per-second memo must not hand out the previous second's string."""
    a = format_http_date(SUN_06_NOV_1994)
    b = format_http_date(SUN_06_NOV_1994 + 1)
    assert (a, b) == ("Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:38 GMT")


def test_format_nan_raises() -> None:
    with pytest.raises(ValueError):
        format_http_date(float("nan"))


def test_round_trip_agrees_with_stdlib() -> None:
    """RFC 9110 §5.6.7: what we emit is IMF-fixdate that others read back identically."""
    rng = random.Random(9110)
    for _ in range(2000):
        ts = rng.randrange(-2208988800, 253402300799)
        s = format_http_date(ts)
        assert s == email.utils.formatdate(ts, usegmt=True)
        assert parse_http_date(s) == ts
