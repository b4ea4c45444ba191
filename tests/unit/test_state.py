"""The state directory of quick and demo mode (edge.state): seeding and precedence, on real files."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from edge.policy.errors import PolicyError
from edge.policy.load import load_policy_file
from edge.policy.parse import default_policy, parse_policy
from edge.shipped import policies_dir
from edge.state import Seed, StateDirectory, StateError, open_state_dir

ORIGIN = "http://127.0.0.1:8000"
OTHER = "http://127.0.0.1:9000"
RULES = [{"match": {"path_prefix": "/static/"}, "browser_ttl": {"override": 60}}]


@pytest.mark.parametrize(
    "content",
    [
        None,
        {"rules": RULES},
        {"$comment": "c", "hosts": ["shop.test"], "rules": RULES},
        {"origins": [{"url": OTHER, "connect_timeout": 2}], "rules": RULES},
    ],
    ids=["no-file", "rules-only", "own-hosts", "origins-replaced-by-the-flag"],
)
def test_the_quick_seed_is_the_policy_quick_mode_serves(tmp_path, content):
    path = None
    if content is not None:
        path = tmp_path / "rules.json"
        path.write_text(json.dumps(content))
    data = Seed("default", str(path) if path else None, ORIGIN).data()
    served = load_policy_file(path, tenant="default", quick_origin=ORIGIN) if path else default_policy(ORIGIN)
    # Complete: it loads as a policy directory's file, and to the same policy.
    assert parse_policy(data, tenant="default", source="state").version == served.version
    assert data["origins"] == [{"url": ORIGIN}]


def test_the_demo_seed_is_the_shipped_demo_policy():
    demo = policies_dir() / "demo.json"
    assert Seed("demo", str(demo)).data() == json.loads(demo.read_text())


def test_an_invalid_seed_names_its_file_and_field(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [{"match": {}, "bypass": "yes"}]}))
    with pytest.raises(PolicyError) as caught:
        Seed("default", str(path), ORIGIN).data()
    assert [(e.source, e.field) for e in caught.value.errors] == [(str(path), "rules[0].bypass")]


def _written(policies: Path) -> dict:
    return json.loads((policies / "default.json").read_text())


# (case, what happened before the start, --origin at the start, kept?, origin replaced, origins afterwards, rules)
SYNC_CASES = [
    ("fresh", None, ORIGIN, False, None, [ORIGIN], RULES),
    ("seeded-then-flags-changed", "seeded", OTHER, False, None, [OTHER], RULES),
    ("written-same-origin", "written", ORIGIN, True, None, [ORIGIN], []),
    ("written-other-origin", "written", OTHER, True, ORIGIN, [OTHER], []),
    ("written-with-failover", "failover", ORIGIN, True, None, [ORIGIN, OTHER], []),
    ("hand-placed-file", "no-marker", ORIGIN, True, None, [ORIGIN], []),
]


@pytest.mark.parametrize(("before", "origin", "kept", "origin_was", "origins", "rules"),
                         [c[1:] for c in SYNC_CASES], ids=[c[0] for c in SYNC_CASES])
def test_what_a_start_keeps(tmp_path, before, origin, kept, origin_was, origins, rules):
    policies = tmp_path / "policies"
    policies.mkdir()
    seed_file = tmp_path / "rules.json"
    seed_file.write_text(json.dumps({"rules": RULES}))
    if before is not None:
        StateDirectory(policies, Seed("default", str(seed_file), ORIGIN)).sync(start=True)
    written = {"hosts": ["*"], "origins": [{"url": ORIGIN}], "rules": []}
    if before == "written":
        (policies / "default.json").write_text(json.dumps(written))
    elif before == "failover":
        (policies / "default.json").write_text(json.dumps({**written, "origins": [{"url": ORIGIN}, {"url": OTHER}]}))
    elif before == "no-marker":
        (policies / ".default.seed").unlink()
        (policies / "default.json").write_text(json.dumps(written))

    synced = StateDirectory(policies, Seed("default", str(seed_file), origin)).sync(start=True)

    assert (synced.kept, synced.origin_was) == (kept, origin_was)
    data = _written(policies)
    assert [o["url"] for o in data["origins"]] == origins and data["rules"] == rules


def test_a_write_while_running_is_not_undone_by_a_later_sync(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    source = StateDirectory(policies, Seed("default", None, ORIGIN))
    source.sync(start=True)
    written = {"hosts": ["*"], "origins": [{"url": OTHER}]}
    source.files.write("default", written)  # as the admin API writes
    assert source.sync().kept and _written(policies) == written  # not at start: origins as written


def test_a_changed_seed_file_is_followed_while_running_and_a_broken_one_keeps_the_policy(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    seed_file = tmp_path / "rules.json"
    seed_file.write_text(json.dumps({"rules": RULES}))
    source = StateDirectory(policies, Seed("default", str(seed_file), ORIGIN))
    source.sync(start=True)
    assert source.load().loaded == ["default"]
    assert not source.changed()

    tmp = seed_file.with_name(".rules.json.tmp")
    tmp.write_text(json.dumps({"rules": []}))
    os.replace(tmp, seed_file)
    assert source.changed()
    source.load()
    assert source.current.get("default").rules == ()

    tmp.write_text(json.dumps({"rules": "nope"}))
    os.replace(tmp, seed_file)
    report = source.load()
    assert report.kept == ["default"] and report.errors[0].source == str(seed_file)
    assert source.current.get("default").rules == ()


def test_a_fresh_state_dir_is_private_and_goes_with_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    state = open_state_dir(None)
    assert state.made and state.root.parent == tmp_path and state.policies.is_dir()
    assert stat.S_IMODE(os.stat(state.root).st_mode) == 0o700
    state.close()
    assert not state.root.exists()


def test_a_given_state_dir_is_made_when_missing_and_never_removed(tmp_path):
    state = open_state_dir(str(tmp_path / "a" / "state"))
    assert not state.made and state.policies.is_dir()
    state.close()
    assert state.policies.is_dir()


@pytest.mark.parametrize("layout", ["file", "policies-file", "below-a-file"])
def test_an_unusable_state_dir_is_a_state_error_naming_it(tmp_path, layout):
    target = tmp_path / "state"
    if layout == "file":
        target.write_text("x")
    elif layout == "policies-file":
        target.mkdir()
        (target / "policies").write_text("x")
    else:
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "state"
    with pytest.raises(StateError, match=str(target)):
        open_state_dir(str(target))
