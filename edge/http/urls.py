"""Host names, IP literals and absolute http(s) URLs: the one grammar that
policies (hosts, origins, redirect targets), security-event webhooks and
the node configuration use.

Pure: no DNS, no I/O. :func:`check_url` is the one check of a URL a policy
names; what a field allows beyond the grammar (a path, a query) is its
argument.
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


_RFC1123_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")


def strict_hostname(name: str) -> bool:
    """A host name as RFC 1123 §2.1 writes it (letters, digits, inner
    hyphens; no underscore, no IDN): the node's own addresses in its
    configuration. Policies' hosts are :func:`hostname`, which takes what
    clients send."""
    return _RFC1123_RE.fullmatch(name) is not None


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


# RFC 3986 characters only: no whitespace, quotes, "<", ">" or backslashes
# that could break a header or be read differently by a browser.
_URI_RE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# The same, and the characters of an internationalised host name.
_IRI_RE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%\u0080-\U0010ffff]+")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def check_url(value: object, schemes: tuple[str, ...] = ("http", "https"), *, path: bool = True,
              query: bool = True, fragment: bool = True, idn: bool = False,
              max_length: int | None = None) -> HttpUrl | None:
    """The one check of a URL a policy names: an absolute URL as
    :func:`split_url` takes it, written in RFC 3986 characters with
    well-formed escapes -> its parts; None otherwise.

    ``path`` False: nothing after the host but an optional "/". ``query``,
    ``fragment`` False: no "?", no "#". ``idn``: non-ASCII characters are
    allowed too, for a host name written in Unicode (the parts give it in
    IDNA); without it a URL fits in a header as it is written.
    """
    if not isinstance(value, str) or (max_length is not None and len(value) > max_length):
        return None
    if idn and not value.isascii():
        chars_ok = _IRI_RE.fullmatch(value) is not None and not any(ch.isspace() for ch in value)
    else:
        chars_ok = _URI_RE.fullmatch(value) is not None
    if not chars_ok or _BAD_ESCAPE_RE.search(value):
        return None
    if (not query and "?" in value) or (not fragment and "#" in value):
        return None
    u = split_url(value, schemes)
    if u is None or (not path and u.rest not in ("", "/")):
        return None
    return u


__all__ = ["HttpUrl", "check_url", "hostname", "ip_literal", "normalize_host", "split_url", "strict_hostname"]
