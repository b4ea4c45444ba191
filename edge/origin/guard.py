"""Where connections made for a tenant may go: the node's one address policy.

An origin or a security-event webhook that a tenant token wrote or changed
(``"set_by": "tenant"`` in the policy) is *guarded*: the node connects to it
only at addresses that are neither its own nor its network's, nor a cloud
metadata service. Without that, a tenant could point its origin at
127.0.0.1, at another tenant's private origin or at 169.254.169.254 and read
the answers through the cache.

The check runs where the connection is made, on the address actually
connected to, on every connect: a name is resolved, its refused addresses
are dropped (none left: the connect fails), and every socket is checked
once more before it connects, IP literals included. A name that resolved
to a public address at write time and to 127.0.0.1 later (DNS rebinding)
is therefore refused at the later connect. The admin API also refuses
obviously bad hosts when a tenant token writes them (:meth:`host_refusal`),
but that is only a courtesy: the connect-time check is the guarantee.

Operators open ranges with ``[outbound] allow_networks`` (a private
interconnect to tenants' origins, say). Metadata services stay refused
whatever it says. Unguarded destinations (written by operators) are not
checked at all.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services (AWS, GCP, Azure, OpenStack; AWS over IPv6;
# ECS and EKS credential endpoints; Alibaba Cloud): refused even inside
# allow_networks, since they hand out the node's own credentials.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "169.254.170.23", "fd00:ec2::23", "100.100.100.200",
))
METADATA_NAMES: frozenset[str] = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
})

# First match wins, so the narrower entries come first. IPv4-mapped and
# NAT64 addresses are checked as the IPv4 address they carry.
_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(n), why) for n, why in (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # with the broadcast address
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private (local-use NAT64)"),
    ("::/8", "reserved"),  # IPv4-compatible and IPv4-translated forms among them
    ("100::/64", "reserved"),
    ("2001::/23", "reserved"),  # Teredo, benchmarking, ORCHID
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "reserved"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class ForbiddenAddress(OSError):
    """A guarded connection would have gone to a refused address."""


def _carried(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv4-mapped or NAT64 (RFC 6052) address stands for."""
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """What guarded destinations may reach; ``allow`` is ``[outbound] allow_networks``."""

    allow: tuple[IPNetwork, ...] = ()

    def refusal(self, address: str) -> str | None:
        """Why a guarded connection may not go to ``address`` (an IP literal,
        IPv6 with or without a zone), or None when it may."""
        try:
            ip = _carried(ipaddress.ip_address(address.partition("%")[0].strip("[]")))
        except ValueError:
            return "not an IP address"
        if ip in METADATA_ADDRESSES:
            return "a metadata service"
        if any(ip in net for net in self.allow):
            return None
        for net, why in _REFUSED:
            if ip in net:
                return why
        return None

    def host_refusal(self, host: str) -> str | None:
        """Why a URL host is refused without looking it up: an IP literal the
        policy refuses, a metadata service's name, a localhost name (RFC 6761).
        A name that resolves to a refused address passes here; the connect
        refuses it."""
        name = host.strip("[]").rstrip(".").lower()
        try:
            ipaddress.ip_address(name.partition("%")[0])
        except ValueError:
            pass
        else:
            return self.refusal(name)
        if name in METADATA_NAMES:
            return "a metadata service"
        if name == "localhost" or name.endswith(".localhost"):
            return self.refusal("127.0.0.1")
        return None


class GuardedResolver(AbstractResolver):
    """Resolves like the node always did (getaddrinfo: /etc/hosts, then
    DNS) and keeps only the addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if host.rstrip(".").lower() in METADATA_NAMES:
            raise ForbiddenAddress(f"{host} names a metadata service")
        if self._inner is None:
            self._inner = aiohttp.ThreadedResolver()
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if self.policy.refusal(r["host"]) is None]
        if not allowed:
            refused = ", ".join(f"{r['host']} ({self.policy.refusal(r['host'])})" for r in found)
            raise ForbiddenAddress(f"{host} resolves only to refused addresses: {refused}")
        return allowed

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _checked_socket(policy: AddressPolicy, addr_info: tuple) -> socket.socket:
    # The last look before connect(): it also sees IP literals, which
    # aiohttp never hands to the resolver.
    family, type_, proto, _, address = addr_info
    why = policy.refusal(address[0])
    if why is not None:
        raise ForbiddenAddress(f"{address[0]} is {why}")
    return socket.socket(family, type_, proto)


def connector(policy: AddressPolicy | None, cls: type[aiohttp.TCPConnector] = aiohttp.TCPConnector,
              **kwargs) -> aiohttp.TCPConnector:
    """A ``cls`` connector (``kwargs`` as for it) that connects only where
    ``policy`` allows; None: unguarded."""
    if policy is None:
        return cls(**kwargs)
    return cls(resolver=GuardedResolver(policy), socket_factory=functools.partial(_checked_socket, policy), **kwargs)


def forbidden(exc: BaseException) -> ForbiddenAddress | None:
    """The refusal behind an aiohttp connection error, if that is what it was."""
    os_error = getattr(exc, "os_error", None)
    return os_error if isinstance(os_error, ForbiddenAddress) else None


__all__ = ["AddressPolicy", "ForbiddenAddress", "GuardedResolver",
           "METADATA_ADDRESSES", "METADATA_NAMES", "connector", "forbidden"]
