"""Certificates from an ACME CA (RFC 8555) for tenants whose policy says
``"tls": {"acme": true}``, issued on demand and renewed before expiry.

One process of a node runs the orders: the worker that holds an exclusive
``flock`` on ``<acme dir>/manager.lock``. The others try again every
``LOCK_RETRY`` seconds, so when that worker dies a sibling (or its
replacement) takes over; two nodes sharing a directory never order twice.

A pass (at start, when policies change, and when the next certificate
becomes due) plans with :mod:`edge.tls.acme_plan` and places the due
orders one at a time through :class:`edge.tls.acme_client.AcmeClient`, in a
thread: the ``acme`` library blocks. An issued certificate passes the same
checks as an upload (:func:`edge.tls.certs.check_upload`), goes into the
tenant's certificate store as ``acme-<host>``, and then
:func:`certificates_changed` is called.

A failed order waits :func:`edge.tls.acme_plan.backoff` before the next
one, and emits a security event to the tenant (``certificate_renewal_failed``
while a valid certificate still covers the host, else
``certificate_issue_failed``).

The ACME directory (``acme`` beside the certificate store, mode 0700) holds:

    account.key        the account key, 0600, unless [acme] account_key names another file
    state.json         failures in a row and the next try per certificate, the last pass's time
    orders/<name>.json an order in progress: its URL and certificate key (0600), to resume it
    challenges/<token> HTTP-01 answers, read by every worker (edge.tls.challenges)
    manager.lock       held by the process that runs the orders
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.config_tls import AcmeConfig
from edge.observe.events import CERTIFICATE_ISSUE_FAILED, CERTIFICATE_RENEWAL_FAILED, SecurityEvents
from edge.tls.acme_client import AcmeClient, OrderFailed, Stopped
from edge.tls.acme_plan import Due, Failures, Held, backoff, plan, wanted
from edge.tls.certs import CertificateError, CheckedCertificate, check_upload
from edge.tls.challenges import ChallengeFiles
from edge.tls.store import CertificateStore

log = logging.getLogger("edge.acme")

LOCK_RETRY = 5.0  # seconds between two tries of a process that does not run the orders
MAX_SLEEP = 3600.0  # a pass at least this often: certificates uploaded or removed meanwhile count
STATE_VERSION = 1


def acme_root(certificate_dir: Path) -> Path:
    """The ACME directory: ``acme`` beside the certificate store."""
    return Path(certificate_dir).parent / "acme"


def certificates_changed(tenant: str, name: str) -> None:
    """The certificate ``name`` of ``tenant`` was stored (issued or renewed).
    A manager without a node only logs it; a node passes its own, which
    has every worker take the new certificate."""
    log.info("certificate %s of tenant %s stored", name, tenant)


def acme_warnings(enabled: bool, tenants) -> list[str]:
    """Policies asking for ACME certificates on a node that cannot get them."""
    if enabled:
        return []
    return [f"tenant {tenant} asks for ACME certificates (tls.acme) but this node has no [acme] section: "
            "none are issued" for tenant, policy in sorted(tenants.items()) if policy.tls.acme]


class AcmeManager:
    def __init__(self, settings: AcmeConfig, root: Path, store: CertificateStore, policies,
                 events: SecurityEvents | None, *, on_change: Callable[[str, str], object] = certificates_changed,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.root = Path(root)
        self.store = store
        self.policies = policies
        self.events = events
        self.on_change = on_change
        self.clock = clock
        self.challenges = ChallengeFiles(self.root / "challenges")
        self._stop = threading.Event()
        self.client = AcmeClient(
            settings.directory_url, settings.account_key or self.root / "account.key", email=settings.email,
            ca_bundle=settings.ca_bundle, request_timeout=settings.request_timeout,
            order_timeout=settings.order_timeout, challenges_dir=self.challenges, orders_dir=self.root / "orders",
            stop=self._stop)
        self.failures: dict[str, Failures] = {}
        self.checked: float | None = None  # when the last pass ended (unix time)
        self._lock_fd: int | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._skipped_logged: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """Policies changed: plan again now."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether this process holds the lock and runs the orders."""
        return self._lock_fd is not None

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock for a sibling or the next start
            self._lock_fd = None

    async def _run(self) -> None:
        while not self._try_lock():
            await asyncio.sleep(LOCK_RETRY)
        log.info("ACME orders run in this process (pid %d), CA %s", os.getpid(), self.settings.directory_url)
        await _thread(self._load)
        while True:
            self._wake.clear()
            try:
                wake_at = await self._pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ACME pass failed; trying again in %g s", self.settings.retry_min)
                wake_at = self.clock() + self.settings.retry_min
            delay = MAX_SLEEP if wake_at is None else min(MAX_SLEEP, max(0.0, wake_at - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _try_lock(self) -> bool:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root / "manager.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    # ---------------------------------------------------------------- passes

    async def _pass(self) -> float | None:
        """Orders every due certificate; returns when the next one is due."""
        tenants = self.policies.current.tenants
        want, skipped = wanted(tenants)
        self._log_skipped(skipped)
        names = {w.name for w in want}
        for name in set(self.failures) - names:
            del self.failures[name]  # host removed, or tls.acme turned off
        for name in set(await _thread(self.client.saved_orders)) - names:
            await _thread(self.client.forget, name)
        done: set[str] = set()
        while True:
            held = [Held(c.tenant, c.info.hosts, c.info.not_before.timestamp(), c.info.not_after.timestamp())
                    for c in await _thread(self.store.all)]
            now = self.clock()
            upcoming = plan(want, held, self.failures, now, self.settings.renew_before)
            due = [d for d in upcoming.due if d.wanted.name not in done]
            if not due:
                break
            done.add(due[0].wanted.name)
            await self._order(due[0])
        self.checked = self.clock()
        await _thread(self._save)
        return upcoming.wake_at

    async def _order(self, due: Due) -> None:
        w = due.wanted
        try:
            issued = await _thread(self.client.issue, w.name, (w.host,))
            checked = check_upload(issued.chain_pem.decode("ascii"), issued.key_pem.decode("ascii"),
                                   dt.datetime.now(dt.timezone.utc))
            if w.host not in checked.info.hosts:
                raise OrderFailed(f"the CA's certificate names {', '.join(checked.info.hosts)}, not {w.host}")
            stored = await _thread(self._store, due, checked)
        except Stopped:
            return
        except (OrderFailed, CertificateError, OSError) as exc:
            self._failed(due, exc)
            await _thread(self._save)
            return
        await _thread(self.client.forget, w.name)
        self.failures.pop(w.name, None)
        await _thread(self._save)
        if not stored:
            log.warning("certificate %s of tenant %s issued by ACME for %s dropped: the tenant no longer "
                        "serves that host with tls.acme", w.name, w.tenant, w.host)
            return
        log.info("certificate %s of tenant %s %s by ACME for %s, valid until %s", w.name, w.tenant,
                 "renewed" if due.renewal else "issued", w.host, _iso(checked.info.not_after.timestamp()))
        changed = self.on_change(w.tenant, w.name)
        if inspect.isawaitable(changed):
            await changed

    def _store(self, due: Due, checked: CheckedCertificate) -> bool:
        """Stores an issued certificate unless its tenant, or the host, or
        tls.acme went away during the order; under the lock the admin API's
        certificate writes and tenant removals take."""
        w = due.wanted
        with self.store.locked():
            policy = self.policies.current.tenants.get(w.tenant)
            if policy is None or not policy.tls.acme or w.host not in policy.hosts:
                return False
            self.store.put(w.tenant, w.name, checked)
        return True

    def _failed(self, due: Due, exc: Exception) -> None:
        w = due.wanted
        now = self.clock()
        count = self.failures.get(w.name, Failures()).count + 1
        wait = backoff(count, self.settings.retry_min, self.settings.retry_max, getattr(exc, "retry_after", None))
        error = str(exc) or type(exc).__name__
        self.failures[w.name] = Failures(count, now + wait, error)
        log.warning("ACME order for %s (tenant %s) failed, %d in a row; next try in %.0f s: %s",
                    w.host, w.tenant, count, wait, error)
        policy = self.policies.current.tenants.get(w.tenant)
        if self.events is None or policy is None:
            return
        certificate = {"name": w.name, "hosts": [w.host], "error": error, "failures": count,
                       "next_attempt": _iso(now + wait)}
        if due.renewal:
            certificate["not_after"] = _iso(due.expires)
        self.events.certificate(w.tenant, policy.filters.events,
                                CERTIFICATE_RENEWAL_FAILED if due.renewal else CERTIFICATE_ISSUE_FAILED, certificate)

    def _log_skipped(self, skipped: list[tuple[str, str, str]]) -> None:
        for tenant, host, reason in skipped:
            if (tenant, host, reason) not in self._skipped_logged:
                log.warning("tenant %s: no ACME certificate for host %s: %s", tenant, host, reason)
        self._skipped_logged = set(skipped)

    # ----------------------------------------------------------------- state

    @property
    def _state_path(self) -> Path:
        return self.root / "state.json"

    def _load(self) -> None:
        try:
            data = json.loads(self._state_path.read_bytes())
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            self.failures = {name: Failures(int(f["failures"]), float(f["next_attempt"]), f.get("last_error"))
                             for name, f in data["certificates"].items()}
            self.checked = data.get("checked")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("ACME state %s cannot be read (%s); starting without its failures", self._state_path, exc)

    def _save(self) -> None:
        """The failures and the end of the last pass, atomically."""
        data = {
            "version": STATE_VERSION,
            "checked": self.checked,
            "certificates": {name: {"failures": f.count, "next_attempt": f.next_attempt, "last_error": f.last_error}
                             for name, f in sorted(self.failures.items())},
        }
        temporary = self.root / ".state.json.tmp"
        with open(temporary, "wb") as out:
            out.write(json.dumps(data, indent=1).encode())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self._state_path)


async def _thread(fn, *args):
    """``fn(*args)`` in a daemon thread: a blocked call to the CA never holds
    up the event loop, nor the process's exit."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(method, value) -> None:
        if not future.done():
            method(value)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="edge-acme", daemon=True).start()
    return await future


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
