"""A request's outcome rendered into Cache-Status (RFC 9211) and into the
metrics' cache label (edge/pipeline/outcome.py): each string on the wire
stays what clients and tests have always read."""
from __future__ import annotations

import pytest

from edge.cache.freshness import NoStore
from edge.cache.reuse import Reuse
from edge.pipeline.outcome import Fwd, Kind, Outcome, answering

CASES = [
    # (id, outcome, Cache-Status, metrics label)
    ("hit", Outcome.hit(5), "edge; hit; ttl=5", "hit"),
    ("hit-collapsed", Outcome.hit(5, collapsed=True), "edge; hit; ttl=5; collapsed", "hit"),
    ("hit-past-lifetime-within-max-stale", Outcome.hit(-3), "edge; hit; ttl=-3", "hit"),
    ("5861-3-stale-while-revalidate", Outcome(Kind.STALE_WHILE_REVALIDATE, ttl=-4),
     "edge; hit; ttl=-4; detail=stale-while-revalidate", "hit"),
    ("5861-3-stale-while-revalidate-collapsed", Outcome(Kind.STALE_WHILE_REVALIDATE, ttl=-4, collapsed=True),
     "edge; hit; ttl=-4; collapsed; detail=stale-while-revalidate", "hit"),
    ("5861-4-stale-if-error-no-answer", Outcome(Kind.STALE_IF_ERROR, Fwd.STALE, ttl=-10),
     "edge; fwd=stale; ttl=-10; detail=stale-if-error", "stale"),
    ("5861-4-stale-if-error-on-503", Outcome(Kind.STALE_IF_ERROR, Fwd.REQUEST, fwd_status=503, ttl=2),
     "edge; fwd=request; fwd-status=503; ttl=2; detail=stale-if-error", "bypass"),
    ("9111-4.3.4-revalidated", Outcome(Kind.REVALIDATED, Fwd.STALE, fwd_status=304, ttl=60),
     "edge; fwd=stale; fwd-status=304; stored; ttl=60", "stale"),
    ("miss-stored", Outcome(Kind.STORED, Fwd.URI_MISS, ttl=60), "edge; fwd=uri-miss; stored; ttl=60", "miss"),
    ("vary-miss-stored", Outcome(Kind.STORED, Fwd.VARY_MISS, ttl=60), "edge; fwd=vary-miss; stored; ttl=60", "miss"),
    ("miss-not-stored", Outcome.not_stored(Fwd.URI_MISS, NoStore.NO_STORE), "edge; fwd=uri-miss; detail=no-store",
     "miss"),
    ("not-stored-key-remembered-uncacheable", Outcome.not_stored(Fwd.URI_MISS, NoStore.NO_STORE, uncacheable=True),
     "edge; fwd=uri-miss; uncacheable; detail=no-store", "miss"),
    ("client-reload-not-stored", Outcome.not_stored(Fwd.REQUEST, NoStore.PRIVATE), "edge; fwd=request; detail=private",
     "bypass"),
    ("pass-method", Outcome(Kind.PASSED, Fwd.METHOD), "edge; fwd=method", "bypass"),
    ("pass-bypass", Outcome(Kind.PASSED, Fwd.BYPASS), "edge; fwd=bypass", "bypass"),
    ("pass-range", Outcome(Kind.PASSED, Fwd.RANGE), "edge; fwd=range", "miss"),
    ("edge-error-4xx", Outcome.error(400, "bad-host"), "edge; detail=bad-host", "none"),
    ("origin-error-5xx", Outcome.error(502, "origin-connect"), "edge; fwd=miss; detail=origin-connect", "miss"),
    ("9111-5.2.1.7-only-if-cached", Outcome.error(504, "only-if-cached", forwarded=False),
     "edge; detail=only-if-cached", "none"),
    ("refused-by-filter", Outcome(Kind.REFUSED, detail="filter.waf"), "edge; detail=filter.waf", "none"),
    ("refused-loop", Outcome.error(508, "loop", Kind.REFUSED), "edge; fwd=miss; detail=loop", "miss"),
    ("9110-14-range-unsatisfiable", Outcome.hit(5).noted("range-unsatisfiable"),
     "edge; hit; ttl=5; detail=range-unsatisfiable", "hit"),
    ("9110-13-precondition-failed-after-revalidation",
     Outcome(Kind.REVALIDATED, Fwd.STALE, fwd_status=304, ttl=60).noted("precondition-failed"),
     "edge; fwd=stale; fwd-status=304; stored; ttl=60; detail=precondition-failed", "stale"),
]


@pytest.mark.parametrize("outcome, cache_status, label", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rendered_once_each_for_the_wire_and_the_metrics(outcome, cache_status, label):
    assert outcome.render("edge") == cache_status
    assert outcome.label == label


def test_noting_leaves_the_outcome_as_it_was():
    hit = Outcome.hit(5)
    assert hit.noted("range-unsatisfiable").note == "range-unsatisfiable" and hit.note is None


@pytest.mark.parametrize("decision, kind", [
    (Reuse.FRESH, Kind.HIT),
    (Reuse.STALE_WHILE_REVALIDATE, Kind.STALE_WHILE_REVALIDATE),
    (Reuse.MISS, None),
    (Reuse.VALIDATE, None),
    (Reuse.VALIDATE_REQUEST, None),
    (Reuse.STALE_IF_ERROR, None),  # only once the origin failed, never for a lookup or a waiter
], ids=lambda v: getattr(v, "name", str(v)))
def test_what_a_reuse_decision_answers_with(decision, kind):
    assert answering(decision) is kind
