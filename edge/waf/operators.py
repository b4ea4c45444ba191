"""Operators: what a rule tests on a (transformed) value.

Every operator is an object with ``match(value) -> bool`` and a ``gate``: a
set of characters of which any matching value contains at least one, or
None when no such set is known. The engine skips a value that contains
none of a gate's characters without calling the operator, which is what
keeps plain values (``/static/app.js``, a session id) almost free.

``rx`` and ``pm`` are case-insensitive; ``contains`` and ``eq`` are exact.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

try:  # the C library behind ModSecurity's and Coraza's @detectSQLi/@detectXSS
    import libinjection as _libinjection
except ImportError:  # pragma: no cover - a missing package is reported when rules load
    _libinjection = None

# Characters that are ordinary in paths, names, ids and prose: a gate made
# only of these filters nothing, so the rarest characters are preferred.
COMMON = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ./-_")

# Without one of these a value is no SQL injection libinjection reports for
# parameters: a quote, a comment, an operator or a parenthesis/comma of a
# function call or a column list. Numeric contexts ("1 or 1=1") need "=".
SQLI_GATE = frozenset("'\"`;()=#,|&<>!*-/\\@")
# Markup, an attribute break-out or a URL scheme.
XSS_GATE = frozenset("<>\"'`:")


def libinjection_available() -> bool:
    return _libinjection is not None


def folded(chars) -> frozenset[str]:
    """Both cases of every letter: gates are tested case-sensitively."""
    out = set()
    for ch in chars:
        out.add(ch)
        out.add(ch.lower())
        out.add(ch.upper())
    return frozenset(c for c in out if len(c) == 1)


def rarest(text: str) -> str:
    """The character of ``text`` least likely in ordinary values."""
    for ch in text:
        if ch not in COMMON:
            return ch
    return text[0]


@dataclass(frozen=True, slots=True)
class Rx:
    pattern: str
    regex: re.Pattern[str]
    gate: frozenset[str] | None

    name = "rx"

    def match(self, value: str) -> bool:
        return self.regex.search(value) is not None


@dataclass(frozen=True, slots=True)
class Pm:
    """A list of phrases, any of which matches (case-insensitive), compiled into
    one alternation, longest first, so one scan of the value tests them all."""

    words: tuple[str, ...]
    regex: re.Pattern[str]
    gate: frozenset[str] | None

    name = "pm"

    @classmethod
    def build(cls, words: tuple[str, ...]) -> Pm:
        # A trie of the lower-cased words: at each position of the value the
        # engine follows one branch per character instead of trying every word
        # (20 times faster than a flat alternation for 70 words).
        regex = re.compile(trie({w.lower() for w in words}))
        return cls(tuple(words), regex, folded(rarest(w) for w in words))

    def match(self, value: str) -> bool:
        return self.regex.search(value.lower()) is not None


def trie(words: set[str]) -> str:
    """A regex matching any of ``words``, as a trie of alternations."""
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        end = "" in node
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        if end:  # a word ends here and longer ones go on: the rest is optional
            return "(?:" + "|".join(alts) + ")?"
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(root)


@dataclass(frozen=True, slots=True)
class Contains:
    text: str
    gate: frozenset[str] | None

    name = "contains"

    def match(self, value: str) -> bool:
        return self.text in value


@dataclass(frozen=True, slots=True)
class Eq:
    text: str
    gate: frozenset[str] | None

    name = "eq"

    def match(self, value: str) -> bool:
        return value == self.text


@dataclass(frozen=True, slots=True)
class LengthGt:
    """More than ``limit`` characters (overlong values: buffer overflows, smuggling)."""

    limit: int
    gate: frozenset[str] | None = None

    name = "length_gt"

    def match(self, value: str) -> bool:
        return len(value) > self.limit


@dataclass(frozen=True, slots=True)
class LibinjectionSqli:
    gate: frozenset[str] | None = SQLI_GATE

    name = "libinjection_sqli"

    def match(self, value: str) -> bool:
        return bool(_libinjection.is_sql_injection(value)["is_sqli"])


@dataclass(frozen=True, slots=True)
class LibinjectionXss:
    gate: frozenset[str] | None = XSS_GATE

    name = "libinjection_xss"

    def match(self, value: str) -> bool:
        return bool(_libinjection.is_xss(value)["is_xss"])


Operator = Rx | Pm | Contains | Eq | LengthGt | LibinjectionSqli | LibinjectionXss

# operator name -> what its "value" must be (None: it takes none)
VALUES: dict[str, str | None] = {
    "rx": "a regular expression (Python syntax, matched case-insensitively)",
    "pm": "a non-empty list of non-empty phrases",
    "contains": "a non-empty string",
    "eq": "a string",
    "length_gt": "an integer >= 0",
    "libinjection_sqli": None,
    "libinjection_xss": None,
}
