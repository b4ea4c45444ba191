"""The client's address: the socket peer, or what trusted proxies say.

Pure functions over strings; no I/O. The rule, for a request whose socket
peer is ``peer``:

* The peer is not a trusted proxy (or there is none): the peer is the client.
  Headers change nothing, whatever they say.
* The peer is trusted: walk the hops it reports from the right, i.e. from the
  one nearest to us. ``X-Forwarded-For`` when present (all field lines, in
  order, comma-separated), otherwise the ``for=`` parameters of RFC 7239
  ``Forwarded`` (the node passes only the field its proxies write,
  ``proxy.client_address_header``). Trusted hops are skipped; the first untrusted hop is the
  client. When every hop is trusted, the left-most one is the client.
* The walk stops at a hop it cannot use, and the answer is then the last hop
  known good: the previous (trusted) hop, or the peer itself when the
  right-most hop is already unusable. Unusable: not an IP address (garbage,
  unicode digits, leading-zero IPv4), an obfuscated RFC 7239 identifier
  (``_hidden``) or ``unknown``, a ``Forwarded`` element without ``for=`` or
  with two, an unbalanced quote. Since a trusted proxy appends what it saw,
  anything the client wrote lies further left and can only be reached
  through hops we trust.
* Empty list elements (``a, , b``) are skipped (RFC 9110 §5.6.1).
* At most :data:`MAX_HOPS` list elements are examined (empty ones included);
  when the bound is reached the last hop known good is the answer. Header
  fields arriving with thousands of elements cost no more than 32.

Accepted hop spellings: ``192.0.2.1``, ``192.0.2.1:8080``, ``2001:db8::1``,
``[2001:db8::1]``, ``[2001:db8::1]:443``, ``fe80::1%eth0`` (zone dropped),
and in ``Forwarded`` the same inside a quoted string (``for="[2001:db8::1]:4711"``).
A port may be decimal (1-5 digits) or obfuscated (``_abc``). Results are
normalised: IPv4-mapped IPv6 becomes IPv4, IPv6 is compressed, lower case.
"""
from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

MAX_HOPS = 32
# Longest text form of an address worth parsing: full IPv6 with a zone id.
_MAX_TEXT = 64
_OWS = " \t"
_PORT_CHARS = frozenset("0123456789")
_OBF_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_address(text: str) -> str | None:
    """A bare IP address in canonical text, or None. IPv4-mapped IPv6 becomes
    IPv4, a zone id is dropped. No ports, no brackets (see :func:`parse_hop`)."""
    # The length check keeps long junk out of the cache (it is keyed by the text).
    return _normalise(text) if type(text) is str and 0 < len(text) <= _MAX_TEXT else None


@functools.lru_cache(maxsize=8192)
def _normalise(text: str) -> str | None:
    try:
        if ":" in text:
            ip6 = ipaddress.IPv6Address(text.partition("%")[0])
            mapped = ip6.ipv4_mapped
            return str(mapped) if mapped is not None else str(ip6)
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


def _valid_port(port: str) -> bool:
    if not port:
        return False
    if port[0] == "_":
        return len(port) > 1 and all(c in _OBF_CHARS for c in port)
    return len(port) <= 5 and all(c in _PORT_CHARS for c in port)


def parse_hop(text: str) -> str | None:
    """One hop as a proxy header names it (port and brackets allowed), as a
    normalised address; None when it is no address."""
    return _parse_hop(text) if type(text) is str and 0 < len(text) <= _MAX_TEXT + 8 else None


@functools.lru_cache(maxsize=8192)
def _parse_hop(text: str) -> str | None:
    if text[0] == "[":
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and (rest[0] != ":" or not _valid_port(rest[1:]))) or ":" not in host:
            return None
        return normalise_address(host)
    if text.count(":") == 1:  # IPv4 with a port; the host part has no colon, so only IPv4 parses
        host, _, port = text.partition(":")
        return normalise_address(host) if _valid_port(port) else None
    return normalise_address(text)  # IPv4, or bare IPv6 (a port would be ambiguous)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(net: Network) -> ipaddress.IPv4Network:
    if net.version == 4:
        return net  # type: ignore[return-value]
    v4 = net.network_address.ipv4_mapped  # type: ignore[union-attr]
    return ipaddress.IPv4Network(f"{v4}/{net.prefixlen - 96}")


class Trusted:
    """A set of networks (the trusted proxies) with a cached membership test.

    ``contains`` accepts any text; what is not an address is not trusted.
    """

    __slots__ = ("_cache", "_cache_size", "_v4", "_v6", "networks")

    def __init__(self, networks: Iterable[Network | str] = (), *, cache_size: int = 4096) -> None:
        nets = tuple(n if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) else ipaddress.ip_network(n, strict=False)
                     for n in networks)
        self.networks: tuple[Network, ...] = nets
        # Addresses are normalised before the test (IPv4-mapped IPv6 becomes
        # IPv4), so an IPv4-mapped network is tested as the IPv4 one it maps.
        self._v4 = tuple(_unmapped(n) for n in nets if n.version == 4 or n.subnet_of(_MAPPED))  # type: ignore[arg-type]
        self._v6 = tuple(n for n in nets if n.version == 6 and not n.subnet_of(_MAPPED))  # type: ignore[arg-type]
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size

    def __bool__(self) -> bool:
        return bool(self.networks)

    @property
    def cached(self) -> tuple[str, ...]:
        """The addresses whose answer is cached, oldest first."""
        return tuple(self._cache)

    def __repr__(self) -> str:
        return f"Trusted({[str(n) for n in self.networks]!r})"

    def contains(self, address: str) -> bool:
        if not self.networks:
            return False
        cache = self._cache
        known = cache.get(address)
        if known is not None:
            return known
        known = self._check(address)
        if len(address) > _MAX_TEXT:
            return known  # junk is not cached
        if len(cache) >= self._cache_size:
            # Bounded: drop the oldest entry (dicts keep insertion order).
            try:
                del cache[next(iter(cache))]
            except (StopIteration, KeyError, RuntimeError):
                cache.clear()
        cache[address] = known
        return known

    def _check(self, address: str) -> bool:
        norm = normalise_address(address)
        if norm is None:
            return False
        ip = ipaddress.ip_address(norm)
        nets = self._v4 if ip.version == 4 else self._v6
        return any(ip in net for net in nets)


def _xff_hops(lines: Sequence[str]) -> Iterable[str]:
    """Comma-separated elements from the right (X-Forwarded-For, Forwarded),
    at most MAX_HOPS of them."""
    budget = MAX_HOPS
    for line in reversed(lines):
        # rsplit bounds the work on a huge field: only the right end is split.
        for element in reversed(line.rsplit(",", budget)):
            if budget == 0:
                return
            budget -= 1
            yield element


def _forwarded_for(element: str) -> str | None:
    """The node of an RFC 7239 element's ``for=``, unquoted; None when the
    element has none, has two, or is malformed."""
    found: str | None = None
    for pair in element.split(";"):
        name, eq, value = pair.partition("=")
        name = name.strip(_OWS)
        if not eq:
            if name:
                return None  # a parameter without a value
            continue
        if name.lower() != "for":
            continue
        if found is not None:
            return None  # RFC 7239 §4: each parameter at most once per element
        value = value.strip(_OWS)
        if value[:1] == '"':
            if len(value) < 2 or value[-1] != '"':
                return None
            value = value[1:-1]
            if "\\" in value:
                value = _unescape(value)
        elif '"' in value:
            return None
        found = value
    return found or None  # "for=" with nothing is no hop either


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for c in chars:
        out.append(next(chars, "") if c == "\\" else c)
    return "".join(out)


def _forwarded_hops(lines: Sequence[str]) -> Iterable[str | None]:
    """``for=`` values from the right, at most MAX_HOPS elements; None for an
    element that cannot be used. A comma inside a quoted string leaves an odd
    number of quotes in both halves: both become unusable, which stops the
    walk; such commas do not occur in the addresses this walk is after."""
    for element in _xff_hops(lines):  # the same comma-separated walk
        if not element.strip(_OWS):
            yield ""
        elif element.count('"') % 2:
            yield None
        else:
            yield _forwarded_for(element)


def client_address(peer: str | None, xff: Sequence[str], forwarded: Sequence[str], trusted: Trusted) -> str | None:
    """The client's address, normalised; None when the peer is unknown or is
    not an IP address. See the module docstring for the rules."""
    client = normalise_address(peer) if peer else None
    if client is None or not trusted.contains(client):
        return client
    hops: Iterable[str | None]
    if any(line.strip(_OWS) for line in xff):
        hops = _xff_hops(xff)
    elif forwarded:
        hops = _forwarded_hops(forwarded)
    else:
        return client
    for raw in hops:
        if raw is None:
            return client
        raw = raw.strip(_OWS)
        if not raw:
            continue
        hop = parse_hop(raw)
        if hop is None:
            return client
        if not trusted.contains(hop):
            return hop
        client = hop
    return client
