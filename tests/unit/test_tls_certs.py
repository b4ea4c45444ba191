"""Certificate uploads: what is accepted, and the field and reason of every refusal."""
from __future__ import annotations

import datetime as dt
import os
import ssl
import stat

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from edge.tls.certs import CertificateError, check_upload, covers, specificity, valid_name
from edge.tls.store import CertificateStore
from tests.tls_support import NOW, chain, issue

DAY = dt.timedelta(days=1)


def _good(**kw):
    pem, key_pem, leaf, _root = chain("www.example.de", "*.img.example.de", **kw)
    return pem, key_pem, leaf


def _out_of_order():
    root = issue(None, key_kind="ec256-r2", ca=True, common_name="r2")
    middle = issue(None, issuer=root, key_kind="ec256-m2", ca=True, common_name="m2")
    leaf = issue(["www.example.de"], issuer=middle)
    return leaf.pem + root.pem + middle.pem, leaf.key_pem()


def _cases():
    pem, key_pem, leaf = _good()
    other = issue(["www.example.de"], key_kind="ec256-other")
    bad_order, bad_order_key = _out_of_order()
    expired = issue(["www.example.de"], not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    future = issue(["www.example.de"], not_before=NOW + DAY)
    rsa_small = issue(["www.example.de"], key_kind="rsa1024")
    p521 = issue(["www.example.de"], key_kind="ec521")
    ed = issue(["www.example.de"], key_kind="ed25519")
    no_san = issue(None, common_name="www.example.de")
    self_signed = issue(["www.example.de"])
    bad_name = issue(["exa mple.de"])
    tld_wild = issue(["*.de"])
    return [
        ("garbage-certificate", "hello", key_pem, None, "certificate", "no '-----BEGIN CERTIFICATE-----'"),
        ("broken-base64", "-----BEGIN CERTIFICATE-----\nAAAA!!\n-----END CERTIFICATE-----\n", key_pem, None,
         "certificate", "not a valid PEM"),
        ("not-a-string", 42, key_pem, None, "certificate", "expected a PEM text"),
        ("empty", "  ", key_pem, None, "certificate", "expected a PEM text"),
        ("oversized", pem + "x" * (70 * 1024), key_pem, None, "certificate", "larger than 64 KiB"),
        ("non-ascii", pem + "é", key_pem, None, "certificate", "ASCII"),
        ("key-in-certificate-field", pem + key_pem, key_pem, None, "certificate", "holds a private key"),
        ("garbage-key", pem, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None,
         "private_key", "not a valid PEM private key"),
        ("two-keys", pem, key_pem + key_pem, None, "private_key", "exactly one"),
        ("key-of-another-certificate", pem, other.key_pem(), None, "private_key", "does not match"),
        ("encrypted-key-without-passphrase", pem, leaf.key_pem(b"secret"), None, "private_key", "encrypted"),
        ("encrypted-key-wrong-passphrase", pem, leaf.key_pem(b"secret"), "wrong", "passphrase", "wrong passphrase"),
        ("passphrase-for-plain-key", pem, key_pem, "secret", "passphrase", "not encrypted"),
        ("chain-out-of-order", bad_order, bad_order_key, None, "certificate", "not in order: certificate 2"),
        ("leaf-expired", expired.pem, expired.key_pem(), None, "certificate", "expired at"),
        ("leaf-not-yet-valid", future.pem, future.key_pem(), None, "certificate", "not valid before"),
        ("rsa-1024", rsa_small.pem, rsa_small.key_pem(), None, "private_key", "1024 bits"),
        ("ecdsa-p521", p521.pem, p521.key_pem(), None, "private_key", "secp521r1"),
        ("ed25519", ed.pem, ed.key_pem(), None, "private_key", "only RSA"),
        ("no-subject-alt-name", no_san.pem, no_san.key_pem(), None, "certificate", "no subjectAltName"),
        ("not-a-dns-name", bad_name.pem, bad_name.key_pem(), None, "certificate", "not a DNS host name"),
        ("wildcard-over-a-tld", tld_wild.pem, tld_wild.key_pem(), None, "certificate", "not a DNS host name"),
        ("accepted", pem, key_pem, None, None, None),
        ("accepted-encrypted-with-passphrase", pem, leaf.key_pem(b"secret"), "secret", None, None),
        ("accepted-self-signed", self_signed.pem, self_signed.key_pem(), None, None, None),
    ]


@pytest.mark.parametrize("certificate,private_key,passphrase,field,fragment",
                         [c[1:] for c in _cases()], ids=[c[0] for c in _cases()])
def test_upload_checks(certificate, private_key, passphrase, field, fragment):
    if field is None:
        checked = check_upload(certificate, private_key, NOW, passphrase=passphrase)
        assert b"ENCRYPTED" not in checked.key_pem
        return
    with pytest.raises(CertificateError) as raised:
        check_upload(certificate, private_key, NOW, passphrase=passphrase)
    assert raised.value.field == field
    assert fragment in raised.value.message


@pytest.mark.parametrize("kind,expected", [("ec256", "ecdsa-p256"), ("ec384", "ecdsa-p384"), ("rsa2048", "rsa-2048")])
def test_metadata_shown_for_an_accepted_upload(kind, expected):
    pem, key_pem, leaf = _good(key_kind=kind)
    info = check_upload(pem, key_pem, NOW).info.as_json("www")
    assert info == {
        "name": "www",
        "hosts": ["www.example.de", "*.img.example.de"],
        "not_before": (NOW - DAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": (NOW + 90 * DAY).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fingerprint_sha256": leaf.cert.fingerprint(hashes.SHA256()).hex(),
        "key_type": expected,
    }


@pytest.mark.parametrize("name,host,expected", [
    ("www.example.de", "www.example.de", True),
    ("www.example.de", "example.de", False),
    ("*.example.de", "www.example.de", True),
    ("*.example.de", "a.b.example.de", False),  # RFC 6125 6.4.3: one label only
    ("*.example.de", "example.de", False),
    ("*.example.de", ".example.de", False),
])
def test_name_coverage(name, host, expected):
    assert covers(name, host) is expected


def test_exact_names_are_more_specific_than_wildcards():
    names = ["*.example.de", "www.example.de", "*.b.example.de"]
    assert sorted(names, key=specificity, reverse=True) == ["www.example.de", "*.b.example.de", "*.example.de"]


@pytest.mark.parametrize("name,ok", [("www", True), ("www.example.de-2026", True), ("", False), ("../x", False),
                                     ("a/b", False), ("Upper", False), ("-x", False), ("a..b", False), ("x" * 65, False)])
def test_certificate_names(name, ok):
    assert valid_name(name) is ok


def test_store_keeps_chain_and_key_together_private_and_loadable(tmp_path):
    store = CertificateStore(tmp_path / "certificates")
    pem, key_pem, _leaf = _good()
    stored = store.put("shop", "www", check_upload(pem, key_pem, NOW))
    assert stat.S_IMODE(os.stat(stored.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(stored.path.parent).st_mode) == 0o700
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(stored.path)
    assert [c.name for c in store.tenant("shop")] == ["www"]
    assert [(c.tenant, c.name) for c in store.all()] == [("shop", "www")]
    assert not [p for p in stored.path.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    assert store.delete("shop", "www") and not store.delete("shop", "www")
    assert store.all() == []


def test_store_skips_a_damaged_file_and_serves_the_rest(tmp_path, caplog):
    store = CertificateStore(tmp_path)
    pem, key_pem, _leaf = _good()
    store.put("shop", "good", check_upload(pem, key_pem, NOW))
    (tmp_path / "shop" / "broken.pem").write_text("not a certificate")
    assert [c.name for c in store.all()] == ["good"]
    assert "broken.pem cannot be used" in caplog.text


@pytest.mark.parametrize("tenant,name", [("shop", "../escape"), ("../x", "www"), ("shop", "a/b")])
def test_store_refuses_paths_outside_its_root(tmp_path, tenant, name):
    store = CertificateStore(tmp_path)
    pem, key_pem, _leaf = _good()
    with pytest.raises(ValueError):
        store.put(tenant, name, check_upload(pem, key_pem, NOW))


def test_a_leaf_whose_public_key_cannot_be_read_is_refused_not_crashed_on():
    import base64

    pem, key_pem, leaf = _good()
    der = bytearray(leaf.cert.public_bytes(serialization.Encoding.DER))
    point = leaf.key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    der[bytes(der).find(point) + 40] ^= 0x01  # no longer a point on the curve
    rest = pem[pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----\n"):]
    broken = "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)).decode() + "-----END CERTIFICATE-----\n"
    with pytest.raises(CertificateError) as raised:
        check_upload(broken + rest, key_pem, NOW)
    assert raised.value.field == "certificate" and "public key cannot be read" in raised.value.message
