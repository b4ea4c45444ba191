"""Origins over TLS: verification by default, a policy's own CA bundle and
server name, ``verify: false``, and the node's client certificate for
origins that demand one. Real https origins on loopback with certificates
from throwaway CAs (trustme), the node as production starts it."""
from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDict

from edge.config import OutboundConfig
from edge.config_tls import OriginTLSConfig
from tests.admin_support import OPERATOR, SHOP, Api, OpenApiCheck, admin_config
from tests.origin_support import Origin

POLICY = "/v1/tenants/{tenant}/policy"
FAILED = "502 origin unreachable or broken\n"  # the first line of every origin failure's body
NO_NODE_CERTIFICATE = ("origins[0].client_certificate: expected false: this node has no client certificate for "
                       "origins ([origin_tls] in its edge.toml), found true")


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_origin():
    """``await tls_origin(ca, "127.0.0.1", client_ca=None)``: an https
    origin whose certificate ``ca`` issued for the given names, answering
    ``/page`` with the names of the client certificate it got (if any).
    With ``client_ca`` it requires a client certificate that CA issued."""
    started: list[Origin] = []

    async def start(ca: trustme.CA, *names: str, client_ca: trustme.CA | None = None, port: int = 0) -> Origin:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        if client_ca is not None:
            client_ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED

        async def page(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peercert") or {}
            names = [value for _, value in peer.get("subjectAltName", ())] or ["-"]
            return web.Response(text=f"client={','.join(names)}",
                                headers={"Cache-Control": "no-store"})

        origin = Origin()
        origin.route("/page", page)
        await origin.start(port, tls=context)
        started.append(origin)
        return origin

    yield start
    for origin in started:
        await origin.stop()


def pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


def shop(*origins: dict, host: str = "shop.test", **extra) -> dict:
    return {"hosts": [host], "origins": list(origins), **extra}


async def get(client, edge, host: str = "shop.test", path: str = "/page") -> tuple[int, str, CIMultiDict]:
    async with client.get(edge.url + path, headers={"Host": host}) as r:
        return r.status, await r.text(), r.headers.copy()


def failures(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("origin request failed")]


async def test_an_origin_is_verified_against_the_ca_bundle_of_its_policy(ca, tls_origin, make_edge, client):
    origin = await tls_origin(ca, "127.0.0.1")
    edge = await make_edge(policies={"shop": shop({"url": origin.url, "ca": pem(ca)})})
    status, body, _ = await get(client, edge)
    assert (status, body) == (200, "client=-")


async def test_without_a_ca_bundle_the_system_store_decides(ca, tls_origin, make_edge, client, caplog):
    """A private CA is in no system store: verification is on by default."""
    origin = await tls_origin(ca, "127.0.0.1")
    edge = await make_edge(policies={"shop": shop({"url": origin.url})})
    with caplog.at_level(logging.WARNING, "edge.origin"):
        status, body, headers = await get(client, edge)
    assert status == 502 and body.startswith(FAILED)
    assert origin.hits["/page"] == 0
    [line] = failures(caplog)
    assert "tenant shop" in line and origin.url in line
    assert "certificate verify failed: unable to get local issuer certificate" in line


async def test_a_certificate_from_another_ca_fails_like_a_refused_connection(ca, tls_origin, make_edge, client,
                                                                             caplog):
    origin = await tls_origin(trustme.CA(), "127.0.0.1")  # not the CA the policy trusts
    closed = Origin()
    await closed.start()
    await closed.stop()  # its port now refuses connections
    edge = await make_edge(policies={
        "shop": shop({"url": origin.url, "ca": pem(ca)}),
        "gone": shop({"url": closed.url}, host="gone.test"),
    })
    with caplog.at_level(logging.WARNING, "edge.origin"):
        status, body, headers = await get(client, edge)
        refused_status, refused_body, refused_headers = await get(client, edge, "gone.test")
    # The client learns nothing the node would not say of any broken origin.
    assert (status, refused_status) == (502, 502)
    assert body.replace(headers["X-Request-Id"], "") == refused_body.replace(refused_headers["X-Request-Id"], "")
    assert "Traceback" not in body
    [line, _] = failures(caplog)
    assert f"tenant shop: origin-connect {origin.url} certificate verify failed" in line
    assert all(r.exc_info is None for r in caplog.records)


@pytest.mark.parametrize(("names", "reason"), [
    ({}, "IP address mismatch, certificate is not valid for '127.0.0.1'"),
    ({"server_name": "shop.test"}, "Hostname mismatch, certificate is not valid for 'shop.test'"),
    ({"host_header": "shop.test"}, "Hostname mismatch, certificate is not valid for 'shop.test'"),
], ids=["url-address", "server-name", "host-header"])
async def test_a_certificate_for_another_name_is_refused(ca, tls_origin, make_edge, client, caplog, names, reason):
    origin = await tls_origin(ca, "origin.test")
    edge = await make_edge(policies={"shop": shop({"url": origin.url, "ca": pem(ca), **names})})
    with caplog.at_level(logging.WARNING, "edge.origin"):
        status, body, _ = await get(client, edge)
    assert status == 502 and body.startswith(FAILED)
    assert origin.hits["/page"] == 0
    [line] = failures(caplog)
    assert f"tenant shop: origin-connect {origin.url} certificate verify failed: {reason}" in line


@pytest.mark.parametrize("names", [{"server_name": "origin.test"}, {"host_header": "origin.test"},
                                   {"host_header": "other.test", "server_name": "Origin.Test."}],
                         ids=["server-name", "host-header", "server-name-over-host-header"])
async def test_an_origin_addressed_by_ip_is_verified_against_its_name(ca, tls_origin, make_edge, client, names):
    origin = await tls_origin(ca, "origin.test")
    edge = await make_edge(policies={"shop": shop({"url": origin.url, "ca": pem(ca), **names})})
    status, body, _ = await get(client, edge)
    assert (status, body) == (200, "client=-")


async def test_verify_false_reaches_any_certificate_and_says_so(ca, tls_origin, make_edge, client, caplog):
    origin = await tls_origin(ca, "origin.test")  # unknown CA, other name
    with caplog.at_level(logging.WARNING, "edge"):
        edge = await make_edge(policies={"shop": shop({"url": origin.url, "verify": False})})
    warned = [r.getMessage() for r in caplog.records if "verification is off" in r.getMessage()]
    assert warned == [f"tenant shop origin {origin.url}: TLS certificate verification is off (verify: false): "
                      "whoever is on the path to it can read and change its traffic"]
    status, body, _ = await get(client, edge)
    assert (status, body) == (200, "client=-")

    caplog.clear()
    with caplog.at_level(logging.WARNING, "edge"):
        edge.node.reload()
    assert [r.getMessage() for r in caplog.records if "verification is off" in r.getMessage()] == warned


async def test_a_failing_tls_origin_is_failed_over_and_stale_is_served(ca, tls_origin, make_edge, client, caplog):
    good = await tls_origin(ca, "127.0.0.1")
    bad = await tls_origin(trustme.CA(), "127.0.0.1")
    served = await tls_origin(ca, "127.0.0.1")
    served.respond("/stale", "kept", headers={"Cache-Control": "max-age=1, stale-if-error=600", "Age": "5"})
    edge = await make_edge(policies={
        "shop": shop({"url": bad.url, "ca": pem(ca)}, {"url": good.url, "ca": pem(ca)}),
        "news": shop({"url": served.url, "ca": pem(ca)}, host="news.test"),
    })
    status, body, _ = await get(client, edge)
    assert (status, body) == (200, "client=-")
    assert good.hits["/page"] == 1

    assert (await get(client, edge, "news.test", "/stale"))[:2] == (200, "kept")
    # The same port, now with a certificate the policy does not trust.
    port = served.port
    await served.stop()
    await tls_origin(trustme.CA(), "127.0.0.1", port=port)
    status, body, headers = await get(client, edge, "news.test", "/stale")
    assert (status, body) == (200, "kept")
    assert "stale-if-error" in headers["Cache-Status"]


@pytest.fixture
def node_certificate(tmp_path: Path):
    """The node's client certificate, issued by ``client_ca``, as files."""
    client_ca = trustme.CA()
    cert = client_ca.issue_cert("edge-node.test")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    cert.private_key_pem.write_to_path(tmp_path / "node.key")
    return client_ca, OriginTLSConfig(tmp_path / "node.pem", tmp_path / "node.key")


async def test_an_origin_that_requires_a_client_certificate_gets_the_nodes(ca, tls_origin, make_edge, client,
                                                                           node_certificate, caplog):
    client_ca, origin_tls = node_certificate
    origin = await tls_origin(ca, "127.0.0.1", client_ca=client_ca)
    edge = await make_edge(origin_tls=origin_tls, policies={
        "shop": shop({"url": origin.url, "ca": pem(ca), "client_certificate": True}),
        "news": shop({"url": origin.url, "ca": pem(ca)}, host="news.test"),
    })
    with caplog.at_level(logging.WARNING, "edge.origin"):
        status, body, _ = await get(client, edge, "news.test")
    assert status == 502 and body.startswith(FAILED)  # it asked for nothing: the origin turned it away
    assert origin.hits["/page"] == 0
    assert "tenant news" in failures(caplog)[0]
    status, body, _ = await get(client, edge)
    assert (status, body) == (200, "client=edge-node.test")


async def test_a_policy_cannot_ask_for_a_client_certificate_the_node_lacks(ca, tls_origin, make_edge, client,
                                                                           tmp_path):
    origin = await tls_origin(ca, "127.0.0.1")
    before = shop({"url": origin.url, "ca": pem(ca)})
    edge = await make_edge(policies={"shop": before})
    asking = shop({"url": origin.url, "ca": pem(ca), "client_certificate": True})
    (tmp_path / "policies" / "shop.json").write_text(json.dumps(asking))
    report = edge.node.reload()
    assert [str(e) for e in report.errors] == [f"{tmp_path / 'policies' / 'shop.json'}: {NO_NODE_CERTIFICATE}"]
    assert report.kept == ["shop"]
    assert (await get(client, edge))[:2] == (200, "client=-")


async def test_the_admin_api_refuses_a_client_certificate_the_node_lacks_or_a_token_asks_for(
        ca, tls_origin, make_edge, client, node_certificate):
    origin = await tls_origin(ca, "127.0.0.1")
    plain = shop({"url": origin.url, "ca": pem(ca)})
    asking = shop({"url": origin.url, "ca": pem(ca), "client_certificate": True})


    async def admin_api(**changes) -> Api:
        edge = await make_edge(policies={"shop": plain}, admin=admin_config(), **changes)
        return Api(client, f"http://127.0.0.1:{edge.node.admin.port}", OpenApiCheck())

    api = await admin_api()
    status, _, body = await api.call("PUT", POLICY, tenant="shop", token=OPERATOR, json=asking)
    assert status == 422
    field, _, message = NO_NODE_CERTIFICATE.partition(": ")
    assert body["details"] == [{"field": field, "message": message}]

    # Loopback opened: what refuses the tenant token's write is the certificate alone.
    api = await admin_api(origin_tls=node_certificate[1],
                          outbound=OutboundConfig((ipaddress.ip_network("127.0.0.0/8"),)))
    # A tenant token must not have the node vouch for it at an origin of its choosing.
    status, _, body = await api.call("PUT", POLICY, tenant="shop", token=SHOP, json=asking)
    assert status == 403
    assert body["details"] == [{"field": "origins[0].client_certificate", "message": (
        "expected false, or the operator's origin unchanged (only operators have the node present its client "
        "certificate)")}]
    status, _, body = await api.call("PUT", POLICY, tenant="shop", token=OPERATOR, json=asking)
    assert status == 200
    _, _, body = await api.call("GET", POLICY, tenant="shop", token=SHOP)
    assert body["origins"][0]["client_certificate"] is True
    # The operator's origin, sent back unchanged, stays the operator's.
    same = {**body, "rules": [{"match": {"path_prefix": "/a/"}, "bypass": True}]}
    assert (await api.call("PUT", POLICY, tenant="shop", token=SHOP, json=same))[0] == 200
