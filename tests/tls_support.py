"""Certificates for the TLS tests, made here with ``cryptography`` so that a
test can ask for exactly the defect it checks (a short RSA key, no
subjectAltName, an expired leaf ...). Real TLS handshakes use these files
and ``trustme`` CAs alike."""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import shutil
import ssl
from dataclasses import dataclass

import pytest
import trustme

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


# --- real handshakes: trustme certificates in a node's store, TLS clients ------------------


def store_leaf(root, tenant: str, name: str, leaf) -> object:
    """Put a trustme ``LeafCert`` into the certificate store at ``root``, as
    an upload through the API would (checked, then stored)."""
    from edge.tls.certs import check_upload
    from edge.tls.store import CertificateStore

    chain_pem = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
    checked = check_upload(chain_pem, leaf.private_key_pem.bytes().decode(), dt.datetime.now(dt.timezone.utc))
    return CertificateStore(root).put(tenant, name, checked)


def client_context(ca=None, *, minimum=None, maximum=None, ciphers: str | None = None):
    """A client's context: verifying against trustme ``ca``, or (None) taking any certificate."""
    context = ssl.create_default_context()
    if ca is not None:
        ca.configure_trust(context)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def client_hello(server_name: str | None = "shop.test", context: ssl.SSLContext | None = None) -> bytes:
    """The first flight of a real client (its ClientHello)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = (context or client_context()).wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def fingerprint(der: bytes) -> str:
    """As the store's ``fingerprint_sha256``: of a certificate's DER."""
    return hashlib.sha256(der).hexdigest()


# --- an edge with HTTPS listeners (fixtures for the TLS tests) --------------------------------

SHOP = ["shop.test", "*.shop.test"]
BLOG = ["blog.test"]
HANDSHAKE_TIMEOUT = 2.0  # seconds; the tests wait for bounds several times this


@pytest.fixture
def ca():
    return trustme.CA()


class Https:
    """A node with a plain and an HTTPS listener, tenants shop and blog."""

    def __init__(self, edge, tmp_path, ca) -> None:
        self.edge = edge
        self.node = edge.node
        self.port = edge.node.tls_addresses[0][1]
        self.plain = edge.port
        self.root = tmp_path / "certificates"
        self.ca = ca

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def get(self, session, host: str, path: str = "/", *, sni: str | None = None, context=None, **kw):
        """GET over HTTPS with ``sni`` (default: ``host``) as the server name."""
        context = context or client_context(self.ca)
        async with session.get(self.url(path), ssl=context, server_hostname=sni or host,
                               headers={"Host": host, **kw.pop("headers", {})}, **kw) as resp:
            return resp.status, resp.headers, await resp.read()


@pytest.fixture
async def https(make_edge, origin, tmp_path, ca):
    from edge.config_tls import ListenAddress, TlsConfig

    """``await https(certificates={(tenant, name): [hosts]}, policies={tenant: extra}, ...)``"""

    async def start(*, certificates=None, policies=None, listen=None, default=None, **changes) -> Https:
        for (tenant, name), names in (certificates or {("shop", "shop"): SHOP, ("blog", "blog"): BLOG}).items():
            store_leaf(tmp_path / "certificates", tenant, name, ca.issue_cert(*names))
        tenants = {"shop": {"hosts": SHOP}, "blog": {"hosts": BLOG}}
        for tenant, extra in (policies or {}).items():
            tenants.setdefault(tenant, {}).update(extra)
        for data in tenants.values():
            data.setdefault("origins", [{"url": origin.url}])
        edge = await make_edge(
            policies=tenants,
            listen=listen or (ListenAddress("127.0.0.1", 0), ListenAddress("127.0.0.1", 0, tls=True)),
            tls=TlsConfig(tmp_path / "certificates", default, HANDSHAKE_TIMEOUT),
            **changes,
        )
        return Https(edge, tmp_path, ca)

    return start


@dataclasses.dataclass
class Handshake:
    certificate: bytes  # DER
    version: str
    alpn: str | None


async def handshake(port: int, server_name: str | None, context=None) -> Handshake:
    """A handshake alone (no request); ``server_name`` None sends no SNI."""
    context = context or client_context()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_name or ""), 10)
    try:
        tls = writer.get_extra_info("ssl_object")
        return Handshake(tls.getpeercert(binary_form=True), tls.version(), tls.selected_alpn_protocol())
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 10)
        except (OSError, TimeoutError):
            pass


async def openssl(*args: str) -> str:
    """``openssl s_client -brief`` with ``args``; its whole output."""
    if shutil.which("openssl") is None:
        # The README's test command installs it (Debian's openssl) when missing.
        pytest.fail("the openssl command is not installed: run the README's test command, or apt-get install openssl")
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-brief", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return out.decode(errors="replace")


async def closed(reader: asyncio.StreamReader, timeout: float = 10.0) -> bool:
    """Whether the server closes the connection (FIN or reset) before
    ``timeout`` (a bound on the wait, not a measure), whatever it sends first."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True

