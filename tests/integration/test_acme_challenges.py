"""ACME HTTP-01 challenges (RFC 8555 §8.3) on the plain listener, for a
tenant with ``tls.acme``: answered before the filter chain and the cache,
from the files every worker reads, and never passed to the origin. A token
of an order in progress is answered for any host."""
from __future__ import annotations

import dataclasses
import json

import pytest

from edge.app import Node
from edge.config import PoliciesConfig, default_config
from edge.config_tls import AcmeConfig, ListenAddress
from edge.policy.sources import DirectorySource
from edge.tls.acme import acme_root
from edge.tls.store import default_root
from edge.tls.challenges import ChallengeFiles
from tests.conftest import free_port

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
ANSWER = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
PATH = "/.well-known/acme-challenge/" + TOKEN


@pytest.fixture
async def node(tmp_path, origin):
    origin.respond("/*", "from the origin", headers={"Cache-Control": "max-age=600"})
    policies = tmp_path / "policies"
    policies.mkdir()
    # Every client of "shop" is refused by its address list; "plain" does not use ACME.
    (policies / "shop.json").write_text(json.dumps({
        "hosts": ["shop.test"], "origins": [{"url": origin.url}], "tls": {"acme": True},
        "filters": {"ip_lists": {"deny": ["127.0.0.0/8"]}}}))
    (policies / "plain.json").write_text(json.dumps({"hosts": ["plain.test"], "origins": [{"url": origin.url}]}))
    config = dataclasses.replace(
        default_config(), listen=(ListenAddress("127.0.0.1", 0),), policies=PoliciesConfig(policies, 0),
        log=dataclasses.replace(default_config().log, access=False),
        # A CA nobody answers for: the orders fail, the challenges are this test's.
        acme=AcmeConfig(enabled=True, directory_url=f"https://127.0.0.1:{free_port()}/dir"))
    source = DirectorySource(policies)
    source.load()
    n = Node(config, source)
    await n.start()
    yield n
    await n.stop()


@pytest.fixture
def challenges(node, tmp_path) -> ChallengeFiles:
    files = ChallengeFiles(acme_root(default_root(tmp_path / "policies")) / "challenges")
    files.put(TOKEN, ANSWER)
    return files


async def fetch(client, node, path: str, host: str = "shop.test", method: str = "GET"):
    host_, port = node.addresses[0]
    async with client.request(method, f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as r:
        return r.status, r.headers, await r.read()


async def test_the_answer_is_served_before_the_filters_and_never_cached(client, node, challenges, origin):
    status, headers, _ = await fetch(client, node, "/page")
    assert status == 403  # the filters do refuse this client elsewhere

    for _ in range(2):
        status, headers, body = await fetch(client, node, PATH)
        assert (status, body) == (200, ANSWER.encode())
        assert headers["Cache-Control"] == "no-store"
        assert headers["Cache-Status"] == "edge; detail=acme-challenge"  # never a hit
    status, headers, body = await fetch(client, node, PATH, method="HEAD")
    assert (status, body) == (200, b"")

    challenges.remove(TOKEN)  # the authorization is decided
    status, headers, _ = await fetch(client, node, PATH)
    assert status == 404 and "detail=acme-challenge" in headers["Cache-Status"]
    assert not [r for r in origin.requests if r["path"].startswith("/.well-known/")]


@pytest.mark.parametrize("path", [
    "/.well-known/acme-challenge/unknownunknownunknownunknown",
    "/.well-known/acme-challenge/",
    "/.well-known/acme-challenge/short",
    "/.well-known/acme-challenge/" + TOKEN + "/more",
    "/.well-known/acme-challenge/%2e%2e%2fpolicies%2fshop.json",
    "/.well-known/acme-challenge/..%2F..%2Fpolicies%2Fshop.json",
], ids=["unknown", "empty", "too-short", "sub-path", "encoded-dots", "encoded-slashes"])
async def test_any_other_challenge_path_is_404_and_not_forwarded(client, node, challenges, origin, path):
    status, headers, _ = await fetch(client, node, path)
    assert status == 404, headers
    assert not [r for r in origin.requests if "acme" in r["path"] or "policies" in r["path"]]


async def test_other_methods_are_refused(client, node, challenges, origin):
    status, headers, _ = await fetch(client, node, PATH, method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert origin.requests == []


async def test_a_tenant_without_acme_keeps_its_challenge_path_at_the_origin(client, node, challenges, origin):
    # Its own ACME client's token, which the node holds no answer for.
    own = "/.well-known/acme-challenge/" + "origin-client-token-0123456789"
    for method in ("GET", "POST"):
        status, _, body = await fetch(client, node, own, host="plain.test", method=method)
        assert (status, body) == (200, b"from the origin")


async def test_a_worker_without_the_policy_yet_answers_a_pending_token(client, node, challenges, origin):
    """The worker that placed the order may have loaded a policy this one
    has not yet: tls.acme just turned on (plain.test), or a host just added
    (new.test). The CA may ask either worker, and gets the answer."""
    for host in ("plain.test", "new.test"):
        status, headers, body = await fetch(client, node, PATH, host=host)
        assert (status, body) == (200, ANSWER.encode()), host
        assert headers["Cache-Status"] == "edge; detail=acme-challenge"
    assert origin.requests == []
    # Nothing else changes for a host that no tenant serves.
    for path, method in ((PATH, "POST"), ("/.well-known/acme-challenge/unknownunknownunknownunknown", "GET"),
                         ("/page", "GET")):
        status, _, _ = await fetch(client, node, path, host="new.test", method=method)
        assert status == 421, (path, method)
