"""Tenant policies: typed, validated, immutable, swapped atomically.

Load a directory with :class:`PolicyDirectory`, resolve a request's tenant
with ``directory.current.resolve(host)``, then ask the policy
``request_decision(path)`` before the lookup and
``response_decision(path, content_type)`` once the response is known.
``policy.delivery`` (regional delivery) is applied by :func:`edge.geo.decide.decide`,
``policy.filters`` (address lists, rate limits) by the filters in :mod:`edge.filters`.
Each section of a policy has its dataclass, parser and serialiser in its own
module of :mod:`edge.policy.sections`; :mod:`edge.policy.parse` puts them together.
"""
from __future__ import annotations

from edge.policy.errors import FieldError, PolicyError
from edge.policy.load import (
    MAX_POLICY_FILE_BYTES,
    LoadReport,
    PolicyDirectory,
    load_policy_file,
    read_policy_json,
)
from edge.policy.match import Glob, Match, media_type
from edge.policy.model import (
    CacheSettings,
    CidrSet,
    Delivery,
    Failover,
    Filters,
    IpLists,
    OriginSpec,
    RateLimits,
    RateRule,
    RequestDecision,
    ResponseDecision,
    Rule,
    TenantPolicy,
    Ttl,
)
from edge.policy.parse import (
    default_policy,
    normalize_host,
    parse_policy,
    parse_size,
    to_data,
)
from edge.policy.resolve import PolicySet
from edge.policy.sources import DirectorySource, FileSource, PolicySource

__all__ = [
    "MAX_POLICY_FILE_BYTES",
    "CacheSettings",
    "CidrSet",
    "Delivery",
    "DirectorySource",
    "Failover",
    "FieldError",
    "FileSource",
    "Filters",
    "Glob",
    "IpLists",
    "LoadReport",
    "Match",
    "OriginSpec",
    "PolicyDirectory",
    "PolicyError",
    "PolicySet",
    "PolicySource",
    "RateLimits",
    "RateRule",
    "RequestDecision",
    "ResponseDecision",
    "Rule",
    "TenantPolicy",
    "Ttl",
    "default_policy",
    "load_policy_file",
    "media_type",
    "normalize_host",
    "parse_policy",
    "parse_size",
    "read_policy_json",
    "to_data",
]
