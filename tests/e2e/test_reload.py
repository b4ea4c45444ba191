"""Policies change while the node runs: file watching and SIGHUP."""
from __future__ import annotations

import itertools
import json
import signal

from .support import wait_until, write_json_atomically


def _setup(tmp_path, port, origin, watch_interval: float):
    origin.respond("/r/*", "fresh\n", headers={"Cache-Control": "max-age=60", "Content-Type": "text/plain"})
    policies = tmp_path / "policies"
    policies.mkdir()
    shop = {"hosts": ["shop.test"], "origins": [{"url": origin.url}]}
    (policies / "shop.json").write_text(json.dumps(shop))
    (policies / "news.json").write_text(json.dumps({"hosts": ["news.test"], "origins": [{"url": origin.url}]}))
    config = tmp_path / "edge.toml"
    config.write_text(
        f"""
[[listen]]
address = "127.0.0.1:{port}"

[policies]
directory = "{policies}"
watch_interval = {watch_interval}
"""
    )
    return config, policies, shop


def _fresh_paths():
    # Each probe asks for a path not cached yet: a policy applies when the
    # response is stored, and this is about what new requests see.
    return (f"/r/{i}" for i in itertools.count())


def test_policy_file_changes_apply_without_restart_and_bad_files_are_rejected(run_edge, upstream, port, tmp_path):
    config, policies, shop = _setup(tmp_path, port, upstream, watch_interval=0.2)
    node = run_edge("--config", str(config), port=port, listen=False)
    paths = _fresh_paths()

    before = node.get(next(paths), host="shop.test")
    assert before.status == 200 and before.headers.get("Cache-Control") == "max-age=60", before

    # 1. A valid change is picked up by the watcher.
    changed = dict(shop, rules=[{"match": {"path_prefix": "/r/"}, "browser_ttl": {"override": 77}}])
    write_json_atomically(policies / "shop.json", changed)
    wait_until(
        lambda: node.get(next(paths), host="shop.test").headers.get("Cache-Control") == "max-age=77",
        timeout=10, message=lambda: f"the changed policy never applied\n{node.describe()}",
    )
    assert node.proc.poll() is None  # no restart

    # 2. An invalid version is reported and the last valid policy stays.
    broken = dict(shop, rules=[{"match": {"path_prefix": "/r/"}, "browser_ttl": {"override": "a week"}}])
    write_json_atomically(policies / "shop.json", broken)
    wait_until(
        lambda: "rules[0].browser_ttl.override" in node.stderr,
        timeout=10, message=lambda: f"the invalid policy file was not reported\n{node.describe()}",
    )
    report = next(line for line in node.stderr.splitlines() if "rules[0].browser_ttl.override" in line)
    assert str(policies / "shop.json") in report, report
    assert "Traceback" not in node.stderr

    for _ in range(3):
        r = node.get(next(paths), host="shop.test")
        assert r.status == 200 and r.body == b"fresh\n", r
        assert r.headers.get("Cache-Control") == "max-age=77", r  # still the last valid policy
    other = node.get(next(paths), host="news.test")
    assert other.status == 200 and other.headers.get("Cache-Control") == "max-age=60", other

    # 3. A new file adds a tenant; a deleted file removes one.
    assert node.get(next(paths), host="blog.test").status == 421
    write_json_atomically(policies / "blog.json", {"hosts": ["blog.test"], "origins": [{"url": upstream.url}]})
    (policies / "news.json").unlink()
    wait_until(lambda: node.get(next(paths), host="blog.test").status == 200, timeout=10,
               message=lambda: f"the new tenant was never served\n{node.describe()}")
    wait_until(lambda: node.get(next(paths), host="news.test").status == 421, timeout=10,
               message=lambda: f"the removed tenant is still served\n{node.describe()}")
    assert node.get(next(paths), host="shop.test").headers.get("Cache-Control") == "max-age=77"


def test_sighup_reloads_policies(run_edge, upstream, port, tmp_path):
    # watch_interval = 0: no watcher, so only the signal can reload.
    config, policies, shop = _setup(tmp_path, port, upstream, watch_interval=0)
    node = run_edge("--config", str(config), port=port, listen=False)
    paths = _fresh_paths()

    changed = dict(shop, rules=[{"match": {"path_prefix": "/r/"}, "browser_ttl": {"override": 77}}])
    write_json_atomically(policies / "shop.json", changed)
    r = node.get(next(paths), host="shop.test")
    assert r.headers.get("Cache-Control") == "max-age=60", r  # not watched: old policy

    node.send(signal.SIGHUP)
    wait_until(
        lambda: node.get(next(paths), host="shop.test").headers.get("Cache-Control") == "max-age=77",
        timeout=10, message=lambda: f"SIGHUP did not reload the policies\n{node.describe()}",
    )
    assert node.proc.poll() is None, node.describe()
    assert "policies reloaded" in node.stderr, node.describe()
