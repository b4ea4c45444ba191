"""Warnings that clients can cause at request rate: one line per key per
interval, and every line held back is counted in a later one."""
from __future__ import annotations

import pytest

from edge.observe.throttle import LogThrottle


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        # (time, key) -> what admit says: None held back, else the count held back before it
        pytest.param([(0, "a")], [0], id="first-line-written"),
        pytest.param([(0, "a"), (1, "a"), (59.9, "a")], [0, None, None], id="held-within-the-interval"),
        pytest.param([(0, "a"), (1, "a"), (2, "a"), (60, "a")], [0, None, None, 2], id="next-line-counts-them"),
        pytest.param([(0, "a"), (60, "a"), (61, "a"), (120, "a")], [0, 0, None, 1], id="interval-from-the-last-line"),
        pytest.param([(0, "a"), (1, "b"), (2, "a"), (3, "b")], [0, 0, None, None], id="keys-apart"),
    ],
)
def test_which_lines_are_written(calls, expected):
    now = [0.0]
    throttle = LogThrottle(60.0, lambda: now[0])
    out = []
    for when, key in calls:
        now[0] = when
        out.append(throttle.admit(key))
    assert out == expected


def test_keys_whose_interval_is_over_are_forgotten_with_their_counts():
    now = [0.0]
    throttle = LogThrottle(60.0, lambda: now[0])
    for when, key in [(0, "a"), (1, "a"), (2, "a"), (40, "b"), (41, "b"), (59, "c")]:
        now[0] = when
        throttle.admit(key)
    now[0] = 90.0
    assert throttle.expired() == [("a", 2)]  # "b" is still in its interval, "c" held none back
    assert throttle.expired() == []
    assert throttle.admit("a") == 0  # its count was handed over already
    assert throttle.expired(final=True) == [("b", 1)]
    assert throttle.admit("b") == 0 and throttle.admit("c") == 0
