"""Process metrics (prometheus-client). Labels are tenant ids and small
fixed sets, never client addresses."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

DELIVERY_DECISIONS = Counter(
    "edge_delivery_decisions_total",
    "Regional delivery decisions, by tenant, client country (XX: unknown), outcome and deciding rule.",
    ("tenant", "country", "outcome", "rule"),
    registry=REGISTRY,
)
