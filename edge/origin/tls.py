"""TLS towards origins: the trust a policy may name, the node's client
certificate, the SSL contexts built from them, and why a handshake failed.

An https origin is verified against the system trust store unless its
policy names a ``ca`` bundle (trusted instead) or turns ``verify`` off. A
context is built once per combination of bundle, verification and client
certificate and shared by every pool that uses it: building one parses
certificates and reads the key, which no request should pay for.
"""
from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterable
from pathlib import Path

# A tenant's trust bundle lives in its policy, which the admin API stores and
# every worker parses: a few CA certificates, never a whole system store.
MAX_CA_BUNDLE = 64 * 1024

CA_BUNDLE = (f"a PEM bundle of CA certificates (-----BEGIN CERTIFICATE----- blocks), at most {MAX_CA_BUNDLE} "
             "bytes")

_PEM_BEGIN_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")


class _Encrypted(Exception):
    """The key asked for a password: the node has no one to ask."""


def _no_password() -> bytes:
    raise _Encrypted()


def ca_bundle_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a trust bundle (the "found" part of an
    error, never quoting it: a key pasted in by mistake must not reach a
    log), or None."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CA_BUNDLE:
        return f"{size} bytes"
    kinds = _PEM_BEGIN_RE.findall(text)
    if not kinds:
        return "no certificate" if text.strip() else "an empty string"
    others = sorted({k for k in kinds if k != "CERTIFICATE"})
    if others:
        return f'a "{others[0]}" block (a CA bundle holds certificates only)'
    if not text.isascii():
        return "characters other than ASCII (PEM is ASCII)"
    try:
        ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        return f"a certificate that cannot be read ({_ssl_text(exc)})"
    return None


MAX_PEM_FILE = 1 << 20  # a certificate chain and a key are a few KiB


def client_certificate_problem(certificate: Path, key: Path) -> tuple[str, str, str] | None:
    """(the setting at fault, what was expected, what was found) for the
    node's client certificate and key, or None when a TLS client can
    present them. Nothing of the files' content is quoted."""
    for name, path in (("client_certificate", certificate), ("client_key", key)):
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_PEM_FILE + 1)
        except OSError as exc:
            return name, "a readable file", f"{_shown(path)} ({(exc.strerror or type(exc).__name__).lower()})"
        if len(data) > MAX_PEM_FILE:
            return name, f"a PEM file of at most {MAX_PEM_FILE} bytes", f"{_shown(path)}, larger"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=certificate)
    except ssl.SSLError as exc:
        return "client_certificate", "a PEM certificate chain", f"{_shown(certificate)} ({_ssl_text(exc)})"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(certificate, key, password=_no_password)
    except _Encrypted:
        return ("client_key", "an unencrypted PEM private key (the node cannot ask for a password)",
                f"{_shown(key)}, an encrypted key")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return ("client_key", "the private key of origin_tls.client_certificate",
                    f"{_shown(key)}, the key of another certificate")
        return "client_key", "a PEM private key", f"{_shown(key)} ({_ssl_text(exc)})"
    return None


def _shown(path: Path) -> str:
    return json.dumps(str(path), ensure_ascii=False)  # whole: an operator must find the file


def _ssl_text(exc: BaseException) -> str:
    """An SSL error without OpenSSL's source location."""
    text = str(exc.args[1] if isinstance(exc, ssl.SSLError) and len(exc.args) > 1 else exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)


class TLSSetupError(Exception):
    """An origin's context cannot be built: its request fails like a refused connection."""


class OriginContexts:
    """The SSL contexts of a node's https origins, one per (ca, verify,
    client certificate) and shared."""

    def __init__(self, client_certificate: Path | None = None, client_key: Path | None = None) -> None:
        self._client = (client_certificate, client_key) if client_certificate and client_key else None
        self._contexts: dict[tuple[str | None, bool, bool], ssl.SSLContext] = {}

    @staticmethod
    def key(origin) -> tuple[str | None, bool, bool]:
        return (origin.ca, origin.verify, origin.client_certificate)

    def context(self, origin) -> ssl.SSLContext:
        """TLSSetupError when the client certificate is missing or unreadable."""
        key = self.key(origin)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = self._build(*key)
        return context

    def _build(self, ca: str | None, verify: bool, client: bool) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=ca) if ca is not None else ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client:
            if self._client is None:
                raise TLSSetupError("the policy asks for a client certificate and the node has none ([origin_tls])")
            try:
                context.load_cert_chain(*self._client, password=_no_password)
            except (OSError, ssl.SSLError, _Encrypted) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise TLSSetupError(f"the node's client certificate cannot be loaded ({why})") from None
        return context

    def retain(self, origins: Iterable) -> None:
        """Forget the contexts no origin in ``origins`` uses any more."""
        wanted = {self.key(o) for o in origins if o.scheme == "https"}
        for key in [k for k in self._contexts if k not in wanted]:
            del self._contexts[key]


def failure_reason(exc: BaseException) -> str | None:
    """Why TLS with an origin failed, for the log: "certificate verify
    failed: Hostname mismatch, ..."; None when ``exc`` is no TLS failure."""
    # aiohttp's ClientConnectorCertificateError, known by its attribute: this
    # module is imported when policies are read, which must not load aiohttp.
    error = getattr(exc, "certificate_error", None)
    if error is not None:
        message = getattr(error, "verify_message", None) or _ssl_text(error)
        return f"certificate verify failed: {message}"
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLError):
            return f"TLS failed: {_ssl_text(exc)}"
        exc = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__
    return None


__all__ = ["CA_BUNDLE", "MAX_CA_BUNDLE", "OriginContexts", "TLSSetupError",
           "ca_bundle_problem", "client_certificate_problem", "failure_reason"]
