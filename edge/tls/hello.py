"""The TLS versions a ClientHello offers (RFC 8446 §4.1.2, §4.2.1).

The standard library tells a server the negotiated version only once the
handshake is done, and offers no hook on the ClientHello. The listener
keeps the bytes a client sent first and reads its offer here, so that a
tenant's ``tls.min_version`` refuses an older client in the handshake,
with the alert ``protocol_version``, instead of closing its connection
after it.

Pure: bytes in, versions out. None when the bytes are not one whole,
well-formed ClientHello (records may split it; anything else is for
OpenSSL to judge).
"""
from __future__ import annotations

RECORD_HANDSHAKE = 22
CLIENT_HELLO = 1
SUPPORTED_VERSIONS = 43  # extension type
TLS12, TLS13 = 0x0303, 0x0304
PROTOCOLS = {"1.2": TLS12, "1.3": TLS13}  # a policy's min_version -> its protocol version
SERVED = (TLS12, TLS13)  # what the node's listeners negotiate (edge.tls.context)
NAMES = {0x0301: "TLSv1", 0x0302: "TLSv1.1", TLS12: "TLSv1.2", TLS13: "TLSv1.3"}


# Real clients send a ClientHello in one to a few records; one split in
# hundreds is made to cost the parser, and gets the check after the handshake.
MAX_RECORDS = 64


class _Malformed(Exception):
    pass


class _Reader:
    __slots__ = ("data", "at")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        end = self.at + size
        if end > len(self.data):
            raise _Malformed
        chunk, self.at = self.data[self.at:end], end
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> bytes:
        return self.take(self.number(length_size))

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def client_hello(data: bytes) -> bytes | None:
    """The ClientHello message (with its 4-byte header) at the start of
    ``data``, joined from as many handshake records as it spans; None
    until it is complete, when ``data`` starts with something else, or
    when it is split over more than MAX_RECORDS records."""
    message = bytearray()  # joined in place: a hello in 1-byte records costs no copies
    records = _Reader(data)
    try:
        for _ in range(MAX_RECORDS):
            kind = records.number(1)
            records.take(2)  # legacy_record_version
            payload = records.vector(2)
            if kind != RECORD_HANDSHAKE:
                return None
            message += payload
            if len(message) >= 4:
                if message[0] != CLIENT_HELLO:
                    return None
                size = 4 + int.from_bytes(message[1:4], "big")
                if len(message) >= size:
                    return bytes(message[:size])
    except _Malformed:
        return None
    return None


def offered_versions(data: bytes) -> frozenset[int] | None:
    """The protocol versions the ClientHello at the start of ``data``
    offers: its supported_versions extension, or without one its
    legacy_version alone (a client of TLS 1.2 or older)."""
    message = client_hello(data)
    if message is None:
        return None
    hello = _Reader(message[4:])
    try:
        legacy = hello.number(2)
        hello.take(32)  # random
        hello.vector(1)  # legacy_session_id
        hello.vector(2)  # cipher_suites
        hello.vector(1)  # legacy_compression_methods
        if not hello.left:
            return frozenset({legacy})
        extensions = _Reader(hello.vector(2))
        if hello.left:
            return None
        while extensions.left:
            kind, body = extensions.number(2), extensions.vector(2)
            if kind == SUPPORTED_VERSIONS:
                versions = _Reader(body)
                listed = versions.vector(1)
                if versions.left or not listed or len(listed) % 2:
                    return None
                return frozenset(int.from_bytes(listed[i:i + 2], "big") for i in range(0, len(listed), 2))
    except _Malformed:
        return None
    return frozenset({legacy})


def too_old(offered: frozenset[int] | None, minimum: str) -> str | None:
    """The newest version the client offers (``"TLSv1.2"``) when it offers
    none the node serves at ``minimum`` ("1.2", "1.3") or later; None when it
    does, or when its offer is unknown."""
    if offered is None:
        return None
    floor = PROTOCOLS[minimum]
    if any(version in offered for version in SERVED if version >= floor):
        return None
    known = [version for version in offered if version in NAMES]  # GREASE values (RFC 8701) are no versions
    return NAMES[max(known)] if known else "no known version"
