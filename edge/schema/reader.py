"""Reading a TOML file's tables the way :mod:`edge.schema.check` reads
policies: every problem recorded, each naming file, field, what was
expected and what was found.

A converter here returns the value or raises ValueError whose message
reads "expected ..., found ..."; :meth:`Reader.get` files it under the key.
"""
from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from edge.schema.check import describe
from edge.schema.values import MAX_SIZE, parse_size

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MISSING = object()


class Reader:
    """Reads one parsed file, recording every problem instead of stopping at the first.

    ``sections`` maps each table to the keys it may have.
    """

    def __init__(self, file: str, base: Path, sections: Mapping[str, tuple[str, ...]]) -> None:
        self.file = file
        self.base = base  # relative paths are relative to this
        self.sections = sections
        self.errors: list[str] = []

    def error(self, where: str, expected: str, found: str) -> None:
        self.errors.append(f"{self.file}: {where}: expected {expected}, found {found}")

    def table(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            self.error(name, f"a table ([{name}])", describe(value))
            return {}
        self.unknown(value, name, self.sections[name])
        return value

    def unknown(self, table: dict[str, Any], where: str, known: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                tail = f' (did you mean "{hint[0]}"?)' if hint else ""
                self.error(
                    f"{where}.{key}" if where else key,
                    f"one of the {'keys' if where else 'sections'} {', '.join(sorted(known))}",
                    f"an unknown {'key' if where else 'section'}{tail}",
                )

    def get(self, table: dict[str, Any], where: str, key: str, default: T, convert: Callable[[Any], T]) -> T:
        """``convert`` returns the value or raises ValueError("expected ..., found ...")."""
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except ValueError as e:
            self.errors.append(f"{self.file}: {where}.{key}: {e}")
            return default

    def path(self, value: object) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected a path (relative to the config file), found {describe(value)}")
        return self.base / value  # an absolute value replaces the base

    def networks(self, value: Any, where: str, default: tuple[IPNetwork, ...]) -> tuple[IPNetwork, ...]:
        """An array of CIDR strings; every bad element is reported."""
        if not isinstance(value, list):
            self.error(where, "an array of CIDR strings", describe(value))
            return default
        nets = []
        for i, item in enumerate(value):
            try:
                nets.append(network(item))
            except ValueError as e:
                self.errors.append(f"{self.file}: {where}[{i}]: {e}")
        return tuple(nets)


# --- converters: value -> value, or ValueError("expected ..., found ...") ---------------


def number(low: float, high: float, what: str = "a number of seconds") -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"expected {what} from {low:g} to {high:g}, found {describe(value)}")
        return float(value)

    return convert


def integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer from {low} to {high}, found {describe(value)}")
        return value

    return convert


def size(low: int, high: int = MAX_SIZE) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        n = parse_size(value)
        if not low <= n <= high:
            raise ValueError(f"expected a size from {low} to {high} bytes, found {describe(value)}")
        return n

    return convert


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, found {describe(value)}")
    return value


def network(value: Any) -> IPNetwork:
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as e:
            # ip_network says "has host bits set" for "10.0.0.1/8": widening
            # it silently would trust addresses nobody meant to trust.
            detail = f" ({e.args[0].split(' ', 1)[1]})" if "host bits" in str(e) else ""
            raise ValueError(
                f'expected a CIDR such as "10.0.0.0/8" or "2001:db8::/32", found {describe(value)}{detail}'
            ) from None
    raise ValueError(f'expected a CIDR such as "10.0.0.0/8" or "2001:db8::/32", found {describe(value)}')


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    """Case-insensitive choice among ``choices`` (lower case), returned lower case."""

    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            names = ", ".join(f'"{c}"' for c in choices)
            raise ValueError(f"expected one of {names}, found {describe(value)}")
        return value.lower()

    return check


__all__ = ["IPNetwork", "Reader", "boolean", "integer", "network", "number", "one_of", "size"]
