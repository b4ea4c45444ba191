"""The tenant policy as typed, immutable values, and the two per-request decisions.

Build policies with :func:`edge.policy.parse_policy`; the constructors here do
no validation of their own. Each section's dataclass is defined by its own
module in :mod:`edge.policy.sections` and importable from here too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edge.cache.key import KeyOptions, decoded_view
from edge.policy.match import Match, folded, media_type
from edge.policy.sections.cache import CacheSettings
from edge.policy.sections.cidrs import NO_CIDRS, CidrSet, IPNetwork
from edge.policy.sections.delivery import NO_RESTRICTION, Delivery
from edge.policy.sections.filters import (
    DEFAULT_WAF,
    NO_FILTERS,
    FilterMode,
    Filters,
    IpLists,
    RateLimits,
    RateRule,
)
from edge.policy.sections.origins import Failover, OriginSpec
from edge.policy.sections.request_limits import DEFAULT_REQUEST_LIMITS
from edge.policy.sections.rules import Rule, Ttl
from edge.policy.sections.tls import NO_TLS, TlsPolicy


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
    tls: TlsPolicy = NO_TLS

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


__all__ = [
    "DEFAULT_REQUEST_LIMITS", "DEFAULT_WAF", "NO_CIDRS", "NO_FILTERS", "NO_RESTRICTION",
    "CacheSettings", "CidrSet", "Delivery", "Failover", "FilterMode", "Filters", "IPNetwork", "IpLists",
    "OriginSpec", "RateLimits", "RateRule", "RequestDecision", "ResponseDecision", "Rule", "TenantPolicy", "TlsPolicy",
    "Ttl", "NO_TLS",
]
