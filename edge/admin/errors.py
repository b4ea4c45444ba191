"""Admin API errors: one JSON shape for every failure,
``{"error": "...", "details": [{"field": "...", "message": "..."}]}``."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from edge.policy.errors import FieldError

JSON = "application/json"


class ApiError(Exception):
    def __init__(self, status: int, error: str, details: Iterable[dict[str, str]] = (),
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = list(details)
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.error, self.details, self.headers, self.extra)


def error_response(status: int, error: str, details: Iterable[dict[str, str]] = (),
                   headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": error, "details": list(details)}
    body.update(extra or {})
    return web.json_response(body, status=status, headers=headers)


def detail(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def field_details(errors: Iterable[FieldError]) -> list[dict[str, str]]:
    """Policy validation errors without their source (the request is the source)."""
    return [detail(e.field, f"expected {e.expected}, found {e.found}") for e in errors]
