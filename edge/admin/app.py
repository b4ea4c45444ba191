"""The admin HTTP API: its routes, authentication and audit (the listener
is ``server.py``, the certificate routes ``certificates.py``, what the
handlers share ``context.py``).

Every route is described in ``openapi.py`` (served as ``/openapi.json``); a
test checks that the two name the same routes. Handlers raise ``ApiError``
for every refusal; one middleware turns those, aiohttp's own HTTP errors
and anything unexpected into the JSON error shape, never a traceback.
Every answer, also those to requests aiohttp could not parse, goes out
with ``Server: edge`` (no version banner), ``X-Content-Type-Options:
nosniff`` and ``Cache-Control: no-store``.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge.admin import certificates
from edge.admin.auth import AuthFailure, Principal
from edge.admin.certificates import certificates_everywhere
from edge.admin.context import (
    ADMIN,
    AUDIT_TENANT,
    PRINCIPAL,
    SUMMARY,
    AdminContext,
    fan_out,
    json_response,
    path_tenant,
    read_json,
    require_all,
)
from edge.admin.control import purge_everywhere
from edge.admin.errors import ApiError, detail, error_response, field_details
from edge.admin.hosts import host_allowed
from edge.admin.openapi import MAX_BODY, document
from edge.admin.provenance import stamp_operator_write, stamp_tenant_write
from edge.admin.store import PolicyFiles, Precondition
from edge.cache.purge import PurgeError, PurgeSpec, parse_purge
from edge.observe import metrics
from edge.policy.errors import PolicyError
from edge.policy.load import PolicyDirectory
from edge.policy.parse import parse_policy, to_data

log = logging.getLogger("edge.admin")

PROBE_TIMEOUT = 5.0
# Seconds sibling workers have to publish their counts for a scrape; one
# that takes longer is shown as it last published (at most a second ago).
SCRAPE_WAIT = 2.0
# Methods that change state: audited, and answered only once every worker has it.
_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# On every answer: no version banner, no content sniffing, no caching.
_HEADERS = {"Server": "edge", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


# --- middleware ------------------------------------------------------------------


def _public(handler: Callable) -> Callable:
    handler.public = True  # type: ignore[attr-defined]
    return handler


@web.middleware
async def _middleware(request: web.Request, handler) -> web.StreamResponse:
    ctx = request.app[ADMIN]
    route = request.match_info.route
    principal: Principal | None = None
    try:
        _check_host(request, ctx)
        bad = path_trick(request.raw_path)
        if bad:
            raise ApiError(400, "malformed path", [detail("path", bad)])
        if ctx.via in request.headers.get("Via", ""):
            # A tenant's origin pointed at this API must not make it public.
            raise ApiError(403, "the admin API is not reachable through the node's public listener")
        if request.match_info.http_exception is None and not getattr(route.handler, "public", False):
            principal = await _authenticate(request, ctx)
            request[PRINCIPAL] = principal
        resp = await handler(request)
    except ApiError as exc:
        resp = exc.response()
    except web.HTTPException as exc:
        resp = _http_error(exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("admin API: internal error on %s %s", request.method, request.path)
        resp = error_response(500, "internal error (see the node's log)")
    if request.method in _CHANGES and request.match_info.http_exception is None:
        ctx.audit.record(
            token=principal.token_id if principal else "-",
            scope=principal.tenant if principal else "-",
            tenant=request.get(AUDIT_TENANT) or request.match_info.get("tenant"),
            method=request.method,
            path=request.path,
            status=resp.status,
            summary=request.get(SUMMARY),
        )
    resp.headers.update(_HEADERS)
    return resp


def _check_host(request: web.Request, ctx: AdminContext) -> None:
    """A page on a rebound name of the attacker's must not reach the API through a browser (edge.admin.hosts)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    local = sockname[0] if isinstance(sockname, tuple) else None
    if not host_allowed(request.headers.getall("Host", []), ctx.hosts, local):
        found = json.dumps(request.headers.get("Host", "")[:200])
        raise ApiError(421, "misdirected request: this admin API answers only to loopback names and addresses, "
                            "its own address and the names in admin.hosts",
                       [detail("Host", "expected localhost, a loopback address, the listener's address or one of "
                                       f"admin.hosts, found {found}")])


def _http_error(exc: web.HTTPException) -> web.Response:
    messages = {
        404: "no such endpoint",
        405: "method not allowed on this endpoint",
        413: f"request body too large (at most {MAX_BODY} bytes)",
    }
    headers = {}
    if exc.status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return error_response(exc.status, messages.get(exc.status, exc.reason), headers=headers)


def path_trick(raw_path: str) -> str | None:
    """Dot segments (also percent-encoded), encoded slashes and backslashes are
    never part of a valid admin path; refuse them before any routing."""
    path = raw_path.partition("?")[0]
    for segment in path.split("/"):
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or "\x00" in decoded:
            return f"expected a path without dot segments or encoded separators, found {json.dumps(segment)}"
    return None


class _Lane:
    """The attempts of one address over its failure limit, one at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.queued = 0


# Attempts of one limited address that may wait their turn in a worker;
# more are refused at once, before their token is looked at.
MAX_SLOW_QUEUE = 8


async def _authenticate(request: web.Request, ctx: AdminContext) -> Principal:
    """A valid token is accepted even from an address over its failure
    limit; such an address is slowed instead: its attempts are checked one
    at a time per worker, each after ``admin.failed_auth_delay`` seconds,
    so guessing gets no faster than that per worker whatever its
    concurrency. At most MAX_SLOW_QUEUE attempts wait; beyond them the
    answer is 429 without the token being checked (it tells nothing)."""
    address = ctx.keys.address(request.remote)
    if "Authorization" in request.headers and await ctx.limiter.over(address):
        lane = ctx.slow_lanes.get(address)
        if lane is None:
            lane = ctx.slow_lanes[address] = _Lane()
        if lane.queued >= MAX_SLOW_QUEUE:
            wait = math.ceil(ctx.config.admin.failed_auth_delay * MAX_SLOW_QUEUE) or 1
            raise ApiError(429, "too many authentication attempts waiting from your address; try again later",
                           headers={"Retry-After": str(wait)})
        lane.queued += 1
        try:
            async with lane.lock:
                metrics.ADMIN_AUTH_DELAYED.inc()
                await asyncio.sleep(ctx.config.admin.failed_auth_delay)
                return await _check_token(request, ctx, address)
        finally:
            lane.queued -= 1
    return await _check_token(request, ctx, address)


async def _check_token(request: web.Request, ctx: AdminContext, address: str) -> Principal:
    try:
        return ctx.tokens.check(request.headers.get("Authorization"))
    except AuthFailure as exc:
        failure = exc
    if failure.counts:
        keys = [address]
        if failure.presented is not None:
            keys.append(ctx.keys.token(failure.presented))
        wait = await ctx.limiter.failed(keys)
        if wait is not None:
            raise ApiError(429, "too many failed authentication attempts from your address or with this token; "
                                "try again later", headers={"Retry-After": str(wait)})
    message = {
        "missing": "authentication required: send Authorization: Bearer <token>",
        "malformed": "malformed Authorization header: expected Bearer <token>",
        "unknown": "unknown token",
    }[failure.reason]
    raise ApiError(401, message, headers={"WWW-Authenticate": failure.challenge})


def _operator(request: web.Request) -> Principal:
    principal = request[PRINCIPAL]
    if not principal.operator:
        raise ApiError(403, "this endpoint needs an operator token")
    return principal


# --- bodies ----------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _if_match(request: web.Request) -> list[str] | None:
    """Entity tags of If-Match (RFC 9110 §13.1.1), unquoted; weak tags never match."""
    values = request.headers.getall("If-Match", ())
    if not values:
        return None
    tags = []
    for part in ",".join(values).split(","):
        part = part.strip()
        if part == "*":
            return ["*"]
        if part.startswith('"') and part.endswith('"') and len(part) >= 2:
            tags.append(part[1:-1])
        elif part and not part.startswith("W/"):
            tags.append(part)  # tolerated: an unquoted version
    return tags


# --- probes and documents --------------------------------------------------------


@_public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@_public
async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[ADMIN]
    state = ctx.state
    checks: dict[str, dict[str, Any]] = {}
    n = len(state.policies.current.tenants)
    checks["policies"] = {"ok": n > 0, "message": f"{n} tenant{'s' if n != 1 else ''} loaded" if n else
                          "no tenant policy is loaded"}
    if ctx.config.geoip.database is not None:
        ok = state.geo is not None
        checks["geoip"] = {"ok": ok, "message": "database loaded" if ok else "the GeoIP database is not loaded"}
    disk = state.store.disk
    if disk is not None:
        try:
            await asyncio.wait_for(disk.run(disk.probe_sync), PROBE_TIMEOUT)
            checks["disk"] = {"ok": True, "message": "writable"}
        except TimeoutError:
            checks["disk"] = {"ok": False, "message": f"a probe write took longer than {PROBE_TIMEOUT:g} s"}
        except Exception as exc:
            # Unauthenticated: the kind of failure, not paths or messages.
            log.warning("readiness probe of the disk tier failed: %s", exc)
            checks["disk"] = {"ok": False, "message": f"a probe write failed ({type(exc).__name__})"}
    failed = [name for name, check in checks.items() if not check["ok"]]
    if failed:
        return error_response(503, "not ready: " + ", ".join(failed),
                              [detail(name, checks[name]["message"]) for name in failed],
                              extra={"status": "not ready", "checks": checks})
    return json_response({"status": "ready", "checks": checks})


@_public
async def openapi(request: web.Request) -> web.Response:
    return json_response(document())


async def _publish_all(ctx: AdminContext) -> None:
    """This worker's counts, and every sibling's, into the node's metrics."""
    metrics.publish(ctx.state.store.memory)
    if ctx.control is not None:
        await ctx.control.fan_out("publish", {}, timeout=SCRAPE_WAIT)


async def metrics_text(request: web.Request) -> web.Response:
    _operator(request)
    ctx = request.app[ADMIN]
    await _publish_all(ctx)
    body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, ctx.view)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def shared_tiers(store) -> metrics.Tiers:
    """The tiers every worker shares, as (entries, bytes): the disk tier."""
    if store.disk is None:
        return {}
    return {"disk": (_disk_entries(store.disk), store.disk.bytes_used)}


def _disk_entries(disk) -> int | None:
    try:
        return disk.entries_sync()
    except Exception:
        return None


async def stats(request: web.Request) -> web.Response:
    _operator(request)
    ctx = request.app[ADMIN]
    await _publish_all(ctx)
    families = await asyncio.get_running_loop().run_in_executor(None, lambda: list(ctx.view.collect()))
    node = metrics.node_stats(families)
    now = time.time()
    workers = [{"worker": pid, "uptime_seconds": round(max(0.0, now - started), 3),
                "certificate_changes": node.certificate_changes.get(pid, 0)}
               for pid, started in sorted(node.workers.items())]
    policies = ctx.state.policies.current
    watch = ctx.state.certificate_watch
    expiring = [] if watch is None else await asyncio.get_running_loop().run_in_executor(None, watch.expiring)
    return json_response({
        "worker": os.getpid(),
        "workers": workers,
        "uptime_seconds": max((w["uptime_seconds"] for w in workers), default=0.0),
        "tiers": node.tiers,
        "requests": node.requests,
        "policies": {p.tenant: p.version for p in policies},
        "certificates_expiring": expiring,
    })


# --- tenants and policies ------------------------------------------------------------


async def tenants(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    current = request.app[ADMIN].state.policies.current
    return json_response([
        {"tenant": p.tenant, "hosts": list(p.hosts), "version": p.version}
        for p in current if principal.may(p.tenant)
    ])


async def get_policy(request: web.Request) -> web.Response:
    tenant = path_tenant(request)
    policy = request.app[ADMIN].state.policies.current.get(tenant)
    if policy is None:
        raise ApiError(404, f"no tenant {tenant}")
    return json_response(to_data(policy), headers={"ETag": f'"{policy.version}"'})


async def put_policy(request: web.Request) -> web.Response:
    tenant = path_tenant(request)
    data = await read_json(request)
    return await _write(request, tenant, lambda current: data, create=True)


async def patch_policy(request: web.Request) -> web.Response:
    tenant = path_tenant(request)
    patch = await read_json(request)
    return await _write(request, tenant, lambda current: merge_patch(current, patch), create=False)


async def put_delivery(request: web.Request) -> web.Response:
    tenant = path_tenant(request)
    delivery = await read_json(request)

    def build(current: Any) -> Any:
        if not isinstance(current, dict):
            return current  # the validator says what is wrong with the file
        out = dict(current)
        out["delivery"] = delivery
        return out

    return await _write(request, tenant, build, create=False)


async def delete_policy(request: web.Request) -> web.Response:
    tenant = path_tenant(request)
    _operator(request)
    ctx = _writable(request)
    if_match = _if_match(request)
    async with ctx.write_lock:
        def remove() -> str:
            with ctx.files.locked():
                current = ctx.files.version(tenant)
                if current is None:
                    raise ApiError(404, f"no tenant {tenant}")
                _check_precondition(if_match, current)
                ctx.files.delete(tenant)
                return current

        version = await asyncio.get_running_loop().run_in_executor(None, remove)
        request[SUMMARY] = {"deleted_version": version}
        report = await asyncio.get_running_loop().run_in_executor(None, ctx.reload)
        fan = await fan_out(ctx, "reload", {})
        # A tenant created later under the same id must not inherit this one's
        # cached responses: everything it stored goes with it.
        spec = PurgeSpec(tenant=tenant, urls=(), prefixes=(), tags=(), all=True, soft=False)
        request[SUMMARY]["purged"], purge_fan = await purge_everywhere(ctx.control, ctx.state.store, spec)
        # Nor its certificates and keys.
        certificate_fan = None
        store = ctx.state.certificates
        if store is not None:
            def drop() -> int:
                with store.locked():
                    return store.delete_tenant(tenant)

            removed = await asyncio.get_running_loop().run_in_executor(None, drop)
            request[SUMMARY]["certificates_removed"] = removed
            if removed:
                certificate_fan = await certificates_everywhere(ctx)
    require_all(fan, "the tenant was removed, but not every worker has reloaded")
    require_all(purge_fan, "the tenant was removed, but not every worker has dropped its cached responses")
    require_all(certificate_fan, "the tenant was removed, but not every worker has dropped its certificates")
    if tenant in ctx.state.policies.current.tenants:
        raise ApiError(409, f"the file of tenant {tenant} was removed but the tenant is still served",
                       [detail("", str(e)) for e in report.errors])
    return json_response({"tenant": tenant, "deleted": True, "version": version})


def _writable(request: web.Request) -> AdminContext:
    ctx = request.app[ADMIN]
    if ctx.files is None:
        raise ApiError(409, "this node reads its policies from one file, not a policy directory: they are "
                            "read-only here; edge serve keeps them in a directory in every mode")
    return ctx


def _check_precondition(if_match: list[str] | None, current: str | None) -> None:
    try:
        PolicyFiles.check(if_match, current)
    except Precondition:
        shown = f'"{current}"' if current else "none (no such tenant)"
        raise ApiError(412, "the policy has changed: If-Match does not name the current version",
                       [detail("If-Match", f"expected the current ETag {shown}")],
                       extra={"current": current}) from None


async def _write(request: web.Request, tenant: str, build: Callable[[Any], Any], *, create: bool) -> web.Response:
    """Validate completely, write atomically, reload here and in every sibling, then answer."""
    ctx = _writable(request)
    principal = request[PRINCIPAL]
    if_match = _if_match(request)
    loop = asyncio.get_running_loop()

    def write() -> tuple[Any, bool]:
        with ctx.files.locked():
            current = ctx.files.version(tenant)
            _check_precondition(if_match, current)
            if current is None and not create:
                raise ApiError(404, f"no tenant {tenant}")
            if current is None and not principal.operator:
                raise ApiError(403, "only operator tokens create tenants")
            existing = None
            if not create:
                try:
                    existing = ctx.files.data(tenant)
                except PolicyError as exc:
                    raise ApiError(409, "the tenant's file on disk is unreadable; replace it with PUT",
                                   field_details(exc.errors)) from None
            data = build(existing)
            source = f"{request.method} {request.path}"
            # Checked against this node's [origin_tls] and the WAF rules the
            # reload after the write applies: a policy that asks for a client
            # certificate the node lacks, or excludes a rule it lacks, is
            # refused, not written.
            waf_rule_ids = ctx.state.reloaded_waf_rule_ids()
            parse = functools.partial(parse_policy, tenant=tenant, source=source, waf_rule_ids=waf_rule_ids,
                                      origin_client_certificate=ctx.state.config.origin_tls.enabled)
            try:
                policy = parse(data)
            except PolicyError as exc:
                raise ApiError(422, "invalid policy: nothing was changed", field_details(exc.errors)) from None
            # Checked against the files as they are now, under the lock that
            # every worker's writes take: not against this worker's view.
            on_disk = PolicyDirectory(ctx.files.directory)
            on_disk.load(waf_rule_ids=waf_rule_ids)
            if not principal.operator:
                refused = _tenant_token_limits(ctx.state.policies.current.get(tenant), policy)
                data, guarded = stamp_tenant_write(data, policy, on_disk.current.get(tenant), ctx.guard)
                refused += guarded
                if refused:
                    raise ApiError(403, "this change needs an operator token", refused)
                policy = parse(data)
            else:
                stamped = stamp_operator_write(data, policy, on_disk.current.get(tenant))
                if stamped != data:
                    data, policy = stamped, parse(stamped)
            conflicts = _host_conflicts(on_disk.current, policy, principal)
            if conflicts:
                raise ApiError(422, "invalid policy: nothing was changed", conflicts)
            ctx.files.write(tenant, data)
            return policy, current is None

    async with ctx.write_lock:
        policy, created = await loop.run_in_executor(None, write)
        request[SUMMARY] = {"version": policy.version, "hosts": list(policy.hosts), "created": created}
        report = await loop.run_in_executor(None, ctx.reload)
        fan = await fan_out(ctx, "reload", {})
    require_all(fan, "the policy was written, but not every worker has reloaded it")
    served = ctx.state.policies.current.get(tenant)
    if served is None or served.version != policy.version:
        mine = [e for e in report.errors if Path(e.source).stem == tenant] or report.errors
        raise ApiError(409, "the policy was written but the node did not take it (see details)",
                       [detail(e.field, f"expected {e.expected}, found {e.found}") for e in mine])
    body = {"tenant": tenant, "version": policy.version, "hosts": list(policy.hosts)}
    return json_response(body, status=201 if created else 200, headers={"ETag": f'"{policy.version}"'})


def _tenant_token_limits(served, policy) -> list[dict[str, str]]:
    """What a tenant token may not change on its own: which hosts the tenant
    claims (a wildcard would take every unclaimed host). Its origins and
    webhook are guarded instead (edge.admin.provenance)."""
    if served is None or set(policy.hosts) != set(served.hosts):
        return [detail("hosts", "expected the hosts the tenant has now (only operators change hosts)")]
    return []


def _host_conflicts(current, policy, principal: Principal) -> list[dict[str, str]]:
    out = []
    for i, host in enumerate(policy.hosts):
        owner = current.owner(host)
        if owner is not None and owner != policy.tenant:
            # A tenant token is not told who the other tenant is.
            who = f', which tenant "{owner}" serves' if principal.operator else ", which another tenant serves"
            out.append(detail(f"hosts[{i}]", f'expected a host that no other tenant serves, found "{host}"{who}'))
    return out


# --- purge -------------------------------------------------------------------------


async def purge(request: web.Request) -> web.Response:
    tenant = path_tenant(request)
    ctx = request.app[ADMIN]
    policy = ctx.state.policies.current.get(tenant)
    if policy is None:
        raise ApiError(404, f"no tenant {tenant}")
    data = await read_json(request)
    try:
        spec = parse_purge(data, policy, ctx.state.policies.current.resolve)
    except PurgeError as exc:
        raise ApiError(422, "invalid purge request: nothing was purged", _purge_details(exc.errors)) from None
    purge_id = str(uuid.uuid4())
    wire = spec.to_json()
    request[SUMMARY] = {"purge_id": purge_id, "spec": wire}
    # When the answer is sent no worker can serve the purged entries any more.
    affected, fan = await purge_everywhere(ctx.control, ctx.state.store, spec)
    request[SUMMARY]["affected"] = affected
    metrics.record_purge(tenant, affected)
    require_all(fan, "the purge is not complete on every worker")
    workers = 1 + (len(fan.acknowledged) if fan is not None else 0)
    return json_response({"purge_id": purge_id, "affected": affected, "workers": workers})


def _purge_details(errors: Any) -> list[dict[str, str]]:
    return [detail(str(e.get("field", "")), str(e.get("message", e))) for e in errors or ()]


# --- the application -----------------------------------------------------------------

# (method, path, handler): the one list of routes; openapi.py describes each.
ROUTES: tuple[tuple[str, str, Callable], ...] = (
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/openapi.json", openapi),
    ("GET", "/metrics", metrics_text),
    ("GET", "/v1/stats", stats),
    ("GET", "/v1/tenants", tenants),
    ("GET", "/v1/tenants/{tenant}/policy", get_policy),
    ("PUT", "/v1/tenants/{tenant}/policy", put_policy),
    ("PATCH", "/v1/tenants/{tenant}/policy", patch_policy),
    ("DELETE", "/v1/tenants/{tenant}/policy", delete_policy),
    ("PUT", "/v1/tenants/{tenant}/policy/delivery", put_delivery),
    ("POST", "/v1/tenants/{tenant}/purge", purge),
    *certificates.ROUTES,
)


def make_app(ctx: AdminContext) -> web.Application:
    app = web.Application(middlewares=[_middleware], client_max_size=MAX_BODY)
    app[ADMIN] = ctx
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
