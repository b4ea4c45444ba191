"""The default rule set against the attack and benign corpora in tests/waf_corpus/.

Every attack class must be detected at the default threshold at least at
its target rate, and ordinary traffic (quotes in searches, CMS markup, code
in forum posts) must pass. A failure lists the lines that were missed or
blocked.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from multidict import CIMultiDict

from edge.policy.sections.waf import WafSettings
from edge.waf import default_rules_dir, load_ruleset
from edge.waf.engine import Waf

CORPUS = Path(__file__).resolve().parent.parent / "waf_corpus"
SETTINGS = WafSettings()
TARGETS = {"sqli": 0.9, "xss": 0.9, "lfi": 0.9, "rce": 0.9, "java": 0.9, "scanner": 0.9, "php": 0.85}
MAX_FALSE_POSITIVES = 0.01
BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "Accept-Language": "de-DE,de;q=0.9,en;q=0.7",
}


def read_cases(name: str) -> list[tuple[int, str, str]]:
    """(line number, where, payload) of a corpus file."""
    out = []
    for n, line in enumerate((CORPUS / name).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        where, sep, payload = line.partition("\t")
        assert sep, f"{name}:{n}: expected WHERE<TAB>PAYLOAD"
        out.append((n, where, payload))
    return out


def request_for(where: str, payload: str) -> tuple[str, str, str, CIMultiDict, bytes, str | None]:
    """(method, path, query, headers, body, content type) that puts ``payload`` where the corpus says."""
    headers = CIMultiDict(BROWSER)
    if where == "arg":
        return "GET", "/search", "q=" + quote(payload, safe=""), headers, b"", None
    if where == "path":
        return "GET", payload, "", headers, b"", None
    if where == "cookie":
        headers["Cookie"] = "sid=" + payload
        return "GET", "/", "", headers, b"", None
    if where.startswith("header:"):
        headers[where[7:]] = payload
        return "GET", "/", "", headers, b"", None
    if where == "form":
        body = ("comment=" + quote(payload, safe="")).encode()
        return "POST", "/submit", "", headers, body, "application/x-www-form-urlencoded"
    if where == "json":
        return "POST", "/api", "", headers, json.dumps({"comment": payload}).encode(), "application/json"
    if where.startswith("raw:"):
        return "POST", "/api", "", headers, payload.encode(), where[4:]
    raise AssertionError(f"unknown WHERE {where!r}")


def inspect(waf: Waf, method, path, query, headers, body, ctype, settings=SETTINGS):
    result = waf.inspect_request(method, path, query, headers, settings)
    if body:
        result = waf.inspect_body(body, ctype, path, settings, result)
    return result


def benign_body_cases() -> list[tuple[int, str, str, bytes]]:
    out = []
    for n, line in enumerate((CORPUS / "benign_bodies.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            item = json.loads(line)
            out.append((n, item["path"], item["type"], item["body"].encode()))
    return out


@pytest.fixture(scope="module")
def waf() -> Waf:
    return Waf(load_ruleset(default_rules_dir()))


@pytest.mark.parametrize("cls", sorted(TARGETS))
def test_attack_class_is_detected(waf, cls):
    cases = read_cases(f"{cls}.txt")
    assert len(cases) >= 40
    missed = []
    for n, where, payload in cases:
        result = inspect(waf, *request_for(where, payload))
        if result is None or result.score < SETTINGS.threshold:
            missed.append(f"  {cls}.txt:{n} {where} {payload!r} -> {result}")
    rate = 1 - len(missed) / len(cases)
    assert rate >= TARGETS[cls], f"{cls}: {rate:.0%} detected, below {TARGETS[cls]:.0%}; missed:\n" + "\n".join(missed)


def test_benign_traffic_passes(waf):
    cases = read_cases("benign_queries.txt")
    bodies = benign_body_cases()
    assert len(cases) >= 100 and len(bodies) >= 40
    blocked = []
    for n, where, payload in cases:
        result = inspect(waf, *request_for(where, payload))
        if result is not None and result.score >= SETTINGS.threshold:
            blocked.append(f"  benign_queries.txt:{n} {where} {payload!r} -> {result.rules}")
    for n, path, ctype, body in bodies:
        result = inspect(waf, "POST", path, "", CIMultiDict(BROWSER), body, ctype)
        if result is not None and result.score >= SETTINGS.threshold:
            blocked.append(f"  benign_bodies.jsonl:{n} {path} {body[:80]!r} -> {result.rules}")
    rate = len(blocked) / (len(cases) + len(bodies))
    assert rate <= MAX_FALSE_POSITIVES, f"{rate:.1%} of benign requests blocked:\n" + "\n".join(blocked)
