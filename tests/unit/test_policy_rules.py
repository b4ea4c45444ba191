"""Rule matching and precedence: which TTL, bypass and key a request gets."""
from __future__ import annotations

from typing import Any

import pytest

from edge.cache.key import KeyOptions
from edge.policy import Glob, Ttl, media_type, parse_policy


def policy(*rules: dict[str, Any], **top: Any):
    doc = {"hosts": ["shop.example"], "origins": [{"url": "http://o.example"}], "rules": list(rules), **top}
    return parse_policy(doc, tenant="shop", source="shop.json")


# --- globs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/img/*.png", "/img/a.png", True),
        ("/img/*.png", "/img/deep/er/a.png", True),  # * crosses "/"
        ("/img/*.png", "/img/.png", True),  # * may be empty
        ("/img/*.png", "/img/a.png.bak", False),  # the whole path must match
        ("/img/*.png", "/x/img/a.png", False),
        ("/img/*.png", "/img/a.PNG", False),  # case-sensitive, like paths
        ("/a?c", "/abc", True),
        ("/a?c", "/a/c", True),  # ? is any one character
        ("/a?c", "/ac", False),
        ("/a?c", "/abbc", False),
        ("/exact", "/exact", True),
        ("/exact", "/exact/", False),
        ("/*/preview/*", "/2024/preview/x", True),
        ("/*/preview/*", "/preview/x", False),
        ("/v1.0/*", "/v1x0/a", False),  # "." is literal, not a regex
        ("/a+b/(x)/*", "/a+b/(x)/y", True),
        ("/*a*b", "/xxaxxbyyb", True),
        ("/*ab*ab", "/abab", True),
        ("/*ab*ab", "/aba", False),
        ("/**", "/anything/at/all", True),
    ],
)
def test_glob(pattern, path, matches):
    assert Glob(pattern).matches(path) is matches
    # A bypass also holds for the case-folded path (it fails safe).
    folded = Glob(pattern.lower()).matches(path.lower())
    assert policy({"match": {"path_glob": pattern}, "bypass": True}).request_decision(path).bypass is (matches or folded)


class ScannedPath(str):
    """A request path that counts the searches made in it and the characters they pass over."""

    def find(self, sub, start=0, end=None):
        found = super().find(sub, start, end)
        stop = found + len(sub) if found >= 0 else len(self) if end is None else end
        self.searches = getattr(self, "searches", 0) + 1
        self.scanned = getattr(self, "scanned", 0) + max(0, stop - start)
        return found


N = 100_000
HOSTILE_GLOBS = [
    ("/*a*a*a*a*a*a*b", "/" + "a" * N + "b", True, 6, "six-stars-match"),
    ("/*a*a*a*a*a*a*b", "/" + "a" * N + "ab", True, 6, "six-stars-match-at-the-end"),
    ("/*ab*ab*ab*c", "/" + "a" * N + "c", False, 1, "first-segment-missing"),
    ("/*ab*ab*ab*c", "/" + "ab" * N + "c", True, 3, "repeated-segments-match"),
    ("/*x*x*x*x*y", "/" + "x" * N + "zy", True, 4, "long-run-then-tail"),
    ("/*x*x*x*x*y", "/xx" + "z" * N + "y", False, 3, "third-segment-missing"),
]


@pytest.mark.parametrize(("pattern", "path", "matches", "searches"), [g[:4] for g in HOSTILE_GLOBS],
                         ids=[g[4] for g in HOSTILE_GLOBS])
def test_glob_reads_a_hostile_path_once(pattern, path, matches, searches):
    """A tenant's glob must not let anyone burn a core with a long path: no
    backtracking, one forward search per segment between stars, each
    starting where the last one ended, so the work is linear in the path."""
    scanned = ScannedPath(path)
    assert Glob(pattern).matches(scanned) is matches
    assert scanned.searches == searches
    assert scanned.scanned <= len(path)


# --- media types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("text/html", "text/html"), ("Text/HTML; charset=UTF-8", "text/html"), (" image/png ;q=1", "image/png"),
     ("", None), (None, None), (";charset=x", None)],
)
def test_media_type_of_a_content_type_header(header, expected):
    assert media_type(header) == expected


@pytest.mark.parametrize(
    ("condition", "content_type", "matches"),
    [
        (["text/html"], "text/html", True),
        (["text/html"], "text/html; charset=utf-8", True),
        (["text/html"], "TEXT/HTML", True),
        (["Text/Html"], "text/html", True),
        (["text/html"], "text/plain", False),
        (["text/*"], "text/css", True),
        (["text/*"], "Text/Plain; charset=x", True),
        (["text/*"], "application/json", False),
        (["text/*"], "textual/thing", False),
        (["image/*", "application/json"], "application/json", True),
        (["text/html"], None, False),  # no Content-Type: no content_type rule applies
        (["text/html"], "", False),
    ],
)
def test_content_type_condition(condition, content_type, matches):
    p = policy({"match": {"content_type": condition}, "edge_ttl": {"override": 60}})
    got = p.response_decision("/page", content_type).edge_ttl
    assert got == (Ttl("override", 60) if matches else None)


# --- precedence ----------------------------------------------------------------------


def test_first_matching_rule_wins_per_setting():
    p = policy(
        {"match": {"path_prefix": "/static/big/"}, "edge_ttl": {"override": 60}},
        {"match": {"path_prefix": "/static/"}, "edge_ttl": {"override": 86400}, "browser_ttl": {"default": 3600}},
        {"browser_ttl": {"override": 0}, "bypass": False},
    )
    d = p.response_decision("/static/big/file.iso", None)
    # edge_ttl from rule 0; rule 1 still decides browser_ttl, which rule 2 cannot change.
    assert (d.edge_ttl, d.browser_ttl, d.bypass) == (Ttl("override", 60), Ttl("default", 3600), False)
    d = p.response_decision("/other", None)
    assert (d.edge_ttl, d.browser_ttl, d.bypass) == (None, Ttl("override", 0), False)


def test_bypass_false_before_a_broader_bypass_keeps_caching():
    p = policy(
        {"match": {"path_prefix": "/account/public/"}, "bypass": False},
        {"match": {"path_prefix": "/account/"}, "bypass": True},
    )
    assert p.request_decision("/account/public/logo.png").bypass is False
    assert p.request_decision("/account/orders").bypass is True
    assert p.request_decision("/").bypass is False


def test_a_rule_setting_only_a_ttl_does_not_shadow_a_later_bypass():
    p = policy(
        {"edge_ttl": {"default": 10}},
        {"match": {"path_prefix": "/cart"}, "bypass": True},
    )
    assert p.request_decision("/cart").bypass is True


def test_key_comes_from_the_first_rule_that_sets_one():
    p = policy(
        {"match": {"path_prefix": "/de/"}, "key": {"cookies": ["lang"]}},
        {"match": {"path_prefix": "/"}, "key": {"headers": ["accept-language"]}},
        {"match": {"path_prefix": "/de/"}, "key": {"cookies": ["other"]}},
        cache={"key": {"drop_params": ["ref"]}},
    )
    assert p.request_decision("/de/x").key == KeyOptions(drop_params=("ref",), cookies=("lang",))
    assert p.request_decision("/en/x").key == KeyOptions(drop_params=("ref",), headers=("accept-language",))


def test_content_type_rules_do_not_take_part_in_the_request_decision():
    p = policy(
        {"match": {"content_type": ["text/html"]}, "bypass": True},
        {"match": {"path_prefix": "/"}, "edge_ttl": {"override": 5}},
    )
    assert p.request_decision("/page").bypass is False
    assert p.response_decision("/page", "text/html").bypass is True
    assert p.response_decision("/page.css", "text/css").bypass is False


def test_response_decision_takes_path_rules_too_in_file_order():
    p = policy(
        {"match": {"path_prefix": "/api/"}, "edge_ttl": {"default": 5}},
        {"match": {"content_type": ["application/json"]}, "edge_ttl": {"override": 60}, "browser_ttl": {"override": 0}},
    )
    d = p.response_decision("/api/items", "application/json")
    assert (d.edge_ttl, d.browser_ttl) == (Ttl("default", 5), Ttl("override", 0))
    d = p.response_decision("/feed.json", "application/json")
    assert (d.edge_ttl, d.browser_ttl) == (Ttl("override", 60), Ttl("override", 0))


def test_prefix_and_glob_must_both_hold():
    p = policy({"match": {"path_prefix": "/img/", "path_glob": "/*.png"}, "bypass": True})
    assert p.request_decision("/img/a.png").bypass is True
    assert p.request_decision("/img/a.jpg").bypass is False
    assert p.request_decision("/css/a.png").bypass is False


def test_percent_escapes_in_policy_paths_match_normalised_request_paths():
    p = policy({"match": {"path_prefix": "/caf%c3%a9/"}, "bypass": True})
    assert p.request_decision("/caf%C3%A9/menu").bypass is True


def test_disabled_cache_bypasses_everything_whatever_the_rules():
    p = policy({"match": {"path_prefix": "/"}, "bypass": False, "edge_ttl": {"override": 60}}, cache={"enabled": False})
    assert p.request_decision("/x").bypass is True
    d = p.response_decision("/x", "text/html")
    assert (d.bypass, d.edge_ttl) == (True, None)


# --- the hot path ---------------------------------------------------------------------


def test_without_rules_decisions_are_shared_constants():
    p = policy()
    assert p.request_decision("/a") is p.request_decision("/b")
    assert p.request_decision("/a").key is p.cache.key
    assert p.response_decision("/a", "text/html") is p.response_decision("/b", None)


def test_with_rules_unmatched_and_repeated_decisions_are_shared():
    p = policy(
        {"match": {"path_prefix": "/static/"}, "edge_ttl": {"override": 86400}},
        {"match": {"path_prefix": "/account/"}, "bypass": True, "key": {"cookies": ["sid"]}},
    )
    assert p.request_decision("/a") is p.request_decision("/b")
    assert p.request_decision("/account/1") is p.request_decision("/account/2")
    assert p.response_decision("/static/a.css", "text/css") is p.response_decision("/static/b.js", None)
    assert p.response_decision("/x", None) is p.response_decision("/y", "text/html")
