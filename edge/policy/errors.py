"""Validation errors that name the file, the field and what was wrong."""
from __future__ import annotations

import json
from dataclasses import dataclass

# Long values are cut so that one bad field cannot flood a log line.
_FOUND_MAX = 60


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in one policy file: ``source: field: expected X, found Y``."""

    source: str
    field: str  # "rules[2].edge_ttl.override"; empty for the file as a whole
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.field}" if self.field else self.source
        return f"{where}: expected {self.expected}, found {self.found}"


class PolicyError(Exception):
    """A policy that cannot be used; ``errors`` lists every problem found, not just the first."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = list(errors)

    def __reduce__(self) -> tuple[type[PolicyError], tuple[list[FieldError]]]:
        return (PolicyError, (self.errors,))


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def show(value: object) -> str:
    """Render a JSON value as the user wrote it, for the "found" part of an error."""
    if value is MISSING:
        return "nothing"
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _FOUND_MAX else text[: _FOUND_MAX - 1] + "…"
