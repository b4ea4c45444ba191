"""``edge serve`` refusing to start: a non-zero exit status, one message
that names what is wrong, no traceback, nothing left listening."""
from __future__ import annotations

import socket
import sys

import pytest

from .support import REPO, port_is_free


def _problems(node, status: int, must_name: list[str]) -> list[str]:
    problems = []
    if status == 0:
        problems.append("exit status 0 (a service manager would see a clean stop, not a failure)")
    for text in must_name:
        if text.lower() not in node.stderr.lower():
            problems.append(f"stderr does not name {text!r}")
    if "Traceback" in node.stderr:
        problems.append(f"{node.stderr.count('Traceback')} traceback(s) on stderr")
    if "listening on" in node.stdout:
        problems.append("the banner claims the node is listening")
    return problems


@pytest.mark.parametrize(
    ("args", "must_name"),
    [
        (["--policy", "rules.json"], ["--policy needs --origin"]),
        (["--config", "edge.toml", "--origin", "ORIGIN"], ["--config cannot be combined"]),
        (["--origin", "ftp://files.example"], ["--origin", "ftp://files.example"]),
        (["--origin", "ORIGIN", "--workers", "0"], ["--workers"]),
        (["--origin", "ORIGIN", "--memory", "lots"], ["--memory", "lots"]),
        (["--origin", "ORIGIN", "--cache-size", "huge"], ["--cache-size", "huge"]),
        (["--origin", "ORIGIN", "--policy", "missing.json"], ["missing.json"]),
        (["--config", "missing.toml"], ["missing.toml"]),
    ],
    ids=["policy-without-origin", "config-with-origin", "origin-not-http", "workers-0",
         "memory-size", "cache-size", "policy-file-missing", "config-file-missing"],
)
def test_bad_command_line_is_refused(run_edge, upstream, port, tmp_path, args, must_name):
    (tmp_path / "rules.json").write_text('{"rules": []}')
    (tmp_path / "policies").mkdir()
    (tmp_path / "edge.toml").write_text('[policies]\ndirectory = "policies"\n')
    argv = [upstream.url if a == "ORIGIN" else a for a in args]

    node = run_edge(*argv, "--listen", f"127.0.0.1:{port}", cwd=tmp_path, ready=False)
    status = node.wait_exit(timeout=15)

    problems = _problems(node, status, must_name)
    assert not problems, "; ".join(problems) + "\n" + node.describe()
    assert port_is_free(port)


@pytest.mark.parametrize("workers", [1, 2])
def test_busy_port_is_refused(run_edge, upstream, port, workers):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        node = run_edge("--origin", upstream.url, "--workers", str(workers), port=port, ready=False)
        status = node.wait_exit(timeout=60)

    problems = _problems(node, status, ["address already in use", str(port)])
    assert not problems, "; ".join(problems) + "\n" + node.describe()


@pytest.mark.parametrize("workers", [1, 2])
def test_unusable_cache_dir_is_refused(run_edge, upstream, port, tmp_path, workers):
    not_a_dir = tmp_path / "cache"
    not_a_dir.write_text("a file where the cache directory should be\n")

    node = run_edge("--origin", upstream.url, "--workers", str(workers), "--cache-dir", str(not_a_dir),
                    port=port, ready=False)
    status = node.wait_exit(timeout=60)

    problems = _problems(node, status, [str(not_a_dir)])
    if "cannot listen" in node.stderr:
        problems.append("reported as a listening problem")
    assert not problems, "; ".join(problems) + "\n" + node.describe()
    assert port_is_free(port)


def test_an_aiohttp_without_an_internal_the_node_relies_on_is_refused(run_edge, upstream, port):
    """Rather than run without its slow-client deadlines: the command is
    ``edge serve`` on an aiohttp that lost one internal the adapter reads."""
    lost = ("import sys; from aiohttp import web; del web.RequestHandler._request_in_progress; "
            "from edge.cli import main; sys.exit(main(sys.argv[1:]))")
    node = run_edge("--origin", upstream.url, port=port, ready=False, command=[sys.executable, "-c", lost],
                    env={"PYTHONPATH": str(REPO)})
    status = node.wait_exit(timeout=60)

    problems = _problems(node, status, ["RequestHandler._request_in_progress", "install aiohttp 3.14"])
    assert not problems, "; ".join(problems) + "\n" + node.describe()
    assert port_is_free(port)
