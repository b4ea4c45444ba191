"""File-system steps that the node's stores share: a lock between the
workers of a node, a private file written atomically, and making a rename
durable."""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (made, mode 0600, if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def sync_directory(directory: Path) -> None:
    """fsync a directory: a rename or unlink in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, *, check: Callable[[Path], None] | None = None,
                  exclusive: bool = False) -> None:
    """``data`` into ``path`` atomically and durably, mode 0600 from the first
    byte on: a reader sees the old file or the new one, and a crash leaves no
    half-written file. ``check`` may refuse the written copy (by raising)
    before it replaces anything; ``exclusive``: fail (FileExistsError) rather
    than replace a file another process made meanwhile."""
    fd, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if check is not None:
            check(Path(temporary))
        if exclusive:
            os.link(temporary, path)
            os.unlink(temporary)
        else:
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    sync_directory(path.parent)
