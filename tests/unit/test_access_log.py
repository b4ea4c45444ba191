"""The access log keeps client addresses, queries and secrets out."""
from __future__ import annotations

import io

import orjson
import pytest

from edge.observe.access import AccessLog
from edge.observe.anon import anonymise


@pytest.mark.parametrize(
    "address, expected",
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        ("fe80::1%eth0", "fe80::/48"),
        ("not an address", "invalid"),
        (None, "-"),
    ],
)
def test_anonymise(address, expected):
    assert anonymise(address) == expected


def test_log_line_holds_the_network_not_the_address():
    out = io.BytesIO()
    log = AccessLog(stream=out)
    log.write("r-1", "shop", "203.0.113.77", "GET", "shop.example", "/cart", 200, 12, "edge; hit", 0.001)
    log.flush()
    line = orjson.loads(out.getvalue())
    assert line["client"] == "203.0.113.0/24"
    assert "203.0.113.77" not in out.getvalue().decode()
    assert line["tenant"] == "shop" and line["path"] == "/cart" and line["status"] == 200


def test_waf_rules_appear_only_on_lines_they_concern():
    out = io.BytesIO()
    log = AccessLog(stream=out)
    log.write("r-1", "shop", "203.0.113.77", "GET", "shop.example", "/", 403, 40, "edge; detail=filter.waf", 0.001,
              "waf:sqli-libinjection,sqli-tautology")
    log.write("r-2", "shop", "203.0.113.77", "GET", "shop.example", "/", 200, 12, "edge; hit", 0.001)
    log.flush()
    first, second = (orjson.loads(line) for line in out.getvalue().splitlines())
    assert first["id"] == "r-1" and first["waf"] == "waf:sqli-libinjection,sqli-tautology"
    assert "waf" not in second
