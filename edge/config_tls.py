"""Node configuration of listeners and TLS: ``[[listen]]``, ``[tls]``
(HTTPS listeners), ``[certificates]`` (those uploaded through the admin
API), ``[acme]`` and ``[origin_tls]`` (the node's certificate towards
origins).

Read by :func:`edge.config.load_config` with the file's one Reader, so
their problems are reported together with the rest of the file's.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.http.urls import check_url, strict_hostname
from edge.origin.tls import client_certificate_problem
from edge.schema.check import describe
from edge.schema.reader import IPNetwork, Reader
from edge.schema.reader import boolean as _bool
from edge.schema.reader import integer as _integer
from edge.schema.reader import number as _number

# The keys of each table read here.
SECTIONS: dict[str, tuple[str, ...]] = {
    "listen": ("address", "proxy_protocol", "proxy_protocol_from", "tls"),
    "certificates": ("expiry_check_interval", "max_per_tenant"),
    "origin_tls": ("client_certificate", "client_key"),
    "acme": ("directory_url", "email", "account_key", "ca_bundle", "renew_before", "retry_min", "retry_max",
             "order_timeout", "request_timeout"),
    "tls": ("certificate_dir", "default_certificate", "handshake_timeout"),
}

@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # an IP literal (IPv6 without brackets) or a host name
    port: int  # 0: the OS picks one (tests); only with workers = 1
    # Connections start with a PROXY protocol v1/v2 header (an L4 load
    # balancer in front); a connection without a valid one is closed.
    proxy_protocol: bool = False
    # The peers allowed to send that header (the header names any address
    # its sender likes); connections from elsewhere are closed unread.
    proxy_protocol_from: tuple[IPNetwork, ...] = ()
    tls: bool = False  # HTTPS: TLS with the tenants' certificates (after the PROXY header, if any)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """HTTPS listeners (``[[listen]] tls = true``): where the tenants'
    certificates are, and the bounds of a handshake."""

    # Absolute; None: ``certificates`` beside the policy directory
    # (edge.tls.store.default_root), set by the command line before the start.
    certificate_dir: Path | None = None
    # A PEM file with a chain and its key, for handshakes without a server
    # name or with one no tenant has a certificate for; None: those fail
    # with the alert unrecognized_name.
    default_certificate: Path | None = None
    # Seconds from the accept (after a PROXY header, if any) to a complete
    # handshake; then the connection is closed.
    handshake_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class CertificatesConfig:
    """Tenant certificates uploaded through the admin API (edge.tls)."""

    # Seconds between checks for certificates about to expire (edge.tls.expiry);
    # 0: only at start and after each certificate write.
    expiry_check_interval: float = 3600.0
    max_per_tenant: int = 100  # certificates one tenant may store (each up to 64 KiB of chain and key)


@dataclass(frozen=True, slots=True)
class OriginTLSConfig:
    """The certificate the node presents to origins that authenticate it
    (those whose policy says ``"client_certificate": true``). Both or neither."""

    client_certificate: Path | None = None  # absolute; a PEM certificate chain
    client_key: Path | None = None  # absolute; its unencrypted PEM private key

    @property
    def enabled(self) -> bool:
        return self.client_certificate is not None


LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class AcmeConfig:
    """Certificates from an ACME CA (RFC 8555) for tenants whose policy
    asks for them (``tls.acme``): edge.tls.acme. On with an [acme]
    section, which agrees to the CA's terms of service."""

    enabled: bool = False
    directory_url: str = LETS_ENCRYPT
    email: str | None = None  # the account's contact: the CA's expiry and problem notices
    account_key: Path | None = None  # absolute; None: account.key in the ACME state directory
    ca_bundle: Path | None = None  # absolute; None: the system's trust for the CA's HTTPS
    renew_before: float = 30 * DAY  # seconds before expiry (the file says days)
    # Seconds after a first failed order; doubled after each further one. Ten
    # minutes keeps a host that keeps failing within Let's Encrypt's limit of
    # 5 failed validations per host and hour.
    retry_min: float = 600.0
    retry_max: float = DAY  # the longest wait between two tries (the CA's Retry-After may ask for more)
    order_timeout: float = 300.0  # seconds one order may take, challenges and issuance included
    request_timeout: float = 30.0  # seconds one HTTP request to the CA may take


_ADDRESS_EXPECTED = 'an address such as "0.0.0.0:8080" or "[::]:8080" (port 0 to 65535)'
_PROXY_PEERS = 'the networks of the load balancers that send PROXY protocol headers, such as ["10.0.0.0/8"]'


def parse_listen_address(value: object) -> ListenAddress:
    """"host:port" or "[ipv6]:port" -> ListenAddress (IPv6 host without brackets)."""
    if isinstance(value, str):
        if value.startswith("["):
            host, close, port = value[1:].partition("]")
            ok = bool(close) and port.startswith(":") and is_ipv6(host)
            port = port[1:]
        else:
            host, colon, port = value.rpartition(":")
            # A bare IPv6 address ("::1:80") is ambiguous: brackets required.
            ok = bool(colon) and (is_ipv4(host) or strict_hostname(host))
        if ok and port.isascii() and port.isdigit() and int(port) <= 65535:
            return ListenAddress(host, int(port))
    raise ValueError(f"expected {_ADDRESS_EXPECTED}, found {describe(value)}")


def is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def read_certificates(r: Reader, data: dict[str, Any]) -> CertificatesConfig:
    t = r.table(data, "certificates")
    dc = CertificatesConfig()
    return CertificatesConfig(
        r.get(t, "certificates", "expiry_check_interval", dc.expiry_check_interval,
              _number(0, 86400, "a number of seconds (0: only at start and after writes)")),
        r.get(t, "certificates", "max_per_tenant", dc.max_per_tenant, _integer(1, 10_000)),
    )


def read_origin_tls(r: Reader, data: dict[str, Any]) -> OriginTLSConfig:
    """Checked now, files and all: a node that cannot present its
    certificate must not start and fail every authenticated pull."""
    t = r.table(data, "origin_tls")
    cert = r.get(t, "origin_tls", "client_certificate", None, r.path)
    key = r.get(t, "origin_tls", "client_key", None, r.path)
    for name, other in (("client_certificate", "client_key"), ("client_key", "client_certificate")):
        if other in t and name not in t:
            r.error(f"origin_tls.{name}", f"it with origin_tls.{other} (the certificate and its key)", "nothing")
    if cert is None or key is None:
        return OriginTLSConfig()
    problem = client_certificate_problem(cert, key)
    if problem is not None:
        name, expected, found = problem
        r.error(f"origin_tls.{name}", expected, found)
        return OriginTLSConfig()
    return OriginTLSConfig(cert, key)


_EMAIL_RE = re.compile(r"[^@\s\"<>,;:]{1,64}@[a-z0-9.-]{1,253}")


def _https_url(value: object) -> str:
    if check_url(value, ("https",), fragment=False, max_length=2048) is None:
        raise ValueError('expected an https:// URL of an ACME directory, such as '
                         f'"{LETS_ENCRYPT}", found {describe(value)}')
    return value  # type: ignore[return-value]


def _email(value: object) -> str:
    local, _, domain = value.strip().rpartition("@") if isinstance(value, str) else ("", "", "")
    text = f"{local}@{domain.lower()}"
    if not _EMAIL_RE.fullmatch(text) or "." not in domain or not strict_hostname(domain.lower()):
        raise ValueError(f'expected an e-mail address such as "certs@example.de", found {describe(value)}')
    return text


def read_acme(r: Reader, data: dict[str, Any]) -> AcmeConfig:
    if "acme" not in data:
        return AcmeConfig()
    t = r.table(data, "acme")
    d = AcmeConfig()
    ca_bundle = r.get(t, "acme", "ca_bundle", None, r.path)
    if ca_bundle is not None and not ca_bundle.is_file():
        r.error("acme.ca_bundle", "an existing PEM file of CA certificates", f"{describe(str(ca_bundle))} (no such file)")
    account_key = r.get(t, "acme", "account_key", None, r.path)
    if account_key is not None and not account_key.parent.is_dir():
        r.error("acme.account_key", "a file in an existing directory (made there when missing)",
                f"{describe(str(account_key))} (no such directory)")
    retry_min = r.get(t, "acme", "retry_min", d.retry_min, _number(1, DAY))
    retry_max = r.get(t, "acme", "retry_max", d.retry_max, _number(1, 30 * DAY))
    if retry_max < retry_min:
        r.error("acme.retry_max", f"at least acme.retry_min ({retry_min:g} seconds)", f"{retry_max:g}")
    return AcmeConfig(
        enabled=True,
        directory_url=r.get(t, "acme", "directory_url", d.directory_url, _https_url),
        email=r.get(t, "acme", "email", None, _email),
        account_key=account_key,
        ca_bundle=ca_bundle,
        renew_before=r.get(t, "acme", "renew_before", d.renew_before / DAY, _number(0.001, 365, "a number of days"))
        * DAY,
        retry_min=retry_min,
        retry_max=retry_max,
        order_timeout=r.get(t, "acme", "order_timeout", d.order_timeout, _number(10, 3600)),
        request_timeout=r.get(t, "acme", "request_timeout", d.request_timeout, _number(1, 300)),
    )


def read_tls(r: Reader, data: dict[str, Any]) -> TlsConfig:
    t = r.table(data, "tls")
    d = TlsConfig()
    directory = r.get(t, "tls", "certificate_dir", None, r.path)
    if directory is not None and directory.exists() and not directory.is_dir():
        r.error("tls.certificate_dir", "a directory (made when missing)", f"{describe(str(directory))} (a file)")
    default = r.get(t, "tls", "default_certificate", None, r.path)
    if default is not None:
        from edge.tls.context import CertificateFileError, check_certificate_file

        try:
            check_certificate_file(default)
        except CertificateFileError as e:
            r.error("tls.default_certificate", "a PEM file with a certificate chain and its unencrypted private key",
                    f"{describe(str(default))} ({e})")
    timeout = r.get(t, "tls", "handshake_timeout", d.handshake_timeout, _number(0.5, 300))
    return TlsConfig(directory, default, timeout)


def read_listen(r: Reader, data: dict[str, Any], default: tuple[ListenAddress, ...]) -> tuple[ListenAddress, ...]:
    if "listen" not in data:
        return default
    value = data["listen"]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        r.error("listen", "an array of tables ([[listen]])", describe(value))
        return default
    if not value:
        r.error("listen", "at least one [[listen]] address", "none")
        return default
    out: list[ListenAddress] = []
    for i, table in enumerate(value):
        where = f"listen[{i}]"
        r.unknown(table, where, SECTIONS["listen"])
        if "address" not in table:
            r.error(f"{where}.address", _ADDRESS_EXPECTED, "nothing")
            continue
        addr = r.get(table, where, "address", None, parse_listen_address)
        if addr is None:
            continue
        if any((a.host, a.port) == (addr.host, addr.port) for a in out):
            r.error(f"{where}.address", "each address once", f"{describe(table['address'])} again")
            continue
        if r.get(table, where, "proxy_protocol", False, _bool):
            peers = r.networks(table.get("proxy_protocol_from", []), f"{where}.proxy_protocol_from", ())
            if not peers and "proxy_protocol_from" not in table:
                r.error(f"{where}.proxy_protocol_from", _PROXY_PEERS, "nothing")
            elif table["proxy_protocol_from"] == []:
                r.error(f"{where}.proxy_protocol_from", _PROXY_PEERS, "an empty array")
            addr = ListenAddress(addr.host, addr.port, True, peers)
        elif "proxy_protocol_from" in table:
            r.error(f"{where}.proxy_protocol_from", "it only with proxy_protocol = true", "it without")
        if r.get(table, where, "tls", False, _bool):
            addr = ListenAddress(addr.host, addr.port, addr.proxy_protocol, addr.proxy_protocol_from, tls=True)
        out.append(addr)
    return tuple(out) or default

