"""Validation errors that name the file, the field and what was wrong.

:class:`FieldError`, ``MISSING`` and ``show`` are the validation kit's
(:mod:`edge.schema.check`); a policy that cannot be used raises
:class:`PolicyError` with every one of them.
"""
from __future__ import annotations

from edge.schema.check import MISSING, FieldError, show


class PolicyError(Exception):
    """A policy that cannot be used; ``errors`` lists every problem found, not just the first."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = list(errors)

    def __reduce__(self) -> tuple[type[PolicyError], tuple[list[FieldError]]]:
        return (PolicyError, (self.errors,))


__all__ = ["MISSING", "FieldError", "PolicyError", "show"]
