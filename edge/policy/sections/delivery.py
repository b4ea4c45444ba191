"""The ``delivery`` section: where and to whom a tenant is delivered.
:func:`edge.geo.decide.decide` applies it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from edge.http.urls import check_url
from edge.policy.sections.cidrs import NO_CIDRS, CidrSet, cidr_list, cidrs_data
from edge.schema.check import BAD, MISSING, Check, join, one_of
from edge.schema.values import COUNTRY, country

MAX_EXEMPT_CIDRS = 10_000

KEYS: dict[str, tuple[str, ...]] = {
    "delivery": ("allow_countries", "deny_countries", "unknown", "action", "redirect_url",
                 "exempt_cidrs", "edge_countries", "in_region_url"),
}

COUNTRIES = "a list of ISO 3166-1 alpha-2 country codes"
UNKNOWN = '"allow" or "deny"'
ACTION = '"block" or "redirect"'
CIDRS = f"a list of at most {MAX_EXEMPT_CIDRS} IP networks"
REDIRECT_URL = 'an absolute https:// URL without user info, such as "https://example.de/unavailable"'
REDIRECT_NEEDED = REDIRECT_URL + ' (required when "action" is "redirect")'
REDIRECT_UNUSED = 'null unless "action" is "redirect"'
IN_REGION_URL = 'an absolute https:// URL without user info, query or fragment, such as "https://de.cdn.example.de"'
IN_REGION_UNUSED = 'null unless "edge_countries" lists countries'


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


def _redirect_url(v: object) -> Any:
    """A Location for refused clients -> the URL, scheme in lower case."""
    if check_url(v, ("https",)) is None:
        return BAD
    assert isinstance(v, str)
    return "https" + v[v.index(":"):]


def _in_region_url(v: object) -> Any:
    if check_url(v, ("https",), query=False, fragment=False) is None:
        return BAD
    assert isinstance(v, str)
    # The request's path is appended, which starts with "/".
    return ("https" + v[v.index(":"):]).rstrip("/")


def parse_delivery(c: Check, raw: object, path: str) -> Delivery:
    if raw is MISSING:
        return NO_RESTRICTION
    o = c.object(raw, path, "delivery")
    if o is None:
        return NO_RESTRICTION
    allow = c.list(o, path, "allow_countries", (), COUNTRIES, COUNTRY, country)
    deny = c.list(o, path, "deny_countries", (), COUNTRIES, COUNTRY, country)
    unknown = c.get(o, path, "unknown", "allow", UNKNOWN, one_of("allow", "deny"))
    action = c.get(o, path, "action", "block", ACTION, one_of("block", "redirect"))

    # null and absent are the same; an invalid "action" is reported on its
    # own, and the URL is still checked so that one run shows every error.
    redirect_url = None
    raw_redirect = o.get("redirect_url")
    action_valid = o.get("action", "block") in ("block", "redirect")
    if raw_redirect is not None:
        if action_valid and action == "block":
            c.fail(join(path, "redirect_url"), REDIRECT_UNUSED, raw_redirect)
        else:
            redirect_url = c.get(o, path, "redirect_url", None, REDIRECT_URL, _redirect_url)
    elif action == "redirect":
        c.fail(join(path, "redirect_url"), REDIRECT_NEEDED, o.get("redirect_url", MISSING))

    exempt = cidr_list(c, o, path, "exempt_cidrs", MAX_EXEMPT_CIDRS, CIDRS)
    edge = c.list(o, path, "edge_countries", (), COUNTRIES, COUNTRY, country)

    # Without edge_countries it would never be used: say so rather than ignore it.
    in_region_url = None
    raw_in_region = o.get("in_region_url")
    if raw_in_region is not None:
        raw_edge = o.get("edge_countries", [])
        if isinstance(raw_edge, list) and not raw_edge:
            c.fail(join(path, "in_region_url"), IN_REGION_UNUSED, raw_in_region)
        else:
            in_region_url = c.get(o, path, "in_region_url", None, IN_REGION_URL, _in_region_url)
    return Delivery(
        allow_countries=frozenset(allow),
        deny_countries=frozenset(deny),
        unknown=unknown,
        action=action,
        redirect_url=redirect_url,
        exempt_cidrs=exempt,
        edge_countries=frozenset(edge),
        in_region_url=in_region_url,
    )


def delivery_data(d: Delivery) -> dict[str, Any]:
    return {
        "allow_countries": sorted(d.allow_countries),
        "deny_countries": sorted(d.deny_countries),
        "unknown": d.unknown,
        "action": d.action,
        "redirect_url": d.redirect_url,
        "exempt_cidrs": cidrs_data(d.exempt_cidrs),
        "edge_countries": sorted(d.edge_countries),
        "in_region_url": d.in_region_url,
    }
