"""Log lines that anyone can cause at request rate, written at a bounded rate.

A warning that a client can trigger with every request (a refused origin,
say) would otherwise let any client fill the node's log. :class:`LogThrottle`
lets the first line for a key through, then one per ``interval``; each line
let through carries how many were held back for its key since the one
before, so the count over time stays exact.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable


class LogThrottle:
    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        # key -> [when its last line was let through, lines held back since]
        self._seen: dict[Hashable, list] = {}

    def admit(self, key: Hashable) -> int | None:
        """None: hold this line back. Otherwise write it, with the number of
        lines held back for ``key`` since its previous one."""
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._interval:
            seen[1] += 1
            return None
        self._seen[key] = [now, 0]
        return seen[1] if seen is not None else 0

    def expired(self, *, final: bool = False) -> list[tuple[Hashable, int]]:
        """Forgets the keys whose interval is over (``final``: every key, as
        at shutdown) and returns those with lines held back, and how many:
        the caller writes one line for each so that no count is lost. Keeps
        the memory to the keys of one interval, whatever keys came before."""
        now = self._clock()
        gone = [k for k, (when, _) in self._seen.items() if final or now - when >= self._interval]
        out = []
        for key in gone:
            held = self._seen.pop(key)[1]
            if held:
                out.append((key, held))
        return out


__all__ = ["LogThrottle"]
