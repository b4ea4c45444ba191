"""Origin requests: keep-alive pools, failover across a tenant's origins and
passive health.

An origin that fails ``failures_before_down`` times in a row (connect error,
timeout, or a status the policy names) is skipped for ``cooldown`` seconds;
after that it gets traffic again and one more failure marks it down at once.
When every origin is down the one that comes back soonest is still tried:
serving from a possibly-healthy origin beats refusing everyone.

A request waits at most ``queue_timeout`` seconds (``timeouts.origin_queue``)
for a free connection when all ``max_connections`` of its origin are busy,
then fails with ``origin-busy``. That is this node's saturation, not the
origin's fault: it counts against no origin's health and is not failed over
(the next origin stands in for a failing one, it is not extra capacity).

A guarded origin at a refused address is refused on every request, and any
client can ask for it: the warning is written once per origin URL per
``REFUSAL_LOG_INTERVAL`` seconds, with the count of refusals left out.

A kept-alive connection can be spoilt by the origin while it sat in the pool
(bytes after a HEAD response, a close that crossed the next request). An
idempotent request without a body that fails on such a reused connection
before any valid response head is sent once more, on a new connection.

A policy reload that leaves an origin out of every policy retires its pool:
its connections are closed as soon as the requests using them are done.

An https origin whose certificate does not verify (edge.origin.tls) fails
like one that refuses the connection: it counts against its health, the
next origin is tried, and the log line names the tenant and the reason.
"""
from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import logging
import time
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from edge.http.aiohttp_adapter import Connector, InterimAwareResponse, PoolBusy, interim_responses_to, parse_failed
from edge.http.slow import ClientBodyError
from edge.observe.throttle import LogThrottle
from edge.origin.guard import AddressPolicy, connector, forbidden
from edge.origin.interim import ClientRelay, InterimGuard
from edge.origin.tls import OriginContexts, TLSSetupError, failure_reason

log = logging.getLogger("edge.origin")

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
REFUSAL_LOG_INTERVAL = 60.0  # seconds


class Failure(enum.Enum):
    CONNECT = "origin-connect"
    TIMEOUT = "origin-timeout"
    PROTOCOL = "origin-protocol"
    STATUS = "origin-status"
    BUSY = "origin-busy"  # no free connection to the origin in time
    # A guarded origin (set by a tenant token) at an address the node refuses.
    FORBIDDEN = "origin-forbidden-address"

    @property
    def status(self) -> int:
        if self is Failure.BUSY:
            return 503
        return 504 if self is Failure.TIMEOUT else 502

    @property
    def text(self) -> str:
        """For the client's error body."""
        if self is Failure.TIMEOUT:
            return "origin timed out"
        if self is Failure.FORBIDDEN:
            return "origin address not allowed"
        if self is Failure.BUSY:
            return "origin busy, try again shortly"
        return "origin unreachable or broken"


class OriginError(Exception):
    def __init__(self, failure: Failure, origin: str, detail: str = "") -> None:
        super().__init__(f"{failure.value} {origin} {detail}".strip())
        self.failure = failure
        self.origin = origin


@dataclass(slots=True)
class _Attempt:
    """One origin request's use of the pool (see _Connector)."""

    fresh: bool = False  # take no kept-alive connection
    reused: bool = False  # a kept-alive connection was taken


_ATTEMPT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("origin_attempt", default=None)


class _Connector(Connector):
    """A connector that tells a request whether it got a kept-alive
    connection, and gives none to a request that must have a new one."""

    def may_reuse(self) -> bool:
        attempt = _ATTEMPT.get()
        return attempt is None or not attempt.fresh

    def reused(self) -> None:
        attempt = _ATTEMPT.get()
        if attempt is not None:
            attempt.reused = True


def _spoilt(exc: BaseException) -> bool:
    """Whether a failure before the response head can be the connection's
    own: closed or reset, or bytes before the status line that the previous
    response left (a body after a HEAD response)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False  # a new connection that could not be made
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return True
    return isinstance(exc, aiohttp.ClientResponseError) and parse_failed(exc.__cause__)


@dataclass(slots=True, eq=False)
class _Pool:
    """One origin's connections, and the requests using them: counted from
    their start until their response is released."""

    session: aiohttp.ClientSession
    server_name: str | None = None  # https: the name TLS sends and verifies
    busy: int = 0
    retired: bool = False  # no policy names the origin any more: closed once idle


def _ident(origin) -> tuple:
    return (origin.url, origin.connect_timeout, origin.read_timeout, origin.max_connections, origin.guarded,
            *OriginContexts.key(origin), origin.tls_name)


@dataclass(slots=True)
class _Health:
    failures: int = 0
    down_until: float = 0.0


class OriginClients:
    """All origin connection pools of a node process, shared by tenants whose
    origins are identical, kept across policy reloads that keep their origin
    (see ``retain``). Guarded origins
    (set by tenant tokens) get pools of their own whose every connect is
    checked against ``guard``."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, node_name: str = "edge", queue_timeout: float = 5.0,
        guard: AddressPolicy = AddressPolicy(), refusal_log_interval: float = REFUSAL_LOG_INTERVAL,
        client_certificate: Path | None = None, client_key: Path | None = None,
    ) -> None:
        self._pools: dict[tuple, _Pool] = {}
        self._retired: set[_Pool] = set()  # retired while requests still used them
        self._wanted: frozenset[tuple] | None = None  # the pools the policies use; None: before any reload
        self._closing: set[asyncio.Task] = set()
        self._health: dict[str, _Health] = {}
        self._clock = clock
        self._queue_timeout = queue_timeout
        self._guard = guard
        self._refusals = LogThrottle(refusal_log_interval, clock)
        self._tls = OriginContexts(client_certificate, client_key)

    def _pool(self, origin) -> _Pool:
        ident = _ident(origin)
        pool = self._pools.get(ident)
        if pool is not None and not pool.session.closed:
            return pool
        pool = _Pool(self._new_session(origin), origin.tls_name)
        if self._wanted is not None and ident not in self._wanted:
            # A request that began under a policy a reload has since replaced:
            # a pool of its own, closed when it is done.
            pool.retired = True
            self._retired.add(pool)
        else:
            self._pools[ident] = pool
        return pool

    def _new_session(self, origin) -> aiohttp.ClientSession:
        """TLSSetupError when an https origin's context cannot be built."""
        tls = {"ssl": self._tls.context(origin)} if origin.scheme == "https" else {}
        conns = connector(
            self._guard if origin.guarded else None,
            cls=_Connector,
            queue_timeout=self._queue_timeout,
            limit=origin.max_connections,
            limit_per_host=origin.max_connections,
            ttl_dns_cache=60,
            keepalive_timeout=30,
            **tls,
        )
        return aiohttp.ClientSession(
            connector=conns,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=origin.connect_timeout, sock_read=origin.read_timeout
            ),
            # The edge forwards bytes as the origin encoded them; decoding
            # would break Content-Length, ETags and stored variants.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Interim (1xx) responses are bounded and may be relayed (edge/origin/interim.py).
            response_class=InterimAwareResponse,
            max_line_size=16384,
            max_field_size=16384,
            read_bufsize=2**16,
        )

    def retain(self, origins: Iterable) -> None:
        """Keep the pools of ``origins`` (every origin of the policies now in
        force); close the others once the requests using them are done.
        Called on the event loop after each policy reload."""
        origins = list(origins)
        self._wanted = frozenset(_ident(o) for o in origins)
        self._tls.retain(origins)
        for ident in [i for i in self._pools if i not in self._wanted]:
            pool = self._pools.pop(ident)
            pool.retired = True
            self._retired.add(pool)
            if pool.busy == 0:
                self._close_later(pool)

    def _done(self, pool: _Pool) -> None:
        pool.busy -= 1
        if pool.retired and pool.busy == 0:
            self._close_later(pool)

    def _close_later(self, pool: _Pool) -> None:
        self._retired.discard(pool)
        task = asyncio.ensure_future(pool.session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def health(self, url: str) -> _Health:
        h = self._health.get(url)
        if h is None:
            h = self._health[url] = _Health()
        return h

    def is_down(self, url: str) -> bool:
        h = self._health.get(url)
        return h is not None and h.down_until > self._clock()

    def _order(self, origins) -> list:
        now = self._clock()
        up = [o for o in origins if self.health(o.url).down_until <= now]
        if up:
            return up
        return [min(origins, key=lambda o: self.health(o.url).down_until)]

    def _failed(self, origin, failover) -> None:
        h = self.health(origin.url)
        h.failures += 1
        if h.failures >= failover.failures_before_down:
            if h.down_until <= self._clock():
                log.warning("origin %s marked down for %.0fs after %d failures", origin.url, failover.cooldown, h.failures)
            h.down_until = self._clock() + failover.cooldown

    def _succeeded(self, origin) -> None:
        h = self._health.get(origin.url)
        if h is not None and (h.failures or h.down_until):
            h.failures = 0
            h.down_until = 0.0

    async def send(
        self,
        origins,
        failover,
        method: str,
        target: str,
        headers: CIMultiDict,
        client_host: str,
        body: AsyncIterable[bytes] | None,
        retry: bool,
        relay: ClientRelay | None = None,
        tenant: str = "",
    ) -> tuple[aiohttp.ClientResponse, object]:
        """Send one request, failing over when allowed. ``retry`` is true
        only for idempotent requests without a body (a streamed body cannot
        be replayed). ``relay``: the client that gets the origin's interim
        responses; ``tenant``: whose request it is, for the log. Returns the
        response (headers read, body not) and the origin that answered."""
        order = self._order(origins)
        last: OriginError | None = None
        # One guard for every attempt below: the cap counts them all, and a
        # retry's repeat of an interim response reaches the client once.
        interim = InterimGuard(relay)
        for i, origin in enumerate(order):
            more = retry and i + 1 < len(order)
            headers["Host"] = origin.host_header or client_host
            url = URL(origin.url.rstrip("/") + target, encoded=True)
            try:
                resp = await self._request(self._pool(origin), method, url, headers, body, retry, interim)
            except TLSSetupError as exc:
                last = OriginError(Failure.CONNECT, origin.url, str(exc))
            except PoolBusy:
                # Not the origin's failure: no health change, no failover.
                raise OriginError(Failure.BUSY, origin.url, "no free connection") from None
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
                last = OriginError(Failure.TIMEOUT, origin.url, type(exc).__name__)
            except aiohttp.ClientConnectorError as exc:
                refused = forbidden(exc)
                if refused is not None:
                    # Not the origin's health: another tenant's unguarded
                    # origin at the same URL must not be marked down by it.
                    last = OriginError(Failure.FORBIDDEN, origin.url, str(refused))
                    self._log_refusal(origin.url, last)
                    if not more:
                        break
                    continue
                last = OriginError(Failure.CONNECT, origin.url, failure_reason(exc) or str(exc.os_error))
            except (aiohttp.ClientError, ValueError) as exc:
                if isinstance(exc.__cause__, ClientBodyError):
                    # The client's upload failed (too slow, too large): not
                    # the origin's fault, so not against its health.
                    raise OriginError(Failure.PROTOCOL, origin.url, "client body aborted") from exc
                # Malformed status line or headers, or a connection closed
                # before the response: the origin broke the protocol.
                last = OriginError(Failure.PROTOCOL, origin.url,
                                   failure_reason(exc) or f"{type(exc).__name__}: {exc}")
            else:
                if resp.status in failover.retry_on_status:
                    self._failed(origin, failover)
                    if more:
                        resp.release()
                        continue
                    return resp, origin
                self._succeeded(origin)
                return resp, origin
            self._failed(origin, failover)
            log.warning("origin request failed: %s%s", f"tenant {tenant}: " if tenant else "", last)
            if not more:
                break
        assert last is not None
        raise last

    def _log_refusal(self, url: str, error: OriginError) -> None:
        held = self._refusals.admit(url)
        if held is None:
            return
        log.warning("origin request refused: %s%s", error, f" (and {held} more since the last line)" if held else "")
        self._log_held_refusals()

    def _log_held_refusals(self, *, final: bool = False) -> None:
        for url, held in self._refusals.expired(final=final):
            log.warning("origin requests refused: %d more to %s since the last line", held, url)

    async def _request(self, pool: _Pool, method, url, headers, body, retry: bool,
                       interim: InterimGuard) -> aiohttp.ClientResponse:
        pool.busy += 1
        attempt = _Attempt()
        token = _ATTEMPT.set(attempt)
        try:
            while True:
                try:
                    with interim_responses_to(interim):
                        resp = await pool.session.request(method, url, headers=headers, data=body,
                                                          allow_redirects=False, skip_auto_headers=_SKIP_AUTO,
                                                          compress=None, server_hostname=pool.server_name)
                    break
                except aiohttp.ClientError as exc:
                    if attempt.fresh or not (retry and attempt.reused and _spoilt(exc)):
                        raise
                    log.info("origin %s: a kept-alive connection failed (%s), sending again on a new one",
                             url.origin(), type(exc).__name__)
                    attempt.fresh = True
        except BaseException:
            self._done(pool)
            raise
        finally:
            _ATTEMPT.reset(token)
        if resp.connection is None:  # nothing left to read: already back in the pool
            self._done(pool)
        else:
            resp.connection.add_callback(functools.partial(self._done, pool))
        return resp

    async def close(self) -> None:
        self._log_held_refusals(final=True)
        pools = [*self._pools.values(), *self._retired]
        self._pools.clear()
        self._retired.clear()
        for pool in pools:
            await pool.session.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
