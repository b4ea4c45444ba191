"""Collecting every problem of a file at once, and the converters the policy sections share.

A converter takes a decoded JSON value and returns it normalised, or
``BAD``; :class:`Check` turns ``BAD`` into a :class:`FieldError` naming the
file, the field (``origins[0].url``), what was expected and what was found,
and carries on, so that one run shows every error.
"""
from __future__ import annotations

import datetime
import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Long values are cut so that one bad field cannot flood a log line.
_FOUND_MAX = 60


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in one file: ``source: field: expected X, found Y``."""

    source: str
    field: str  # "rules[2].edge_ttl.override"; empty for the file as a whole
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        return f"{where}: expected {self.expected}, found {self.found}"


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a key that is absent; shown as "nothing"


class _Bad:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BAD"


BAD: Any = _Bad()  # what a converter returns for a value it refuses


def show(value: object) -> str:
    """A JSON value as the user wrote it, for the "found" part of an error."""
    if value is MISSING:
        return "nothing"
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _FOUND_MAX else text[: _FOUND_MAX - 1] + "…"


def describe(value: object) -> str:
    """A TOML value as the user wrote it, for the "found" part of an error."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:76] + '..."'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"a date/time ({value.isoformat()})"
    return repr(value)


# --- what a value should have been ---------------------------------------------------

OBJECT = "an object"
BOOL = "true or false"
STRING = "a string"
FRACTION = "a number 0..1"
FILTER_MODE = '"block", "log" or "off"'
PATH = 'a path starting with "/" (printable ASCII; percent-encode the rest)'

COMMENT = "$comment"  # allowed in every object, ignored

_IDENT_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


def join(path: str, key: str) -> str:
    """``origins[0]`` + ``url`` -> ``origins[0].url``; a key that is no identifier is quoted."""
    if not _IDENT_RE.fullmatch(key):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


def known_key(key: str, allowed: Iterable[str]) -> str:
    """What an unknown key should have been: the closest known one, or all of them."""
    names = list(allowed)
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f'a known key (did you mean "{close[0]}"?)'
    return "one of the keys " + ", ".join(names)


class Check:
    """Collects errors instead of stopping at the first, so one run shows them all.

    ``keys`` maps each kind of object to the keys it may have; anything else
    (but ``$comment``) is reported.
    """

    def __init__(self, source: str, keys: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.source = source
        self.keys: Mapping[str, tuple[str, ...]] = keys or {}
        self.errors: list[FieldError] = []

    def fail(self, path: str, expected: str, found: object, *, literal: bool = False) -> None:
        text = found if literal and isinstance(found, str) else show(found)
        self.errors.append(FieldError(self.source, path, expected, text))

    def object(self, value: object, path: str, kind: str) -> dict[str, Any] | None:
        """``value`` if it is an object, its unknown and repeated keys reported; else None."""
        if not isinstance(value, dict):
            self.fail(path, OBJECT, value)
            return None
        allowed = self.keys[kind]
        for key in value:
            if key == COMMENT or key in allowed:
                continue
            self.fail(join(path, key), known_key(key, allowed), "an unknown key", literal=True)
        # Set by the loader's JSON reader: a repeated key would silently override the first.
        for key in getattr(value, "duplicates", ()):
            self.fail(join(path, key), "each key once", "it more than once", literal=True)
        return value

    def get(self, obj: dict[str, Any], path: str, key: str, default: Any, expected: str,
            convert: Callable[[object], Any]) -> Any:
        value = obj.get(key, MISSING)
        if value is MISSING:
            return default
        out = convert(value)
        if out is BAD:
            self.fail(join(path, key), expected, value)
            return default
        return out

    def list(self, obj: dict[str, Any], path: str, key: str, default: Any, expected: str,
             item_expected: str, convert: Callable[[object], Any], *, non_empty: bool = False) -> Any:
        """A list converted item by item, in order, without repeats; every bad item is reported."""
        value = obj.get(key, MISSING)
        if value is MISSING:
            return default
        where = join(path, key)
        if not isinstance(value, list) or (non_empty and not value):
            self.fail(where, expected, value)
            return default
        out: dict[Any, None] = {}  # ordered and de-duplicated: a host may be listed twice
        for i, item in enumerate(value):
            converted = convert(item)
            if converted is BAD:
                self.fail(f"{where}[{i}]", item_expected, item)
            else:
                out[converted] = None
        return tuple(out)


# --- converters: value -> normalised value, or BAD ------------------------------------


def int_in(lo: int, hi: int) -> Callable[[object], Any]:
    def convert(v: object) -> Any:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        return v if ok else BAD

    return convert


def number_in(lo_exclusive: float, hi: float) -> Callable[[object], Any]:
    """A number > ``lo_exclusive`` and <= ``hi``, as a float."""

    def convert(v: object) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return BAD
        return float(v) if lo_exclusive < v <= hi else BAD

    return convert


def fraction(v: object) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        return BAD
    return float(v)


def boolean(v: object) -> Any:
    return v if isinstance(v, bool) else BAD


def string(v: object) -> Any:
    return v if isinstance(v, str) else BAD


def one_of(*choices: str) -> Callable[[object], Any]:
    def convert(v: object) -> Any:
        return v if isinstance(v, str) and v in choices else BAD

    return convert


filter_mode = one_of("block", "log", "off")  # every filter's "mode"

_ESCAPE_RE = re.compile(r"%[0-9a-fA-F]{2}")


def request_path(v: object) -> Any:
    """A path, path prefix or glob to match requests against: printable ASCII from "/"."""
    if not isinstance(v, str) or not v.startswith("/") or not all(33 <= ord(ch) <= 126 for ch in v):
        return BAD
    # Request paths are matched in normalised form, with escapes in upper
    # case (RFC 3986 §6.2.2.1); "%c3%a9" in a policy must match them too.
    return _ESCAPE_RE.sub(lambda m: m.group(0).upper(), v)


__all__ = [
    "BAD", "BOOL", "COMMENT", "FILTER_MODE", "FRACTION", "MISSING", "OBJECT", "PATH", "STRING",
    "Check", "FieldError", "boolean", "describe", "filter_mode", "fraction", "int_in", "join", "known_key", "number_in",
    "one_of", "request_path", "show", "string",
]
