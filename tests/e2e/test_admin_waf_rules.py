"""The admin API checks a policy's WAF exclusions against the rules the node
applies once the policy is written, also after the rule files changed or
broke under a running node."""
from __future__ import annotations

import shutil
from pathlib import Path

from .support import REPO, free_port
from .test_admin_cli import TOKEN
from .test_state_dir import call, quick_policy


def _edge_with_rules_of_its_own(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the package, whose shipped WAF rules a test may change ->
    (its PYTHONPATH, its rule directory)."""
    site = tmp_path / "site"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "edge", site / "edge", ignore=skip)
    shutil.copytree(REPO / "policies", site / "edge" / "policies", ignore=skip)
    return site, site / "edge" / "policies" / "waf"


PUT = "/v1/tenants/default/policy"


def _start(run_edge, upstream, port, tmp_path) -> tuple[int, Path]:
    """A node running the copy -> (its admin port, its rule directory)"""
    site, rules = _edge_with_rules_of_its_own(tmp_path)
    admin = free_port()
    run_edge("--origin", upstream.url, "--admin", f"127.0.0.1:{admin}", port=port,
                    env={"EDGE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(site), "TMPDIR": str(tmp_path)})
    return admin, rules


def _refused(admin: int, body: object, rule: str) -> None:
    status, _, answer = call(admin, "PUT", PUT, body)
    assert status == 422, answer
    assert answer["error"] == "invalid policy: nothing was changed"
    assert [d["field"] for d in answer["details"]] == ["filters.waf.exclusions[0].rule"]
    assert f'"{rule}"' in answer["details"][0]["message"]


def test_an_exclusion_of_a_rule_the_node_lacks_is_refused_and_not_written(run_edge, upstream, port, tmp_path):
    admin, rules = _start(run_edge, upstream, port, tmp_path)
    # A WAF section is checked against the rule files as they are now; the
    # second write leaves none on disk for later checks to read them for.
    for policy in (quick_policy(upstream.url, filters={"waf": {"mode": "block"}}), quick_policy(upstream.url)):
        status, _, body = call(admin, "PUT", PUT, policy)
        assert status == 200, body
    # The PHP rules go; the next write reloads the rules without them.
    (rules / "php.json").unlink()
    status, headers, body = call(admin, "PUT", PUT, quick_policy(upstream.url, rules=[]))
    assert status == 200, body
    served = headers["ETag"]
    # An edit breaks the rule files: the node keeps applying those without PHP.
    (rules / "broken.json").write_text("{")

    _refused(admin, quick_policy(upstream.url, filters={"waf": {"exclusions": [{"rule": "php-functions"}]}}),
             "php-functions")
    status, headers, body = call(admin, "GET", PUT)
    assert status == 200 and headers["ETag"] == served and body["filters"]["waf"]["exclusions"] == []


def test_an_exclusion_of_a_rule_the_next_reload_drops_is_refused(run_edge, upstream, port, tmp_path):
    admin, rules = _start(run_edge, upstream, port, tmp_path)
    # The PHP rules are still applied, but the reload after a write would drop them.
    (rules / "php.json").unlink()
    _refused(admin, quick_policy(upstream.url, filters={"waf": {"exclusions": [{"rule": "php-functions"}]}}),
             "php-functions")
    status, _, body = call(admin, "GET", PUT)
    assert status == 200 and body["filters"]["waf"]["exclusions"] == []
