"""Validation: JSON data -> TenantPolicy, reporting every error of a file at once.

Each section is read by its own module (:mod:`edge.policy.sections`); this
one checks the top level and puts the sections together. The accepted keys
of every object are in ``OBJECT_KEYS``, assembled from the sections' own
tables; the validator rejects anything else, and a unit test walks these
tables against ``policies/schema.json`` so that the two cannot drift apart.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from edge.http.urls import normalize_host
from edge.policy.errors import PolicyError
from edge.policy.model import TenantPolicy
from edge.policy.sections import cache as cache_section
from edge.policy.sections import delivery as delivery_section
from edge.policy.sections import filters as filters_section
from edge.policy.sections import origins as origins_section
from edge.policy.sections import rules as rules_section
from edge.policy.sections import tls as tls_section
from edge.policy.sections.cache import CacheSettings, cache_data, parse_cache
from edge.policy.sections.delivery import Delivery, delivery_data, parse_delivery
from edge.policy.sections.filters import Filters, filters_data, parse_filters
from edge.policy.sections.origins import (
    ORIGINS,
    URL,
    Failover,
    OriginSpec,
    failover_data,
    origin_data,
    parse_failover,
    parse_origins,
    quick_origin as quick_origin_spec,
)
from edge.policy.sections.rules import Rule, parse_rules, rule_data
from edge.policy.sections.tls import TlsPolicy, parse_tls, tls_data
from edge.schema.check import BAD, BOOL, COMMENT, MISSING, STRING, Check, FieldError, boolean, show, string
from edge.schema.values import TENANT, TENANT_ID_RE, parse_size
from edge.waf.rules import rule_ids as shipped_waf_rule_ids

# --- the accepted shape ----------------------------------------------------------

OBJECT_KEYS: dict[str, tuple[str, ...]] = {
    # "$schema" lets editors find policies/schema.json; it is ignored.
    "policy": ("$schema", "hosts", "origins", "origin_failover", "cache", "rules", "rules_case_insensitive",
               "delivery", "filters", "tls"),
    **origins_section.KEYS,
    **cache_section.KEYS,
    **rules_section.KEYS,
    **delivery_section.KEYS,
    **filters_section.KEYS,
    **tls_section.KEYS,
}

# (object kind, key) -> (kind of the value's objects, whether the value is a list of them)
NESTED: dict[tuple[str, str], tuple[str, bool]] = {
    ("policy", "origins"): ("origin", True),
    ("policy", "origin_failover"): ("failover", False),
    ("policy", "cache"): ("cache", False),
    ("policy", "rules"): ("rule", True),
    ("policy", "delivery"): ("delivery", False),
    ("policy", "filters"): ("filters", False),
    ("policy", "tls"): ("tls", False),
    ("tls", "hsts"): ("hsts", False),
    ("filters", "ip_lists"): ("ip_lists", False),
    ("filters", "rate_limits"): ("rate_limits", False),
    ("filters", "under_attack"): ("under_attack", False),
    ("filters", "waf"): ("waf", False),
    ("filters", "request_limits"): ("request_limits", False),
    ("waf", "exclusions"): ("waf_exclusion", True),
    ("filters", "events"): ("events", False),
    ("rate_limits", "rules"): ("rate_rule", True),
    ("cache", "key"): ("key", False),
    ("rule", "match"): ("match", False),
    ("rule", "edge_ttl"): ("ttl", False),
    ("rule", "browser_ttl"): ("ttl", False),
    ("rule", "key"): ("key", False),
}


def accepted_paths() -> set[str]:
    """Every key path the validator accepts, as ``origins[].url``; lists are marked ``[]``."""
    paths: set[str] = set()

    def walk(kind: str, prefix: str) -> None:
        for key in (COMMENT, *OBJECT_KEYS[kind]):
            path = f"{prefix}{key}"
            paths.add(path)
            nested = NESTED.get((kind, key))
            if nested is not None:
                walk(nested[0], f"{path}[]." if nested[1] else f"{path}.")

    walk("policy", "")
    return paths


HOST = 'a hostname, an IP address, "*.suffix" or "*"'
HOSTS = "a non-empty list of hosts"


def _host(v: object) -> Any:
    if not isinstance(v, str):
        return BAD
    return normalize_host(v) or BAD


# --- the policy ------------------------------------------------------------------


def parse_policy(data: object, *, tenant: str, source: str, quick_origin: str | None = None,
                 waf_rule_ids: frozenset[str] | None = None,
                 origin_client_certificate: bool | None = None) -> TenantPolicy:
    """Validate decoded JSON into a TenantPolicy, or raise PolicyError listing every problem.

    With ``quick_origin`` (``edge serve --origin URL [--policy FILE]``), hosts
    default to ``["*"]`` and the origins are that one URL, whatever the data says.
    ``waf_rule_ids``: the WAF rules an exclusion may name, those of the
    node's rule set; None: the shipped rule set's (``policies/waf``).
    ``origin_client_certificate``: whether the node has a client certificate
    for origins to ask for; None: unknown here (where the node loads or
    writes policies it is known).
    """
    c = Check(source, OBJECT_KEYS)
    if not TENANT_ID_RE.fullmatch(tenant):
        c.fail("", TENANT, tenant)
    o = c.object(data, "", "policy")
    if o is None:
        raise PolicyError(c.errors)
    c.get(o, "", "$schema", None, STRING, string)

    if quick_origin is None:
        for key, expected in (("hosts", HOSTS), ("origins", ORIGINS)):
            if key not in o:
                c.fail(key, expected, MISSING)
    hosts = c.list(o, "", "hosts", ("*",), HOSTS, HOST, _host, non_empty=True)
    origins = parse_origins(c, o.get("origins", MISSING), origin_client_certificate)
    if quick_origin is not None:
        # The flag names the origin for this run; the file's origins are
        # still checked so that a typo there is not silently carried along.
        spec = quick_origin_spec(quick_origin)
        if spec is None:
            c.errors.append(FieldError("--origin", "", URL, show(quick_origin)))
        origins = [] if spec is None else [spec]

    failover = parse_failover(c, o.get("origin_failover", MISSING), "origin_failover")
    cache = parse_cache(c, o.get("cache", MISSING), "cache")
    rules = parse_rules(c, o.get("rules", []), cache.key)
    folded = c.get(o, "", "rules_case_insensitive", False, BOOL, boolean)
    delivery = parse_delivery(c, o.get("delivery", MISSING), "delivery")

    def known_waf_rules() -> frozenset[str]:
        return shipped_waf_rule_ids() if waf_rule_ids is None else waf_rule_ids

    filters = parse_filters(c, o.get("filters", MISSING), "filters", known_waf_rules)
    tls = parse_tls(c, o.get("tls", MISSING), "tls")

    if c.errors:
        raise PolicyError(c.errors)
    data_out = _data(hosts, origins, failover, cache, rules, delivery, filters, folded, tls)
    canonical = json.dumps(data_out, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    version = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return TenantPolicy(tenant, tuple(hosts), tuple(origins), failover, cache, tuple(rules), version, source,
                        delivery, filters, folded, tls)


def default_policy(origin_url: str, tenant: str = "default") -> TenantPolicy:
    """Every host, one origin, all defaults: ``edge serve --origin URL`` without a policy file."""
    return parse_policy({}, tenant=tenant, source="--origin", quick_origin=origin_url)


# --- back to data ----------------------------------------------------------------


def to_data(policy: TenantPolicy) -> dict[str, Any]:
    """The effective policy in the file format, every default spelled out.

    ``parse_policy(to_data(p), ...)`` gives an equal policy; the version is
    the hash of this, so comments and spelled-out defaults do not change it.
    """
    return _data(policy.hosts, policy.origins, policy.failover, policy.cache, policy.rules, policy.delivery,
                 policy.filters, policy.rules_case_insensitive, policy.tls)


def _data(hosts: Iterable[str], origins: Iterable[OriginSpec], failover: Failover,
          cache: CacheSettings, rules: Iterable[Rule], delivery: Delivery, filters: Filters,
          rules_case_insensitive: bool, tls: TlsPolicy) -> dict[str, Any]:
    return {
        "hosts": list(hosts),
        "origins": [origin_data(o) for o in origins],
        "origin_failover": failover_data(failover),
        "cache": cache_data(cache),
        "rules": [rule_data(r) for r in rules],
        "rules_case_insensitive": rules_case_insensitive,
        "delivery": delivery_data(delivery),
        "filters": filters_data(filters),
        "tls": tls_data(tls),
    }


__all__ = [
    "NESTED",
    "OBJECT_KEYS",
    "TENANT",
    "TENANT_ID_RE",
    "accepted_paths",
    "default_policy",
    "normalize_host",
    "parse_policy",
    "parse_size",
    "to_data",
]
