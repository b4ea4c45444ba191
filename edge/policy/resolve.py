"""Host -> tenant resolution over an immutable set of policies."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

from edge.policy.model import TenantPolicy


class PolicySet:
    """The policies in force, as one value that is replaced, never changed.

    Hosts never overlap between tenants (the loader settles conflicts before
    building a set; building one from overlapping policies is a ValueError).
    """

    __slots__ = ("tenants", "_owners", "_exact", "_wild", "_any")

    tenants: Mapping[str, TenantPolicy]

    def __init__(self, policies: Iterable[TenantPolicy] = ()) -> None:
        tenants: dict[str, TenantPolicy] = {}
        owners: dict[str, str] = {}
        exact: dict[str, TenantPolicy] = {}
        wild: dict[str, TenantPolicy] = {}
        any_host: TenantPolicy | None = None
        for policy in sorted(policies, key=lambda p: p.tenant):
            if policy.tenant in tenants:
                raise ValueError(f"tenant {policy.tenant!r} given twice")
            tenants[policy.tenant] = policy
            for host in policy.hosts:
                holder = owners.setdefault(host, policy.tenant)
                if holder != policy.tenant:
                    raise ValueError(f"host {host!r} claimed by tenants {holder!r} and {policy.tenant!r}")
                if host == "*":
                    any_host = policy
                elif host.startswith("*."):
                    wild[host[2:]] = policy
                else:
                    exact[host] = policy
                    if host.startswith("["):  # IPv6 literal: also without brackets
                        exact[host[1:-1]] = policy
        set_ = object.__setattr__
        set_(self, "tenants", MappingProxyType(tenants))
        set_(self, "_owners", MappingProxyType(owners))
        set_(self, "_exact", exact)
        set_(self, "_wild", wild)
        set_(self, "_any", any_host)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PolicySet is immutable; build a new one")

    def resolve(self, host: str) -> TenantPolicy | None:
        """The tenant serving ``host`` (lower-case, without port).

        Exact name first, then ``*.suffix`` from the longest suffix, then
        ``*``: a dictionary probe per label, whatever the number of tenants.
        """
        policy = self._exact.get(host)
        if policy is not None:
            return policy
        wild = self._wild
        if wild:
            dot = host.find(".")
            while dot >= 0:
                policy = wild.get(host[dot + 1 :])
                if policy is not None:
                    return policy
                dot = host.find(".", dot + 1)
        if host.endswith(".") and len(host) > 1:  # "example.de." is the same name
            return self.resolve(host[:-1])
        return self._any

    def owner(self, host: str) -> str | None:
        """The tenant that lists exactly this host entry (``*.x`` included), if any."""
        return self._owners.get(host)

    def get(self, tenant: str) -> TenantPolicy | None:
        return self.tenants.get(tenant)

    def __len__(self) -> int:
        return len(self.tenants)

    def __iter__(self) -> Iterator[TenantPolicy]:
        return iter(self.tenants.values())

    def __repr__(self) -> str:
        return f"PolicySet({sorted(self.tenants)})"
