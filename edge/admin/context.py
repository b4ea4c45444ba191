"""What the admin API's handlers share: the worker's context behind the
app key ``ADMIN``, the request keys, and the steps most routes take (the
path's tenant, a JSON body, an answer, the fan-out to sibling workers).
"""
from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edge.admin.audit import AuditLog
from edge.admin.auth import FailureKeys, MemoryFailures, Principal, SharedFailures, TokenSet
from edge.admin.control import ControlSocket, FanOutResult
from edge.admin.errors import ApiError, detail
from edge.admin.openapi import MAX_BODY
from edge.admin.store import PolicyFiles
from edge.config import NodeConfig
from edge.observe import metrics
from edge.origin.guard import AddressPolicy
from edge.policy.load import NOT_RESERVED, RESERVED_TENANTS, LoadReport, no_constant, object_pairs
from edge.policy.parse import TENANT, TENANT_ID_RE


async def _no_listeners() -> None:
    """A worker without HTTPS listeners has nothing to re-read."""


@dataclass
class AdminContext:
    """What the handlers share; one per worker, behind the app key ``ADMIN``."""

    config: NodeConfig
    state: Any  # edge.app.NodeState
    reload: Callable[[], LoadReport]  # this worker's policy reload
    tokens: TokenSet
    audit: AuditLog
    keys: FailureKeys  # what failed authentications are counted against
    limiter: MemoryFailures | SharedFailures = field(default_factory=MemoryFailures)
    hosts: frozenset[str] = frozenset()  # Host names besides loopback and the connection's own address
    files: PolicyFiles | None = None  # None when the policies come from one file: nothing to write to
    control: ControlSocket | None = None  # the worker's (edge.app.Node); None with one worker
    started: float = field(default_factory=time.time)
    view: metrics.NodeView = field(default_factory=metrics.NodeView)  # the node's metrics
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # This worker's part of a certificate change (edge.app.Node.certificates_changed).
    certificates_changed: Callable[[], Awaitable[None]] = _no_listeners
    # One lane per address over its failure limit; gone when nobody waits.
    slow_lanes: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)

    @property
    def via(self) -> str:
        return f"1.1 {self.config.name}"

    @property
    def guard(self) -> AddressPolicy:
        return AddressPolicy(self.config.outbound.allow_networks)


ADMIN = web.AppKey("admin", AdminContext)
PRINCIPAL = web.RequestKey("principal", Principal)
SUMMARY = web.RequestKey("audit_summary", dict)
AUDIT_TENANT = web.RequestKey("audit_tenant", str)


def path_tenant(request: web.Request) -> str:
    """The path's tenant id, checked; a tenant token learns nothing about others (403 for all of them)."""
    tenant = request.match_info["tenant"]
    if not TENANT_ID_RE.fullmatch(tenant):
        raise ApiError(400, "invalid tenant id", [detail("tenant", f"expected {TENANT}, found {json.dumps(tenant)}")])
    if tenant in RESERVED_TENANTS:
        raise ApiError(400, "reserved tenant id",
                       [detail("tenant", f"expected {NOT_RESERVED}, found {json.dumps(tenant)}")])
    if not request[PRINCIPAL].may(tenant):
        raise ApiError(403, "this token may not act on that tenant")
    return tenant


async def read_json(request: web.Request) -> Any:
    """The body as JSON: 413 when over 1 MiB, 400 when it is not JSON, 422 for repeated keys."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"request body too large (at most {MAX_BODY} bytes)")
    raw = await request.read()  # the app's client_max_size stops a chunked body at the limit
    if not raw.strip():
        raise ApiError(400, "a JSON body is required", [detail("body", "expected JSON, found nothing")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed JSON", [detail("body", f"expected UTF-8, found byte 0x{raw[exc.start]:02x} "
                                                              f"at offset {exc.start}")]) from None
    try:
        data = json.loads(text, object_pairs_hook=object_pairs, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "malformed JSON",
                       [detail(f"body: line {exc.lineno} column {exc.colno}", exc.msg)]) from None
    except ValueError as exc:
        raise ApiError(400, "malformed JSON", [detail("body", str(exc))]) from None
    except RecursionError:
        raise ApiError(400, "malformed JSON", [detail("body", "nesting too deep")]) from None
    duplicates = list(_duplicates(data, ""))
    if duplicates:
        raise ApiError(422, "invalid request body",
                       [detail(path, "expected each key once, found it more than once") for path in duplicates])
    return data


def _duplicates(value: Any, path: str):
    if isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            yield f"{path}.{key}" if path else key
        for key, item in value.items():
            yield from _duplicates(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _duplicates(item, f"{path}[{i}]")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers)


async def fan_out(ctx: AdminContext, name: str, payload: dict[str, Any]) -> FanOutResult | None:
    if ctx.control is None:
        return None
    return await ctx.control.fan_out(name, payload)


def require_all(fan: FanOutResult | None, message: str) -> None:
    if fan is not None and not fan.ok:
        raise ApiError(503, message,
                       [detail(f"worker {pid}", why) for pid, why in sorted(fan.failed.items())])
