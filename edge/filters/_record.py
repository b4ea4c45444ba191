"""What every filter of the chain does with a decision: count it, and log the
ones that refuse (or, in log mode, would have refused)."""
from __future__ import annotations

import logging

from edge.observe.anon import anonymise
from edge.observe.metrics import FILTER_DECISIONS, tally

log = logging.getLogger("edge.filters")

_MAX_CHILDREN = 100_000


class Recorder:
    """Counter tallies per (tenant, filter, rule, action), looked up once per
    key, not per request."""

    def __init__(self, filter_name: str) -> None:
        self.filter = filter_name
        self._children: dict[tuple[str, str, str], object] = {}

    def count(self, tenant: str, rule: str, action: str) -> None:
        key = (tenant, rule, action)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > _MAX_CHILDREN:  # tenants come and go on reload
                self._children.clear()
            child = self._children[key] = tally(FILTER_DECISIONS, tenant, self.filter, rule, action)
        child.inc()

    def refused(self, tenant: str, rule: str, action: str, client: str | None) -> None:
        self.count(tenant, rule, action)
        log.info(
            "filter %s: tenant=%s filter=%s rule=%s client=%s",
            "refused" if action == "block" else "would refuse (log mode)",
            tenant,
            self.filter,
            rule,
            anonymise(client),
        )
