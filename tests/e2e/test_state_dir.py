"""Policy writes through the admin API in quick and demo mode: the state
directory (``edge serve [--origin URL] --state-dir DIR``)."""
from __future__ import annotations

import json
import os
import stat
import urllib.request

import pytest

from .support import DEMO_PORT, free_port, port_is_free, wait_until, write_json_atomically
from .test_admin_cli import TOKEN, cli

DENY_UNKNOWN = {"allow_countries": ["DE"], "unknown": "deny"}  # a loopback client has no country


def call(admin: int, method: str, path: str, body: object = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def quick_policy(origin_url: str, **sections: object) -> dict:
    return {"hosts": ["*"], "origins": [{"url": origin_url}], **sections}


def ttl_rule(seconds: int) -> list[dict]:
    return [{"match": {"path_prefix": "/r/"}, "browser_ttl": {"override": seconds}}]


def test_quick_mode_policy_writes_apply_at_once_and_are_conditional(run_edge, upstream, port, tmp_path):
    upstream.respond("/page", "page", headers={"Cache-Control": "max-age=60"})
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    admin = free_port()
    node = run_edge("--origin", upstream.url, "--admin", f"127.0.0.1:{admin}", port=port,
                    env={"EDGE_ADMIN_TOKEN": TOKEN, "TMPDIR": str(tmpdir)})
    state = node.state_dir
    assert state is not None and state.parent == tmpdir and stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert node.get("/page").status == 200 and node.get("/page").is_hit

    status, headers, _ = call(admin, "GET", "/v1/tenants/default/policy")
    assert status == 200
    before = headers["ETag"]
    status, headers, body = call(admin, "PUT", "/v1/tenants/default/policy",
                                 quick_policy(upstream.url, delivery=DENY_UNKNOWN), {"If-Match": before})
    assert status == 200, body
    after = headers["ETag"]
    assert after != before and after == f'"{body["version"]}"'

    refused = node.get("/page")  # the delivery filter runs before the cache: the stored copy is not served
    assert refused.status == 451 and "detail=delivery.unknown" in refused.cache_status, refused
    status, headers, body = call(admin, "GET", "/v1/tenants/default/policy")
    assert headers["ETag"] == after and body["delivery"]["allow_countries"] == ["DE"]

    status, _, body = call(admin, "PUT", "/v1/tenants/default/policy", quick_policy(upstream.url),
                           {"If-Match": before})
    assert status == 412, body
    assert node.get("/page").status == 451

    assert node.terminate() == 0, node.describe()
    assert not state.exists()  # made for the run, gone with it


def test_demo_mode_takes_a_delivery_policy_from_edge_policy_set_and_curl(run_edge, port, tmp_path):
    if not port_is_free(DEMO_PORT):
        pytest.fail(f"port {DEMO_PORT} on 127.0.0.1 is busy: demo mode starts its built-in origin there")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    admin = free_port()
    base = f"http://127.0.0.1:{admin}"
    node = run_edge("--admin", f"127.0.0.1:{admin}", port=port, env={"EDGE_ADMIN_TOKEN": TOKEN, "TMPDIR": str(tmpdir)})
    assert node.get("/").status == 200

    # As the README shows it: get the policy, set its delivery section, put it back.
    got = cli("policy", "get", "--tenant", "demo", "--admin", base)
    assert got.returncode == 0, got.stderr
    version = got.stderr.split("version ", 1)[1].split()[0]
    policy = json.loads(got.stdout)
    policy["delivery"] = DENY_UNKNOWN
    (tmp_path / "demo.json").write_text(json.dumps(policy))
    done = cli("policy", "set", "--tenant", "demo", str(tmp_path / "demo.json"), "--if-match", version,
               "--admin", base)
    assert done.returncode == 0 and "replaced" in done.stdout, done.stderr
    assert node.get("/").status == 451

    # The curl form, on the delivery section alone: a stale version is refused.
    status, _, body = call(admin, "PUT", "/v1/tenants/demo/policy/delivery", {}, {"If-Match": f'"{version}"'})
    assert status == 412, body
    status, headers, _ = call(admin, "GET", "/v1/tenants/demo/policy")
    status, _, body = call(admin, "PUT", "/v1/tenants/demo/policy/delivery", {}, {"If-Match": headers["ETag"]})
    assert status == 200, body
    assert node.get("/").status == 200
    assert node.terminate() == 0, node.describe()


def test_a_given_state_dir_keeps_written_policies_across_restarts(run_edge, upstream, make_origin, port, tmp_path):
    for origin, name in ((upstream, b"first"), (second := make_origin(), b"second")):
        origin.respond("/r/*", name, headers={"Cache-Control": "max-age=60"})
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": ttl_rule(11)}))
    state = tmp_path / "state"
    admin = free_port()
    env = {"EDGE_ADMIN_TOKEN": TOKEN}
    args = ("--policy", str(rules), "--state-dir", str(state), "--admin", f"127.0.0.1:{admin}")

    node = run_edge("--origin", upstream.url, *args, port=port, env=env)
    assert node.state_dir == state and "kept across restarts" in node.stdout
    assert node.get("/r/1").headers["Cache-Control"] == "max-age=11"
    status, _, body = call(admin, "PUT", "/v1/tenants/default/policy", quick_policy(upstream.url, rules=ttl_rule(77)))
    assert status == 200, body
    assert node.get("/r/2").headers["Cache-Control"] == "max-age=77"
    assert node.terminate() == 0

    # The written policy wins over --policy; --origin still names the origin.
    node = run_edge("--origin", second.url, *args, port=port, env=env)
    r = node.get("/r/3")
    assert r.body == b"second" and r.headers["Cache-Control"] == "max-age=77", r
    assert "stays in force instead of --policy" in node.stderr and f"origin {second.url}" in node.stderr
    status, _, body = call(admin, "GET", "/v1/tenants/default/policy")
    assert body["rules"][0]["browser_ttl"] == {"override": 77}
    assert [o["url"] for o in body["origins"]] == [second.url]
    assert node.terminate() == 0

    # Without the written file, the command line applies again.
    (state / "policies" / "default.json").unlink()
    node = run_edge("--origin", upstream.url, *args, port=port, env=env)
    assert node.get("/r/4").headers["Cache-Control"] == "max-age=11"


def test_a_state_dir_nobody_wrote_to_follows_the_policy_file(run_edge, upstream, port, tmp_path):
    upstream.respond("/r/*", "r", headers={"Cache-Control": "max-age=60"})
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": ttl_rule(11)}))
    admin = free_port()
    args = ("--origin", upstream.url, "--policy", str(rules), "--state-dir", str(tmp_path / "state"),
            "--admin", f"127.0.0.1:{admin}")
    node = run_edge(*args, port=port, env={"EDGE_ADMIN_TOKEN": TOKEN})
    assert node.get("/r/1").headers["Cache-Control"] == "max-age=11"
    assert node.terminate() == 0

    write_json_atomically(rules, {"rules": ttl_rule(22)})
    node = run_edge(*args, port=port, env={"EDGE_ADMIN_TOKEN": TOKEN})
    assert node.get("/r/2").headers["Cache-Control"] == "max-age=22"
    assert "stays in force" not in node.stderr

    # While it runs, too; until a policy is written through the admin API.
    paths = (f"/r/{i}" for i in range(3, 10_000))
    write_json_atomically(rules, {"rules": ttl_rule(33)})
    wait_until(lambda: node.get(next(paths)).headers["Cache-Control"] == "max-age=33", timeout=15,
               message=lambda: f"the changed --policy file never applied\n{node.describe()}")
    status, _, body = call(admin, "PUT", "/v1/tenants/default/policy", quick_policy(upstream.url, rules=ttl_rule(77)))
    assert status == 200, body
    write_json_atomically(rules, {"rules": ttl_rule(44)})
    wait_until(lambda: "stays in force" in node.stderr, timeout=15,
               message=lambda: f"the ignored file change was not reported\n{node.describe()}")
    assert node.get(next(paths)).headers["Cache-Control"] == "max-age=77"


def test_a_write_applies_in_every_worker(run_edge, upstream, port):
    upstream.respond("/page", "page", headers={"Cache-Control": "max-age=60"})
    admin = free_port()
    node = run_edge("--origin", upstream.url, "--workers", "2", "--admin", f"127.0.0.1:{admin}", port=port,
                    env={"EDGE_ADMIN_TOKEN": TOKEN})
    served: set[int] = set()

    def both_serve() -> bool:
        r = node.get("/page")
        assert r.status == 200, r
        served.add(r.worker)
        return len(served) == 2

    wait_until(both_serve, timeout=20, interval=0.01, message=lambda: f"workers seen: {served}\n{node.describe()}")
    wait_until(lambda: call(admin, "GET", "/v1/tenants")[0] == 200, timeout=20,
               message="the admin API did not answer")  # both admin listeners up before the write

    status, _, body = call(admin, "PUT", "/v1/tenants/default/policy/delivery", DENY_UNKNOWN)
    assert status == 200, body
    refused: set[int] = set()

    def both_refuse() -> bool:
        r = node.get("/page")
        assert r.status == 451, (r, refused)  # from the answer on, in every worker
        refused.add(r.worker)
        return len(refused) == 2

    wait_until(both_refuse, timeout=20, interval=0.01, message="not every worker answered")


@pytest.mark.parametrize(
    ("layout", "must_name"),
    [
        ("file", "expected a directory"),
        ("policies-file", "expected a directory"),
        ("below-a-file", "not a directory"),
        ("with-config", "--state-dir is for quick and demo mode"),
    ],
)
def test_an_unusable_state_dir_is_refused(run_edge, upstream, port, tmp_path, layout, must_name):
    state = tmp_path / "state"
    args = ["--origin", upstream.url]
    if layout == "file":
        state.write_text("not a directory\n")
    elif layout == "policies-file":
        state.mkdir()
        (state / "policies").write_text("not a directory\n")
    elif layout == "below-a-file":
        (tmp_path / "file").write_text("x")
        state = tmp_path / "file" / "state"
    else:
        (tmp_path / "policies").mkdir()
        (tmp_path / "edge.toml").write_text(f'[policies]\ndirectory = "{tmp_path / "policies"}"\n')
        args = ["--config", str(tmp_path / "edge.toml")]
    node = run_edge(*args, "--state-dir", str(state), "--listen", f"127.0.0.1:{port}", ready=False)
    assert node.wait_exit(timeout=30) == 2, node.describe()
    assert must_name in node.stderr and "Traceback" not in node.stderr, node.describe()
    if layout != "with-config":
        assert str(state) in node.stderr, node.describe()
    assert "listening on" not in node.stdout and port_is_free(port)


def test_a_state_dir_that_cannot_be_written_is_refused(run_edge, upstream, port):
    """sysfs refuses new files to everyone, root included: a directory that
    exists but takes no writes."""
    node = run_edge("--origin", upstream.url, "--state-dir", "/sys/kernel", "--listen", f"127.0.0.1:{port}",
                    ready=False)
    assert node.wait_exit(timeout=30) == 2, node.describe()
    assert "--state-dir /sys/kernel: cannot use it" in node.stderr and "Traceback" not in node.stderr, node.describe()
    assert port_is_free(port)


def test_a_broken_written_policy_stops_the_start_naming_its_file(run_edge, upstream, port, tmp_path):
    state = tmp_path / "state"
    (state / "policies").mkdir(parents=True)
    written = state / "policies" / "default.json"
    written.write_text(json.dumps(quick_policy(upstream.url, rules=[{"match": {}, "bypass": "yes"}])))
    node = run_edge("--origin", upstream.url, "--state-dir", str(state), "--listen", f"127.0.0.1:{port}",
                    ready=False)
    assert node.wait_exit(timeout=30) == 2, node.describe()
    assert f"{written}: rules[0].bypass" in node.stderr and "Traceback" not in node.stderr, node.describe()
    assert "fix or remove" in node.stderr
