"""Interim (1xx) responses on their way to the client (edge/http/interim.py,
RFC 9110 §15.2), and the aiohttp internals that let the node see them."""
from __future__ import annotations

import pytest
from aiohttp.client_proto import ResponseHandler

from edge.http.aiohttp_adapter import missing_internals
from edge.http.interim import interim_head, relayed


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(100, False, id="9110-15.2-100-answers-the-edges-own-expect"),
        pytest.param(101, False, id="9110-15.2.2-101-is-no-interim-answer-here"),
        pytest.param(102, True, id="rfc2518-102-processing"),
        pytest.param(103, True, id="rfc8297-103-early-hints"),
        pytest.param(104, True, id="9110-15.2-unknown-1xx-forwarded"),
        pytest.param(199, True, id="9110-15.2-last-1xx"),
        pytest.param(200, False, id="final"),
    ],
)
def test_relayed(status, expected):
    assert relayed(status) is expected


@pytest.mark.parametrize(
    ("status", "fields", "expected"),
    [
        pytest.param(103, [("Link", "</a.css>; rel=preload")],
                     b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nVia: 1.1 edge\r\n\r\n",
                     id="8297-2-link-kept"),
        pytest.param(103, [("Link", "</a>"), ("Link", "</b>")],
                     b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nLink: </b>\r\nVia: 1.1 edge\r\n\r\n",
                     id="repeated-fields-kept-in-order"),
        pytest.param(102, [], b"HTTP/1.1 102 Processing\r\nVia: 1.1 edge\r\n\r\n", id="no-fields"),
        pytest.param(150, [], b"HTTP/1.1 150\r\nVia: 1.1 edge\r\n\r\n", id="unknown-code-no-reason"),
        pytest.param(103, [("Connection", "x-a, keep-alive"), ("X-A", "1"), ("Keep-Alive", "5"), ("Link", "</a>")],
                     b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nVia: 1.1 edge\r\n\r\n",
                     id="9110-7.6.1-hop-by-hop-and-connection-named-dropped"),
        pytest.param(103, [("Transfer-Encoding", "chunked"), ("Content-Length", "0"), ("Upgrade", "h2c")],
                     b"HTTP/1.1 103 Early Hints\r\nVia: 1.1 edge\r\n\r\n",
                     id="9110-8.6-no-framing-fields-on-1xx"),
        pytest.param(103, [("Surrogate-Key", "a b"), ("Cache-Tag", "c")],
                     b"HTTP/1.1 103 Early Hints\r\nVia: 1.1 edge\r\n\r\n",
                     id="purge-tags-stay-with-the-edge"),
        pytest.param(103, [("Via", "1.1 a"), ("Via", "1.0 b")],
                     b"HTTP/1.1 103 Early Hints\r\nVia: 1.1 a, 1.0 b, 1.1 edge\r\n\r\n",
                     id="9110-7.6.3-via-appended"),
        pytest.param(103, [("Bad Name", "x"), ("X-Split", "a\r\nInjected: 1"), ("X-Nul", "a\x00")],
                     b"HTTP/1.1 103 Early Hints\r\nVia: 1.1 edge\r\n\r\n",
                     id="fields-no-line-can-carry-dropped"),
        pytest.param(103, [("X-Raw", "caf\udcc3\udca9")],
                     b"HTTP/1.1 103 Early Hints\r\nX-Raw: caf\xc3\xa9\r\nVia: 1.1 edge\r\n\r\n",
                     id="obs-text-bytes-as-sent"),
    ],
)
def test_interim_head(status, fields, expected):
    assert interim_head(status, fields, "1.1 edge") == expected


def test_a_missing_aiohttp_internal_is_named(monkeypatch):
    assert missing_internals() == []
    monkeypatch.setattr(ResponseHandler, "read", None)
    assert missing_internals() == ["ResponseHandler.read()"]
