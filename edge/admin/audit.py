"""The audit trail: one JSON line per state-changing admin call.

Written to a file (``[admin] audit_log``), opened for appending, each line
in one ``write`` so that the lines of several workers never interleave; or,
without a file, to the logger ``edge.audit`` (stderr). Never the token: its
id is the first 8 hex digits of its hash.
"""
from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("edge.audit")


class AuditLog:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def record(self, *, token: str, scope: str, tenant: str | None, method: str, path: str, status: int,
               summary: dict[str, Any] | None = None) -> None:
        entry = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "token": token,
            "scope": scope,
            "tenant": tenant,
            "method": method,
            "path": path,
            "status": status,
            "summary": summary or {},
            "pid": os.getpid(),
        }
        line = orjson.dumps(entry, default=str)
        if self._fd is None:
            log.info("%s", line.decode())
            return
        try:
            os.write(self._fd, line + b"\n")
        except OSError as exc:
            # The change was made; losing its record must be loud.
            log.error("cannot write the audit log %s (%s): %s", self.path, exc.strerror, line.decode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
