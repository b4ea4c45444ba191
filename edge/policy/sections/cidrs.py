"""Lists of IP networks in a policy (``delivery.exempt_cidrs``,
``filters.ip_lists``): their grammar, and :class:`CidrSet`, compiled for
membership checks."""
from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from edge.schema.check import MISSING, Check, join

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CIDR = 'an IP network such as "192.0.2.0/24" or "2001:db8::/32"'


@dataclass(frozen=True, slots=True)
class CidrSet:
    """A set of networks compiled for membership checks that do not scan the list.

    The networks become sorted, merged address ranges, IPv4 and IPv6 apart; a
    check is one binary search (bisect, in C): about 0.4 µs for 10,000
    networks, whatever their prefix lengths. IPv4-mapped IPv6 networks and
    addresses (``::ffff:192.0.2.1``) count as IPv4: that is how IPv4 clients
    look on a dual-stack socket.
    """

    networks: tuple[IPNetwork, ...] = ()  # canonical order (see cidr_list), for the data and equality
    # (range starts, range ends) as integers, sorted, not overlapping.
    _v4: tuple[tuple[int, ...], tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _v6: tuple[tuple[int, ...], tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for net in self.networks:
            first = int(net.network_address)
            last = first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)
            if net.version == 6 and net.prefixlen >= 96 and first >> 32 == 0xFFFF:
                v4.append((first & 0xFFFFFFFF, last & 0xFFFFFFFF))
            else:
                (v4 if net.version == 4 else v6).append((first, last))
        object.__setattr__(self, "_v4", _merge(v4))
        object.__setattr__(self, "_v6", _merge(v6))

    def __len__(self) -> int:
        return len(self.networks)

    def __contains__(self, address: object) -> bool:
        """``"192.0.2.7" in cidrs``; anything that is not an IP address is in no network."""
        if not isinstance(address, str):
            return False
        # inet_pton is about ten times faster than ipaddress.ip_address.
        try:
            if ":" in address:
                n = int.from_bytes(socket.inet_pton(socket.AF_INET6, address.partition("%")[0]), "big")
                if n >> 32 == 0xFFFF:
                    n &= 0xFFFFFFFF
                    starts, ends = self._v4
                else:
                    starts, ends = self._v6
            else:
                n = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
                starts, ends = self._v4
        except (OSError, ValueError):
            return False
        i = bisect_right(starts, n)
        return i > 0 and n <= ends[i - 1]


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sorted, overlapping or adjacent ranges joined: the range before a bisect point is the only candidate."""
    starts: list[int] = []
    ends: list[int] = []
    for first, last in sorted(ranges):
        if ends and first <= ends[-1] + 1:
            ends[-1] = max(ends[-1], last)
        else:
            starts.append(first)
            ends.append(last)
    return tuple(starts), tuple(ends)


NO_CIDRS = CidrSet()

_CIDR_RE = re.compile(r"[0-9A-Fa-f:.]+(?:/[0-9]{1,3})?")


def cidr(v: object) -> IPNetwork | str | None:
    """"192.0.2.0/24" -> the network; a bare address is one host; host bits set -> the
    network it would widen to, as text; anything else -> None."""
    # Only address/length: ipaddress would also take netmasks, integers and tuples.
    if not isinstance(v, str) or not _CIDR_RE.fullmatch(v):
        return None
    try:
        return ipaddress.ip_network(v)
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        return None


def cidr_list(c: Check, o: dict[str, Any], path: str, key: str, limit: int, expected: str) -> CidrSet:
    """``o[key]``, a list of at most ``limit`` networks; every bad one is reported."""
    value = o.get(key, MISSING)
    if value is MISSING:
        return NO_CIDRS
    where = join(path, key)
    if not isinstance(value, list):
        c.fail(where, expected, value)
        return NO_CIDRS
    if len(value) > limit:
        c.fail(where, expected, f"{len(value)} entries", literal=True)
        return NO_CIDRS
    networks: set[IPNetwork] = set()
    for i, item in enumerate(value):
        net = cidr(item)
        if net is None:
            c.fail(f"{where}[{i}]", CIDR, item)
        elif isinstance(net, str):
            # "192.0.2.1/24" would silently exempt the whole /24: name the
            # network so that the operator decides whether that is meant.
            c.fail(f"{where}[{i}]", f'a network address without host bits, such as "{net}"', item)
        else:
            mapped = net.network_address.ipv4_mapped if net.version == 6 and net.prefixlen >= 96 else None
            if mapped is not None:  # "::ffff:192.0.2.0/120" is 192.0.2.0/24: show it so
                net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
            networks.add(net)
    # Order does not change the meaning, so it does not change the version either.
    return CidrSet(tuple(sorted(networks, key=lambda n: (n.version, int(n.network_address), n.prefixlen))))


def cidrs_data(cidrs: CidrSet) -> list[str]:
    return [str(n) for n in cidrs.networks]
