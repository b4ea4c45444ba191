"""Node-wide address lists ([filters] in edge.toml) over real sockets:
every tenant, before its own lists; reloaded on SIGHUP, a broken file
keeps the previous lists."""
from __future__ import annotations

import aiohttp

from edge.config import NodeLists


def _tenant(origin_url: str, host: str, filters: dict | None = None) -> dict:
    return {"hosts": [host], "origins": [{"url": origin_url}], "filters": filters or {}}


def _session(local: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(local, 0), force_close=True))


async def _status(local: str, url: str, host: str, path: str = "/") -> int:
    async with _session(local) as s:
        async with s.get(url + path, headers={"Host": host}) as r:
            await r.read()
            return r.status


async def test_node_deny_covers_every_tenant_and_beats_a_tenant_allow(origin, make_edge, tmp_path):
    origin.respond("/", b"ok")
    deny = tmp_path / "deny.txt"
    deny.write_text("# abusers\n127.0.0.2\n")
    edge = await make_edge(
        policies={
            "a": _tenant(origin.url, "a.example"),
            "b": _tenant(origin.url, "b.example", {"ip_lists": {"allow": ["127.0.0.2/32"]}}),
        },
        filters=NodeLists(deny_file=deny),
    )
    for host in ("a.example", "b.example"):
        assert await _status("127.0.0.2", edge.url, host) == 403, host
        assert await _status("127.0.0.3", edge.url, host) == 200, host


async def test_node_allow_skips_rate_limits_and_waf(origin, make_edge):
    origin.respond("/", b"ok")
    limited = {"rate_limits": {"mode": "block", "rules": [{"id": "r", "rate": 0.001, "burst": 1}]}}
    edge = await make_edge(policies={"a": _tenant(origin.url, "a.example", limited)}, filters=NodeLists(allow=(_net("127.0.0.4/32"),)))
    attack = "/?q=1'%20OR%20'1'='1"
    assert [await _status("127.0.0.4", edge.url, "a.example") for _ in range(3)] == [200, 200, 200]
    assert await _status("127.0.0.4", edge.url, "a.example", attack) == 200
    assert [await _status("127.0.0.5", edge.url, "a.example") for _ in range(2)] == [200, 429]
    assert await _status("127.0.0.6", edge.url, "a.example", attack) == 403


async def test_reload_reads_the_files_again_and_a_broken_file_keeps_the_lists(origin, make_edge, tmp_path):
    origin.respond("/", b"ok")
    deny = tmp_path / "deny.txt"
    deny.write_text("127.0.0.7\n")
    edge = await make_edge(policies={"a": _tenant(origin.url, "a.example")}, filters=NodeLists(deny_file=deny))
    assert await _status("127.0.0.7", edge.url, "a.example") == 403
    deny.write_text("127.0.0.8\n")
    edge.node.reload()
    assert await _status("127.0.0.7", edge.url, "a.example") == 200
    assert await _status("127.0.0.8", edge.url, "a.example") == 403
    deny.write_text("127.0.0.9\nnot-a-network\n")
    edge.node.reload()
    assert await _status("127.0.0.8", edge.url, "a.example") == 403  # previous lists kept
    assert await _status("127.0.0.9", edge.url, "a.example") == 200


def _net(text: str):
    import ipaddress

    return ipaddress.ip_network(text)


async def test_node_rate_limit_per_client_over_all_tenants(origin, make_edge):
    origin.respond("/", b"ok")
    edge = await make_edge(
        policies={"a": _tenant(origin.url, "a.example"), "b": _tenant(origin.url, "b.example")},
        filters=NodeLists(client_rate=0.001, client_burst=3),
    )
    got = [await _status("127.0.0.11", edge.url, host) for host in ("a.example", "b.example", "a.example", "b.example")]
    assert got == [200, 200, 200, 429]  # one bucket for both tenants
    assert await _status("127.0.0.12", edge.url, "b.example") == 200  # another client has its own
