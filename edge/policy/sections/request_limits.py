"""The ``filters.request_limits`` section: the shape of a request and how
many a client may have in flight. :mod:`edge.filters.request_limits` applies it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edge.schema.check import BAD, FILTER_MODE, Check, filter_mode, fraction, int_in
from edge.schema.values import size_in

DEFAULT_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Refused by the chain's MethodFilter for every tenant; listing them would mislead.
NEVER_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})
DEFAULT_MAX_URL_LENGTH = 8192
DEFAULT_MAX_QUERY_LENGTH = 4096
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEADER_BYTES = 32768
DEFAULT_MAX_CONCURRENT = 256
# Four clients that never read fill an origin's pool, not one.
DEFAULT_ORIGIN_SHARE = 0.25

MAX_LENGTH = 1 << 20  # the node's max_request_line cannot exceed it either
MAX_HEADERS = 10_000
MAX_HEADER_BYTES = 1 << 24
MAX_BODY_SIZE = 1 << 40  # as cache.max_object_size; the node's limits.max_body_size bounds it anyway
MAX_CONCURRENT = 1_000_000
MAX_METHODS = 64

KEYS: dict[str, tuple[str, ...]] = {
    "request_limits": ("mode", "methods", "max_url_length", "max_query_length", "max_headers",
                       "max_header_bytes", "max_body_size", "max_concurrent", "origin_share"),
}

# What a value should have been, for the policy's error messages.
METHODS = f"a non-empty list of at most {MAX_METHODS} methods"
METHOD = 'a method name in upper case such as "GET" (CONNECT, TRACE and TRACK are always refused)'
URL_LENGTH = f"an integer number of bytes 1..{MAX_LENGTH}"
QUERY_LENGTH = f"an integer number of bytes 0..{MAX_LENGTH}"
HEADER_COUNT = f"an integer 1..{MAX_HEADERS}"
HEADER_BYTES = f'a size 1..{MAX_HEADER_BYTES} bytes: an integer, or a string with a unit like "32KiB"'
BODY_SIZE = ('null (the node\'s limits.max_body_size) or a size: bytes as an integer, '
             'or a string with a unit like "10MiB"')
CONCURRENT = f"an integer 0..{MAX_CONCURRENT} (0: no limit)"
SHARE = "a number 0..1 (1: a client may hold every connection)"

_METHOD_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """The ``filters.request_limits`` section; the default is in force for
    every tenant that does not change it."""

    mode: str = "block"  # "block", "log" or "off"
    methods: tuple[str, ...] = DEFAULT_METHODS  # in the order given, for Allow
    max_url_length: int = DEFAULT_MAX_URL_LENGTH
    max_query_length: int = DEFAULT_MAX_QUERY_LENGTH
    max_headers: int = DEFAULT_MAX_HEADERS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_body_size: int | None = None  # None: the node's limits.max_body_size
    max_concurrent: int = DEFAULT_MAX_CONCURRENT  # 0: no limit
    origin_share: float = DEFAULT_ORIGIN_SHARE  # of the smallest origin pool, per client; 1: no bound
    method_set: frozenset[str] = field(init=False, compare=False, repr=False)
    allow: str = field(init=False, compare=False, repr=False)  # the Allow header of a 405
    active: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "method_set", frozenset(self.methods))
        object.__setattr__(self, "allow", ", ".join(self.methods))
        object.__setattr__(self, "active", self.mode != "off")


DEFAULT_REQUEST_LIMITS = RequestLimits()
NO_REQUEST_LIMITS = RequestLimits(mode="off")


def _method(v: object) -> Any:
    ok = isinstance(v, str) and _METHOD_RE.fullmatch(v) and v not in NEVER_METHODS
    return v if ok else BAD


_header_bytes = size_in(1, MAX_HEADER_BYTES)
_body = size_in(1, MAX_BODY_SIZE)


def _body_size(v: object) -> Any:
    return None if v is None else _body(v)


def parse_request_limits(c: Check, o: dict[str, Any] | None, path: str) -> RequestLimits:
    """``o`` is the section after ``c.object(raw, path, "request_limits")``
    (unknown keys already reported); every bad value is reported to ``c``."""
    d = DEFAULT_REQUEST_LIMITS
    if o is None:
        return d
    mode = c.get(o, path, "mode", d.mode, FILTER_MODE, filter_mode)
    methods = c.list(o, path, "methods", d.methods, METHODS, METHOD, _method, non_empty=True)
    if len(methods) > MAX_METHODS:
        c.fail(f"{path}.methods", METHODS, o["methods"])
        methods = d.methods
    return RequestLimits(
        mode=mode,
        methods=methods,
        max_url_length=c.get(o, path, "max_url_length", d.max_url_length, URL_LENGTH, int_in(1, MAX_LENGTH)),
        max_query_length=c.get(o, path, "max_query_length", d.max_query_length, QUERY_LENGTH, int_in(0, MAX_LENGTH)),
        max_headers=c.get(o, path, "max_headers", d.max_headers, HEADER_COUNT, int_in(1, MAX_HEADERS)),
        max_header_bytes=c.get(o, path, "max_header_bytes", d.max_header_bytes, HEADER_BYTES, _header_bytes),
        max_body_size=c.get(o, path, "max_body_size", d.max_body_size, BODY_SIZE, _body_size),
        max_concurrent=c.get(o, path, "max_concurrent", d.max_concurrent, CONCURRENT, int_in(0, MAX_CONCURRENT)),
        origin_share=c.get(o, path, "origin_share", d.origin_share, SHARE, fraction),
    )


def request_limits_data(r: RequestLimits) -> dict[str, Any]:
    """The section as JSON data (the policy's normalised form)."""
    return {
        "mode": r.mode,
        "methods": list(r.methods),
        "max_url_length": r.max_url_length,
        "max_query_length": r.max_query_length,
        "max_headers": r.max_headers,
        "max_header_bytes": r.max_header_bytes,
        "max_body_size": r.max_body_size,
        "max_concurrent": r.max_concurrent,
        "origin_share": r.origin_share,
    }
