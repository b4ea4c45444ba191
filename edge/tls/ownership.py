"""Whose names a certificate carries: a tenant installs certificates only
for hosts it serves, judged by the host matching of requests
(:meth:`edge.policy.resolve.PolicySet.resolve`).

- An exact name (``www.shop.de``) must resolve to the tenant: it lists the
  name, or a wildcard host or ``*`` that takes it and that no other
  tenant's entry overrides.
- A wildcard name (``*.shop.de``) covers every name one label below
  ``shop.de``; all of them must resolve to the tenant. So the tenant
  serves ``*.shop.de`` (or a wider wildcard host, or ``*``) and no other
  tenant lists an exact name such as ``blog.shop.de`` below it. Exact
  hosts of its own (``www.shop.de``) do not make it the owner of the
  rest of ``*.shop.de``.

In quick mode the one tenant serves ``*``, so every name is its own. The
rule is checked when a certificate is stored; an HTTPS listener selects
the tenant first and only then one of its certificates, so a certificate
is never served for a host its tenant does not serve, whatever policies
changed since.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge.policy.resolve import PolicySet


@dataclass(frozen=True, slots=True)
class Unserved:
    """A certificate name the tenant does not serve (all of)."""

    name: str
    owner: str | None  # the tenant that serves it (or part of it); None: no tenant


def unserved_names(policies: PolicySet, tenant: str, names: Iterable[str]) -> list[Unserved]:
    """The names (lower case, as :func:`edge.tls.certs.leaf_hosts` gives
    them) that ``tenant`` does not serve, in their order."""
    out = []
    for name in names:
        owner = _owner(policies, tenant, name)
        if owner != tenant:
            out.append(Unserved(name, owner))
    return out


def _owner(policies: PolicySet, tenant: str, name: str) -> str | None:
    # "*.S" never is an exact host, so resolving it gives whoever serves
    # the names below S that nobody lists exactly.
    policy = policies.resolve(name)
    if policy is None:
        return None
    if not name.startswith("*.") or policy.tenant != tenant:
        return policy.tenant
    suffix = name[1:]  # ".S"
    for other in policies:
        if other.tenant == tenant:
            continue
        for host in other.hosts:
            if host.endswith(suffix) and "." not in host[: -len(suffix)] and not host.startswith("*"):
                return other.tenant
    return tenant
