"""Quick mode: ``edge serve --origin URL [--policy FILE]``."""
from __future__ import annotations

import json

from .support import port_is_free


def test_quick_mode_caches_and_accepts_any_host(run_edge, upstream, port):
    upstream.respond("/hello", "hello from the origin\n",
                     headers={"Cache-Control": "max-age=60", "Content-Type": "text/plain"})

    node = run_edge("--origin", upstream.url, port=port)
    assert f"listening on http://127.0.0.1:{port}" in node.stdout

    first = node.get("/hello")
    assert first.status == 200, first
    assert first.body == b"hello from the origin\n"
    assert "fwd=uri-miss" in first.cache_status and "stored" in first.cache_status, first
    assert first.request_id, first

    second = node.get("/hello")
    assert second.status == 200, second
    assert second.body == b"hello from the origin\n"
    assert second.cache_status.startswith("edge; hit"), second
    assert second.request_id != first.request_id
    assert upstream.count("/hello") == 1

    # Quick mode serves every Host, each with its own cache entries.
    for host in ("shop.example.de", "another-site.test:8443", "localhost"):
        r = node.get("/hello", host=host)
        assert r.status == 200, (host, r)
        assert r.body == b"hello from the origin\n"
        assert "fwd=uri-miss" in r.cache_status, (host, r)
        again = node.get("/hello", host=host)
        assert again.is_hit, (host, again)
    assert upstream.count("/hello") == 4


def test_quick_mode_policy_with_only_rules_applies(run_edge, upstream, port, tmp_path):
    upstream.respond("/static/app.css", "body{}\n",
                     headers={"Cache-Control": "max-age=60", "Content-Type": "text/css"})
    upstream.respond("/page", "<p>page</p>\n",
                     headers={"Cache-Control": "max-age=60", "Content-Type": "text/html"})
    upstream.respond("/admin/panel", "<p>admin</p>\n",
                     headers={"Cache-Control": "max-age=60", "Content-Type": "text/html"})
    policy = tmp_path / "rules.json"
    policy.write_text(json.dumps({"rules": [
        {"match": {"path_prefix": "/static/"}, "browser_ttl": {"override": 123}},
        {"match": {"path_prefix": "/admin/"}, "bypass": True},
    ]}))

    node = run_edge("--origin", upstream.url, "--policy", str(policy), port=port)

    css = node.get("/static/app.css")
    assert css.status == 200, css
    assert css.headers.get("Cache-Control") == "max-age=123", css
    again = node.get("/static/app.css")
    assert again.is_hit, again
    assert again.headers.get("Cache-Control") == "max-age=123", again

    page = node.get("/page")
    assert page.headers.get("Cache-Control") == "max-age=60", page  # no rule matched

    for _ in range(2):
        admin = node.get("/admin/panel")
        assert admin.status == 200 and admin.body == b"<p>admin</p>\n", admin
        assert "fwd=bypass" in admin.cache_status, admin
    assert upstream.count("/admin/panel") == 2


def test_quick_mode_invalid_policy_refuses_to_start(run_edge, upstream, port, tmp_path):
    policy = tmp_path / "rules.json"
    policy.write_text(json.dumps({"rules": [
        {"match": {"path_prefix": "/static/"}, "edge_ttl": {"override": -1}},
    ]}))

    node = run_edge("--origin", upstream.url, "--policy", str(policy), port=port, ready=False)
    status = node.wait_exit()

    assert status != 0, node.describe()
    assert str(policy) in node.stderr, node.describe()
    assert "rules[0].edge_ttl.override" in node.stderr, node.describe()
    assert "Traceback" not in node.stderr, node.describe()
    assert "listening on" not in node.stdout, node.describe()
    assert port_is_free(port)
