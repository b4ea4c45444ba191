"""Where a node's policies come from: a directory, or one file / one origin (quick and demo mode).

Every source offers the same three things to the node: ``current`` (the
PolicySet in force, replaced as one reference), ``load()`` and the cheap
``changed()`` that the watcher polls. ``load`` takes the ids of the node's
WAF rules, which a policy's WAF exclusions must name, and whether the node
has a client certificate that a policy's origins may ask for.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

from edge.policy.errors import PolicyError
from edge.policy.load import LoadReport, PolicyDirectory, load_policy_file
from edge.policy.parse import default_policy
from edge.policy.resolve import PolicySet


class PolicySource(Protocol):
    @property
    def current(self) -> PolicySet: ...

    def load(self, *, waf_rule_ids: frozenset[str] | None = None,
             origin_client_certificate: bool | None = None) -> LoadReport: ...

    def changed(self) -> bool: ...


DirectorySource = PolicyDirectory


class FileSource:
    """One tenant from one file, or from the origin alone when there is no file.

    With ``quick_origin`` the file may hold only rules (``edge serve --origin
    URL [--policy FILE]``); without it the file is a complete policy (the demo).
    A file that turns invalid keeps the last valid policy, as in a directory.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, tenant: str = "default",
                 quick_origin: str | None = None) -> None:
        if path is None and quick_origin is None:
            raise ValueError("FileSource needs a policy file, an origin, or both")
        self.path = Path(path) if path is not None else None
        self.tenant = tenant
        self.quick_origin = quick_origin
        self._current = PolicySet()
        self._signature: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> PolicySet:
        return self._current

    def _scan(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        return self.path is not None and self._scan() != self._signature

    def load(self, *, waf_rule_ids: frozenset[str] | None = None,
             origin_client_certificate: bool | None = None) -> LoadReport:
        with self._lock:
            report = LoadReport()
            signature = self._scan()
            try:
                if self.path is None:
                    assert self.quick_origin is not None
                    policy = default_policy(self.quick_origin, self.tenant)
                else:
                    policy = load_policy_file(self.path, tenant=self.tenant, quick_origin=self.quick_origin,
                                              waf_rule_ids=waf_rule_ids,
                                              origin_client_certificate=origin_client_certificate)
            except PolicyError as exc:
                report.errors.extend(exc.errors)
                if self.tenant in self._current.tenants:
                    report.kept.append(self.tenant)
            else:
                self._current = PolicySet([policy])
                report.loaded.append(self.tenant)
            self._signature = signature
            return report


__all__ = ["DirectorySource", "FileSource", "PolicySource"]
