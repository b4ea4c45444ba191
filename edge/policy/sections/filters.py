"""The ``filters`` section: the shared filter chain's settings for one
tenant. Address lists and rate limits are read here; the other filters'
sections by their own modules (request limits, under-attack mode, the WAF)
and the security events by theirs."""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edge.policy.sections import events, request_limits, under_attack, waf
from edge.policy.sections.cidrs import NO_CIDRS, CidrSet, cidr_list, cidrs_data
from edge.policy.sections.events import NO_EVENTS, EventSettings, events_data, parse_events
from edge.policy.sections.request_limits import (
    DEFAULT_REQUEST_LIMITS, RequestLimits, parse_request_limits, request_limits_data,
)
from edge.policy.sections.under_attack import NO_UNDER_ATTACK, UnderAttack, parse_under_attack, under_attack_data
from edge.policy.sections.waf import WafSettings, parse_waf, waf_data
from edge.schema.check import (
    BAD, FILTER_MODE, MISSING, PATH, Check, filter_mode, int_in, join, number_in, one_of, request_path,
)

MAX_FILTER_CIDRS = 100_000  # per list; the 1 MiB file limit allows some 50,000
MAX_RATE_RULES = 100
MAX_RATE = 1_000_000.0  # requests per second
MAX_BURST = 1_000_000_000

KEYS: dict[str, tuple[str, ...]] = {
    "filters": ("ip_lists", "request_limits", "rate_limits", "under_attack", "waf", "events"),
    **request_limits.KEYS,
    **under_attack.KEYS,
    **waf.KEYS,
    **events.KEYS,
    "ip_lists": ("mode", "allow", "deny"),
    "rate_limits": ("mode", "rules"),
    "rate_rule": ("id", "path_prefix", "per", "rate", "burst"),
}

FILTER_CIDRS = f"a list of at most {MAX_FILTER_CIDRS} IP networks"
RATE_RULES = f"a list of at most {MAX_RATE_RULES} rules"
RULE_ID = 'an id of 1 to 64 letters, digits, "_" or "-"'
RULE_ID_UNIQUE = "an id no other rule of the list has"
PER = '"client" or "tenant"'
RATE = f"a number of requests per second > 0 and <= {MAX_RATE:g}"
BURST = f"an integer 1..{MAX_BURST}"

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


@dataclass(frozen=True, slots=True)
class Filters:
    """The ``filters`` section; the default does nothing."""

    ip_lists: IpLists = IpLists()
    rate_limits: RateLimits = RateLimits()
    under_attack: UnderAttack = NO_UNDER_ATTACK
    waf: WafSettings = DEFAULT_WAF
    request_limits: RequestLimits = DEFAULT_REQUEST_LIMITS  # has its own ``active``
    events: EventSettings = NO_EVENTS  # not a filter: what blocks add up to
    active: bool = field(init=False, compare=False)  # any filter to run at all

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "active",
            self.ip_lists.active or self.rate_limits.active or self.under_attack.active or self.waf.active,
        )


NO_FILTERS = Filters()

_RULE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _rule_id(v: object) -> Any:
    return v if isinstance(v, str) and _RULE_ID_RE.fullmatch(v) else BAD


def parse_filters(c: Check, raw: object, path: str, waf_rule_ids: Callable[[], frozenset[str]]) -> Filters:
    """``waf_rule_ids``: the rules a WAF exclusion may name, asked for only
    when the policy has a ``waf`` section."""
    if raw is MISSING:
        return NO_FILTERS
    o = c.object(raw, path, "filters")
    if o is None:
        return NO_FILTERS
    ip_lists = IpLists()
    if "ip_lists" in o:
        where = join(path, "ip_lists")
        i = c.object(o["ip_lists"], where, "ip_lists")
        if i is not None:
            ip_lists = IpLists(
                mode=c.get(i, where, "mode", "block", FILTER_MODE, filter_mode),
                allow=cidr_list(c, i, where, "allow", MAX_FILTER_CIDRS, FILTER_CIDRS),
                deny=cidr_list(c, i, where, "deny", MAX_FILTER_CIDRS, FILTER_CIDRS),
            )
    rate_limits = RateLimits()
    if "rate_limits" in o:
        where = join(path, "rate_limits")
        r = c.object(o["rate_limits"], where, "rate_limits")
        if r is not None:
            rate_limits = _rate_limits(c, r, where)

    def section(name: str, default, parse):
        # A section parsed by its own module: key-checked here, read there.
        if name not in o:
            return default
        where = join(path, name)
        value = c.object(o[name], where, name)
        return default if value is None else parse(c, value, where)

    return Filters(
        ip_lists=ip_lists,
        rate_limits=rate_limits,
        under_attack=section("under_attack", NO_UNDER_ATTACK, parse_under_attack),
        request_limits=section("request_limits", DEFAULT_REQUEST_LIMITS, parse_request_limits),
        waf=section("waf", DEFAULT_WAF, lambda c, w, where: parse_waf(c, w, where, waf_rule_ids())),
        events=section("events", NO_EVENTS, parse_events),
    )


def _rate_limits(c: Check, r: dict[str, Any], where: str) -> RateLimits:
    mode = c.get(r, where, "mode", "off", FILTER_MODE, filter_mode)
    rules: list[RateRule] = []
    raw_rules = r.get("rules", [])
    if not isinstance(raw_rules, list) or len(raw_rules) > MAX_RATE_RULES:
        c.fail(join(where, "rules"), RATE_RULES, raw_rules)
    else:
        seen: set[str] = set()
        for n, raw_rule in enumerate(raw_rules):
            rule = _rate_rule(c, raw_rule, f"{where}.rules[{n}]", seen)
            if rule is not None:
                rules.append(rule)
    return RateLimits(mode=mode, rules=tuple(rules))


def _rate_rule(c: Check, raw: object, path: str, seen: set[str]) -> RateRule | None:
    o = c.object(raw, path, "rate_rule")
    if o is None:
        return None
    before = len(c.errors)
    for key, expected in (("id", RULE_ID), ("rate", RATE)):
        if key not in o:
            c.fail(join(path, key), expected, MISSING)
    rule_id = c.get(o, path, "id", None, RULE_ID, _rule_id)
    if rule_id is not None:
        if rule_id in seen:
            c.fail(join(path, "id"), RULE_ID_UNIQUE, rule_id)
        seen.add(rule_id)
    rate = c.get(o, path, "rate", None, RATE, number_in(0, MAX_RATE))
    default_burst = max(1, math.ceil(rate)) if rate is not None else 1
    burst = c.get(o, path, "burst", default_burst, BURST, int_in(1, MAX_BURST))
    per = c.get(o, path, "per", "client", PER, one_of("client", "tenant"))
    prefix = c.get(o, path, "path_prefix", None, PATH, lambda v: None if v is None else request_path(v))
    if len(c.errors) > before or rule_id is None or rate is None:
        return None
    return RateRule(id=rule_id, rate=rate, burst=burst, per=per, path_prefix=prefix)


def filters_data(f: Filters) -> dict[str, Any]:
    ip, rl = f.ip_lists, f.rate_limits
    return {
        "under_attack": under_attack_data(f.under_attack),
        "events": events_data(f.events),
        "request_limits": request_limits_data(f.request_limits),
        "waf": waf_data(f.waf),
        "ip_lists": {
            "mode": ip.mode,
            "allow": cidrs_data(ip.allow),
            "deny": cidrs_data(ip.deny),
        },
        "rate_limits": {
            "mode": rl.mode,
            "rules": [
                {"id": r.id, "path_prefix": r.path_prefix, "per": r.per, "rate": r.rate, "burst": r.burst}
                for r in rl.rules
            ],
        },
    }
