"""Transformations a rule applies to a value before its operator sees it.

Each one is a pure ``str -> str`` function with a fast path that returns the
value itself when there is nothing to do (most values of ordinary traffic),
so that a chain of them costs a few ``in`` checks on a plain value.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from urllib.parse import unquote

# Decoding is repeated until the value stops changing, at most this often:
# "%252e" is "%2e" is "." after three rounds; more rounds only help an
# attacker make us work.
_MAX_DECODE_ROUNDS = 3

_UNI_RE = re.compile(r"%u([0-9a-fA-F]{4})")


def _uni(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16))


def url_decode(value: str) -> str:
    """Percent-decoding, repeated (double encoding), including IIS ``%uXXXX``;
    ``+`` is a space. Invalid escapes stay as they are; invalid UTF-8 becomes U+FFFD."""
    for _ in range(_MAX_DECODE_ROUNDS):
        if "%" not in value and "+" not in value:
            return value
        decoded = value.replace("+", " ")
        if "%u" in decoded or "%U" in decoded:
            decoded = _UNI_RE.sub(_uni, decoded)
        decoded = unquote(decoded, errors="replace")
        if decoded == value:
            return value
        value = decoded
    return value


def html_entity_decode(value: str) -> str:
    """Named, decimal and hex character references, also without the ``;``
    (browsers accept ``&#60`` and ``&lt``)."""
    for _ in range(_MAX_DECODE_ROUNDS):
        if "&" not in value:
            return value
        decoded = html.unescape(value)
        if decoded == value:
            return value
        value = decoded
    return value


def lowercase(value: str) -> str:
    return value.lower()


_SPACE_RE = re.compile(r"\s+")


def compress_whitespace(value: str) -> str:
    """Every run of whitespace (tabs, newlines, vertical tab, NBSP...) becomes one space."""
    if "  " not in value and not _OTHER_SPACE_RE.search(value):
        return value
    return _SPACE_RE.sub(" ", value)


_OTHER_SPACE_RE = re.compile(r"[^\S ]")
_COMMENT_RE = re.compile(r"/\*.*?(?:\*/|$)", re.DOTALL)


def remove_comments(value: str) -> str:
    """SQL/C comments ``/* ... */`` (an unterminated one runs to the end)
    become a space: ``UNION/**/SELECT`` is ``UNION SELECT``."""
    if "/*" not in value:
        return value
    return _COMMENT_RE.sub(" ", value)


def remove_nulls(value: str) -> str:
    return value.replace("\x00", "") if "\x00" in value else value


def normalise_path(value: str) -> str:
    """Backslashes as slashes, repeated slashes collapsed and ``.``/``..``
    segments resolved the way a file system would (never above the root).
    Used to see what a traversal reaches: ``/a/./b//../../etc/passwd`` is
    ``/etc/passwd``."""
    if "\\" in value:
        value = value.replace("\\", "/")
    if "//" not in value and "/." not in value and "./" not in value:
        return value
    absolute = value.startswith("/")
    out: list[str] = []
    for seg in value.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    joined = "/".join(out)
    if absolute:
        joined = "/" + joined
    if value.endswith("/") and joined and not joined.endswith("/"):
        joined += "/"
    return joined


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "url_decode": url_decode,
    "html_entity_decode": html_entity_decode,
    "lowercase": lowercase,
    "compress_whitespace": compress_whitespace,
    "remove_comments": remove_comments,
    "remove_nulls": remove_nulls,
    "normalise_path": normalise_path,
}


def apply(names: tuple[str, ...], value: str) -> str:
    for name in names:
        value = TRANSFORMS[name](value)
    return value
