"""TLS towards origins, the pure parts: the policy keys (ca, server_name,
verify, client_certificate) and what an operator sees for each mistake,
the node's [origin_tls] client certificate as edge.toml gives it, and the
shared SSL contexts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from edge.config import ConfigError, default_config, load_config
from edge.config_tls import OriginTLSConfig
from edge.origin.tls import MAX_CA_BUNDLE, OriginContexts, TLSSetupError
from edge.policy import PolicyError, parse_policy, to_data

SOURCE = "policies/shop.json"
CA = trustme.CA()
PEM = CA.cert_pem.bytes().decode()
KEY = CA.issue_cert("x.test").private_key_pem.bytes().decode()
HTTPS = "https://10.0.0.5"
CA_BUNDLE = (f"a PEM bundle of CA certificates (-----BEGIN CERTIFICATE----- blocks), at most {MAX_CA_BUNDLE} "
             "bytes")
HTTP_TLS = "nothing on an http:// origin (TLS settings are for https:// origins)"
NO_NODE_CERTIFICATE = "false: this node has no client certificate for origins ([origin_tls] in its edge.toml)"


def policy(**origin: Any) -> dict[str, Any]:
    return {"hosts": ["shop.example"], "origins": [{"url": HTTPS, **origin}]}


def parse(data: dict[str, Any], **kw: Any):
    return parse_policy(data, tenant="shop", source=SOURCE, **kw)


def error_of(data: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(PolicyError) as info:
        parse(data, **kw)
    [error] = info.value.errors
    return str(error).removeprefix(f"{SOURCE}: ")


BAD_POLICIES = [
    ("ca-garbage", policy(ca="not a certificate"), f"origins[0].ca: expected {CA_BUNDLE}, found no certificate"),
    ("ca-empty", policy(ca=" \n"), f"origins[0].ca: expected {CA_BUNDLE}, found an empty string"),
    ("ca-broken-block", policy(ca="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
     f"origins[0].ca: expected {CA_BUNDLE}, found a certificate that cannot be read (no start line: cadata does "
     "not contain a certificate)"),
    ("ca-not-ascii", policy(ca=PEM.replace("\n-----END", "é\n-----END")),
     f"origins[0].ca: expected {CA_BUNDLE}, found characters other than ASCII (PEM is ASCII)"),
    ("ca-private-key", policy(ca=PEM + KEY),
     f'origins[0].ca: expected {CA_BUNDLE}, found a "EC PRIVATE KEY" block (a CA bundle holds certificates only)'),
    ("ca-oversized", policy(ca=PEM * (MAX_CA_BUNDLE // len(PEM) + 1)),
     f"origins[0].ca: expected {CA_BUNDLE}, found {len(PEM) * (MAX_CA_BUNDLE // len(PEM) + 1)} bytes"),
    ("ca-in-a-list", policy(ca=[KEY]), f"origins[0].ca: expected {CA_BUNDLE}, found a list"),
    ("ca-in-an-object", policy(ca={"pem": KEY}), f"origins[0].ca: expected {CA_BUNDLE}, found an object"),
    ("ca-number", policy(ca=1), f"origins[0].ca: expected {CA_BUNDLE}, found 1"),
    ("ca-without-verification", policy(ca=PEM, verify=False),
     "origins[0].verify: expected true with a ca bundle (nothing would be checked against it), found false"),
    ("server-name-with-port", policy(server_name="origin.example:443"),
     'origins[0].server_name: expected a hostname or IP address, without a port, found "origin.example:443"'),
    ("server-name-wildcard", policy(server_name="*.example"),
     'origins[0].server_name: expected a hostname or IP address, without a port, found "*.example"'),
    ("server-name-number", policy(server_name=1),
     "origins[0].server_name: expected a hostname or IP address, without a port, found 1"),
    ("verify-string", policy(verify="no"), 'origins[0].verify: expected true or false, found "no"'),
    ("verify-null", policy(verify=None), "origins[0].verify: expected true or false, found null"),
    ("client-certificate-number", policy(client_certificate=1),
     "origins[0].client_certificate: expected true or false, found 1"),
    ("ca-on-http", policy(url="http://10.0.0.5", ca=PEM), f"origins[0].ca: expected {HTTP_TLS}, found a CA bundle"),
    ("server-name-on-http", policy(url="http://10.0.0.5", server_name="o.example"),
     f'origins[0].server_name: expected {HTTP_TLS}, found "o.example"'),
    ("no-verify-on-http", policy(url="http://10.0.0.5", verify=False),
     f"origins[0].verify: expected {HTTP_TLS}, found false"),
    ("client-certificate-on-http", policy(url="http://10.0.0.5", client_certificate=True),
     f"origins[0].client_certificate: expected {HTTP_TLS}, found true"),
]


@pytest.mark.parametrize(("doc", "message"), [b[1:] for b in BAD_POLICIES], ids=[b[0] for b in BAD_POLICIES])
def test_each_bad_tls_key_is_named_with_what_was_expected(doc, message):
    assert error_of(doc) == message


def test_a_ca_bundle_is_never_quoted_in_an_error():
    """A key pasted by mistake must not reach the log or the API's answer."""
    message = error_of(policy(ca=KEY))
    body = KEY.splitlines()[1]
    assert body[:16] not in message and "PRIVATE KEY" in message


@pytest.mark.parametrize(("node", "accepted"), [(True, True), (None, True), (False, False)],
                         ids=["node-has-one", "not-known-here", "node-has-none"])
def test_client_certificate_needs_the_nodes(node, accepted):
    doc = policy(client_certificate=True)
    if accepted:
        assert parse(doc, origin_client_certificate=node).origins[0].client_certificate is True
    else:
        assert error_of(doc, origin_client_certificate=node) == \
            f"origins[0].client_certificate: expected {NO_NODE_CERTIFICATE}, found true"
    # Nothing asked for, nothing needed.
    assert parse(policy(), origin_client_certificate=False).origins[0].client_certificate is False


def test_defaults_verify_against_the_system_store_without_a_client_certificate():
    [origin] = parse(policy()).origins
    assert (origin.ca, origin.server_name, origin.verify, origin.client_certificate) == (None, None, True, False)
    [spelled] = to_data(parse(policy())).get("origins")
    assert {k: spelled[k] for k in ("ca", "server_name", "verify", "client_certificate")} == {
        "ca": None, "server_name": None, "verify": True, "client_certificate": False}
    # Spelled-out defaults are valid on http origins too: to_data writes them for every origin.
    http = {"hosts": ["shop.example"], "origins": [{"url": "http://10.0.0.5", **{
        "ca": None, "server_name": None, "verify": True, "client_certificate": False}}]}
    assert parse(http).origins[0].verify is True


def test_tls_settings_round_trip_and_change_the_version():
    doc = policy(ca=PEM, server_name="Origin.Example.", client_certificate=True)
    p = parse(doc)
    assert p.origins[0].server_name == "origin.example"
    assert parse(to_data(p)) == p
    assert p.version != parse(policy()).version
    assert parse(policy(verify=False)).version != parse(policy()).version
    assert "BEGIN" not in repr(p.origins[0])  # a bundle does not flood a repr in a log


@pytest.mark.parametrize(("origin", "name"), [
    ({"url": "https://origin.example:8443"}, "origin.example"),
    ({"url": "https://10.0.0.5"}, "10.0.0.5"),
    ({"url": "https://[2001:db8::1]"}, "2001:db8::1"),
    ({"url": "https://10.0.0.5", "host_header": "shop.example:8443"}, "shop.example"),
    ({"url": "https://10.0.0.5", "host_header": "[2001:db8::2]:8443"}, "2001:db8::2"),
    ({"url": "https://10.0.0.5", "host_header": "shop.example", "server_name": "origin.example"}, "origin.example"),
    ({"url": "https://10.0.0.5", "server_name": "[2001:db8::3]"}, "2001:db8::3"),
    ({"url": "http://origin.example", "host_header": "shop.example"}, None),
], ids=["url-host", "url-ipv4", "url-ipv6", "host-header", "host-header-ipv6", "server-name-first",
        "server-name-ipv6", "http"])
def test_the_name_tls_sends_and_verifies(origin, name):
    doc = {"hosts": ["shop.example"], "origins": [origin]}
    assert parse(doc).origins[0].tls_name == name


# --- [origin_tls] in edge.toml ---------------------------------------------------------


@pytest.fixture
def confdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "policies").mkdir()
    issued = trustme.CA().issue_cert("edge-node.test")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    issued.private_key_pem.write_to_path(tmp_path / "node.key")
    trustme.CA().issue_cert("other.test").private_key_pem.write_to_path(tmp_path / "other.key")
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    (tmp_path / "locked.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    (tmp_path / "junk.pem").write_text("not PEM at all\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_errors(text: str) -> list[str]:
    Path("edge.toml").write_text('[policies]\ndirectory = "policies"\n' + text)
    with pytest.raises(ConfigError) as info:
        load_config("edge.toml")
    return info.value.errors


def test_the_nodes_client_certificate_is_read_relative_to_the_file(confdir):
    Path("edge.toml").write_text('[policies]\ndirectory = "policies"\n'
                                 '[origin_tls]\nclient_certificate = "node.pem"\nclient_key = "node.key"\n')
    config = load_config("edge.toml")
    assert config.origin_tls == OriginTLSConfig(confdir.resolve() / "node.pem", confdir.resolve() / "node.key")
    assert config.origin_tls.enabled
    assert not default_config().origin_tls.enabled


BAD_NODE = [
    ("certificate-alone", 'client_certificate = "node.pem"',
     "origin_tls.client_key: expected it with origin_tls.client_certificate (the certificate and its key), "
     "found nothing"),
    ("key-alone", 'client_key = "node.key"',
     "origin_tls.client_certificate: expected it with origin_tls.client_key (the certificate and its key), "
     "found nothing"),
    ("unreadable", 'client_certificate = "missing.pem"\nclient_key = "node.key"',
     'origin_tls.client_certificate: expected a readable file, found "{dir}/missing.pem" '
     "(no such file or directory)"),
    ("key-a-directory", 'client_certificate = "node.pem"\nclient_key = "policies"',
     'origin_tls.client_key: expected a readable file, found "{dir}/policies" (is a directory)'),
    ("key-mismatch", 'client_certificate = "node.pem"\nclient_key = "other.key"',
     "origin_tls.client_key: expected the private key of origin_tls.client_certificate, "
     'found "{dir}/other.key", the key of another certificate'),
    ("key-encrypted", 'client_certificate = "node.pem"\nclient_key = "locked.key"',
     "origin_tls.client_key: expected an unencrypted PEM private key (the node cannot ask for a password), "
     'found "{dir}/locked.key", an encrypted key'),
    ("certificate-junk", 'client_certificate = "junk.pem"\nclient_key = "node.key"',
     'origin_tls.client_certificate: expected a PEM certificate chain, found "{dir}/junk.pem" '
     "([X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found)"),
    ("key-junk", 'client_certificate = "node.pem"\nclient_key = "junk.pem"',
     'origin_tls.client_key: expected a PEM private key, found "{dir}/junk.pem" ([SSL] PEM lib)'),
    ("key-is-the-certificate", 'client_certificate = "node.pem"\nclient_key = "node.pem"',
     'origin_tls.client_key: expected a PEM private key, found "{dir}/node.pem" ([SSL] PEM lib)'),
    ("path-not-a-string", "client_certificate = 1\nclient_key = \"node.key\"",
     "origin_tls.client_certificate: expected a path (relative to the config file), found 1"),
    ("unknown-key", 'client_cert = "node.pem"',
     "origin_tls.client_cert: expected one of the keys client_certificate, client_key, found an unknown key "
     '(did you mean "client_key"?)'),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD_NODE], ids=[b[0] for b in BAD_NODE])
def test_a_client_certificate_the_node_cannot_present_stops_the_start(confdir, text, message):
    errors = config_errors(f"[origin_tls]\n{text}\n")
    assert errors == ["edge.toml: " + message.format(dir=confdir.resolve())]
    secret = (confdir / "node.key").read_text().splitlines()[1][:16]
    assert secret not in errors[0]


# --- the contexts --------------------------------------------------------------------------


def https(**origin: Any):
    return parse(policy(**origin)).origins[0]


def test_contexts_are_shared_per_combination_and_forgotten_with_their_origins(tmp_path):
    issued = trustme.CA().issue_cert("edge-node.test")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    issued.private_key_pem.write_to_path(tmp_path / "node.key")
    contexts = OriginContexts(tmp_path / "node.pem", tmp_path / "node.key")
    with_ca = contexts.context(https(ca=PEM))
    # Other URL, name and timeouts: the same trust, the same context.
    other = parse({"hosts": ["x.example"], "origins": [
        {"url": "https://10.0.0.9:8443", "ca": PEM, "server_name": "o.example", "read_timeout": 3}]}).origins[0]
    assert contexts.context(other) is with_ca
    variants = [contexts.context(o) for o in (https(), https(verify=False), https(client_certificate=True),
                                              https(ca=PEM, client_certificate=True))]
    assert len({id(c) for c in [with_ca, *variants]}) == 5
    assert contexts.context(https(verify=False)).check_hostname is False

    contexts.retain([https()])
    assert contexts.context(https()) is variants[0]
    assert contexts.context(https(ca=PEM)) is not with_ca


def test_a_client_certificate_the_node_lacks_fails_the_request_not_the_worker():
    with pytest.raises(TLSSetupError, match=r"\[origin_tls\]"):
        OriginContexts().context(https(client_certificate=True))


def test_the_schema_documents_the_bound():
    schema = json.loads((Path(__file__).resolve().parents[2] / "policies" / "schema.json").read_text())
    assert schema["$defs"]["origin"]["properties"]["ca"]["maxLength"] == MAX_CA_BUNDLE

