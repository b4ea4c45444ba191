"""Certificates from a real ACME CA (pebble, tests/acme_support.py) for
tenants with ``"tls": {"acme": true}``, the node started as in production
(``edge serve --config``). Pebble validates HTTP-01 on the node's plain
listener; its DNS sends every name to 127.0.0.1.

Where a test has no HTTPS listener, what the node would serve is read from
its certificate store, the files an HTTPS listener loads; where it has one,
clients trusting pebble's root connect to it.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from edge.observe.events import verify_signature
from edge.tls.certs import check_upload
from edge.tls.store import CertificateStore
from tests.acme_support import BLOCKED, Pebble
from tests.tls_support import chain

from .support import free_port, wait_until, write_json_atomically
from .test_admin_cli import TOKEN
from .test_certificate_hot_swap import workers_up
from .test_certificates import changes_per_worker
from .test_tls_cli import https_request

ISSUE_TIMEOUT = 60.0  # a bound for a loaded machine, never a measurement
SECRET = "0123456789abcdef0123"


class NodeDir:
    """A node's edge.toml and policies; its certificates and ACME state beside them."""

    def __init__(self, root: Path, pebble: Pebble) -> None:
        self.root = root
        self.pebble = pebble
        (root / "policies").mkdir(parents=True, exist_ok=True)
        self.store = CertificateStore(root / "certificates")
        self.acme = root / "acme"

    def configure(self, *, workers: int = 1, tls_port: int | None = None, **acme: object) -> Path:
        settings = {"directory_url": self.pebble.directory_url, "email": "certs@example.de",
                    "ca_bundle": str(self.pebble.ca_bundle), **acme}
        https = f'[[listen]]\naddress = "127.0.0.1:{tls_port}"\ntls = true\n' if tls_port else ""
        lines = [f"[node]\nworkers = {workers}\n",
                 f'[[listen]]\naddress = "127.0.0.1:{self.pebble.http_port}"\n{https}',
                 '[policies]\ndirectory = "policies"\nwatch_interval = 0.2\n',
                 "[acme]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
        path = self.root / "edge.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def tenant(self, name: str, hosts: list[str], origin: str, *, tls: dict | None = None, **extra: object) -> None:
        policy = {"hosts": hosts, "origins": [{"url": origin}], "tls": {"acme": True} if tls is None else tls,
                  **extra}
        write_json_atomically(self.root / "policies" / f"{name}.json", policy)

    def state(self) -> dict:
        try:
            return json.loads((self.acme / "state.json").read_text())
        except FileNotFoundError:
            return {}

    def failures(self, name: str) -> int:
        return self.state().get("certificates", {}).get(name, {}).get("failures", 0)

    def fingerprint(self, tenant: str, name: str) -> str | None:
        cert = self.store.get(tenant, name)
        return None if cert is None else cert.info.fingerprint_sha256


@pytest.fixture
def node_dir(tmp_path, pebble) -> NodeDir:
    return NodeDir(tmp_path / "node", pebble)


def start(run_edge, node_dir: NodeDir, *args: str, env: dict | None = None, **config):
    return run_edge("--config", str(node_dir.configure(**config)), *args, port=node_dir.pebble.http_port,
                    listen=False, env=env)


def leaf_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes().split(b"-----BEGIN PRIVATE KEY-----")[0])[0]


def seed(node_dir: NodeDir, tenant: str, host: str, not_after: dt.datetime) -> str:
    """A certificate for ``host`` that the tenant holds already (from another
    CA), valid until ``not_after``; returns its fingerprint."""
    now = dt.datetime.now(dt.timezone.utc)
    chain_pem, key_pem, _, _ = chain(host, not_before=now - dt.timedelta(days=60), not_after=not_after)
    return node_dir.store.put(tenant, f"acme-{host}", check_upload(chain_pem, key_pem, now)).info.fingerprint_sha256


def test_each_exact_host_of_the_tenant_gets_a_certificate_at_start(pebble, node_dir, run_edge, upstream):
    hosts = ["shop.test", "www.shop.test"]
    node_dir.tenant("shop", [*hosts, "*.img.shop.test"], upstream.url)
    # Two workers on one port: the CA's validation requests reach either.
    node = start(run_edge, node_dir, workers=2)

    wait_until(lambda: all(node_dir.store.get("shop", f"acme-{h}") for h in hosts), timeout=ISSUE_TIMEOUT,
               message=lambda: f"no certificates\n{node.describe()}\n{pebble.logs()}")
    for host in hosts:
        stored = node_dir.store.get("shop", f"acme-{host}")
        assert stored.info.hosts == (host,)
        leaf_of(stored.path).verify_directly_issued_by(pebble.intermediate())
        assert stored.path.stat().st_mode & 0o777 == 0o600
    assert (node_dir.acme / "account.key").stat().st_mode & 0o777 == 0o600
    assert "no ACME certificate for host *.img.shop.test: a wildcard" in node.stderr
    assert not [r for r in upstream.requests if r["path"].startswith("/.well-known/")]
    # Answered challenges are removed; no order is left open.
    assert not any((node_dir.acme / "challenges").iterdir())
    wait_until(lambda: not any((node_dir.acme / "orders").iterdir()), timeout=ISSUE_TIMEOUT,
               message=lambda: f"orders left: {list((node_dir.acme / 'orders').iterdir())}")


def logged_at(stderr: str, text: str) -> float:
    """When the node logged the first line holding ``text`` (its local time)."""
    line = next(line for line in stderr.splitlines() if text in line)
    return dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_certificates_are_renewed_before_they_expire(pebble, node_dir, run_edge, upstream):
    now = dt.datetime.now(dt.timezone.utc)
    node_dir.tenant("shop", ["soon.shop.test", "later.shop.test"], upstream.url)
    # Within renew_before (30 days) already, and in a few seconds.
    soon = seed(node_dir, "shop", "soon.shop.test", now + dt.timedelta(days=2))
    later = seed(node_dir, "shop", "later.shop.test", now + dt.timedelta(days=30, seconds=8))
    due = node_dir.store.get("shop", "acme-later.shop.test").info.not_after - dt.timedelta(days=30)
    node = start(run_edge, node_dir)

    def renewed(host: str, before: str) -> bool:
        return node_dir.fingerprint("shop", f"acme-{host}") not in (before, None)

    wait_until(lambda: renewed("soon.shop.test", soon), timeout=ISSUE_TIMEOUT,
               message=lambda: f"not renewed\n{node.describe()}")
    leaf_of(node_dir.store.get("shop", "acme-soon.shop.test").path).verify_directly_issued_by(pebble.intermediate())
    # Renewed when it comes due, not before, without a restart or a policy change.
    wait_until(lambda: renewed("later.shop.test", later), timeout=ISSUE_TIMEOUT,
               message=lambda: f"not renewed when due\n{node.describe()}")
    assert logged_at(node.stderr, "ACME order placed for later.shop.test") >= due.timestamp()


def test_a_failed_renewal_backs_off_tells_the_tenant_and_survives_a_restart(pebble, node_dir, run_edge,
                                                                             upstream):
    upstream.respond("/hook", "ok")
    hook = upstream.url + "/hook"
    node_dir.tenant("shop", ["ok.shop.test", BLOCKED], upstream.url,
                    filters={"events": {"webhook_url": hook, "secret": SECRET}})
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    seed(node_dir, "shop", BLOCKED, expires)
    name = f"acme-{BLOCKED}"
    node = start(run_edge, node_dir, retry_min=1, retry_max=2)

    def events() -> list[dict]:
        # The seeded certificate's own expiry notice (3 days left) goes to the same hook.
        return [r for r in list(upstream.requests)
                if r["path"] == "/hook" and json.loads(r["body"])["what"] != "certificate_expiry"]

    # Tried again after each failure, the waits bounded by retry_max.
    wait_until(lambda: len(events()) >= 3, timeout=ISSUE_TIMEOUT,
               message=lambda: f"events: {events()}\n{node.describe()}")
    bodies = [json.loads(e["body"]) for e in events()]
    for n, (event, body) in enumerate(zip(events(), bodies), start=1):
        assert verify_signature(SECRET, event["headers"]["Edge-Signature"], event["body"],
                                dt.datetime.now().timestamp())
        assert body["what"] == "certificate_renewal_failed" and body["tenant"] == "shop"
        certificate = body["certificate"]
        assert certificate["name"] == name and certificate["hosts"] == [BLOCKED]
        assert certificate["failures"] == n
        assert "rejectedIdentifier" in certificate["error"]
        assert certificate["not_after"] == expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        waited = dt.datetime.fromisoformat(certificate["next_attempt"]) - dt.datetime.fromisoformat(body["time"])
        assert waited <= dt.timedelta(seconds=3)  # retry_max, and the seconds the times are cut to
    assert "security event certificate_renewal_failed: tenant=shop" in node.stderr
    # One host failing keeps no other from its certificate.
    wait_until(lambda: node_dir.store.get("shop", "acme-ok.shop.test"), timeout=ISSUE_TIMEOUT,
               message=lambda: node.describe())
    issued = node_dir.fingerprint("shop", "acme-ok.shop.test")
    assert node.terminate() == 0

    # After a restart the count goes on where it was, and a certificate
    # still valid is not ordered again.
    failures = node_dir.failures(name)
    assert failures >= 3
    stopped_at = dt.datetime.now().timestamp()
    node = start(run_edge, node_dir, retry_min=3600, retry_max=7200)
    wait_until(lambda: node_dir.failures(name) > failures, timeout=ISSUE_TIMEOUT,
               message=lambda: f"{node_dir.state()}\n{node.describe()}")
    assert node_dir.failures(name) == failures + 1
    wait_until(lambda: (node_dir.state().get("checked") or 0) > stopped_at, timeout=ISSUE_TIMEOUT,
               message=lambda: node.describe())
    assert node_dir.fingerprint("shop", "acme-ok.shop.test") == issued
    assert "ACME order placed" not in node.stderr  # the blocked host's orders are refused, none is placed


def test_a_tenant_without_acme_gets_nothing_and_keeps_its_challenge_path(pebble, node_dir, run_edge, upstream):
    upstream.respond("/.well-known/acme-challenge/own-client-token-0123", "the origin's own answer")
    (node_dir.root / "policies").mkdir(parents=True, exist_ok=True)
    (node_dir.root / "policies" / "plain.json").write_text(json.dumps(
        {"hosts": ["plain.test"], "origins": [{"url": upstream.url}]}))
    node = start(run_edge, node_dir)
    answer = node.get("/.well-known/acme-challenge/own-client-token-0123", host="plain.test")
    assert answer.status == 200 and answer.body == b"the origin's own answer", answer
    wait_until(lambda: node_dir.state().get("checked"), timeout=ISSUE_TIMEOUT, message=lambda: node.describe())
    assert node_dir.store.all() == []
    assert "ACME order placed" not in node.stderr


def worker_of(answer: bytes) -> int:
    """The answering process (the low 16 bits of its pid) from an answer's X-Request-Id."""
    return int(re.search(rb"\r\nX-Request-Id: ([0-9a-f]{4})", answer, re.IGNORECASE).group(1), 16)


def test_an_issued_certificate_serves_https_on_every_worker(pebble, node_dir, run_edge, upstream):
    """A tenant turns tls.acme on while the node runs: the worker that
    orders the certificate has its sibling take it too (nothing else makes
    a worker read the store while its policies stay the same)."""
    upstream.respond("/hello", "hello over https\n", headers={"Cache-Control": "no-store"})
    node_dir.tenant("shop", ["shop.test"], upstream.url, tls={})
    tls_port, admin = free_port(), free_port()
    node = start(run_edge, node_dir, "--admin", f"127.0.0.1:{admin}", env={"EDGE_ADMIN_TOKEN": TOKEN},
                 workers=2, tls_port=tls_port)
    wait_until(lambda: workers_up(admin), timeout=20, message=lambda: f"not both workers are up\n{node.describe()}")
    trusted = ssl.create_default_context(cadata=pebble.root_pem())
    with pytest.raises(ssl.SSLError) as info:
        https_request(tls_port, "shop.test", context=trusted)
    assert info.value.reason == "TLSV1_UNRECOGNIZED_NAME"

    node_dir.tenant("shop", ["shop.test"], upstream.url)
    wait_until(lambda: list(changes_per_worker(admin).values()) == [1, 1], timeout=ISSUE_TIMEOUT,
               message=lambda: f"{changes_per_worker(admin)}\n{node.describe()}\n{pebble.logs()}")
    # Every new connection, on either worker, gets the certificate pebble
    # issued (its chain ends at pebble's root) and reaches the origin.
    workers = set()
    for _ in range(40):
        status, answer, _ = https_request(tls_port, "shop.test", "/hello", context=trusted)
        assert status == 200 and answer.endswith(b"hello over https\n"), answer
        workers.add(worker_of(answer))
    assert len(workers) == 2
    forwarded = [r for r in upstream.requests if r["path"] == "/hello"]
    assert len(forwarded) == 40 and {r["headers"]["X-Forwarded-Proto"] for r in forwarded} == {"https"}


def test_a_tenant_that_redirects_to_https_still_gets_its_certificate(pebble, node_dir, run_edge, upstream):
    upstream.respond("/page", "page\n", headers={"Cache-Control": "no-store"})
    node_dir.tenant("shop", ["secure.shop.test"], upstream.url, tls={"acme": True, "redirect_http": True})
    tls_port = free_port()
    node = start(run_edge, node_dir, tls_port=tls_port)
    moved = node.get("/page?x=1", host="secure.shop.test")
    assert moved.status == 308 and moved.headers["Location"] == "https://secure.shop.test/page?x=1", moved
    trusted = ssl.create_default_context(cadata=pebble.root_pem())

    def served() -> tuple | None:
        try:
            return https_request(tls_port, "secure.shop.test", "/page?x=1", context=trusted)
        except ssl.SSLError:  # no certificate yet
            return None

    # Pebble's validation requests came over plain HTTP, and were answered, not redirected.
    status, answer, _ = wait_until(served, timeout=ISSUE_TIMEOUT,
                                   message=lambda: f"no certificate\n{node.describe()}\n{pebble.logs()}")
    assert status == 200 and answer.endswith(b"page\n"), answer
    assert [r["path"] for r in upstream.requests] == ["/page"]
