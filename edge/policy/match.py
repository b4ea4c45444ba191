"""Rule conditions: path prefix, path glob and response media type.

Everything here is compiled when a policy is loaded; matching a request does
no parsing and compiles nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


class Glob:
    """A path glob: ``*`` matches any run of characters including "/", ``?`` exactly one.

    Not one regex: ``/*a*a*a*b`` as a backtracking regex takes polynomial time
    on a long request path, and request paths come from anyone. Between stars
    every segment has a fixed length, so taking each segment's leftmost
    occurrence is both correct and linear in the path length.
    """

    __slots__ = ("pattern", "_head", "_middle", "_tail", "_min_len")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        parts = pattern.split("*")
        segments = [_segment(p) for p in parts]
        self._head = segments[0]
        # No star: the head must be the whole path; that case keeps _tail None.
        self._tail = segments[-1] if len(parts) > 1 else None
        self._middle = tuple(s for s in segments[1:-1] if s[0])
        self._min_len = sum(len(p) for p in parts)

    def matches(self, path: str) -> bool:
        head, tail = self._head, self._tail
        if tail is None:
            return len(path) == head[0] and _at(head, path, 0)
        end = len(path) - tail[0]
        if len(path) < self._min_len or not _at(head, path, 0) or not _at(tail, path, end):
            return False
        pos = head[0]
        for seg_len, seg_re, literal in self._middle:
            if seg_re is None:
                found = path.find(literal, pos, end)
            else:
                m = seg_re.search(path, pos, end)
                found = -1 if m is None else m.start()
            if found < 0:
                return False
            pos = found + seg_len
        return True

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Glob) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


# A segment is (length, compiled regex or None when it is a plain literal, literal text).
_Segment = tuple[int, "re.Pattern[str] | None", str]


def _segment(text: str) -> _Segment:
    if "?" not in text:
        return (len(text), None, text)
    regex = ".".join(re.escape(piece) for piece in text.split("?"))
    return (len(text), re.compile(regex, re.DOTALL), text)


def _at(seg: _Segment, path: str, pos: int) -> bool:
    seg_len, regex, literal = seg
    if regex is None:
        return path.startswith(literal, pos)
    return regex.match(path, pos, pos + seg_len) is not None


def media_type(content_type: str | None) -> str | None:
    """``Text/HTML; charset=utf-8`` -> ``text/html``; None when there is none."""
    if not content_type:
        return None
    mt = content_type.partition(";")[0].strip().lower()
    return mt or None


@dataclass(frozen=True, slots=True)
class Match:
    """The conditions of a rule; all given conditions must hold, none given matches everything."""

    path_prefix: str | None = None
    path_glob: str | None = None
    content_type: tuple[str, ...] | None = None  # lower-case "type/subtype" or "type/*"
    _glob: Glob | None = field(init=False, repr=False, compare=False)
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _major: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "_glob", Glob(self.path_glob) if self.path_glob is not None else None)
        types = self.content_type or ()
        set_(self, "_exact", frozenset(t for t in types if not t.endswith("/*")))
        set_(self, "_major", frozenset(t[:-2] for t in types if t.endswith("/*")))

    @property
    def on_response(self) -> bool:
        """True when the rule can only be decided once the response exists."""
        return self.content_type is not None

    def matches_path(self, path: str) -> bool:
        prefix = self.path_prefix
        if prefix is not None and not path.startswith(prefix):
            return False
        glob = self._glob
        return glob is None or glob.matches(path)

    def matches_type(self, mtype: str | None) -> bool:
        """``mtype`` as returned by :func:`media_type`; no media type never meets a condition."""
        if self.content_type is None:
            return True
        if mtype is None:
            return False
        return mtype in self._exact or mtype.partition("/")[0] in self._major


def folded(match: Match) -> Match:
    """``match`` with its path conditions case-folded (for case-folded views;
    casefold, not lower: "ſ" reads as "s" to origins that upper-case)."""
    prefix = match.path_prefix.casefold() if match.path_prefix is not None else None
    glob = match.path_glob.casefold() if match.path_glob is not None else None
    if prefix == match.path_prefix and glob == match.path_glob:
        return match
    return Match(prefix, glob, match.content_type)
