"""What the ACME manager should do now: pure decisions, the clock passed in.

- Which certificates the node should hold: one per exact host of each
  tenant whose policy says ``tls.acme``, named :func:`certificate_name`.
  Wildcard hosts, ``*`` and IP addresses are skipped: HTTP-01 validates one
  exact DNS name (RFC 8555 §8.3; wildcards need DNS-01, §7.1.3).
- Which of them are due: a host no certificate of its tenant covers, or
  whose best covering certificate reaches its renewal time.
- When to try again after a failure: :func:`backoff`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edge.http.urls import ip_literal, strict_hostname
from edge.tls.certs import covers, valid_name

NAME_PREFIX = "acme-"
# The CA's Retry-After is followed up to this (a week: Let's Encrypt's
# longest rate-limit window), so that a bad date cannot stop renewals for good.
MAX_RETRY_AFTER = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Wanted:
    """A certificate the node should hold for ``host`` of ``tenant``."""

    tenant: str
    host: str
    name: str  # its name in the certificate store


@dataclass(frozen=True, slots=True)
class Held:
    """A stored certificate, as far as renewal is concerned (unix times)."""

    tenant: str
    hosts: tuple[str, ...]
    not_before: float
    not_after: float


@dataclass(frozen=True, slots=True)
class Failures:
    """Failed orders of one certificate in a row; persisted across restarts."""

    count: int = 0
    next_attempt: float = 0.0  # unix time before which no new order is placed
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Due:
    wanted: Wanted
    expires: float | None  # not_after of the certificate in force, None: none covers the host

    @property
    def renewal(self) -> bool:
        return self.expires is not None


@dataclass(frozen=True, slots=True)
class Plan:
    due: tuple[Due, ...]
    wake_at: float | None  # the earliest time another certificate becomes due; None: never


def certificate_name(host: str) -> str:
    """``acme-<host>``; a host too long for a name is cut and given a hash."""
    name = NAME_PREFIX + host
    if valid_name(name):
        return name
    digest = hashlib.sha256(host.encode()).hexdigest()[:16]
    return f"{NAME_PREFIX}{host[:42].rstrip('.-')}-{digest}"


def skip_reason(host: str) -> str | None:
    """Why HTTP-01 cannot get a certificate for ``host`` (a policy host), or None."""
    if host == "*" or host.startswith("*."):
        return "a wildcard: HTTP-01 validates exact names only"
    if ip_literal(host) is not None:
        return "an IP address"
    if not strict_hostname(host) or "." not in host:
        return "not a DNS name a CA issues certificates for"
    return None


def wanted(tenants: Mapping[str, object]) -> tuple[list[Wanted], list[tuple[str, str, str]]]:
    """(the certificates to hold, (tenant, host, reason) of the hosts skipped)
    for the tenants' policies (``policy.tls.acme``, ``policy.hosts``)."""
    out: list[Wanted] = []
    skipped: list[tuple[str, str, str]] = []
    for tenant in sorted(tenants):
        policy = tenants[tenant]
        if not policy.tls.acme:  # type: ignore[attr-defined]
            continue
        for host in policy.hosts:  # type: ignore[attr-defined]
            reason = skip_reason(host)
            if reason is None:
                out.append(Wanted(tenant, host, certificate_name(host)))
            else:
                skipped.append((tenant, host, reason))
    return out, skipped


def renew_at(held: Held, renew_before: float) -> float:
    """When to renew: ``renew_before`` ahead of expiry, but at most half the
    certificate's lifetime ahead, so that a short-lived certificate is not
    renewed again the moment it arrives."""
    return held.not_after - min(renew_before, (held.not_after - held.not_before) / 2)


def plan(want: Iterable[Wanted], held: Iterable[Held], failures: Mapping[str, Failures], now: float,
         renew_before: float) -> Plan:
    by_tenant: dict[str, list[Held]] = {}
    for h in held:
        if h.not_before <= now < h.not_after:
            by_tenant.setdefault(h.tenant, []).append(h)
    due: list[Due] = []
    wake: list[float] = []
    for w in want:
        covering = [h for h in by_tenant.get(w.tenant, ()) if any(covers(name, w.host) for name in h.hosts)]
        best = max(covering, key=lambda h: renew_at(h, renew_before), default=None)
        when = now if best is None else renew_at(best, renew_before)
        failed = failures.get(w.name)
        if failed is not None and failed.count:
            when = max(when, failed.next_attempt)
        if when <= now:
            due.append(Due(w, None if best is None else best.not_after))
        else:
            wake.append(when)
    return Plan(tuple(due), min(wake, default=None))


def backoff(failures: int, retry_min: float, retry_max: float, retry_after: float | None = None) -> float:
    """Seconds to wait after the ``failures``-th failed order in a row:
    ``retry_min`` doubled for each further failure, at most ``retry_max``;
    at least what the CA asked for in Retry-After (up to a week)."""
    wait = min(retry_max, retry_min * 2 ** min(max(failures - 1, 0), 32))
    if retry_after is not None:
        wait = max(wait, min(retry_after, MAX_RETRY_AFTER))
    return wait
