"""``edge serve --config edge.toml``: a node with a directory of tenant policies."""
from __future__ import annotations

import json

import pytest

from .support import port_is_free


def _node_config(tmp_path, port, *, extra: str = "", directory: str = "policies") -> tuple:
    """edge.toml in tmp/etc with a relative policies directory (relative to
    the file, whatever the node's working directory)."""
    etc = tmp_path / "etc"
    (etc / "policies").mkdir(parents=True, exist_ok=True)
    config = etc / "edge.toml"
    config.write_text(
        f"""
[node]
name = "e2e-node"

[[listen]]
address = "127.0.0.1:{port}"

[cache]
memory_size = "16MiB"

[policies]
directory = "{directory}"
watch_interval = 0

{extra}
"""
    )
    return config, etc / "policies"


def test_config_serves_tenants_by_host_and_421_for_unknown_hosts(run_edge, make_origin, port, tmp_path):
    shop, news = make_origin(), make_origin()
    shop.respond("/", "shop home\n", headers={"Cache-Control": "max-age=60", "Content-Type": "text/plain"})
    news.respond("/", "news home\n", headers={"Cache-Control": "max-age=60", "Content-Type": "text/plain"})
    config, policies = _node_config(tmp_path, port)
    (policies / "shop.json").write_text(json.dumps({"hosts": ["shop.test"], "origins": [{"url": shop.url}]}))
    (policies / "news.json").write_text(json.dumps({"hosts": ["news.test", "*.news.test"], "origins": [{"url": news.url}]}))

    # Started from another directory: the policies path is relative to edge.toml.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    node = run_edge("--config", str(config), port=port, listen=False, cwd=elsewhere)
    assert f"'e2e-node' listening on http://127.0.0.1:{port}" in node.stdout

    r = node.get("/", host="shop.test")
    assert (r.status, r.body) == (200, b"shop home\n"), r
    assert r.cache_status.startswith("e2e-node; fwd=uri-miss; stored"), r
    r = node.get("/", host="shop.test")
    assert (r.status, r.body) == (200, b"shop home\n"), r
    assert r.cache_status.startswith("e2e-node; hit"), r

    for host in ("news.test", "www.news.test", "NEWS.test:80"):
        r = node.get("/", host=host)
        assert (r.status, r.body) == (200, b"news home\n"), (host, r)

    unknown = node.get("/", host="unknown.test")
    assert unknown.status == 421, unknown
    assert unknown.request_id and unknown.request_id.encode() in unknown.body, unknown
    assert node.get("/", host="news.test.evil.example").status == 421

    assert shop.count("/") == 1  # the news hosts never reached the shop's origin


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("unknown-key", "cache.memroy_size"),
        ("bad-size", "cache.memory_size"),
        ("missing-policies-directory", "policies.directory"),
    ],
)
def test_invalid_config_refuses_to_start(run_edge, port, tmp_path, case, field):
    if case == "unknown-key":
        config, _ = _node_config(tmp_path, port, extra='[log]\nlevel = "info"\n')
        config.write_text(config.read_text().replace('memory_size = "16MiB"', 'memroy_size = "16MiB"'))
    elif case == "bad-size":
        config, _ = _node_config(tmp_path, port)
        config.write_text(config.read_text().replace('memory_size = "16MiB"', 'memory_size = "lots"'))
    else:
        config, _ = _node_config(tmp_path, port, directory="no-such-policies")

    node = run_edge("--config", str(config), port=port, listen=False, ready=False)
    status = node.wait_exit()

    assert status != 0, node.describe()
    assert str(config) in node.stderr, node.describe()
    assert field in node.stderr, node.describe()
    assert "Traceback" not in node.stderr, node.describe()
    assert "listening on" not in node.stdout, node.describe()
    assert port_is_free(port)
