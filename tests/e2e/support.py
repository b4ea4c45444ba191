"""Helpers for the end-to-end tests: the ``edge`` command as a subprocess
and a plain HTTP client (the origin is tests.origin_support's, in a
background thread).

Nothing here asserts on durations: deadlines only bound how long a test
waits for something that must eventually happen, and are generous.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
DEMO_PORT = 8081  # the built-in demo origin's fixed port; no other test may use it
STARTUP_TIMEOUT = 20.0  # an upper bound for a loaded machine, never a measurement
MiB = 1 << 20


def free_port() -> int:
    """A loopback port nobody listens on (never the demo origin's)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != DEMO_PORT:
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(predicate: Callable[[], object], *, timeout: float = 10.0, interval: float = 0.05,
               message: str | Callable[[], str] = "condition not met") -> object:
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json_atomically(path: Path, data: object) -> None:
    """How editors and deploy tools replace a file: a hidden temporary, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# --- client ------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def cache_status(self) -> str:
        return self.headers.get("Cache-Status", "")

    @property
    def request_id(self) -> str:
        return self.headers.get("X-Request-Id", "")

    @property
    def worker(self) -> int:
        """The answering process as encoded in X-Request-Id: the prefix
        before '-' starts with the pid's low 16 bits in 4 hex digits."""
        prefix = self.request_id.split("-", 1)[0]
        assert len(prefix) >= 4, f"unexpected X-Request-Id {self.request_id!r}"
        return int(prefix[:4], 16)

    @property
    def is_hit(self) -> bool:
        return "; hit" in self.cache_status

    def __repr__(self) -> str:  # readable assertion messages
        return (f"<Response {self.status} Cache-Status={self.cache_status!r} "
                f"Cache-Control={self.headers.get('Cache-Control')!r} id={self.request_id!r} "
                f"body={self.body[:80]!r}{'...' if len(self.body) > 80 else ''} ({len(self.body)} bytes)>")


def request(port: int, path: str = "/", *, method: str = "GET", host: str | None = None,
            headers: dict[str, str] | None = None, timeout: float = 15.0) -> Response:
    """One request on a new connection (so that several workers get a share)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Connection": "close"}
        if host is not None:
            h["Host"] = host
        h.update(headers or {})
        conn.request(method, path, headers=h)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


# --- the edge command --------------------------------------------------------


class EdgeProcess:
    """``python -m edge serve ARGS`` in its own process group, stdout and
    stderr in files (a pipe nobody reads could block the node)."""

    def __init__(self, args: list[str], *, logdir: Path, name: str, port: int | None,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 command: list[str] | None = None) -> None:
        """``command``: an installed ``edge`` to run instead of the checkout's."""
        self.args = [*(command or [sys.executable, "-m", "edge"]), "serve", *args]
        self.port = port
        self.out_path = logdir / f"{name}.stdout"
        self.err_path = logdir / f"{name}.stderr"
        environ = dict(os.environ)
        if command is None:
            environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH")) if p)
        else:
            environ.pop("PYTHONPATH", None)
        environ.update(env or {})
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=str(cwd or logdir), env=environ, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def state_dir(self) -> Path | None:
        """The state directory the banner names (quick and demo mode)."""
        found = re.search(r"state directory (\S+) \(", self.stdout)
        return Path(found.group(1)) if found else None

    def remove_own_state_dir(self) -> None:
        """A state directory made for the run goes at a clean stop; after SIGKILL, here."""
        if self.state_dir is not None and "removed when the node stops" in self.stdout:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def describe(self) -> str:
        return (f"command: {' '.join(self.args)}\nexit status: {self.proc.poll()}\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-5000:]}")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> str:
        """Wait for the banner on stdout and an accepting port; returns the banner line."""
        assert self.port is not None

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"edge exited before it was ready\n{self.describe()}")
            if "listening on" not in self.stdout:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_until(ready, timeout=timeout, message=lambda: f"edge did not become ready\n{self.describe()}")
        return next(line for line in self.stdout.splitlines() if "listening on" in line)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"edge did not exit\n{self.describe()}") from None

    def send(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM to the main process only, as a service manager sends it."""
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill_group(self) -> None:
        """SIGKILL to the whole process group (workers included); reaps the main process."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass

    def get(self, path: str = "/", **kwargs) -> Response:
        assert self.port is not None
        return request(self.port, path, **kwargs)


# --- processes via /proc ------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it does not exist."""
    return _stat_path(f"/proc/{pid}/stat")


def _stat_path(path: str) -> tuple[str, int] | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def alive(pid: int) -> bool:
    """Whether any thread of the process still runs. A zombie has exited
    (only its parent has not collected it yet), but a main thread that is a
    zombie while other threads still exit holds the process's sockets open."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return False
    for tid in tids:
        stat = _stat_path(f"/proc/{pid}/task/{tid}/stat")
        if stat is not None and stat[0] != "Z":
            return True
    return False


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents[int(entry)] = stat[1]
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.append(pid)
                frontier.append(pid)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
