"""Certificates for the TLS tests, made here with ``cryptography`` so that a
test can ask for exactly the defect it checks (a short RSA key, no
subjectAltName, an expired leaf ...). Real TLS handshakes use these files
and ``trustme`` CAs alike."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)
_KEYS: dict[str, object] = {}


def key(kind: str = "ec256"):
    """Keys are cached by kind (RSA generation is slow); ``kind`` with a
    suffix (``ec256-b``) gives another key of the same type."""
    if kind not in _KEYS:
        base = kind.split("-")[0]
        _KEYS[kind] = {
            "ec256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "ec384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "ec521": lambda: ec.generate_private_key(ec.SECP521R1()),
            "rsa1024": lambda: rsa.generate_private_key(65537, 1024),
            "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
            "ed25519": ed25519.Ed25519PrivateKey.generate,
        }[base]()
    return _KEYS[kind]


@dataclass
class Issued:
    cert: x509.Certificate
    key: object

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def key_pem(self, passphrase: bytes | None = None) -> str:
        algorithm = (serialization.BestAvailableEncryption(passphrase) if passphrase
                     else serialization.NoEncryption())
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      algorithm).decode()


def issue(names: list[str] | None, *, issuer: Issued | None = None, key_kind: str = "ec256",
          ca: bool = False, not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
          common_name: str = "edge test") -> Issued:
    """A certificate for ``names`` (subjectAltName DNS names; None: no SAN),
    signed by ``issuer`` or self-signed."""
    private = key(key_kind)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(private.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - dt.timedelta(days=1))
               .not_valid_after(not_after or NOW + dt.timedelta(days=90))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                        critical=False)
    signer = issuer.key if issuer else private
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Issued(builder.sign(signer, algorithm), private)


def chain(*names: str, key_kind: str = "ec256", **kw) -> tuple[str, str, Issued, Issued]:
    """Leaf for ``names`` under an intermediate under a root: (chain PEM leaf
    first, key PEM, leaf, root)."""
    root = issue(None, key_kind="ec256-root", ca=True, common_name="edge test root")
    middle = issue(None, issuer=root, key_kind="ec256-middle", ca=True, common_name="edge test intermediate")
    leaf = issue(list(names), issuer=middle, key_kind=key_kind, **kw)
    return leaf.pem + middle.pem, leaf.key_pem(), leaf, root
