"""The state directory of quick and demo mode: a policy directory, so that
policy writes through the admin API work there exactly as with ``--config``
(the same validation, atomic files, lock and fan-out to every worker).

Layout: ``<state dir>/policies/<tenant>.json``, complete policies. The
command line defines one tenant, its *seed*: the demo tenant
(``policies/demo.json``), or quick mode's ``default`` (``--origin`` and
the optional ``--policy`` file; hosts default to ``["*"]``).

Precedence, at every start and whenever the ``--policy`` file changes:

- the tenant has no file, or its file is still what was last seeded: it is
  written from the command line, which therefore always applies;
- its file was changed since (through the admin API, or by hand): that
  change is kept, and the command line's policy is not applied;
- at start, quick mode's ``--origin`` becomes the tenant's origin in both
  cases, unless the kept policy's first origin already is that URL (its
  timeouts and further origins are then kept too).

What was last seeded is remembered as the SHA-256 of the file's bytes in
``.<tenant>.seed`` beside it (hidden: the loader skips it).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.admin.store import PolicyFiles, policy_bytes
from edge.policy.errors import PolicyError
from edge.policy.load import LoadReport, PolicyDirectory, read_policy_json
from edge.policy.parse import parse_policy

log = logging.getLogger("edge")

POLICIES = "policies"


class StateError(Exception):
    """The state directory cannot be used; the message says which and why."""


@dataclass(frozen=True)
class StateDir:
    root: Path
    made: bool  # made for this run: removed when it ends

    @property
    def policies(self) -> Path:
        return self.root / POLICIES

    def close(self) -> None:
        if self.made:
            shutil.rmtree(self.root, ignore_errors=True)


def open_state_dir(path: str | None) -> StateDir:
    """The given directory (made when missing), or a fresh one for this run
    under the temporary directory; mode 0700 when made here. Checked for
    being a writable directory before anything else happens."""
    if path is None:
        try:
            state = StateDir(Path(tempfile.mkdtemp(prefix="edge-state-")), made=True)
        except OSError as exc:
            raise StateError(f"cannot make a state directory under {tempfile.gettempdir()}: {_reason(exc)}; "
                             "give one with --state-dir DIR") from None
    else:
        state = StateDir(Path(path).resolve(), made=False)
    try:
        for directory in (state.root, state.policies):
            if directory.exists() and not directory.is_dir():
                raise StateError(f"--state-dir {state.root}: expected a directory, found a file at {directory}")
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Writable for real (permissions, read-only mounts): create and remove a file.
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=state.policies)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        state.close()
        raise StateError(f"--state-dir {state.root}: cannot use it: {_reason(exc)}") from None
    except StateError:
        state.close()
        raise
    return state


def _reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


@dataclass(frozen=True)
class Seed:
    """The tenant the command line defines (picklable, for worker processes)."""

    tenant: str
    path: str | None = None  # a complete policy (demo), or a quick-mode file (with origin)
    origin: str | None = None  # quick mode's --origin

    def data(self) -> dict[str, Any]:
        """The tenant's complete policy as the command line defines it.
        PolicyError names the file (or ``--origin``) and every bad field."""
        raw = read_policy_json(self.path) if self.path is not None else {}
        parse_policy(raw, tenant=self.tenant, source=self.path or "--origin", quick_origin=self.origin)
        assert isinstance(raw, dict)  # parse_policy refuses anything else
        if self.origin is None:
            return raw
        out = {k: v for k, v in raw.items() if k.startswith("$")}
        out["hosts"] = raw.get("hosts", ["*"])
        out["origins"] = [{"url": self.origin}]
        out.update((k, v) for k, v in raw.items() if k not in out)
        return out


@dataclass(frozen=True)
class Synced:
    kept: bool  # the file was changed since it was seeded, and stays
    origin_was: str | None = None  # the origin --origin replaced in a kept file


class StateDirectory(PolicyDirectory):
    """The state directory's policies, kept in step with the seed as the
    module describes. A PolicyDirectory: the admin API writes to it."""

    def __init__(self, path: str | os.PathLike[str], seed: Seed) -> None:
        super().__init__(path)
        self.seed = seed
        self.files = PolicyFiles(self.path)
        self._seed_signature = self._seed_scan()

    def _marker(self) -> Path:
        return self.path / f".{self.seed.tenant}.seed"

    def _seed_scan(self) -> tuple[int, int, int] | None:
        if self.seed.path is None:
            return None
        try:
            st = os.stat(self.seed.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        return super().changed() or self._seed_scan() != self._seed_signature

    def load(self, *, waf_rule_ids: frozenset[str] | None = None,
             origin_client_certificate: bool | None = None) -> LoadReport:
        errors = []
        signature = self._seed_scan()
        if signature != self._seed_signature:
            self._seed_signature = signature
            try:
                synced = self.sync()
            except PolicyError as exc:
                errors = exc.errors
            except OSError as exc:
                log.error("cannot write tenant %s's policy into %s: %s", self.seed.tenant, self.path, _reason(exc))
            else:
                if synced.kept:
                    log.warning("%s changed, but tenant %s's policy was changed through the admin API since it "
                                "was seeded: that change stays in force (remove %s to follow the file again)",
                                self.seed.path, self.seed.tenant, self.files.path(self.seed.tenant))
        report = super().load(waf_rule_ids=waf_rule_ids, origin_client_certificate=origin_client_certificate)
        if errors:
            report.errors[:0] = errors
            if self.seed.tenant in self.current.tenants and self.seed.tenant not in report.kept:
                report.kept.append(self.seed.tenant)
        return report

    def sync(self, *, start: bool = False) -> Synced:
        """Bring the tenant's file in step with the seed. PolicyError (an
        invalid seed) before anything is touched; OSError from the disk."""
        data = self.seed.data()
        tenant = self.seed.tenant
        with self.files.locked():
            try:
                current = self.files.path(tenant).read_bytes()
            except FileNotFoundError:
                current = None
            if current is None or _digest(current) == self._read_marker():
                fresh = policy_bytes(data)
                if current != fresh:
                    self.files.write(tenant, data)
                self._write_marker(_digest(fresh))
                return Synced(kept=False)
            origin_was = self._keep_origin() if start and self.seed.origin is not None else None
            return Synced(kept=True, origin_was=origin_was)

    def _keep_origin(self) -> str | None:
        """--origin into a kept file; the origin it replaced, or None when
        the file already starts with it (or is unreadable: the loader says why)."""
        try:
            data = read_policy_json(self.files.path(self.seed.tenant))
        except PolicyError:
            return None
        if not isinstance(data, dict):
            return None
        origins = data.get("origins")
        first = origins[0] if isinstance(origins, list) and origins else None
        url = first.get("url") if isinstance(first, dict) else None
        if url == self.seed.origin:
            return None
        self.files.write(self.seed.tenant, {**data, "origins": [{"url": self.seed.origin}]})
        return url if isinstance(url, str) else "none"

    def _read_marker(self) -> str | None:
        try:
            return self._marker().read_text().strip()
        except OSError:
            return None

    def _write_marker(self, digest: str) -> None:
        if self._read_marker() == digest:
            return
        tmp = self._marker().with_name(self._marker().name + ".tmp")
        try:
            tmp.write_text(digest + "\n")
            os.replace(tmp, self._marker())
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["Seed", "StateDir", "StateDirectory", "StateError", "Synced", "open_state_dir"]
