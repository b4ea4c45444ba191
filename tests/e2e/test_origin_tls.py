"""``edge serve --config`` with a client certificate for origins: its
workers present it to an origin that demands one, an unusable key stops the
start, and a policy cannot ask for a certificate the node lacks."""
from __future__ import annotations

import json
import ssl

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from aiohttp import web

from .support import port_is_free, wait_until


@pytest.fixture
def pki(tmp_path):
    """The origin's CA, and the node's certificate from a CA the origin trusts, as files."""
    origin_ca, client_ca = trustme.CA(), trustme.CA()
    node = client_ca.issue_cert("edge-node.test")
    node.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    node.private_key_pem.write_to_path(tmp_path / "node.key")
    return origin_ca, client_ca, node


def _config(tmp_path, port, origin_tls: str = "") -> tuple:
    (tmp_path / "policies").mkdir(exist_ok=True)
    config = tmp_path / "edge.toml"
    config.write_text(f'[node]\nworkers = 2\n[[listen]]\naddress = "127.0.0.1:{port}"\n'
                      f'[policies]\ndirectory = "policies"\nwatch_interval = 0\n{origin_tls}')
    return config, tmp_path / "policies"


NODE_TLS = '[origin_tls]\nclient_certificate = "node.pem"\nclient_key = "{key}"\n'


def test_every_worker_presents_the_nodes_certificate_to_an_origin_that_demands_it(run_edge, make_origin, port,
                                                                                   tmp_path, pki):
    origin_ca, client_ca, _ = pki
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    origin_ca.issue_cert("origin.test").configure_cert(context)
    client_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    origin = make_origin(tls=context)

    async def page(request: web.Request) -> web.Response:
        names = [value for _, value in request.transport.get_extra_info("peercert")["subjectAltName"]]
        return web.Response(text=",".join(names), headers={"Cache-Control": "no-store"})

    origin.route("/", page)
    config, policies = _config(tmp_path, port, NODE_TLS.format(key="node.key"))
    tls = {"ca": origin_ca.cert_pem.bytes().decode(), "server_name": "origin.test"}
    (policies / "shop.json").write_text(json.dumps({"hosts": ["shop.test"], "origins": [
        {"url": origin.url, **tls, "client_certificate": True}]}))
    (policies / "news.json").write_text(json.dumps({"hosts": ["news.test"], "origins": [{"url": origin.url, **tls}]}))
    node = run_edge("--config", str(config), port=port, listen=False)

    answers = []

    def both_workers_answered() -> bool:
        answers.append(node.get("/", host="shop.test"))  # a new connection each: either worker
        return len({r.worker for r in answers}) == 2

    wait_until(both_workers_answered, timeout=20, interval=0.01, message=lambda: f"{answers}\n{node.describe()}")
    assert {(r.status, r.body) for r in answers} == {(200, b"edge-node.test")}, answers
    refused = node.get("/", host="news.test")
    assert refused.status == 502, refused
    assert "Traceback" not in node.stderr


def test_an_encrypted_client_key_stops_the_start(run_edge, port, tmp_path, pki):
    _, _, issued = pki
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    (tmp_path / "locked.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    config, _ = _config(tmp_path, port, NODE_TLS.format(key="locked.key"))

    node = run_edge("--config", str(config), port=port, listen=False, ready=False)
    assert node.wait_exit(timeout=30) != 0
    assert "origin_tls.client_key: expected an unencrypted PEM private key" in node.stderr, node.describe()
    assert "Traceback" not in node.stderr and "listening on" not in node.stdout
    key_lines = (tmp_path / "locked.key").read_text().splitlines()[1:-1]
    assert not any(line in node.stderr for line in key_lines)
    assert port_is_free(port)


def test_a_policy_asking_for_a_certificate_the_node_lacks_is_rejected_at_start(run_edge, upstream, port,
                                                                               tmp_path):
    upstream.respond("/", "plain\n")
    config, policies = _config(tmp_path, port)
    (policies / "shop.json").write_text(json.dumps({"hosts": ["shop.test"], "origins": [
        {"url": "https://origin.test", "client_certificate": True}]}))
    (policies / "news.json").write_text(json.dumps({"hosts": ["news.test"], "origins": [{"url": upstream.url}]}))
    node = run_edge("--config", str(config), port=port, listen=False)

    assert "shop.json: origins[0].client_certificate: expected false: this node has no client certificate" \
        in node.stderr, node.describe()
    assert node.get("/", host="shop.test").status == 421
    assert node.get("/", host="news.test").status == 200
