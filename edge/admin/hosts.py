"""Which ``Host`` the admin API answers to.

A browser tricked by DNS rebinding (a name of the attacker's that now
resolves to 127.0.0.1) sends the admin listener requests whose ``Host`` is
that name. The API answers only to loopback names and addresses, the
address the connection came in on, and the names in ``admin.hosts``; the
port is not compared, since the name is what a rebinding attack controls.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def host_name(value: str) -> str | None:
    """The name or address of a ``Host`` value (RFC 9110 §7.2: uri-host [":" port]),
    lower case, IPv6 without brackets; None when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        name, close, rest = value[1:].partition("]")
        if not close or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        ip = _ip(name)
        return str(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    name, colon, port = value.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return None
    name = name.rstrip(".")
    ip = _ip(name)
    if ip is not None:
        return str(ip)
    return name if _NAME_RE.fullmatch(name) else None


def allowed_names(configured: Iterable[str], listen_host: str) -> frozenset[str]:
    """``admin.hosts``, and the listen address's host when it is a name or a specific address."""
    names = {host_name(n) or n for n in configured}
    own = host_name(f"[{listen_host}]" if ":" in listen_host else listen_host)
    if own is not None and own not in ("0.0.0.0", "::"):
        names.add(own)
    return frozenset(names)


def host_allowed(hosts: list[str], allowed: frozenset[str], local_address: str | None) -> bool:
    """``hosts``: every Host field of the request. None at all (HTTP/1.0) is
    fine: there is no name a browser could have resolved."""
    if not hosts:
        return True
    if len(hosts) > 1:
        return False
    name = host_name(hosts[0])
    if name is None:
        return False
    if name in allowed or name == "localhost":
        return True
    ip = _ip(name)
    if ip is None:
        return False
    return ip.is_loopback or (local_address is not None and ip == _ip(local_address))
