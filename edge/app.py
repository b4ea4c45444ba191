"""Builds a node from its configuration: shared state, the HTTP listener,
policy reloading, and the lifecycle of one worker process."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import secrets
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from edge.admin.control import ControlSocket
from edge.cache.purge import PurgeSpec
from edge.cache.purger import Purger
from edge.shipped import policies_dir
from edge.cache.disk import DiskStore
from edge.cache.memory import MemoryStore
from edge.cache.tiered import TieredStore
from edge.config import ConfigError, NodeConfig, read_cidr_file
from edge.filters.chain import FilterChain, MethodFilter
from edge.filters.delivery import DeliveryFilter
from edge.filters.ip_lists import IpListFilter
from edge.filters.rate_limits import RateLimitFilter
from edge.filters.request_limits import RequestLimitFilter
from edge.filters.under_attack import UnderAttackFilter
from edge.filters.waf import WafFilter
from edge.geo.db import GeoDB
from edge.geo.proxy_protocol import ProxyProtocolSite
from edge.http.aiohttp_adapter import ParseFailure, Server, line_limit, parse_failure
from edge.http.slow import HeadTimeoutHandler
from edge.observe import metrics
from edge.observe.access import AccessLog
from edge.observe.events import SecurityEvents, WebhookSender
from edge.origin.guard import AddressPolicy
from edge.origin.pool import OriginClients
from edge.pipeline import Pipeline
from edge.waf import WafRuleError, default_rules_dir
from edge.waf.engine import compiled as compiled_waf
from edge.policy.load import LoadReport, PolicyDirectory
from edge.policy.sections.cidrs import CidrSet
from edge.policy.resolve import PolicySet
from edge.policy.sources import PolicySource
from edge.tls.acme import AcmeManager, acme_root, acme_warnings
from edge.tls.challenges import ChallengeFiles
from edge.tls.context import CertificateFileError
from edge.tls.expiry import ExpiryWatch
from edge.tls.listener import Terminator, TlsSite
from edge.tls.sni import Certificates
from edge.tls.store import CertificateStore, default_root

log = logging.getLogger("edge")


@dataclass(slots=True)
class NodeState:
    """Everything a worker shares between requests. ``policies.current`` is
    the one reference swapped on reload; a request reads it once."""

    config: NodeConfig
    policies: PolicySource
    store: TieredStore
    origins: OriginClients
    filters: FilterChain
    access_log: AccessLog | None
    geo: GeoDB | None = None
    events: SecurityEvents | None = None
    waf: WafFilter | None = None
    ip_lists: IpListFilter | None = None
    pipeline: Pipeline | None = None  # set by make_server
    control: ControlSocket | None = None  # the worker's, with several workers (set by Node.start)
    certificates: CertificateStore | None = None  # tenant certificates; None without a policy directory
    certificate_watch: ExpiryWatch | None = None  # their expiry (edge.tls.expiry)
    # Run by every worker when a certificate was stored or removed, before
    # the admin API answers: the HTTPS listeners set it to re-read the store
    # (it may return an awaitable). None: this worker serves no HTTPS.
    tls_reload: Callable[[], object] | None = None
    challenges: ChallengeFiles | None = None  # HTTP-01 answers, with [acme]

    def waf_rule_ids(self) -> frozenset[str] | None:
        """The ids of the WAF rules in force, which policies' exclusions must name."""
        return None if self.waf is None else self.waf.waf.ruleset.ids

    def reloaded_waf_rule_ids(self) -> frozenset[str] | None:
        """The ids of the WAF rules a reload puts in force: the rule files'
        when they compile (once per version, so the reload reuses it), else
        those in force, which the reload keeps. A policy about to be written
        is checked against them: the reload after the write judges it so."""
        if self.waf is None:
            return None
        try:
            rules, _ = compiled_waf(default_rules_dir())
        except WafRuleError:
            return self.waf_rule_ids()
        return rules.ids


_PARSE_ANSWERS = {
    ParseFailure.REQUEST_LINE_TOO_LONG: (414, "request line too long"),
    ParseFailure.FIELD_TOO_LARGE: (431, "header field too large"),
    ParseFailure.TOO_MANY_FIELDS: (431, "too many header fields"),
    ParseFailure.MALFORMED: (400, "malformed request"),
}


class _Protocol(HeadTimeoutHandler):
    """aiohttp's connection handler with precise statuses for parse errors
    (414 for the request line, 431 for header fields), no echo of the
    offending bytes or tracebacks, and the slow-client deadlines for request
    heads and for taking responses (edge.http.slow)."""

    def __init__(self, manager, *, line_limit: int = 8190, **kwargs) -> None:
        super().__init__(manager, **kwargs)
        self.line_limit = line_limit

    def error_answer(self, status, exc):
        failure = parse_failure(status, exc, self.line_limit)
        if failure is None:
            return None
        status, text = _PARSE_ANSWERS[failure]
        # The kind only: a parser's message can quote the raw line (a cookie, a token).
        log.debug("bad request from client: %s", type(exc).__name__)
        return web.Response(
            status=status,
            text=f"{status} {text}\n",
            headers={"Cache-Control": "no-store", "Server": "edge", "Cache-Status": f"{self.node}; detail=bad-request"},
        )


def build_state(config: NodeConfig, policies: PolicySource, *, access_log: AccessLog | None = None) -> NodeState:
    """Raises GeoDBError for a missing or broken GeoIP database: a node that
    cannot tell countries apart must not start with a delivery policy."""
    cache = config.cache
    geo = GeoDB(config.geoip.database, check_interval=config.geoip.check_interval or 5.0) if config.geoip.database else None
    memory = MemoryStore(cache.memory_size, cache.memory_max_object)
    disk = DiskStore(cache.disk_path, cache.disk_size) if cache.disk_path else None
    if disk is not None:
        disk.quota = functools.partial(tenant_disk_quota, policies, cache.tenant_quota)
    ip_lists = IpListFilter(*node_lists(config))  # ConfigError for a broken list file
    under_attack = UnderAttackFilter(node_secret())
    rules, engine = compiled_waf(default_rules_dir())  # WafRuleError refuses the start
    waf = WafFilter(engine)
    guard = AddressPolicy(config.outbound.allow_networks)
    # The shared filter chain, in the order every request meets it. The
    # challenge comes last: allow-listed clients are marked by then, and a
    # client from a refused country gets its 451, not a puzzle.
    filters = FilterChain((
        MethodFilter(),
        ip_lists,
        RequestLimitFilter(),
        RateLimitFilter(client_rate=config.filters.client_rate, client_burst=config.filters.client_burst),
        DeliveryFilter(geo, config.country, config.name),
        under_attack,
        waf,
    ))
    certificates = certificate_store(config, policies)
    events = SecurityEvents(config.name, sender=WebhookSender(guard=guard))
    return NodeState(
        config=config,
        policies=policies,
        store=TieredStore(memory, disk),
        origins=OriginClients(node_name=config.name, queue_timeout=config.timeouts.origin_queue, guard=guard,
                              refusal_log_interval=config.log.refused_origin_interval,
                              client_certificate=config.origin_tls.client_certificate,
                              client_key=config.origin_tls.client_key),
        filters=filters,
        access_log=access_log,
        geo=geo,
        events=events,
        waf=waf,
        ip_lists=ip_lists,
        certificates=certificates,
        certificate_watch=ExpiryWatch(certificates, events, policies) if certificates is not None else None,
    )


def tenant_disk_quota(policies: PolicySource, node_default: int, tenant: str) -> int:
    """Of the disk tier, what ``tenant`` may hold: its policy's
    ``cache.disk_quota``, else the node's ``cache.tenant_disk_quota``. Read
    at every disk write, so a reloaded policy counts from the next one."""
    policy = policies.current.tenants.get(tenant)
    quota = policy.cache.disk_quota if policy is not None else None
    return node_default if quota is None else quota


def node_lists(config: NodeConfig) -> tuple[CidrSet, CidrSet]:
    """The node-wide allow and deny lists: ``[filters]`` entries plus the
    lines of its files. ConfigError names a file and its bad lines."""
    lists = config.filters
    out = []
    for inline, path in ((lists.allow, lists.allow_file), (lists.deny, lists.deny_file)):
        nets = list(inline)
        if path is not None:
            nets.extend(read_cidr_file(path))
        out.append(CidrSet(tuple(nets)))
    return out[0], out[1]


def node_secret() -> bytes:
    """The key that signs challenges and clearance cookies. Every worker of a
    node must share it (a challenge issued by one is answered to another):
    ``EDGE_SECRET`` when set, else made once and left in the environment,
    which the workers inherit. Nodes behind one name share it by setting it."""
    value = os.environ.get("EDGE_SECRET", "")
    if len(value) < 32:
        if value:
            log.warning("EDGE_SECRET is shorter than 32 characters and was replaced by a random key for this run")
        value = os.environ["EDGE_SECRET"] = secrets.token_hex(32)
    return value.encode()


def delivery_warnings(state: NodeState) -> list[str]:
    """Policies this node cannot honour as written (said at start and reload)."""
    out = acme_warnings(state.config.acme.enabled, state.policies.current.tenants)
    for tenant, policy in sorted(state.policies.current.tenants.items()):
        delivery = policy.delivery
        if delivery.restricted and state.geo is None:
            out.append(f"tenant {tenant} restricts countries but no GeoIP database is configured: every client counts as unknown")
        if delivery.edge_countries and state.config.country not in delivery.edge_countries:
            where = state.config.country or "not configured"
            out.append(
                f"tenant {tenant} may only be served from {', '.join(sorted(delivery.edge_countries))}; "
                f"this node's country is {where}, so its clients are sent away"
            )
    return out


def unverified_origins(policies: PolicySet, tenants: Iterable[str]) -> list[str]:
    """The https origins of ``tenants`` that are not verified ("verify": false)."""
    out = []
    for tenant in sorted(tenants):
        policy = policies.tenants.get(tenant)
        for origin in policy.origins if policy is not None else ():
            if not origin.verify:
                out.append(f"tenant {tenant} origin {origin.url}: TLS certificate verification is off (verify: "
                           "false): whoever is on the path to it can read and change its traffic")
    return out


def certificate_dir(config: NodeConfig, policies: PolicySource) -> Path | None:
    """Where the tenants' certificates are: ``[tls] certificate_dir``, else
    ``certificates`` beside the policy directory (the command line sets it)."""
    if config.tls.certificate_dir is not None:
        return config.tls.certificate_dir
    if isinstance(policies, PolicyDirectory):
        return default_root(policies.path)
    return None


def certificate_store(config: NodeConfig, policies: PolicySource) -> CertificateStore | None:
    """The tenants' certificates (edge.tls.store); None for a node reading
    one policy file without ``[tls] certificate_dir``."""
    root = certificate_dir(config, policies)
    return CertificateStore(root) if root is not None else None


def make_terminator(config: NodeConfig, store: CertificateStore | None) -> Terminator:
    if store is None:
        log.warning("HTTPS listeners without a certificate directory: only tls.default_certificate is served")
        store = CertificateStore(Path(os.devnull))  # lists nothing
    return Terminator(Certificates(store, config.tls.default_certificate), config.tls.handshake_timeout)


def make_server(state: NodeState) -> web.Server:
    pipeline = state.pipeline = Pipeline(state)
    limits = state.config.limits
    timeouts = state.config.timeouts
    max_line = line_limit(limits.max_request_line, limits.max_header_size)
    connection = functools.partial(_Protocol, line_limit=max_line, node=state.config.name,
                                   header_read=timeouts.header_read, send=timeouts.send,
                                   send_min_rate=timeouts.send_min_rate)
    return Server(
        pipeline.handle,
        connection=connection,
        max_line_size=max_line,
        max_field_size=limits.max_header_size,
        max_headers=limits.max_headers,
        keepalive_timeout=timeouts.keepalive,
        access_log=None,
        # Request bodies are forwarded byte for byte under the client's own
        # Content-Encoding and Content-Length; limits count what is sent.
        auto_decompress=False,
    )


class Node:
    """One worker: listener(s), shared state, policy watcher."""

    def __init__(self, config: NodeConfig, policies: PolicySource, *, reuse_port: bool = False) -> None:
        self.config = config
        self.policies = policies
        self.reuse_port = reuse_port
        self.state: NodeState | None = None
        self.runner: web.ServerRunner | None = None
        self._watch: asyncio.Task | None = None
        self._geo_watch: asyncio.Task | None = None
        self._certificate_watch: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.addresses: list[tuple[str, int]] = []
        self.listeners: list[tuple[str, str, int]] = []  # (scheme, host, port) of each bound address
        self.tls: Terminator | None = None  # with HTTPS listeners
        self.admin = None  # edge.admin.server.AdminServer when [admin] is enabled
        self.control: ControlSocket | None = None
        self.acme: AcmeManager | None = None  # with [acme]; runs orders in one process of the node

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        access = AccessLog() if self.config.log.access else None
        if access is not None:
            access.start()
        self.state = build_state(self.config, self.policies, access_log=access)
        if any(listen.tls for listen in self.config.listen):
            self.tls = make_terminator(self.config, self.state.certificates)
            self.state.tls_reload = self.reload_certificates
            try:
                self.tls.reload(self.policies.current)
            except CertificateFileError as exc:
                raise ConfigError(f"tls.default_certificate {self.config.tls.default_certificate}: {exc}") from None
        store = self.state.certificates
        if self.config.acme.enabled and store is not None:
            self.acme = AcmeManager(self.config.acme, acme_root(store.root), store, self.policies, self.state.events,
                                    on_change=self._certificate_issued)
            self.state.challenges = self.acme.challenges
        if self.state.events is not None:
            self.state.events.start()
        for warning in delivery_warnings(self.state) + unverified_origins(self.policies.current,
                                                                          self.policies.current.tenants):
            log.warning("%s", warning)
        run_dir = self.config.admin.run_dir
        if self.config.workers > 1 and run_dir is not None:
            # Registered before the first request is served: from here on,
            # every purge and policy write of a sibling reaches this worker.
            self.control = self.state.control = ControlSocket(
                run_dir, {"reload": self._on_reload, "purge": self._on_purge, "publish": self._on_publish,
                          "certificates": self._on_certificates})
            await self.control.start()
            if self.policies.changed():
                self.reload()  # a write that came before the registration
        self.runner = web.ServerRunner(
            make_server(self.state), handle_signals=False, shutdown_timeout=self.config.timeouts.shutdown
        )
        await self.runner.setup()
        for listen in self.config.listen:
            reuse_port = self.reuse_port or None
            if listen.tls:
                peers = listen.proxy_protocol_from if listen.proxy_protocol else None
                site = TlsSite(self.runner, listen.host, listen.port, terminator=self.tls, proxy_peers=peers,
                               reuse_port=reuse_port, backlog=1024)
            elif listen.proxy_protocol:
                site = ProxyProtocolSite(self.runner, listen.host, listen.port, peers=listen.proxy_protocol_from,
                                         reuse_port=reuse_port, backlog=1024)
            else:
                site = web.TCPSite(self.runner, listen.host, listen.port, reuse_port=reuse_port, backlog=1024)
            bound = len(self.runner.addresses)
            await site.start()
            scheme = "https" if listen.tls else "http"
            self.listeners += [(scheme, *address[:2]) for address in self.runner.addresses[bound:]]
        self.addresses = [address[:2] for address in self.runner.addresses]
        if self.acme is not None:
            self.acme.start()  # once listening: the CA's validation requests must find an answer
        if self.config.admin.enabled:
            from edge.admin.server import AdminServer

            self.admin = AdminServer(self.config, self.state, self.reload, secret=node_secret(),
                                     reuse_port=self.reuse_port, certificates_changed=self.certificates_changed)
            await self.admin.start()
        interval = self.config.policies.watch_interval
        if interval > 0:
            self._watch = asyncio.ensure_future(self._watcher(interval))
        if self.state.geo is not None and self.config.geoip.check_interval > 0:
            self._geo_watch = asyncio.ensure_future(self.state.geo.watch(self.config.geoip.check_interval))
        if self.state.certificate_watch is not None:
            self._certificate_watch = asyncio.ensure_future(
                self._certificate_watcher(self.state.certificate_watch, self.config.certificates.expiry_check_interval))

    def hangup(self) -> None:
        """SIGHUP: policies, certificates, and the admin tokens file."""
        self.reload()
        self.reload_certificates()
        if self.admin is not None:
            self.admin.reload_tokens()

    @property
    def tls_addresses(self) -> list[tuple[str, int]]:
        return [(host, port) for scheme, host, port in self.listeners if scheme == "https"]

    def reload_certificates(self) -> int | None:
        """Serve the certificates in the store, for the hosts of the policies
        in force, to this worker's next handshakes; open connections keep
        theirs. What the certificate API calls in every worker after a write;
        policy reloads call it too, as hosts move. Returns the number of
        (tenant, name) groups served; None without HTTPS listeners, or when
        the default certificate broke (the previous certificates stay)."""
        if self.tls is None:
            return None
        try:
            index = self.tls.reload(self.policies.current)
        except CertificateFileError as exc:
            log.error("tls.default_certificate %s cannot be used, the previous certificates stay: %s",
                      self.config.tls.default_certificate, exc)
            return None
        return len(index.groups)

    def reload(self) -> LoadReport:
        if self.state is not None and self.state.ip_lists is not None:
            try:
                self.state.ip_lists.set_node_lists(*node_lists(self.config))
            except ConfigError as exc:
                log.error("node address lists rejected, the previous lists stay: %s", exc)
        if self.state is not None and self.state.waf is not None:
            try:
                rules, engine = compiled_waf(default_rules_dir())
            except WafRuleError as exc:
                log.error("WAF rules rejected, the previous rules stay: %s", exc)
            else:
                self.state.waf.waf = engine
        # Exclusions must name rules of the set in force (before the start:
        # the shipped set, which the start compiles).
        report = self.policies.load(waf_rule_ids=self.state.waf_rule_ids() if self.state is not None else None,
                                    origin_client_certificate=self.config.origin_tls.enabled)
        for err in report.errors:
            log.error("policy rejected: %s", err)
        for tenant in report.kept:
            log.error("tenant %s keeps its previous policy: the new file is invalid", tenant)
        if report.loaded or report.removed:
            log.info("policies reloaded: loaded %s, removed %s", report.loaded, report.removed)
            if self.acme is not None:
                self._on_loop(self.acme.wake)
            if self.state is not None:
                for warning in delivery_warnings(self.state) + unverified_origins(self.policies.current,
                                                                                  report.loaded):
                    log.warning("%s", warning)
                origins = [o for policy in self.policies.current.tenants.values() for o in policy.origins]
                self._on_loop(self.state.origins.retain, origins)
            self.reload_certificates()  # hosts may have moved between tenants
        return report

    def _on_loop(self, fn, *args) -> None:
        """Call ``fn`` on the node's event loop (the admin API reloads in a thread)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._loop.call_soon_threadsafe(fn, *args)
        else:
            fn(*args)

    async def _on_reload(self, payload: dict) -> dict:
        report = await asyncio.get_running_loop().run_in_executor(None, self.reload)
        return {"loaded": report.loaded, "removed": report.removed}

    async def _on_publish(self, payload: dict) -> dict:
        """A sibling answers a scrape: this worker's counts go to the files now."""
        metrics.publish(self.state.store.memory)
        return {}

    async def certificates_changed(self) -> None:
        """A certificate was stored or removed, by this worker or a sibling:
        this worker's HTTPS listeners re-read the store."""
        hook = self.state.tls_reload
        if hook is not None:
            result = hook()
            if inspect.isawaitable(result):
                await result
        metrics.certificate_change()

    async def _certificate_issued(self, tenant: str, name: str) -> None:
        """An ACME certificate was stored: every worker takes it, as after an upload."""
        await self.certificates_changed()
        control = self.state.control
        if control is not None:
            fan = await control.fan_out("certificates", {})
            if not fan.ok:
                log.warning("certificate %s of tenant %s: workers %s have not taken it yet: %s", name, tenant,
                            sorted(fan.failed), "; ".join(sorted(set(fan.failed.values()))))

    async def _on_certificates(self, payload: dict) -> dict:
        await self.certificates_changed()
        return {}

    @staticmethod
    async def _certificate_watcher(watch: ExpiryWatch, interval: float) -> None:
        while True:
            try:
                await watch.check()
            except Exception:
                log.exception("certificate expiry check failed; trying again later")
            if interval <= 0:
                return
            await asyncio.sleep(interval)

    async def _on_purge(self, payload: dict) -> dict:
        # This worker's memory tier only: the sender purges the shared disk.
        spec = PurgeSpec.from_json(payload["spec"])
        return {"affected": await Purger(self.state.store).apply(spec, memory=True, disk=False)}

    async def _watcher(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if self.policies.changed():
                    self.reload()
            except Exception:
                log.exception("policy reload failed; previous policies kept")

    async def stop(self) -> None:
        if self.acme is not None:
            await self.acme.stop()
        if self.admin is not None:
            await self.admin.stop()
        log.info("worker %d stopping: finishing the requests in progress (at most %g s)", os.getpid(),
                 self.config.timeouts.shutdown)
        for task in (self._watch, self._geo_watch, self._certificate_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.runner is not None:
            await self.runner.cleanup()
        if self.tls is not None:
            self.tls.close()
        if self.state is not None and self.state.pipeline is not None:
            await self.state.pipeline.close()
        if self.state is not None:
            await self.state.origins.close()
            await self.state.store.drain()
        if self.control is not None:
            # Only now: until its last write to the shared disk tier is done,
            # a sibling's purge must reach this worker's barriers.
            await self.control.stop()
            self.control = None
        if self.state is not None:
            await self.state.store.close()
            if self.state.events is not None:
                await self.state.events.close()
            if self.state.access_log is not None:
                await self.state.access_log.close()


async def serve_forever(node: Node, *, ready=None, extra_cleanup=()) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads policies."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.hangup)
    await node.start()
    if ready is not None:
        ready(node)
    try:
        await stop.wait()
    finally:
        await node.stop()
        for cleanup in extra_cleanup:
            await cleanup()


def default_policies_dir() -> Path:
    return policies_dir()
