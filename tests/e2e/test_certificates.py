"""Tenant certificates as operators handle them: ``edge serve`` as a
subprocess and ``edge cert set|list|delete``; every worker takes a change
before the command returns, and an expiry notice goes out once, also
across a restart."""
from __future__ import annotations

import datetime as dt
import json
import urllib.error
from pathlib import Path

from edge.tls.certs import check_upload
from edge.tls.store import CertificateStore
from tests.tls_support import chain

from .support import free_port, wait_until
from .test_admin_cli import TOKEN, admin_get, cli, node_config

DAY = dt.timedelta(days=1)


def write_chain(directory: Path, stem: str, *names: str, days: float = 90, passphrase: bytes | None = None,
                key_kind: str = "ec256") -> tuple[Path, Path, list[str]]:
    """Chain and key files for ``names``, valid from yesterday for ``days`` days; and the key's base64 lines."""
    now = dt.datetime.now(dt.UTC)
    pem, key_pem, leaf, _ = chain(*names, key_kind=key_kind, not_before=now - DAY, not_after=now + days * DAY)
    if passphrase is not None:
        key_pem = leaf.key_pem(passphrase)
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_text(pem)
    key.write_text(key_pem)
    return cert, key, [line for line in key_pem.splitlines() if not line.startswith("-----")]


def changes_per_worker(admin: int) -> dict[int, int]:
    status, stats = admin_get(admin, "/v1/stats")
    assert status == 200, stats
    return {w["worker"]: w["certificate_changes"] for w in stats["workers"]}


def test_cert_commands_reach_every_worker_before_they_return(run_edge, upstream, port, tmp_path):
    admin = free_port()
    config = node_config(tmp_path, upstream.url, port)
    node = run_edge("--config", str(config), "--workers", "2", "--admin", f"127.0.0.1:{admin}",
                    port=port, listen=False, env={"EDGE_ADMIN_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{admin}"

    def both_up() -> bool:
        try:
            return len(changes_per_worker(admin)) == 2
        except urllib.error.URLError:  # no worker has its admin listener yet
            return False

    wait_until(both_up, timeout=20, message=lambda: f"not both workers are up\n{node.describe()}")
    assert set(changes_per_worker(admin).values()) == {0}

    cert, key, secret_lines = write_chain(tmp_path, "www", "shop.test", passphrase=b"open sesame")
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("open sesame\n")
    done = cli("cert", "set", "shop", "www", "--cert", str(cert), "--key", str(key), "--passphrase-file",
               str(passphrase), "--admin", base)
    assert done.returncode == 0, done.stderr
    assert "certificate www stored for shop.test (ecdsa-p256" in done.stdout and "every worker" in done.stdout
    # Answered only once both workers had run their part: no waiting here.
    assert list(changes_per_worker(admin).values()) == [1, 1]
    stored = tmp_path / "certificates" / "shop" / "www.pem"
    assert stored.stat().st_mode & 0o777 == 0o600

    listed = cli("cert", "list", "shop", "--admin", base)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "KEY", "NOT"] and row.split()[:2] == ["www", "ecdsa-p256"]
    assert row.endswith("shop.test")
    as_json = json.loads(cli("cert", "list", "shop", "--json", "--admin", base).stdout)
    assert [c["name"] for c in as_json] == ["www"] and "private_key" not in as_json[0]

    # Refusals: a message with the field, exit 1, and the stored file as it was.
    before = stored.read_bytes()
    other_cert, other_key, _ = write_chain(tmp_path, "other", "shop.test", key_kind="ec256-other")
    mismatch = cli("cert", "set", "shop", "www", "--cert", str(cert), "--key", str(other_key), "--admin", base)
    assert mismatch.returncode == 1 and "422" in mismatch.stderr and "private_key: does not match" in mismatch.stderr
    foreign_cert, foreign_key, _ = write_chain(tmp_path, "foreign", "elsewhere.test")
    foreign = cli("cert", "set", "shop", "www", "--cert", str(foreign_cert), "--key", str(foreign_key),
                  "--admin", base)
    assert foreign.returncode == 1 and "which no tenant serves" in foreign.stderr
    missing = cli("cert", "set", "shop", "www", "--cert", str(tmp_path / "nope.crt"), "--key", str(key),
                  "--admin", base)
    assert missing.returncode == 1 and "cannot read --cert" in missing.stderr and "no such file" in missing.stderr
    unknown = cli("cert", "list", "nosuch", "--admin", base)
    assert unknown.returncode == 1 and "no tenant nosuch (HTTP 404)" in unknown.stderr
    usage = cli("cert", "set", "shop", "www", "--cert", str(cert))
    assert usage.returncode == 2 and "--key" in usage.stderr
    for result in (mismatch, foreign, missing, unknown):
        assert "Traceback" not in result.stderr
    assert stored.read_bytes() == before
    assert list(changes_per_worker(admin).values()) == [1, 1]

    done = cli("cert", "delete", "shop", "www", "--admin", base)
    assert done.returncode == 0 and "removed" in done.stdout, done.stderr
    assert list(changes_per_worker(admin).values()) == [2, 2]
    again = cli("cert", "delete", "shop", "www", "--admin", base)
    assert again.returncode == 1 and "no certificate www of tenant shop (HTTP 404)" in again.stderr
    assert "no certificates" in cli("cert", "list", "shop", "--admin", base).stderr

    node.terminate()
    for line in secret_lines:
        assert line not in node.stderr + node.stdout
    assert "open sesame" not in node.stderr + node.stdout


def test_an_expiry_notice_goes_out_once_also_across_a_restart(run_edge, upstream, port, tmp_path):
    """Quick mode: the tenant default serves every host, so any name is its own."""
    admin = free_port()
    state = tmp_path / "state"
    args = ("--origin", upstream.url, "--state-dir", str(state), "--admin", f"127.0.0.1:{admin}")
    node = run_edge(*args, port=port, env={"EDGE_ADMIN_TOKEN": TOKEN})
    cert, key, _ = write_chain(tmp_path, "www", "www.anything.example", "*.cdn.example", days=6)
    done = cli("cert", "set", "default", "www", "--cert", str(cert), "--key", str(key),
               "--admin", f"http://127.0.0.1:{admin}")
    assert done.returncode == 0, done.stderr
    notice = "security event certificate_expiry: tenant=default certificate=www expires"
    wait_until(lambda: notice in node.stderr, timeout=20, message=lambda: f"no notice\n{node.describe()}")
    assert "7-day notice" in node.stderr
    status, stats = admin_get(admin, "/v1/stats")
    assert [c["name"] for c in stats["certificates_expiring"]] == ["www"]
    assert node.terminate() == 0

    # While the node is down another certificate near its end is stored, as
    # another node of the fleet (or a restore) would leave it.
    now = dt.datetime.now(dt.UTC)
    pem, key_pem, _, _ = chain("api.anything.example", not_before=now - DAY, not_after=now + 0.5 * DAY)
    CertificateStore(state / "certificates").put("default", "api", check_upload(pem, key_pem, now))

    again = run_edge(*args, port=port, env={"EDGE_ADMIN_TOKEN": TOKEN})
    # The start's check ran: it announced the new certificate ...
    wait_until(lambda: "certificate=api expires" in again.stderr, timeout=20,
               message=lambda: f"no notice for api\n{again.describe()}")
    assert "1-day notice" in again.stderr
    # ... and not the one announced before the restart.
    assert "certificate=www" not in again.stderr
    assert node.stderr.count("certificate_expiry") == 1
    status, stats = admin_get(admin, "/v1/stats")
    assert [c["name"] for c in stats["certificates_expiring"]] == ["api", "www"]
