"""The versions a ClientHello offers (edge.tls.hello): real clients' first
flights, the same re-framed or cut, and hand-made ones for the corners."""
from __future__ import annotations

import ssl
import struct

import pytest

from edge.tls.hello import TLS12, TLS13, client_hello, offered_versions, too_old
from tests.tls_support import client_context
from tests.tls_support import client_hello as first_flight

GREASE = 0x0A0A  # RFC 8701


def real(minimum=None, maximum=None) -> bytes:
    return first_flight("shop.test", client_context(minimum=minimum, maximum=maximum))


def records(message: bytes, *sizes: int) -> bytes:
    """``message`` in handshake records of ``sizes`` bytes (the rest in the last)."""
    out, at = b"", 0
    for size in (*sizes, len(message)):
        chunk, at = message[at:at + size], at + size
        if chunk:
            out += struct.pack("!BHH", 22, 0x0301, len(chunk)) + chunk
    return out


def made(legacy: int = TLS12, extensions: bytes | None = b"", *, kind: int = 1, tail: bytes = b"") -> bytes:
    """A ClientHello message from its parts; ``extensions`` None: no extensions block."""
    body = struct.pack("!H", legacy) + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    if extensions is not None:
        body += struct.pack("!H", len(extensions)) + extensions
    body += tail
    return struct.pack("!B", kind) + len(body).to_bytes(3, "big") + body


def extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def supported(*versions: int) -> bytes:
    listed = b"".join(struct.pack("!H", v) for v in versions)
    return extension(43, bytes([len(listed)]) + listed)


@pytest.mark.parametrize(("flight", "expected"), [
    pytest.param(lambda: real(), {TLS12, TLS13}, id="8446-4.2.1-a-1.2-and-1.3-client-lists-both"),
    pytest.param(lambda: real(minimum=ssl.TLSVersion.TLSv1_3), {TLS13}, id="8446-4.2.1-a-1.3-only-client"),
    pytest.param(lambda: real(maximum=ssl.TLSVersion.TLSv1_2), {TLS12},
                 id="8446-4.2.1-no-supported_versions-means-legacy_version"),
    pytest.param(lambda: records(client_hello(real()), 7, 100), {TLS12, TLS13}, id="5.1-split-over-three-records"),
    pytest.param(lambda: records(made(extensions=supported(GREASE, TLS13, TLS12))), {GREASE, TLS13, TLS12},
                 id="8701-grease-listed-as-sent"),
    pytest.param(lambda: records(made(extensions=extension(0, b"\x00") + supported(TLS13))), {TLS13},
                 id="after-another-extension"),
    pytest.param(lambda: records(made(extensions=None)), {TLS12}, id="no-extensions-block-at-all"),
    pytest.param(lambda: records(made(legacy=0x0301, extensions=extension(0, b""))), {0x0301}, id="a-tls-1.0-client"),
    # Not one whole, well-formed ClientHello: unknown.
    pytest.param(lambda: real()[:60], None, id="cut-short"),
    pytest.param(lambda: b"", None, id="nothing"),
    pytest.param(lambda: b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n", None, id="plain-http"),
    pytest.param(lambda: records(made(kind=2, extensions=supported(TLS13))), None, id="not-a-client-hello"),
    pytest.param(lambda: b"\x17\x03\x03\x00\x05hello", None, id="application-data-record"),
    pytest.param(lambda: records(made(extensions=extension(43, b"\x03\x03\x04\x03"))), None,
                 id="versions-of-odd-length"),
    pytest.param(lambda: records(made(extensions=extension(0, b"abc")[:-1] + supported(TLS13))), None,
                 id="an-extension-overruns-the-block"),
    pytest.param(lambda: records(made(extensions=supported(TLS13), tail=b"\x00\x00")), None,
                 id="trailing-bytes-after-extensions"),
    pytest.param(lambda: records(made(extensions=extension(43, b"\x04\x03\x04"))), None, id="versions-list-overrun"),
])
def test_offered_versions(flight, expected):
    assert offered_versions(flight()) == (None if expected is None else frozenset(expected))


def test_only_the_client_hello_is_taken_from_what_follows():
    message = client_hello(real())
    assert client_hello(records(message) + b"\x14\x03\x03\x00\x01\x01") == message


@pytest.mark.parametrize(("offered", "minimum", "expected"), [
    ({TLS12, TLS13}, "1.3", None),
    ({TLS13}, "1.3", None),
    ({TLS12}, "1.3", "TLSv1.2"),
    ({GREASE, TLS12}, "1.3", "TLSv1.2"),  # a GREASE value is above 1.3 by number, and no version
    ({0x0301, 0x0302}, "1.3", "TLSv1.1"),
    ({GREASE}, "1.3", "no known version"),
    ({TLS12}, "1.2", None),
    ({0x0301}, "1.2", "TLSv1"),
    (None, "1.3", None),  # unknown: the check after the handshake decides
])
def test_too_old(offered, minimum, expected):
    assert too_old(None if offered is None else frozenset(offered), minimum) == expected


def test_a_hello_in_a_few_records_is_joined_one_in_hundreds_is_left_to_the_handshake():
    message = client_hello(real())
    assert offered_versions(records(message, *[len(message) // 60] * 59)) == {TLS12, TLS13}
    # In 1-byte records it would cost the parser a copy per byte: not read,
    # so the version check falls back to the one after the handshake.
    assert client_hello(records(message, *[1] * (len(message) - 1))) is None
