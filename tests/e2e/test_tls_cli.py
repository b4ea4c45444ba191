"""HTTPS through ``edge serve`` as users run it (uvloop, when installed):
``--tls-listen`` in quick mode, ``[[listen]] tls = true`` in config mode, and
bad handshakes against the node's process, counting its open files."""
from __future__ import annotations

import json
import os
import socket
import ssl

import pytest
import trustme

from tests.tls_support import client_context, client_hello, store_leaf

from .support import free_port, wait_until


def https_request(port: int, server_name: str | None, path: str = "/", *, host: str | None = None,
                  context: ssl.SSLContext | None = None) -> tuple[int, bytes, str]:
    """One request on a new TLS connection: status, the whole answer, the TLS version."""
    context = context or client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host or server_name}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
            return int(answer.split(b" ", 2)[1]), answer, tls.version()


def test_tls_listen_serves_https_in_quick_mode(run_edge, upstream, port, tmp_path):
    upstream.respond("/hello", "hello over https\n", headers={"Cache-Control": "max-age=60"})
    ca = trustme.CA()
    state = tmp_path / "state"
    store_leaf(state / "certificates", "default", "edge", ca.issue_cert("edge.test"))  # <state dir>/certificates
    tls_port = free_port()
    node = run_edge("--origin", upstream.url, "--state-dir", str(state), "--tls-listen", f"127.0.0.1:{tls_port}",
                    port=port)
    assert f"listening on http://127.0.0.1:{port}, https://127.0.0.1:{tls_port}" in node.stdout, node.describe()
    assert f"certificates in {state / 'certificates'}" in node.stdout, node.describe()

    status, answer, version = https_request(tls_port, "edge.test", "/hello", context=client_context(ca))
    assert status == 200 and answer.endswith(b"hello over https\n") and version == "TLSv1.3", answer
    assert upstream.requests[-1]["headers"]["X-Forwarded-Proto"] == "https"
    assert node.get("/hello", host="edge.test").is_hit  # plain HTTP alongside, the same cache

    with pytest.raises(ssl.SSLError) as info:
        https_request(tls_port, "other.test")  # no certificate for it, no default
    assert info.value.reason == "TLSV1_UNRECOGNIZED_NAME"
    wait_until(lambda: '"tls":"TLSv1.3"' in node.stderr and '"tls":"-"' in node.stderr,
               message=lambda: f"the access log names the TLS version\n{node.describe()}")


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _closed(sock: socket.socket) -> bytes:
    """What the node sends before it closes ``sock`` (a reset counts as closed)."""
    received = b""
    with sock:
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def _bad_handshakes(port: int, rounds: int) -> None:
    """Garbage, a record cut short, plain HTTP, nothing at all, half a
    ClientHello: ``rounds`` of each at once, each closed by the node."""
    hello = client_hello()
    kinds = (os.urandom(300), b"\x16\x03\x01\x02\x00" + os.urandom(100), b"GET / HTTP/1.1\r\n\r\n", b"",
             hello[: len(hello) // 2])
    socks = []
    for _ in range(rounds):
        for data in kinds:
            sock = socket.create_connection(("127.0.0.1", port), timeout=15)
            sock.sendall(data)
            socks.append(sock)
    for sock in socks:
        assert b"HTTP/" not in _closed(sock)
    for _ in range(rounds):
        for server_name in ("unknown.test", None):
            with pytest.raises(ssl.SSLError) as info:
                https_request(port, server_name)
            assert info.value.reason == "TLSV1_UNRECOGNIZED_NAME"


def test_bad_handshakes_leave_the_node_serving_without_open_files(run_edge, upstream, port, tmp_path):
    upstream.respond("/", "ok\n")
    ca = trustme.CA()
    etc = tmp_path / "etc"
    (etc / "policies").mkdir(parents=True)
    (etc / "policies" / "shop.json").write_text(json.dumps({"hosts": ["shop.test"], "origins": [{"url": upstream.url}]}))
    store_leaf(etc / "certs", "shop", "shop", ca.issue_cert("shop.test"))
    tls_port = free_port()
    (etc / "edge.toml").write_text(
        f'[[listen]]\naddress = "127.0.0.1:{port}"\n'
        f'[[listen]]\naddress = "127.0.0.1:{tls_port}"\ntls = true\n'
        '[policies]\ndirectory = "policies"\nwatch_interval = 0\n'
        '[tls]\ncertificate_dir = "certs"\nhandshake_timeout = 1\n'
        '[log]\naccess = false\n'
    )
    node = run_edge("--config", str(etc / "edge.toml"), port=port, listen=False)
    assert https_request(tls_port, "shop.test", context=client_context(ca))[0] == 200
    before = _open_files(node.pid)

    _bad_handshakes(tls_port, rounds=10)  # half-open and slow ones end at the deadline (1 s)
    wait_until(lambda: _open_files(node.pid) <= before,
               message=lambda: f"open files of the node: {_open_files(node.pid)}, {before} before\n{node.describe()}")
    assert https_request(tls_port, "shop.test", context=client_context(ca))[0] == 200
    assert node.proc.poll() is None and "Traceback" not in node.stderr, node.describe()
