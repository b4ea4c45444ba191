"""Tenant certificates on disk.

Layout: ``<root>/<tenant>/<name>.pem``, one file per certificate holding the
chain (leaf first) and then its unencrypted private key, mode 0600, in
directories of mode 0700. One file, so that a certificate and its key are
replaced together by one ``os.replace``: a reader sees the old pair or the
new one, never half of each, and a crash leaves no half-written file.
``ssl.SSLContext.load_cert_chain(path)`` reads both from it.

Files whose name starts with ``.`` are temporary and never read.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.files import exclusive, sync_directory, write_private
from edge.tls.certs import CertificateError, CertificateInfo, CheckedCertificate, describe, valid_name
from edge.tls.context import CertificateFileError, load_certificate, server_context

log = logging.getLogger("edge.tls")

SUFFIX = ".pem"


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    tenant: str
    name: str
    path: Path  # chain then key, for SSLContext.load_cert_chain
    info: CertificateInfo


class CertificateStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # (path, mtime_ns, size) -> info: listing does not re-parse unchanged files.
        self._seen: dict[Path, tuple[int, int, CertificateInfo]] = {}

    def locked(self, name: str = ".lock") -> contextlib.AbstractContextManager[None]:
        """An exclusive lock on ``<root>/<name>`` that the workers of a node
        take around what must not interleave."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return exclusive(self.root / name)

    def put(self, tenant: str, name: str, checked: CheckedCertificate) -> StoredCertificate:
        """Stores (or replaces) one certificate atomically and durably;
        CertificateError (field ``certificate``) and nothing replaced if the
        listeners' TLS settings cannot load it."""
        directory = self._tenant_dir(tenant)
        # The root too: its listing names the tenants that have keys here.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        target = directory / f"{_checked_name(name)}{SUFFIX}"
        write_private(target, checked.chain_pem + checked.key_pem, check=_loadable)
        return StoredCertificate(tenant, name, target, checked.info)

    def delete(self, tenant: str, name: str) -> bool:
        target = self._tenant_dir(tenant) / f"{_checked_name(name)}{SUFFIX}"
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        sync_directory(target.parent)
        self._seen.pop(target, None)
        return True

    def delete_tenant(self, tenant: str) -> int:
        """Removes every certificate of ``tenant`` (a tenant created later
        under the same id must not inherit them); returns how many."""
        directory = self._tenant_dir(tenant)
        removed = 0
        for path in _files(directory):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
            self._seen.pop(path, None)
        if removed:
            sync_directory(directory)
        return removed

    def get(self, tenant: str, name: str) -> StoredCertificate | None:
        path = self._tenant_dir(tenant) / f"{_checked_name(name)}{SUFFIX}"
        return self._read(tenant, path)

    def tenant(self, tenant: str) -> list[StoredCertificate]:
        """One tenant's certificates, by name."""
        directory = self._tenant_dir(tenant)
        return [c for c in (self._read(tenant, p) for p in _files(directory)) if c is not None]

    def all(self) -> list[StoredCertificate]:
        """Every tenant's certificates, by tenant and name."""
        if not self.root.is_dir():
            return []
        found: list[StoredCertificate] = []
        for directory in sorted(self.root.iterdir()):
            if directory.is_dir() and not directory.name.startswith("."):
                found.extend(c for c in (self._read(directory.name, p) for p in _files(directory)) if c is not None)
        return found

    def _tenant_dir(self, tenant: str) -> Path:
        if not tenant or "/" in tenant or tenant.startswith("."):
            raise ValueError(f"not a tenant name: {tenant!r}")
        return self.root / tenant

    def _read(self, tenant: str, path: Path) -> StoredCertificate | None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        seen = self._seen.get(path)
        if seen is not None and seen[:2] == (stat.st_mtime_ns, stat.st_size):
            return StoredCertificate(tenant, path.stem, path, seen[2])
        try:
            data = path.read_bytes()
            split = data.index(b"-----BEGIN PRIVATE KEY-----")
            info = describe(data[:split], data[split:])
        except (OSError, ValueError, CertificateError) as exc:
            # Not written by this store, or damaged by hand: skipped, the rest still serves.
            log.error("certificate file %s cannot be used, skipped: %s", path, exc)
            return None
        self._seen[path] = (stat.st_mtime_ns, stat.st_size, info)
        return StoredCertificate(tenant, path.stem, path, info)


def _files(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return iter(())
    return iter(sorted(p for p in directory.iterdir()
                       if p.suffix == SUFFIX and not p.name.startswith(".") and valid_name(p.stem)))


def _checked_name(name: str) -> str:
    if not valid_name(name):
        raise ValueError(f"not a certificate name: {name!r}")
    return name


def default_root(policies_dir: Path) -> Path:
    """Where a node keeps tenant certificates unless configured otherwise:
    ``certificates`` beside its policy directory (in quick and demo mode,
    ``<state dir>/certificates``)."""
    return Path(policies_dir).parent / "certificates"


def _loadable(path: Path) -> None:
    # OpenSSL's security level refuses what check_upload passes (a SHA-1
    # signature, an RSA-1024 intermediate): such a file would replace a
    # working certificate and then not be served.
    try:
        load_certificate(server_context(), path)
    except CertificateFileError as exc:
        raise CertificateError("certificate", f"expected a chain the node's TLS listeners can load, "
                                              f"found one they cannot: {exc}") from None
