"""The ``filters.events`` section: when a tenant is told it is under
attack, and where. :mod:`edge.observe.events` applies it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.http.urls import check_url
from edge.policy.sections.origins import SET_BY, SET_BY_EXPECTED
from edge.schema.check import BAD, Check, int_in, join, one_of

DEFAULT_TENANT_THRESHOLD = 1000
DEFAULT_CLIENT_THRESHOLD = 100
DEFAULT_WINDOW = 60
MIN_WINDOW = 10
MAX_WINDOW = 3600
MAX_THRESHOLD = 1_000_000_000
MIN_SECRET = 16
MAX_SECRET = 1024
MAX_URL = 2048

KEYS: dict[str, tuple[str, ...]] = {
    "events": ("webhook_url", "secret", "tenant_threshold", "client_threshold", "window", "set_by"),
}

WEBHOOK_URL = 'an absolute http:// or https:// URL without user info or fragment, such as "https://hooks.example.de/edge"'
SECRET = (f"a secret of {MIN_SECRET} to {MAX_SECRET} printable ASCII characters without spaces, "
          'such as the output of "openssl rand -hex 32"')
SECRET_NEEDED = SECRET + ' (required when "webhook_url" is set)'
SECRET_UNUSED = 'null unless "webhook_url" is set'
THRESHOLD = f"an integer 1..{MAX_THRESHOLD}"
WINDOW = f"an integer number of seconds {MIN_WINDOW}..{MAX_WINDOW}"


@dataclass(frozen=True, slots=True)
class EventSettings:
    """The ``filters.events`` section; the default logs events and sends none."""

    webhook_url: str | None = None
    secret: str | None = field(default=None, repr=False)  # never in a repr, a log or an error
    tenant_threshold: int = DEFAULT_TENANT_THRESHOLD
    client_threshold: int = DEFAULT_CLIENT_THRESHOLD
    window: int = DEFAULT_WINDOW
    # Who wrote webhook_url: "tenant" (a tenant token) makes deliveries
    # guarded (edge.origin.guard); files and operators vouch.
    set_by: str = "operator"

    @property
    def guarded(self) -> bool:
        return self.set_by == "tenant"


NO_EVENTS = EventSettings()


def _webhook_url(v: object) -> Any:
    if v is None:
        return None
    if check_url(v, fragment=False, max_length=MAX_URL) is None:
        return BAD
    assert isinstance(v, str)
    return v[:v.index(":")].lower() + v[v.index(":"):]


def _secret_ok(v: object) -> bool:
    return isinstance(v, str) and MIN_SECRET <= len(v) <= MAX_SECRET and all(33 <= ord(ch) <= 126 for ch in v)


def _described(v: object) -> str:
    """What a rejected secret was, without repeating it: errors reach logs and API answers."""
    if isinstance(v, str):
        if all(33 <= ord(ch) <= 126 for ch in v):
            return f"a string of {len(v)} characters"
        return f"a string of {len(v)} characters, not all of them printable ASCII without spaces"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return "a number"
    return "a list" if isinstance(v, list) else "an object"


def parse_events(c: Check, o: dict[str, Any], path: str) -> EventSettings:
    """``filters.events`` (``o``: its object, keys already checked against
    ``KEYS["events"]``) -> EventSettings; problems go to ``c`` with the
    field's path, and the default is returned in their place."""
    url = c.get(o, path, "webhook_url", None, WEBHOOK_URL, _webhook_url)
    raw = o.get("secret")
    where = join(path, "secret")
    secret = None
    if raw is not None and not _secret_ok(raw):
        # Described, never echoed: a near-miss secret is still a secret.
        c.fail(where, SECRET_NEEDED if url is not None else SECRET, _described(raw), literal=True)
    elif raw is None and url is not None:
        c.fail(where, SECRET_NEEDED, "nothing", literal=True)
    elif raw is not None and o.get("webhook_url") is None:
        c.fail(where, SECRET_UNUSED, "a secret", literal=True)
    else:
        secret = raw
    threshold = int_in(1, MAX_THRESHOLD)
    return EventSettings(
        webhook_url=url,
        secret=secret,
        tenant_threshold=c.get(o, path, "tenant_threshold", DEFAULT_TENANT_THRESHOLD, THRESHOLD, threshold),
        client_threshold=c.get(o, path, "client_threshold", DEFAULT_CLIENT_THRESHOLD, THRESHOLD, threshold),
        window=c.get(o, path, "window", DEFAULT_WINDOW, WINDOW, int_in(MIN_WINDOW, MAX_WINDOW)),
        set_by=c.get(o, path, "set_by", "operator", SET_BY_EXPECTED, one_of(*SET_BY)),
    )


def events_data(s: EventSettings) -> dict[str, Any]:
    """The section as data again: ``parse_events`` of it gives an equal value."""
    return {
        "webhook_url": s.webhook_url,
        "secret": s.secret,
        "tenant_threshold": s.tenant_threshold,
        "client_threshold": s.client_threshold,
        "window": s.window,
        "set_by": s.set_by,
    }
