"""Keys remembered as uncacheable (Varnish's hit-for-miss), over real
sockets: after an answer that could not be stored, the next misses for the
key go to the origin at once, in parallel, instead of queueing behind one
fetch; a storable answer, the end of ``cache.uncacheable_memory`` seconds
or a purge make them collapse again. Tenants and keys apart."""
from __future__ import annotations

import asyncio
import collections
import functools
import time

from aiohttp import web

from edge.cache.purge import PurgeSpec, Target
from edge.cache.purger import Purger
from tests.conftest import until as wait_until

GUARD = 20  # seconds: only against a hanging test, never a measured bound
N = 8
NO_STORE = {"Cache-Control": "no-store"}

until = functools.partial(wait_until, timeout=GUARD)


class Held:
    """An origin route that holds every request until ``gate`` is open,
    counting per (Host, path) the requests it holds at once; the answer's
    headers come from ``answer(host, path)``."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.gate = asyncio.Event()
        self.gate.set()
        self.held: collections.Counter[tuple[str, str]] = collections.Counter()

    async def __call__(self, request: web.Request) -> web.Response:
        where = (request.headers["Host"], request.path)
        self.held[where] += 1
        try:
            await self.gate.wait()
        finally:
            self.held[where] -= 1
        return web.Response(text="x", headers=self.answer(*where))


def held_route(origin, headers: dict, *paths: str) -> Held:
    route = Held(lambda host, path: route.headers)
    route.headers = headers
    for path in paths:
        origin.route(path, route)
    return route


async def get(client, url: str, host: str | None = None) -> tuple[int, str]:
    async with client.get(url, headers={"Host": host} if host else None) as r:
        await r.read()
        return r.status, r.headers["Cache-Status"]


def burst(client, url: str, n: int = N, host: str | None = None) -> list[asyncio.Future]:
    return [asyncio.ensure_future(get(client, url, host)) for _ in range(n)]


async def collapses(client, edge, route: Held, path: str, host: str = "127.0.0.1") -> list[tuple[int, str]]:
    """A burst for ``path`` with the origin held: one request reaches it,
    the others wait for that one's fetch."""
    fills = edge.node.state.pipeline.fills
    route.gate.clear()
    tasks = burst(client, edge.url + path)
    await until(lambda: route.held[(host, path)] == 1 and fills.waiting == N - 1,
                "one request at the origin, the others waiting for its fetch")
    route.gate.set()
    return await asyncio.gather(*tasks)


async def test_a_burst_after_an_unstorable_answer_reaches_the_origin_at_once(origin, make_edge, client):
    route = held_route(origin, NO_STORE, "/p")
    edge = await make_edge(quick_origin=origin.url)
    assert await get(client, edge.url + "/p") == (200, "edge; fwd=uri-miss; detail=no-store")
    route.gate.clear()
    tasks = burst(client, edge.url + "/p")
    await until(lambda: route.held[("127.0.0.1", "/p")] == N, f"all {N} requests at the origin at once")
    route.gate.set()
    assert await asyncio.gather(*tasks) == [(200, "edge; fwd=uri-miss; uncacheable; detail=no-store")] * N
    assert origin.hits["/p"] == 1 + N


async def test_a_storable_answer_makes_the_key_collapse_again(origin, make_edge, client):
    route = held_route(origin, {"Cache-Control": "private"}, "/p")
    edge = await make_edge(quick_origin=origin.url)
    await get(client, edge.url + "/p")
    assert await get(client, edge.url + "/p") == (200, "edge; fwd=uri-miss; uncacheable; detail=private")
    # Stored, and validated on every request: each burst is a miss again.
    route.headers = {"Cache-Control": "max-age=0", "ETag": '"v1"'}
    status, cache_status = await get(client, edge.url + "/p")
    assert cache_status == "edge; fwd=uri-miss; stored; ttl=0"
    answers = await collapses(client, edge, route, "/p")
    assert all(status == 200 and "uncacheable" not in cs for status, cs in answers), answers


async def test_the_memory_of_an_uncacheable_key_ends(origin, make_edge, client):
    seconds = 1.0
    route = held_route(origin, NO_STORE, "/p")
    edge = await make_edge(quick_origin=origin.url, cache={"uncacheable_memory": seconds})
    await get(client, edge.url + "/p")
    assert await get(client, edge.url + "/p") == (200, "edge; fwd=uri-miss; uncacheable; detail=no-store")
    answered = time.monotonic()  # the latest unstorable answer was remembered before this
    await until(lambda: time.monotonic() > answered + seconds, "the memory of it is over")
    answers = await collapses(client, edge, route, "/p")
    assert answers == [(200, "edge; fwd=uri-miss; detail=no-store")] * N


async def test_a_purge_forgets_it(origin, make_edge, client):
    route = held_route(origin, NO_STORE, "/p", "/other")
    edge = await make_edge(quick_origin=origin.url)
    await get(client, edge.url + "/p")
    await Purger(edge.store).apply(PurgeSpec("default", urls=(Target(None, "/other", ""),)))
    assert await get(client, edge.url + "/p") == (200, "edge; fwd=uri-miss; uncacheable; detail=no-store")
    await Purger(edge.store).apply(PurgeSpec("default", prefixes=(Target(None, "/", None),)))
    answers = await collapses(client, edge, route, "/p")
    assert answers == [(200, "edge; fwd=uri-miss; detail=no-store")] * N


async def test_tenants_and_keys_are_remembered_apart(origin, make_edge, client):
    """The same path of another tenant, and another path of the same tenant,
    still collapse while this key goes to the origin in parallel."""

    def answer(host: str, path: str) -> dict:
        return NO_STORE if (host, path) == ("a.test", "/p") else {"Cache-Control": "max-age=60"}

    route = Held(answer)
    origin.route("/p", route)
    origin.route("/q", route)
    edge = await make_edge(policies={
        "a": {"hosts": ["a.test"], "origins": [{"url": origin.url}]},
        "b": {"hosts": ["b.test"], "origins": [{"url": origin.url}]},
    })
    fills = edge.node.state.pipeline.fills
    await get(client, edge.url + "/p", "a.test")
    route.gate.clear()
    tasks = [*burst(client, edge.url + "/p", host="a.test"), *burst(client, edge.url + "/p", host="b.test"),
             *burst(client, edge.url + "/q", host="a.test")]
    await until(lambda: (route.held[("a.test", "/p")], route.held[("b.test", "/p")], route.held[("a.test", "/q")],
                         fills.waiting) == (N, 1, 1, 2 * (N - 1)),
                "a.test/p at the origin in parallel, b.test/p and a.test/q collapsed")
    route.gate.set()
    answers = await asyncio.gather(*tasks)
    assert answers[:N] == [(200, "edge; fwd=uri-miss; uncacheable; detail=no-store")] * N
    assert all(status == 200 and "uncacheable" not in cs for status, cs in answers[N:]), answers


async def test_zero_seconds_remembers_nothing(origin, make_edge, client):
    route = held_route(origin, NO_STORE, "/p")
    edge = await make_edge(quick_origin=origin.url, cache={"uncacheable_memory": 0.0})
    await get(client, edge.url + "/p")
    answers = await collapses(client, edge, route, "/p")
    assert answers == [(200, "edge; fwd=uri-miss; detail=no-store")] * N
