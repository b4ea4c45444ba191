"""Admin API hardening: what a tenant token may change, the API never
reachable through the proxy, deleted tenants leave no cache behind."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.admin_support import SHOP, Api, OpenApiCheck, admin_config, policy

POLICY = "/v1/tenants/{tenant}/policy"


@pytest.fixture
async def start(origin, make_edge, client):
    origin.respond("/page", "old", headers={"Cache-Control": "max-age=600"})

    async def start():
        policies = {"shop": policy(origin.url, "shop.test"), "news": policy(origin.url, "news.test")}
        edge = await make_edge(policies=policies, admin=admin_config())
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

    app = web.Application()
    app.router.add_route("*", "/stolen", elsewhere)
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        api = AdminClient(f"http://127.0.0.1:{port}", "secret-token-123")
        answer = await asyncio.get_running_loop().run_in_executor(None, api.call, "POST", "/v1/tenants/x/purge", {"all": True})
        assert answer.status == 302
        assert seen == []
    finally:
        await runner.cleanup()
