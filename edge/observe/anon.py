"""Client addresses are personal data: logs and metrics only see prefixes."""
from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=8192)
def anonymise(address: str | None) -> str:
    """IPv4 to its /24, IPv6 to its /48 (IPv4-mapped IPv6 as IPv4)."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "invalid"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.ip_network(f"{ip}/24", strict=False))
    return str(ipaddress.ip_network(f"{ip}/48", strict=False))
