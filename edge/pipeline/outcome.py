"""How a request ended, as data: set once by the phase that answers, and
rendered from here alone into the Cache-Status field (RFC 9211), which the
access log records as sent, and into the metrics' cache label."""
from __future__ import annotations

import enum

from edge.cache.freshness import NoStore
from edge.cache.reuse import Reuse


class Fwd(enum.Enum):
    """Why the request went to the origin: RFC 9211 ``fwd``; and the
    metrics' cache label of a request that did."""

    URI_MISS = ("uri-miss", "miss")
    VARY_MISS = ("vary-miss", "miss")
    STALE = ("stale", "stale")
    REQUEST = ("request", "bypass")  # the client asked to go to the origin
    METHOD = ("method", "bypass")  # a method the cache does not answer
    BYPASS = ("bypass", "bypass")  # the tenant's rules, or its cache off
    RANGE = ("range", "miss")  # a range of an object not stored: passed on, the whole fetched beside it
    MISS = ("miss", "miss")  # the origin was needed and failed, or the edge failed on the way

    def __init__(self, token: str, label: str) -> None:
        self.token = token
        self.label = label


class Kind(enum.Enum):
    """What answered. The attributes say how it shows in Cache-Status."""

    # (token, "hit" in Cache-Status, "stored" in it, its detail)
    HIT = ("hit", True, False, None)  # the cache
    STALE_WHILE_REVALIDATE = ("stale-while-revalidate", True, False, "stale-while-revalidate")  # refreshed meanwhile
    STALE_IF_ERROR = ("stale-if-error", False, False, "stale-if-error")  # the origin failed: the stale entry
    REVALIDATED = ("revalidated", False, True, None)  # the stored entry, freshened by the origin's 304
    STORED = ("stored", False, True, None)  # the origin's answer, stored
    NOT_STORED = ("not-stored", False, False, None)  # the origin's answer, not stored (``detail``: why)
    PASSED = ("passed", False, False, None)  # the origin, without the cache
    REFUSED = ("refused", False, False, None)  # a filter
    ERROR = ("error", False, False, None)  # the edge's own error answer (bad request, origin failure)
    ANSWERED = ("answered", False, False, None)  # the edge's own answer that is no error (an ACME challenge)

    def __init__(self, token: str, hit: bool, stored: bool, detail: str | None) -> None:
        self.token = token
        self.hit = hit
        self.stored = stored
        self.detail = detail


_HIT = Kind.HIT
# A stored response (or one still arriving) answers the request itself for
# these reuse() decisions; for any other the origin is asked.
_ANSWERING = {Reuse.FRESH: Kind.HIT, Reuse.STALE_WHILE_REVALIDATE: Kind.STALE_WHILE_REVALIDATE}


def answering(decision: Reuse) -> Kind | None:
    """What answers a request for which reuse() decided ``decision``: the
    stored response (a hit, or stale while it is refreshed), or None: the
    origin. One rendering for a lookup and for every kind of waiter."""
    return _ANSWERING.get(decision)


class Outcome:
    """How one request ended, without the numbers of the response it got:
    the ttl (seconds of freshness left, as the Age field counts them) is
    passed to ``render``. ``note``: what became of a cache answer (a range
    that cannot be satisfied, a failed precondition).

    Never changed once made: the common outcomes are shared constants
    (``HIT``, ``Outcome.passed(fwd)``...), so a hit allocates none."""

    __slots__ = ("kind", "fwd", "fwd_status", "collapsed", "detail", "note", "uncacheable", "label")

    def __init__(self, kind: Kind, fwd: Fwd | None = None, fwd_status: int | None = None, collapsed: bool = False,
                 detail: str | None = None, note: str | None = None, uncacheable: bool = False) -> None:
        self.kind = kind
        self.fwd = fwd
        self.fwd_status = fwd_status
        self.collapsed = collapsed  # answered from another request's fetch
        self.detail = detail if detail is not None else kind.detail
        self.note = note
        # The key was remembered as uncacheable: fetched without waiting for
        # another request's fetch. A parameter of its own, as ``detail``
        # already says why this answer was not stored.
        self.uncacheable = uncacheable
        # The metrics' cache label: hit, miss, stale, bypass, or none (an
        # answer of the edge's own: a refusal, a bad request).
        self.label = fwd.label if fwd is not None else "hit" if kind.hit else "none"

    @staticmethod
    def passed(fwd: Fwd) -> Outcome:
        return _PASSED[fwd]

    @staticmethod
    def stored(fwd: Fwd | None) -> Outcome:
        return _STORED[fwd]

    @staticmethod
    def revalidated(fwd: Fwd | None) -> Outcome:
        return _REVALIDATED[fwd]

    @classmethod
    def not_stored(cls, fwd: Fwd, reason: NoStore, uncacheable: bool = False) -> Outcome:
        return cls(Kind.NOT_STORED, fwd, detail=reason.value, uncacheable=uncacheable)

    @classmethod
    def error(cls, status: int, detail: str, kind: Kind = Kind.ERROR, forwarded: bool = True) -> Outcome:
        """An answer the edge wrote itself; one of 5xx counts as the miss
        it was on the way to (RFC 9211), unless the origin was off limits."""
        return cls(kind, Fwd.MISS if forwarded and status >= 500 else None, detail=detail)

    def noted(self, note: str) -> Outcome:
        return Outcome(self.kind, self.fwd, fwd_status=self.fwd_status, collapsed=self.collapsed,
                       detail=self.detail, note=note, uncacheable=self.uncacheable)

    def render(self, node: str, ttl: int | None = None) -> str:
        """The Cache-Status field value (RFC 9211) this node sends."""
        kind = self.kind
        if kind is _HIT and not self.collapsed and self.note is None:
            return f"{node}; hit; ttl={ttl}"  # most answers: spelled out
        parts = [node]
        if kind.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append("fwd=" + self.fwd.token)
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if kind.stored:
            parts.append("stored")
        if ttl is not None:
            parts.append(f"ttl={ttl}")
        if self.collapsed:
            parts.append("collapsed")
        if self.uncacheable:
            parts.append("uncacheable")
        if self.detail:
            parts.append("detail=" + self.detail)
        if self.note:
            parts.append("detail=" + self.note)
        return "; ".join(parts)

    def __repr__(self) -> str:
        return f"Outcome({self.render('node')!r})"


HIT = Outcome(Kind.HIT)
HIT_COLLAPSED = Outcome(Kind.HIT, collapsed=True)
STALE_WHILE_REVALIDATE = Outcome(Kind.STALE_WHILE_REVALIDATE)
STALE_WHILE_REVALIDATE_COLLAPSED = Outcome(Kind.STALE_WHILE_REVALIDATE, collapsed=True)
_PASSED = {fwd: Outcome(Kind.PASSED, fwd) for fwd in Fwd}
_STORED = {fwd: Outcome(Kind.STORED, fwd) for fwd in (None, *Fwd)}
_REVALIDATED = {fwd: Outcome(Kind.REVALIDATED, fwd, fwd_status=304) for fwd in (None, *Fwd)}


_CACHED = {(Kind.HIT, False): HIT, (Kind.HIT, True): HIT_COLLAPSED,
           (Kind.STALE_WHILE_REVALIDATE, False): STALE_WHILE_REVALIDATE,
           (Kind.STALE_WHILE_REVALIDATE, True): STALE_WHILE_REVALIDATE_COLLAPSED}


def cached(kind: Kind, collapsed: bool) -> Outcome:
    """The shared outcome of a request answered from the cache as ``answering`` said."""
    return _CACHED[kind, collapsed]
