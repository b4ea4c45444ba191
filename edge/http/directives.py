"""Cache-Control field parsing (RFC 9111 §5.2).

The parser never raises: a cache must keep serving whatever an origin sends,
and anything it cannot read is ignored (unknown directives, RFC 9111 §5.2.3)
or, for freshness values, reported as INVALID so the caller treats the
response as stale (RFC 9111 §4.2.1).

Targeted fields (RFC 9213, ``CDN-Cache-Control``) are the exception: they
are Structured Field Dictionaries, and one that does not parse strictly is
ignored as a whole (``parse_targeted``).
"""
from __future__ import annotations

import decimal
import enum
import re
from typing import Iterator, Literal

from edge.http.structured import Item, StructuredFieldError, parse_dictionary

__all__ = [
    "CacheControl",
    "EMPTY",
    "INVALID",
    "Invalid",
    "MAX_DELTA_SECONDS",
    "MAX_TARGETED_LENGTH",
    "delta_seconds",
    "parse_cache_control",
    "parse_targeted",
]

# RFC 9111 §1.2.2: larger delta-seconds values are taken to be 2^31.
MAX_DELTA_SECONDS = 2147483648

_OWS = " \t"
_QUOTED = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


class Invalid(enum.Enum):
    """A freshness directive that is present but unusable (bad or conflicting value)."""

    INVALID = "invalid"


INVALID = Invalid.INVALID
Seconds = int | None | Literal[Invalid.INVALID]


def delta_seconds(value: str | None) -> int | None:
    """``1*DIGIT`` (ASCII only, no sign, no whitespace) -> int capped at 2^31, else None."""
    if not value or not value.isascii() or not value.isdigit():
        return None
    value = value.lstrip("0")
    # Checking the length first keeps int() off huge inputs (and its 4300-digit limit).
    if len(value) > 10:
        return MAX_DELTA_SECONDS
    n = int(value) if value else 0
    return n if n < MAX_DELTA_SECONDS else MAX_DELTA_SECONDS


class CacheControl:
    """Parsed, read-only Cache-Control directives.

    Names are lower-case; look them up in lower case. A value is None for a
    directive without ``=``, otherwise its unquoted text. When a directive is
    repeated, ``get`` gives the first value and ``values`` all of them.
    """

    __slots__ = ("_d", "_dups")

    def __init__(
        self,
        directives: dict[str, str | None],
        dups: dict[str, list[str | None]] | None = None,
    ) -> None:
        self._d = directives
        self._dups = dups

    def has(self, name: str) -> bool:
        return name in self._d

    def get(self, name: str) -> str | None:
        return self._d.get(name)

    def values(self, name: str) -> tuple[str | None, ...]:
        """Every value given for ``name``, in order; () when absent."""
        if self._dups is not None and name in self._dups:
            return tuple(self._dups[name])
        if name in self._d:
            return (self._d[name],)
        return ()

    def seconds(self, name: str) -> Seconds:
        """A delta-seconds directive: None if absent, INVALID if malformed or
        repeated with different values (RFC 9111 §4.2.1), else seconds."""
        d = self._d
        if name not in d:
            return None
        n = delta_seconds(d[name])
        if n is None:
            return INVALID
        if self._dups is not None and name in self._dups:
            for other in self._dups[name]:
                if delta_seconds(other) != n:
                    return INVALID
        return n

    @property
    def max_age(self) -> Seconds:
        return self.seconds("max-age")

    @property
    def s_maxage(self) -> Seconds:
        return self.seconds("s-maxage")

    def field_names(self, name: str) -> tuple[str, ...] | None:
        """Field names qualifying ``private`` / ``no-cache`` (RFC 9111 §5.2.2.4, §5.2.2.7).

        None: the directive is absent. (): it applies to the whole response,
        because it appears unqualified at least once (the most restrictive
        reading wins) or its list is empty or unreadable. Otherwise the
        lower-cased union of the names listed.
        """
        if name not in self._d:
            return None
        names: list[str] = []
        for value in self.values(name):
            if value is None:
                return ()
            found = False
            for part in value.split(","):
                part = part.strip(_OWS).lower()
                if part:
                    found = True
                    if part not in names:
                        names.append(part)
            if not found:
                return ()
        return tuple(names)

    def __contains__(self, name: object) -> bool:
        return name in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"CacheControl({self._d!r})"


EMPTY = CacheControl({})

# Origins send a handful of distinct Cache-Control values, so parsed results
# are shared. Bounded in count and value length so hostile headers can't grow it.
_memo: dict[str, CacheControl] = {}
_MEMO_MAX_ENTRIES = 1024
_MEMO_MAX_LEN = 256


def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a Cache-Control field value (field lines joined with ", ")."""
    if not value:
        return EMPTY
    cc = _memo.get(value)
    if cc is not None:
        return cc
    pairs = _split_quoted(value) if '"' in value else _split_plain(value)
    d: dict[str, str | None] = {}
    dups: dict[str, list[str | None]] | None = None
    ascii_only = value.isascii()
    for name, v in pairs:
        name = name.strip(_OWS)
        # Non-ASCII names are not tokens, and lower() could fold some (e.g. the
        # Kelvin sign) into a real directive name.
        if not name or (not ascii_only and not name.isascii()):
            continue
        name = name.lower()
        if name in d:
            if dups is None:
                dups = {}
            if name in dups:
                dups[name].append(v)
            else:
                dups[name] = [d[name], v]
        else:
            d[name] = v
    cc = CacheControl(d, dups) if d else EMPTY
    if len(value) <= _MEMO_MAX_LEN:
        if len(_memo) >= _MEMO_MAX_ENTRIES:
            _memo.clear()
        _memo[value] = cc
    return cc


def _split_plain(value: str) -> Iterator[tuple[str, str | None]]:
    for part in value.split(","):
        name, eq, v = part.partition("=")
        yield name, (v.strip(_OWS) if eq else None)


def _split_quoted(s: str) -> list[tuple[str, str | None]]:
    """Split where quoted-string values may hold commas (RFC 9110 §5.6.4)."""
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(s)
    while i < n:
        comma = s.find(",", i)
        if comma == -1:
            comma = n
        eq = s.find("=", i, comma)
        if eq == -1:
            out.append((s[i:comma], None))
            i = comma + 1
            continue
        name = s[i:eq]
        j = eq + 1
        while j < n and s[j] in _OWS:
            j += 1
        if j < n and s[j] == '"':
            m = _QUOTED.match(s, j)
            if m is None:
                # Unterminated quote: take the directive unqualified (the
                # stricter reading for private/no-cache, INVALID for
                # max-age) and keep parsing, so it can't hide a later no-store.
                out.append((name, None))
                i = j + 1
                continue
            v = m.group(1)
            if "\\" in v:
                v = _QUOTED_PAIR.sub(r"\1", v)
            out.append((name, v))
            # Anything between the closing quote and the next comma is junk.
            nxt = s.find(",", m.end())
            i = n if nxt == -1 else nxt + 1
        else:
            out.append((name, s[j:comma].rstrip(_OWS)))
            i = comma + 1
    return out


# Longer targeted fields (all their lines together) are ignored: the strict
# parser costs a few microseconds a member, and a tenant's origin must not
# spend the worker's time with a megabyte of them. Real ones are short.
MAX_TARGETED_LENGTH = 4096

# RFC 9213 §2.1: these take an Integer. Any other type is not coerced (a
# decimal max-age is no max-age) but read as an invalid value: stale, as
# RFC 9111 §4.2.1 has it for Cache-Control.
_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def parse_targeted(value: str | None) -> CacheControl | None:
    """A targeted field's directives (RFC 9213 §2.1), field lines joined
    with ", "; None when the field is to be ignored: empty, or not a valid
    Structured Field Dictionary (RFC 8941 §3.2, parsed as §4.2 says); also
    when longer than MAX_TARGETED_LENGTH, unparsed (the caller decides what
    an unread field means).

    Members map onto Cache-Control directives: Boolean true is a directive
    without a value, ``?0`` is no directive, a String or Token is its text
    (the field names of ``no-cache`` / ``private``), a Byte Sequence or Inner
    List a value nothing can use. Parameters are ignored.
    """
    if not value or len(value) > MAX_TARGETED_LENGTH:
        return None
    try:
        members = parse_dictionary(value)
    except StructuredFieldError:
        return None
    if not members:
        return None
    d: dict[str, str | None] = {}
    for name, member in members.items():
        v = member.value if isinstance(member, Item) else None
        if name in _INTEGER_DIRECTIVES:
            d[name] = str(v) if type(v) is int else ""
        elif v is True:
            d[name] = None
        elif v is False:
            continue
        elif isinstance(v, (str, int, decimal.Decimal)):
            d[name] = str(v)
        else:
            d[name] = ""
    return CacheControl(d) if d else EMPTY
