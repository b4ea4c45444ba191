"""The workers of one node tell each other about state changes.

Every worker of a node with several listens on a Unix socket
``<run_dir>/<pid>.sock``; the run directory is made by the supervisor for
this run only, mode 0700, so only the node's own user reaches it. A worker
that changed state (a purge, an invalidation after an unsafe request, a
policy write) lists the directory and asks every sibling to do the same;
it answers only when every live sibling has acknowledged. A socket that
refuses connections belongs to a worker that died: it is removed and
ignored (its replacement starts from the files and an empty memory tier,
so it has nothing stale to drop).

No worker misses a change while it could serve: a worker registers its
socket before it serves its first request and removes it only after its
last write to the shared disk tier (edge.app.Node). ``purge_everywhere``
lists the siblings again once the disk is purged, for a worker that
registered in between and may have read a purged entry from disk.

The messages are small JSON documents over HTTP on that socket:
``POST /reload`` and ``POST /purge`` (``{"spec": <PurgeSpec.to_json()>}``).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from edge.cache.purge import PurgeSpec
from edge.cache.purger import Purger

log = logging.getLogger("edge.admin")

ACK_TIMEOUT = 10.0  # seconds a sibling has to acknowledge

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class FanOutResult:
    acknowledged: list[int] = field(default_factory=list)  # sibling pids
    stale: list[int] = field(default_factory=list)  # dead siblings whose sockets were removed
    failed: dict[int, str] = field(default_factory=dict)  # pid -> why

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def contacted(self) -> set[int]:
        return {*self.acknowledged, *self.stale, *self.failed}

    def add(self, other: FanOutResult) -> None:
        self.acknowledged += other.acknowledged
        self.stale += other.stale
        self.failed.update(other.failed)


class ControlSocket:
    """This worker's end: serves its socket and reaches its siblings'."""

    def __init__(self, run_dir: Path, handlers: dict[str, Handler]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / f"{os.getpid()}.sock"
        self.handlers = handlers
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        for name in self.handlers:
            app.router.add_post(f"/{name}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a previous process with this pid
        site = web.UnixSite(self._runner, str(self.path))
        await site.start()
        os.chmod(self.path, 0o600)

    async def _dispatch(self, request: web.Request) -> web.Response:
        name = request.path.lstrip("/")
        try:
            payload = await request.json()
            result = await self.handlers[name](payload)
        except Exception as exc:  # the sibling reports it; this worker keeps serving
            log.exception("control request %s failed", name)
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)
        return web.json_response(result)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def siblings(self) -> list[Path]:
        try:
            names = os.listdir(self.run_dir)
        except OSError:
            return []
        own = self.path.name
        return sorted(self.run_dir / n for n in names if n.endswith(".sock") and n != own and n[:-5].isdigit())

    async def fan_out(self, name: str, payload: dict[str, Any], timeout: float = ACK_TIMEOUT,
                      skip: Collection[int] = ()) -> FanOutResult:
        """Send ``name`` to every sibling but the pids in ``skip``; return
        when each acknowledged, was found dead, or failed (timeout, error)."""
        result = FanOutResult()
        paths = [p for p in self.siblings() if int(p.name[:-5]) not in skip]
        if not paths:
            return result
        outcomes = await asyncio.gather(*(self._send(p, name, payload, timeout) for p in paths))
        for path, (kind, detail) in zip(paths, outcomes, strict=True):
            pid = int(path.name[:-5])
            if kind == "ok":
                result.acknowledged.append(pid)
            elif kind == "stale":
                result.stale.append(pid)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                log.info("removed the control socket of worker %d, which no longer runs", pid)
            else:
                result.failed[pid] = detail
                log.error("worker %d did not acknowledge %s: %s", pid, name, detail)
        return result

    @staticmethod
    async def _send(path: Path, name: str, payload: dict[str, Any], timeout: float) -> tuple[str, str]:
        connector = aiohttp.UnixConnector(path=str(path))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                async with s.post(f"http://worker/{name}", json=payload) as resp:
                    body = await resp.text()
                    if resp.status != 200:
                        return "failed", f"status {resp.status}: {body[:200]}"
                    return "ok", body
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error.errno if exc.os_error is not None else None
            if err in (errno.ECONNREFUSED, errno.ENOENT):
                return "stale", ""
            return "failed", str(exc)
        except TimeoutError:
            return "failed", f"no answer within {timeout:g} s"
        except aiohttp.ClientError as exc:
            return "failed", f"{type(exc).__name__}: {exc}"


async def purge_everywhere(control: ControlSocket | None, store, spec: PurgeSpec) -> tuple[int, FanOutResult | None]:
    """Purge ``spec`` from every worker's memory tier and the shared disk
    tier; returns this worker's count of affected entries and the siblings'
    answers (None with one worker).

    The siblings' memory first, then this worker's memory and the disk:
    every worker has stopped admitting the purged entries before the disk
    copies go, so none can be written back by a sibling's fetch in between.
    Then the siblings that registered meanwhile, which may have read an
    entry from the disk before it went.
    """
    if control is None:
        return await Purger(store).apply(spec, memory=True, disk=True), None
    payload = {"spec": spec.to_json()}
    fan = await control.fan_out("purge", payload)
    affected = await Purger(store).apply(spec, memory=True, disk=True)
    fan.add(await control.fan_out("purge", payload, skip=fan.contacted))
    return affected, fan
