"""HTTPS listeners over real sockets: the node as production starts it,
tenant certificates made by trustme in its store, real TLS clients (aiohttp,
the ssl module, ``openssl s_client``) and a real origin."""
from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import ssl
import struct

import aiohttp
import pytest
import trustme

from edge.config_tls import ListenAddress
from edge.geo.proxy_protocol import V2_SIGNATURE
from edge.observe.access import AccessLog
from tests.conftest import until
from tests.tls_support import SHOP, ca, client_context, closed, fingerprint, handshake, https, openssl, store_leaf

FIXTURES = (ca, https)  # pytest finds them here


def stored_fingerprint(node, tenant: str, name: str) -> str:
    from edge.tls.store import CertificateStore

    return CertificateStore(node.tls.certificates.store.root).get(tenant, name).info.fingerprint_sha256


# --- certificates by server name ------------------------------------------------------------


async def test_two_tenants_with_their_own_certificates_on_one_port(https, client):
    node = await https()
    offers_h2 = client_context()
    offers_h2.set_alpn_protocols(["h2", "http/1.1"])
    shop = await handshake(node.port, "shop.test", offers_h2)
    blog = await handshake(node.port, "blog.test")
    assert fingerprint(shop.certificate) == stored_fingerprint(node.node, "shop", "shop")
    assert fingerprint(blog.certificate) == stored_fingerprint(node.node, "blog", "blog")
    # A verifying client accepts each: the certificate covers the name it asked for.
    for host in ("shop.test", "www.shop.test", "blog.test"):
        status, headers, _ = await node.get(client, host)
        assert status == 404 and "fwd=" in headers["Cache-Status"]  # the origin's answer, over HTTPS
    assert shop.version == "TLSv1.3" and shop.alpn == "http/1.1"


async def test_the_most_specific_name_wins(https):
    node = await https(certificates={("shop", "wild"): ["*.shop.test", "shop.test"], ("shop", "www"): ["www.shop.test"]})
    assert fingerprint((await handshake(node.port, "www.shop.test")).certificate) == stored_fingerprint(node.node, "shop", "www")
    assert fingerprint((await handshake(node.port, "img.shop.test")).certificate) == stored_fingerprint(node.node, "shop", "wild")
    assert fingerprint((await handshake(node.port, "shop.test")).certificate) == stored_fingerprint(node.node, "shop", "wild")


@pytest.mark.parametrize(
    ("client_args", "key"),
    [
        (("-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"), "ECDSA"),
        (("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"), "RSA"),
        (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "ECDSA"),
        (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), "RSA"),
    ],
    ids=["tls1.3-ecdsa", "tls1.3-rsa", "tls1.2-ecdsa", "tls1.2-rsa"],
)
async def test_rsa_or_ecdsa_as_the_client_supports(https, ca, tmp_path, client_args, key):
    store_leaf(tmp_path / "certificates", "shop", "shop-rsa", ca.issue_cert(*SHOP, key_type=trustme.KeyType.RSA))
    node = await https()
    out = await openssl("-connect", f"127.0.0.1:{node.port}", "-servername", "shop.test", *client_args)
    signature = next((line for line in out.splitlines() if line.startswith("Signature type:")), out)
    # The server signs with the certificate's key: ECDSA, or RSA (PKCS#1 or PSS).
    assert signature.split(": ", 1)[-1].split("-")[0] == key, out

async def test_a_name_without_a_certificate_gets_the_default_certificate(https, tmp_path, ca):
    default = ca.issue_cert("edge.example")
    path = tmp_path / "default.pem"
    path.write_bytes(b"".join(b.bytes() for b in default.cert_chain_pems) + default.private_key_pem.bytes())
    node = await https(default=path)
    expected = fingerprint(ssl.PEM_cert_to_DER_cert(default.cert_chain_pems[0].bytes().decode()))
    assert fingerprint((await handshake(node.port, "unknown.test")).certificate) == expected
    assert fingerprint((await handshake(node.port, None)).certificate) == expected  # no SNI at all
    assert fingerprint((await handshake(node.port, "shop.test")).certificate) != expected


async def test_a_name_without_a_certificate_fails_with_unrecognized_name(https):
    node = await https()
    for name in ("unknown.test", None, "a.b.shop.test"):  # a.b.shop.test: shop's, but no certificate covers it
        with pytest.raises(ssl.SSLError) as info:
            await handshake(node.port, name)
        assert info.value.reason == "TLSV1_UNRECOGNIZED_NAME", name
    out = await openssl("-connect", f"127.0.0.1:{node.port}", "-servername", "unknown.test")
    assert "alert number 112" in out, out  # the client is told why, not reset
    assert (await handshake(node.port, "shop.test")).version == "TLSv1.3"  # and the node serves on


async def test_a_request_for_another_tenant_than_the_server_name_gets_421(https, client):
    node = await https()
    status, headers, body = await node.get(client, "blog.test", sni="shop.test",
                                           context=client_context(None))
    assert status == 421 and b"another site" in body and b"Traceback" not in body
    assert headers["Cache-Status"].endswith("detail=misdirected")
    status, _, _ = await node.get(client, "www.shop.test", sni="shop.test")  # the same tenant: served
    assert status == 404


# --- the tenant's tls section ---------------------------------------------------------------


async def test_redirect_http_sends_plain_requests_to_https_but_acme_challenges(https, client, origin):
    origin.respond("/.well-known/acme-challenge/token1", "proof")
    node = await https(policies={"shop": {"tls": {"redirect_http": True}}})
    plain = f"http://127.0.0.1:{node.plain}"
    async with client.get(f"{plain}/a/b?x=1&y=%20", headers={"Host": "www.shop.test:8080"},
                          allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "https://www.shop.test/a/b?x=1&y=%20"
    async with client.get(f"{plain}/.well-known/acme-challenge/token1", headers={"Host": "shop.test"},
                          allow_redirects=False) as resp:
        assert resp.status == 200 and await resp.read() == b"proof"
    async with client.get(f"{plain}/", headers={"Host": "blog.test"}, allow_redirects=False) as resp:
        assert resp.status == 404  # blog does not redirect
    status, _, _ = await node.get(client, "shop.test", "/a")  # over HTTPS: no redirect
    assert status == 404


async def test_hsts_only_on_https_answers_on_misses_and_hits(https, client, origin):
    origin.respond("/page", "page", headers={"Cache-Control": "max-age=60"})
    hsts = {"max_age": 31536000, "include_subdomains": True, "preload": True}
    node = await https(policies={"shop": {"tls": {"hsts": hsts}}})
    expected = "max-age=31536000; includeSubDomains; preload"
    seen = []
    for _ in range(2):
        status, headers, _ = await node.get(client, "shop.test", "/page")
        seen.append((status, headers["Cache-Status"], headers.get("Strict-Transport-Security")))
    assert seen[0][0] == 200 and "stored" in seen[0][1] and seen[0][2] == expected
    assert seen[1][0] == 200 and "hit" in seen[1][1] and seen[1][2] == expected
    status, headers, _ = await node.get(client, "shop.test", "/missing")  # the origin's 404 too
    assert status == 404 and headers["Strict-Transport-Security"] == expected
    async with client.get(f"http://127.0.0.1:{node.plain}/page", headers={"Host": "shop.test"}) as resp:
        assert resp.status == 200 and "hit" in resp.headers["Cache-Status"]
        assert "Strict-Transport-Security" not in resp.headers  # RFC 6797 §7.2
    status, headers, _ = await node.get(client, "blog.test", "/page")
    assert "Strict-Transport-Security" not in headers  # blog asks for none


async def test_min_version_refuses_older_clients_in_the_handshake(https, client, caplog):
    node = await https(policies={"shop": {"tls": {"min_version": "1.3"}}})
    tls12 = client_context(node.ca, maximum=ssl.TLSVersion.TLSv1_2)
    with caplog.at_level(logging.WARNING, logger="edge.tls"):
        with pytest.raises(ssl.SSLError) as info:
            await handshake(node.port, "www.shop.test", tls12)
    assert info.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    assert "refused a TLSv1.2 handshake" in caplog.text and "tls.min_version is 1.3" in caplog.text
    assert "127.0.0.1" not in caplog.text  # the client's network only
    out = await openssl("-connect", f"127.0.0.1:{node.port}", "-servername", "shop.test", "-tls1_2")
    assert "CONNECTION ESTABLISHED" not in out and "alert protocol version" in out, out
    # A client offering 1.2 and 1.3 gets 1.3 and is served.
    assert (await handshake(node.port, "shop.test", client_context())).version == "TLSv1.3"
    status, _, _ = await node.get(client, "shop.test")
    assert status == 404
    status, _, _ = await node.get(client, "blog.test", context=tls12)  # blog keeps the node's minimum
    assert status == 404


async def test_min_version_closes_older_connections_after_an_unread_hello(https, client, caplog, monkeypatch):
    """A ClientHello the listener did not keep whole: the negotiated version decides, after the handshake."""
    monkeypatch.setattr("edge.tls.listener.MAX_CLIENT_HELLO", 16)
    node = await https(policies={"shop": {"tls": {"min_version": "1.3"}}})
    tls12 = client_context(node.ca, maximum=ssl.TLSVersion.TLSv1_2)
    with caplog.at_level(logging.WARNING, logger="edge.tls"):
        with pytest.raises(aiohttp.ClientError):
            await node.get(client, "shop.test", context=tls12)
    assert "refused a TLSv1.2 connection after its handshake" in caplog.text
    status, _, _ = await node.get(client, "shop.test")
    assert status == 404


@pytest.mark.parametrize("sni", [None, "nobody.test"])
async def test_min_version_holds_for_a_connection_that_reaches_the_tenant_by_host_alone(https, origin, tmp_path,
                                                                                         ca, sni):
    """No server name, or nobody's: the default certificate's handshake cannot judge the tenant's minimum."""
    origin.respond("/", b"hello")
    default = ca.issue_cert("edge.example")
    path = tmp_path / "default.pem"
    path.write_bytes(b"".join(b.bytes() for b in default.cert_chain_pems) + default.private_key_pem.bytes())
    node = await https(policies={"shop": {"tls": {"min_version": "1.3"}}}, default=path)

    async def get(host: str, maximum=None) -> tuple[str, bytes]:
        context = client_context(maximum=maximum)
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port, ssl=context,
                                                       server_hostname=sni or "")
        version = writer.get_extra_info("ssl_object").version()
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        writer.close()
        return version, data

    version, data = await get("shop.test", ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 421 "), data
    assert b"detail=tls-version" in head and b"TLS 1.3" in body and b"hello" not in body
    version, data = await get("shop.test")  # TLS 1.3 on the same terms: served
    assert version == "TLSv1.3" and data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello"), data
    version, data = await get("blog.test", ssl.TLSVersion.TLSv1_2)  # blog keeps the node's minimum
    assert data.startswith(b"HTTP/1.1 200 "), data


async def test_tls_1_0_and_1_1_are_refused_by_every_tenant(https):
    node = await https()
    for flag in ("-tls1", "-tls1_1"):
        out = await openssl("-connect", f"127.0.0.1:{node.port}", "-servername", "shop.test", flag,
                            "-cipher", "DEFAULT@SECLEVEL=0")
        assert "CONNECTION ESTABLISHED" not in out and "alert protocol version" in out, out


# --- what the request pipeline sees ---------------------------------------------------------


async def test_the_origin_is_told_https_and_the_access_log_the_version(https, client, origin):
    node = await https()
    out = io.BytesIO()
    node.node.state.access_log = AccessLog(stream=out)
    await node.get(client, "shop.test", "/p")
    async with client.get(f"http://127.0.0.1:{node.plain}/p", headers={"Host": "shop.test"}) as resp:
        await resp.read()
    node.node.state.access_log.flush()
    forwarded = [r["headers"].get("X-Forwarded-Proto") for r in origin.requests]
    assert forwarded == ["https", "http"]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["tls"] for line in lines] == ["TLSv1.3", "-"]


def v1(src: str, sport: int) -> bytes:
    return f"PROXY TCP4 {src} 198.51.100.2 {sport} 443\r\n".encode()


def v2(src: str, sport: int) -> bytes:
    block = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address("198.51.100.2").packed + struct.pack("!HH", sport, 443)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block)) + block


async def https_get(reader, writer, host: str, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    """One keep-alive request on an open connection; its status, fields and body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    body = await asyncio.wait_for(reader.readexactly(int(fields.get("Content-Length", 0))), 10)
    return int(lines[0].split()[1]), fields, body


@pytest.mark.parametrize("header", [v1, v2], ids=["v1", "v2"])
async def test_proxy_protocol_before_tls(https, origin, header):
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    node = await https(listen=(ListenAddress("127.0.0.1", 0),
                               ListenAddress("127.0.0.1", 0, True, loopback, tls=True)))
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(header("203.0.113.9", 40000))
        await writer.drain()
        await writer.start_tls(client_context(node.ca), server_hostname="shop.test")
        status, _, _ = await https_get(reader, writer, "shop.test", "/who")
    finally:
        writer.close()
    assert status == 404
    sent = origin.requests[-1]["headers"]
    assert sent["X-Forwarded-For"] == "203.0.113.9" and sent["X-Forwarded-Proto"] == "https"


# --- reloads --------------------------------------------------------------------------------


async def test_a_new_certificate_serves_new_handshakes_while_open_connections_go_on(https, tmp_path, ca):
    node = await https()
    old = stored_fingerprint(node.node, "shop", "shop")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port, ssl=client_context(ca),
                                                   server_hostname="shop.test")
    try:
        assert (await https_get(reader, writer, "shop.test"))[0] == 404
        store_leaf(tmp_path / "certificates", "shop", "shop", ca.issue_cert(*SHOP))  # replaced in the store
        new = stored_fingerprint(node.node, "shop", "shop")
        assert new != old
        assert fingerprint((await handshake(node.port, "shop.test")).certificate) == old  # not before the reload
        assert node.node.reload_certificates() == 3
        assert fingerprint((await handshake(node.port, "shop.test")).certificate) == new
        status, fields, _ = await https_get(reader, writer, "shop.test")  # the open connection goes on
        assert status == 404 and fields.get("Connection") != "close"
        assert fingerprint(writer.get_extra_info("ssl_object").getpeercert(binary_form=True)) == old
    finally:
        writer.close()


async def test_a_host_moved_to_another_tenant_takes_its_certificate_out_of_service(https, tmp_path):
    node = await https()
    assert (await handshake(node.port, "blog.test")).version == "TLSv1.3"
    policies = tmp_path / "policies"
    blog = json.loads((policies / "blog.json").read_text())
    (policies / "blog.json").write_text(json.dumps({**blog, "hosts": ["blog2.test"]}))
    shop = json.loads((policies / "shop.json").read_text())
    (policies / "shop.json").write_text(json.dumps({**shop, "hosts": [*SHOP, "blog.test"]}))
    node.node.reload()  # a policy reload rebuilds the certificates as hosts move
    with pytest.raises(ssl.SSLError) as info:
        await handshake(node.port, "blog.test")  # blog's certificate is no longer blog's host's
    assert info.value.reason == "TLSV1_UNRECOGNIZED_NAME"


async def test_sessions_resume_with_the_same_worker(https):
    node = await https()
    context = client_context()

    def connect(session=None):
        import socket

        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="shop.test", session=session) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):
                    pass
                return tls.session, tls.session_reused

    first, reused = await asyncio.to_thread(connect)
    assert not reused and first is not None
    _, reused = await asyncio.to_thread(connect, first)
    assert reused


async def test_stop_aborts_handshakes_in_progress(https):
    node = await https()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    await writer.drain()
    await until(lambda: node.node.tls.handshaking, "the handshake to begin")
    node.node.tls.close()  # as Node.stop does once the listeners are closed
    assert await closed(reader)
    assert not node.node.tls.handshaking
    writer.close()



async def test_a_client_closing_cleanly_is_answered_and_let_go(https):
    node = await https()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port, ssl=client_context(node.ca),
                                                   server_hostname="shop.test")
    assert (await https_get(reader, writer, "shop.test"))[0] == 404
    writer.close()  # close_notify
    await asyncio.wait_for(writer.wait_closed(), 10)  # the node's close_notify came back
    await until(lambda: not node.node.runner.server.connections, "the node to let the connection go")


def test_proxy_protocol_and_tls_under_uvloop(tmp_path, ca):
    # Production runs uvloop (edge.cli): the TLS layer uses only the public
    # transport API, which its transports must serve as asyncio's do.
    uvloop = pytest.importorskip("uvloop")
    from aiohttp import web

    from edge.http.aiohttp_adapter import tls_session
    from edge.policy.parse import parse_policy
    from edge.policy.resolve import PolicySet
    from edge.tls.listener import Terminator, TlsSite
    from edge.tls.sni import Certificates
    from edge.tls.store import CertificateStore

    store_leaf(tmp_path, "shop", "shop", ca.issue_cert(*SHOP))
    terminator = Terminator(Certificates(CertificateStore(tmp_path)), 2.0)
    terminator.reload(PolicySet([parse_policy({"hosts": SHOP, "origins": [{"url": "http://127.0.0.1:9"}]},
                                              tenant="shop", source="shop.json")]))

    async def answer(request):
        return web.Response(text=f"{request.remote} {request.secure} {tls_session(request).tenant}")

    async def main():
        runner = web.ServerRunner(web.Server(answer), handle_signals=False)
        await runner.setup()
        try:
            await TlsSite(runner, "127.0.0.1", 0, terminator=terminator,
                          proxy_peers=[ipaddress.ip_network("127.0.0.0/8")]).start()
            reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
            writer.write(v2("203.0.113.9", 40000))
            await writer.drain()
            await writer.start_tls(client_context(ca), server_hostname="www.shop.test")
            first = await https_get(reader, writer, "www.shop.test")
            second = await https_get(reader, writer, "www.shop.test")  # keep-alive
            writer.close()
            return first, second
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        first, second = runner.run(main())
    assert first[0] == second[0] == 200
    assert first[2] == second[2] == b"203.0.113.9 True shop"


async def test_a_broken_default_certificate_keeps_the_last_one_and_other_changes_still_apply(https, tmp_path, ca, caplog):
    default = ca.issue_cert("edge.example")
    path = tmp_path / "default.pem"
    path.write_bytes(b"".join(b.bytes() for b in default.cert_chain_pems) + default.private_key_pem.bytes())
    node = await https(default=path)
    expected = fingerprint(ssl.PEM_cert_to_DER_cert(default.cert_chain_pems[0].bytes().decode()))
    path.write_text("not a certificate any more")
    store_leaf(tmp_path / "certificates", "shop", "shop", ca.issue_cert(*SHOP))  # replaced meanwhile
    assert node.node.reload_certificates() == 3
    assert fingerprint((await handshake(node.port, "shop.test")).certificate) == stored_fingerprint(node.node, "shop", "shop")
    assert fingerprint((await handshake(node.port, "unknown.test")).certificate) == expected
    assert "the previous one stays" in caplog.text
