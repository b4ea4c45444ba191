"""Tenant certificates through the admin API over real sockets: the node as
production starts it (edge.app.Node with [admin] on), real clients, every
answer checked against /openapi.json (tests.admin_support.Api). The node
judges validity by its own clock, so the certificates here are issued
relative to the real time."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import ssl
import stat
import time

import pytest
import trustme
from aiohttp import web

from edge.config_tls import CertificatesConfig, ListenAddress, TlsConfig
from edge.observe.events import verify_signature
from edge.tls.expiry import renewal_failed
from tests.admin_support import NEWS, OPERATOR, SHOP, Api, OpenApiCheck, admin_config, policy
from tests.conftest import until
from tests.tls_support import HANDSHAKE_TIMEOUT, chain, fingerprint, handshake, issue

CERTS = "/v1/tenants/{tenant}/certificates"
CERT = "/v1/tenants/{tenant}/certificates/{name}"
DAY = dt.timedelta(days=1)
SECRET = "whsec-certificates-0123456789"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def upload(*names: str, days: float = 90, key_kind: str = "ec256", passphrase: bytes | None = None) -> dict:
    """A chain (leaf, intermediate) for ``names`` valid from yesterday for ``days`` days, and its key."""
    pem, key_pem, leaf, _ = chain(*names, key_kind=key_kind, not_before=now() - DAY, not_after=now() + days * DAY)
    body = {"certificate": pem, "private_key": leaf.key_pem(passphrase) if passphrase else key_pem}
    if passphrase:
        body["passphrase"] = passphrase.decode()
    return body


def key_lines(body: dict) -> list[str]:
    """The base64 lines of an uploaded key: what must never show up in a log."""
    return [line for line in body["private_key"].splitlines() if line and not line.startswith("-----")]


@pytest.fixture
async def start(origin, make_edge, client, tmp_path):
    check = OpenApiCheck()

    async def start(policies: dict | None = None, **changes):
        if policies is None:
            policies = {"shop": policy(origin.url, "shop.test", "*.shop.test"), "news": policy(origin.url, "news.test")}
        changes.setdefault("admin", admin_config())
        edge = await make_edge(policies=policies, **changes)
        edge.api = Api(client, f"http://127.0.0.1:{edge.node.admin.port}", check)
        edge.certificates = tmp_path / "certificates"
        return edge

    return start


# --- the happy path ------------------------------------------------------------------


async def test_store_list_get_and_delete_a_trustme_chain(start):
    edge = await start()
    api = edge.api
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("www.shop.test", "shop.test")
    body = {"certificate": b"".join(b.bytes() for b in leaf.cert_chain_pems).decode(),
            "private_key": leaf.private_key_pem.bytes().decode()}

    status, _, stored = await api.call("PUT", CERT, tenant="shop", name="www", json=body)
    assert status == 200, stored
    assert stored["name"] == "www" and stored["hosts"] == ["www.shop.test", "shop.test"]
    assert stored["key_type"] == "ecdsa-p256" and len(stored["fingerprint_sha256"]) == 64
    assert stored["not_before"].endswith("Z") and stored["not_after"] > stored["not_before"]

    path = edge.certificates / "shop" / "www.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(edge.certificates.stat().st_mode) == 0o700
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(path)  # what a TLS listener does with it

    status, _, listed = await api.call("GET", CERTS, tenant="shop")
    assert (status, listed) == (200, [stored])
    assert "PRIVATE KEY" not in json.dumps(listed)
    status, _, one = await api.call("GET", CERT, tenant="shop", name="www")
    assert (status, one) == (200, stored)
    status, _, listed = await api.call("GET", CERTS, tenant="shop", token=SHOP)
    assert (status, listed) == (200, [stored])
    assert (await api.call("GET", CERTS, tenant="news"))[2] == []

    status, _, body = await api.call("DELETE", CERT, tenant="shop", name="www")
    assert (status, body) == (204, "")
    assert not path.exists()
    assert (await api.call("GET", CERT, tenant="shop", name="www"))[0] == 404
    status, _, body = await api.call("DELETE", CERT, tenant="shop", name="www")
    assert status == 404 and body["error"] == "no certificate www of tenant shop"
    assert (await api.call("GET", CERTS, tenant="shop"))[2] == []


async def test_an_encrypted_key_is_stored_decrypted_and_a_replacement_takes_the_name(start):
    edge = await start()
    first = upload("www.shop.test")
    assert (await edge.api.call("PUT", CERT, tenant="shop", name="www", json=first))[0] == 200
    second = upload("www.shop.test", "*.shop.test", key_kind="rsa2048", passphrase=b"open sesame")
    status, _, stored = await edge.api.call("PUT", CERT, tenant="shop", name="www", json=second)
    assert status == 200, stored
    assert stored["key_type"] == "rsa-2048" and stored["hosts"] == ["www.shop.test", "*.shop.test"]
    data = (edge.certificates / "shop" / "www.pem").read_text()
    assert "ENCRYPTED" not in data and "-----BEGIN PRIVATE KEY-----" in data
    assert [p.name for p in (edge.certificates / "shop").iterdir()] == ["www.pem"]  # no temporaries left


# --- refusals ------------------------------------------------------------------------


def _refusals(tenant_hosts_cert: dict) -> list[tuple[str, dict, str, int, str, str]]:
    """(id, changes to the PUT, token, status, field, words of the message)."""
    good = tenant_hosts_cert
    other = issue(["www.shop.test"], key_kind="ec256-other", not_before=now() - DAY, not_after=now() + 30 * DAY)
    root = issue(None, key_kind="ec256-r2", ca=True, common_name="r2")
    middle = issue(None, issuer=root, key_kind="ec256-m2", ca=True, common_name="m2")
    leaf = issue(["www.shop.test"], issuer=middle, not_before=now() - DAY, not_after=now() + 30 * DAY)
    expired = upload("www.shop.test", days=-0.5)
    expired_leaf = issue(["www.shop.test"], not_before=now() - 90 * DAY, not_after=now() - DAY)
    future = issue(["www.shop.test"], not_before=now() + DAY, not_after=now() + 90 * DAY)
    encrypted = upload("www.shop.test", passphrase=b"right")
    return [
        ("key-of-another-certificate", {"private_key": other.key_pem()}, OPERATOR, 422, "private_key", "does not match"),
        ("chain-out-of-order", {"certificate": leaf.pem + root.pem + middle.pem, "private_key": leaf.key_pem()},
         OPERATOR, 422, "certificate", "not in order"),
        ("expired", {"certificate": expired_leaf.pem, "private_key": expired_leaf.key_pem()}, OPERATOR, 422,
         "certificate", "expired"),
        ("expired-half-a-day-ago", expired, OPERATOR, 422, "certificate", "expired"),
        ("not-yet-valid", {"certificate": future.pem, "private_key": future.key_pem()}, OPERATOR, 422,
         "certificate", "not valid before"),
        ("rsa-1024", upload("www.shop.test", key_kind="rsa1024"), OPERATOR, 422, "private_key", "at least 2048"),
        ("p-521", upload("www.shop.test", key_kind="ec521"), OPERATOR, 422, "private_key", "P-256 and P-384"),
        ("encrypted-without-passphrase", {**encrypted, "passphrase": None}, OPERATOR, 422, "private_key",
         "encrypted"),
        ("wrong-passphrase", {**encrypted, "passphrase": "wrong"}, OPERATOR, 422, "passphrase", "wrong passphrase"),
        ("garbage-pem", {"certificate": "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"},
         OPERATOR, 422, "certificate", "not a valid PEM"),
        ("field-over-64-kib", {"certificate": good["certificate"] + "#" * (65 * 1024)}, OPERATOR, 422,
         "certificate", "larger than 64 KiB"),
        ("another-tenants-host", upload("www.shop.test", "news.test"), OPERATOR, 422, "certificate",
         'found "news.test", which tenant "news" serves'),
        ("another-tenants-host-told-to-a-tenant-token", upload("news.test"), SHOP, 422, "certificate",
         'found "news.test", which another tenant serves'),
        ("nobodys-host", upload("www.elsewhere.test"), OPERATOR, 422, "certificate", "which no tenant serves"),
        ("wildcard-of-nobodys-names", upload("*.elsewhere.test"), OPERATOR, 422, "certificate", "does not serve all of"),
        ("unknown-key", {"chain": "x"}, OPERATOR, 422, "chain", "unknown key"),
        ("missing-key", {"private_key": None}, OPERATOR, 422, "private_key", "expected a PEM text"),
    ]


async def test_every_refusal_names_its_field_and_leaves_the_stored_certificate_as_it_was(start):
    edge = await start()
    api = edge.api
    good = upload("www.shop.test")
    status, _, stored = await api.call("PUT", CERT, tenant="shop", name="www", json=good)
    assert status == 200
    path = edge.certificates / "shop" / "www.pem"
    before = path.read_bytes()

    for case, changes, token, expected, field, words in _refusals(good):
        body = {k: v for k, v in {**good, **changes}.items() if v is not None}
        status, _, answer = await api.call("PUT", CERT, tenant="shop", name="www", json=body, token=token)
        assert status == expected, (case, answer)
        assert [d["field"] for d in answer["details"]] == [field], (case, answer)
        assert words in answer["details"][0]["message"], (case, answer)
        assert "nothing was changed" in answer["error"], (case, answer)
        assert 'tenant \\"news\\"' not in json.dumps(answer) or token == OPERATOR, (case, answer)
        assert path.read_bytes() == before, case

    # Refused before any certificate is looked at.
    raw = [
        ("not-json", b"{certificate:", 400, "malformed JSON"),
        ("not-an-object", b'["x"]', 422, "invalid certificate upload"),
        ("repeated-key", b'{"certificate": "a", "certificate": "b", "private_key": "c"}', 422, "invalid request body"),
        ("over-1-mib", json.dumps({**good, "certificate": "#" * (1 << 20)}).encode(), 413, "too large"),
    ]
    for case, data, expected, words in raw:
        status, _, answer = await api.call("PUT", CERT, tenant="shop", name="www", data=data,
                                           headers={"Content-Type": "application/json"})
        assert status == expected and words in answer["error"], (case, answer)
        assert path.read_bytes() == before, case
    for name in ("Www", "a..b", "-www", "x" * 65):
        status, _, answer = await api.call("PUT", CERT, tenant="shop", name=name, json=good)
        assert status == 400 and answer["details"][0]["field"] == "name", (name, answer)
    status, _, answer = await api.call("PUT", CERT, tenant="nosuch", name="www", json=good)
    assert (status, answer["error"]) == (404, "no tenant nosuch")
    status, _, answer = await api.call("PUT", CERT, tenant="shop", name="www", json=good, token=NEWS)
    assert status == 403
    assert path.read_bytes() == before
    assert (await api.call("GET", CERT, tenant="shop", name="www"))[2] == stored


async def test_a_chain_openssl_will_not_load_is_refused_and_the_served_certificate_stays(start, tmp_path):
    """check_upload passes an RSA-1024 intermediate; OpenSSL's security level does not load it."""
    edge = await start(listen=(ListenAddress("127.0.0.1", 0), ListenAddress("127.0.0.1", 0, tls=True)),
                       tls=TlsConfig(tmp_path / "certificates", None, HANDSHAKE_TIMEOUT))
    port = edge.node.tls_addresses[0][1]
    status, _, stored = await edge.api.call("PUT", CERT, tenant="shop", name="www", json=upload("www.shop.test"))
    assert status == 200, stored
    assert fingerprint((await handshake(port, "www.shop.test")).certificate) == stored["fingerprint_sha256"]
    path = edge.certificates / "shop" / "www.pem"
    before = path.read_bytes()

    root = issue(None, key_kind="ec256-weak-root", ca=True, common_name="root")
    weak = issue(None, issuer=root, key_kind="rsa1024", ca=True, common_name="weak intermediate")
    leaf = issue(["www.shop.test"], issuer=weak, key_kind="ec256-weak-leaf",
                 not_before=now() - DAY, not_after=now() + 30 * DAY)
    status, _, answer = await edge.api.call("PUT", CERT, tenant="shop", name="www",
                                            json={"certificate": leaf.pem + weak.pem, "private_key": leaf.key_pem()})
    assert status == 422, answer
    assert "nothing was changed" in answer["error"]
    assert [d["field"] for d in answer["details"]] == ["certificate"]
    assert "CA_KEY_TOO_SMALL" in answer["details"][0]["message"], answer
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["www.pem"]  # no temporaries left
    assert fingerprint((await handshake(port, "www.shop.test")).certificate) == stored["fingerprint_sha256"]


async def test_tenant_tokens_act_on_their_own_certificates_only(start):
    edge = await start()
    api = edge.api
    shop = upload("www.shop.test")
    status, _, stored = await api.call("PUT", CERT, tenant="shop", name="www", json=shop, token=SHOP)
    assert status == 200, stored
    news = upload("news.test")
    for method, template, body in (("PUT", CERT, news), ("GET", CERT, None), ("DELETE", CERT, None),
                                   ("GET", CERTS, None)):
        status, _, answer = await api.call(method, template, tenant="shop", name="www", json=body, token=NEWS)
        assert status == 403, (method, template, answer)
    assert (await api.call("PUT", CERT, tenant="news", name="main", json=news, token=NEWS))[0] == 200
    assert (await api.call("GET", CERT, tenant="shop", name="www", token=SHOP))[2] == stored
    assert (await api.call("DELETE", CERT, tenant="shop", name="www", token=SHOP))[0] == 204
    assert (edge.certificates / "news" / "main.pem").exists()


async def test_a_wildcard_name_needs_every_name_it_covers(start, origin):
    edge = await start({"shop": policy(origin.url, "shop.test", "*.shop.test"),
                        "news": policy(origin.url, "news.test", "a.news.test", "blog.shop.test")})
    api = edge.api
    # news lists blog.shop.test, which *.shop.test would cover too.
    status, _, answer = await api.call("PUT", CERT, tenant="shop", name="wild", json=upload("*.shop.test"))
    assert status == 422 and 'which covers names tenant "news" serves' in answer["details"][0]["message"]
    # news serves a.news.test, but not every name below news.test.
    status, _, answer = await api.call("PUT", CERT, tenant="news", name="wild", json=upload("*.news.test"))
    assert status == 422 and "does not serve all of" in answer["details"][0]["message"]
    # Names below *.shop.test that news does not list are shop's.
    status, _, _ = await api.call("PUT", CERT, tenant="shop", name="www", json=upload("www.shop.test", "shop.test"))
    assert status == 200


async def test_a_tenant_holds_at_most_max_per_tenant_certificates(start):
    edge = await start(certificates=CertificatesConfig(max_per_tenant=1))
    api = edge.api
    assert (await api.call("PUT", CERT, tenant="shop", name="one", json=upload("shop.test")))[0] == 200
    status, _, answer = await api.call("PUT", CERT, tenant="shop", name="two", json=upload("shop.test"))
    assert status == 409 and "certificates.max_per_tenant" in answer["error"]
    assert (await api.call("PUT", CERT, tenant="shop", name="one", json=upload("www.shop.test")))[0] == 200
    assert (await api.call("PUT", CERT, tenant="news", name="two", json=upload("news.test")))[0] == 200


async def test_a_node_reading_one_policy_file_keeps_no_certificates(origin, make_edge, client):
    edge = await make_edge(quick_origin=origin.url, admin=admin_config())
    api = Api(client, f"http://127.0.0.1:{edge.node.admin.port}", OpenApiCheck())
    status, _, answer = await api.call("PUT", CERT, tenant="default", name="www", json=upload("www.shop.test"))
    assert status == 409 and "keeps no certificates" in answer["error"]
    assert (await api.call("GET", CERTS, tenant="default"))[0] == 409


async def test_removing_a_tenant_removes_its_certificates(start):
    edge = await start()
    api = edge.api
    assert (await api.call("PUT", CERT, tenant="news", name="main", json=upload("news.test")))[0] == 200
    assert (await api.call("PUT", CERT, tenant="shop", name="www", json=upload("shop.test")))[0] == 200
    status, _, _ = await api.call("DELETE", "/v1/tenants/{tenant}/policy", tenant="news")
    assert status == 200
    assert not (edge.certificates / "news" / "main.pem").exists()
    assert (edge.certificates / "shop" / "www.pem").exists()


# --- every worker, before the answer -------------------------------------------------


async def test_the_answer_comes_after_the_workers_tls_hook_ran(start):
    edge = await start()
    api = edge.api
    seen: list[list[str]] = []

    async def reload() -> None:  # what an HTTPS listener registers: it re-reads the store
        store = edge.node.state.certificates
        seen.append([c.name for c in store.tenant("shop")])

    edge.node.state.tls_reload = reload
    assert (await api.call("PUT", CERT, tenant="shop", name="www", json=upload("shop.test")))[0] == 200
    assert seen == [["www"]]
    assert (await api.call("DELETE", CERT, tenant="shop", name="www"))[0] == 204
    assert seen == [["www"], []]
    status, _, stats = await api.call("GET", "/v1/stats")
    assert [w["certificate_changes"] for w in stats["workers"]] == [2]

    def broken() -> None:
        raise OSError("cannot read the store")

    edge.node.state.tls_reload = broken
    status, _, answer = await api.call("PUT", CERT, tenant="shop", name="www", json=upload("shop.test"))
    assert status == 503 and "could not take it" in answer["error"]


async def test_refused_uploads_run_no_hook(start):
    edge = await start()
    calls = []
    edge.node.state.tls_reload = lambda: calls.append(1)
    status, _, _ = await edge.api.call("PUT", CERT, tenant="shop", name="www", json=upload("news.test"))
    assert status == 422 and calls == []


# --- audit and logs ------------------------------------------------------------------


async def test_audit_entries_never_hold_the_key_or_its_passphrase(start, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    audit = tmp_path / "audit.log"
    edge = await start(admin=admin_config(audit_log=audit))
    api = edge.api
    body = upload("www.shop.test", passphrase=b"open sesame")
    status, _, stored = await api.call("PUT", CERT, tenant="shop", name="www", json=body, token=SHOP)
    assert status == 200
    refused = {**body, "passphrase": "wrong guess"}
    assert (await api.call("PUT", CERT, tenant="shop", name="www", json=refused))[0] == 422
    assert (await api.call("DELETE", CERT, tenant="shop", name="www"))[0] == 204

    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["method"], e["status"], e["tenant"], e["scope"]) for e in entries] == [
        ("PUT", 200, "shop", "shop"), ("PUT", 422, "shop", "*"), ("DELETE", 204, "shop", "*")]
    assert entries[0]["summary"] == {"name": "www", "hosts": ["www.shop.test"], "not_after": stored["not_after"],
                                     "fingerprint_sha256": stored["fingerprint_sha256"]}
    assert entries[0]["path"] == "/v1/tenants/shop/certificates/www"
    for text in (audit.read_text(), caplog.text):
        for secret in (*key_lines(body), "open sesame", "wrong guess"):
            assert secret not in text


# --- expiry --------------------------------------------------------------------------


async def test_expiry_metric_stats_and_readiness(start):
    edge = await start()
    api = edge.api
    soon = upload("www.shop.test", days=6)
    later = upload("news.test", days=90)
    assert (await api.call("PUT", CERT, tenant="shop", name="www", json=soon))[0] == 200
    assert (await api.call("PUT", CERT, tenant="news", name="main", json=later))[0] == 200
    soon_after = dt.datetime.fromisoformat((await api.call("GET", CERT, tenant="shop", name="www"))[2]["not_after"])

    before = time.time()
    status, _, text = await api.call("GET", "/metrics")
    after = time.time()
    assert status == 200
    values = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("edge_certificate_expiry_seconds{")}
    assert set(values) == {'name="www",tenant="shop"', 'name="main",tenant="news"'}
    assert soon_after.timestamp() - after <= values['name="www",tenant="shop"'] <= soon_after.timestamp() - before

    status, _, stats = await api.call("GET", "/v1/stats")
    assert status == 200
    assert [(c["tenant"], c["name"], c["hosts"]) for c in stats["certificates_expiring"]] == [
        ("shop", "www", ["www.shop.test"])]
    assert 5 * 86400 < stats["certificates_expiring"][0]["expires_in_seconds"] <= 6 * 86400
    status, _, ready = await api.call("GET", "/readyz", token=None)
    assert status == 200 and ready["status"] == "ready"

    assert (await api.call("DELETE", CERT, tenant="shop", name="www"))[0] == 204
    status, _, text = await api.call("GET", "/metrics")
    assert 'tenant="shop"' not in "".join(l for l in text.splitlines() if l.startswith("edge_certificate_expiry"))
    assert (await api.call("GET", "/v1/stats"))[2]["certificates_expiring"] == []


async def test_a_certificate_near_its_end_is_announced_once_to_the_tenants_webhook(start, origin, caplog):
    caplog.set_level(logging.WARNING, logger="edge.events")
    hooks: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        hooks.append({"event": json.loads(body),
                      "verified": verify_signature(SECRET, request.headers.get("Edge-Signature", ""), body,
                                                   time.time())})
        return web.Response(text="ok")

    origin.route("/hook", hook)
    events = {"filters": {"events": {"webhook_url": f"{origin.url}/hook", "secret": SECRET}}}
    edge = await start({"shop": policy(origin.url, "shop.test", "*.shop.test", **events),
                        "news": policy(origin.url, "news.test")})
    api = edge.api
    body = upload("www.shop.test", days=6)
    status, _, stored = await api.call("PUT", CERT, tenant="shop", name="www", json=body)
    assert status == 200
    await until(lambda: hooks, "the 7-day notice reached the webhook")
    (first,) = hooks
    event = first["event"]
    assert first["verified"]
    assert (event["type"], event["what"], event["tenant"], event["threshold_days"]) == (
        "edge.security_event", "certificate_expiry", "shop", 7)
    assert event["certificate"] == {"name": "www", "hosts": ["www.shop.test"], "not_after": stored["not_after"],
                                    "fingerprint_sha256": stored["fingerprint_sha256"]}
    assert 5 * 86400 < event["expires_in_seconds"] <= 6 * 86400
    lines = [r.getMessage() for r in caplog.records if "certificate_expiry" in r.getMessage()]
    assert len(lines) == 1 and "tenant=shop certificate=www expires" in lines[0] and "7-day notice" in lines[0]

    # The periodic check, and the one after another write, have nothing more to say about it.
    watch = edge.node.state.certificate_watch
    assert await watch.check() == []
    assert (await api.call("PUT", CERT, tenant="shop", name="apex", json=upload("shop.test", days=60)))[0] == 200
    assert await watch.check() == []
    assert edge.node.state.events.pending() == 0 and len(hooks) == 1

    # A replacement is another certificate: announced afresh.
    assert (await api.call("PUT", CERT, tenant="shop", name="www", json=upload("www.shop.test", days=3)))[0] == 200
    await until(lambda: len(hooks) == 2, "the replacement's notice reached the webhook")
    assert hooks[1]["event"]["threshold_days"] == 7 and hooks[1]["event"]["certificate"]["name"] == "www"

    # Whatever renews certificates reports its failures the same way.
    renewal_failed(edge.node.state.events, edge.node.policies, "shop", "www", ["www.shop.test"],
                   "the CA refused the order (rate limited)")
    await until(lambda: len(hooks) == 3, "the renewal failure reached the webhook")
    failed = hooks[2]["event"]
    assert (failed["what"], failed["certificate"]["error"], failed["certificate"]["name"]) == (
        "certificate_renewal_failed", "the CA refused the order (rate limited)", "www")
    for text in (caplog.text, json.dumps([h["event"] for h in hooks])):
        assert not any(line in text for line in key_lines(body))


async def test_a_restarted_worker_does_not_announce_again(start, make_edge, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="edge.events")
    edge = await start()
    assert (await edge.api.call("PUT", CERT, tenant="shop", name="www", json=upload("www.shop.test", days=6)))[0] == 200
    await until(lambda: "certificate_expiry" in caplog.text, "the notice was logged")
    # Another worker of the same node (its own events, same store): the record says it was sent.
    other = await make_edge(policies={})
    watch = other.node.state.certificate_watch
    assert watch.store.root == edge.node.state.certificates.root
    assert await watch.check() == []
    assert os.path.exists(watch.store.root / ".expiry.json")
