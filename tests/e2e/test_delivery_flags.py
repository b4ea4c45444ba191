"""Quick mode with a delivery region: ``edge serve --origin URL --geoip FILE
--node-country CC --trusted-proxy CIDR --policy germany-only.json``."""
from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path

from tests.geo_support import write_country_db

from .support import free_port

ROOT = Path(__file__).resolve().parents[2]


def _get_from(source: str, port: int, path: str = "/page", headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status, dict(r.getheaders())
    finally:
        conn.close()


def test_germany_only_example_in_quick_mode(run_edge, upstream, port, tmp_path):
    upstream.respond("/page", "hallo\n", headers={"Cache-Control": "max-age=60"})
    db = write_country_db(tmp_path / "geo.mmdb", {"127.0.0.2/32": "DE", "127.0.0.3/32": "US"})
    node = run_edge(
        "--origin", upstream.url,
        "--geoip", str(db),
        "--node-country", "DE",
        "--trusted-proxy", "127.0.0.9/32",
        "--policy", str(ROOT / "policies" / "examples" / "germany-only.json"),
        port=port,
    )
    assert "GeoIP database " + str(db) in node.stdout
    assert _get_from("127.0.0.2", port)[0] == 200
    status, headers = _get_from("127.0.0.3", port)
    assert status == 451 and 'rel="blocked-by"' in headers["Link"]
    # Through the trusted proxy, the forwarded client decides.
    assert _get_from("127.0.0.9", port, headers={"X-Forwarded-For": "127.0.0.3"})[0] == 451
    assert _get_from("127.0.0.9", port, headers={"X-Forwarded-For": "127.0.0.2"})[0] == 200


def test_bad_delivery_flags_are_refused(tmp_path):
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"garbage")
    for args, expected in (
        (["--geoip", str(broken)], "broken.mmdb"),
        (["--geoip", str(tmp_path / "missing.mmdb")], "missing.mmdb"),
        (["--node-country", "XX"], "--node-country"),
        (["--trusted-proxy", "10.0.0.1/8"], "--trusted-proxy"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "edge", "serve", "--origin", "http://127.0.0.1:9", "--listen", f"127.0.0.1:{free_port()}", *args],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )
        assert done.returncode != 0, args
        assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
