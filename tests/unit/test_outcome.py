"""A request's outcome rendered into Cache-Status (RFC 9211) and into the
metrics' cache label (edge/pipeline/outcome.py): each string on the wire
stays what clients and tests have always read."""
from __future__ import annotations

import pytest

from edge.cache.freshness import NoStore
from edge.cache.reuse import Reuse
from edge.pipeline.outcome import (
    HIT,
    HIT_COLLAPSED,
    STALE_WHILE_REVALIDATE,
    STALE_WHILE_REVALIDATE_COLLAPSED,
    Fwd,
    Kind,
    Outcome,
    answering,
    cached,
)

CASES = [
    # (id, outcome, its answer's ttl, Cache-Status, metrics label)
    ("hit", HIT, 5, "edge; hit; ttl=5", "hit"),
    ("hit-collapsed", HIT_COLLAPSED, 5, "edge; hit; ttl=5; collapsed", "hit"),
    ("hit-past-lifetime-within-max-stale", HIT, -3, "edge; hit; ttl=-3", "hit"),
    ("5861-3-stale-while-revalidate", STALE_WHILE_REVALIDATE, -4,
     "edge; hit; ttl=-4; detail=stale-while-revalidate", "hit"),
    ("5861-3-stale-while-revalidate-collapsed", STALE_WHILE_REVALIDATE_COLLAPSED, -4,
     "edge; hit; ttl=-4; collapsed; detail=stale-while-revalidate", "hit"),
    ("5861-4-stale-if-error-no-answer", Outcome(Kind.STALE_IF_ERROR, Fwd.STALE), -10,
     "edge; fwd=stale; ttl=-10; detail=stale-if-error", "stale"),
    ("5861-4-stale-if-error-on-503", Outcome(Kind.STALE_IF_ERROR, Fwd.REQUEST, fwd_status=503), 2,
     "edge; fwd=request; fwd-status=503; ttl=2; detail=stale-if-error", "bypass"),
    ("9111-4.3.4-revalidated", Outcome.revalidated(Fwd.STALE), 60,
     "edge; fwd=stale; fwd-status=304; stored; ttl=60", "stale"),
    ("miss-stored", Outcome.stored(Fwd.URI_MISS), 60, "edge; fwd=uri-miss; stored; ttl=60", "miss"),
    ("vary-miss-stored", Outcome.stored(Fwd.VARY_MISS), 60, "edge; fwd=vary-miss; stored; ttl=60", "miss"),
    ("miss-not-stored", Outcome.not_stored(Fwd.URI_MISS, NoStore.NO_STORE), None, "edge; fwd=uri-miss; detail=no-store",
     "miss"),
    ("not-stored-key-remembered-uncacheable", Outcome.not_stored(Fwd.URI_MISS, NoStore.NO_STORE, uncacheable=True),
     None, "edge; fwd=uri-miss; uncacheable; detail=no-store", "miss"),
    ("client-reload-not-stored", Outcome.not_stored(Fwd.REQUEST, NoStore.PRIVATE), None,
     "edge; fwd=request; detail=private", "bypass"),
    ("pass-method", Outcome.passed(Fwd.METHOD), None, "edge; fwd=method", "bypass"),
    ("pass-bypass", Outcome.passed(Fwd.BYPASS), None, "edge; fwd=bypass", "bypass"),
    ("pass-range", Outcome.passed(Fwd.RANGE), None, "edge; fwd=range", "miss"),
    ("edge-error-4xx", Outcome.error(400, "bad-host"), None, "edge; detail=bad-host", "none"),
    ("origin-error-5xx", Outcome.error(502, "origin-connect"), None, "edge; fwd=miss; detail=origin-connect", "miss"),
    ("9111-5.2.1.7-only-if-cached", Outcome.error(504, "only-if-cached", forwarded=False), None,
     "edge; detail=only-if-cached", "none"),
    ("refused-by-filter", Outcome(Kind.REFUSED, detail="filter.waf"), None, "edge; detail=filter.waf", "none"),
    ("refused-loop", Outcome.error(508, "loop", Kind.REFUSED), None, "edge; fwd=miss; detail=loop", "miss"),
    ("9110-14-range-unsatisfiable", HIT.noted("range-unsatisfiable"), 5,
     "edge; hit; ttl=5; detail=range-unsatisfiable", "hit"),
    ("9110-13-precondition-failed-after-revalidation",
     Outcome.revalidated(Fwd.STALE).noted("precondition-failed"), 60,
     "edge; fwd=stale; fwd-status=304; stored; ttl=60; detail=precondition-failed", "stale"),
]


@pytest.mark.parametrize("outcome, ttl, cache_status, label", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rendered_once_each_for_the_wire_and_the_metrics(outcome, ttl, cache_status, label):
    assert outcome.render("edge", ttl) == cache_status
    assert outcome.label == label


def test_noting_leaves_the_shared_outcome_as_it_was():
    noted = HIT.noted("range-unsatisfiable")
    assert noted.note == "range-unsatisfiable" and HIT.note is None
    assert HIT.render("edge", 5) == "edge; hit; ttl=5"


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


@pytest.mark.parametrize("kind", [Kind.HIT, Kind.STALE_WHILE_REVALIDATE])
def test_answers_from_the_cache_are_shared_outcomes(kind):
    for collapsed in (False, True):
        outcome = cached(kind, collapsed)
        assert outcome is cached(kind, collapsed) and outcome.kind is kind and outcome.collapsed is collapsed
