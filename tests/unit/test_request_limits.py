"""Request limits: the policy section, the filter's verdicts, the concurrency
slots; the slow-client deadlines' settings and body reader."""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from edge.config import ConfigError, Timeouts, default_config, load_config
from edge.filters.request_limits import ClientSlots, RequestLimitFilter, body_limit, share_of
from edge.http import slow
from edge.http.slow import BodyTimeout, BodyTimeouts, read_body, timeout_response
from edge.observe.metrics import REGISTRY
from edge.policy.sections.request_limits import KEYS, RequestLimits, parse_request_limits, request_limits_data
from edge.schema.check import Check

WHERE = "filters.request_limits"


def parse(section: object) -> tuple[RequestLimits, list[str]]:
    """The section as the policy parser hands it over, and the error messages."""
    c = Check("shop.json", KEYS)
    o = c.object(section, WHERE, "request_limits")
    return parse_request_limits(c, o, WHERE), [str(e) for e in c.errors]


# --- the policy section ----------------------------------------------------------------


def test_defaults():
    limits, errors = parse({})
    assert errors == []
    assert limits == RequestLimits()
    assert limits.mode == "block" and limits.active
    assert limits.methods == ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    assert (limits.max_url_length, limits.max_query_length, limits.max_headers, limits.max_header_bytes) == (
        8192, 4096, 100, 32768)
    assert limits.max_body_size is None and limits.max_concurrent == 256 and limits.origin_share == 0.25


GOOD = [
    ("mode log", {"mode": "log"}, "mode", "log"),
    ("mode off", {"mode": "off"}, "active", False),
    ("methods kept in order, once", {"methods": ["POST", "GET", "POST"]}, "methods", ("POST", "GET")),
    ("custom method", {"methods": ["GET", "PROPFIND"]}, "allow", "GET, PROPFIND"),
    ("url length", {"max_url_length": 2048}, "max_url_length", 2048),
    ("no query at all", {"max_query_length": 0}, "max_query_length", 0),
    ("header count", {"max_headers": 20}, "max_headers", 20),
    ("header bytes as a size", {"max_header_bytes": "16KiB"}, "max_header_bytes", 16384),
    ("body size with unit", {"max_body_size": "10MiB"}, "max_body_size", 10 * 2**20),
    ("body size in bytes", {"max_body_size": 1000}, "max_body_size", 1000),
    ("body size null: the node's", {"max_body_size": None}, "max_body_size", None),
    ("concurrency off", {"max_concurrent": 0}, "max_concurrent", 0),
    ("origin share", {"origin_share": 0.5}, "origin_share", 0.5),
    ("origin share bound off", {"origin_share": 1}, "origin_share", 1.0),
]


@pytest.mark.parametrize(("name", "section", "attr", "value"), GOOD, ids=[g[0] for g in GOOD])
def test_good_values(name, section, attr, value):
    limits, errors = parse(section)
    assert errors == []
    assert getattr(limits, attr) == value


METHOD = 'expected a method name in upper case such as "GET" (CONNECT, TRACE and TRACK are always refused)'
BAD = [
    ("mode", {"mode": "deny"}, 'mode: expected "block", "log" or "off", found "deny"'),
    ("methods not a list", {"methods": "GET"}, 'methods: expected a non-empty list of at most 64 methods, found "GET"'),
    ("methods empty", {"methods": []}, "methods: expected a non-empty list of at most 64 methods, found []"),
    ("method lower case", {"methods": ["GET", "post"]}, f'methods[1]: {METHOD}, found "post"'),
    ("method TRACE", {"methods": ["TRACE"]}, f'methods[0]: {METHOD}, found "TRACE"'),
    ("method number", {"methods": [1]}, f"methods[0]: {METHOD}, found 1"),
    ("too many methods", {"methods": [f"M{i}" for i in range(65)]}, "methods: expected a non-empty list of at most 64 methods, found ["),
    ("url length 0", {"max_url_length": 0}, "max_url_length: expected an integer number of bytes 1..1048576, found 0"),
    ("url length string", {"max_url_length": "8k"}, 'max_url_length: expected an integer number of bytes 1..1048576, found "8k"'),
    ("query negative", {"max_query_length": -1}, "max_query_length: expected an integer number of bytes 0..1048576, found -1"),
    ("headers bool", {"max_headers": True}, "max_headers: expected an integer 1..10000, found true"),
    ("header bytes huge", {"max_header_bytes": "1GiB"},
     'max_header_bytes: expected a size 1..16777216 bytes: an integer, or a string with a unit like "32KiB", found "1GiB"'),
    ("body size unit", {"max_body_size": "10 parsecs"}, "max_body_size: expected null (the node's limits.max_body_size) or a size"),
    ("body size 0", {"max_body_size": 0}, "max_body_size: expected null (the node's limits.max_body_size) or a size"),
    ("concurrency float", {"max_concurrent": 2.5}, "max_concurrent: expected an integer 0..1000000 (0: no limit), found 2.5"),
    ("origin share over 1", {"origin_share": 1.5},
     "origin_share: expected a number 0..1 (1: a client may hold every connection), found 1.5"),
    ("origin share string", {"origin_share": "25%"},
     'origin_share: expected a number 0..1 (1: a client may hold every connection), found "25%"'),
    ("unknown key", {"max_url": 10}, 'max_url: expected a known key (did you mean "max_url_length"?), found an unknown key'),
]


@pytest.mark.parametrize(("name", "section", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_named_precisely(name, section, message):
    limits, errors = parse(section)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"shop.json: {WHERE}.{message}"), errors[0]


def test_every_error_of_a_section_is_reported():
    _, errors = parse({"mode": 1, "max_headers": 0, "max_concurrent": -5})
    assert [e.split(": ")[1] for e in errors] == [f"{WHERE}.mode", f"{WHERE}.max_headers", f"{WHERE}.max_concurrent"]


def test_not_an_object():
    limits, errors = parse(["GET"])
    assert limits == RequestLimits()
    assert errors == [f'shop.json: {WHERE}: expected an object, found ["GET"]']


def test_data_round_trips():
    section = {"mode": "log", "methods": ["GET", "HEAD"], "max_url_length": 100, "max_query_length": 10,
               "max_headers": 5, "max_header_bytes": 999, "max_body_size": 4096, "max_concurrent": 3,
               "origin_share": 0.5}
    limits, errors = parse(section)
    assert errors == []
    assert request_limits_data(limits) == section
    assert parse(request_limits_data(limits))[0] == limits


@pytest.mark.parametrize(("tenant", "node", "limit"), [(None, 1000, 1000), (10, 1000, 10), (5000, 1000, 1000)])
def test_body_limit_never_exceeds_the_node(tenant, node, limit):
    assert body_limit(RequestLimits(max_body_size=tenant), node) == limit


# --- the filter ---------------------------------------------------------------------


def policy(tenant: str = "shop", pools: tuple[int, ...] = (100,), **section):
    """A tenant with origins of ``pools`` connections each."""
    return SimpleNamespace(tenant=tenant, filters=SimpleNamespace(request_limits=RequestLimits(**section)),
                           origins=tuple(SimpleNamespace(max_connections=n) for n in pools))


def ctx(peer: str | None = "192.0.2.1", allowlisted: bool = False):
    return SimpleNamespace(peer=peer, path="/", allowlisted=allowlisted, slot=None)


def request(method: str = "GET", target: str = "/", headers: dict | None = None):
    return make_mocked_request(method, target, headers={"Host": "shop.example", **(headers or {})})


def many(n: int) -> dict:
    return {f"X-H{i}": "1" for i in range(n)}


# (name, policy section, method, target, extra headers, expected (status, detail) or None)
VERDICTS = [
    ("plain GET passes", {}, "GET", "/a?b=c", {}, None),
    ("method not listed", {"methods": ["GET", "HEAD"]}, "POST", "/", {}, (405, "methods")),
    ("custom method listed", {"methods": ["PROPFIND"]}, "PROPFIND", "/", {}, None),
    ("target at the limit", {"max_url_length": 10}, "GET", "/123456789", {}, None),
    ("target over the limit", {"max_url_length": 10}, "GET", "/1234567890", {}, (414, "max_url_length")),
    ("non-ASCII target counted in bytes", {"max_url_length": 4}, "GET", "/\u00e4\u00e4", {}, (414, "max_url_length")),
    ("query at the limit", {"max_query_length": 3}, "GET", "/path?abc", {}, None),
    ("query over the limit", {"max_query_length": 3}, "GET", "/p?abcd", {}, (414, "max_query_length")),
    ("long path without query", {"max_query_length": 3}, "GET", "/a-long-path", {}, None),
    ("no query allowed", {"max_query_length": 0}, "GET", "/p?", {}, None),
    ("no query allowed, one given", {"max_query_length": 0}, "GET", "/p?a", {}, (414, "max_query_length")),
    ("header count at the limit", {"max_headers": 5}, "GET", "/", many(4), None),
    ("header count over", {"max_headers": 5}, "GET", "/", many(5), (431, "max_headers")),
    ("header bytes at the limit", {"max_header_bytes": 4 + 12 + 3 + 9}, "GET", "/", {"X-A": "123456789"}, None),
    ("header bytes over", {"max_header_bytes": 4 + 12 + 3 + 9 - 1}, "GET", "/", {"X-A": "123456789"},
     (431, "max_header_bytes")),
    ("declared body too large", {"max_body_size": 100}, "POST", "/", {"Content-Length": "101"}, (413, "max_body_size")),
    ("declared body at the limit", {"max_body_size": 100}, "POST", "/", {"Content-Length": "100"}, None),
    ("first broken rule wins", {"methods": ["GET"], "max_url_length": 1}, "POST", "/long", {}, (405, "methods")),
    ("off mode passes everything", {"mode": "off", "methods": ["GET"]}, "DELETE", "/", {}, None),
    ("log mode passes", {"mode": "log", "max_headers": 1}, "GET", "/", many(3), None),
]


@pytest.mark.parametrize(("name", "section", "method", "target", "headers", "expected"), VERDICTS,
                         ids=[v[0] for v in VERDICTS])
def test_verdicts(name, section, method, target, headers, expected):
    verdict = RequestLimitFilter().check(request(method, target, headers), ctx(), policy(**section))
    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert (verdict.status, verdict.detail) == (expected[0], f"filter.request_limits.{expected[1]}")


def test_405_lists_the_allowed_methods():
    verdict = RequestLimitFilter().check(request("DELETE"), ctx(), policy(methods=["GET", "HEAD", "POST"]))
    assert verdict is not None and verdict.headers == {"Allow": "GET, HEAD, POST"}


def decisions(tenant: str, rule: str, action: str) -> float:
    labels = {"tenant": tenant, "filter": "request_limits", "rule": rule, "action": action}
    return REGISTRY.get_sample_value("edge_filter_decisions_total", labels) or 0.0


def test_refusals_are_counted_and_logged_without_the_address(caplog):
    caplog.set_level("INFO", logger="edge.filters")
    before = decisions("counted", "max_headers", "log"), decisions("counted", "max_headers", "block")
    f = RequestLimitFilter()
    assert f.check(request(headers=many(3)), ctx("203.0.113.77"), policy("counted", mode="log", max_headers=2)) is None
    assert f.check(request(headers=many(3)), ctx("203.0.113.77"), policy("counted", max_headers=2)) is not None
    after = decisions("counted", "max_headers", "log"), decisions("counted", "max_headers", "block")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    assert "would refuse (log mode)" in caplog.text and "203.0.113.0/24" in caplog.text
    assert "203.0.113.77" not in caplog.text


# --- concurrency ----------------------------------------------------------------------


async def test_concurrency_limit_per_client_and_tenant():
    f = RequestLimitFilter()
    p = policy(max_concurrent=2)
    held = [ctx("192.0.2.1"), ctx("192.0.2.1")]
    for c in held:
        assert await f.take_slot(c, p, 0) is None and c.slot is not None
    third = ctx("192.0.2.1")
    verdict = await f.take_slot(third, p, 5)
    assert verdict is not None and (verdict.status, verdict.headers) == (429, {"Retry-After": "1"})
    assert verdict.detail == "filter.request_limits.max_concurrent"  # at once: no wait for this one
    assert third.slot is None  # nothing to give back
    # Another client, and the same client at another tenant, have their own slots.
    assert await f.take_slot(ctx("192.0.2.2"), p, 0) is None
    assert await f.take_slot(ctx("192.0.2.1"), policy("other", max_concurrent=2), 0) is None
    # A finished request frees its slot.
    f.slots.release(held[0].slot)
    assert await f.take_slot(ctx("192.0.2.1"), p, 0) is None


async def test_ipv6_clients_share_their_64():
    f = RequestLimitFilter()
    p = policy(max_concurrent=1)
    assert await f.take_slot(ctx("2001:db8:1:2::1"), p, 0) is None
    assert (await f.take_slot(ctx("2001:db8:1:2:ffff::9"), p, 0)).status == 429
    assert await f.take_slot(ctx("2001:db8:1:3::1"), p, 0) is None


@pytest.mark.parametrize(("name", "c", "section"), [
    ("allow-listed client", ctx(allowlisted=True), {"max_concurrent": 1}),
    ("no address", ctx(peer=None), {"max_concurrent": 1}),
    ("no limits", ctx(), {"max_concurrent": 0, "origin_share": 1}),
    ("off", ctx(), {"mode": "off", "max_concurrent": 1}),
])
async def test_not_counted(name, c, section):
    f = RequestLimitFilter()
    for _ in range(3):
        assert await f.take_slot(c, policy(pools=(1,), **section), 0) is None
    assert c.slot is None and len(f.slots) == 0


async def test_log_mode_lets_the_excess_through_without_a_slot_or_a_wait():
    f = RequestLimitFilter()
    for section in ({"max_concurrent": 1}, {"max_concurrent": 0, "origin_share": 0.1}):
        p = policy(pools=(4,), mode="log", **section)
        first, second = ctx(), ctx()
        assert await f.take_slot(first, p, 0) is None and first.slot is not None
        async with asyncio.timeout(5):  # a guard: log mode never waits
            assert await f.take_slot(second, p, 60) is None and second.slot is None
        f.slots.release(first.slot)


async def test_refused_request_takes_no_slot():
    f = RequestLimitFilter()
    c = ctx()
    assert f.check(request("DELETE"), c, policy(methods=["GET"])) is not None
    assert c.slot is None and len(f.slots) == 0


# (name, origin_share, the tenant's origin pools, origin-bound requests one client may have at once; 0: no bound)
SHARES = [
    ("default: a quarter of the pool", 0.25, (100,), 25),
    ("rounded down", 0.25, (10,), 2),
    ("at least one", 0.25, (3,), 1),
    ("the smallest pool of the tenant's origins", 0.25, (100, 8), 2),
    ("a share of 1: no bound of its own", 1.0, (100,), 0),
    ("a share of 0: one each", 0.0, (100,), 1),
]


@pytest.mark.parametrize(("name", "share", "pools", "expected"), SHARES, ids=[s[0] for s in SHARES])
def test_origin_share(name, share, pools, expected):
    p = policy(pools=pools, origin_share=share)
    assert share_of(p.filters.request_limits, p.origins) == expected


async def test_a_client_over_its_origin_share_waits_for_its_own_request_to_end():
    f = RequestLimitFilter()
    p = policy(pools=(8,), max_concurrent=4)  # a share of 2
    held = [ctx(), ctx()]
    for c in held:
        assert await f.take_slot(c, p, 0) is None
    # Another client is not held up by this one's share.
    assert await f.take_slot(ctx("192.0.2.9"), p, 0) is None
    third = ctx()
    waiting = asyncio.ensure_future(f.take_slot(third, p, 60))
    await asyncio.sleep(0)
    assert not waiting.done() and f.slots.count(third_key := ("shop", "192.0.2.1")) == 2
    f.slots.release(held[0].slot)  # handed over to the waiting request
    async with asyncio.timeout(5):
        assert await waiting is None and third.slot == third_key
    assert f.slots.count(third_key) == 2


async def test_a_wait_for_the_origin_share_is_bounded_and_counts_as_in_flight():
    f = RequestLimitFilter()
    p = policy(pools=(4,), max_concurrent=2)  # a share of 1
    first = ctx()
    assert await f.take_slot(first, p, 0) is None
    async with asyncio.timeout(5):  # a guard: the wait is 0.05 s
        verdict = await f.take_slot(ctx(), p, 0.05)
    assert (verdict.status, verdict.detail, verdict.headers) == (
        429, "filter.request_limits.origin_share", {"Retry-After": "1"})
    # One request holding and one waiting are two in flight: a third is refused at once.
    waiting = asyncio.ensure_future(f.take_slot(ctx(), p, 60))
    await asyncio.sleep(0)
    assert (await f.take_slot(ctx(), p, 60)).detail == "filter.request_limits.max_concurrent"
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    f.slots.release(first.slot)
    assert len(f.slots) == 0  # the gone waiter left nothing behind


async def test_slots_hold_memory_only_while_requests_are_in_flight():
    slots = ClientSlots()
    keys = [("shop", f"10.0.{i // 256}.{i % 256}") for i in range(1000)]
    for key in keys:
        assert await slots.acquire(key, 2, 0, 0) is None and await slots.acquire(key, 2, 0, 0) is None
        assert await slots.acquire(key, 2, 0, 0) == "max_concurrent"
    assert len(slots) == 1000 and slots.count(keys[0]) == 2
    for key in keys:
        slots.release(key)
        slots.release(key)
    assert len(slots) == 0
    slots.release(keys[0])  # a stray release neither fails nor goes below zero
    assert slots.count(keys[0]) == 0 and len(slots) == 0
    assert await slots.acquire(keys[0], 0, 1, 0) is None
    assert await slots.acquire(keys[0], 0, 1, 0) == "origin_share"  # no wait allowed
    slots.release(keys[0])
    assert len(slots) == 0


# --- [timeouts] for slow clients -----------------------------------------------------


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, require_policies=False)
    return [e.split(": ", 1)[1] for e in info.value.errors]


def test_timeouts_defaults_and_values(tmp_path):
    assert default_config().timeouts == Timeouts(75.0, 10.0, 10.0, 30.0, 300.0, 30.0, 5.0)
    path = tmp_path / "edge.toml"
    path.write_text("[timeouts]\nheader_read = 2\nbody_read = 0.5\nbody_total = 0\nsend = 0\norigin_queue = 0.5\n")
    t = load_config(path, require_policies=False).timeouts
    assert (t.header_read, t.body_read, t.body_total, t.send, t.origin_queue) == (2.0, 0.5, 0.0, 0.0, 0.5)
    assert t.send_min_rate == 1024
    path.write_text('[timeouts]\nsend_min_rate = "4KiB"\n')
    assert load_config(path, require_policies=False).timeouts.send_min_rate == 4096
    path.write_text("[timeouts]\nsend_min_rate = 0\n")
    assert load_config(path, require_policies=False).timeouts.send_min_rate == 0


RATE = 'expected bytes a second from 0 to 1073741824: an integer, or a size like "1KiB"'


@pytest.mark.parametrize(("text", "message"), [
    ("header_read = -1", "timeouts.header_read: expected a number of seconds (0: off) from 0 to 3600, found -1"),
    ('header_read = "10s"', 'timeouts.header_read: expected a number of seconds (0: off) from 0 to 3600, found "10s"'),
    ("body_read = true", "timeouts.body_read: expected a number of seconds (0: off) from 0 to 3600, found true"),
    ("body_read = inf", "timeouts.body_read: expected a number of seconds (0: off) from 0 to 3600, found inf"),
    ("body_total = 90000", "timeouts.body_total: expected a number of seconds (0: off) from 0 to 86400, found 90000"),
    ("body_total = nan", "timeouts.body_total: expected a number of seconds (0: off) from 0 to 86400, found nan"),
    ("send = -0.5", "timeouts.send: expected a number of seconds (0: off) from 0 to 3600, found -0.5"),
    ('send = "30s"', 'timeouts.send: expected a number of seconds (0: off) from 0 to 3600, found "30s"'),
    ("origin_queue = 3601", "timeouts.origin_queue: expected a number of seconds (0: no wait) from 0 to 3600, found 3601"),
    ("origin_queue = false", "timeouts.origin_queue: expected a number of seconds (0: no wait) from 0 to 3600, found false"),
    ("send_min_rate = -1", f"timeouts.send_min_rate: {RATE}, found -1"),
    ('send_min_rate = "fast"', f'timeouts.send_min_rate: {RATE}, found "fast"'),
    ("send_min_rate = 1.5", f"timeouts.send_min_rate: {RATE}, found 1.5"),
    ('send_min_rate = "2GiB"', f'timeouts.send_min_rate: {RATE}, found "2GiB"'),
    ("header_reed = 1", 'timeouts.header_reed: expected one of the keys body_read, body_total, header_read, keepalive, '
                        'origin_queue, send, send_min_rate, shutdown, found an unknown key (did you mean "header_read"?)'),
])
def test_timeouts_bad_values(tmp_path, text, message):
    assert errors_of(tmp_path, "[timeouts]\n" + text + "\n") == [message]


# --- the body reader -------------------------------------------------------------------


class _Protocol:
    _reading_paused = False
    connected = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def body_stream() -> streams.StreamReader:
    return streams.StreamReader(_Protocol(), 2**16, loop=asyncio.get_running_loop())


async def collect(content, timeouts: BodyTimeouts) -> list[bytes]:
    return [chunk async for chunk in read_body(content, timeouts)]


@pytest.mark.parametrize("timeouts", [BodyTimeouts(5, 10), BodyTimeouts(0, 0), BodyTimeouts(5, 0), BodyTimeouts(0, 10)],
                         ids=["both", "none", "idle only", "total only"])
async def test_a_prompt_body_arrives_whole(timeouts):
    content = body_stream()
    loop = asyncio.get_running_loop()
    loop.call_soon(content.feed_data, b"abc")
    loop.call_soon(content.feed_data, b"def")
    loop.call_soon(content.feed_eof)
    assert b"".join(await collect(content, timeouts)) == b"abcdef"


async def test_a_stalled_body_times_out_idle():
    content = body_stream()
    content.feed_data(b"0123456789")  # then nothing
    with pytest.raises(BodyTimeout) as info:
        await collect(content, BodyTimeouts(idle=0.05, total=60))
    assert (info.value.which, info.value.received) == ("idle", 10)
    assert not isinstance(info.value, TimeoutError)  # not to be mistaken for an origin timeout


async def test_a_trickling_body_hits_the_total():
    content = body_stream()
    loop = asyncio.get_running_loop()

    async def trickle():
        while True:
            content.feed_data(b"x")
            await asyncio.sleep(0.01)

    task = loop.create_task(trickle())
    try:
        with pytest.raises(BodyTimeout) as info:
            await collect(content, BodyTimeouts(idle=5, total=0.1))
    finally:
        task.cancel()
    assert info.value.which == "total" and info.value.received >= 1


def test_timeout_response_is_a_complete_closing_408():
    raw = timeout_response("edge-1", "header-timeout")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 408 Request Timeout"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Connection"] == "close" and fields["Cache-Status"] == "edge-1; detail=header-timeout"
    assert int(fields["Content-Length"]) == len(body) and fields["Date"].endswith(" GMT")


# --- what the send deadline reads of a connection -----------------------------------------


async def test_acknowledged_and_unsent_bytes_of_a_real_connection(monkeypatch):
    """acked() counts what the client's TCP took; where the OS reports no
    count (not Linux) it is None, and unsent() falls back to the buffer."""
    ready = asyncio.get_running_loop().create_future()

    async def serve(reader, writer):
        writer.write(b"x" * 2**22)  # more than the socket buffers take: some stays in the transport
        ready.set_result(writer.transport)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        transport = await asyncio.wait_for(ready, 10)
        await reader.readexactly(2**16)
        async with asyncio.timeout(10):
            while (taken := slow.acked(transport)) is None or taken < 2**16:
                await asyncio.sleep(0.01)
        assert taken + slow.unsent(transport) == 2**22  # every byte written is one or the other
        buffered = transport.get_write_buffer_size()
        monkeypatch.setattr(slow, "_TCP_INFO", None)
        monkeypatch.setattr(slow, "ioctl", None)
        assert slow.acked(transport) is None
        assert slow.unsent(transport) == buffered
    finally:
        writer.close()
        server.close()
