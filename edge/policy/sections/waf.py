"""The ``filters.waf`` section: a tenant's WAF settings.
:mod:`edge.waf.engine` applies them.

    "waf": {"mode": "block", "threshold": 5, "paranoia": 1, "inspect_body": true,
            "max_body": 131072,
            "exclusions": [{"rule": "xss-libinjection", "path_prefix": "/cms/"}]}

Anomaly scoring: every matched rule adds its score, and a request whose
total reaches ``threshold`` is refused (5: one critical rule is enough).
An exclusion turns one rule off for the tenant, or only under a path prefix
(matched against the normalised path, like every path rule of a policy).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from edge.cache.key import decoded_view
from edge.schema.check import (
    BAD, BOOL, COMMENT, FILTER_MODE, MISSING, OBJECT, PATH, Check, boolean, filter_mode, int_in, join, request_path,
)

DEFAULT_THRESHOLD = 5
MAX_THRESHOLD = 10_000
DEFAULT_MAX_BODY = 131_072
MAX_MAX_BODY = 16 * 1024 * 1024
MAX_PARANOIA = 4
MAX_EXCLUSIONS = 1000

KEYS: dict[str, tuple[str, ...]] = {
    "waf": ("mode", "threshold", "paranoia", "inspect_body", "max_body", "exclusions"),
    "waf_exclusion": ("rule", "path_prefix"),
}

MODE = FILTER_MODE
THRESHOLD = f"an integer 1..{MAX_THRESHOLD}"
PARANOIA = f"an integer 1..{MAX_PARANOIA}"
# No 0: elsewhere 0 says "no limit" (max_concurrent), here it would read
# no body at all, so a tenant meaning the one would silently get the other.
MAX_BODY = f'an integer number of bytes 1..{MAX_MAX_BODY} (to inspect no body: "inspect_body": false)'
EXCLUSIONS = f"a list of at most {MAX_EXCLUSIONS} exclusions"
RULE = "the id of a rule in the WAF rule set"


@dataclass(frozen=True, slots=True)
class Exclusion:
    rule: str
    path_prefix: str | None = None  # None: everywhere


@dataclass(frozen=True, slots=True)
class WafSettings:
    mode: Literal["block", "log", "off"] = "block"
    threshold: int = DEFAULT_THRESHOLD
    inspect_body: bool = True
    max_body: int = DEFAULT_MAX_BODY  # bytes of a body inspected; the rest passes uninspected
    exclusions: tuple[Exclusion, ...] = ()
    paranoia: int = 1  # rules of a higher paranoia level are skipped
    active: bool = field(init=False, compare=False)
    # Rule ids excluded on every path: the engine's hot path tests only these.
    excluded: frozenset[str] = field(init=False, compare=False, repr=False)
    scoped: tuple[Exclusion, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "active", self.mode != "off")
        set_(self, "excluded", frozenset(e.rule for e in self.exclusions if e.path_prefix is None))
        set_(self, "scoped", tuple(e for e in self.exclusions if e.path_prefix is not None))

    def excluded_for(self, path: str) -> frozenset[str]:
        """Rule ids off for a request to ``path`` (normalised)."""
        if not self.scoped:
            return self.excluded
        # Off only where the path as sent and as a lenient origin decodes it
        # both match: "/cms/..%2Fadmin" is not under "/cms/" for an origin.
        decoded = decoded_view(path)
        extra = [
            e.rule for e in self.scoped
            if path.startswith(e.path_prefix) and decoded.startswith(e.path_prefix)  # type: ignore[arg-type]
        ]
        return self.excluded.union(extra) if extra else self.excluded


def parse_waf(c: Check, o: dict, path: str, rule_ids: frozenset[str]) -> WafSettings:
    """``o`` is the key-checked ``waf`` object; problems go to ``c``.
    ``rule_ids``: the rules an exclusion may name (the node's rule set)."""
    mode = c.get(o, path, "mode", "block", MODE, filter_mode)
    threshold = c.get(o, path, "threshold", DEFAULT_THRESHOLD, THRESHOLD, int_in(1, MAX_THRESHOLD))
    paranoia = c.get(o, path, "paranoia", 1, PARANOIA, int_in(1, MAX_PARANOIA))
    inspect_body = c.get(o, path, "inspect_body", True, BOOL, boolean)
    max_body = c.get(o, path, "max_body", DEFAULT_MAX_BODY, MAX_BODY, int_in(1, MAX_MAX_BODY))
    exclusions: list[Exclusion] = []
    raw = o.get("exclusions", [])
    where = join(path, "exclusions")
    if not isinstance(raw, list) or len(raw) > MAX_EXCLUSIONS:
        c.fail(where, EXCLUSIONS, raw)
        raw = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            c.fail(at, OBJECT, item)
            continue
        bad = False
        for key in item:
            if key not in KEYS["waf_exclusion"] and key != COMMENT:
                c.fail(join(at, key), "one of the keys rule, path_prefix", "an unknown key", literal=True)
                bad = True
        rule = item.get("rule")
        if "rule" not in item:
            c.fail(join(at, "rule"), RULE, MISSING)
            bad = True
        elif not isinstance(rule, str) or rule not in rule_ids:
            c.fail(join(at, "rule"), RULE, rule)
            bad = True
        prefix = item.get("path_prefix")
        if prefix is not None:
            prefix = request_path(prefix)
            if prefix is BAD:
                c.fail(join(at, "path_prefix"), PATH, item.get("path_prefix"))
                bad = True
        if not bad:
            exclusions.append(Exclusion(rule, prefix))
    return WafSettings(mode=mode, threshold=threshold, inspect_body=inspect_body, max_body=max_body,
                       exclusions=tuple(exclusions), paranoia=paranoia)


def waf_data(w: WafSettings) -> dict[str, Any]:
    """The section with every default spelled out (the effective policy)."""
    return {
        "mode": w.mode,
        "threshold": w.threshold,
        "paranoia": w.paranoia,
        "inspect_body": w.inspect_body,
        "max_body": w.max_body,
        "exclusions": [{"rule": e.rule, "path_prefix": e.path_prefix} for e in w.exclusions],
    }
