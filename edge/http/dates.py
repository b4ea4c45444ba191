"""HTTP-date parsing and formatting (RFC 9110 §5.6.7).

Parsing is strict to the grammar: a date we cannot read is ``None``, and the
callers treat that conservatively (an unreadable Expires means "already
expired", an unreadable Last-Modified gives no heuristic freshness).
"""
from __future__ import annotations

import math
import re
import time

__all__ = ["parse_http_date", "format_http_date"]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_MONTH_NAMES = ("", *_MONTHS)
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MON_RE = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME_RE = "([0-9]{2}):([0-9]{2}):([0-9]{2})"

# [0-9] rather than \d: \d would accept non-ASCII digits such as "٠٦".
_IMF_FIXDATE = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) {_MON_RE} ([0-9]{{4}}) {_TIME_RE} GMT"
)
_RFC850 = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rf"([0-9]{{2}})-{_MON_RE}-([0-9]{{2}}) {_TIME_RE} GMT"
)
_ASCTIME = re.compile(
    rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MON_RE} ([0-9]{{2}}| [0-9]) {_TIME_RE} ([0-9]{{4}})"
)

_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Year 1..9999: what 4DIGIT (and Python's gmtime) can express.
_MIN_TS = -62135596800.0
_MAX_TS = 253402300799.0


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _timestamp(y: int, mon: int, d: int, hh: int, mm: int, ss: int) -> float | None:
    # time-of-day allows second 60 (leap second); it simply rolls into the next minute.
    if hh > 23 or mm > 59 or ss > 60 or d < 1 or d > _DAYS_IN_MONTH[mon]:
        return None
    if mon == 2 and d == 29 and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        return None
    return float(_days_from_civil(y, mon, d) * 86400 + hh * 3600 + mm * 60 + ss)


def _two_digit_year(yy: int, now: float | None) -> int:
    if now is None or now != now:
        # No usable reference clock: the POSIX pivot (69 -> 2069, 70 -> 1970).
        return yy + (1900 if yy >= 70 else 2000)
    # RFC 9110 §5.6.7: a year more than 50 years in the future is the most
    # recent past year with the same last two digits.
    this_year = time.gmtime(min(max(now, _MIN_TS), _MAX_TS)).tm_year
    year = this_year - this_year % 100 + yy
    if year > this_year + 50:
        year -= 100
    elif year <= this_year - 50:
        year += 100
    return year


def parse_http_date(value: str | None, *, now: float | None = None) -> float | None:
    """HTTP-date -> POSIX timestamp (UTC), or None when ``value`` is not one.

    Accepts IMF-fixdate and the obsolete RFC 850 and asctime forms (RFC 9110
    §5.6.7). ``now`` only disambiguates RFC 850 two-digit years; nothing here
    reads a clock.
    """
    if not value:
        return None
    m = _IMF_FIXDATE.fullmatch(value)
    if m is not None:
        d, mon, y, hh, mm, ss = m.groups()
        return _timestamp(int(y), _MONTHS[mon], int(d), int(hh), int(mm), int(ss))
    return _parse_obsolete(value.strip(" \t"), now)


def _parse_obsolete(value: str, now: float | None) -> float | None:
    m = _IMF_FIXDATE.fullmatch(value)  # IMF-fixdate with surrounding whitespace
    if m is not None:
        d, mon, y, hh, mm, ss = m.groups()
    elif (m := _RFC850.fullmatch(value)) is not None:
        d, mon, yy, hh, mm, ss = m.groups()
        y = str(_two_digit_year(int(yy), now))
    elif (m := _ASCTIME.fullmatch(value)) is not None:
        mon, d, hh, mm, ss, y = m.groups()
    else:
        return None
    return _timestamp(int(y), _MONTHS[mon], int(d), int(hh), int(mm), int(ss))


_last_formatted: tuple[int, str] = (0, "Thu, 01 Jan 1970 00:00:00 GMT")


def format_http_date(ts: float) -> str:
    """POSIX timestamp -> IMF-fixdate; clamped to years 1..9999. NaN raises ValueError."""
    global _last_formatted
    if ts != ts:
        raise ValueError("timestamp is NaN")
    sec = math.floor(min(max(ts, _MIN_TS), _MAX_TS))
    last = _last_formatted
    if last[0] == sec:  # Date headers are formatted many times within one second.
        return last[1]
    t = time.gmtime(sec)
    s = (
        f"{_DAY_NAMES[t.tm_wday]}, {t.tm_mday:02d} {_MONTH_NAMES[t.tm_mon]} "
        f"{t.tm_year:04d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )
    _last_formatted = (sec, s)
    return s
