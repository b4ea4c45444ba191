"""The tenant policy as typed, immutable values, and the two per-request decisions.

Build policies with :func:`edge.policy.parse_policy`; the constructors here do
no validation of their own.
"""
from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Literal

from edge.cache.key import KeyOptions
from edge.filters.request_limits import RequestLimits
from edge.filters.under_attack import NO_UNDER_ATTACK, UnderAttack
from edge.observe.events import EventSettings
from edge.waf.settings import WafSettings
from edge.policy.match import Match, media_type


@dataclass(frozen=True, slots=True)
class OriginSpec:
    url: str  # normalised "scheme://host[:port]", default port left out
    scheme: Literal["http", "https"]
    host: str  # what to connect to; an IPv6 address without brackets
    port: int
    host_header: str | None  # "hostname[:port]" sent instead of the client's Host
    connect_timeout: float
    read_timeout: float
    max_connections: int


@dataclass(frozen=True, slots=True)
class Failover:
    retry_on_status: frozenset[int]
    failures_before_down: int
    cooldown: float


@dataclass(frozen=True, slots=True)
class Ttl:
    """``override`` replaces the origin's lifetime; ``default`` applies only when the origin gives none."""

    mode: Literal["override", "default"]
    seconds: int


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool
    max_object_size: int  # bytes
    strip_set_cookie: bool
    heuristic_fraction: float
    heuristic_max: int  # seconds
    key: KeyOptions
    # RFC 5861 windows (seconds) used when the origin's Cache-Control names none.
    stale_while_revalidate: int = 0
    stale_if_error: int = 0
    # "revalidate" (RFC 9111 §5.2.1.4): a client's no-cache / max-age=0 makes the
    # edge validate with the origin. "ignore": such requests are served from
    # cache like any other, which shields the origin from forced reloads.
    client_no_cache: Literal["revalidate", "ignore"] = "revalidate"
    # RFC 9213 targeted fields, in order of precedence; the first present with
    # a valid value replaces Cache-Control (and Expires) for the edge.
    targeted_fields: tuple[str, ...] = ("cdn-cache-control", "surrogate-control")
    # Bytes of the node's disk tier this tenant may hold before its own least
    # recently used entries go; None: the node's cache.tenant_disk_quota.
    disk_quota: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule; a setting left None is decided by a later rule or the tenant default."""

    match: Match
    edge_ttl: Ttl | None = None
    browser_ttl: Ttl | None = None
    bypass: bool | None = None
    # The complete key for requests this rule decides: the tenant's cache.key
    # with the fields the rule names replaced.
    key: KeyOptions | None = None


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

@dataclass(frozen=True, slots=True)
class CidrSet:
    """A set of networks compiled for membership checks that do not scan the list.

    The networks become sorted, merged address ranges, IPv4 and IPv6 apart; a
    check is one binary search (bisect, in C): about 0.4 µs for 10,000
    networks, whatever their prefix lengths. IPv4-mapped IPv6 networks and
    addresses (``::ffff:192.0.2.1``) count as IPv4: that is how IPv4 clients
    look on a dual-stack socket.
    """

    networks: tuple[IPNetwork, ...] = ()  # canonical order (see parse), for to_data and equality
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


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where and to whom a tenant is delivered (the ``delivery`` section).

    The default restricts nothing. :func:`edge.geo.decide.decide` applies it.
    """

    allow_countries: frozenset[str] = frozenset()  # ISO 3166-1 alpha-2, upper case; empty: all
    deny_countries: frozenset[str] = frozenset()  # checked after allow: in both is denied
    unknown: Literal["allow", "deny"] = "allow"  # clients the geo database has no country for
    action: Literal["block", "redirect"] = "block"  # refused clients: 451, or 307 to redirect_url
    redirect_url: str | None = None  # set exactly when action is "redirect"
    exempt_cidrs: CidrSet = NO_CIDRS  # always delivered (on a node in edge_countries)
    edge_countries: frozenset[str] = frozenset()  # nodes that may cache and serve; empty: any
    in_region_url: str | None = None  # no trailing slash; None: nodes outside edge_countries answer 421

    # Client-side restriction at all: False lets the hot path skip the client
    # checks. It says nothing about edge_countries; see ``active``.
    restricted: bool = field(init=False, compare=False)
    # restricted, or a node restriction: False means decide() always delivers.
    active: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        restricted = bool(self.allow_countries or self.deny_countries) or self.unknown == "deny"
        object.__setattr__(self, "restricted", restricted)
        object.__setattr__(self, "active", restricted or bool(self.edge_countries))


NO_RESTRICTION = Delivery()


FilterMode = Literal["block", "log", "off"]


@dataclass(frozen=True, slots=True)
class IpLists:
    """The ``filters.ip_lists`` section: allow-listed clients skip the later
    filters, denied ones are refused (allow wins over deny)."""

    mode: FilterMode = "block"
    allow: CidrSet = NO_CIDRS
    deny: CidrSet = NO_CIDRS
    active: bool = field(init=False, compare=False)  # False: the filter returns at once

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", self.mode != "off" and bool(len(self.allow) or len(self.deny)))


@dataclass(frozen=True, slots=True)
class RateRule:
    """One token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    id: str
    rate: float  # requests per second, > 0
    burst: int  # >= 1
    per: Literal["client", "tenant"] = "client"
    path_prefix: str | None = None  # None: every path


@dataclass(frozen=True, slots=True)
class RateLimits:
    mode: FilterMode = "off"
    rules: tuple[RateRule, ...] = ()
    active: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", self.mode != "off" and bool(self.rules))


DEFAULT_WAF = WafSettings()
DEFAULT_REQUEST_LIMITS = RequestLimits()


@dataclass(frozen=True, slots=True)
class Filters:
    """The ``filters`` section; the default does nothing."""

    ip_lists: IpLists = IpLists()
    rate_limits: RateLimits = RateLimits()
    under_attack: UnderAttack = NO_UNDER_ATTACK
    waf: WafSettings = DEFAULT_WAF
    request_limits: RequestLimits = DEFAULT_REQUEST_LIMITS  # has its own ``active``
    events: EventSettings = EventSettings()  # not a filter: what blocks add up to
    active: bool = field(init=False, compare=False)  # any filter to run at all

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "active",
            self.ip_lists.active or self.rate_limits.active or self.under_attack.active or self.waf.active,
        )


NO_FILTERS = Filters()


@dataclass(frozen=True, slots=True)
class RequestDecision:
    """Decided from the request alone, before the cache lookup."""

    key: KeyOptions
    bypass: bool


@dataclass(frozen=True, slots=True)
class ResponseDecision:
    """Decided once the response (and so its media type) is known."""

    edge_ttl: Ttl | None
    browser_ttl: Ttl | None
    bypass: bool


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    tenant: str
    hosts: tuple[str, ...]
    origins: tuple[OriginSpec, ...]
    failover: Failover
    cache: CacheSettings
    rules: tuple[Rule, ...]
    version: str  # first 16 hex digits of the sha256 of the effective policy's canonical JSON
    source: str  # file or other origin of the policy, for messages
    delivery: Delivery = NO_RESTRICTION
    filters: Filters = NO_FILTERS

    # Precomputed at construction so that the decisions allocate nothing in
    # the common case (no rule applies): see request_decision.
    _req_rules: tuple[tuple[Match, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _req_table: tuple[RequestDecision, ...] = field(init=False, repr=False, compare=False)
    _resp_rules: tuple[tuple[Match, int, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _resp_ttls: tuple[Ttl | None, ...] = field(init=False, repr=False, compare=False)
    _resp_default: ResponseDecision = field(init=False, repr=False, compare=False)
    _resp_memo: dict[int, ResponseDecision] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        disabled = not self.cache.enabled
        # Request time: only rules without a content_type condition, and only
        # the ones that set key or bypass. Slot 0 is the tenant's own key.
        keys: list[KeyOptions] = [self.cache.key]
        req: list[tuple[Match, int, bool | None]] = []
        for rule in self.rules:
            if rule.match.on_response or (rule.key is None and rule.bypass is None):
                continue
            slot = 0
            if rule.key is not None:
                keys.append(rule.key)
                slot = len(keys) - 1
            req.append((rule.match, slot, rule.bypass))
        # A disabled cache bypasses everything, whatever the rules say, so
        # the pipeline needs one check instead of two.
        table = tuple(RequestDecision(k, b or disabled) for k in keys for b in (False, True))
        set_(self, "_req_table", table)
        set_(self, "_req_rules", () if disabled else tuple(req))

        # Response time: every rule that sets a TTL or bypass, in file order.
        ttls: list[Ttl | None] = [None]
        resp: list[tuple[Match, int, int, bool | None]] = []
        for rule in self.rules:
            if rule.edge_ttl is None and rule.browser_ttl is None and rule.bypass is None:
                continue
            edge = browser = 0
            if rule.edge_ttl is not None:
                ttls.append(rule.edge_ttl)
                edge = len(ttls) - 1
            if rule.browser_ttl is not None:
                ttls.append(rule.browser_ttl)
                browser = len(ttls) - 1
            resp.append((rule.match, edge, browser, rule.bypass))
        set_(self, "_resp_rules", () if disabled else tuple(resp))
        set_(self, "_resp_ttls", tuple(ttls))
        set_(self, "_resp_default", ResponseDecision(None, None, disabled))
        set_(self, "_resp_memo", {})

    def request_decision(self, path: str) -> RequestDecision:
        """The cache key options and request-time bypass for a request path.

        Per setting, the first matching rule that sets it wins. Returns shared
        objects: with no applicable rule, always the same one.
        """
        rules = self._req_rules
        if not rules:
            return self._req_table[0]
        slot = 0
        bypass: bool | None = None
        for match, rule_slot, rule_bypass in rules:
            wants_key = rule_slot and not slot
            wants_bypass = rule_bypass is not None and bypass is None
            if (wants_key or wants_bypass) and match.matches_path(path):
                if wants_key:
                    slot = rule_slot
                if wants_bypass:
                    bypass = rule_bypass
        return self._req_table[slot * 2 + (bypass is True)]

    def response_decision(self, path: str, content_type: str | None) -> ResponseDecision:
        """TTLs and store-time bypass; ``content_type`` is the raw response header or None.

        Per setting, the first matching rule that sets it wins, rules with and
        without a content_type condition alike.
        """
        rules = self._resp_rules
        if not rules:
            return self._resp_default
        edge = browser = 0
        bypass: bool | None = None
        mtype: str | None = None
        parsed = False
        for match, rule_edge, rule_browser, rule_bypass in rules:
            wants_edge = rule_edge and not edge
            wants_browser = rule_browser and not browser
            wants_bypass = rule_bypass is not None and bypass is None
            if not (wants_edge or wants_browser or wants_bypass) or not match.matches_path(path):
                continue
            if match.content_type is not None:
                if not parsed:
                    mtype, parsed = media_type(content_type), True
                if not match.matches_type(mtype):
                    continue
            if wants_edge:
                edge = rule_edge
            if wants_browser:
                browser = rule_browser
            if wants_bypass:
                bypass = rule_bypass
        if not (edge or browser or bypass):
            return self._resp_default
        # Decisions are shared per combination: the number of combinations is
        # bounded by the rules, not by the traffic.
        code = (edge * len(self._resp_ttls) + browser) * 2 + (bypass is True)
        decision = self._resp_memo.get(code)
        if decision is None:
            ttls = self._resp_ttls
            decision = ResponseDecision(ttls[edge], ttls[browser], bypass is True)
            self._resp_memo[code] = decision
        return decision
