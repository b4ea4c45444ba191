"""The aiohttp adapter (edge/http/aiohttp_adapter.py): what aiohttp's
parser errors mean, and the check that the installed aiohttp has every
internal the adapter relies on."""
from __future__ import annotations

import tomllib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import http_exceptions, web

from edge.http.aiohttp_adapter import SUPPORTED, ParseFailure, line_limit, missing_internals, parse_failure

LINE, FIELD = 8190, 8190

FAILURES = [
    (400, http_exceptions.LineTooLong("GET /aaaa", line_limit(LINE, FIELD)), ParseFailure.REQUEST_LINE_TOO_LONG,
     "request-line"),
    (400, http_exceptions.LineTooLong("Cookie: x", FIELD), ParseFailure.FIELD_TOO_LARGE, "header-field"),
    (400, http_exceptions.LineTooLong("?"), ParseFailure.FIELD_TOO_LARGE, "limit-not-named"),
    (400, http_exceptions.BadHttpMessage("Too many headers received"), ParseFailure.TOO_MANY_FIELDS,
     "too-many-fields"),
    (400, http_exceptions.BadStatusLine("\x16\x03\x01"), ParseFailure.MALFORMED, "tls-on-a-plain-port"),
    (400, http_exceptions.InvalidHeader("Host\x00"), ParseFailure.MALFORMED, "invalid-field"),
    (500, RuntimeError("handler failed"), None, "a-handler-error"),
    (400, None, None, "no-exception"),
]


@pytest.mark.parametrize(("status", "exc", "failure"), [f[:3] for f in FAILURES], ids=[f[3] for f in FAILURES])
def test_parse_failures(status, exc, failure):
    assert parse_failure(status, exc, line_limit(LINE, FIELD)) is failure


@pytest.mark.parametrize(("line", "field", "limit"), [(8190, 8190, 8191), (4096, 8190, 4096), (8190, 4096, 8190)])
def test_the_line_limit_differs_from_the_field_limit(line, field, limit):
    assert line_limit(line, field) == limit


def test_every_internal_is_there_and_a_missing_one_is_named(monkeypatch):
    assert missing_internals() == []
    monkeypatch.delattr(aiohttp.BaseConnector, "_wait_for_available_connection")
    monkeypatch.delattr(web.RequestHandler, "_request_in_progress")
    assert missing_internals() == [
        "RequestHandler._request_in_progress", "TCPConnector._wait_for_available_connection(key, traces)",
    ]


def test_a_request_without_the_writer_interim_heads_go_to_is_named(monkeypatch):
    monkeypatch.delattr(web.BaseRequest, "writer")
    assert missing_internals() == ["BaseRequest.writer"]


def test_the_supported_line_is_the_one_pyproject_allows_and_the_one_installed():
    major, minor = SUPPORTED
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    (requirement,) = [d for d in project["dependencies"] if d.startswith("aiohttp")]
    assert requirement == f"aiohttp>={major}.{minor},<{major}.{minor + 1}"
    assert tuple(int(n) for n in aiohttp.__version__.split(".")[:2]) == SUPPORTED
