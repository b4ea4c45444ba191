"""Loading policies from a directory: host resolution, conflicts, last-good reloads, broken files."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from edge.policy import (
    FieldError,
    FileSource,
    PolicyDirectory,
    PolicyError,
    PolicySet,
    load_policy_file,
    parse_policy,
)
from tests.conftest import until

REPO = Path(__file__).resolve().parents[2]


def tenant(hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {"hosts": hosts, "origins": [{"url": "http://o.example"}], **extra}


def write(d: Path, name: str, data: object) -> Path:
    path = d / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def messages(report) -> list[str]:
    return [str(e) for e in report.errors]


# --- resolution -----------------------------------------------------------------------


def policy_set(**tenants: list[str]) -> PolicySet:
    return PolicySet(parse_policy(tenant(h), tenant=t, source=f"{t}.json") for t, h in tenants.items())


@pytest.mark.parametrize(
    ("host", "tenant_id"),
    [
        ("shop.example", "shop"),
        ("www.shop.example", "shopwild"),
        ("a.b.c.shop.example", "shopwild"),  # any depth
        ("eu.cdn.shop.example", "cdn"),  # the longest suffix wins
        ("cdn.shop.example", "shopwild"),  # a wildcard never matches its own apex
        ("static.shop.example", "static"),  # exact beats wildcard
        ("shop.example.", "shop"),  # trailing dot: the same DNS name
        ("[::1]", "local"),
        ("::1", "local"),
        ("other.example", "fallback"),
        ("example", "fallback"),
        ("", "fallback"),
    ],
)
def test_resolve(host, tenant_id):
    sets = policy_set(
        shop=["shop.example"],
        shopwild=["*.shop.example"],
        cdn=["*.cdn.shop.example"],
        static=["static.shop.example"],
        local=["::1"],
        fallback=["*"],
    )
    assert sets.resolve(host).tenant == tenant_id


def test_unknown_host_without_catch_all_is_none():
    assert policy_set(shop=["shop.example", "*.shop.example"]).resolve("evil.example") is None
    assert PolicySet().resolve("shop.example") is None


def test_a_policy_set_cannot_serve_one_host_twice():
    with pytest.raises(ValueError, match="shop.example"):
        policy_set(a=["shop.example"], b=["shop.example"])


def test_policy_set_is_immutable():
    s = policy_set(shop=["shop.example"])
    with pytest.raises(AttributeError):
        s.tenants = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.tenants["x"] = s.tenants["shop"]  # type: ignore[index]


# --- loading a directory ---------------------------------------------------------------


def test_loads_every_tenant_and_resolves_their_hosts(tmp_path):
    write(tmp_path, "shop.json", tenant(["shop.example", "*.shop.example"]))
    write(tmp_path, "news.json", tenant(["news.example"]))
    d = PolicyDirectory(tmp_path)
    report = d.load()
    assert (report.loaded, report.kept, report.removed, report.errors) == (["news", "shop"], [], [], [])
    assert d.current.resolve("www.shop.example").tenant == "shop"
    assert d.current.resolve("news.example").source == str(tmp_path / "news.json")


def test_an_invalid_file_is_skipped_and_others_load(tmp_path):
    write(tmp_path, "shop.json", tenant(["shop.example"]))
    write(tmp_path, "news.json", tenant(["news.example"], rules=[{"edge_ttl": {"override": "1h"}}]))
    d = PolicyDirectory(tmp_path)
    report = d.load()
    assert report.loaded == ["shop"]
    assert messages(report) == [
        f'{tmp_path}/news.json: rules[0].edge_ttl.override: expected an integer number of seconds 0..31536000, found "1h"'
    ]
    assert d.current.resolve("news.example") is None


def test_on_reload_an_invalid_file_keeps_the_last_valid_policy(tmp_path):
    write(tmp_path, "shop.json", tenant(["shop.example"], rules=[{"bypass": True}]))
    d = PolicyDirectory(tmp_path)
    d.load()
    good = d.current.tenants["shop"]
    write(tmp_path, "shop.json", '{"hosts": ["shop.example"], ')
    report = d.load()
    assert (report.loaded, report.kept) == ([], ["shop"])
    assert d.current.tenants["shop"] is good
    assert d.current.resolve("shop.example").request_decision("/").bypass is True


def test_a_deleted_file_removes_the_tenant(tmp_path):
    path = write(tmp_path, "shop.json", tenant(["shop.example"]))
    write(tmp_path, "news.json", tenant(["news.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    path.unlink()
    report = d.load()
    assert (report.loaded, report.removed) == (["news"], ["shop"])
    assert d.current.resolve("shop.example") is None


def test_reload_swaps_the_set_as_one_value(tmp_path):
    write(tmp_path, "shop.json", tenant(["shop.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    before = d.current
    write(tmp_path, "shop.json", tenant(["shop.example"], cache={"enabled": False}))
    d.load()
    assert before.tenants["shop"].cache.enabled is True  # a request holding the old set sees it unchanged
    assert d.current.tenants["shop"].cache.enabled is False
    assert d.current.tenants["shop"].version != before.tenants["shop"].version


@pytest.mark.parametrize(
    ("content", "field", "expected", "found"),
    [
        ('{"hosts": ["a.example"],\n  "origins": [}', "line 2 column 15", "valid JSON", "Expecting value"),
        ("", "line 1 column 1", "valid JSON", "Expecting value"),
        ('{"hosts": NaN}', "", "valid JSON", "NaN is not JSON"),
        (b'{"hosts": ["caf\xe9.example"]}', "", "UTF-8 text", "byte 0xe9 at offset 15, which is not UTF-8"),
        ('{"hosts": ["a.example"], "origins": [{"url": "http://o.example"}], "hosts": ["b.example"]}', "hosts",
         "each key once", "it more than once"),
    ],
    ids=["syntax", "empty", "nan", "latin-1", "duplicate key"],
)
def test_files_that_are_not_good_json(tmp_path, content, field, expected, found):
    path = tmp_path / "shop.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    report = PolicyDirectory(tmp_path).load()
    assert report.errors == [FieldError(str(path), field, expected, found)]


def test_a_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "shop.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(tenant(["shop.example"])).encode())
    assert PolicyDirectory(tmp_path).load().loaded == ["shop"]


def test_a_file_over_one_mib_is_refused_unread(tmp_path):
    doc = tenant(["shop.example"], **{"$comment": "x" * (3 << 19)})
    path = write(tmp_path, "shop.json", doc)
    report = PolicyDirectory(tmp_path).load()
    assert report.errors == [FieldError(str(path), "", "a file of at most 1 MiB", "1.5 MiB")]


@pytest.mark.parametrize("name", ["Shop.json", "my shop.json", "-shop.json", "s" * 64 + ".json", "shop.v2.json"])
def test_a_file_name_that_is_no_tenant_id_is_reported_and_skipped(tmp_path, name):
    write(tmp_path, name, tenant(["shop.example"]))
    report = PolicyDirectory(tmp_path).load()
    assert report.loaded == []
    assert report.errors == [
        FieldError(str(tmp_path / name), "", "a file name <tenant>.json with a tenant id matching ^[a-z0-9][a-z0-9_-]{0,62}$",
                   json.dumps(name))
    ]


def test_hidden_files_subdirectories_and_the_schema_are_not_tenants(tmp_path):
    write(tmp_path, "shop.json", tenant(["shop.example"]))
    write(tmp_path, ".shop.json", "half-written by an editor")
    write(tmp_path, "schema.json", {"$schema": "https://json-schema.org/draft/2020-12/schema"})
    write(tmp_path, "notes.txt", "not json")
    (tmp_path / "examples").mkdir()
    write(tmp_path / "examples", "quick.json", {"rules": []})
    report = PolicyDirectory(tmp_path).load()
    assert (report.loaded, report.errors) == (["shop"], [])


def test_a_missing_directory_is_an_error_and_keeps_what_was_loaded(tmp_path):
    pdir = tmp_path / "policies"
    pdir.mkdir()
    write(pdir, "shop.json", tenant(["shop.example"]))
    d = PolicyDirectory(pdir)
    d.load()
    (pdir / "shop.json").unlink()
    pdir.rmdir()
    report = d.load()
    assert [e.expected for e in report.errors] == ["a readable directory of policy files"]
    assert d.current.resolve("shop.example").tenant == "shop"


# --- host conflicts ----------------------------------------------------------------------


def test_a_host_claimed_twice_goes_to_the_alphabetically_first(tmp_path):
    write(tmp_path, "alpha.json", tenant(["shop.example"]))
    write(tmp_path, "beta.json", tenant(["beta.example", "shop.example"]))
    d = PolicyDirectory(tmp_path)
    report = d.load()
    assert report.loaded == ["alpha"]
    assert messages(report) == [
        f'{tmp_path}/beta.json: hosts: expected a host that no other tenant serves, found "shop.example", which tenant "alpha" serves'
    ]
    # Skipped entirely, not partially applied: beta's other host is not served either.
    assert d.current.resolve("beta.example") is None


def test_on_reload_the_tenant_that_held_a_host_keeps_it(tmp_path):
    write(tmp_path, "zulu.json", tenant(["shop.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    write(tmp_path, "alpha.json", tenant(["shop.example"]))
    report = d.load()
    assert report.loaded == ["zulu"]
    assert [e.source for e in report.errors] == [str(tmp_path / "alpha.json")]
    assert d.current.resolve("shop.example").tenant == "zulu"


def test_a_conflicting_change_keeps_the_tenants_previous_policy(tmp_path):
    write(tmp_path, "alpha.json", tenant(["alpha.example"]))
    write(tmp_path, "beta.json", tenant(["beta.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    write(tmp_path, "beta.json", tenant(["beta.example", "alpha.example"]))
    report = d.load()
    assert (report.loaded, report.kept) == (["alpha"], ["beta"])
    assert d.current.resolve("beta.example").tenant == "beta"
    assert d.current.resolve("alpha.example").tenant == "alpha"


def test_a_host_can_move_between_tenants_in_one_reload(tmp_path):
    write(tmp_path, "alpha.json", tenant(["alpha.example", "moving.example"]))
    write(tmp_path, "beta.json", tenant(["beta.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    write(tmp_path, "alpha.json", tenant(["alpha.example"]))
    write(tmp_path, "beta.json", tenant(["beta.example", "moving.example"]))
    report = d.load()
    assert (report.loaded, report.errors) == (["alpha", "beta"], [])
    assert d.current.resolve("moving.example").tenant == "beta"


def test_a_rejected_file_cannot_cost_a_third_tenant_its_host(tmp_path):
    # beta loses a.example to alpha, so beta is not served; gamma's b.example
    # must then not count as taken by beta.
    write(tmp_path, "alpha.json", tenant(["a.example"]))
    write(tmp_path, "beta.json", tenant(["a.example", "b.example"]))
    write(tmp_path, "gamma.json", tenant(["b.example"]))
    d = PolicyDirectory(tmp_path)
    report = d.load()
    assert report.loaded == ["alpha", "gamma"]
    assert [e.source for e in report.errors] == [str(tmp_path / "beta.json")]
    assert d.current.resolve("b.example").tenant == "gamma"


def test_a_tenant_whose_file_broke_keeps_its_hosts_against_newcomers(tmp_path):
    write(tmp_path, "zulu.json", tenant(["shop.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    write(tmp_path, "zulu.json", "{broken")
    write(tmp_path, "alpha.json", tenant(["shop.example"]))
    report = d.load()
    assert report.kept == ["zulu"] and report.loaded == []
    assert d.current.resolve("shop.example").tenant == "zulu"


def test_the_same_wildcard_is_a_conflict_but_a_name_under_it_is_not(tmp_path):
    write(tmp_path, "alpha.json", tenant(["*.shop.example"]))
    write(tmp_path, "beta.json", tenant(["eu.shop.example"]))
    write(tmp_path, "gamma.json", tenant(["*.shop.example"]))
    d = PolicyDirectory(tmp_path)
    report = d.load()
    assert report.loaded == ["alpha", "beta"]
    assert d.current.resolve("eu.shop.example").tenant == "beta"
    assert d.current.resolve("us.shop.example").tenant == "alpha"


# --- change detection ------------------------------------------------------------------------


def test_changed_sees_edits_new_and_deleted_files(tmp_path):
    path = write(tmp_path, "shop.json", tenant(["shop.example"]))
    d = PolicyDirectory(tmp_path)
    assert d.changed()  # never loaded
    d.load()
    assert not d.changed()
    write(tmp_path, "shop.json", tenant(["shop.example", "www.shop.example"]))
    assert d.changed()
    d.load()
    assert not d.changed()
    write(tmp_path, "news.json", tenant(["news.example"]))
    assert d.changed()
    d.load()
    os.unlink(path)
    assert d.changed()
    d.load()
    assert not d.changed()


def test_changed_sees_an_atomic_replace_with_the_same_size_and_time(tmp_path):
    path = write(tmp_path, "shop.json", tenant(["shop.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    st = path.stat()
    tmp = write(tmp_path, ".shop.json.tmp", tenant(["shop.examplf"]))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert d.changed()
    assert d.load().loaded == ["shop"]
    assert d.current.resolve("shop.examplf") is not None


async def test_watch_reloads_after_a_change(tmp_path):
    import asyncio

    write(tmp_path, "shop.json", tenant(["shop.example"]))
    d = PolicyDirectory(tmp_path)
    d.load()
    reports = []
    task = asyncio.ensure_future(d.watch(0.01, reports.append))
    try:
        write(tmp_path, "news.json", tenant(["news.example"]))
        await until(lambda: reports, "the watcher reloaded")
    finally:
        task.cancel()
    assert reports and reports[0].loaded == ["news", "shop"]
    assert d.current.resolve("news.example").tenant == "news"


# --- single files (quick and demo mode) -----------------------------------------------------------


def test_file_source_quick_mode_without_a_file_serves_any_host():
    source = FileSource(None, quick_origin="http://127.0.0.1:9000")
    report = source.load()
    assert report.loaded == ["default"]
    assert source.current.resolve("anything.example").origins[0].url == "http://127.0.0.1:9000"
    assert not source.changed()


def test_file_source_keeps_the_last_good_policy(tmp_path):
    path = write(tmp_path, "quick.json", {"rules": [{"bypass": True}]})
    source = FileSource(path, quick_origin="http://127.0.0.1:9000")
    assert source.load().loaded == ["default"]
    write(tmp_path, "quick.json", {"rules": [{"bypass": "sometimes"}]})
    assert source.changed()
    report = source.load()
    assert report.kept == ["default"]
    assert [e.field for e in report.errors] == ["rules[0].bypass"]
    assert source.current.resolve("x").request_decision("/").bypass is True


def test_a_broken_quick_mode_file_serves_nothing(tmp_path):
    path = write(tmp_path, "quick.json", {"rule": []})
    source = FileSource(path, quick_origin="http://127.0.0.1:9000")
    report = source.load()
    assert [str(e) for e in report.errors] == [
        f'{path}: rule: expected a known key (did you mean "rules"?), found an unknown key'
    ]
    assert len(source.current) == 0


# --- the shipped files ---------------------------------------------------------------------------


def test_the_shipped_policy_directory_loads_the_demo_tenant():
    d = PolicyDirectory(REPO / "policies")
    report = d.load()
    assert (report.loaded, report.errors) == (["demo"], [])
    for host in ("localhost", "127.0.0.1", "demo.localhost", "a.demo.localhost"):
        assert d.current.resolve(host).tenant == "demo"


def test_the_demo_policy_does_what_its_comments_say():
    demo = load_policy_file(REPO / "policies" / "demo.json")
    assert [o.url for o in demo.origins] == ["http://127.0.0.1:8081"]
    static = demo.response_decision("/static/app.css", "text/css")
    assert (static.edge_ttl.mode, static.edge_ttl.seconds) == ("override", 86400)
    assert (static.browser_ttl.mode, static.browser_ttl.seconds) == ("override", 3600)
    html = demo.response_decision("/", "text/html; charset=utf-8").edge_ttl
    assert (html.mode, html.seconds) == ("default", 10)
    api = demo.response_decision("/api/time", "application/json").edge_ttl
    assert (api.mode, api.seconds) == ("default", 5)
    assert demo.response_decision("/other.json", "application/json").edge_ttl is None
    assert demo.request_decision("/account/me").bypass is True
    assert demo.request_decision("/").bypass is False


@pytest.mark.parametrize("name", ["shop", "news", "protected"])
def test_the_shipped_examples_load_as_directory_tenants(name):
    policy = load_policy_file(REPO / "policies" / "examples" / f"{name}.json")
    assert policy.tenant == name and policy.rules


def test_the_protected_example_sets_every_filter():
    f = load_policy_file(REPO / "policies" / "examples" / "protected.json").filters
    assert f.under_attack.mode == "auto" and f.rate_limits.active and f.waf.exclusions
    assert f.events.webhook_url == "https://soc.example/hooks/edge" and f.request_limits.max_concurrent == 64


def test_the_quick_mode_example_needs_an_origin():
    path = REPO / "policies" / "examples" / "quick.json"
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert [e.field for e in info.value.errors] == ["hosts", "origins"]
    policy = load_policy_file(path, tenant="default", quick_origin="http://localhost:3000")
    assert policy.hosts == ("*",) and policy.request_decision("/admin/x").bypass is True


def test_the_shop_example_keys_pages_by_language_but_not_assets():
    shop = load_policy_file(REPO / "policies" / "examples" / "shop.json")
    assert shop.request_decision("/products/1").key.cookies == ("lang",)
    assert shop.request_decision("/login").bypass is True
    # Assets are the same in every language: one entry, not one per language.
    assert shop.request_decision("/assets/app.js").key.cookies == ()
    assert shop.request_decision("/assets/app.js").key.drop_params == ("ref", "sessionid")


def test_a_directory_named_like_a_policy_is_reported(tmp_path):
    (tmp_path / "shop.json").mkdir()
    report = PolicyDirectory(tmp_path).load()
    assert report.errors == [FieldError(str(tmp_path / "shop.json"), "", "a readable policy file", "is a directory")]


# --- the WAF rules exclusions may name: passed in, never a process global -----------

CUSTOM_RULE = "site-custom-rule"
EXCLUDING = tenant(["shop.example"], filters={"waf": {"exclusions": [{"rule": CUSTOM_RULE}]}})
UNKNOWN_RULE = (f'shop.json: filters.waf.exclusions[0].rule: expected the id of a rule in the WAF rule set, '
                f'found "{CUSTOM_RULE}"')


def test_exclusions_are_checked_against_the_rule_set_passed_in():
    policy = parse_policy(EXCLUDING, tenant="shop", source="shop.json", waf_rule_ids=frozenset({CUSTOM_RULE}))
    assert [e.rule for e in policy.filters.waf.exclusions] == [CUSTOM_RULE]
    with pytest.raises(PolicyError) as info:
        parse_policy(EXCLUDING, tenant="shop", source="shop.json", waf_rule_ids=frozenset({"other"}))
    assert [str(e) for e in info.value.errors] == [UNKNOWN_RULE]
    # The other rule set, validated in between, leaves no trace.
    assert parse_policy(EXCLUDING, tenant="shop", source="shop.json",
                        waf_rule_ids=frozenset({CUSTOM_RULE})).version == policy.version


def test_without_a_rule_set_exclusions_name_the_shipped_rules():
    with pytest.raises(PolicyError) as info:
        parse_policy(EXCLUDING, tenant="shop", source="shop.json")
    assert [str(e) for e in info.value.errors] == [UNKNOWN_RULE]


@pytest.mark.parametrize("source_kind", ["directory", "file"])
def test_loaders_pass_the_rule_set_on(tmp_path, source_kind):
    path = write(tmp_path, "shop.json", EXCLUDING)
    source = PolicyDirectory(tmp_path) if source_kind == "directory" else FileSource(path, tenant="shop")
    assert source.load(waf_rule_ids=frozenset({CUSTOM_RULE})).loaded == ["shop"]
    # Reloaded against a rule set without it (the node's rules changed): refused, the last good policy kept.
    os.utime(path, ns=(1, 1))
    report = source.load(waf_rule_ids=frozenset({"other"}))
    assert [e.field for e in report.errors] == ["filters.waf.exclusions[0].rule"] and report.kept == ["shop"]
    assert load_policy_file(path, waf_rule_ids=frozenset({CUSTOM_RULE})).filters.waf.exclusions
