"""ACME orders against a real CA (pebble), through the client the node's
ACME manager runs in a thread (edge/tls/acme_client.py)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge.tls.acme_client import AcmeClient, OrderFailed, Stopped
from edge.tls.challenges import ChallengeFiles
from tests.acme_support import BLOCKED

WAIT = 60.0  # a bound for a loaded machine, never a measurement


class HeldValidations:
    """Pebble's HTTP-01 port: answers from the challenge files, each
    validation request held until ``release`` is set."""

    def __init__(self, port: int, files: ChallengeFiles) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.arrived.set()
                outer.release.wait(WAIT)
                answer = files.read(self.path.rsplit("/", 1)[-1])
                self.send_response(200 if answer else 404)
                self.end_headers()
                self.wfile.write(answer or b"")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def files(tmp_path) -> ChallengeFiles:
    return ChallengeFiles(tmp_path / "challenges")


@pytest.fixture
def validations(pebble, files):
    v = HeldValidations(pebble.http_port, files)
    yield v
    v.close()


def make_client(pebble, tmp_path, files, stop=None) -> AcmeClient:
    return AcmeClient(pebble.directory_url, tmp_path / "account.key", email="certs@example.de",
                      ca_bundle=pebble.ca_bundle, request_timeout=10, order_timeout=WAIT, challenges_dir=files,
                      orders_dir=tmp_path / "orders", stop=stop or threading.Event())


def public_key(pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(pem, None).public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_an_order_cut_short_by_a_stop_is_resumed_not_placed_again(pebble, tmp_path, files, validations):
    stop = threading.Event()
    first = make_client(pebble, tmp_path, files, stop)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(first.issue("acme-resume.test", ("resume.test",)))
        except Exception as exc:  # noqa: BLE001 - looked at below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert validations.arrived.wait(WAIT), pebble.logs()
    stop.set()  # the node stops while the CA validates
    worker.join(WAIT)
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped), outcome
    saved = json.loads((tmp_path / "orders" / "acme-resume.test.json").read_text())
    assert (tmp_path / "orders" / "acme-resume.test.json").stat().st_mode & 0o777 == 0o600
    assert any(files.directory.iterdir())  # the answer waits for the CA

    validations.release.set()
    # The next process: a client of its own, the same account key and directory.
    issued = make_client(pebble, tmp_path, files).issue("acme-resume.test", ("resume.test",))
    leaf = x509.load_pem_x509_certificates(issued.chain_pem)[0]
    assert issued.key_pem == saved["key"].encode()  # the order's own key: the same order
    assert leaf.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo) == public_key(issued.key_pem)
    leaf.verify_directly_issued_by(pebble.intermediate())
    assert not any(files.directory.iterdir())


def test_a_refused_name_is_a_failure_naming_the_reason(pebble, tmp_path, files):
    with pytest.raises(OrderFailed) as info:
        make_client(pebble, tmp_path, files).issue(f"acme-{BLOCKED}", (BLOCKED,))
    assert "rejectedIdentifier" in str(info.value)
    assert not (tmp_path / "orders" / f"acme-{BLOCKED}.json").exists()


def test_an_unreachable_ca_is_a_failure(tmp_path, files):
    client = AcmeClient("https://127.0.0.1:9/dir", tmp_path / "account.key", email=None, ca_bundle=None,
                        request_timeout=5, order_timeout=10, challenges_dir=files, orders_dir=tmp_path / "orders",
                        stop=threading.Event())
    with pytest.raises(OrderFailed) as info:
        client.issue("acme-x.test", ("x.test",))
    assert str(info.value).startswith("cannot reach the CA")
    assert (tmp_path / "account.key").stat().st_mode & 0o777 == 0o600  # made on first use
