"""The admin API as operators use it: ``edge serve --workers 2 --admin``
as a subprocess, and ``edge purge`` / ``edge policy`` / ``edge token``."""
from __future__ import annotations

import pytest

import glob
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from aiohttp import web

from .support import REPO, alive, descendants, free_port, request, wait_until

TOKEN = "e2e-operator-token"


def cli(*args: str, token: str | None = TOKEN, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH")) if p)
    environ.pop("EDGE_ADMIN_TOKEN", None)
    if token is not None:
        environ["EDGE_ADMIN_TOKEN"] = token
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "edge", *args], input=stdin, capture_output=True, text=True,
                          env=environ, timeout=60)


def node_config(tmp_path: Path, origin_url: str, port: int, *, watch: float = 0.0) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "shop.json").write_text(json.dumps({"hosts": ["shop.test"], "origins": [{"url": origin_url}]}))
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[[listen]]\naddress = "127.0.0.1:{port}"\n'
        f'[cache]\ndisk_path = "cache"\n'
        # No watcher: whatever the workers serve after a write, the fan-out told them.
        f'[policies]\ndirectory = "policies"\nwatch_interval = {watch}\n'
        f'[log]\naccess = false\n'
    )
    return config


def admin_get(port: int, path: str, token: str = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_purge_and_policy_writes_reach_every_worker(run_edge, upstream, port, tmp_path):
    versions = {"/page": "v1"}

    async def page(req: web.Request) -> web.Response:
        return web.Response(text=f"page {versions['/page']}", headers={"Cache-Control": "max-age=600"})

    upstream.route("/page", page)
    upstream.respond("/who", "who", headers={"Cache-Control": "no-store"})
    admin = free_port()
    config = node_config(tmp_path, upstream.url, port)
    node = run_edge("--config", str(config), "--workers", "2", "--admin", f"127.0.0.1:{admin}",
                    port=port, listen=False, env={"EDGE_ADMIN_TOKEN": TOKEN})
    assert f"admin API on http://127.0.0.1:{admin}" in node.stdout
    base = f"http://127.0.0.1:{admin}"

    # Both workers hold v1 in their memory tier and serve it as a hit.
    hits: set[int] = set()

    def both_hit() -> bool:
        r = request(port, "/page", host="shop.test")
        assert r.body == b"page v1", r
        if r.is_hit:
            hits.add(r.worker)
        return len(hits) == 2

    wait_until(both_hit, timeout=20, interval=0.01, message=lambda: f"workers with hits: {hits}\n{node.describe()}")

    # The purge answers once every worker has dropped it: from then on no
    # worker serves v1, from memory or disk.
    versions["/page"] = "v2"
    done = cli("purge", "--tenant", "shop", "--url", "http://shop.test/page", "--admin", base)
    assert done.returncode == 0, done.stderr
    assert "purged" in done.stdout and "on 2 workers" in done.stdout, done.stdout
    seen: set[int] = set()

    def every_worker_fresh() -> bool:
        r = request(port, "/page", host="shop.test")
        assert r.body == b"page v2", (r, r.worker, seen)
        seen.add(r.worker)
        return len(seen) == 2

    wait_until(every_worker_fresh, timeout=20, interval=0.01, message="not every worker answered")

    # A policy write through the CLI: every worker serves the new tenant at
    # once (no watcher runs; the write fanned out a reload).
    upstream.respond("/blog", "blog", headers={"Cache-Control": "no-store"})
    new = tmp_path / "blog.json"
    new.write_text(json.dumps({"hosts": ["blog.test"], "origins": [{"url": upstream.url}]}))
    done = cli("policy", "set", "--tenant", "blog", str(new), "--admin", base)
    assert done.returncode == 0 and "created" in done.stdout, done.stderr
    served: set[int] = set()

    def every_worker_serves_blog() -> bool:
        r = request(port, "/blog", host="blog.test")
        assert r.status == 200, r
        served.add(r.worker)
        return len(served) == 2

    wait_until(every_worker_serves_blog, timeout=20, interval=0.01, message="not every worker answered")

    got = cli("policy", "get", "--tenant", "blog", "--admin", base)
    assert got.returncode == 0 and json.loads(got.stdout)["hosts"] == ["blog.test"]
    version = got.stderr.split("version ", 1)[1].split()[0]
    stale = cli("policy", "set", "--tenant", "blog", str(new), "--if-match", "0" * 16, "--admin", base)
    assert stale.returncode == 1 and "412" in stale.stderr and "Traceback" not in stale.stderr
    fresh = cli("policy", "set", "--tenant", "blog", str(new), "--if-match", version, "--admin", base)
    assert fresh.returncode == 0, fresh.stderr

    # A worker killed with -9 leaves its control socket behind: the next
    # purge finds it refused, removes it and still completes.
    workers = descendants(node.pid)
    victim, run_dir = next((pid, d) for d in glob.glob(os.path.join(tempfile.gettempdir(), f"edge-{admin}-*"))
                           for pid in workers if os.path.exists(os.path.join(d, f"{pid}.sock")))
    assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), timeout=10, message="the worker did not die")
    done = cli("purge", "--tenant", "shop", "--all", "--admin", base)
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(os.path.join(run_dir, f"{victim}.sock"))
    node.terminate()
    assert not os.path.exists(run_dir)  # the run directory goes with the node


def test_a_stopping_worker_takes_part_in_purges_until_its_last_write(run_edge, upstream, port, tmp_path):
    """A worker told to stop still finishes its requests, and may store what
    they fetched: until that last write it must get every purge, or an
    answer fetched before the purge lands on the shared disk after it."""
    import asyncio

    versions = {"/page": "v1"}
    gate = asyncio.Event()  # bound to the origin's loop on first use

    async def page(req: web.Request) -> web.StreamResponse:
        version = versions["/page"]  # as the origin had it when the request came
        body = f"page {version}"
        headers = {"Cache-Control": "max-age=600", "Content-Type": "text/plain", "X-Version": version}
        if req.method == "HEAD":
            return web.Response(headers=headers)
        resp = web.StreamResponse(headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        await resp.write(body[:5].encode())  # the edge sends the client its head with the first bytes
        await gate.wait()
        await resp.write(body[5:].encode())
        return resp

    upstream.route("/page", page)
    admin = free_port()
    config = node_config(tmp_path, upstream.url, port)
    config.write_text(config.read_text() + "[timeouts]\nshutdown = 60.0\n")
    node = run_edge("--config", str(config), "--workers", "2", "--admin", f"127.0.0.1:{admin}",
                    port=port, listen=False, env={"EDGE_ADMIN_TOKEN": TOKEN})

    # A request in flight on one worker, the origin halfway through its answer.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/page", headers={"Host": "shop.test"})
        in_flight = conn.getresponse()
        low = int(in_flight.headers["X-Request-Id"].split("-", 1)[0][:4], 16)
        (stopping,) = [pid for pid in descendants(node.pid) if pid & 0xFFFF == low]
        registered = lambda: sorted(int(n[:-5]) for n in os.listdir(run_dir_of(admin)) if n.endswith(".sock"))
        wait_until(lambda: len(registered()) == 2, timeout=20, message=lambda: f"{registered()}\n{node.describe()}")
        (other,) = set(registered()) - {stopping}

        os.kill(stopping, signal.SIGTERM)
        wait_until(lambda: f"worker {stopping} stopping" in node.stderr, timeout=20,
                   message=lambda: f"worker {stopping} did not begin to stop\n{node.describe()}")
        versions["/page"] = "v2"
        done = cli("purge", "--tenant", "shop", "--url", "http://shop.test/page", "--admin",
                   f"http://127.0.0.1:{admin}")
        assert done.returncode == 0, done.stderr
        assert "on 2 workers" in done.stdout, (done.stdout, node.describe())  # the stopping one too

        upstream.call_soon(gate.set)
        assert in_flight.read() == b"page v1"  # the client in flight gets its answer
    finally:
        conn.close()
    wait_until(lambda: not alive(stopping), timeout=60, message=lambda: f"worker {stopping} did not stop\n{node.describe()}")

    # Its replacement starts from the shared disk: what the stopped worker
    # fetched before the purge must not be there. (HEAD: never stored, so
    # the other worker's answers cannot replace what is on disk.)
    def from_replacement():
        r = request(port, "/page", host="shop.test", method="HEAD")
        assert r.headers["X-Version"] == "v2", (r, r.headers["X-Version"], node.describe())
        return r if r.worker not in (stopping & 0xFFFF, other & 0xFFFF) else None

    replaced = wait_until(from_replacement, timeout=30, interval=0.01,
                          message=lambda: f"no replacement worker answered\n{node.describe()}")
    (replacement,) = [pid for pid in descendants(node.pid) if pid & 0xFFFF == replaced.worker]
    # It registered for purges before it served.
    assert os.path.exists(os.path.join(run_dir_of(admin), f"{replacement}.sock"))


def run_dir_of(admin: int) -> str:
    """The node's run directory of control sockets (made by the supervisor)."""
    (found,) = glob.glob(os.path.join(tempfile.gettempdir(), f"edge-{admin}-*"))
    return found


def test_failed_logins_are_counted_over_all_workers_and_never_lock_out_a_valid_token(run_edge, upstream, port,
                                                                                     tmp_path):
    admin = free_port()
    config = node_config(tmp_path, upstream.url, port)
    run_edge("--config", str(config), "--workers", "2", "--admin", f"127.0.0.1:{admin}", port=port, listen=False,
             env={"EDGE_ADMIN_TOKEN": TOKEN})

    def call(conn: http.client.HTTPConnection, token: str) -> tuple[int, http.client.HTTPResponse, bytes]:
        conn.request("GET", "/v1/stats", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, resp, resp.read()

    # One kept-alive connection per worker: its answers all come from that worker.
    conns: dict[int, http.client.HTTPConnection] = {}

    def one_per_worker() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=15)
        try:
            status, _, body = call(conn, TOKEN)
        except ConnectionRefusedError:  # no worker has its admin listener yet
            return False
        assert status == 200, body
        pid = json.loads(body)["worker"]
        if pid in conns:
            conn.close()
        else:
            conns[pid] = conn
        return len(conns) == 2

    wait_until(one_per_worker, timeout=20, interval=0.01, message="the admin port did not reach both workers")
    try:
        first, second = conns.values()
        # Ten failures, five answered by each worker, each with another token.
        for i in range(10):
            assert call(first if i % 2 else second, f"guess-{i}")[0] == 401
        for conn in (first, second):  # the 11th failure and beyond: whichever worker answers
            status, resp, _ = call(conn, "guess-more")
            assert status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 60
            status, _, body = call(conn, TOKEN)  # the operator, from the same address
            assert status == 200 and json.loads(body)["worker"] in conns
    finally:
        for conn in conns.values():
            conn.close()


def test_kill_9_during_a_policy_write_leaves_the_previous_file(run_edge, upstream, port, tmp_path):
    admin = free_port()
    config = node_config(tmp_path, upstream.url, port)
    shop = tmp_path / "policies" / "shop.json"
    before = shop.read_bytes()
    node = run_edge("--config", str(config), "--admin", f"127.0.0.1:{admin}", port=port, listen=False,
                    env={"EDGE_ADMIN_TOKEN": TOKEN, "EDGE_TEST_POLICY_WRITE_PAUSE": "30"})
    body = json.dumps({"hosts": ["shop.test", "new.shop.test"], "origins": [{"url": upstream.url}]}).encode()

    def put() -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{admin}/v1/tenants/shop/policy", data=body, method="PUT",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30)
        except OSError:
            pass  # the node dies under it

    writer = threading.Thread(target=put, daemon=True)
    writer.start()
    temporaries = lambda: [p for p in shop.parent.iterdir() if p.name.endswith(".admin-tmp")]
    wait_until(temporaries, timeout=15, message="the writer never wrote its temporary file")
    (tmp,) = temporaries()
    assert json.loads(tmp.read_bytes())["hosts"] == ["shop.test", "new.shop.test"]  # written and fsynced
    node.kill_group()
    writer.join(10)
    assert shop.read_bytes() == before

    # Restarted, the node serves the previous policy and removes the leftover.
    node = run_edge("--config", str(config), "--admin", f"127.0.0.1:{admin}", port=port, listen=False,
                    env={"EDGE_ADMIN_TOKEN": TOKEN})
    assert not temporaries()
    status, data = admin_get(admin, "/v1/tenants/shop/policy")
    assert status == 200 and data["hosts"] == ["shop.test"]


def test_cli_messages_and_exit_codes(run_edge, upstream, port, tmp_path):
    admin = free_port()
    config = node_config(tmp_path, upstream.url, port)
    run_edge("--config", str(config), "--admin", f"127.0.0.1:{admin}", port=port, listen=False,
             env={"EDGE_ADMIN_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{admin}"

    wrong = cli("policy", "get", "--tenant", "shop", "--admin", base, token="nope")
    assert wrong.returncode == 1 and "unknown token" in wrong.stderr and "401" in wrong.stderr
    missing = cli("purge", "--tenant", "shop", "--all", "--admin", base, token=None)
    assert missing.returncode == 1 and "EDGE_ADMIN_TOKEN" in missing.stderr
    down = cli("purge", "--tenant", "shop", "--all", "--admin", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach the admin API" in down.stderr
    bad_url = cli("purge", "--tenant", "shop", "--url", "ftp://x", "--admin", base)
    assert bad_url.returncode == 1 and "urls[0]" in bad_url.stderr and "422" in bad_url.stderr
    usage = cli("purge", "--tenant", "shop", "--url", "/a", "--all")
    assert usage.returncode == 2 and "not allowed with" in usage.stderr

    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"hosts": ["shop.test"], "origins": [{"url": "ftp://x"}]}))
    refused = cli("policy", "set", "--tenant", "shop", str(invalid), "--admin", base)
    assert refused.returncode == 1 and "origins[0].url" in refused.stderr
    not_json = tmp_path / "not.json"
    not_json.write_text("{")
    assert cli("policy", "set", "--tenant", "shop", str(not_json), "--admin", base).returncode == 1
    for result in (wrong, missing, down, bad_url, refused):
        assert "Traceback" not in result.stderr


def test_policy_validate_and_token_hash_work_offline(tmp_path):
    good = tmp_path / "shop.json"
    good.write_text(json.dumps({"hosts": ["shop.test"], "origins": [{"url": "http://127.0.0.1:1"}]}))
    done = cli("policy", "validate", str(good), token=None)
    assert done.returncode == 0 and "valid (version" in done.stdout

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hosts": [], "origins": [{"url": "ftp://x"}], "rules": [{"match": {}, "bypass": 1}]}))
    done = cli("policy", "validate", str(bad), token=None)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert any(line.startswith(f"{bad}: hosts: expected") for line in lines)
    assert any(": origins[0].url: expected" in line for line in lines)
    assert any(": rules[0].bypass: expected" in line for line in lines)
    assert "3 errors" in lines[-1] and "Traceback" not in done.stderr

    reserved = cli("policy", "validate", "--tenant", "schema", str(good), token=None)
    assert reserved.returncode == 2 and 'other than "schema"' in reserved.stderr
    (tmp_path / "schema.json").write_text(good.read_text())
    named = cli("policy", "validate", str(tmp_path / "schema.json"), token=None)
    assert named.returncode == 0 and "the loader skips it" in named.stderr

    quick = tmp_path / "rules.json"
    quick.write_text(json.dumps({"rules": [{"match": {"path_prefix": "/a/"}, "bypass": True}]}))
    assert cli("policy", "validate", str(quick), token=None).returncode == 1  # hosts, origins missing
    assert cli("policy", "validate", "--quick", str(quick), token=None).returncode == 0

    done = cli("token", "hash", stdin="s3cret-token\n", token=None)
    assert done.returncode == 0
    assert done.stdout.strip() == "sha256:" + hashlib.sha256(b"s3cret-token").hexdigest()
    assert cli("token", "hash", stdin="", token=None).returncode == 2
    new = cli("token", "new", token=None)
    token = new.stdout.split("token: ", 1)[1].split()[0]
    assert f"hash:  sha256:{hashlib.sha256(token.encode()).hexdigest()}" in new.stdout


def test_serve_refuses_an_admin_address_that_is_a_public_listener(run_edge, upstream, port):
    node = run_edge("--origin", upstream.url, "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{port}",
                    ready=False)
    assert node.wait_exit() == 2
    assert "not a public listener" in node.stderr and "Traceback" not in node.stderr


def test_quick_mode_admin_with_the_token_from_the_environment(run_edge, upstream, port, tmp_path):
    upstream.respond("/a", "a", headers={"Cache-Control": "max-age=60"})
    admin = free_port()
    node = run_edge("--origin", upstream.url, "--admin", f"127.0.0.1:{admin}", port=port,
                    env={"EDGE_ADMIN_TOKEN": TOKEN})
    assert node.get("/a").status == 200 and node.get("/a").is_hit
    status, body = admin_get(admin, "/v1/tenants")
    assert status == 200 and body[0]["tenant"] == "default" and body[0]["hosts"] == ["*"]
    done = cli("purge", "--tenant", "default", "--url", "/a", "--admin", f"http://127.0.0.1:{admin}")
    assert done.returncode == 0 and "purged 1 entry" in done.stdout, done.stderr
    assert not node.get("/a").is_hit
    policy_file = tmp_path / "p.json"
    # The state directory holds complete policies, as a policy directory does.
    policy_file.write_text(json.dumps({"rules": []}))
    done = cli("policy", "set", "--tenant", "default", str(policy_file), "--admin", f"http://127.0.0.1:{admin}")
    assert done.returncode == 1 and "422" in done.stderr and "hosts" in done.stderr
    policy_file.write_text(json.dumps({"hosts": ["*"], "origins": [{"url": upstream.url}], "rules": []}))
    done = cli("policy", "set", "--tenant", "default", str(policy_file), "--admin", f"http://127.0.0.1:{admin}")
    assert done.returncode == 0 and "replaced" in done.stdout, done.stderr
    assert admin_get(admin, "/v1/tenants", token="other")[0] == 401


@pytest.mark.parametrize(("value", "why"), [("has spaces in it", "other characters"), ("secret", "at least 16")])
def test_serve_refuses_an_unusable_admin_token_in_the_environment(run_edge, upstream, port, value, why):
    node = run_edge("--origin", upstream.url, "--admin", f"127.0.0.1:{free_port()}", port=port, ready=False,
                    env={"EDGE_ADMIN_TOKEN": value})
    assert node.wait_exit() == 2 and "EDGE_ADMIN_TOKEN" in node.stderr and why in node.stderr
