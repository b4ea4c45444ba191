"""Origins and webhooks that tenant tokens set reach only public addresses,
checked where the node connects: the node as production starts it, a real
origin and a real webhook receiver on loopback, the admin API over sockets.

Loopback stands in for "internal": a test opens it with ``[outbound]
allow_networks`` for the node that takes a tenant token's write, then
serves the same policy directory from a node without the allowance. The
URL passed every check when it was written and must still be refused when
the node connects, as after a DNS rebinding.
"""
from __future__ import annotations

import ipaddress
import logging

import pytest

from multidict import CIMultiDict

from edge.config import OutboundConfig
from edge.observe.events import EventSettings, SecurityEvents, WebhookSender
from edge.observe.metrics import REGISTRY
from edge.origin.guard import AddressPolicy, ForbiddenAddress, GuardedResolver
from edge.origin.pool import Failure, OriginClients, OriginError
from edge.policy import parse_policy
from tests.admin_support import OPERATOR, SHOP, Api, OpenApiCheck, admin_config, policy
from tests.origin_support import Origin
from tests.conftest import until as wait_until

POLICY = "/v1/tenants/{tenant}/policy"
SECRET = "whsec-0123456789abcdef0123"
GUARD = 10.0  # seconds before a broken test gives up waiting; never a measured bound
LOOPBACK_OPEN = OutboundConfig((ipaddress.ip_network("127.0.0.0/8"),))


@pytest.fixture
async def start(origin, make_edge, client):
    # Never stored: the nodes of one test share a disk tier.
    origin.respond("/page", "internal", headers={"Cache-Control": "no-store"})

    async def start(policies: dict, **changes):
        changes.setdefault("admin", admin_config())
        edge = await make_edge(policies=policies, **changes)
        edge.api = Api(client, f"http://127.0.0.1:{edge.node.admin.port}", OpenApiCheck())
        return edge

    return start


async def fetch(client, edge, host: str) -> tuple[int, str, str]:
    async with client.get(edge.url + "/page", headers={"Host": host}) as r:
        return r.status, r.headers.get("Cache-Status", ""), await r.text()


def deliveries(tenant: str, outcome: str) -> float:
    labels = {"tenant": tenant, "outcome": outcome}
    return REGISTRY.get_sample_value("edge_security_event_deliveries_total", labels) or 0.0


async def until(condition) -> None:
    await wait_until(condition, "the condition", GUARD)


# --- origins --------------------------------------------------------------------------


async def test_a_tenant_token_origin_is_refused_at_connect_even_after_it_was_accepted(start, origin, client):
    edge = await start({"shop": policy(origin.url, "shop.test"), "news": policy(origin.url, "news.test")},
                       outbound=LOOPBACK_OPEN)
    # A name, not an address: nothing at write time can know where it leads.
    url = f"http://localhost:{origin.port}"
    status, _, _ = await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json={"origins": [{"url": url}]})
    assert status == 200
    _, _, body = await edge.api.call("GET", POLICY, tenant="shop", token=SHOP)
    assert [(o["url"], o["set_by"]) for o in body["origins"]] == [(url, "tenant")]
    assert (await fetch(client, edge, "shop.test"))[0] == 200  # the operator opened loopback for tenants
    assert origin.hits["/page"] == 1

    later = await start({})  # the same policies, loopback closed again
    status, cache_status, text = await fetch(client, later, "shop.test")
    assert status == 502 and "detail=origin-forbidden-address" in cache_status
    assert text.startswith("502 origin address not allowed")
    assert origin.hits["/page"] == 1
    # The operator's loopback origin of another tenant works as ever.
    assert (await fetch(client, later, "news.test"))[0] == 200
    assert origin.hits["/page"] == 2


@pytest.mark.parametrize("where", ["ip-literal", "name"])
async def test_an_origin_marked_as_a_tenants_is_never_connected_to(start, origin, client, caplog, where):
    url = origin.url if where == "ip-literal" else f"http://localhost:{origin.port}"
    shop = {"hosts": ["shop.test"], "origins": [{"url": url, "set_by": "tenant"}]}
    edge = await start({"shop": shop, "news": policy(origin.url, "news.test")})
    with caplog.at_level(logging.WARNING, logger="edge.origin"):
        status, cache_status, _ = await fetch(client, edge, "shop.test")
        again, _, _ = await fetch(client, edge, "shop.test")
    assert (status, again) == (502, 502) and "detail=origin-forbidden-address" in cache_status
    assert origin.hits["/page"] == 0
    refused = [r for r in caplog.records if r.name == "edge.origin"]
    assert refused and all("origin-forbidden-address" in r.getMessage() and "loopback" in r.getMessage()
                           and r.exc_info is None for r in refused)
    # Refusals are not failures of the origin: the operator's tenant on the
    # same URL is neither marked down nor refused.
    assert "marked down" not in caplog.text
    assert (await fetch(client, edge, "news.test"))[0] == 200


async def test_a_tenant_token_keeps_the_operators_origin_but_cannot_bring_it_back(start, origin, client):
    edge = await start({"shop": policy(origin.url, "shop.test")})
    rules = {"rules": [{"match": {"path_prefix": "/a/"}, "bypass": True}]}
    assert (await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json=rules))[0] == 200
    assert (await fetch(client, edge, "shop.test"))[0] == 200

    # Claiming "operator" for a URL of its own records "tenant" all the same.
    elsewhere = {"origins": [{"url": "https://origin.shop.example", "set_by": "operator"}]}
    assert (await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json=elsewhere))[0] == 200
    _, _, body = await edge.api.call("GET", POLICY, tenant="shop", token=SHOP)
    assert body["origins"][0]["set_by"] == "tenant"
    # Once gone from the file, the operator's loopback origin is the tenant's to ask for, and refused.
    status, _, body = await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP,
                                          json={"origins": [{"url": origin.url}]})
    assert status == 403 and body["details"][0]["field"] == "origins[0].url"


@pytest.mark.parametrize("change", [{"host_header": "grafana.internal"}, {"max_connections": 10000}],
                         ids=["another-virtual-host", "more-connections"])
async def test_a_tenant_token_that_changes_the_operators_origin_makes_it_its_own(start, origin, client, change):
    edge = await start({"shop": policy(origin.url, "shop.test")}, outbound=LOOPBACK_OPEN)
    changed = {"url": origin.url, **change}
    status, _, _ = await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json={"origins": [changed]})
    assert status == 200
    _, _, body = await edge.api.call("GET", POLICY, tenant="shop", token=SHOP)
    assert [{k: o[k] for k in (*changed, "set_by")} for o in body["origins"]] == [{**changed, "set_by": "tenant"}]

    later = await start({})  # the same policies, loopback closed again
    status, cache_status, _ = await fetch(client, later, "shop.test")
    assert status == 502 and "detail=origin-forbidden-address" in cache_status
    assert origin.hits["/page"] == 0


async def test_the_operators_internal_origin_is_not_the_tenants_to_change(start, origin, client):
    edge = await start({"shop": policy(origin.url, "shop.test")})
    change = {"origins": [{"url": origin.url, "host_header": "grafana.internal"}]}
    status, _, body = await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json=change)
    assert status == 403 and body["details"][0]["field"] == "origins[0].url"
    assert "the operator's origin at this URL unchanged" in body["details"][0]["message"]
    _, _, body = await edge.api.call("GET", POLICY, tenant="shop", token=SHOP)
    assert [(o["host_header"], o["set_by"]) for o in body["origins"]] == [(None, "operator")]
    # Sent back exactly as the operator set it, it stays the operator's.
    same = {"origins": body["origins"], "rules": [{"match": {"path_prefix": "/a/"}, "bypass": True}]}
    assert (await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json=same))[0] == 200
    assert (await fetch(client, edge, "shop.test"))[0] == 200
    assert origin.hits["/page"] == 1


async def test_an_operator_vouches_for_a_tenants_origin_only_by_saying_so(start, origin, client):
    shop = {"hosts": ["shop.test"], "origins": [{"url": origin.url, "set_by": "tenant"}]}
    edge = await start({"shop": shop})
    # A whole policy put back without the marks, as from a file kept by hand.
    put = {"hosts": ["shop.test"], "origins": [{"url": origin.url, "read_timeout": 20}]}
    assert (await edge.api.call("PUT", POLICY, tenant="shop", token=OPERATOR, json=put))[0] == 200
    _, _, body = await edge.api.call("GET", POLICY, tenant="shop", token=OPERATOR)
    assert [o["set_by"] for o in body["origins"]] == ["tenant"]
    status, cache_status, _ = await fetch(client, edge, "shop.test")
    assert status == 502 and "detail=origin-forbidden-address" in cache_status
    assert origin.hits["/page"] == 0

    vouched = {"origins": [{"url": origin.url, "set_by": "operator"}]}
    assert (await edge.api.call("PATCH", POLICY, tenant="shop", token=OPERATOR, json=vouched))[0] == 200
    assert (await fetch(client, edge, "shop.test"))[0] == 200
    assert origin.hits["/page"] == 1


def requests(tenant: str) -> float:
    labels = {"tenant": tenant, "status": "5xx", "cache": "miss"}
    return REGISTRY.get_sample_value("edge_requests_total", labels) or 0.0


async def test_a_refused_origin_is_logged_once_however_often_clients_ask(start, origin, client, caplog):
    shop = {"hosts": ["shop.test"], "origins": [{"url": origin.url, "set_by": "tenant"}]}
    edge = await start({"shop": shop})
    before = requests("shop")
    with caplog.at_level(logging.WARNING, logger="edge.origin"):
        statuses = [(await fetch(client, edge, "shop.test"))[0] for _ in range(20)]
    assert statuses == [502] * 20 and origin.hits["/page"] == 0
    assert [r.getMessage() for r in caplog.records if r.name == "edge.origin"] == [
        f"origin request refused: origin-forbidden-address {origin.url} 127.0.0.1 is loopback"]
    # Every refusal is still counted.
    await until(lambda: requests("shop") >= before + 20)
    assert requests("shop") == before + 20


async def test_refusals_left_out_of_the_log_are_counted_in_a_later_line(origin, caplog):
    now = [0.0]
    clients = OriginClients(clock=lambda: now[0], refusal_log_interval=60.0)
    shop = parse_policy({"hosts": ["shop.test"], "origins": [{"url": origin.url, "set_by": "tenant"},
                                                             {"url": "http://127.0.0.2", "set_by": "tenant"}]},
                        tenant="shop", source="test")
    first, second = shop.origins

    async def ask(o, when: float) -> None:
        now[0] = when
        with pytest.raises(OriginError) as refused:
            await clients.send([o], shop.failover, "GET", "/page", CIMultiDict(), "shop.test", None, retry=False)
        assert refused.value.failure is Failure.FORBIDDEN

    try:
        with caplog.at_level(logging.WARNING, logger="edge.origin"):
            for when in (0, 1, 2, 59):
                await ask(first, when)
            await ask(second, 30)
            await ask(second, 31)
            await ask(first, 60)
            await ask(first, 61)
            await ask(first, 200)  # the second origin's interval is over: its count comes along
            await ask(first, 201)
    finally:
        with caplog.at_level(logging.WARNING, logger="edge.origin"):
            await clients.close()  # and what was held back until then
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.origin"]
    assert [line.split(" 127.0.0.")[0] for line in lines] == [
        f"origin request refused: origin-forbidden-address {origin.url}",
        "origin request refused: origin-forbidden-address http://127.0.0.2",
        f"origin request refused: origin-forbidden-address {origin.url}",
        f"origin request refused: origin-forbidden-address {origin.url}",
        "origin requests refused: 1 more to http://127.0.0.2 since the last line",
        f"origin requests refused: 1 more to {origin.url} since the last line",
    ]
    assert lines[2].endswith("(and 3 more since the last line)")
    assert lines[3].endswith("(and 1 more since the last line)")
    assert origin.hits["/page"] == 0


@pytest.mark.parametrize("host", ["0x7f000001", "2130706433", "0177.0.0.1", "127.1", "127.0.0.0x1"])
async def test_numbers_spelt_as_hosts_are_refused_for_every_writer(start, origin, host):
    edge = await start({"shop": policy(origin.url, "shop.test")})
    change = {"origins": [{"url": f"http://{host}:{origin.port}"}]}
    for token in (SHOP, None):
        kwargs = {"token": token} if token else {}
        status, _, body = await edge.api.call("PATCH", POLICY, tenant="shop", json=change, **kwargs)
        assert status == 422 and body["details"][0]["field"] == "origins[0].url"


# --- webhooks ------------------------------------------------------------------------


def blocked_site(origin_url: str, host: str, hook: str) -> dict:
    events = {"webhook_url": hook, "secret": SECRET, "tenant_threshold": 1}
    return {"hosts": [host], "origins": [{"url": origin_url}],
            "filters": {"ip_lists": {"deny": ["127.0.0.0/8"]}, "events": events}}


@pytest.fixture
async def receiver():
    """A webhook receiver on loopback. Asked for before ``start``, it is up
    until the test's edges have stopped and sent their last events."""
    r = Origin()
    await r.start()
    yield r
    await r.stop()


async def test_a_tenant_token_webhook_to_loopback_never_gets_a_post(receiver, start, origin, client):
    hook = f"{receiver.url}/internal"
    edge = await start({"shop": blocked_site(origin.url, "shop.test", "https://hooks.shop.example/e"),
                        "news": blocked_site(origin.url, "news.test", f"{receiver.url}/news")},
                       outbound=LOOPBACK_OPEN)
    # Refused outright without the allowance, as is 169.254.169.254.
    for refused in ("http://169.254.169.254/latest/meta-data/", "http://[::ffff:a9fe:a9fe]/"):
        change = {"filters": {"events": {"webhook_url": refused}}}
        status, _, body = await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json=change)
        assert status == 403 and body["details"][0]["field"] == "filters.events.webhook_url"
    change = {"filters": {"events": {"webhook_url": hook}}}
    assert (await edge.api.call("PATCH", POLICY, tenant="shop", token=SHOP, json=change))[0] == 200

    later = await start({})  # loopback closed again
    before = deliveries("shop", "forbidden")
    for host in ("shop.test", "news.test"):
        assert (await fetch(client, later, host))[0] == 403
    await until(lambda: receiver.hits["/news"] >= 1)
    await until(lambda: deliveries("shop", "forbidden") > before)
    assert receiver.hits["/internal"] == 0
    assert receiver.hits["/news"] >= 1  # the operator's webhook on the same receiver


async def test_the_sender_refuses_a_guarded_url_and_posts_an_operators(caplog):
    receiver = Origin()
    await receiver.start()
    try:
        sender = WebhookSender(tries=3, backoff=0.001, max_backoff=0.01, guard=AddressPolicy())
        events = SecurityEvents("edge", sender=sender)
        events.start()
        before = deliveries("shop", "forbidden")
        guarded = EventSettings(webhook_url=f"{receiver.url}/internal", secret=SECRET, tenant_threshold=1,
                                set_by="tenant")
        with caplog.at_level(logging.WARNING, logger="edge.events"):
            events.record("shop", guarded, "waf", (), "198.51.100.23")
            await until(lambda: deliveries("shop", "forbidden") > before)
        assert receiver.hits["/internal"] == 0
        line = next(r for r in caplog.records if "not allowed" in r.getMessage())
        assert "loopback" in line.getMessage() and "not retried" in line.getMessage() and line.exc_info is None

        vouched = EventSettings(webhook_url=f"{receiver.url}/hook", secret=SECRET, tenant_threshold=1)
        events.record("news", vouched, "waf", (), "198.51.100.23")
        await until(lambda: receiver.hits["/hook"] >= 1)
        await events.close()
    finally:
        await receiver.stop()


# --- the resolver --------------------------------------------------------------------


async def test_the_resolver_drops_refused_addresses_of_a_real_name():
    with pytest.raises(ForbiddenAddress, match="localhost resolves only to refused addresses"):
        await GuardedResolver(AddressPolicy()).resolve("localhost", 80)
    with pytest.raises(ForbiddenAddress, match="metadata service"):
        await GuardedResolver(AddressPolicy()).resolve("metadata.google.internal", 80)
    opened = GuardedResolver(AddressPolicy((ipaddress.ip_network("127.0.0.0/8"),)))
    assert {r["host"] for r in await opened.resolve("localhost", 80)} == {"127.0.0.1"}
