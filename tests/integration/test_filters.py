"""Address lists and rate limits over real sockets: clients bound to loopback addresses."""
from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from edge.filters.rate_limits import RateLimitFilter
from edge.observe.metrics import REGISTRY

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def denied(tenant: str) -> float:
    labels = {"tenant": tenant, "filter": "ip_lists", "rule": "deny", "action": "block"}
    return REGISTRY.get_sample_value("edge_filter_decisions_total", labels) or 0.0


@pytest.fixture
async def start(origin, make_edge):
    for path in ("/page", "/login", "/login/form", "/news"):
        origin.respond(path, "ok", headers={"Cache-Control": "no-store"})

    async def start(filters: dict, **more_tenants):
        policies = {"shop": {"hosts": ["shop.example", "*"], "origins": [{"url": origin.url}], "filters": filters}}
        for tenant, tenant_filters in more_tenants.items():
            policies[tenant] = {"hosts": [f"{tenant}.example"], "origins": [{"url": origin.url}],
                                "filters": tenant_filters}
        return await make_edge(policies=policies, disk=False)

    return start


async def get(edge, source: str, path: str = "/page", host: str = "shop.example") -> tuple[int, dict]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session, \
            session.get(edge.url + path, headers={"Host": host}) as r:
        await r.read()
        return r.status, dict(r.headers)


def rate_filter(edge) -> RateLimitFilter:
    return next(f for f in edge.node.state.filters.filters if isinstance(f, RateLimitFilter))


def limited(rate: float = 0.001, burst: int = 2, mode: str = "block", **rule) -> dict:
    return {"rate_limits": {"mode": mode, "rules": [{"id": "r", "rate": rate, "burst": burst, **rule}]}}


async def test_deny_list_refuses_with_403(start, origin, caplog):
    edge = await start({"ip_lists": {"deny": [f"{A}/32"]}})
    before = denied("shop")
    with caplog.at_level(logging.INFO, logger="edge.filters"):
        status, headers = await get(edge, A)
    assert status == 403
    assert headers["Cache-Status"] == "edge; detail=filter.ip_lists"
    assert origin.hits["/page"] == 0
    assert (await get(edge, B))[0] == 200
    assert denied("shop") == before + 1
    assert any("tenant=shop" in r.message and "127.0.0.0/24" in r.message for r in caplog.records)


async def test_allow_list_skips_the_rate_limit(start):
    edge = await start({"ip_lists": {"allow": [A]}, **limited(burst=1)})
    assert [(await get(edge, A))[0] for _ in range(5)] == [200] * 5
    assert [(await get(edge, B))[0] for _ in range(2)] == [200, 429]


async def test_429_with_retry_after_after_the_burst(start, origin):
    edge = await start(limited(rate=0.1, burst=3))
    statuses = [(await get(edge, A))[0] for _ in range(3)]
    status, headers = await get(edge, A)
    assert statuses == [200] * 3 and status == 429
    assert headers["Retry-After"] == "10"
    assert headers["Cache-Status"] == "edge; detail=filter.rate_limits.r"
    assert origin.hits["/page"] == 3
    assert (await get(edge, B))[0] == 200  # another client has its own bucket


async def test_log_mode_passes(start):
    edge = await start({"ip_lists": {"mode": "log", "deny": [A]}, **limited(burst=1, mode="log")})
    assert [(await get(edge, A))[0] for _ in range(4)] == [200] * 4


async def test_path_prefix_scoping(start):
    edge = await start(limited(burst=1, path_prefix="/login"))
    assert (await get(edge, A, "/login"))[0] == 200
    assert (await get(edge, A, "/login/form"))[0] == 429
    assert [(await get(edge, A, "/page"))[0] for _ in range(3)] == [200] * 3


async def test_per_tenant_limit_is_shared_by_clients_and_not_by_tenants(start):
    edge = await start(limited(burst=2, per="tenant"), news=limited(burst=2, per="tenant"))
    assert [(await get(edge, src))[0] for src in (A, B, C)] == [200, 200, 429]
    assert [(await get(edge, src, "/news", host="news.example"))[0] for src in (A, B)] == [200, 200]


async def test_a_flood_from_many_addresses_keeps_the_bucket_store_bounded(start):
    edge = await start(limited(burst=1))
    rate_filter(edge).max_buckets = 50
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> int:
        async with sem:
            return (await get(edge, f"127.0.{i >> 8}.{(i & 255) or 1}"))[0]

    statuses = await asyncio.gather(*(one(i) for i in range(1, 301)))
    assert statuses.count(200) >= 250
    assert rate_filter(edge).bucket_count() == 50


async def test_a_flood_from_one_address_leaves_another_served(start, origin):
    edge = await start(limited(rate=5, burst=10))
    connector = aiohttp.TCPConnector(local_addr=(A, 0), limit=50)
    flood_statuses: list[int] = []

    async def flood(session: aiohttp.ClientSession) -> None:
        async with session.get(edge.url + "/page", headers={"Host": "shop.example"}) as r:
            await r.read()
            flood_statuses.append(r.status)

    async with aiohttp.ClientSession(connector=connector) as session:
        flooding = asyncio.gather(*(flood(session) for _ in range(400)))
        other = [(await get(edge, B))[0] for _ in range(8)]
        await flooding
    assert other == [200] * 8  # B within its own burst, served all along
    assert flood_statuses.count(429) >= 380  # A got its burst (plus refills), then 429s
    assert origin.hits["/page"] <= 8 + 10 + 5 * 10  # the flood never reached the origin beyond A's tokens
