"""The web application firewall of the shared filter chain: rules as data
(``policies/waf/``, read by :mod:`edge.waf.rules`), anomaly scoring per
tenant, libinjection for SQL injection and XSS. See :mod:`edge.waf.engine`
for how it stays cheap; a tenant's settings are the policy section
:mod:`edge.policy.sections.waf`.

The package exports the rule set alone: the policy parser checks WAF
exclusions against the rules' ids, and the engine imports the policy's
section, so loading the engine here would close an import circle.
"""
from __future__ import annotations

from edge.waf.rules import RuleSet, WafRuleError, default_rules_dir, files_stamp, load_ruleset, rule_ids

__all__ = ["RuleSet", "WafRuleError", "default_rules_dir", "files_stamp", "load_ruleset", "rule_ids"]
