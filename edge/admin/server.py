"""The admin API's listener in one worker: tokens, the failed-attempt
limiter, the audit log and the routes of ``app.py`` behind aiohttp, whose
own answers to requests it cannot parse say as little as the API's."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from edge.admin.app import _HEADERS, make_app, shared_tiers
from edge.admin.audit import AuditLog
from edge.admin.auth import FailureKeys, MemoryFailures, SharedFailures, TokenSet
from edge.admin.context import AdminContext
from edge.admin.hosts import allowed_names
from edge.admin.store import PolicyFiles
from edge.config import ConfigError, NodeConfig, read_tokens_file
from edge.http.aiohttp_adapter import AppRunner, Connection
from edge.observe import metrics
from edge.policy.load import LoadReport, PolicyDirectory

log = logging.getLogger("edge.admin")


class _Connection(Connection):
    """aiohttp's connection handler, but its own answers to requests it
    cannot parse carry no version banner, echo nothing of the request and
    log no client address."""

    def error_answer(self, status, exc):
        # The kind only: a parser's message can quote the raw header line (a token).
        log.debug("admin API: request not handled (%d): %s", status, type(exc).__name__)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        return web.Response(status=status, text=f"{status} {phrase}\n", headers=_HEADERS)


class AdminServer:
    """The admin listener of one worker. ``Node`` starts and stops it; with
    several workers, changes reach the siblings through the worker's control
    socket (``state.control``)."""

    def __init__(self, config: NodeConfig, state: Any, reload: Callable[[], LoadReport], *, secret: bytes,
                 reuse_port: bool = False, certificates_changed: Callable[[], Awaitable[None]] | None = None) -> None:
        self.config = config
        self.state = state
        self.reload_policies = reload
        self.certificates_changed = certificates_changed  # this worker's (edge.app.Node.certificates_changed)
        self.secret = secret  # the node's (edge.app.node_secret): failed attempts are counted by its keys
        self.reuse_port = reuse_port
        self.runner: web.AppRunner | None = None
        self.ctx: AdminContext | None = None
        self.addresses: list[tuple[str, int]] = []
        self._publisher: asyncio.Task | None = None

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    def _tokens(self) -> list:
        tokens = list(self.config.admin.tokens)
        if self.config.admin.tokens_file is not None:
            tokens += read_tokens_file(self.config.admin.tokens_file)
        return tokens

    def reload_tokens(self) -> None:
        """SIGHUP: re-read tokens_file; a broken file keeps the previous tokens."""
        if self.ctx is None or self.config.admin.tokens_file is None:
            return
        try:
            self.ctx.tokens.tokens = tuple(self._tokens())
        except ConfigError as exc:
            log.error("admin tokens not reloaded, the previous ones stay in force:\n%s", exc)

    async def start(self) -> None:
        admin = self.config.admin
        source = self.state.policies
        files = PolicyFiles(source.path) if isinstance(source, PolicyDirectory) else None
        if files is not None:
            for name in files.remove_leftovers():
                log.warning("removed %s, left by a policy write that was interrupted", name)
        tokens = TokenSet(self._tokens())
        if not tokens:
            log.warning("admin API without tokens: only /healthz, /readyz and /openapi.json answer; "
                        "set EDGE_ADMIN_TOKEN or [admin] tokens")
        if self.config.workers > 1 and admin.run_dir is not None:
            # Workers share the admin port: the count must be the node's, not each worker's.
            limiter = SharedFailures(admin.run_dir / "auth-failures.sqlite3", admin.failed_auth_limit,
                                     admin.failed_auth_window)
        else:
            limiter = MemoryFailures(admin.failed_auth_limit, admin.failed_auth_window)
        self.ctx = AdminContext(self.config, self.state, self.reload_policies, tokens, AuditLog(admin.audit_log),
                                FailureKeys(self.secret), limiter,
                                allowed_names(admin.hosts, admin.listen.host), files=files,
                                control=self.state.control)
        if self.certificates_changed is not None:
            self.ctx.certificates_changed = self.certificates_changed
        watch = self.state.certificate_watch
        self.ctx.view = metrics.NodeView(lambda: shared_tiers(self.state.store),
                                         extra=(lambda: [watch.metric()]) if watch is not None else None)
        metrics.start_worker()
        if metrics.MULTIPROCESS_DIR is not None:
            self._publisher = asyncio.ensure_future(
                metrics.publish_every(metrics.PUBLISH_INTERVAL, self.state.store.memory))
        self.runner = AppRunner(make_app(self.ctx), connection=_Connection, access_log=None, handle_signals=False,
                                shutdown_timeout=min(self.config.timeouts.shutdown, 5.0))
        await self.runner.setup()
        site = web.TCPSite(self.runner, admin.listen.host, admin.listen.port,
                           reuse_port=self.reuse_port or None)
        await site.start()
        self.addresses = [address[:2] for address in self.runner.addresses]

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        metrics.publish(self.state.store.memory)  # its last counts stay in the node's sums
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.ctx is not None:
            self.ctx.audit.close()
            if isinstance(self.ctx.limiter, SharedFailures):
                self.ctx.limiter.close()
