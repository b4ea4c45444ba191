"""Policy files written by the admin API: validated before, atomic and
durable on disk, serialised between the workers of a node.

A write is: lock (``flock`` on a hidden file in the policy directory, so
that the workers of one node never interleave a read-check-write), check
the precondition against the file as it is on disk, write a hidden
temporary in the same directory, fsync it, rename it over the tenant's
file, fsync the directory. A process killed at any point leaves either the
old file or the new one, never a mix; a leftover temporary is hidden (the
loader ignores it) and removed by the next start.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from edge.files import exclusive, sync_directory
from edge.policy.errors import PolicyError
from edge.policy.load import load_policy_file, read_policy_json

LOCK_NAME = ".admin.lock"
_TMP_SUFFIX = ".admin-tmp"
# Tests only: seconds to sleep between the temporary's fsync and the rename,
# so that a test can kill the node in the middle of a write.
PAUSE_ENV = "EDGE_TEST_POLICY_WRITE_PAUSE"


def policy_bytes(data: Any) -> bytes:
    """A policy file's bytes as the writer lays them out."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


class Precondition(Exception):
    """If-Match did not hold: the file changed (or does not exist)."""

    def __init__(self, current: str | None) -> None:
        super().__init__(current)
        self.current = current


class PolicyFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, tenant: str) -> Path:
        # The tenant id was checked against ^[a-z0-9][a-z0-9_-]{0,62}$: no
        # separators, no dots, so this stays inside the directory.
        return self.directory / f"{tenant}.json"

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive(self.directory / LOCK_NAME)

    def version(self, tenant: str) -> str | None:
        """The version of the tenant's file as it is on disk; None when there is none.
        An invalid file has the version "invalid" (nothing matches it but "*")."""
        path = self.path(tenant)
        if not path.exists():
            return None
        try:
            return load_policy_file(path, tenant=tenant).version
        except PolicyError:
            return "invalid"

    def data(self, tenant: str) -> Any:
        """The tenant's file as JSON data (for merge patches); None when there is none."""
        path = self.path(tenant)
        if not path.exists():
            return None
        return read_policy_json(path)

    @staticmethod
    def check(if_match: list[str] | None, current: str | None) -> None:
        """RFC 9110 §13.1.1: ``*`` needs a current file; tags need the current version."""
        if if_match is None:
            return
        if current is None or (if_match != ["*"] and current not in if_match):
            raise Precondition(current)

    def write(self, tenant: str, data: Any) -> None:
        path = self.path(tenant)
        tmp = self.directory / f".{tenant}.json.{os.getpid()}.{time.monotonic_ns()}{_TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                view = memoryview(policy_bytes(data))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            pause = os.environ.get(PAUSE_ENV)
            if pause:
                time.sleep(float(pause))
            with contextlib.suppress(OSError):
                # Keep the mode and owner the operator gave the file.
                st = os.stat(path)
                os.chmod(tmp, st.st_mode & 0o7777)
                os.chown(tmp, st.st_uid, st.st_gid)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sync_directory()

    def delete(self, tenant: str) -> bool:
        try:
            os.unlink(self.path(tenant))
        except FileNotFoundError:
            return False
        self._sync_directory()
        return True

    def _sync_directory(self) -> None:
        sync_directory(self.directory)

    def remove_leftovers(self) -> list[str]:
        """Temporaries of writers that no longer run (killed mid-write)."""
        removed = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return removed
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX)):
                continue
            parts = entry.name.split(".")
            pid = parts[-3] if len(parts) >= 5 else ""
            if pid.isdigit() and _running(int(pid)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.name)
        return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
