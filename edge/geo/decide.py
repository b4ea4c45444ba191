"""The regional delivery decision: one tenant's ``delivery`` section applied to one request.

Pure: no I/O, no clock, no logging. The caller supplies the client's address
and country (from the GeoIP lookup) and this node's country, and turns the
outcome into a response. Location-less decisions are shared constants, so the
common cases allocate nothing.

Order, first match wins:

1. ``edge_countries`` (data residency): a node outside them, or with no
   country configured (fail closed), must neither cache nor serve the tenant:
   WRONG_NODE_REDIRECT to ``in_region_url`` + path and query, or WRONG_NODE
   (421). Exempt clients too: this is about where the data is, not who reads it.
2. ``exempt_cidrs``: DELIVER.
3. No country known: ``unknown`` decides.
4. ``allow_countries`` non-empty and the country not in it: refuse.
5. The country in ``deny_countries``: refuse.
6. DELIVER.

Refuse is BLOCK (451), or REDIRECT (307 to ``redirect_url``) when the action is
"redirect".
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from edge.policy.model import Delivery


class Outcome(enum.Enum):
    DELIVER = "deliver"
    BLOCK = "block"  # 451 Unavailable For Legal Reasons
    REDIRECT = "redirect"  # 307 to the tenant's redirect_url
    WRONG_NODE_REDIRECT = "wrong_node_redirect"  # 307 to in_region_url + path and query
    WRONG_NODE = "wrong_node"  # 421 Misdirected Request

    @property
    def status(self) -> int | None:
        """The response status for a refusal; None for DELIVER."""
        return _STATUS[self]


_STATUS = {
    Outcome.DELIVER: None,
    Outcome.BLOCK: 451,
    Outcome.REDIRECT: 307,
    Outcome.WRONG_NODE_REDIRECT: 307,
    Outcome.WRONG_NODE: 421,
}

# Which rule decided: a small fixed set, fit for a metrics label.
RULE_UNRESTRICTED = "unrestricted"  # no client restriction (and the node may serve)
RULE_EDGE_COUNTRIES = "edge_countries"
RULE_EXEMPT = "exempt"
RULE_UNKNOWN = "unknown"  # no country known: the "unknown" setting decided
RULE_ALLOW = "allow_countries"  # refused: not in the allow list
RULE_DENY = "deny_countries"  # refused: in the deny list
RULE_COUNTRIES = "countries"  # delivered: the country passed both lists
RULES = (RULE_UNRESTRICTED, RULE_EDGE_COUNTRIES, RULE_EXEMPT, RULE_UNKNOWN, RULE_ALLOW, RULE_DENY, RULE_COUNTRIES)


@dataclass(frozen=True, slots=True)
class DeliveryDecision:
    outcome: Outcome
    rule: str  # one of RULES
    location: str | None = None  # for REDIRECT and WRONG_NODE_REDIRECT

    @property
    def delivered(self) -> bool:
        return self.outcome is Outcome.DELIVER


UNRESTRICTED = DeliveryDecision(Outcome.DELIVER, RULE_UNRESTRICTED)
_EXEMPT = DeliveryDecision(Outcome.DELIVER, RULE_EXEMPT)
_UNKNOWN_ALLOWED = DeliveryDecision(Outcome.DELIVER, RULE_UNKNOWN)
_COUNTRY_ALLOWED = DeliveryDecision(Outcome.DELIVER, RULE_COUNTRIES)
_WRONG_NODE = DeliveryDecision(Outcome.WRONG_NODE, RULE_EDGE_COUNTRIES)
_BLOCKED = {rule: DeliveryDecision(Outcome.BLOCK, rule) for rule in (RULE_UNKNOWN, RULE_ALLOW, RULE_DENY)}


def decide(delivery: Delivery, *, client_ip: str | None, country: str | None,
           node_country: str | None, path_and_query: str) -> DeliveryDecision:
    """Whether this node delivers this request, and if not, what the client gets.

    ``client_ip``: the client's address as text (after trusted-proxy
    handling), None if unknown: then it is in no exempt network.
    ``country``: ISO 3166-1 alpha-2 from the GeoIP lookup; None or "" when
    the database has none. ``node_country``: this node's ``node.country``.
    ``path_and_query``: the request target as the client sent it, appended
    to ``in_region_url``.
    """
    if not delivery.active:
        return UNRESTRICTED

    edge = delivery.edge_countries
    if edge and (not node_country or (node_country not in edge and node_country.upper() not in edge)):
        base = delivery.in_region_url
        if not base:
            return _WRONG_NODE
        # A target that is not a path ("*" of OPTIONS) goes to the root.
        target = path_and_query if path_and_query.startswith("/") else "/"
        return DeliveryDecision(Outcome.WRONG_NODE_REDIRECT, RULE_EDGE_COUNTRIES, base.rstrip("/") + target)

    if not delivery.restricted:
        return UNRESTRICTED
    if client_ip is not None and delivery.exempt_cidrs and client_ip in delivery.exempt_cidrs:
        return _EXEMPT
    if not country:
        return _UNKNOWN_ALLOWED if delivery.unknown == "allow" else _refuse(delivery, RULE_UNKNOWN)
    # A lower-case code must not slip past a deny list.
    country = country.upper()
    allow = delivery.allow_countries
    if allow and country not in allow:
        return _refuse(delivery, RULE_ALLOW)
    if country in delivery.deny_countries:
        return _refuse(delivery, RULE_DENY)
    return _COUNTRY_ALLOWED


def _refuse(delivery: Delivery, rule: str) -> DeliveryDecision:
    if delivery.action == "redirect" and delivery.redirect_url:
        return DeliveryDecision(Outcome.REDIRECT, rule, delivery.redirect_url)
    return _BLOCKED[rule]


__all__ = [
    "RULES",
    "RULE_ALLOW",
    "RULE_COUNTRIES",
    "RULE_DENY",
    "RULE_EDGE_COUNTRIES",
    "RULE_EXEMPT",
    "RULE_UNKNOWN",
    "RULE_UNRESTRICTED",
    "UNRESTRICTED",
    "DeliveryDecision",
    "Outcome",
    "decide",
]
