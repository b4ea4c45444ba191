"""Per-tenant client address lists (``filters.ip_lists``).

An allow-listed client passes and is marked (``ctx.allowlisted``) so that the
later filters (rate limits, WAF) let it through; a denied client gets 403.
The allow list wins over the deny list, so an office /32 can be carved out of
a denied /16. Membership is one binary search over merged ranges
(:class:`edge.policy.model.CidrSet`), whatever the length of the lists.
In ``"log"`` mode nothing changes for the client: a denied client passes
(logged and counted) and an allow-listed client is not marked.
"""
from __future__ import annotations

from edge.filters._record import Recorder
from edge.filters.chain import Verdict
from edge.policy.sections.cidrs import NO_CIDRS, CidrSet

DENIED = Verdict(403, "forbidden", "filter.ip_lists")
NODE_DENIED = Verdict(403, "forbidden", "filter.ip_lists.node")


class IpListFilter:
    """Node-wide lists (``[filters]`` in edge.toml) come first: the node's
    deny list refuses a client whatever its tenant allows, the node's allow
    list marks it like a tenant's allow list does."""

    name = "ip_lists"

    def __init__(self, node_allow: CidrSet = NO_CIDRS, node_deny: CidrSet = NO_CIDRS) -> None:
        self._record = Recorder(self.name)
        self.set_node_lists(node_allow, node_deny)

    def set_node_lists(self, allow: CidrSet, deny: CidrSet) -> None:
        # One assignment: a reload swaps both lists at once.
        self._node = (allow, deny) if len(allow) or len(deny) else None

    def check(self, request, ctx, policy) -> Verdict | None:
        node = self._node
        if node is not None:
            client = ctx.peer
            if client in node[0]:
                ctx.allowlisted = True
                self._record.count(policy.tenant, "node-allow", "allow")
                return None
            if client in node[1]:
                self._record.refused(policy.tenant, "node-deny", "block", client)
                return NODE_DENIED
        filters = policy.filters
        if not filters.active:
            return None
        lists = filters.ip_lists
        if not lists.active:
            return None
        client = ctx.peer
        if client in lists.allow:
            if lists.mode == "block":
                ctx.allowlisted = True
                self._record.count(policy.tenant, "allow", "allow")
            return None
        if client in lists.deny:
            self._record.refused(policy.tenant, "deny", lists.mode, client)
            return DENIED if lists.mode == "block" else None
        return None
