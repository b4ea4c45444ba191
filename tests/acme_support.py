"""A real ACME CA for the tests: Debian's ``pebble``, with
``pebble-challtestsrv`` as its DNS server (every name resolves to
127.0.0.1, no AAAA), both on loopback ports of their own.

Pebble's HTTPS certificate comes from a ``trustme`` CA made here; the node
trusts it through ``[acme] ca_bundle``. Pebble validates HTTP-01 challenges
on ``http_port``: the node under test listens there. Names under
``BLOCKED`` are refused by pebble's policy (``rejectedIdentifier``), the
way a CA refuses a name it will not issue for.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import trustme
from cryptography import x509

BLOCKED = "blocked.test"
DEMO_PORT = 8081  # the demo origin's (tests/e2e/support.py): never handed out here
STARTUP_TIMEOUT = 20.0  # a bound for a loaded machine, never a measurement


def installed() -> bool:
    return shutil.which("pebble") is not None and shutil.which("pebble-challtestsrv") is not None


_handed_out: set[int] = set()


def _free_port() -> int:
    # A port is free only until someone binds it: one handed out before, to a
    # process that has not bound it yet, would still look free.
    while True:
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))  # the DNS server takes both
            except OSError:
                continue
            if port != DEMO_PORT and port not in _handed_out:
                _handed_out.add(port)
                return port


def free_port() -> int:
    """A loopback port for the node under test, where pebble validates HTTP-01."""
    return _free_port()


class Pebble:
    def __init__(self, workdir: Path, http_port: int) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.acme_port, self.management_port, self.dns_port, self.dns_management_port = (
            _free_port(), _free_port(), _free_port(), _free_port())
        self.ca = trustme.CA()
        self.ca_bundle = workdir / "pebble-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_bundle))
        self._procs: list[subprocess.Popen] = []

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def start(self) -> Pebble:
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        cert, key = self.workdir / "pebble-cert.pem", self.workdir / "pebble-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        config = self.workdir / "pebble-config.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": _free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
            "domainBlocklist": [BLOCKED],
        }}))
        self._spawn("challtestsrv", [
            "pebble-challtestsrv", "-management", f"127.0.0.1:{self.dns_management_port}",
            "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        self._wait(lambda: _connects(self.dns_management_port), "pebble-challtestsrv")
        # No artificial sleeps before validations, and no nonces refused at random.
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        self._spawn("pebble", ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}"], env)
        self._wait(self._directory_answers, "pebble")
        return self

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        self._procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=self.workdir))
        log.close()

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if any(p.poll() is not None for p in self._procs):
                raise RuntimeError(f"{what} exited:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{self.logs()}")
            time.sleep(0.05)

    def _directory_answers(self) -> bool:
        try:
            self._get(self.directory_url)
        except OSError:
            return False
        return True

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.read()

    def intermediate(self) -> x509.Certificate:
        """The CA certificate that signs what pebble issues."""
        return x509.load_pem_x509_certificate(self._get(f"https://127.0.0.1:{self.management_port}/intermediates/0"))

    def root_pem(self) -> str:
        """The root of what pebble issues (made anew at each start), for a client to trust."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0").decode("ascii")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
