"""The web application firewall of the shared filter chain: rules as data
(``policies/waf/``), anomaly scoring per tenant, libinjection for SQL
injection and XSS. See :mod:`edge.waf.engine` for how it stays cheap."""
from __future__ import annotations

from edge.waf.engine import Waf, WafResult
from edge.waf.rules import RuleSet, WafRuleError, default_rules_dir, files_stamp, load_ruleset, rule_ids
from edge.waf.settings import KEYS, Exclusion, WafSettings, parse_waf

__all__ = ["KEYS", "Exclusion", "RuleSet", "Waf", "WafResult", "WafRuleError", "WafSettings",
           "default_rules_dir", "load_ruleset", "parse_waf", "rule_ids"]


_COMPILED: dict[tuple, tuple[RuleSet, Waf]] = {}


def compiled(directory) -> tuple[RuleSet, Waf]:
    """The rule set of ``directory`` and its compiled engine, made once per
    version of the files (compiling takes a good part of a second; nodes
    of one process and reloads that changed nothing share it)."""
    stamp = files_stamp(directory)
    key = (str(directory), stamp)
    found = _COMPILED.get(key) if stamp is not None else None
    if found is None:
        rules = load_ruleset(directory)
        found = (rules, Waf(rules))
        if stamp is not None:
            _COMPILED.clear()  # only the current version is worth keeping
            _COMPILED[key] = found
    return found
