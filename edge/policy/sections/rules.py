"""The ``rules`` section: ordered rules that set TTLs, bypass or the cache
key for the requests and responses they match."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from edge.cache.key import KeyOptions
from edge.policy.match import Match
from edge.policy.sections.cache import SECONDS, key_data, parse_key_fields, seconds
from edge.schema.check import BAD, BOOL, PATH, Check, boolean, join, request_path

MAX_RULES = 1000

KEYS: dict[str, tuple[str, ...]] = {
    "rule": ("match", "edge_ttl", "browser_ttl", "bypass", "key"),
    "match": ("path_prefix", "path_glob", "content_type"),
    "ttl": ("override", "default"),
}

MEDIA_TYPE = 'a media type like "text/html" or "image/*"'
MEDIA_TYPES = "a non-empty list of media types"
TTL_ONE = 'exactly one of "override" or "default"'
RULES = f"a list of at most {MAX_RULES} rules"
RULE_EMPTY = 'at least one of "edge_ttl", "browser_ttl", "bypass" or "key"'
RULE_KEY = '"key" only on rules without a "content_type" condition (the cache key is chosen before the response exists)'


@dataclass(frozen=True, slots=True)
class Ttl:
    """``override`` replaces the origin's lifetime; ``default`` applies only when the origin gives none."""

    mode: Literal["override", "default"]
    seconds: int


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


_MEDIA_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"  # RFC 6838 §4.2
_MEDIA_RE = re.compile(rf"{_MEDIA_NAME}/(?:{_MEDIA_NAME}|\*)")


def _media_type(v: object) -> Any:
    if not isinstance(v, str):
        return BAD
    v = v.strip().lower()
    return v if _MEDIA_RE.fullmatch(v) else BAD


def parse_rules(c: Check, raw: object, tenant_key: KeyOptions) -> list[Rule]:
    """The policy's ``rules`` (``raw``: its value, ``[]`` when absent); a
    rule's key starts from the tenant's ``cache.key``."""
    rules: list[Rule] = []
    if not isinstance(raw, list) or len(raw) > MAX_RULES:
        c.fail("rules", RULES, raw)
        return rules
    for i, item in enumerate(raw):
        rule = _rule(c, item, f"rules[{i}]", tenant_key)
        if rule is not None:
            rules.append(rule)
    return rules


def _ttl(c: Check, o: dict[str, Any], path: str, key: str) -> Ttl | None:
    if key not in o:
        return None
    where = join(path, key)
    t = c.object(o[key], where, "ttl")
    if t is None:
        return None
    modes = [m for m in ("override", "default") if m in t]
    if len(modes) != 1:
        c.fail(where, TTL_ONE, "both" if modes else "neither", literal=True)
        return None
    value = c.get(t, where, modes[0], None, SECONDS, seconds)
    return None if value is None else Ttl(modes[0], value)  # type: ignore[arg-type]


def _match(c: Check, o: dict[str, Any], path: str) -> Match | None:
    if "match" not in o:
        return Match()
    where = join(path, "match")
    m = c.object(o["match"], where, "match")
    if m is None:
        return None
    return Match(
        path_prefix=c.get(m, where, "path_prefix", None, PATH, request_path),
        path_glob=c.get(m, where, "path_glob", None, PATH, request_path),
        content_type=c.list(m, where, "content_type", None, MEDIA_TYPES, MEDIA_TYPE, _media_type, non_empty=True),
    )


def _rule(c: Check, raw: object, path: str, tenant_key: KeyOptions) -> Rule | None:
    o = c.object(raw, path, "rule")
    if o is None:
        return None
    before = len(c.errors)
    match = _match(c, o, path)
    edge_ttl = _ttl(c, o, path, "edge_ttl")
    browser_ttl = _ttl(c, o, path, "browser_ttl")
    bypass = c.get(o, path, "bypass", None, BOOL, boolean)
    key = None
    if "key" in o:
        fields = parse_key_fields(c, o["key"], join(path, "key"))
        if match is not None and match.content_type is not None:
            c.fail(join(path, "key"), RULE_KEY, '"key" with "content_type"', literal=True)
        else:
            key = dataclasses.replace(tenant_key, **fields)
    if not any(k in o for k in ("edge_ttl", "browser_ttl", "bypass", "key")):
        c.fail(path, RULE_EMPTY, "none", literal=True)
    if len(c.errors) > before or match is None:
        return None
    return Rule(match, edge_ttl, browser_ttl, bypass, key)


def rule_data(rule: Rule) -> dict[str, Any]:
    m = rule.match
    match = {k: v for k, v in (("path_prefix", m.path_prefix), ("path_glob", m.path_glob)) if v is not None}
    if m.content_type is not None:
        match["content_type"] = list(m.content_type)
    out: dict[str, Any] = {"match": match}
    for name, ttl in (("edge_ttl", rule.edge_ttl), ("browser_ttl", rule.browser_ttl)):
        if ttl is not None:
            out[name] = {ttl.mode: ttl.seconds}
    if rule.bypass is not None:
        out["bypass"] = rule.bypass
    if rule.key is not None:
        out["key"] = key_data(rule.key)
    return out
