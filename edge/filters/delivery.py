"""Regional delivery: a tenant's ``delivery`` policy applied to each request,
before any cache lookup, so that a refused request never reads or fills the
cache, and a node outside the tenant's region never stores its content."""
from __future__ import annotations

import logging

from edge.filters.chain import Verdict
from edge.geo.db import GeoDB
from edge.geo.decide import Outcome, decide
from edge.observe.anon import anonymise
from edge.observe.metrics import DELIVERY_DECISIONS, tally

log = logging.getLogger("edge.delivery")

_REASONS = {
    Outcome.BLOCK: "this content is not available in your region",
    Outcome.REDIRECT: "this content is served elsewhere for your region",
    Outcome.WRONG_NODE_REDIRECT: "this site is served by another node for data residency",
    Outcome.WRONG_NODE: "this node may not serve this site (data residency)",
}


class DeliveryFilter:
    name = "delivery"

    def __init__(self, geo: GeoDB | None, node_country: str | None, node_name: str) -> None:
        self.geo = geo
        self.node_country = node_country
        self.node_name = node_name
        # RFC 7725 §3: the Link names who blocks; here the node, by name.
        self._link = f'<urn:edge:node:{node_name}>; rel="blocked-by"'
        self._counters: dict[tuple, object] = {}

    def wants(self, policy) -> bool:
        return policy.delivery.active

    def check(self, request, ctx, policy) -> Verdict | None:
        delivery = policy.delivery
        if not delivery.active:
            return None
        client = ctx.peer
        country = self.geo.country(client) if self.geo is not None and client else None
        decision = decide(
            delivery,
            client_ip=client,
            country=country,
            node_country=self.node_country,
            path_and_query=request.raw_path,
        )
        outcome = decision.outcome
        key = (policy.tenant, country, outcome, decision.rule)
        counter = self._counters.get(key)
        if counter is None:
            # Looked up once per key: bumping a tally is one addition on the hit path.
            if len(self._counters) > 100_000:
                self._counters.clear()
            counter = self._counters[key] = tally(DELIVERY_DECISIONS, policy.tenant, country or "XX", outcome.value,
                                                  decision.rule)
        counter.inc()
        if outcome is Outcome.DELIVER:
            return None
        log.info(
            "delivery refused: tenant=%s country=%s rule=%s outcome=%s client=%s",
            policy.tenant,
            country or "unknown",
            decision.rule,
            outcome.value,
            anonymise(client),
        )
        headers = {"Vary": "*"} if outcome is not Outcome.WRONG_NODE else {}
        if decision.location is not None:
            headers["Location"] = decision.location
        if outcome is Outcome.BLOCK:
            headers["Link"] = self._link
        return Verdict(outcome.status, _REASONS[outcome], f"delivery.{decision.rule}", headers)
