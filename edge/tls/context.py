"""The TLS settings of every HTTPS listener, in one place.

TLS 1.2 and 1.3 only. For TLS 1.2 the cipher suites of Mozilla's
"intermediate" profile that need no parameters of our own (its DHE suites
need finite-field DH parameters; every client that offers them offers
ECDHE too), client's order, since all of them are strong. TLS 1.3 keeps
OpenSSL's suites, which are that profile's. ALPN offers only ``http/1.1``.

Resumption: TLS 1.3 tickets and TLS 1.2 tickets and session ids. OpenSSL
keeps ticket keys and the session cache in the context the handshake began
with (the listener's), which each worker process makes for itself: a client
resumes only with the worker that issued its ticket. The standard library
offers no way to share ticket keys between processes.
"""
from __future__ import annotations

import ssl
from pathlib import Path

# Mozilla intermediate (v5.7), TLS 1.2, without the DHE suites (see above).
CIPHERS_TLS12 = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
))
ALPN = ("http/1.1",)
VERSIONS = {"1.2": "TLSv1.2", "1.3": "TLSv1.3"}  # a policy's min_version -> ssl.SSLObject.version()
_RANK = {"TLSv1.2": 12, "TLSv1.3": 13}
MAX_CERTIFICATE_FILE = 1 << 20


class CertificateFileError(ValueError):
    """A certificate file that cannot serve: the message says why, in a few words."""


def server_context() -> ssl.SSLContext:
    """A server context with the node's TLS settings and no certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(CIPHERS_TLS12)
    context.set_alpn_protocols(list(ALPN))
    # A client-started renegotiation costs the server a handshake for free.
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    # The profile leaves the choice to the client (all suites are strong; one
    # without AES hardware prefers ChaCha20); the standard library's default is ours.
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def below(version: str | None, minimum: str) -> bool:
    """Whether a negotiated ``version`` ("TLSv1.2") is below a policy's ``minimum`` ("1.3")."""
    return _RANK.get(version or "", 0) < _RANK[VERSIONS[minimum]]


def _no_passphrase() -> bytes:
    # OpenSSL would otherwise ask on the terminal for an encrypted key's passphrase.
    raise CertificateFileError("the private key is encrypted")


def load_certificate(context: ssl.SSLContext, path: Path) -> None:
    """Add the chain and key in ``path`` (PEM, chain leaf first, then the
    key) to ``context``; raises CertificateFileError saying why not."""
    try:
        context.load_cert_chain(path, password=_no_passphrase)
    except CertificateFileError:
        raise
    except (OSError, ValueError) as exc:
        raise CertificateFileError(_why(path, exc)) from None


def check_certificate_file(path: Path) -> None:
    """Whether ``path`` can serve as a certificate: CertificateFileError if not."""
    load_certificate(server_context(), path)


def _why(path: Path, exc: Exception) -> str:
    try:
        if path.stat().st_size > MAX_CERTIFICATE_FILE:
            return f"larger than {MAX_CERTIFICATE_FILE // 1024} KiB"
        text = path.read_bytes()
    except OSError as err:
        return (err.strerror or str(err)).lower()
    if b"-----BEGIN CERTIFICATE-----" not in text:
        return "no PEM certificate in it"
    if b"PRIVATE KEY-----" not in text:
        return "no PEM private key in it"
    if b"ENCRYPTED" in text:
        return "the private key is encrypted"
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return "the private key does not belong to the first certificate"
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return f"OpenSSL cannot read it ({reason})"
