"""Host names, IP literals and absolute http(s) URLs: the one grammar that
policies (hosts, origins, redirect targets) and security-event webhooks use.

Pure: no DNS, no I/O. What each caller allows beyond the grammar (a path,
a query, which characters) stays with the caller.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A last label in decimal or hex: the resolver's inet_aton would read the
# name as an IPv4 address (2130706433, 0x7f000001, 127.0.0.0x1, 0177.0.0.1,
# 127.1 all mean 127.0.0.1), which no check of the text would notice.
_NUMERIC_LABEL_RE = re.compile(r"[0-9]+|0x[0-9a-f]*")


def hostname(name: str) -> str | None:
    """A DNS name -> lower-case IDNA ASCII without the final dot; None if invalid
    or if it is a number spelt like a name."""
    if name.endswith("."):  # fully qualified, as in zone files
        name = name[:-1]
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    name = name.lower()
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        return None
    return None if _NUMERIC_LABEL_RE.fullmatch(labels[-1]) else name


def ip_literal(text: str) -> str | None:
    """IP literal -> canonical text; IPv6 in brackets, as it appears in a Host header.
    Only the dotted quad is an IPv4 literal (no leading zeros, no short forms)."""
    bracketed = text.startswith("[") and text.endswith("]")
    inner = text[1:-1] if bracketed else text
    if "%" in inner:  # zone ids mean nothing beyond this machine
        return None
    try:
        ip = ipaddress.ip_address(inner)
    except ValueError:
        return None
    if ip.version == 6:
        return f"[{ip.compressed}]"
    return None if bracketed else str(ip)


def normalize_host(text: str) -> str | None:
    """A policy host entry -> its canonical form (lower-case, IDNA ASCII), or None if invalid."""
    if text == "*":
        return "*"
    if text.startswith("*."):
        suffix = hostname(text[2:])
        return None if suffix is None else f"*.{suffix}"
    return ip_literal(text) or hostname(text)


@dataclass(frozen=True, slots=True)
class HttpUrl:
    scheme: str  # "http" or "https"
    host: str  # canonical: a name, a dotted quad, or IPv6 in brackets
    port: int | None  # as written; None when absent
    rest: str  # everything after the authority (path, query, fragment), as written

    @property
    def address(self) -> str:
        """What to connect to: the host, IPv6 without brackets."""
        return self.host.strip("[]")

    @property
    def effective_port(self) -> int:
        return self.port or (443 if self.scheme == "https" else 80)

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``, the default port left out."""
        default = 443 if self.scheme == "https" else 80
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port not in (None, default) else "")


def split_url(text: str, schemes: tuple[str, ...] = ("http", "https")) -> HttpUrl | None:
    """An absolute URL with one of ``schemes``, a valid host, no user info and
    no port 0 -> its parts; None otherwise. Callers check characters first."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    # User info would put credentials into every log line that names the URL.
    if scheme not in schemes or "@" in parts.netloc or not parts.hostname or port == 0:
        return None
    raw = parts.hostname
    host = ip_literal(f"[{raw}]") if ":" in raw else ip_literal(raw) or hostname(raw)
    if host is None:
        return None
    return HttpUrl(scheme, host, port, text[len(parts.scheme) + 3 + len(parts.netloc):])


__all__ = ["HttpUrl", "hostname", "ip_literal", "normalize_host", "split_url"]
