"""Which certificate answers a handshake's server name (SNI).

The name selects a tenant with the same host matching as requests
(:meth:`edge.policy.resolve.PolicySet.resolve`), then that tenant's
certificate that covers the name: an exact name before a wildcard (which
covers one label). Certificates of one tenant listing the same name form a
group served from one ``SSLContext``: the newest of each key type (RSA,
ECDSA), so that OpenSSL picks the one the client supports. No tenant, or no
certificate of it for the name: the node's default certificate, else the
handshake fails with the alert ``unrecognized_name``.

A certificate is served only for names of its own tenant: an exact name
that resolves to it, a wildcard that resolves to it or covers one of its
hosts. One that no longer belongs (hosts moved, tenant removed) stops being
served at the next rebuild, which policy reloads and certificate writes do.

:func:`serving` and :meth:`CertificateIndex.select` are plain functions of
their arguments; :class:`Certificates` builds an index from the store (file
reads, key parsing), off the hot path, and keeps the contexts of files
that did not change.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.policy.resolve import PolicySet
from edge.tls.certs import covers
from edge.tls.context import CertificateFileError, load_certificate, server_context
from edge.tls.store import CertificateStore, StoredCertificate

log = logging.getLogger("edge.tls")

Group = tuple[str, str]  # (tenant, certificate name such as "www.shop.de" or "*.shop.de")


@dataclass(frozen=True, slots=True)
class Selection:
    """What a handshake gets: ``context`` None fails it (unrecognized_name).
    ``tenant`` is the server name's tenant (None: no name, or nobody's)."""

    context: Any
    tenant: str | None
    host: str | None


def algorithm(stored: StoredCertificate) -> str:
    """"rsa" or "ecdsa": the slot a certificate takes in a context."""
    return stored.info.key_type.split("-", 1)[0]


def belongs(name: str, tenant: str, policies: PolicySet) -> bool:
    """Whether certificate name ``name`` may be served for ``tenant``."""
    policy = policies.get(tenant)
    if policy is None:
        return False
    if policies.resolve(name) is policy:  # "*.x" resolves like a host one label below x
        return True
    return name.startswith("*.") and any(covers(name, host) for host in policy.hosts)


def serving(certificates: Iterable[StoredCertificate], policies: PolicySet) -> dict[Group, tuple[StoredCertificate, ...]]:
    """The certificates each (tenant, name) group serves: per key type the
    one valid longest (then the newest, then by name), names that are not
    the tenant's left out."""
    groups: dict[Group, dict[str, StoredCertificate]] = {}
    for stored in certificates:
        kind = algorithm(stored)
        for name in stored.info.hosts:
            if not belongs(name, stored.tenant, policies):
                continue
            slot = groups.setdefault((stored.tenant, name), {})
            held = slot.get(kind)
            if held is None or _rank(stored) > _rank(held):
                slot[kind] = stored
    return {group: tuple(slot[k] for k in sorted(slot)) for group, slot in groups.items()}


def _rank(stored: StoredCertificate) -> tuple:
    return stored.info.not_after, stored.info.not_before, stored.name


class CertificateIndex:
    """Server name -> Selection, for one set of policies and certificates.
    Never changed: a rebuild makes a new one."""

    __slots__ = ("policies", "default", "_exact", "_wild", "groups")

    def __init__(self, policies: PolicySet, groups: dict[Group, Any], default: Any = None) -> None:
        self.policies = policies
        self.default = default
        self.groups = groups  # (tenant, name) -> context
        self._exact: dict[tuple[str, str], Any] = {}
        self._wild: dict[tuple[str, str], Any] = {}
        for (tenant, name), context in groups.items():
            if name.startswith("*."):
                self._wild[(tenant, name[2:])] = context
            else:
                self._exact[(tenant, name)] = context

    def select(self, server_name: str | None) -> Selection:
        if server_name is None:
            return Selection(self.default, None, None)
        host = server_name.lower().rstrip(".")
        policy = self.policies.resolve(host)
        if policy is None:
            return Selection(self.default, None, host)
        tenant = policy.tenant
        context = self._exact.get((tenant, host))
        if context is None:
            dot = host.find(".")
            if dot > 0:
                context = self._wild.get((tenant, host[dot + 1:]))
        return Selection(self.default if context is None else context, tenant, host)


FileKey = tuple[tuple[str, int, int], ...]


class Certificates:
    """Builds indexes from a certificate store and the policies in force.
    Contexts are made once per set of unchanged files and shared by every
    group that serves the same certificates."""

    def __init__(self, store: CertificateStore, default_certificate: Path | None = None,
                 new_context: Callable[[], ssl.SSLContext] = server_context) -> None:
        self.store = store
        self.default_certificate = default_certificate
        self._new_context = new_context
        self._contexts: dict[FileKey, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None  # the default certificate's, as last loaded
        self._lock = threading.Lock()  # reloads come from the loop and from the admin API's threads

    def build(self, policies: PolicySet) -> CertificateIndex:
        """A new index (a group's broken file is logged and that group left
        out). A default certificate that cannot be used keeps the one loaded
        before, so the tenants' certificates and hosts still follow every
        change; raises CertificateFileError only when there is none before."""
        with self._lock:
            made: dict[FileKey, ssl.SSLContext] = {}
            default = None
            if self.default_certificate is not None:
                try:
                    default = self._context((self.default_certificate,), made)
                except CertificateFileError as exc:
                    if self._default is None:
                        raise
                    default = self._default
                    log.error("tls.default_certificate %s cannot be used, the previous one stays: %s",
                              self.default_certificate, exc)
            self._default = default
            groups: dict[Group, ssl.SSLContext] = {}
            for group, chosen in serving(self.store.all(), policies).items():
                try:
                    groups[group] = self._context(tuple(c.path for c in chosen), made)
                except CertificateFileError as exc:
                    log.error("certificate %s of tenant %s not served: %s", group[1], group[0], exc)
            self._contexts = made  # what no group uses any more goes
            return CertificateIndex(policies, groups, default)

    def _context(self, paths: tuple[Path, ...], made: dict[FileKey, ssl.SSLContext]) -> ssl.SSLContext:
        key = tuple((str(p), *_stamp(p)) for p in paths)
        context = made.get(key) or self._contexts.get(key)
        if context is None:
            context = self._new_context()
            for path in paths:
                load_certificate(context, path)
        made[key] = context
        return context


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_mtime_ns, st.st_size
