"""The expiry watch over the tenant certificates of a node.

- A gauge, ``edge_certificate_expiry_seconds{tenant,name}``: seconds until
  each stored certificate's ``not_after`` (negative once expired), read
  from the store by whichever worker answers the scrape, so that there is
  one value per certificate however many workers run.
- Notices: a security event ``certificate_expiry`` to the tenant (log and
  signed webhook, :meth:`edge.observe.events.SecurityEvents.notify`) when
  a certificate has 30, 14, 7 or 1 days left, and once it has expired.
  Each notice goes out once per certificate. A certificate first seen
  with less time left gets only the most urgent notice due (6 days left:
  the 7-day notice, not the 30- and 14-day ones as well).
- :func:`renewal_failed`: the event for a renewal that did not succeed,
  for whatever renews certificates.

Once, across workers and restarts: every worker runs the check (at start,
every ``certificates.expiry_check_interval`` seconds, and after each
certificate write it answers), under an exclusive lock on
``<store>/.expiry.lock``, and ``<store>/.expiry.json`` remembers for each
certificate its fingerprint and the last notice sent. A replaced
certificate (another fingerprint) starts afresh; a removed one is
forgotten. The record is written before the events are queued: a node
that dies in between loses that notice rather than sending it twice.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from edge.observe.events import CERTIFICATE_RENEWAL_FAILED as RENEWAL_FAILED
from edge.policy.sections.events import NO_EVENTS
from edge.tls.store import CertificateStore, StoredCertificate
from edge.files import write_private

log = logging.getLogger("edge.tls")

DAY = 86400
# Days left at which a tenant is told; 0: the certificate has expired.
NOTICE_DAYS = (30, 14, 7, 1, 0)
EXPIRING_WITHIN = NOTICE_DAYS[0] * DAY  # what /v1/stats lists
EXPIRY = "certificate_expiry"
STATE_NAME = ".expiry.json"
LOCK_NAME = ".expiry.lock"


def due(remaining: float, last: int | None) -> int | None:
    """The notice (days) due for a certificate with ``remaining`` seconds
    left, after ``last`` was sent (None: none yet); None when nothing is."""
    crossed = [days for days in NOTICE_DAYS if remaining <= days * DAY]
    if not crossed:
        return None
    days = min(crossed)
    return days if last is None or days < last else None


@dataclass(frozen=True, slots=True)
class Notice:
    certificate: StoredCertificate
    days: int  # the notice: 30, 14, 7, 1, or 0 (expired)
    remaining: float  # seconds until not_after when it was decided


def _key(certificate: StoredCertificate) -> str:
    return f"{certificate.tenant}/{certificate.name}"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def remaining(certificate: StoredCertificate, now: float) -> float:
    return certificate.info.not_after.timestamp() - now


class ExpiryWatch:
    """One per worker; ``events`` is the worker's SecurityEvents, ``policies``
    its policy source (a tenant's webhook settings are read when sending)."""

    def __init__(self, store: CertificateStore, events, policies, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.events = events
        self.policies = policies
        self.clock = clock

    async def check(self) -> list[Notice]:
        """Decide (in a thread: files and a lock) and send what is due."""
        notices = await asyncio.get_running_loop().run_in_executor(None, self.due_notices)
        for notice in notices:
            self._announce(notice)
        return notices

    def due_notices(self) -> list[Notice]:
        """The notices due now, recorded as sent."""
        if not self.store.root.is_dir():
            return []
        with self.store.locked(LOCK_NAME):
            now = self.clock()
            sent = self._read()
            kept: dict[str, dict[str, Any]] = {}
            notices = []
            for certificate in self.store.all():
                key = _key(certificate)
                entry = sent.get(key)
                fingerprint = certificate.info.fingerprint_sha256
                last = entry.get("days") if isinstance(entry, dict) and entry.get("fingerprint") == fingerprint else None
                left = remaining(certificate, now)
                days = due(left, last if isinstance(last, int) else None)
                if days is not None:
                    notices.append(Notice(certificate, days, left))
                    kept[key] = {"fingerprint": fingerprint, "days": days}
                elif last is not None:
                    kept[key] = entry
            if kept != sent:
                self._write(kept)
        return notices

    def expiring(self, within: float = EXPIRING_WITHIN) -> list[dict[str, Any]]:
        """Certificates with less than ``within`` seconds left (expired ones
        too), the soonest first: what ``/v1/stats`` lists."""
        now = self.clock()
        found = [(remaining(c, now), c) for c in self.store.all()]
        return [
            {"tenant": c.tenant, "name": c.name, "hosts": list(c.info.hosts),
             "not_after": _rfc3339(c.info.not_after), "expires_in_seconds": int(left)}
            for left, c in sorted(found, key=lambda pair: pair[0]) if left < within
        ]

    def metric(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "edge_certificate_expiry_seconds",
            "Seconds until each stored certificate's not_after (negative once expired), by tenant and name.",
            labels=("tenant", "name"))
        now = self.clock()
        for certificate in self.store.all():
            family.add_metric((certificate.tenant, certificate.name), remaining(certificate, now))
        return family

    def _announce(self, notice: Notice) -> None:
        certificate = notice.certificate
        info = certificate.info
        when = _rfc3339(info.not_after)
        if notice.days:
            text = (f"certificate={certificate.name} expires {when} "
                    f"(in {max(0.0, notice.remaining) / DAY:.1f} days; {notice.days}-day notice)")
        else:
            text = f"certificate={certificate.name} expired {when}"
        fields = {
            "certificate": {"name": certificate.name, "hosts": list(info.hosts), "not_after": when,
                            "fingerprint_sha256": info.fingerprint_sha256},
            "threshold_days": notice.days,
            "expires_in_seconds": int(notice.remaining),
        }
        _notify(self.events, self.policies, certificate.tenant, EXPIRY, fields, text)

    def _read(self) -> dict[str, Any]:
        path = self.store.root / STATE_NAME
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Notices may then be sent again: louder than losing them.
            log.error("certificate expiry record %s cannot be read, starting afresh: %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        write_private(self.store.root / STATE_NAME, json.dumps(data, sort_keys=True).encode())


def renewal_failed(events, policies, tenant: str, name: str, hosts: tuple[str, ...] | list[str], reason: str, *,
                   not_after: dt.datetime | None = None) -> None:
    """Tell ``tenant`` that renewing its certificate ``name`` failed:
    ``reason`` is one sentence for a person (no secrets: it is logged and
    sent). ``not_after``: when the certificate in use expires, if any."""
    # The shape of the ACME manager's own failure events (edge.tls.acme).
    certificate: dict[str, Any] = {"name": name, "hosts": list(hosts), "error": reason}
    if not_after is not None:
        certificate["not_after"] = _rfc3339(not_after)
    policy = policies.current.get(tenant)
    events.certificate(tenant, policy.filters.events if policy is not None else NO_EVENTS, RENEWAL_FAILED, certificate)


def _notify(events, policies, tenant: str, what: str, fields: dict[str, Any], text: str) -> None:
    # The tenant's webhook as its policy says now; a tenant without a policy is only logged.
    policy = policies.current.get(tenant)
    settings = policy.filters.events if policy is not None else NO_EVENTS
    events.notify(tenant, settings, what, fields, text)
