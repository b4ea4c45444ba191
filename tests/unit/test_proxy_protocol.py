"""PROXY protocol header parser (pure), v1 and v2, table-driven."""
from __future__ import annotations

import ipaddress
import logging
import struct

import pytest

from edge.geo.proxy_protocol import (
    NEED_MORE,
    V2_SIGNATURE,
    NeedMore,
    ProxyHeader,
    ProxyProtocolError,
    RefusedPeers,
    parse,
)

HTTP = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int = 1, fam: int = 0x11, block: bytes = b"", *, version: int = 2, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + struct.pack("!BBH", (version << 4) | command, fam, size) + block


def v4_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + struct.pack("!HH", sport, dport)


def v6_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + struct.pack("!HH", sport, dport)


TLV = bytes([0x02, 0x00, 0x0B]) + b"example.de" + b"!" + bytes([0x05, 0x00, 0x02]) + b"id"

V1_LINE = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
V6_LINE = b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 80\r\n"
V6_LONG = b"PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::1 1 2\r\n"
V6_MAPPED = b"PROXY TCP6 ::ffff:192.0.2.9 ::1 1 2\r\n"
V1_PORTS = b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n"
V2_TCP4 = v2(1, 0x11, v4_block("192.0.2.1", "198.51.100.2", 56324, 443))
V2_TCP6 = v2(1, 0x21, v6_block("2001:db8:0:0::1", "2001:db8::2", 4711, 80))

VALID = [
    ("v1-tcp4", V1_LINE + HTTP, ProxyHeader("192.0.2.1", 56324, "198.51.100.2", 443, len(V1_LINE))),
    ("v1-tcp4-alone", V1_LINE, ProxyHeader("192.0.2.1", 56324, "198.51.100.2", 443, len(V1_LINE))),
    ("v1-tcp6", V6_LINE + HTTP, ProxyHeader("2001:db8::1", 4711, "2001:db8::2", 80, len(V6_LINE))),
    ("v1-tcp6-compressed", V6_LONG, ProxyHeader("2001:db8::1", 1, "::1", 2, len(V6_LONG))),
    ("v1-tcp6-v4-mapped", V6_MAPPED, ProxyHeader("192.0.2.9", 1, "::1", 2, len(V6_MAPPED))),
    ("v1-ports-0-and-65535", V1_PORTS, ProxyHeader("1.2.3.4", 0, "5.6.7.8", 65535, len(V1_PORTS))),
    ("v1-unknown-short", b"PROXY UNKNOWN\r\n" + HTTP, ProxyHeader(None, None, None, None, 15)),
    ("v1-unknown-with-junk", b"PROXY UNKNOWN whatever \xff here\r\n", ProxyHeader(None, None, None, None, 31)),
    ("v1-worst-case-107",
     b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
     ProxyHeader(None, None, None, None, 107)),
    ("v2-tcp4", V2_TCP4 + HTTP, ProxyHeader("192.0.2.1", 56324, "198.51.100.2", 443, 28)),
    ("v2-tcp6", V2_TCP6 + HTTP, ProxyHeader("2001:db8::1", 4711, "2001:db8::2", 80, 52)),
    ("v2-tcp6-v4-mapped", v2(1, 0x21, v6_block("::ffff:192.0.2.1", "::1", 1, 2)), ProxyHeader("192.0.2.1", 1, "::1", 2, 52)),
    ("v2-tcp4-tlvs-skipped", v2(1, 0x11, v4_block("192.0.2.1", "192.0.2.2", 1, 2) + TLV) + HTTP,
     ProxyHeader("192.0.2.1", 1, "192.0.2.2", 2, 28 + len(TLV))),
    ("v2-local-no-address", v2(0, 0x00) + HTTP, ProxyHeader(None, None, None, None, 16)),
    ("v2-local-block-ignored", v2(0, 0x11, v4_block("192.0.2.1", "192.0.2.2", 1, 2)), ProxyHeader(None, None, None, None, 28)),
    ("v2-local-family-ignored", v2(0, 0x11, b""), ProxyHeader(None, None, None, None, 16)),
    ("v2-unspec", v2(1, 0x00, b"xyz"), ProxyHeader(None, None, None, None, 19)),
    ("v2-unix-stream", v2(1, 0x31, b"\x00" * 216), ProxyHeader(None, None, None, None, 232)),
    ("v2-udp4-falls-back", v2(1, 0x12, v4_block("192.0.2.1", "192.0.2.2", 1, 2)), ProxyHeader(None, None, None, None, 28)),
    ("v2-inet-unspec-transport", v2(1, 0x10, v4_block("192.0.2.1", "192.0.2.2", 1, 2)), ProxyHeader(None, None, None, None, 28)),
]


@pytest.mark.parametrize(("data", "expected"), [case[1:] for case in VALID], ids=[case[0] for case in VALID])
def test_valid_headers(data: bytes, expected: ProxyHeader) -> None:
    got = parse(data)
    assert isinstance(got, ProxyHeader)
    assert (got.src, got.src_port, got.dst, got.dst_port, got.consumed) == (
        expected.src, expected.src_port, expected.dst, expected.dst_port, expected.consumed,
    )


INCOMPLETE = [
    ("empty", b""),
    ("v1-P", b"P"),
    ("v1-PROX", b"PROX"),
    ("v1-no-crlf-yet", b"PROXY TCP4 192.0.2.1 198.51.100.2 5"),
    ("v1-cr-at-end", V1_LINE[:-1]),
    ("v2-signature-part", V2_SIGNATURE[:5]),
    ("v2-signature-only", V2_SIGNATURE),
    ("v2-fixed-part", V2_TCP4[:16]),
    ("v2-block-part", V2_TCP4[:27]),
    ("v2-tlv-part", v2(1, 0x11, v4_block("192.0.2.1", "192.0.2.2", 1, 2) + TLV)[:-1]),
]


@pytest.mark.parametrize("data", [case[1] for case in INCOMPLETE], ids=[case[0] for case in INCOMPLETE])
def test_incomplete_needs_more(data: bytes) -> None:
    assert parse(data) is NEED_MORE
    assert isinstance(parse(data), NeedMore)


@pytest.mark.parametrize(("data", "expected"), [case[1:] for case in VALID], ids=[case[0] for case in VALID])
def test_every_prefix_needs_more_then_completes(data: bytes, expected: ProxyHeader) -> None:
    for cut in range(expected.consumed):
        assert parse(data[:cut]) is NEED_MORE, cut
    assert isinstance(parse(data[: expected.consumed]), ProxyHeader)


INVALID = [
    ("plain-http", HTTP, "no PROXY protocol header"),
    ("tls-client-hello", b"\x16\x03\x01\x02\x00\x01", "no PROXY protocol header"),
    ("lower-case-proxy", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"),
    ("v1-typo", b"PROXX TCP4", "no PROXY protocol header"),
    ("v1-no-space", b"PROXYTCP4", "no PROXY protocol header"),
    ("v1-too-long", b"PROXY UNKNOWN " + b"a" * 120, "too long"),
    ("v1-crlf-after-107", b"PROXY UNKNOWN " + b"a" * 92 + b"\r\n", "too long"),
    ("v1-bare-lf", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare CR or LF"),
    ("v1-bare-cr", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "bare CR or LF"),
    ("v1-lf-inside", b"PROXY TCP4 1.2.3.4\n 5.6.7.8 1 2\r\n", "bare CR or LF"),
    ("v1-tcp5", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
    ("v1-empty-proto", b"PROXY \r\n", "unknown protocol"),
    ("v1-missing-port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "number of fields"),
    ("v1-extra-field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "number of fields"),
    ("v1-double-space", b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "number of fields"),
    ("v1-tcp4-with-v6", b"PROXY TCP4 ::1 ::1 1 2\r\n", "bad TCP4 address"),
    ("v1-tcp6-with-v4", b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "bad TCP6 address"),
    ("v1-leading-zero-ip", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad TCP4 address"),
    ("v1-garbage-ip", b"PROXY TCP4 a.b.c.d 5.6.7.8 1 2\r\n", "bad TCP4 address"),
    ("v1-unicode-digits", "PROXY TCP4 ١.٢.٣.٤ 5.6.7.8 1 2\r\n".encode(), "bad TCP4 address"),
    ("v1-zone-id", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad TCP6 address"),
    ("v1-port-too-big", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad port"),
    ("v1-port-leading-zero", b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "bad port"),
    ("v1-port-sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", "bad port"),
    ("v1-port-empty", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", "bad port"),
    ("v2-bad-signature", b"\r\n\r\n\x00\r\nQUIT\r" + b"\x21\x11\x00\x0c", "bad v2 signature"),
    ("v2-bad-signature-early", b"\r\n\r\nX", "bad v2 signature"),
    ("v2-bad-version-1", v2(1, 0x11, v4_block("1.2.3.4", "5.6.7.8", 1, 2), version=1), "bad version"),
    ("v2-bad-version-3", v2(1, 0x11, v4_block("1.2.3.4", "5.6.7.8", 1, 2), version=3), "bad version"),
    ("v2-bad-command", v2(2, 0x11, v4_block("1.2.3.4", "5.6.7.8", 1, 2)), "bad command"),
    ("v2-bad-family", v2(1, 0x41, b""), "bad address family"),
    ("v2-bad-transport", v2(1, 0x13, b""), "bad address family"),
    ("v2-inet-block-short", v2(1, 0x11, b"\x01\x02\x03\x04"), "truncated"),
    ("v2-inet6-block-short", v2(1, 0x21, v4_block("1.2.3.4", "5.6.7.8", 1, 2)), "truncated"),
    ("v2-length-too-big", v2(1, 0x11, b"", length=65535), "too long"),
]


@pytest.mark.parametrize(("data", "reason"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_headers(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyProtocolError, match=reason):
        parse(data)


def test_accepts_bytearray_and_memoryview() -> None:
    assert parse(bytearray(V1_LINE)).src == "192.0.2.1"  # type: ignore[union-attr]
    assert parse(memoryview(V2_TCP4)).src == "192.0.2.1"  # type: ignore[union-attr]


def test_error_is_a_value_error_with_short_reason() -> None:
    with pytest.raises(ValueError) as info:
        parse(b"GET / HTTP/1.1\r\n")
    assert len(str(info.value)) < 60


# (seconds since the first refusal, peer) -> the log line it gives, if any.
REFUSALS = [
    (0.0, "198.51.100.7", "from 198.51.100.0/24, which is not in proxy_protocol_from"),
    (1.0, "198.51.100.8", None),
    (59.0, "2001:db8:1:2::9", None),
    (60.0, "2001:db8:1:2::9", "from 2001:db8:1::/48, which is not in proxy_protocol_from (2 more since the last such line)"),
    (61.0, None, None),
    (200.0, None, "from -, which is not in proxy_protocol_from (1 more since the last such line)"),
    (260.0, "192.0.2.1", "from 192.0.2.0/24, which is not in proxy_protocol_from"),
]


def test_refused_peers_are_logged_anonymised_at_most_once_a_minute(caplog) -> None:
    now = [0.0]
    refusals = RefusedPeers("0.0.0.0:8443", interval=60.0, clock=lambda: now[0])
    for at, peer, line in REFUSALS:
        now[0] = at
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edge.geo.proxy_protocol"):
            refusals.refused(peer)
        said = [r.getMessage() for r in caplog.records]
        if line is None:
            assert said == [], (at, said)
        else:
            assert len(said) == 1 and said[0].startswith("PROXY protocol listener 0.0.0.0:8443: closed a connection")
            assert said[0].endswith(line), (at, said)
