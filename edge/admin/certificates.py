"""The admin API's certificate routes: a tenant's certificates for its
HTTPS hosts, checked completely before they are stored (edge.tls.store)
and taken by every worker before the answer."""
from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edge.admin.auth import Principal
from edge.admin.context import (
    ADMIN,
    PRINCIPAL,
    SUMMARY,
    AdminContext,
    fan_out,
    json_response,
    path_tenant,
    read_json,
    require_all,
)
from edge.admin.control import FanOutResult
from edge.admin.errors import ApiError, detail
from edge.tls.certs import NAME_RULE, CertificateError, check_upload, valid_name
from edge.tls.ownership import unserved_names
from edge.tls.store import CertificateStore

log = logging.getLogger("edge.admin")

_UPLOAD_KEYS = ("certificate", "private_key", "passphrase")


def _certificate_store(request: web.Request) -> tuple[AdminContext, str, CertificateStore]:
    """The path's tenant (checked as ``path_tenant`` does, and known) and the node's store."""
    tenant = path_tenant(request)
    ctx = request.app[ADMIN]
    if ctx.state.certificates is None:
        raise ApiError(409, "this node reads its policies from one file, not a policy directory, and keeps "
                            "no certificates; edge serve keeps them beside its policy directory in every mode")
    if ctx.state.policies.current.get(tenant) is None:
        raise ApiError(404, f"no tenant {tenant}")
    return ctx, tenant, ctx.state.certificates


def _certificate_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not valid_name(name):
        raise ApiError(400, "invalid certificate name", [detail("name", f"expected {NAME_RULE}, found {json.dumps(name)}")])
    return name


def _upload(data: Any) -> dict[str, Any]:
    """The body's shape; check_upload judges the values."""
    if not isinstance(data, dict):
        raise ApiError(422, "invalid certificate upload: nothing was changed",
                       [detail("body", 'expected an object {"certificate": ..., "private_key": ...}, '
                                       f"found {type(data).__name__}")])
    problems = [detail(key, f"expected one of the keys {', '.join(_UPLOAD_KEYS)}, found an unknown key")
                for key in data if key not in _UPLOAD_KEYS]
    problems += [detail(key, "expected a PEM text, found nothing") for key in _UPLOAD_KEYS[:2] if key not in data]
    if problems:
        raise ApiError(422, "invalid certificate upload: nothing was changed", problems)
    return data


async def certificates_everywhere(ctx: AdminContext) -> FanOutResult | None:
    """This worker and every sibling take a change of the certificate store."""
    try:
        await ctx.certificates_changed()
    except Exception:
        log.exception("certificates: this worker could not take the change")
        raise ApiError(503, "the certificate store was changed, but the answering worker could not take it "
                            "(see the node's log)") from None
    return await fan_out(ctx, "certificates", {})


async def _check_expiry(ctx: AdminContext) -> None:
    """A certificate written close to its expiry is announced now, not at the next periodic check."""
    watch = ctx.state.certificate_watch
    if watch is None:
        return
    try:
        await watch.check()
    except Exception:
        log.exception("certificate expiry check failed")


async def list_certificates(request: web.Request) -> web.Response:
    _, tenant, store = _certificate_store(request)
    found = await asyncio.get_running_loop().run_in_executor(None, store.tenant, tenant)
    return json_response([c.info.as_json(c.name) for c in found])


async def get_certificate(request: web.Request) -> web.Response:
    _, tenant, store = _certificate_store(request)
    name = _certificate_name(request)
    found = await asyncio.get_running_loop().run_in_executor(None, store.get, tenant, name)
    if found is None:
        raise ApiError(404, f"no certificate {name} of tenant {tenant}")
    return json_response(found.info.as_json(name))


async def put_certificate(request: web.Request) -> web.Response:
    """Checked completely, then stored atomically (edge.tls.store) and taken
    by every worker before the answer."""
    ctx, tenant, store = _certificate_store(request)
    name = _certificate_name(request)
    upload = _upload(await read_json(request))
    loop = asyncio.get_running_loop()
    now = datetime.datetime.now(datetime.UTC)
    try:
        checked = await loop.run_in_executor(None, functools.partial(
            check_upload, upload["certificate"], upload["private_key"], now, passphrase=upload.get("passphrase")))
    except CertificateError as exc:
        raise ApiError(422, "invalid certificate: nothing was changed", [detail(exc.field, exc.message)]) from None
    principal = request[PRINCIPAL]
    limit = ctx.config.certificates.max_per_tenant

    def write() -> None:
        # Under the lock every worker's writes take: the count is the node's,
        # and a tenant removed meanwhile (its certificates with it) stays
        # without; the ownership is judged by the policies of this moment.
        with store.locked():
            policies = ctx.state.policies.current
            if policies.get(tenant) is None:
                raise ApiError(404, f"no tenant {tenant}")
            unserved = unserved_names(policies, tenant, checked.info.hosts)
            if unserved:
                raise ApiError(422, "invalid certificate: nothing was changed",
                               [detail("certificate", _unserved_message(u.name, u.owner, tenant, principal))
                                for u in unserved])
            held = store.tenant(tenant)
            if len(held) >= limit and name not in {c.name for c in held}:
                raise ApiError(409, f"tenant {tenant} has {len(held)} certificates, as many as "
                                    "certificates.max_per_tenant allows: replace or delete one",
                               [detail("name", f"expected one of the tenant's certificates, found {json.dumps(name)}")])
            store.put(tenant, name, checked)

    async with ctx.write_lock:
        try:
            await loop.run_in_executor(None, write)
        except CertificateError as exc:
            raise ApiError(422, "invalid certificate: nothing was changed", [detail(exc.field, exc.message)]) from None
        except OSError as exc:
            log.error("certificate %s of tenant %s cannot be stored in %s: %s", name, tenant, store.root, exc)
            raise ApiError(500, "the certificate cannot be stored (see the node's log); nothing was changed") from None
        info = checked.info
        request[SUMMARY] = {"name": name, "hosts": list(info.hosts), "not_after": info.as_json(name)["not_after"],
                            "fingerprint_sha256": info.fingerprint_sha256}
        fan = await certificates_everywhere(ctx)
        await _check_expiry(ctx)
    require_all(fan, "the certificate was stored, but not every worker has taken it")
    return json_response(info.as_json(name))


def _unserved_message(name: str, owner: str | None, tenant: str, principal: Principal) -> str:
    wildcard = name.startswith("*.")
    if owner is None:
        why = (f"whose names tenant {tenant} does not serve all of (that needs the host {json.dumps(name)})"
               if wildcard else "which no tenant serves")
    else:
        # A tenant token is not told who the other tenant is.
        who = f'tenant "{owner}"' if principal.operator else "another tenant"
        why = f"which covers names {who} serves" if wildcard else f"which {who} serves"
    return f"expected names that tenant {tenant} serves (its hosts), found {json.dumps(name)}, {why}"


async def delete_certificate(request: web.Request) -> web.Response:
    ctx, tenant, store = _certificate_store(request)
    name = _certificate_name(request)
    async with ctx.write_lock:
        def remove() -> bool:
            with store.locked():
                return store.delete(tenant, name)

        removed = await asyncio.get_running_loop().run_in_executor(None, remove)
        if not removed:
            raise ApiError(404, f"no certificate {name} of tenant {tenant}")
        request[SUMMARY] = {"name": name}
        fan = await certificates_everywhere(ctx)
        await _check_expiry(ctx)  # forgets what was announced for it
    require_all(fan, "the certificate was removed, but not every worker has dropped it")
    return web.Response(status=204)


# (method, path, handler), in the application's one list of routes.
ROUTES: tuple[tuple[str, str, Callable], ...] = (
    ("GET", "/v1/tenants/{tenant}/certificates", list_certificates),
    ("GET", "/v1/tenants/{tenant}/certificates/{name}", get_certificate),
    ("PUT", "/v1/tenants/{tenant}/certificates/{name}", put_certificate),
    ("DELETE", "/v1/tenants/{tenant}/certificates/{name}", delete_certificate),
)
