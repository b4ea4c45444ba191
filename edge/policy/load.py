"""Reading policy files and the policy directory, with last-good semantics."""
from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.policy.errors import FieldError, PolicyError
from edge.policy.model import TenantPolicy
from edge.policy.parse import parse_policy
from edge.policy.resolve import PolicySet
from edge.schema.values import NOT_RESERVED, RESERVED_TENANTS, TENANT, TENANT_ID_RE

MAX_POLICY_FILE_BYTES = 1 << 20
# The loader skips the files of reserved names (schema.json is the policies'
# JSON Schema, for editors).
RESERVED_FILES = frozenset(f"{name}.json" for name in RESERVED_TENANTS)
DEFAULT_WATCH_INTERVAL = 2.0

HOST_FREE = "a host that no other tenant serves"


class _Object(dict[str, Any]):
    """A JSON object that remembers which keys it saw twice, for the validator to report."""

    __slots__ = ("duplicates",)


def object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    """``object_pairs_hook`` for json.loads that records repeated keys."""
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj and key not in obj.duplicates:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def no_constant(name: str) -> Any:
    """``parse_constant`` for json.loads: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.3g} MiB"


def read_policy_json(path: str | os.PathLike[str], source: str | None = None) -> object:
    """Read and decode one policy file; PolicyError with a single error if that fails."""
    src = source if source is not None else str(path)

    def fail(field_: str, expected: str, found: str) -> PolicyError:
        return PolicyError([FieldError(src, field_, expected, found)])

    limit = MAX_POLICY_FILE_BYTES
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)  # never more, whatever the file claims
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise fail("", "a readable policy file", reason) from None
    if len(raw) > limit:
        raise fail("", f"a file of at most {_mib(limit)}", f"{_mib(max(size, len(raw)))}")
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some editors write
    except UnicodeDecodeError as exc:
        raise fail("", "UTF-8 text", f"byte 0x{raw[exc.start]:02x} at offset {exc.start}, which is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=object_pairs, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise fail(f"line {exc.lineno} column {exc.colno}", "valid JSON", exc.msg) from None
    except ValueError as exc:  # NaN / Infinity
        raise fail("", "valid JSON", str(exc)) from None
    except RecursionError:
        raise fail("", "valid JSON", "nesting too deep") from None


def load_policy_file(path: str | os.PathLike[str], *, tenant: str | None = None,
                     quick_origin: str | None = None, source: str | None = None,
                     waf_rule_ids: frozenset[str] | None = None,
                     origin_client_certificate: bool | None = None) -> TenantPolicy:
    """One policy file -> TenantPolicy; the tenant id defaults to the file name without ``.json``.
    ``waf_rule_ids`` and ``origin_client_certificate`` as for :func:`edge.policy.parse.parse_policy`."""
    src = source if source is not None else str(path)
    data = read_policy_json(path, src)
    return parse_policy(data, tenant=tenant if tenant is not None else Path(path).stem,
                        source=src, quick_origin=quick_origin, waf_rule_ids=waf_rule_ids,
                        origin_client_certificate=origin_client_certificate)


@dataclass(slots=True)
class LoadReport:
    loaded: list[str] = field(default_factory=list)  # tenants now served from their current file
    kept: list[str] = field(default_factory=list)  # new file invalid: the last valid policy stays
    removed: list[str] = field(default_factory=list)  # file gone: tenant no longer served
    errors: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# (name, mtime_ns, size, inode) per file, plus the directory's inode.
_Signature = tuple[int, tuple[tuple[str, int, int, int], ...]]


class PolicyDirectory:
    """A directory of ``<tenant>.json`` files.

    ``current`` is replaced as one reference per load, so a request that read
    it once sees one consistent set. A bad file never takes another tenant
    down, and never replaces its own tenant's last valid policy.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._current = PolicySet()
        self._signature: _Signature | None = None
        self._lock = threading.Lock()  # load() may run in a worker thread (see watch)

    @property
    def current(self) -> PolicySet:
        return self._current

    def changed(self) -> bool:
        """Cheap: one directory listing and a stat per file, no reading."""
        return self._scan() != self._signature

    def _files(self) -> list[os.DirEntry[str]]:
        with os.scandir(self.path) as entries:
            # Hidden files are editors' and atomic writers' temporaries
            # (and Kubernetes' ..data links), never tenants.
            return sorted(
                (e for e in entries
                 if e.name.endswith(".json") and not e.name.startswith(".") and e.name not in RESERVED_FILES),
                key=lambda e: e.name,
            )

    def _scan(self) -> _Signature | None:
        try:
            dir_ino = os.stat(self.path).st_ino
            files = []
            for entry in self._files():
                try:
                    st = entry.stat()  # follows symlinks: a swapped target counts as a change
                    files.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
                except OSError:
                    files.append((entry.name, -1, -1, -1))
        except OSError:
            return None
        return (dir_ino, tuple(files))

    def load(self, *, waf_rule_ids: frozenset[str] | None = None,
             origin_client_certificate: bool | None = None) -> LoadReport:
        """Read every file again. ``waf_rule_ids``: the WAF rules exclusions
        may name (the node's rule set); None: the shipped set's.
        ``origin_client_certificate``: whether the node has one for origins
        to ask for; None: not checked."""
        with self._lock:
            return self._load(waf_rule_ids, origin_client_certificate)

    def _load(self, waf_rule_ids: frozenset[str] | None, origin_client_certificate: bool | None) -> LoadReport:
        report = LoadReport()
        # Taken before reading: a write racing with this load shows up as a change next time.
        signature = self._scan()
        try:
            entries = self._files()
        except OSError as exc:
            # A vanished or unreadable directory is more likely a mount problem
            # than the wish to serve no one: keep everything.
            report.errors.append(FieldError(str(self.path), "", "a readable directory of policy files",
                                            (exc.strerror or type(exc).__name__).lower()))
            self._signature = signature
            return report

        previous = self._current
        fresh: dict[str, TenantPolicy] = {}
        rejected: dict[str, list[FieldError]] = {}
        for entry in entries:
            source = os.path.join(str(self.path), entry.name)
            tenant = entry.name[: -len(".json")]
            if not TENANT_ID_RE.fullmatch(tenant):
                report.errors.append(FieldError(source, "", f"a file name <tenant>.json with {TENANT}",
                                                json.dumps(entry.name)))
                continue
            try:
                fresh[tenant] = load_policy_file(entry.path, tenant=tenant, source=source, waf_rule_ids=waf_rule_ids,
                                                 origin_client_certificate=origin_client_certificate)
            except PolicyError as exc:
                rejected[tenant] = exc.errors

        present = fresh.keys() | rejected.keys()
        chosen, conflicts = _settle_hosts(fresh, {t: p for t, p in previous.tenants.items() if t in present}, previous)
        rejected.update(conflicts)

        for tenant in sorted(present):
            if tenant in rejected:
                report.errors.extend(rejected[tenant])
                if tenant in chosen:
                    report.kept.append(tenant)
            else:
                report.loaded.append(tenant)
        report.removed = sorted(t for t in previous.tenants if t not in present)
        self._current = PolicySet(chosen.values())
        self._signature = signature
        return report

    async def watch(self, interval: float = DEFAULT_WATCH_INTERVAL,
                    on_load: Callable[[LoadReport], None] | None = None) -> None:
        """Reload whenever the directory changes; run as a task, cancel to stop."""
        while True:
            await asyncio.sleep(interval)
            if await asyncio.to_thread(self.changed):
                report = await asyncio.to_thread(self.load)
                if on_load is not None:
                    on_load(report)


def _settle_hosts(fresh: dict[str, TenantPolicy], old: dict[str, TenantPolicy],
                  previous: PolicySet) -> tuple[dict[str, TenantPolicy], dict[str, list[FieldError]]]:
    """Choose one policy per tenant so that no host is served twice.

    Per host, the tenant that already served it keeps it, otherwise the
    alphabetically first. A new file that loses a host is rejected whole and
    its tenant falls back to its previous policy. Losers are rejected in
    rounds, only when the winner is certain to stay, so that a file rejected
    for one conflict cannot cost a third tenant its own host.
    """
    conflicts: dict[str, list[FieldError]] = {}
    while True:
        chosen: dict[str, TenantPolicy] = {}
        for tenant in sorted(fresh.keys() | old.keys()):
            if tenant in fresh and tenant not in conflicts:
                chosen[tenant] = fresh[tenant]
            elif tenant in old:
                chosen[tenant] = old[tenant]
        claims: dict[str, list[str]] = {}
        for tenant, policy in chosen.items():
            for host in policy.hosts:
                claims.setdefault(host, []).append(tenant)
        lost: dict[str, list[tuple[str, str, bool]]] = {}
        for host, tenants in claims.items():
            if len(tenants) < 2:
                continue
            holder = previous.owner(host)
            by_holder = holder in tenants
            winner = holder if by_holder else tenants[0]  # tenants are in sorted order
            for tenant in tenants:
                if tenant != winner:
                    lost.setdefault(tenant, []).append((host, winner, by_holder))
        if not lost:
            return chosen, conflicts
        # The alphabetically first loser is always safe to reject: anyone who
        # beat it alphabetically is not a loser, and a previous holder keeps
        # its host even if its own new file is rejected.
        for tenant, losses in lost.items():
            if all(by_holder or winner not in lost for _, winner, by_holder in losses):
                policy = chosen[tenant]
                conflicts[tenant] = [
                    FieldError(policy.source, "hosts", HOST_FREE, f'"{host}", which tenant "{winner}" serves')
                    for host, winner, _ in losses
                ]
                if policy is not fresh.get(tenant):  # an old policy lost: cannot happen, but never loop
                    old.pop(tenant, None)


__all__ = [
    "DEFAULT_WATCH_INTERVAL", "HOST_FREE", "MAX_POLICY_FILE_BYTES", "NOT_RESERVED", "RESERVED_FILES",
    "RESERVED_TENANTS", "LoadReport", "PolicyDirectory", "load_policy_file", "no_constant", "object_pairs",
    "read_policy_json",
]
