"""The event loop the node runs on: uvloop's when it is installed, made by a
loop factory (asyncio deprecates the process-wide event loop policy), and
asyncio's own where uvloop is missing."""
from __future__ import annotations

import asyncio
import os
import sys

import pytest

from edge.cli import run

from .support import REPO


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_run_uses_uvloop_and_leaves_the_event_loop_policy_alone():
    uvloop = pytest.importorskip("uvloop")
    before = asyncio.get_event_loop_policy()
    assert run(_loop_type()) is uvloop.Loop
    assert asyncio.get_event_loop_policy() is before


def test_run_falls_back_to_asyncio_without_uvloop(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what "import uvloop" meets where it is not installed
    assert run(_loop_type()).__module__.startswith("asyncio")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_node_starts_and_serves_with_deprecation_warnings_as_errors(run_edge, upstream, port, workers):
    upstream.respond("/hello", "hello\n", headers={"Cache-Control": "max-age=60"})
    # The environment reaches the spawned workers too.
    node = run_edge("--origin", upstream.url, "--workers", workers, port=port,
                    env={"PYTHONWARNINGS": "error::DeprecationWarning"})
    r = node.get("/hello")
    assert r.status == 200 and r.body == b"hello\n", (r, node.describe())
    assert "DeprecationWarning" not in node.stderr, node.describe()


def test_the_node_serves_where_uvloop_is_missing(run_edge, upstream, port, tmp_path):
    blocked = tmp_path / "no-uvloop"
    (blocked / "uvloop").mkdir(parents=True)
    (blocked / "uvloop" / "__init__.py").write_text('raise ImportError("uvloop is not installed here")\n')
    upstream.respond("/hello", "hello\n", headers={"Cache-Control": "max-age=60"})
    node = run_edge("--origin", upstream.url, port=port, env={"PYTHONPATH": f"{blocked}{os.pathsep}{REPO}"})
    r = node.get("/hello")
    assert r.status == 200 and r.body == b"hello\n", (r, node.describe())
