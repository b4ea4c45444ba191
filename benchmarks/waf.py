"""WAF benchmark: detection per attack class, false positives on the benign
corpus, and microseconds per request of the engine.

    python3 benchmarks/waf.py

Cases are the corpus of tests/waf_corpus/ (see its README for the format).
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

from multidict import CIMultiDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.policy.sections.waf import WafSettings  # noqa: E402
from edge.waf import default_rules_dir, load_ruleset  # noqa: E402
from edge.waf.engine import Waf  # noqa: E402

_spec = importlib.util.spec_from_file_location("waf_corpus", ROOT / "tests" / "unit" / "test_waf_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)  # type: ignore[union-attr]

CLASSES = ("sqli", "xss", "lfi", "rce", "php", "java", "scanner")


def per_call(fn, n: int) -> float:
    """Best of five runs of n calls, in µs per call."""
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main() -> None:
    waf = Waf(load_ruleset(default_rules_dir()))
    s = WafSettings()
    print(f"{'class':10} {'cases':>5} {'detected':>9}")
    for cls in CLASSES:
        cases = corpus.read_cases(f"{cls}.txt")
        hit = 0
        for _, where, payload in cases:
            r = corpus.inspect(waf, *corpus.request_for(where, payload))
            hit += r is not None and r.score >= s.threshold
        print(f"{cls:10} {len(cases):5} {hit / len(cases):9.1%}")
    cases = corpus.read_cases("benign_queries.txt")
    bodies = corpus.benign_body_cases()
    fp = sum(1 for _, w, p in cases if (r := corpus.inspect(waf, *corpus.request_for(w, p))) and r.score >= s.threshold)
    fp += sum(1 for _, path, t, b in bodies
              if (r := corpus.inspect(waf, "POST", path, "", CIMultiDict(corpus.BROWSER), b, t)) and r.score >= s.threshold)
    print(f"{'benign':10} {len(cases) + len(bodies):5} {fp / (len(cases) + len(bodies)):9.1%} blocked (false positives)")

    browser = CIMultiDict({
        "Host": "shop.example.de",
        "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
        "Accept": "text/css,*/*;q=0.1",
        "Accept-Language": "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7",
        "Accept-Encoding": "gzip, deflate, br, zstd",
        "Cookie": "sid=a3f5c8e9b2d14f6a8c7e5d3b1a9f0e2c; lang=de",
        "Referer": "https://shop.example.de/de/produkte/schuhe",
    })
    static = per_call(lambda: waf.inspect_request("GET", "/static/app.3f2a.js", "", browser, s), 20000)
    query = "q=red+shoes&size=42&color=blue&sort=price_asc&page=2"
    five = per_call(lambda: waf.inspect_request("GET", "/search", query, browser, s), 20000)
    doc = {"title": "Spring sale", "author": {"name": "Anna Müller", "email": "anna@example.de"},
           "tags": ["news", "sale", "shoes"], "body": "<p>Our <strong>spring sale</strong> starts today. " * 30 + "</p>"}
    body = json.dumps(doc).encode()[:2048]
    body = json.dumps({**doc, "body": doc["body"][: 2048 - (len(json.dumps(doc)) - len(doc["body"]))]}).encode()
    post = CIMultiDict({**browser, "Content-Type": "application/json"})

    def origin_post():
        r = waf.inspect_request("POST", "/api/posts", "", post, s)
        waf.inspect_body(body, "application/json", "/api/posts", s, r)

    posted = per_call(origin_post, 5000)
    print()
    print(f"{'request':44} {'µs':>6}")
    print(f"{'static GET hit, browser headers':44} {static:6.2f}")
    print(f"{'GET with a 5-argument query':44} {five:6.2f}")
    print(f"{'POST, {} byte JSON body (request + body)'.format(len(body)):44} {posted:6.2f}")


if __name__ == "__main__":
    main()
