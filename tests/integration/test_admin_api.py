"""The admin API over real sockets: the node as production starts it
(edge.app.Node with [admin] enabled), a real origin, real clients. Every
answer is checked against /openapi.json by tests.admin_support.Api."""
from __future__ import annotations

import asyncio
import json
import logging
import os

import aiohttp
import pytest

from edge.admin import app as admin_app
from edge.admin.app import ROUTES
from edge.admin.openapi import document
from edge.cache.disk import DiskStore
from tests.admin_support import (
    NEWS,
    OPERATOR,
    SHOP,
    Api,
    OpenApiCheck,
    admin_config,
    policy,
)
from tests.conftest import raw_request

POLICY = "/v1/tenants/{tenant}/policy"
DELIVERY = "/v1/tenants/{tenant}/policy/delivery"


@pytest.fixture
async def start(origin, make_edge, client):
    origin.respond("/page", "hello", headers={"Cache-Control": "max-age=600", "Content-Type": "text/plain"})
    check = OpenApiCheck()

    async def start(policies: dict | None = None, **changes):
        if policies is None:
            policies = {"shop": policy(origin.url, "shop.test"), "news": policy(origin.url, "news.test")}
        changes.setdefault("admin", admin_config())
        edge = await make_edge(policies=policies, **changes)
        edge.api = Api(client, f"http://127.0.0.1:{edge.node.admin.port}", check)
        return edge

    return start


async def hit(client, edge, host: str, path: str = "/page") -> tuple[int, str]:
    async with client.get(edge.url + path, headers={"Host": host}) as r:
        await r.read()
        return r.status, r.headers.get("Cache-Status", "")


# --- document, probes --------------------------------------------------------------


def test_every_route_of_the_app_is_in_the_openapi_document():
    doc = document()
    app = admin_app.make_app(None)  # type: ignore[arg-type] - only the routes are looked at
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()}
    assert routes == {(m, p) for m, p, _ in ROUTES}
    for method, path in routes:
        assert method.lower() in doc["paths"].get(path, {}), f"{method} {path} missing from /openapi.json"
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == routes


async def test_health_readiness_and_openapi_need_no_token(start):
    edge = await start()
    api = edge.api
    status, _, body = await api.call("GET", "/healthz", token=None)
    assert (status, body) == (200, {"status": "ok"})
    status, _, body = await api.call("GET", "/readyz", token=None)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["policies"]["ok"] and body["checks"]["disk"]["ok"]
    status, _, body = await api.call("GET", "/openapi.json", token=None)
    assert status == 200 and body["openapi"].startswith("3.1")


async def test_readyz_checks_the_geoip_database_when_one_is_configured(start, tmp_path):
    from edge.config import GeoIPConfig
    from tests.geo_support import write_country_db

    edge = await start(geoip=GeoIPConfig(write_country_db(tmp_path / "geo.mmdb", {"127.0.0.2/32": "DE"})))
    status, _, body = await edge.api.call("GET", "/readyz", token=None)
    assert status == 200 and body["checks"]["geoip"]["ok"] is True
    edge.node.state.geo = None  # as if it had never loaded
    status, _, body = await edge.api.call("GET", "/readyz", token=None)
    assert status == 503 and [d["field"] for d in body["details"]] == ["geoip"]


async def test_readyz_says_which_check_failed(start, monkeypatch):
    edge = await start(policies={})
    status, _, body = await edge.api.call("GET", "/readyz", token=None)
    assert status == 503
    assert body["checks"]["policies"]["ok"] is False
    assert [d["field"] for d in body["details"]] == ["policies"]

    def broken(disk):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DiskStore, "probe_sync", broken)
    status, _, body = await edge.api.call("GET", "/readyz", token=None)
    assert status == 503 and {d["field"] for d in body["details"]} == {"policies", "disk"}
    assert "OSError" in body["checks"]["disk"]["message"]


# --- authentication and scope --------------------------------------------------------


@pytest.mark.parametrize("authorization", [
    None,  # missing
    "Basic b3BlcmF0b3I6eA==",  # another scheme
    "Bearer",  # no token
    "Bearer two words",
    "Bearer " + "x" * 600,  # longer than any token we issue
    "Bearer wrong-token",  # unknown
    f"Bearer {OPERATOR}x",  # almost right
])
async def test_missing_malformed_or_unknown_tokens_get_401_with_a_bearer_challenge(start, authorization):
    edge = await start()
    headers = {"Authorization": authorization} if authorization is not None else {}
    status, h, body = await edge.api.call("GET", "/v1/tenants", token=None, headers=headers)
    assert status == 401
    assert h["WWW-Authenticate"].startswith("Bearer")
    assert body["error"] and isinstance(body["details"], list)


async def test_a_tenant_token_sees_and_changes_only_its_own_tenant(start, origin):
    edge = await start()
    api = edge.api
    status, _, body = await api.call("GET", "/v1/tenants", token=SHOP)
    assert status == 200 and [t["tenant"] for t in body] == ["shop"]
    status, _, body = await api.call("GET", "/v1/tenants", token=OPERATOR)
    assert [t["tenant"] for t in body] == ["news", "shop"]
    assert body[1]["hosts"] == ["shop.test"] and len(body[1]["version"]) == 16

    assert (await api.call("GET", POLICY, tenant="shop", token=SHOP))[0] == 200
    # Another tenant, existing or not: the same 403, so nothing tells them apart.
    for other in ("news", "ghost"):
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            status, _, body = await api.call(method, POLICY, tenant=other, token=SHOP,
                                             json=policy(origin.url, "x.test") if method != "GET" else None)
            assert status == 403, (method, other)
        assert (await api.call("POST", "/v1/tenants/{tenant}/purge", tenant=other, token=SHOP, json={"all": True}))[0] == 403
    # Operator-only endpoints.
    assert (await api.call("GET", "/metrics", token=SHOP))[0] == 403
    assert (await api.call("GET", "/v1/stats", token=SHOP))[0] == 403
    assert (await api.call("DELETE", POLICY, tenant="shop", token=SHOP))[0] == 403
    # The operator gets a plain 404 for a tenant that does not exist.
    assert (await api.call("GET", POLICY, tenant="ghost", token=OPERATOR))[0] == 404
    assert (await api.call("GET", POLICY, tenant="news", token=NEWS))[0] == 200


async def test_a_tenant_token_does_not_create_tenants_not_even_its_own(start, origin):
    edge = await start(policies={"news": policy(origin.url, "news.test")})
    status, _, body = await edge.api.call("PUT", POLICY, tenant="shop", token=SHOP, json=policy(origin.url, "shop.test"))
    assert status == 403
    assert (await edge.api.call("GET", POLICY, tenant="shop", token=SHOP))[0] == 404


async def test_failed_attempts_are_limited_per_address_but_never_lock_out_a_valid_token(start):
    edge = await start()
    api = edge.api
    for i in range(10):
        assert (await api.call("GET", "/v1/tenants", token=f"guess{i}"))[0] == 401
    status, headers, body = await api.call("GET", "/v1/tenants", token="guess")
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    # The operator behind the same address still gets in; guesses stay refused.
    assert (await api.call("GET", "/v1/tenants", token=OPERATOR))[0] == 200
    assert (await api.call("GET", "/v1/tenants", token=SHOP))[0] == 200
    assert (await api.call("GET", "/v1/tenants", token="guess"))[0] == 429
    # Endpoints without authentication still answer.
    assert (await api.call("GET", "/healthz", token=None))[0] == 200


async def test_an_address_over_its_limit_is_slowed_one_attempt_at_a_time(start):
    """Refusing only failures would let a guesser learn 200 from 429 at full
    speed: over its limit, every attempt from the address waits its turn."""
    from edge.observe.metrics import ADMIN_AUTH_DELAYED

    edge = await start()
    api = edge.api
    for i in range(10):
        assert (await api.call("GET", "/v1/tenants", token=f"guess{i}"))[0] == 401
    assert (await api.call("GET", "/v1/tenants", token="guess"))[0] == 429  # the 11th: over from now on
    before = ADMIN_AUTH_DELAYED._value.get()
    answers = await asyncio.gather(*(api.call("GET", "/v1/tenants", token=f"more{i}") for i in range(5)),
                                   api.call("GET", "/v1/tenants", token=OPERATOR))
    assert [a[0] for a in answers] == [429] * 5 + [200]
    assert ADMIN_AUTH_DELAYED._value.get() - before == 6
    # Another address is not slowed.
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        other = Api(session, f"http://127.0.0.1:{edge.node.admin.port}", api.check)
        assert (await other.call("GET", "/v1/tenants", token=OPERATOR))[0] == 200
    assert ADMIN_AUTH_DELAYED._value.get() - before == 6


async def test_a_limited_address_gets_a_short_queue_not_an_unbounded_one(start):
    """Waiting attempts hold connections: beyond a few, 429 at once, without
    the token being checked; requests without a token never queue."""
    from edge.admin.app import MAX_SLOW_QUEUE

    edge = await start(admin=admin_config(failed_auth_delay=0.3))
    api = edge.api
    for i in range(11):
        await api.call("GET", "/v1/tenants", token=f"guess{i}")
    answers = await asyncio.gather(*(api.call("GET", "/v1/tenants", token=f"more{i}")
                                     for i in range(MAX_SLOW_QUEUE + 4)))
    assert [a[0] for a in answers] == [429] * (MAX_SLOW_QUEUE + 4)
    busy = [a for a in answers if "waiting" in a[2]["error"]]
    assert len(busy) == 4 and all(int(a[1]["Retry-After"]) >= 1 for a in busy)
    assert (await api.call("GET", "/v1/tenants", token=None))[0] == 401


async def test_failed_attempts_are_limited_per_address_not_per_network(start):
    edge = await start()
    for i in range(11):
        await edge.api.call("GET", "/v1/tenants", token=f"guess{i}")
    assert (await edge.api.call("GET", "/v1/tenants", token="guess"))[0] == 429
    # A neighbour in the same /24 has its own count.
    neighbour = Api(edge.api.session, f"http://127.0.0.1:{edge.node.admin.port}", edge.api.check)
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        neighbour.session = session
        assert (await neighbour.call("GET", "/v1/tenants", token="guess"))[0] == 401


async def test_one_token_tried_too_often_is_refused_whatever_its_address(start):
    edge = await start()
    base = f"http://127.0.0.1:{edge.node.admin.port}"
    answers = []
    for i in range(11):  # eleven addresses in eleven networks, one token
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.{10 + i}.1", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            api = Api(session, base, edge.api.check)
            answers.append((await api.call("GET", "/v1/tenants", token="leaked-and-revoked"))[0])
    assert answers == [401] * 10 + [429]


async def test_requests_without_any_token_are_not_counted_as_guesses(start):
    edge = await start()
    for _ in range(15):
        assert (await edge.api.call("GET", "/v1/tenants", token=None))[0] == 401
    assert (await edge.api.call("GET", "/v1/tenants"))[0] == 200


# --- tenant ids and paths ---------------------------------------------------------------


@pytest.mark.parametrize("segment", ["..%2F", "%2e%2e", "..%2fshop", "%2E%2E%2Fetc", "shop%2Fx", "..%5Cx",
                                     "Shop", "-shop", "a%00", "a.json", "%2e", "x" * 64])
async def test_tenant_ids_with_path_tricks_are_refused_with_400(start, segment, tmp_path):
    edge = await start()
    port = edge.node.admin.port
    for method, body in (("GET", b""), ("PUT", b'{"hosts":["evil.test"],"origins":[{"url":"http://127.0.0.1:1"}]}')):
        request = (f"{method} /v1/tenants/{segment}/policy HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Authorization: Bearer {OPERATOR}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        answer = await raw_request(port, request + body)
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), (segment, answer[:300])
        assert json.loads(payload)["error"]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json"))
    assert files == ["policies/news.json", "policies/shop.json"]


async def test_dot_segments_in_the_raw_path_are_refused(start):
    edge = await start()
    for path in ("/v1/tenants/../policy", "/v1/tenants/shop/../news/policy", "/v1/./tenants"):
        request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {OPERATOR}\r\nConnection: close\r\n\r\n"
        answer = await raw_request(edge.node.admin.port, request.encode())
        assert answer.startswith(b"HTTP/1.1 400"), (path, answer[:200])


# --- policy reads and writes ---------------------------------------------------------------


async def test_put_creates_then_replaces_and_new_requests_see_it_at_once(start, origin, client, tmp_path):
    edge = await start()
    api = edge.api
    assert (await hit(client, edge, "blog.test"))[0] == 421

    status, headers, body = await api.call("PUT", POLICY, tenant="blog", json=policy(origin.url, "blog.test"))
    assert status == 201 and body["tenant"] == "blog" and body["hosts"] == ["blog.test"]
    version = body["version"]
    assert headers["ETag"] == f'"{version}"'
    assert (await hit(client, edge, "blog.test"))[0] == 200  # no watcher delay: reloaded before the answer

    status, headers, body = await api.call("GET", POLICY, tenant="blog")
    assert status == 200 and headers["ETag"] == f'"{version}"'
    assert body["hosts"] == ["blog.test"] and body["origins"][0]["url"] == origin.url
    assert "delivery" in body and "cache" in body  # every default spelled out

    # Replacing: the file holds what was sent, with its comments.
    new = policy(origin.url, "blog.test", "www.blog.test", **{"$comment": "kept"})
    status, headers, body = await api.call("PUT", POLICY, tenant="blog", json=new)
    assert status == 200 and body["version"] != version
    assert json.loads((tmp_path / "policies" / "blog.json").read_text()) == new
    assert (await hit(client, edge, "www.blog.test"))[0] == 200
    assert not [p for p in (tmp_path / "policies").iterdir() if p.name.endswith(".admin-tmp")]


async def test_if_match_guards_against_lost_updates(start, origin):
    edge = await start()
    api = edge.api
    _, headers, _ = await api.call("GET", POLICY, tenant="shop")
    etag = headers["ETag"]
    stale = '"0000000000000000"'
    status, _, body = await api.call("PUT", POLICY, tenant="shop", json=policy(origin.url, "shop.test", "a.shop.test"),
                                     headers={"If-Match": stale})
    assert status == 412 and body["current"] == etag.strip('"')
    status, headers2, _ = await api.call("PATCH", POLICY, tenant="shop", json={"hosts": ["shop.test", "b.shop.test"]},
                                         headers={"If-Match": etag})
    assert status == 200 and headers2["ETag"] != etag
    # The old ETag is stale now, for every kind of write.
    for method, template, body in (("PUT", POLICY, policy(origin.url, "shop.test")), ("PATCH", POLICY, {"rules": []}),
                                   ("PUT", DELIVERY, {}), ("DELETE", POLICY, None)):
        status, _, _ = await api.call(method, template, tenant="shop", json=body, headers={"If-Match": etag})
        assert status == 412, (method, template)
    # "*" needs an existing tenant.
    status, _, _ = await api.call("PUT", POLICY, tenant="blog", json=policy(origin.url, "blog.test"), headers={"If-Match": "*"})
    assert status == 412
    status, _, _ = await api.call("PUT", POLICY, tenant="shop", json=policy(origin.url, "shop.test"), headers={"If-Match": "*"})
    assert status == 200


async def test_patch_is_a_json_merge_patch_on_the_file(start, origin, tmp_path):
    edge = await start(policies={"shop": policy(origin.url, "shop.test", rules=[{"match": {"path_prefix": "/a/"}, "bypass": True}],
                                                cache={"strip_set_cookie": True})})
    api = edge.api
    status, _, body = await api.call("PATCH", POLICY, tenant="shop",
                                     json={"cache": {"strip_set_cookie": None, "heuristic_max": 60}, "rules": []},
                                     headers={"Content-Type": "application/merge-patch+json"})
    assert status == 200
    stored = json.loads((tmp_path / "policies" / "shop.json").read_text())
    assert stored["cache"] == {"heuristic_max": 60} and stored["rules"] == []
    served = edge.node.state.policies.current.get("shop")
    assert served.version == body["version"] and served.cache.heuristic_max == 60
    assert (await api.call("PATCH", POLICY, tenant="ghost", json={"rules": []}))[0] == 404


async def test_put_delivery_replaces_only_that_section(start, origin, tmp_path):
    edge = await start()
    api = edge.api
    status, _, body = await api.call("PUT", DELIVERY, tenant="shop", json={"allow_countries": ["DE"], "unknown": "deny"})
    assert status == 200
    stored = json.loads((tmp_path / "policies" / "shop.json").read_text())
    assert stored == policy(origin.url, "shop.test", delivery={"allow_countries": ["DE"], "unknown": "deny"})
    status, _, body = await api.call("GET", POLICY, tenant="shop")
    assert body["delivery"]["allow_countries"] == ["DE"]
    status, _, body = await api.call("PUT", DELIVERY, tenant="shop", json={"allow_countries": ["XY"], "color": 1})
    assert status == 422
    assert {d["field"] for d in body["details"]} == {"delivery.allow_countries[0]", "delivery.color"}
    assert (await api.call("PUT", DELIVERY, tenant="ghost", json={}))[0] == 404


async def test_invalid_policies_are_refused_whole_with_every_error(start, origin, tmp_path):
    edge = await start()
    api = edge.api
    path = tmp_path / "policies" / "shop.json"
    before = path.read_bytes()
    version = edge.node.state.policies.current.get("shop").version
    bad = {"hosts": [], "origins": [{"url": "ftp://x"}], "rules": [{"match": {}, "edge_ttl": {"override": -1}}], "colour": 1}
    status, _, body = await api.call("PUT", POLICY, tenant="shop", json=bad)
    assert status == 422
    fields = {d["field"] for d in body["details"]}
    assert {"hosts", "origins[0].url", "rules[0].edge_ttl.override", "colour"} <= fields
    assert all(d["message"].startswith("expected ") for d in body["details"])
    status, _, body = await api.call("PATCH", POLICY, tenant="shop", json={"origins": None})
    assert status == 422 and [d["field"] for d in body["details"]] == ["origins"]
    # Another tenant's host: the operator is told whose, a tenant token is not.
    status, _, body = await api.call("PUT", POLICY, tenant="shop", json=policy(origin.url, "shop.test", "news.test"))
    assert status == 422 and body["details"][0]["field"] == "hosts[1]" and '"news"' in body["details"][0]["message"]
    # A tenant token may not change its hosts at all (a wildcard would take
    # every unclaimed host), and is not told who holds one.
    status, _, body = await api.call("PUT", POLICY, tenant="shop", token=SHOP, json=policy(origin.url, "news.test"))
    assert status == 403 and body["details"][0]["field"] == "hosts"
    assert "news" not in json.dumps(body).replace("news.test", "")
    assert path.read_bytes() == before
    assert edge.node.state.policies.current.get("shop").version == version


async def test_bodies_malformed_too_large_or_with_repeated_keys(start, origin):
    edge = await start()
    api = edge.api
    for data in (b"{", b"", b"\xff\xfe", b'{"hosts": NaN}', b"[" * 100_000):
        status, _, body = await api.call("PUT", POLICY, tenant="shop", data=data,
                                         headers={"Content-Type": "application/json"})
        assert status == 400, data[:10]
        assert body["details"] and body["details"][0]["field"].startswith("body")
    big = b'{"hosts": ["' + b"a" * (1 << 20) + b'"]}'
    status, _, body = await api.call("PUT", POLICY, tenant="shop", data=big, headers={"Content-Type": "application/json"})
    assert status == 413
    status, _, body = await api.call("PUT", POLICY, tenant="shop",
                                     data=b'{"hosts": ["a.test"], "hosts": ["b.test"], "origins": []}',
                                     headers={"Content-Type": "application/json"})
    assert status == 422 and body["details"][0]["field"] == "hosts"


async def test_chunked_bodies_over_the_limit_get_413(start):
    edge = await start()

    async def chunks():
        for _ in range(20):
            yield b" " * 65536

    status, _, body = await edge.api.call("PUT", POLICY, tenant="shop", data=chunks(),
                                          headers={"Content-Type": "application/json"})
    assert status == 413


async def test_delete_removes_the_tenant_everywhere(start, client, tmp_path):
    edge = await start()
    api = edge.api
    assert (await hit(client, edge, "news.test"))[0] == 200
    status, _, body = await api.call("DELETE", POLICY, tenant="news")
    assert status == 200 and body["deleted"] is True
    assert not (tmp_path / "policies" / "news.json").exists()
    assert (await hit(client, edge, "news.test"))[0] == 421
    assert (await api.call("DELETE", POLICY, tenant="news"))[0] == 404
    assert (await api.call("GET", POLICY, tenant="news"))[0] == 404


async def test_a_node_reading_one_policy_file_keeps_it_read_only(origin, make_edge, client):
    edge = await make_edge(quick_origin=origin.url, admin=admin_config())
    api = Api(client, f"http://127.0.0.1:{edge.node.admin.port}", OpenApiCheck())
    status, _, body = await api.call("GET", POLICY, tenant="default")
    assert status == 200 and body["hosts"] == ["*"]
    for method, template in (("PUT", POLICY), ("PATCH", POLICY), ("PUT", DELIVERY), ("DELETE", POLICY)):
        status, _, body = await api.call(method, template, tenant="default", json={"rules": []})
        assert status == 409, method
        assert "read-only" in body["error"]


async def test_unknown_routes_and_methods_answer_json(start):
    edge = await start()
    async with aiohttp.ClientSession() as s:
        base = f"http://127.0.0.1:{edge.node.admin.port}"
        async with s.get(base + "/nope") as r:
            assert r.status == 404 and (await r.json())["error"]
        async with s.post(base + "/v1/tenants", headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
            assert r.status == 405 and (await r.json())["error"] and "GET" in r.headers["Allow"]


async def test_an_internal_error_is_a_json_500_without_a_traceback(start, monkeypatch, caplog):
    edge = await start()

    def boom(*args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(admin_app, "to_data", boom)
    with caplog.at_level(logging.ERROR, logger="edge.admin"):
        status, _, body = await edge.api.call("GET", POLICY, tenant="shop")
    assert status == 500 and "secret" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    assert "secret detail" in caplog.text


# --- audit --------------------------------------------------------------------------------


async def test_every_change_is_audited_without_the_token(start, origin, tmp_path):
    audit = tmp_path / "audit.jsonl"
    edge = await start(admin=admin_config(audit_log=audit))
    api = edge.api
    await api.call("GET", "/v1/tenants")  # reads are not audited
    await api.call("PUT", POLICY, tenant="blog", json=policy(origin.url, "blog.test"))
    await api.call("PUT", POLICY, tenant="blog", json={"hosts": []})
    await api.call("PATCH", POLICY, tenant="news", token=SHOP, json={})
    await api.call("DELETE", POLICY, tenant="blog", token="guess")
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(e["method"], e["tenant"], e["status"]) for e in lines] == [
        ("PUT", "blog", 201), ("PUT", "blog", 422), ("PATCH", "news", 403), ("DELETE", "blog", 401)]
    import hashlib

    assert lines[0]["token"] == hashlib.sha256(OPERATOR.encode()).hexdigest()[:8]
    assert lines[0]["scope"] == "*" and lines[2]["scope"] == "shop" and lines[3]["token"] == "-"
    assert lines[0]["summary"]["version"] and lines[0]["summary"]["created"] is True
    assert lines[0]["path"] == "/v1/tenants/blog/policy" and lines[0]["time"].endswith("+00:00")
    text = audit.read_text()
    assert OPERATOR not in text and SHOP not in text and "guess" not in text


async def test_without_an_audit_file_the_trail_goes_to_the_edge_audit_logger(start, origin, caplog):
    edge = await start()
    with caplog.at_level(logging.INFO, logger="edge.audit"):
        await edge.api.call("PATCH", POLICY, tenant="shop", json={"rules": []})
    (record,) = [r for r in caplog.records if r.name == "edge.audit"]
    entry = json.loads(record.getMessage())
    assert entry["method"] == "PATCH" and entry["status"] == 200


# --- metrics and stats -----------------------------------------------------------------------


async def test_metrics_and_stats(start, client, origin):
    # Counters live as long as the process: a tenant no other test uses.
    edge = await start(policies={"metered": policy(origin.url, "metered.test")})
    for _ in range(3):
        await hit(client, edge, "metered.test")  # a miss, then hits
    await hit(client, edge, "nobody.test")  # 421
    await edge.store.drain()
    status, headers, text = await edge.api.call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'edge_requests_total{cache="miss",status="2xx",tenant="metered"} 1.0' in text
    assert 'edge_requests_total{cache="hit",status="2xx",tenant="metered"} 2.0' in text
    assert 'edge_requests_total{cache="none",status="4xx",tenant="-"}' in text
    assert 'edge_response_bytes_total{tenant="metered"} 15.0' in text  # 3 x "hello"
    assert 'edge_origin_duration_seconds_count{tenant="metered"} 1.0' in text
    assert 'edge_cache_entries{tier="memory"}' in text and 'edge_cache_bytes{tier="disk"}' in text
    assert "edge_delivery_decisions_total" in text and "edge_worker_info" in text

    status, _, body = await edge.api.call("GET", "/v1/stats")
    assert status == 200
    assert body["requests"]["metered"] == 3
    assert body["tiers"]["memory"]["entries"] == 1 and body["tiers"]["disk"]["entries"] == 1
    assert body["policies"] == {"metered": edge.node.state.policies.current.get("metered").version}
    assert body["uptime_seconds"] >= 0 and body["worker"] == os.getpid()
    assert [w["worker"] for w in body["workers"]] == [os.getpid()]


async def test_the_admin_listener_is_not_the_public_one(start, client):
    edge = await start()
    async with client.get(edge.url + "/healthz", headers={"Host": "shop.test"}) as r:
        assert "edge" in r.headers.get("Cache-Status", "")  # the public port proxies; it has no admin routes
    assert edge.node.admin.port != edge.port


async def test_tokens_file_is_reread_on_sighup(start, tmp_path):
    import hashlib

    file = tmp_path / "tokens.toml"
    file.write_text(f'tokens = [{{ hash = "sha256:{hashlib.sha256(b"first-token").hexdigest()}", tenant = "*" }}]\n')
    edge = await start(admin=admin_config(tokens=(), tokens_file=file))
    assert (await edge.api.call("GET", "/v1/tenants", token="first-token"))[0] == 200
    file.write_text(f'tokens = [{{ hash = "sha256:{hashlib.sha256(b"second-token").hexdigest()}", tenant = "shop" }}]\n')
    edge.node.hangup()
    assert (await edge.api.call("GET", "/v1/tenants", token="first-token"))[0] == 401
    assert (await edge.api.call("GET", "/v1/tenants", token="second-token"))[0] == 200
    file.write_text("tokens = 3\n")
    edge.node.hangup()  # a broken file keeps the tokens in force
    assert (await edge.api.call("GET", "/v1/tenants", token="second-token"))[0] == 200


async def test_concurrent_writes_are_serialised(start, origin):
    edge = await start()
    api = edge.api
    _, headers, _ = await api.call("GET", POLICY, tenant="shop")
    etag = headers["ETag"]
    results = await asyncio.gather(*(
        api.call("PUT", POLICY, tenant="shop", json=policy(origin.url, "shop.test", f"n{i}.shop.test"),
                 headers={"If-Match": etag})
        for i in range(5)))
    assert sorted(r[0] for r in results) == [200, 412, 412, 412, 412]
