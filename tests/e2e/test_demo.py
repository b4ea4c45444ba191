"""``edge serve`` without an origin: the demo tenant in front of the built-in demo origin."""
from __future__ import annotations

import pytest

from .support import DEMO_PORT, port_is_free


def test_demo_mode_serves_the_demo_site_and_caches_it(run_edge, port, tmp_path):
    if not port_is_free(DEMO_PORT):
        pytest.fail(f"port {DEMO_PORT} on 127.0.0.1 is busy: demo mode starts its built-in origin there; "
                    f"stop whatever listens on it and run again")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    # The demo keeps its disk tier under the temporary directory: isolate it.
    node = run_edge(port=port, env={"TMPDIR": str(tmpdir)})

    banner = node.stdout
    assert f"listening on http://127.0.0.1:{port}" in banner, banner
    assert f"http://127.0.0.1:{DEMO_PORT}" in banner, banner
    assert f"curl -i http://127.0.0.1:{port}/ " in banner, banner
    assert f"curl -i http://127.0.0.1:{port}/static/site.css" in banner, banner

    first = node.get("/")
    assert first.status == 200, first
    assert b"edge demo origin" in first.body, first
    assert "fwd=uri-miss" in first.cache_status and "stored" in first.cache_status, first
    second = node.get("/")
    assert second.status == 200, second
    assert second.cache_status.startswith("edge; hit"), second
    assert second.body == first.body  # the same rendering (request #1), not a new one

    css = node.get("/static/site.css")
    assert css.status == 200 and css.headers.get("Cache-Control") == "max-age=3600", css
    assert node.get("/", host="unknown.example").status == 421

    assert node.terminate() == 0, node.describe()
    assert port_is_free(DEMO_PORT), "the demo origin kept its port after the node stopped"
