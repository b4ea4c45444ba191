"""Germany-only delivery over real sockets: clients bound to loopback
addresses that a test GeoIP database places in countries."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging

import aiohttp
import pytest

from edge.config import GeoIPConfig
from edge.observe.metrics import REGISTRY
from tests.conftest import until
from tests.geo_support import replace_atomically, write_country_db

DE, US, UNKNOWN, FR = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
GERMANY_ONLY = {"allow_countries": ["DE"], "unknown": "deny"}


@pytest.fixture
def geodb(tmp_path):
    return write_country_db(tmp_path / "country.mmdb", {f"{DE}/32": "DE", f"{US}/32": "US", f"{FR}/32": "FR"})


@pytest.fixture
async def start(origin, make_edge, geodb):
    origin.respond("/page", "hallo", headers={"Cache-Control": "max-age=60", "Content-Type": "text/plain"})

    async def start(delivery: dict, *, country: str | None = "DE", **changes):
        policy = {"hosts": ["*"], "origins": [{"url": origin.url}], "delivery": delivery}
        return await make_edge(policies={"shop": policy}, geoip=GeoIPConfig(geodb), country=country, **changes)

    return start


async def get(edge, source: str, path: str = "/page", headers: dict | None = None) -> tuple[int, dict, str]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(edge.url + path, headers=headers or {}, allow_redirects=False) as r:
            return r.status, dict(r.headers), await r.text()


def _stored(edge) -> int:
    disk = sum(1 for k in edge.store.disk.cache.iterkeys() if k.startswith("m\0")) if edge.store.disk else 0
    return len(edge.store.memory) + disk


async def test_germany_only_delivers_to_germany_and_refuses_the_rest(start, origin):
    edge = await start(GERMANY_ONLY)
    status, headers, body = await get(edge, DE)
    assert status == 200 and body == "hallo"
    for source, rule in ((US, "allow_countries"), (FR, "allow_countries"), (UNKNOWN, "unknown")):
        status, headers, body = await get(edge, source)
        assert status == 451, source
        assert f"detail=delivery.{rule}" in headers["Cache-Status"]
        assert headers["Link"] == '<urn:edge:node:edge>; rel="blocked-by"'
        assert headers["Cache-Control"] == "no-store"
        assert "hallo" not in body
    # The refusals were answered from neither cache nor origin.
    assert origin.hits["/page"] == 1


async def test_refusal_applies_to_cached_content_too(start):
    edge = await start(GERMANY_ONLY)
    assert (await get(edge, DE))[0] == 200
    status, headers, _ = await get(edge, DE)
    assert "hit" in headers["Cache-Status"]
    assert (await get(edge, US))[0] == 451


async def test_unknown_clients_pass_when_policy_allows_them(start):
    edge = await start({"allow_countries": ["DE"], "unknown": "allow"})
    assert (await get(edge, UNKNOWN))[0] == 200
    assert (await get(edge, US))[0] == 451


async def test_deny_list(start):
    edge = await start({"deny_countries": ["US"]})
    assert (await get(edge, FR))[0] == 200
    assert (await get(edge, US))[0] == 451


async def test_exempt_cidrs_always_pass(start):
    edge = await start({**GERMANY_ONLY, "exempt_cidrs": [f"{US}/32"]})
    assert (await get(edge, US))[0] == 200
    assert (await get(edge, FR))[0] == 451


async def test_redirect_action(start):
    edge = await start({**GERMANY_ONLY, "action": "redirect", "redirect_url": "https://example.com/not-available"})
    status, headers, _ = await get(edge, US)
    assert status == 307 and headers["Location"] == "https://example.com/not-available"


async def test_forwarded_for_from_a_trusted_proxy_decides(start):
    import ipaddress

    edge = await start(GERMANY_ONLY, trusted_proxies=(ipaddress.ip_network(f"{DE}/32"),))
    # The proxy at DE forwards a US client: refused.
    assert (await get(edge, DE, headers={"X-Forwarded-For": US}))[0] == 451
    # ... and a German client through it: delivered.
    assert (await get(edge, DE, headers={"X-Forwarded-For": DE}))[0] == 200
    # Forwarded is not the field this node's proxies write: a client's own is ignored.
    assert (await get(edge, DE, headers={"Forwarded": f"for={US}"}))[0] == 200


async def test_only_the_configured_forwarding_field_is_believed(start, origin):
    """Behind a proxy that writes only RFC 7239 Forwarded, a client's own
    X-Forwarded-For must not pass it off as German."""
    import ipaddress

    edge = await start(GERMANY_ONLY, trusted_proxies=(ipaddress.ip_network(f"{DE}/32"),),
                       client_address_header="forwarded")
    assert (await get(edge, DE, headers={"X-Forwarded-For": DE, "Forwarded": f"for={US}"}))[0] == 451
    assert (await get(edge, DE, headers={"X-Forwarded-For": US, "Forwarded": f"for={DE}"}))[0] == 200
    # The origin learns the client the proxy named, not the client's claim.
    assert US not in origin.requests[-1]["headers"]["X-Forwarded-For"]
    status, _, _ = await get(edge, DE, path="/page?other", headers={"X-Forwarded-For": US, "Forwarded": f'for="{FR}"'})
    assert status == 451


async def test_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(start):
    edge = await start(GERMANY_ONLY)
    assert (await get(edge, US, headers={"X-Forwarded-For": DE}))[0] == 451
    assert (await get(edge, DE, headers={"X-Forwarded-For": US}))[0] == 200
    assert (await get(edge, DE, headers={"X-Forwarded-For": "garbage, 999.1.1.1, ::zz"}))[0] == 200


async def test_node_outside_the_tenants_region_redirects_and_stores_nothing(start, origin):
    edge = await start({"edge_countries": ["DE"], "in_region_url": "https://de.cdn.example"}, country="US")
    status, headers, _ = await get(edge, DE, path="/page?x=1")
    assert status == 307 and headers["Location"] == "https://de.cdn.example/page?x=1"
    assert origin.hits["/page"] == 0
    assert _stored(edge) == 0


async def test_node_outside_the_region_without_in_region_url_answers_421(start, origin):
    edge = await start({"edge_countries": ["DE"]}, country="FR")
    status, headers, _ = await get(edge, DE)
    assert status == 421 and "detail=delivery.edge_countries" in headers["Cache-Status"]
    assert origin.hits["/page"] == 0 and _stored(edge) == 0


async def test_node_without_a_country_fails_closed(start, origin):
    edge = await start({"edge_countries": ["DE"]}, country=None)
    assert (await get(edge, DE))[0] == 421
    assert origin.hits["/page"] == 0


async def test_node_inside_the_region_serves(start):
    edge = await start({"edge_countries": ["DE"], **GERMANY_ONLY}, country="DE")
    assert (await get(edge, DE))[0] == 200


async def test_refusals_are_logged_anonymised_and_counted(start, caplog):
    edge = await start(GERMANY_ONLY)
    labels = {"tenant": "shop", "country": "US", "outcome": "block", "rule": "allow_countries"}
    before = REGISTRY.get_sample_value("edge_delivery_decisions_total", labels) or 0.0
    with caplog.at_level(logging.INFO, logger="edge.delivery"):
        await get(edge, US)
    line = next(r.getMessage() for r in caplog.records if r.name == "edge.delivery")
    assert "tenant=shop" in line and "country=US" in line and "rule=allow_countries" in line
    assert "client=127.0.0.0/24" in line and US not in line
    assert REGISTRY.get_sample_value("edge_delivery_decisions_total", labels) == before + 1


async def test_database_swapped_under_load(start, geodb):
    edge = await start(GERMANY_ONLY)
    geo = edge.node.state.geo
    answers: list[tuple[bool, int]] = []  # (sent after the swap, status), in the order they came
    swapped = asyncio.Event()
    stop = asyncio.Event()

    async def hammer() -> None:
        connector = aiohttp.TCPConnector(local_addr=(DE, 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            while not stop.is_set():
                after = swapped.is_set()
                async with session.get(edge.url + "/page") as r:
                    await r.read()
                    answers.append((after, r.status))

    tasks = [asyncio.ensure_future(hammer()) for _ in range(4)]
    await until(lambda: len(answers) >= 20, "requests before the swap")
    replace_atomically(geodb, {f"{DE}/32": "US"})
    assert geo.maybe_reload(force=True)
    swapped.set()
    await until(lambda: sum(after for after, _ in answers) >= 20, "requests after the swap")
    stop.set()
    await asyncio.gather(*tasks)
    assert {status for _, status in answers} <= {200, 451}
    assert answers[0] == (False, 200)
    # One sent before the swap may still come back 200 after later ones: it was decided then.
    assert {status for after, status in answers if after} == {451}


async def test_corrupt_replacement_keeps_the_old_database(start, geodb, caplog):
    edge = await start(GERMANY_ONLY)
    geodb.with_suffix(".tmp").write_bytes(b"not a database")
    geodb.with_suffix(".tmp").replace(geodb)
    with caplog.at_level(logging.WARNING, logger="edge.geo"):
        assert not edge.node.state.geo.maybe_reload(force=True)
    assert (await get(edge, DE))[0] == 200
    assert (await get(edge, US))[0] == 451
    assert any("geo" in r.name for r in caplog.records)


async def test_invalid_delivery_policy_keeps_the_previous_one(start, tmp_path):
    edge = await start(GERMANY_ONLY)
    bad = {"hosts": ["*"], "origins": [{"url": "http://127.0.0.1:1"}], "delivery": {"allow_countries": ["XX"]}}
    (tmp_path / "policies" / "shop.json").write_text(json.dumps(bad))
    edge.node.reload()
    assert (await get(edge, DE))[0] == 200
    assert (await get(edge, US))[0] == 451


async def test_proxy_protocol_listener_gives_the_client_address(origin, make_edge, geodb):
    from edge.config_tls import ListenAddress

    origin.respond("/page", "hallo", headers={"Cache-Control": "max-age=60"})
    policy = {"hosts": ["*"], "origins": [{"url": origin.url}], "delivery": GERMANY_ONLY}
    edge = await make_edge(
        policies={"shop": policy},
        geoip=GeoIPConfig(geodb),
        country="DE",
        listen=(ListenAddress("127.0.0.1", 0, proxy_protocol=True,
                              proxy_protocol_from=(ipaddress.ip_network("127.0.0.0/8"),)),),
    )

    async def through_balancer(header: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(header + b"GET /page HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    assert (await through_balancer(f"PROXY TCP4 {DE} 127.0.0.1 40000 443\r\n".encode())).startswith(b"HTTP/1.1 200")
    assert (await through_balancer(f"PROXY TCP4 {US} 127.0.0.1 40000 443\r\n".encode())).startswith(b"HTTP/1.1 451")
    # No header on a listener that requires one: closed without an answer.
    assert await through_balancer(b"") == b""
