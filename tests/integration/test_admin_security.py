"""Admin API hardening: what a tenant token may change, the API never
reachable through the proxy, deleted tenants leave no cache behind,
reserved tenant ids, Host checks against DNS rebinding, and the headers of
every answer."""
from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from tests.admin_support import OPERATOR, SHOP, Api, OpenApiCheck, admin_config, policy
from tests.conftest import raw_request
from tests.origin_support import Origin

POLICY = "/v1/tenants/{tenant}/policy"


@pytest.fixture
async def start(origin, make_edge, client):
    origin.respond("/page", "old", headers={"Cache-Control": "max-age=600"})

    async def start(**admin):
        policies = {"shop": policy(origin.url, "shop.test"), "news": policy(origin.url, "news.test")}
        edge = await make_edge(policies=policies, admin=admin_config(**admin))
        edge.api = Api(client, f"http://127.0.0.1:{edge.node.admin.port}", OpenApiCheck())
        return edge

    return start


@pytest.mark.parametrize(
    "change, field",
    [
        pytest.param({"hosts": ["shop.test", "*"]}, "hosts", id="wildcard-host"),
        pytest.param({"hosts": ["shop.test", "unclaimed.test"]}, "hosts", id="new-host"),
        pytest.param({"origins": [{"url": "http://169.254.169.254"}]}, "origins[0].url", id="metadata-service"),
        pytest.param({"origins": [{"url": "http://127.0.0.1:9090"}]}, "origins[0].url", id="loopback"),
        pytest.param({"origins": [{"url": "http://[::1]:80"}]}, "origins[0].url", id="loopback-v6"),
        pytest.param({"origins": [{"url": "http://[::ffff:127.0.0.1]:80"}]}, "origins[0].url", id="loopback-mapped"),
        pytest.param({"origins": [{"url": "http://localhost:9090"}]}, "origins[0].url", id="localhost"),
        pytest.param({"origins": [{"url": "http://10.0.0.5:8080"}]}, "origins[0].url", id="private"),
        pytest.param({"origins": [{"url": "http://100.100.100.200"}]}, "origins[0].url", id="metadata-alibaba"),
        pytest.param({"origins": [{"url": "http://[fd00:ec2::254]"}]}, "origins[0].url", id="metadata-aws-v6"),
        pytest.param({"origins": [{"url": "http://metadata.google.internal"}]}, "origins[0].url", id="metadata-name"),
        pytest.param({"filters": {"events": {"webhook_url": "http://127.0.0.1:9090/internal",
                                             "secret": "0123456789abcdef0123"}}},
                     "filters.events.webhook_url", id="webhook-loopback"),
    ],
)
async def test_tenant_tokens_cannot_widen_hosts_or_reach_internal_addresses(start, change, field):
    edge = await start()
    before = edge.node.state.policies.current.get("shop").version
    status, _, body = await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json=change)
    assert status == 403 and body["details"][0]["field"] == field
    assert edge.node.state.policies.current.get("shop").version == before
    # An operator may.
    if field == "hosts":
        status, _, _ = await edge.api.call("PATCH", POLICY, tenant="shop", json=change)
        assert status == 200


async def test_tenant_token_may_change_rules_and_keep_its_origin(start):
    edge = await start()
    status, _, _ = await edge.api.call(
        "PATCH", POLICY, tenant="shop", token=SHOP, json={"rules": [{"match": {"path_prefix": "/a/"}, "bypass": True}]}
    )
    assert status == 200


async def test_admin_api_is_not_reachable_through_the_proxy(start, client):
    edge = await start()
    # What a request relayed by the node's own proxy looks like.
    async with client.get(f"http://127.0.0.1:{edge.node.admin.port}/v1/tenants", headers={"Via": "1.1 edge"}) as r:
        assert r.status == 403


async def test_deleting_a_tenant_drops_its_cache(start, origin, client):
    edge = await start()
    async with client.get(edge.url + "/page", headers={"Host": "shop.test"}) as r:
        assert await r.text() == "old"
    status, _, _ = await edge.api.call("DELETE", POLICY, tenant="shop")
    assert status == 200
    origin.respond("/page", "new", headers={"Cache-Control": "max-age=600"})
    status, _, _ = await edge.api.call("PUT", POLICY, tenant="shop", json=policy(origin.url, "shop.test"))
    assert status == 201
    async with client.get(edge.url + "/page", headers={"Host": "shop.test"}) as r:
        assert await r.text() == "new" and "miss" in r.headers["Cache-Status"]


async def test_concurrent_readiness_probes_all_pass(start, client):
    edge = await start()

    async def probe() -> int:
        async with client.get(f"http://127.0.0.1:{edge.node.admin.port}/readyz") as r:
            return r.status

    assert set(await asyncio.gather(*[probe() for _ in range(60)])) == {200}


async def test_cli_client_follows_no_redirect_with_the_token():
    from edge.admin.client import AdminClient

    seen: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.url.with_path("/stolen")))

    server = Origin()
    server.route("/stolen", elsewhere)
    server.route("/*", redirect)
    await server.start()
    try:
        api = AdminClient(server.url, "secret-token-123")
        answer = await asyncio.get_running_loop().run_in_executor(None, api.call, "POST", "/v1/tenants/x/purge", {"all": True})
        assert answer.status == 302
        assert seen == []
    finally:
        await server.stop()


# --- reserved tenant ids ---------------------------------------------------------------

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "policies" / "schema.json"


@pytest.mark.parametrize("method, template, body", [
    ("GET", POLICY, None),
    ("PUT", POLICY, {"hosts": ["schema.test"], "origins": [{"url": "http://192.0.2.1"}]}),
    ("PATCH", POLICY, {"rules": []}),
    ("DELETE", POLICY, None),
    ("PUT", POLICY + "/delivery", {"allow_countries": ["DE"]}),
    ("POST", "/v1/tenants/{tenant}/purge", {"all": True}),
])
async def test_reserved_tenant_ids_are_refused_on_every_tenant_route(start, tmp_path, method, template, body):
    edge = await start()
    # The policies' JSON Schema next to the tenants, as editors like it.
    kept = tmp_path / "policies" / "schema.json"
    shutil.copy(SCHEMA_FILE, kept)
    before = kept.read_bytes()
    status, _, answer = await edge.api.call(method, template, tenant="schema", json=body)
    assert status == 400 and answer["error"] == "reserved tenant id"
    assert answer["details"] == [{"field": "tenant", "message": 'expected a tenant id other than "schema" '
                                  "(reserved: the policy directory's file of that name is not a tenant), "
                                  'found "schema"'}]
    assert kept.read_bytes() == before


# --- Host (DNS rebinding) ----------------------------------------------------------------


@pytest.mark.parametrize("path, token", [("/healthz", None), ("/openapi.json", None), ("/v1/tenants", OPERATOR)])
async def test_a_rebound_host_name_gets_421(start, path, token):
    edge = await start()
    port = edge.node.admin.port
    status, _, body = await edge.api.call("GET", path, token=token, headers={"Host": f"rebind.evil.example:{port}"})
    assert status == 421 and "admin.hosts" in body["error"]
    assert body["details"][0]["field"] == "Host" and "rebind.evil.example" in body["details"][0]["message"]


async def test_a_change_with_a_rebound_host_changes_nothing(start, origin):
    edge = await start()
    status, _, _ = await edge.api.call("PUT", POLICY, tenant="shop", json=policy(origin.url, "other.test"),
                                       headers={"Host": "rebind.evil.example"})
    assert status == 421
    assert edge.node.state.policies.current.get("shop").hosts == ("shop.test",)


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1:{port}", "127.0.0.1", "[::1]:{port}",
                                  "admin.example.net:{port}", "ADMIN.example.net."])
async def test_loopback_the_own_address_and_configured_names_are_answered(start, host):
    edge = await start(hosts=("admin.example.net",))
    host = host.format(port=edge.node.admin.port)
    assert (await edge.api.call("GET", "/v1/tenants", headers={"Host": host}))[0] == 200, host


# --- headers of every answer ---------------------------------------------------------------


async def test_no_version_banner_and_no_sniffing_on_any_answer(start, caplog):
    edge = await start()
    api = edge.api  # checks Server: edge and nosniff on each answer
    assert (await api.call("GET", "/healthz", token=None))[0] == 200
    assert (await api.call("GET", "/v1/tenants", token="wrong"))[0] == 401
    assert (await api.call("GET", POLICY, tenant="ghost"))[0] == 404
    assert (await api.call("GET", POLICY, tenant="Bad"))[0] == 400
    # A request aiohttp itself refuses: it answers without calling the API.
    caplog.set_level(logging.DEBUG)
    answer = await raw_request(edge.node.admin.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n"
                                                     b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    head = answer.partition(b"\r\n\r\n")[0].decode().lower().split("\r\n")
    assert head[0].split()[1] == "400"
    assert "server: edge" in head and "x-content-type-options: nosniff" in head
    assert not any("aiohttp" in line or "python" in line for line in head)
    assert "127.0.0.1" not in caplog.text  # no client address in the log
