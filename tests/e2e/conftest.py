"""Fixtures for the end-to-end tests: start ``edge serve`` as users do, and
real origins for it. Every process started here is killed with its whole
process group at teardown, whatever the test did."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.origin_support import Origin

from .support import EdgeProcess, free_port


@pytest.fixture
def run_edge(tmp_path: Path):
    """``run_edge("--origin", url, port=...)`` starts ``python -m edge serve``
    with these arguments. With ``port`` given, ``--listen 127.0.0.1:PORT`` is
    added unless ``listen=False`` (the port is then only used for readiness),
    and the call waits until the node is ready (``ready=False``: don't)."""
    started: list[EdgeProcess] = []
    logdir = tmp_path / "logs"
    logdir.mkdir()

    def start(*args: str, port: int | None = None, listen: bool = True, ready: bool = True,
              env: dict[str, str] | None = None, cwd: Path | None = None,
              command: list[str] | None = None) -> EdgeProcess:
        argv = list(args)
        if port is not None and listen:
            argv += ["--listen", f"127.0.0.1:{port}"]
        proc = EdgeProcess(argv, logdir=logdir, name=f"edge{len(started)}", port=port, env=env, cwd=cwd,
                           command=command)
        started.append(proc)
        if ready and port is not None:
            proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.kill_group()
        proc.remove_own_state_dir()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def make_origin():
    origins: list[Origin] = []

    def make(tls=None) -> Origin:
        """``tls``: an ssl.SSLContext to serve https with."""
        o = Origin().start_in_thread(tls)
        origins.append(o)
        return o

    yield make
    for o in origins:
        o.close()


@pytest.fixture
def upstream(make_origin) -> Origin:
    """One real origin, empty: tests add routes."""
    return make_origin()
