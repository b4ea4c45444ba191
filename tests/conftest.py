"""Shared fixtures: a programmable real origin, and the edge node started
the way production starts it (edge.app.Node), both on loopback."""
from __future__ import annotations

import asyncio
import inspect
import json
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from edge.app import Node
from edge.cache.key import SEP, tenant_prefix
from edge.cache.store import Hit
from edge.config import default_config
from edge.config_tls import ListenAddress
from edge.policy.sources import DirectorySource, FileSource
from tests import acme_support
from tests.origin_support import Origin


@pytest.fixture
async def origin():
    """A real origin on this test's loop (tests.origin_support), empty: tests add routes."""
    o = Origin()
    await o.start()
    yield o
    await o.stop()


class Edge:
    def __init__(self, node: Node) -> None:
        self.node = node
        host, port = node.addresses[0]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @property
    def store(self):
        return self.node.state.store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def make_edge(tmp_path: Path):
    """Start an edge: ``await make_edge(policies={"shop": {...}})`` writes a
    policies directory, or ``await make_edge(quick_origin=url, policy=...)``
    runs quick mode. Extra keyword arguments replace node config fields."""
    nodes: list[Node] = []

    async def start(
        *,
        policies: dict[str, dict] | None = None,
        quick_origin: str | None = None,
        policy: dict | None = None,
        disk: bool = True,
        cache: dict | None = None,
        **config_changes,
    ) -> Edge:
        import dataclasses

        config = default_config()
        cache_cfg = config.cache
        if disk:
            cache_cfg = dataclasses.replace(cache_cfg, disk_path=tmp_path / "cache")
        if cache:
            cache_cfg = dataclasses.replace(cache_cfg, **cache)
        config_changes.setdefault("listen", (ListenAddress("127.0.0.1", 0),))
        config = dataclasses.replace(
            config,
            cache=cache_cfg,
            log=dataclasses.replace(config.log, access=False),
            **config_changes,
        )
        if policies is not None:
            pdir = tmp_path / "policies"
            pdir.mkdir(exist_ok=True)
            for tenant, data in policies.items():
                (pdir / f"{tenant}.json").write_text(json.dumps(data))
            source = DirectorySource(pdir)
        else:
            path = None
            if policy is not None:
                path = tmp_path / "quick.json"
                path.write_text(json.dumps(policy))
            source = FileSource(path, tenant="default", quick_origin=quick_origin)
        source.load(origin_client_certificate=config.origin_tls.enabled)  # as edge serve does
        node = Node(config, source)
        await node.start()
        nodes.append(node)
        return Edge(node)

    yield start
    for node in nodes:
        await node.stop()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory):
    """A real ACME CA on loopback (tests.acme_support), one per test module;
    it validates HTTP-01 on ``pebble.http_port``, where the node must listen."""
    if not acme_support.installed():
        pytest.fail("Debian's pebble is not installed (the README's test command installs it: apt-get install pebble)")
    ca = acme_support.Pebble(tmp_path_factory.mktemp("pebble"), http_port=acme_support.free_port()).start()
    yield ca
    ca.stop()


@pytest.fixture
async def client():
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def raw_request(port: int, data: bytes, host: str = "127.0.0.1", read_until_close: bool = True) -> bytes:
    """Send bytes exactly as given (for malformed requests) and read the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    try:
        if read_until_close:
            return await asyncio.wait_for(reader.read(), 10)
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` is true (awaited when it is awaitable: a
    request, say); fail naming ``what`` after ``timeout`` seconds (a bound,
    not a measure)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                if value:
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {timeout:g} s: {what}")


def stored(edge: Edge, path: str, tenant: str = "default") -> Hit | None:
    """What the memory tier holds for ``path`` (any host and query of the
    tenant), or None: to wait for a background store to land."""
    lo = tenant_prefix(tenant)
    for key in edge.store.memory.range_keys(lo, lo + "\U0010ffff"):
        if key.split(SEP)[2] == path:
            hit = edge.store.get_now(key)
            if hit is not None and hit.body is not None:
                return hit
    return None


def stored_field(edge: Edge, path: str, name: str, tenant: str = "default") -> str:
    """A header field of what the memory tier holds for ``path`` ("" when none)."""
    hit = stored(edge, path, tenant)
    return "" if hit is None else dict(hit.meta.headers).get(name, "")


def on_disk(edge: Edge) -> int:
    """Entries the disk tier has committed (a streamed fill commits just
    after the client got its last byte)."""
    return sum(1 for k in edge.store.disk.cache.iterkeys() if k.startswith("m\0"))
