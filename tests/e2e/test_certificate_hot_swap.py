"""A tenant's certificate replaced and removed through the admin API while
clients keep connecting: ``edge serve --workers 2`` as a subprocess, real
TLS clients in threads, each new connection a full handshake."""
from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest
import trustme

from tests.tls_support import client_context, fingerprint

from .support import free_port, wait_until
from .test_admin_cli import TOKEN, admin_get, cli, node_config
from .test_certificates import changes_per_worker
from .test_tls_cli import https_request

HOST = "shop.test"
NEW_CONNECTION_CLIENTS = 4
KEEP_ALIVE_CLIENTS = 3
AFTER_SWAP = 40  # handshakes begun after the answer: enough for both workers to take some


class Connection(http.client.HTTPConnection):
    """HTTPS to the node on loopback with ``HOST`` as the server name."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, timeout=30)
        self.tls_context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=HOST)

    @property
    def presented(self) -> str:
        """The fingerprint of the certificate the node presented."""
        return fingerprint(self.sock.getpeercert(binary_form=True))

    def get(self, *, close: bool) -> int:
        """GET / for HOST; the answering worker (the low 16 bits of its pid, from X-Request-Id)."""
        self.request("GET", "/", headers={"Host": HOST, **({"Connection": "close"} if close else {})})
        resp = self.getresponse()
        body = resp.read()
        if resp.status != 200 or body != b"ok\n":
            raise AssertionError(f"answered {resp.status} {body[:80]!r}")
        return int(resp.headers["X-Request-Id"].split("-", 1)[0][:4], 16)


@dataclass(frozen=True)
class Attempt:
    started: float  # time.monotonic() before the connection was opened
    fingerprint: str | None  # of the certificate the node presented
    worker: int | None
    error: str | None


@dataclass
class Kept:
    """One connection kept open, with a request after another on it."""

    conn: Connection
    fingerprint: str | None = None
    requests: list[tuple[float, str | None]] = field(default_factory=list)  # (started, error)


class Load:
    """Clients that open new connection after new connection, and clients
    that each send request after request on the connection they opened,
    until stopped."""

    def __init__(self, port: int, ca: trustme.CA) -> None:
        self.port = port
        self.context = client_context(ca)
        self.attempts: list[Attempt] = []
        self.kept = [Kept(Connection(port, self.context)) for _ in range(KEEP_ALIVE_CLIENTS)]
        self._stop = threading.Event()
        self._threads = ([threading.Thread(target=self._new_connections) for _ in range(NEW_CONNECTION_CLIENTS)]
                         + [threading.Thread(target=self._keep_alive, args=(kept,)) for kept in self.kept])

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a client hangs"

    def since(self, moment: float) -> list[Attempt]:
        return [a for a in list(self.attempts) if a.started > moment]

    def errors(self) -> list[str]:
        return [a.error for a in list(self.attempts) if a.error] + [
            e for kept in self.kept for _, e in list(kept.requests) if e]

    def _new_connections(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            conn = Connection(self.port, self.context)
            presented = worker = error = None
            try:
                conn.connect()
                presented = conn.presented
                worker = conn.get(close=True)
            except Exception as exc:  # noqa: BLE001 - every failure counts; the test lists them
                error = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
            self.attempts.append(Attempt(started, presented, worker, error))

    def _keep_alive(self, kept: Kept) -> None:
        try:
            kept.conn.connect()
            sock = kept.conn.sock
            kept.fingerprint = kept.conn.presented
        except Exception as exc:  # noqa: BLE001
            kept.requests.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            return
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                kept.conn.get(close=False)
                # http.client opens a new connection by itself when the node closed one.
                error = None if kept.conn.sock is sock else "the connection was closed"
            except Exception as exc:  # noqa: BLE001
                error = f"{type(exc).__name__}: {exc}"
            kept.requests.append((started, error))
            if error:
                return


def api(admin: int, method: str, path: str, body: object = None) -> tuple[int, dict | None]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def upload(leaf: trustme.LeafCert) -> dict[str, str]:
    return {"certificate": "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems),
            "private_key": leaf.private_key_pem.bytes().decode()}


def workers_up(admin: int) -> bool:
    try:
        return len(changes_per_worker(admin)) == 2
    except OSError:  # no worker has its admin listener yet
        return False


def test_a_certificate_replaced_under_load_fails_no_request(run_edge, upstream, port, tmp_path):
    upstream.respond("/", "ok\n", headers={"Cache-Control": "max-age=600"})
    admin, tls_port = free_port(), free_port()
    node = run_edge("--config", str(node_config(tmp_path, upstream.url, port)), "--workers", "2",
                    "--tls-listen", f"127.0.0.1:{tls_port}", "--admin", f"127.0.0.1:{admin}",
                    port=port, listen=False, env={"EDGE_ADMIN_TOKEN": TOKEN})
    wait_until(lambda: workers_up(admin), timeout=20, message=lambda: f"not both workers are up\n{node.describe()}")
    ca = trustme.CA()
    first, second = ca.issue_cert(HOST), ca.issue_cert(HOST)  # a key each

    # A, as an operator installs it.
    (tmp_path / "a.crt").write_text(upload(first)["certificate"])
    (tmp_path / "a.key").write_text(upload(first)["private_key"])
    done = cli("cert", "set", "shop", "www", "--cert", str(tmp_path / "a.crt"), "--key", str(tmp_path / "a.key"),
               "--admin", f"http://127.0.0.1:{admin}")
    assert done.returncode == 0, done.stderr
    status, a = admin_get(admin, "/v1/tenants/shop/certificates/www")
    assert status == 200, a

    with Load(tls_port, ca) as load:
        # Under way on both workers, every kept connection answering.
        wait_until(lambda: len({x.worker for x in load.since(0) if x.worker is not None}) == 2
                   and all(kept.requests for kept in load.kept) or load.errors(), timeout=60,
                   message=lambda: node.describe())
        assert load.errors() == []

        # B, through the API, while the clients go on.
        status, b = api(admin, "PUT", "/v1/tenants/shop/certificates/www", upload(second))
        answered = time.monotonic()
        assert status == 200, b
        assert b["fingerprint_sha256"] == fingerprint(_der(second)) != a["fingerprint_sha256"]

        wait_until(lambda: (len(load.since(answered)) >= AFTER_SWAP
                            and len({x.worker for x in load.since(answered)}) == 2
                            and all(any(s > answered for s, _ in kept.requests) for kept in load.kept))
                   or load.errors(), timeout=120,
                   message=lambda: f"{len(load.since(answered))} handshakes since the answer\n{node.describe()}")

    assert load.errors() == []
    late = load.since(answered)
    # Every handshake begun after the answer got B, from either worker.
    assert {x.fingerprint for x in late} == {b["fingerprint_sha256"]}, late
    assert len({x.worker for x in late}) == 2
    # The connections opened before kept A and served on, never reopened.
    assert [kept.fingerprint for kept in load.kept] == [a["fingerprint_sha256"]] * KEEP_ALIVE_CLIENTS

    # Removed: new handshakes find no certificate (the node has no default);
    # the connections open before still answer.
    status, _ = api(admin, "DELETE", "/v1/tenants/shop/certificates/www")
    assert status == 204
    assert list(changes_per_worker(admin).values()) == [3, 3]
    for _ in range(AFTER_SWAP // 2):
        with pytest.raises(ssl.SSLError) as info:
            https_request(tls_port, HOST, context=client_context(ca))
        assert info.value.reason == "TLSV1_UNRECOGNIZED_NAME"
    for kept in load.kept:
        kept.conn.get(close=True)
    assert node.proc.poll() is None and "Traceback" not in node.stderr, node.describe()


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
