"""Which expiry notice is due (edge.tls.expiry.due): once per threshold,
only the most urgent when several were crossed while nobody looked."""
from __future__ import annotations

import pytest

from edge.tls.expiry import DAY, due

CASES = [
    # (id, seconds left, last notice sent or None, notice due or None)
    ("far-from-expiry", 90 * DAY, None, None),
    ("just-over-30-days", 30 * DAY + 1, None, None),
    ("exactly-30-days", 30 * DAY, None, 30),
    ("20-days-first-look", 20 * DAY, None, 30),
    ("20-days-after-the-30-day-notice", 20 * DAY, 30, None),
    ("14-days", 14 * DAY, 30, 14),
    ("6-days-first-look-only-the-7-day-notice", 6 * DAY, None, 7),
    ("6-days-after-the-30-day-notice", 6 * DAY, 30, 7),
    ("6-days-after-the-7-day-notice", 6 * DAY, 7, None),
    ("an-hour-left", 3600, 7, 1),
    ("an-hour-left-already-told", 3600, 1, None),
    ("just-expired", 0, 1, 0),
    ("long-expired-first-look", -30 * DAY, None, 0),
    ("expired-already-told", -DAY, 0, None),
]


@pytest.mark.parametrize(("left", "last", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_due(left, last, expected):
    assert due(left, last) == expected
