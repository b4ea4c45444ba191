"""Who wrote the URLs a policy sends traffic to, as the admin API records it.

Every origin and the security-events section carry ``set_by``: "tenant"
makes the node guard the URL (edge.origin.guard: public addresses only,
checked on every connect); "operator" leaves it alone. Files and operator
tokens write ``set_by`` as they like (absent: "operator"). For a tenant
token's write the node decides it, whatever the data says:

- a URL that the tenant's file, as it is on disk under the write lock,
  already has with "operator" keeps "operator" (a tenant token can change
  the rules of an origin the operator set up without losing it);
- every other URL is "tenant", and one that is new and plainly internal
  (an IP literal the policy refuses, a localhost or metadata service name)
  is refused with 403 before anything is written.

Nothing a tenant token writes can therefore end up unguarded, and what it
wrote stays marked when an operator later edits other parts of the file.
"""
from __future__ import annotations

import json
from typing import Any

from edge.admin.errors import detail
from edge.http.urls import split_url
from edge.origin.guard import AddressPolicy


def stamp_tenant_write(data: dict[str, Any], policy: Any, before: Any,
                       guard: AddressPolicy) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """``data`` (valid: ``policy`` is its parse) with ``set_by`` decided for
    every URL, and what refuses the write. ``before``: the tenant's policy
    on disk, None when it has none or it is unreadable (then nothing is vouched for)."""
    refused: list[dict[str, str]] = []
    out = dict(data)

    vouched = {o.url for o in before.origins if not o.guarded} if before is not None else set()
    known = {o.url for o in before.origins} if before is not None else set()
    origins = []
    for i, (raw, spec) in enumerate(zip(data["origins"], policy.origins, strict=True)):
        operator = spec.url in vouched
        if not operator and spec.url not in known:
            _check(guard, spec.host, spec.url, f"origins[{i}].url", refused)
        origins.append({**raw, "set_by": "operator" if operator else "tenant"})
    out["origins"] = origins

    url = policy.filters.events.webhook_url
    if url is not None:
        events = before.filters.events if before is not None else None
        operator = events is not None and events.webhook_url == url and not events.guarded
        if not operator and (events is None or events.webhook_url != url):
            u = split_url(url)
            _check(guard, u.address if u is not None else "", url, "filters.events.webhook_url", refused)
        filters = dict(data["filters"])
        filters["events"] = {**filters["events"], "set_by": "operator" if operator else "tenant"}
        out["filters"] = filters
    return out, refused


def _check(guard: AddressPolicy, host: str, url: str, field: str, refused: list[dict[str, str]]) -> None:
    why = guard.host_refusal(host)
    if why is not None:
        refused.append(detail(field, f"expected a URL on a public address, found {json.dumps(url)} ({why})"))


__all__ = ["stamp_tenant_write"]
