"""Who wrote the URLs a policy sends traffic to, as the admin API records it.

Every origin and the security-events section carry ``set_by``: "tenant"
makes the node guard the destination (edge.origin.guard: public addresses
only, checked on every connect); "operator" leaves it alone. An origin is
vouched for as a whole, never by its URL alone: ``host_header`` picks the
virtual host behind an internal ingress, and connection counts and timeouts
are load on an internal host, so a tenant token that changes any of them
has made an origin of its own.

For a tenant token's write the node decides ``set_by``, whatever the data says:

- an origin that the tenant's file, as it is on disk under the write lock,
  has with "operator", field for field (url, host_header, timeouts,
  max_connections, TLS settings), keeps "operator": a tenant token can change the rules
  around an origin the operator set up without losing it; so does a
  webhook URL the file has with "operator";
- everything else is "tenant", and one that is not already the tenant's
  and is plainly internal (an IP literal the policy refuses, a localhost
  or metadata service name) is refused with 403 before anything is written;
  so is a "tenant" origin that asks for the node's client certificate
  ([origin_tls]): an origin that trusts it trusts every tenant's requests,
  and a token must not point it at another tenant's origin.

Operator tokens write ``set_by`` as they like, but an entry that leaves it
out is "operator" only if it is not the tenant's on disk: an origin whose
URL the file has as the tenant's (and not the very same origin as the
operator's), or the tenant's webhook URL, stays "tenant". Vouching for what
a tenant token wrote takes an explicit ``"set_by": "operator"``.

Nothing a tenant token writes can therefore end up unguarded, unless an
operator says so.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from edge.admin.errors import detail
from edge.http.urls import split_url
from edge.origin.guard import AddressPolicy
from edge.policy.model import OriginSpec

_OPERATORS_ORIGIN = ("the operator's origin at this URL unchanged (only operators change its host_header, "
                     "timeouts or max_connections)")


def _connection(origin: OriginSpec) -> OriginSpec:
    # Every field but the mark: a field added to origins later is part of
    # what the operator vouched for without anyone having to remember it.
    return dataclasses.replace(origin, set_by="operator")


class _OnDisk:
    """What the tenant's file on disk says about who wrote its destinations."""

    def __init__(self, before: Any) -> None:
        origins = before.origins if before is not None else ()
        self.vouched = {_connection(o) for o in origins if not o.guarded}
        self.operators = {o.url for o in origins if not o.guarded}
        self.tenants = {o.url for o in origins if o.guarded}
        self.events = before.filters.events if before is not None else None

    def webhook(self, url: str) -> str | None:
        """The mark the file has for the webhook ``url``, None if another or none."""
        if self.events is None or self.events.webhook_url != url:
            return None
        return self.events.set_by


def stamp_tenant_write(data: dict[str, Any], policy: Any, before: Any,
                       guard: AddressPolicy) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``data`` (valid: ``policy`` is its parse) with ``set_by`` decided for
    every destination, and what refuses the write. ``before``: the tenant's
    policy on disk, None when it has none or it is unreadable (then nothing
    is vouched for)."""
    disk = _OnDisk(before)
    refused: list[dict[str, str]] = []
    out = dict(data)

    origins = []
    for i, (raw, spec) in enumerate(zip(data["origins"], policy.origins, strict=True)):
        operator = _connection(spec) in disk.vouched
        if not operator and spec.url not in disk.tenants:
            also = _OPERATORS_ORIGIN if spec.url in disk.operators else None
            _check(guard, spec.host, spec.url, f"origins[{i}].url", refused, also)
        if not operator and spec.client_certificate:
            refused.append(detail(f"origins[{i}].client_certificate",
                                  "expected false, or the operator's origin unchanged (only operators have the "
                                  "node present its client certificate)"))
        origins.append({**raw, "set_by": "operator" if operator else "tenant"})
    out["origins"] = origins

    url = policy.filters.events.webhook_url
    if url is not None:
        mark = disk.webhook(url)
        if mark is None:
            u = split_url(url)
            _check(guard, u.address if u is not None else "", url, "filters.events.webhook_url", refused)
        out["filters"] = _with_webhook_mark(data, "operator" if mark == "operator" else "tenant")
    return out, refused


def stamp_operator_write(data: dict[str, Any], policy: Any, before: Any) -> dict[str, Any]:
    """``data`` (valid: ``policy`` is its parse) with "tenant" written where
    an operator token left ``set_by`` out of a destination that is the
    tenant's on disk (``before``, as for :func:`stamp_tenant_write`)."""
    disk = _OnDisk(before)
    out = dict(data)
    origins = []
    for raw, spec in zip(data["origins"], policy.origins, strict=True):
        if ("set_by" not in raw and spec.url in disk.tenants
                and _connection(spec) not in disk.vouched):
            raw = {**raw, "set_by": "tenant"}
        origins.append(raw)
    out["origins"] = origins

    url = policy.filters.events.webhook_url
    if url is not None and "set_by" not in data["filters"]["events"] and disk.webhook(url) == "tenant":
        out["filters"] = _with_webhook_mark(data, "tenant")
    return out


def _with_webhook_mark(data: dict[str, Any], mark: str) -> dict[str, Any]:
    filters = dict(data["filters"])
    filters["events"] = {**filters["events"], "set_by": mark}
    return filters


def _check(guard: AddressPolicy, host: str, url: str, field: str, refused: list[dict[str, str]],
           also: str | None = None) -> None:
    why = guard.host_refusal(host)
    if why is not None:
        expected = "a URL on a public address" + (f", or {also}" if also else "")
        refused.append(detail(field, f"expected {expected}, found {json.dumps(url)} ({why})"))


__all__ = ["stamp_operator_write", "stamp_tenant_write"]
