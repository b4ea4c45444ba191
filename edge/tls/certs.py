"""Checking a certificate upload: a PEM chain (leaf first) and its private key.

Pure: the clock is a parameter and nothing is read from or written to disk.
A refused upload raises :class:`CertificateError` naming the JSON field
(``certificate``, ``private_key`` or ``passphrase``) and a sentence an
operator can act on; the admin API answers it as 422.

Names follow RFC 6125 / RFC 9525: only DNS names in subjectAltName count
(clients ignore the subject's CN), and a wildcard covers exactly one label.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

# A chain is a leaf, one or two intermediates, and rarely more; a key is a few
# KiB at most. The bounds keep a hostile upload from costing parse time.
MAX_PEM_BYTES = 64 * 1024
MAX_CHAIN_LENGTH = 8
MIN_RSA_BITS = 2048
CURVES = {"secp256r1": "p256", "secp384r1": "p384"}

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
NAME_RULE = "1 to 64 characters: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"
_BEGIN_CERT = b"-----BEGIN CERTIFICATE-----"
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class CertificateError(ValueError):
    """An upload refused: ``field`` is the JSON field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What the API shows of a certificate; never any key material."""

    hosts: tuple[str, ...]  # subjectAltName DNS names, lower-case, as listed
    not_before: dt.datetime  # UTC
    not_after: dt.datetime  # UTC
    fingerprint_sha256: str  # of the leaf's DER, lower-case hex
    key_type: str  # "rsa-2048", "rsa-4096", "ecdsa-p256", "ecdsa-p384"

    def as_json(self, name: str) -> dict[str, object]:
        return {
            "name": name,
            "hosts": list(self.hosts),
            "not_before": _rfc3339(self.not_before),
            "not_after": _rfc3339(self.not_after),
            "fingerprint_sha256": self.fingerprint_sha256,
            "key_type": self.key_type,
        }


@dataclass(frozen=True, slots=True)
class CheckedCertificate:
    """An upload that passed every check, normalised for storage: the chain
    re-encoded leaf first, the key unencrypted PKCS#8."""

    info: CertificateInfo
    chain_pem: bytes
    key_pem: bytes


def valid_name(name: str) -> bool:
    """A certificate's name in the API path (and its file name on disk)."""
    return NAME_PATTERN.fullmatch(name) is not None and ".." not in name


def check_upload(certificate: object, private_key: object, now: dt.datetime, *,
                 passphrase: object = None) -> CheckedCertificate:
    """Every check of an upload, in the order an operator would fix them."""
    chain = _chain(_pem_text("certificate", certificate))
    key_text = _pem_text("private_key", private_key)
    if passphrase is not None and (not isinstance(passphrase, str) or not passphrase):
        raise CertificateError("passphrase", "expected a non-empty string")
    key = _key(key_text, passphrase.encode() if isinstance(passphrase, str) else None)
    leaf = chain[0]
    key_type = _key_type(key)
    try:
        leaf_key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError("certificate", "the leaf's public key cannot be read") from None
    if _spki(key.public_key()) != _spki(leaf_key):
        raise CertificateError("private_key", "does not match the first certificate of the chain (the leaf)")
    _in_order(chain)
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now < not_before:
        raise CertificateError("certificate", f"the leaf is not valid before {_rfc3339(not_before)}")
    if now >= not_after:
        raise CertificateError("certificate", f"the leaf expired at {_rfc3339(not_after)}")
    hosts = leaf_hosts(leaf)
    info = CertificateInfo(hosts, not_before, not_after,
                           leaf.fingerprint(hashes.SHA256()).hex(), key_type)
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return CheckedCertificate(info, chain_pem, key_pem)


def describe(chain_pem: bytes, key_pem: bytes) -> CertificateInfo:
    """The metadata of a stored certificate (already checked once)."""
    chain = _chain(chain_pem.decode("ascii"))
    key = _key(key_pem.decode("ascii"), None)
    leaf = chain[0]
    return CertificateInfo(leaf_hosts(leaf), leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                           leaf.fingerprint(hashes.SHA256()).hex(), _key_type(key))


def leaf_hosts(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        raise CertificateError("certificate", "the leaf has no subjectAltName; clients accept only names listed there") from None
    except ValueError as exc:
        raise CertificateError("certificate", f"the leaf's extensions cannot be read ({exc})") from None
    hosts: list[str] = []
    for name in san.get_values_for_type(x509.DNSName):
        host = name.lower().rstrip(".")
        if not _dns_name(host):
            raise CertificateError("certificate", f"the leaf names {name!r}, which is not a DNS host name")
        if host not in hosts:
            hosts.append(host)
    if not hosts:
        raise CertificateError("certificate", "the leaf's subjectAltName lists no DNS name")
    return tuple(hosts)


def covers(name: str, host: str) -> bool:
    """Whether certificate name ``name`` is valid for ``host`` (RFC 6125 6.4.3:
    a wildcard stands for exactly one whole left-most label)."""
    if name.startswith("*."):
        dot = host.find(".")
        return dot > 0 and host[dot + 1:] == name[2:]
    return name == host


def specificity(name: str) -> tuple[int, int]:
    """Sort key: an exact name before a wildcard, then longer before shorter."""
    return (0 if name.startswith("*.") else 1, len(name))


def _dns_name(host: str) -> bool:
    labels = host.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:  # "*.de" would cover a whole top-level domain
            return False
    return 0 < len(host) <= 253 and bool(labels) and all(_DNS_LABEL.fullmatch(label) for label in labels)


def _pem_text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CertificateError(field, "expected a PEM text")
    if len(value) > MAX_PEM_BYTES:
        raise CertificateError(field, f"larger than {MAX_PEM_BYTES // 1024} KiB")
    if not value.isascii():
        raise CertificateError(field, "PEM text is ASCII; found other characters")
    return value


def _chain(text: str) -> list[x509.Certificate]:
    data = text.encode("ascii")
    count = data.count(_BEGIN_CERT)
    if count == 0:
        raise CertificateError("certificate", "no '-----BEGIN CERTIFICATE-----' block found")
    if count > MAX_CHAIN_LENGTH:
        raise CertificateError("certificate", f"more than {MAX_CHAIN_LENGTH} certificates in the chain")
    if b"PRIVATE KEY-----" in data:
        raise CertificateError("certificate", "holds a private key; send it in private_key only")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CertificateError("certificate", f"not a valid PEM certificate chain ({_short(exc)})") from None
    if len(chain) != count:
        raise CertificateError("certificate", "a certificate block of the chain cannot be read")
    return chain


def _key(text: str, passphrase: bytes | None):
    if text.count("PRIVATE KEY-----") != 2:
        raise CertificateError("private_key", "expected exactly one '-----BEGIN ... PRIVATE KEY-----' block")
    try:
        return serialization.load_pem_private_key(text.encode("ascii"), password=passphrase)
    except TypeError:
        if passphrase is None:
            raise CertificateError("private_key", "the key is encrypted; give its passphrase in \"passphrase\"") from None
        raise CertificateError("passphrase", "given, but the key is not encrypted") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        if passphrase is not None and "ENCRYPTED" in text:
            # OpenSSL tells a wrong passphrase from a damaged key in some formats only.
            raise CertificateError("passphrase", "wrong passphrase (or a key cipher that cannot be read)") from None
        raise CertificateError("private_key", f"not a valid PEM private key ({_short(exc)})") from None


def _key_type(key) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError("private_key", f"an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = CURVES.get(key.curve.name)
        if curve is None:
            raise CertificateError("private_key", f"an ECDSA key on {key.curve.name}; only P-256 and P-384 are accepted")
        return f"ecdsa-{curve}"
    raise CertificateError("private_key", "only RSA (2048 bits or more) and ECDSA P-256/P-384 keys are accepted")


def _in_order(chain: list[x509.Certificate]) -> None:
    for position, (child, parent) in enumerate(zip(chain, chain[1:]), start=1):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise CertificateError(
                "certificate", f"the chain is not in order: certificate {position + 1} did not issue "
                f"certificate {position} (leaf first, then each issuer)") from None


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
