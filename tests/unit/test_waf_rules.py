"""WAF rule files: every load error names file, rule and field; the ReDoS check; transforms; operators."""
from __future__ import annotations

import json

import pytest

from edge.waf import WafRuleError, default_rules_dir, load_ruleset
from edge.waf import transforms as tf
from edge.waf.operators import Pm
from edge.waf.rules import redos_problem, rule_ids

GOOD = {"id": "r1", "targets": ["args"], "operator": "rx", "value": "abc", "score": 5, "tags": ["sqli"]}


def write(tmp_path, rules, name="a.json"):
    (tmp_path / name).write_text(json.dumps({"rules": rules}))
    return tmp_path


ERRORS = [
    ("unknown key", {**GOOD, "severity": 5}, "a.json: rule r1: severity: expected one of the keys id, description, targets, transforms, operator, value, score, tags, paranoia, phase, gate, found an unknown key"),
    ("missing id", {k: v for k, v in GOOD.items() if k != "id"}, 'a.json: rules[0]: id: expected an id of 1 to 64 letters, digits, ".", "_" or "-", found nothing'),
    ("bad id", {**GOOD, "id": "a b"}, 'a.json: rules[0]: id: expected an id of 1 to 64 letters, digits, ".", "_" or "-", found "a b"'),
    ("missing operator", {k: v for k, v in GOOD.items() if k != "operator"}, "a.json: rule r1: operator: expected one of rx, pm, contains, eq, length_gt, libinjection_sqli, libinjection_xss, found nothing"),
    ("unknown operator", {**GOOD, "operator": "regex"}, 'a.json: rule r1: operator: expected one of rx, pm, contains, eq, length_gt, libinjection_sqli, libinjection_xss, found "regex"'),
    ("unknown transform", {**GOOD, "transforms": ["base64"]}, 'a.json: rule r1: transforms[0]: expected one of url_decode, html_entity_decode, lowercase, compress_whitespace, remove_comments, remove_nulls, normalise_path, found "base64"'),
    ("unknown target", {**GOOD, "targets": ["args", "xml"]}, 'a.json: rule r1: targets[1]: expected one of method, path, query, args, args_names, headers, cookies, cookie_names, body, files, or "header:NAME" with a lower-case header name, found "xml"'),
    ("bad header target", {**GOOD, "targets": ["header:User Agent"]}, 'a.json: rule r1: targets[0]: expected one of method, path, query, args, args_names, headers, cookies, cookie_names, body, files, or "header:NAME" with a lower-case header name, found "header:User Agent"'),
    ("regex does not compile", {**GOOD, "value": "(abc"}, 'a.json: rule r1: value: expected a regular expression that compiles, found "(abc" (missing ), unterminated subpattern at position 0)'),
    ("nested quantifier", {**GOOD, "value": "(a+)+b"}, 'a.json: rule r1: value: expected a regular expression without catastrophic backtracking, found "(a+)+b" (a repeated group contains another unbounded repeat (nested quantifier))'),
    ("missing value", {k: v for k, v in GOOD.items() if k != "value"}, "a.json: rule r1: value: expected a regular expression (Python syntax, matched case-insensitively), found nothing"),
    ("value for libinjection", {**GOOD, "operator": "libinjection_sqli"}, 'a.json: rule r1: value: expected no value for operator libinjection_sqli, found "abc"'),
    ("empty pm", {**GOOD, "operator": "pm", "value": []}, "a.json: rule r1: value: expected a non-empty list of non-empty phrases, found []"),
    ("score zero", {**GOOD, "score": 0}, "a.json: rule r1: score: expected an integer 1..100, found 0"),
    ("score bool", {**GOOD, "score": True}, "a.json: rule r1: score: expected an integer 1..100, found true"),
    ("unknown tag", {**GOOD, "tags": ["sqli", "evil"]}, 'a.json: rule r1: tags[1]: expected one of sqli, xss, lfi, rfi, rce, php, java, scanner, protocol, found "evil"'),
    ("paranoia", {**GOOD, "paranoia": 5}, "a.json: rule r1: paranoia: expected an integer 1..4, found 5"),
    ("phase", {**GOOD, "phase": "response"}, 'a.json: rule r1: phase: expected "request" or "body", found "response"'),
    ("not an object", ["rx"], 'a.json: rules[0]: expected a rule object, found ["rx"]'),
]


@pytest.mark.parametrize(("name", "rule", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_rule_errors_are_precise(tmp_path, name, rule, message):
    with pytest.raises(WafRuleError) as err:
        load_ruleset(write(tmp_path, [rule]))
    assert str(err.value) == message


def test_duplicate_ids_within_and_across_files(tmp_path):
    with pytest.raises(WafRuleError, match="a.json: rule r1: id: expected an id no other rule has, found it twice in this file"):
        load_ruleset(write(tmp_path, [GOOD, GOOD]))
    (tmp_path / "a.json").unlink()
    write(tmp_path, [GOOD], "a.json")
    write(tmp_path, [GOOD], "b.json")
    with pytest.raises(WafRuleError, match="b.json: rule r1: id: expected an id no other rule has, found one already used in a.json"):
        load_ruleset(tmp_path)


@pytest.mark.parametrize(("text", "message"), [
    ("{", "a.json: expected JSON, found a syntax error"),
    ('{"rules": [], "rules": []}', "a.json: expected each key once in an object, found 'rules' twice"),
    ("[]", 'a.json: expected an object {"rules": [...]}, found []'),
    ('{"rule": []}', "a.json: rule: expected one of the keys description, rules, found an unknown key"),
    ('{"description": "x"}', "a.json: rules: expected a list of rules, found nothing"),
])
def test_file_errors(tmp_path, text, message):
    (tmp_path / "a.json").write_text(text)
    with pytest.raises(WafRuleError) as err:
        load_ruleset(tmp_path)
    assert str(err.value).startswith(message)


def test_empty_or_missing_directory(tmp_path):
    with pytest.raises(WafRuleError, match="expected at least one WAF rule file"):
        load_ruleset(tmp_path)
    with pytest.raises(WafRuleError, match="expected a directory"):
        load_ruleset(tmp_path / "nope")


def test_a_failed_load_leaves_the_previous_ruleset_usable(tmp_path):
    before = load_ruleset(write(tmp_path, [GOOD]))
    write(tmp_path, [{**GOOD, "value": "(a*)*"}])
    with pytest.raises(WafRuleError):
        load_ruleset(tmp_path)
    assert before.ids == {"r1"} and before.rules[0].operator.match("xabcx")


def test_rule_ids_follow_the_files_and_survive_a_broken_edit(tmp_path):
    """What exclusions may name when no node passes its rule set: the files
    as they are, or, once they break, as they last were (a node keeps its
    previous rules too)."""
    with pytest.raises(WafRuleError):
        rule_ids(tmp_path)  # no rules yet: nothing to fall back on
    write(tmp_path, [GOOD])
    assert rule_ids(tmp_path) == {"r1"}
    write(tmp_path, [GOOD, {**GOOD, "id": "r2"}])
    assert rule_ids(tmp_path) == {"r1", "r2"}
    (tmp_path / "a.json").write_text("{broken")
    assert rule_ids(tmp_path) == {"r1", "r2"}
    assert rule_ids() == load_ruleset(default_rules_dir()).ids


def test_shipped_rules_load():
    rules = load_ruleset(default_rules_dir())
    assert len(rules.rules) >= 30
    assert {t for r in rules.rules for t in r.tags} >= {"sqli", "xss", "lfi", "rce", "php", "java", "scanner"}


REDOS = [
    ("(a+)+", False), ("(a*)*", False), ("(a|a)*", False), ("(.*a){10}", False), ("(a?)*", False),
    ("(a|ab)+", False), ("(?:\\s*,)+x", False), ("(\\w+\\s?)+$", False), ("(?:x+x+)+y", False),
    ("(foo|bar|foo)*", False), ("(a)\\1", False),
    ("abc", True), ("union\\s+select", True), ("(?:ab|cd)+", True), ("(a|b)*", True), ("[a-z]+\\d*", True),
    ("(?:a++)+", True), ("(?>a+)+", True), ("\\$\\{[^}]{0,40}\\$\\{", True), ("(?:\\d{1,3}\\.){3}\\d{1,3}", True),
]


@pytest.mark.parametrize(("pattern", "safe"), REDOS, ids=[r[0] for r in REDOS])
def test_redos_check(pattern, safe):
    assert (redos_problem(pattern) is None) is safe


TRANSFORMS = [
    ("url_decode", "%27%20OR%201", "' OR 1"),
    ("url_decode", "%252e%252e%252f", "../"),
    ("url_decode", "%u003cscript", "<script"),
    ("url_decode", "a+b", "a b"),
    ("url_decode", "%zz%", "%zz%"),
    ("url_decode", "%ff", "\ufffd"),
    ("html_entity_decode", "&lt;script&gt;", "<script>"),
    ("html_entity_decode", "&#106;&#x61;va", "java"),
    ("html_entity_decode", "&amp;lt;", "<"),
    ("lowercase", "SeLeCt", "select"),
    ("compress_whitespace", "a \t\n\x0b b", "a b"),
    ("remove_comments", "UNION/**/SELECT/*x", "UNION SELECT "),
    ("remove_nulls", "a\x00b", "ab"),
    ("normalise_path", "/a/./b//../../etc/passwd", "/etc/passwd"),
    ("normalise_path", "..\\..\\windows\\win.ini", "windows/win.ini"),
    ("normalise_path", "/static/app.js", "/static/app.js"),
]


@pytest.mark.parametrize(("name", "value", "expected"), TRANSFORMS)
def test_transforms(name, value, expected):
    assert tf.TRANSFORMS[name](value) == expected


def test_pm_is_one_case_insensitive_alternation():
    pm = Pm.build(("sqlmap", "nikto", "dirb/"))
    assert pm.match("SQLMap/1.7") and pm.match("x Nikto y") and pm.match("DirB/2.2")
    assert not pm.match("Mozilla/5.0 Firefox/123.0")


@pytest.mark.parametrize(("op", "value", "hit", "miss"), [
    ("contains", "\u0000", "a\u0000b", "ab"),
    ("eq", "TRACE", "TRACE", "trace"),
    ("length_gt", 3, "abcd", "abc"),
    ("libinjection_sqli", None, "1' OR '1'='1", "O'Reilly"),
    ("libinjection_xss", None, "<script>alert(1)</script>", "<p><strong>Hi</strong></p>"),
])
def test_operators(tmp_path, op, value, hit, miss):
    rule = {**GOOD, "operator": op, "value": value}
    if value is None:
        del rule["value"]
    operator = load_ruleset(write(tmp_path, [rule])).rules[0].operator
    assert operator.match(hit) and not operator.match(miss)
