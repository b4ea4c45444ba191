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

from edge.cache.key import KeyOptions, decoded_view
from edge.filters.request_limits import RequestLimits
from edge.filters.under_attack import NO_UNDER_ATTACK, UnderAttack
from edge.observe.events import EventSettings
from edge.waf.settings import WafSettings
from edge.policy.match import Match, folded, media_type


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
    # Who wrote the origin: "tenant" (a tenant token, through the admin API,
    # edge.admin.provenance) makes it guarded (edge.origin.guard); files and
    # operators vouch.
    set_by: Literal["operator", "tenant"] = "operator"

    @property
    def guarded(self) -> bool:
        return self.set_by == "tenant"


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
    rules_case_insensitive: bool = False

    # Precomputed at construction so that the decisions allocate nothing in
    # the common case (no rule applies): see request_decision.
    _req_rules: tuple[tuple[Match, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _req_folded: tuple[tuple[Match, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _req_bypass_folded: tuple[tuple[Match, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _req_table: tuple[RequestDecision, ...] = field(init=False, repr=False, compare=False)
    _resp_rules: tuple[tuple[Match, int, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _resp_folded: tuple[tuple[Match, int, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _resp_bypass_folded: tuple[tuple[Match, int, int, bool | None], ...] = field(init=False, repr=False, compare=False)
    _fold_differs: bool = field(init=False, repr=False, compare=False)
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
        set_(self, "_req_folded", _folded(self._req_rules))
        set_(self, "_req_bypass_folded", tuple(r for r in self._req_folded if r[2] is not None))

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
        set_(self, "_resp_folded", _folded(self._resp_rules))
        set_(self, "_resp_bypass_folded", tuple(r for r in self._resp_folded if r[3] is not None))
        # Patterns with upper case: a lower-case path may then still differ in how it folds.
        set_(self, "_fold_differs", self._req_folded is not self._req_rules or self._resp_folded is not self._resp_rules)
        set_(self, "_resp_ttls", tuple(ttls))
        set_(self, "_resp_default", ResponseDecision(None, None, disabled))
        set_(self, "_resp_memo", {})

    def _spellings(self, path: str) -> tuple[str, str | None, tuple[str, ...]]:
        """How origins may read ``path``, for rule matching (web cache deception).

        Returns the path as sent (case-folded with ``rules_case_insensitive``),
        the decoded view when it differs (edge.cache.key.decoded_view: what a
        lenient origin reads), and the lower-cased spellings to check against
        the case-folded bypass rules (what a case-insensitive origin reads).
        """
        fold = self.rules_case_insensitive
        sent = path.casefold() if fold else path
        decoded = None
        if "%" in path or ";" in path or "\\" in path:
            view = decoded_view(path)
            if fold:
                view = view.casefold()
            if view != sent:
                decoded = view
        if fold:
            return sent, decoded, ()
        low = sent.casefold()
        if decoded is None:
            # The common case: one spelling, folded only when that can matter.
            return sent, None, (low,) if low != sent or self._fold_differs else ()
        low_decoded = decoded.casefold()
        return sent, decoded, (low,) if low == low_decoded else (low, low_decoded)

    def request_decision(self, path: str) -> RequestDecision:
        """The cache key options and request-time bypass for a request path.

        Per setting, the first matching rule that sets it wins. The key is
        decided on the path as sent; a bypass found in any spelling an origin
        may read (:meth:`_spellings`) wins, and so does a key that depends
        on the spelling: such a request is not cached. Returns shared
        objects: with no applicable rule, always the same one.
        """
        rules = self._req_rules
        if not rules:
            return self._req_table[0]
        if not (self.rules_case_insensitive or self._fold_differs or "%" in path or ";" in path or "\\" in path):
            # The common case, kept cheap for hits: one spelling, and folding
            # matters only when the path has upper case.
            slot, bypass = _request_scan(path, rules)
            if not bypass and (low := path.casefold()) != path:
                bypass = _bypass_scan(low, self._req_bypass_folded)
            return self._req_table[slot * 2 + bypass]
        if self.rules_case_insensitive:
            rules = self._req_folded
        sent, decoded, lowered = self._spellings(path)
        slot, bypass = _request_scan(sent, rules)
        if decoded is not None and not bypass:
            other_slot, bypass = _request_scan(decoded, rules)
            bypass = bypass or other_slot != slot
        for view in lowered:
            if bypass:
                break
            bypass = _bypass_scan(view, self._req_bypass_folded)
        return self._req_table[slot * 2 + bypass]

    def response_decision(self, path: str, content_type: str | None) -> ResponseDecision:
        """TTLs and store-time bypass; ``content_type`` is the raw response header or None.

        Per setting, the first matching rule that sets it wins, rules with and
        without a content_type condition alike. Spellings as in
        :meth:`request_decision`: TTLs that depend on them mean no store.
        """
        rules = self._resp_rules
        if not rules:
            return self._resp_default
        if self.rules_case_insensitive:
            rules = self._resp_folded
        mtype = _Lazy(content_type)
        sent, decoded, lowered = self._spellings(path)
        edge, browser, bypass = _response_scan(sent, rules, mtype)
        if decoded is not None and not bypass:
            other_edge, other_browser, bypass = _response_scan(decoded, rules, mtype)
            bypass = bypass or (other_edge, other_browser) != (edge, browser)
        for view in lowered:
            if bypass:
                break
            bypass = _response_scan(view, self._resp_bypass_folded, mtype)[2]
        if not (edge or browser or bypass):
            return self._resp_default
        # Decisions are shared per combination: the number of combinations is
        # bounded by the rules, not by the traffic.
        code = (edge * len(self._resp_ttls) + browser) * 2 + bypass
        decision = self._resp_memo.get(code)
        if decision is None:
            ttls = self._resp_ttls
            decision = ResponseDecision(ttls[edge], ttls[browser], bypass)
            self._resp_memo[code] = decision
        return decision


class _Lazy:
    """A response's media type, parsed on first use (most rules never ask)."""

    __slots__ = ("raw", "parsed", "value")

    def __init__(self, raw: str | None) -> None:
        self.raw, self.parsed, self.value = raw, False, None

    def get(self) -> str | None:
        if not self.parsed:
            self.value, self.parsed = media_type(self.raw), True
        return self.value


def _request_scan(view: str, rules: tuple) -> tuple[int, bool]:
    """(key slot, bypass) of the first matching rule per setting."""
    slot = 0
    bypass: bool | None = None
    for match, rule_slot, rule_bypass in rules:
        wants_key = rule_slot and not slot
        wants_bypass = rule_bypass is not None and bypass is None
        if (wants_key or wants_bypass) and match.matches_path(view):
            if wants_key:
                slot = rule_slot
            if wants_bypass:
                bypass = rule_bypass
    return slot, bypass is True


def _bypass_scan(view: str, rules: tuple) -> bool:
    """Whether the first matching rule that decides bypass says so."""
    for match, _, rule_bypass in rules:
        if match.matches_path(view):
            return bool(rule_bypass)
    return False


def _response_scan(view: str, rules: tuple, mtype: _Lazy) -> tuple[int, int, bool]:
    """(edge TTL slot, browser TTL slot, bypass) of the first matching rule per setting."""
    edge = browser = 0
    bypass: bool | None = None
    for match, rule_edge, rule_browser, rule_bypass in rules:
        wants_edge = rule_edge and not edge
        wants_browser = rule_browser and not browser
        wants_bypass = rule_bypass is not None and bypass is None
        if not (wants_edge or wants_browser or wants_bypass) or not match.matches_path(view):
            continue
        if match.content_type is not None and not match.matches_type(mtype.get()):
            continue
        if wants_edge:
            edge = rule_edge
        if wants_browser:
            browser = rule_browser
        if wants_bypass:
            bypass = rule_bypass
    return edge, browser, bypass is True


def _folded(rules: tuple) -> tuple:
    """``rules`` with case-folded path conditions; the same object when
    folding changes nothing, so a view can skip matching twice."""
    out = tuple((folded(match), *rest) for match, *rest in rules)
    return rules if out == rules else out
