"""Security events: the policy section, aggregation over fixed windows with a
fake clock, bounded memory, anonymised sources, and signatures."""
from __future__ import annotations

import hashlib
import hmac
import logging
import weakref
from typing import Any

import orjson
import pytest

from edge.observe.events import (
    EVENTS_DROPPED,
    MAX_CLIENT_EVENTS,
    EventSettings,
    SecurityEvents,
    sign,
    verify_signature,
)
from edge.policy.sections.events import events_data, parse_events
from edge.schema.check import Check

SECRET = "s3cr3t-0123456789abcdef"
URL = "https://hooks.example.de/edge?token=abc"
THRESHOLD = "an integer 1..1000000000"
WINDOW = "an integer number of seconds 10..3600"
WEBHOOK = 'an absolute http:// or https:// URL without user info or fragment, such as "https://hooks.example.de/edge"'
SECRET_TEXT = ('a secret of 16 to 1024 printable ASCII characters without spaces, '
               'such as the output of "openssl rand -hex 32"')
NEEDED = SECRET_TEXT + ' (required when "webhook_url" is set)'
T0 = 1_700_000_040  # a multiple of 60: the start of a one-minute window


def parse(o: dict[str, Any]) -> tuple[EventSettings, list[tuple[str, str, str]]]:
    c = Check("shop.json")
    settings = parse_events(c, o, "filters.events")
    return settings, [(e.field, e.expected, e.found) for e in c.errors]


# --- the policy section -------------------------------------------------------

BAD = [
    ("url not a string", {"webhook_url": 5}, [("filters.events.webhook_url", WEBHOOK, "5")]),
    ("url relative", {"webhook_url": "/hook", "secret": SECRET}, [("filters.events.webhook_url", WEBHOOK, '"/hook"')]),
    ("url ftp", {"webhook_url": "ftp://h.example/x", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"ftp://h.example/x"')]),
    ("url user info", {"webhook_url": "https://u:p@h.example/x", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"https://u:p@h.example/x"')]),
    ("url fragment", {"webhook_url": "https://h.example/x#y", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"https://h.example/x#y"')]),
    ("url space", {"webhook_url": "https://h.example/a b", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"https://h.example/a b"')]),
    # The one URL check of policies: an escape must be "%" and two hex digits.
    ("url bad escape", {"webhook_url": "https://h.example/a%zz", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"https://h.example/a%zz"')]),
    ("url port 0", {"webhook_url": "http://h.example:0/", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"http://h.example:0/"')]),
    ("url bad port", {"webhook_url": "http://h.example:99999/", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"http://h.example:99999/"')]),
    ("url no host", {"webhook_url": "https:///x", "secret": SECRET}, [("filters.events.webhook_url", WEBHOOK, '"https:///x"')]),
    ("url hex host", {"webhook_url": "http://0x7f000001/x", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"http://0x7f000001/x"')]),
    ("url decimal host", {"webhook_url": "http://2130706433/x", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"http://2130706433/x"')]),
    ("url bad label", {"webhook_url": "http://-h.example/x", "secret": SECRET},
     [("filters.events.webhook_url", WEBHOOK, '"http://-h.example/x"')]),
    ("set_by unknown", {"set_by": "root"}, [("filters.events.set_by", '"operator" or "tenant"', '"root"')]),
    ("secret missing", {"webhook_url": URL}, [("filters.events.secret", NEEDED, "nothing")]),
    ("secret null", {"webhook_url": URL, "secret": None}, [("filters.events.secret", NEEDED, "nothing")]),
    ("secret short", {"webhook_url": URL, "secret": "0123456789"},
     [("filters.events.secret", NEEDED, "a string of 10 characters")]),
    ("secret with space", {"webhook_url": URL, "secret": "0123456789 abcdefgh"},
     [("filters.events.secret", NEEDED, "a string of 19 characters, not all of them printable ASCII without spaces")]),
    ("secret number", {"webhook_url": URL, "secret": 1234567890123456789}, [("filters.events.secret", NEEDED, "a number")]),
    ("secret without url", {"secret": SECRET}, [("filters.events.secret", 'null unless "webhook_url" is set', "a secret")]),
    ("tenant threshold 0", {"tenant_threshold": 0}, [("filters.events.tenant_threshold", THRESHOLD, "0")]),
    ("tenant threshold float", {"tenant_threshold": 1.5}, [("filters.events.tenant_threshold", THRESHOLD, "1.5")]),
    ("tenant threshold bool", {"tenant_threshold": True}, [("filters.events.tenant_threshold", THRESHOLD, "true")]),
    ("client threshold string", {"client_threshold": "100"}, [("filters.events.client_threshold", THRESHOLD, '"100"')]),
    ("client threshold huge", {"client_threshold": 10**10}, [("filters.events.client_threshold", THRESHOLD, "10000000000")]),
    ("window short", {"window": 9}, [("filters.events.window", WINDOW, "9")]),
    ("window long", {"window": 3601}, [("filters.events.window", WINDOW, "3601")]),
    ("window float", {"window": 60.5}, [("filters.events.window", WINDOW, "60.5")]),
    ("every field at once", {"webhook_url": "x", "tenant_threshold": -1, "window": "60"},
     [("filters.events.webhook_url", WEBHOOK, '"x"'), ("filters.events.tenant_threshold", THRESHOLD, "-1"),
      ("filters.events.window", WINDOW, '"60"')]),
]


@pytest.mark.parametrize(("name", "o", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_section(name, o, expected):
    assert parse(o)[1] == expected


GOOD = [
    ("empty: log only, defaults", {}, EventSettings(None, None, 1000, 100, 60)),
    ("nulls", {"webhook_url": None, "secret": None}, EventSettings()),
    ("webhook", {"webhook_url": URL, "secret": SECRET, "tenant_threshold": 5, "client_threshold": 2, "window": 10},
     EventSettings(URL, SECRET, 5, 2, 10)),
    ("scheme lower-cased", {"webhook_url": "HTTP://127.0.0.1:8081/h", "secret": SECRET},
     EventSettings("http://127.0.0.1:8081/h", SECRET)),
    ("ipv6 host", {"webhook_url": "http://[::1]:8081/h", "secret": SECRET}, EventSettings("http://[::1]:8081/h", SECRET)),
    ("longest window", {"window": 3600}, EventSettings(window=3600)),
]


@pytest.mark.parametrize(("name", "o", "expected"), GOOD, ids=[g[0] for g in GOOD])
def test_good_section(name, o, expected):
    settings, errors = parse(o)
    assert errors == []
    assert settings == expected
    assert parse(events_data(settings)) == (settings, [])  # round trip


@pytest.mark.parametrize("bad", ["tiny", "with a space in it!", "ümlaut-secret-0123456789"])
def test_a_rejected_secret_is_never_repeated(bad):
    _, errors = parse({"webhook_url": URL, "secret": bad})
    assert errors and all(bad not in text for error in errors for text in error)
    assert SECRET not in repr(EventSettings(URL, SECRET))


# --- aggregation ----------------------------------------------------------------


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


_SEEN: weakref.WeakKeyDictionary[SecurityEvents, set[str]] = weakref.WeakKeyDictionary()


def queued(events: SecurityEvents) -> list[dict[str, Any]]:
    """The events queued to be logged and sent since the last look."""
    seen = _SEEN.setdefault(events, set())
    out = [event for event in events.queued() if event["id"] not in seen]
    seen.update(event["id"] for event in out)
    return out


def kinds(evs: list[dict[str, Any]]) -> list[str]:
    return [e["what"] for e in evs]


def make(clock: Clock | None = None, **kw) -> tuple[SecurityEvents, Clock]:
    clock = clock or Clock()
    return SecurityEvents("edge-fra-1", clock=clock, **kw), clock


def flood(events: SecurityEvents, settings: EventSettings, n: int, client: str = "203.0.113.7",
          tenant: str = "shop", filter_name: str = "waf", rules: tuple[str, ...] = ("942100",)) -> None:
    for _ in range(n):
        events.record(tenant, settings, filter_name, rules, client)


def test_a_flood_of_100k_blocks_is_three_events_per_window():
    events, clock = make()
    settings = EventSettings()
    flood(events, settings, 100_000)
    evs = queued(events)
    assert kinds(evs) == ["client_blocks", "tenant_block_rate"]
    assert evs[0]["client"] == {"source": "203.0.113.0/24", "blocked": 100} and evs[0]["threshold"] == 100
    assert evs[1]["counts"]["blocked"] == 1000 and evs[1]["threshold"] == 1000
    clock.now += 60
    events.tick()
    (summary,) = queued(events)
    assert summary["what"] == "window_summary" and summary["partial"] is False
    assert summary["counts"] == {"blocked": 100_000, "by_filter": {"waf": 100_000}}
    assert summary["alerts"] == {"tenant_block_rate": 1, "client_blocks": 1}
    assert summary["top_sources"] == [{"client": "203.0.113.0/24", "blocked": 100_000}]
    assert summary["rules"] == {"942100": 100_000}


def test_a_sustained_flood_gives_at_most_three_events_a_window():
    events, clock = make()
    settings = EventSettings(window=10)
    all_events: list[dict[str, Any]] = []
    for _ in range(20):  # 20 windows, 5,000 blocks each, spread over the window
        for _ in range(10):
            flood(events, settings, 500)
            clock.now += 1
        all_events += queued(events)
    events.tick()
    all_events += queued(events)
    assert len(all_events) == 60
    assert kinds(all_events).count("tenant_block_rate") == 20
    assert kinds(all_events).count("window_summary") == 20
    starts = sorted({e["window"]["start"] for e in all_events})
    assert len(starts) == 20


def test_a_hundred_thousand_sources_give_a_bounded_number_of_client_events():
    events, _ = make()
    settings = EventSettings(client_threshold=1, tenant_threshold=10**9)
    for i in range(100_000):
        events.record("shop", settings, "rate_limits", ("r",), f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    evs = queued(events)
    assert kinds(evs) == ["client_blocks"] * MAX_CLIENT_EVENTS


@pytest.mark.parametrize(("threshold", "blocks", "fired"), [(1, 1, True), (1000, 999, False), (1000, 1000, True), (7, 50, True)])
def test_tenant_threshold(threshold, blocks, fired):
    events, _ = make()
    settings = EventSettings(tenant_threshold=threshold, client_threshold=10**9)
    for i in range(blocks):  # every block from another address: only the tenant's count can cross
        events.record("shop", settings, "waf", (), f"198.51.{i >> 8 & 255}.{i & 255}")
    evs = queued(events)
    assert kinds(evs) == (["tenant_block_rate"] if fired else [])
    if fired:
        assert evs[0]["counts"]["blocked"] == threshold


def test_client_threshold_counts_each_source_apart():
    events, _ = make()
    settings = EventSettings(client_threshold=100, tenant_threshold=10**9)
    flood(events, settings, 99, client="192.0.2.1")
    flood(events, settings, 99, client="192.0.2.2")
    assert queued(events) == []
    flood(events, settings, 1, client="192.0.2.2")
    (ev,) = queued(events)
    assert ev["what"] == "client_blocks" and ev["client"] == {"source": "192.0.2.0/24", "blocked": 100}
    assert ev["counts"]["blocked"] == 199
    # both addresses are in one /24: the top sources merge them
    assert ev["top_sources"] == [{"client": "192.0.2.0/24", "blocked": 199}]


def test_ipv6_sources_are_counted_by_their_64():
    events, _ = make()
    settings = EventSettings(client_threshold=10, tenant_threshold=10**9)
    for i in range(10):  # a fresh address for every request, all in one /64
        events.record("shop", settings, "waf", (), f"2001:db8:1:2::{i + 1:x}")
    (ev,) = queued(events)
    assert ev["client"] == {"source": "2001:db8:1::/48", "blocked": 10}


def test_window_rollover_alerts_again_and_quiet_windows_say_nothing():
    events, clock = make()
    settings = EventSettings(tenant_threshold=3, client_threshold=10**9, window=60)
    flood(events, settings, 5)
    assert kinds(queued(events)) == ["tenant_block_rate"]
    clock.now += 60  # next window: the first block ends the last one
    flood(events, settings, 2)
    (summary,) = queued(events)
    assert summary["what"] == "window_summary" and summary["counts"]["blocked"] == 5
    assert summary["window"] == {"start": "2023-11-14T22:14:00Z", "end": "2023-11-14T22:15:00Z", "seconds": 60}
    flood(events, settings, 1)  # crosses again in this window
    (ev,) = queued(events)
    assert ev["what"] == "tenant_block_rate" and ev["window"]["start"] == "2023-11-14T22:15:00Z"
    clock.now += 120
    events.tick()
    assert kinds(queued(events)) == ["window_summary"]
    flood(events, settings, 2)  # below the threshold
    clock.now += 60
    events.tick()
    assert queued(events) == []
    assert events.source_count() == 0  # ended windows free their memory


def test_windows_are_per_tenant():
    events, _ = make()
    settings = EventSettings(tenant_threshold=3, client_threshold=10**9)
    flood(events, settings, 2, tenant="shop")
    flood(events, settings, 2, tenant="news")
    assert queued(events) == []
    flood(events, settings, 1, tenant="news")
    (ev,) = queued(events)
    assert (ev["tenant"], ev["counts"]["blocked"]) == ("news", 3)


def test_a_changed_window_starts_a_new_one():
    events, _ = make()
    flood(events, EventSettings(tenant_threshold=2, window=60), 2)
    assert kinds(queued(events)) == ["tenant_block_rate"]
    flood(events, EventSettings(tenant_threshold=2, window=30), 2)
    assert kinds(queued(events)) == ["window_summary", "tenant_block_rate"]


def test_memory_is_bounded_under_a_million_distinct_clients():
    events, _ = make(max_clients=10_000)
    settings = EventSettings(client_threshold=50, tenant_threshold=10**9)
    record = events.record
    attacker = "203.0.113.9"
    for i in range(1_000_000):
        record("shop", settings, "waf", ("941100",), f"{10 + (i >> 16)}.{i >> 8 & 255}.{i & 255}.1")
        if i % 100 == 0:  # one persistent source among a million one-off ones
            record("shop", settings, "waf", ("941100",), attacker)
    assert events.source_count() == 10_000
    evs = queued(events)
    client_events = [e for e in evs if e["what"] == "client_blocks"]
    # the persistent source stays among the recent ones and is still caught
    assert [e["client"]["source"] for e in client_events] == ["203.0.113.0/24"]


def test_no_raw_address_leaves_in_an_event():
    events, clock = make()
    settings = EventSettings(tenant_threshold=50, client_threshold=5)
    addresses = [f"198.51.100.{i}" for i in range(1, 30)] + ["2001:db8:abcd:12::1", "::ffff:192.0.2.77"]
    for n, address in enumerate(addresses):
        flood(events, settings, 3 + n % 4, client=address)
    clock.now += 60
    events.tick()
    evs = queued(events)
    assert kinds(evs)[0] == "client_blocks" and "window_summary" in kinds(evs)
    text = b"".join(orjson.dumps(e) for e in evs).decode()
    for address in addresses:
        assert address not in text
    sources = {s["client"] for e in evs for s in e["top_sources"]}
    assert sources <= {"198.51.100.0/24", "2001:db8:abcd::/48", "192.0.2.0/24"}
    assert all(len(e["top_sources"]) <= 10 for e in evs)


def test_rules_and_filters_are_counted_and_bounded():
    events, clock = make()
    settings = EventSettings(tenant_threshold=10**9, client_threshold=1)
    for i in range(40):
        flood(events, settings, i + 1, filter_name="waf", rules=(f"9{i:05d}",))
    flood(events, settings, 5, filter_name="rate_limits", rules=("login",))
    clock.now += 60
    events.tick()
    summary = queued(events)[-1]
    assert summary["counts"]["by_filter"] == {"waf": sum(range(1, 41)), "rate_limits": 5}
    assert len(summary["rules"]) == 20
    assert summary["rules"]["900039"] == 40 and "900000" not in summary["rules"]


@pytest.mark.parametrize(("detail", "named", "by_filter", "rules"), [
    ("filter.rate_limits.login", (), {"rate_limits": 1}, {"login": 1}),
    ("filter.ip_lists", (), {"ip_lists": 1}, {}),
    ("filter.waf.942100", (), {"waf": 1}, {"942100": 1}),
    ("filter.waf", ("942100", "xss-script-tag"), {"waf": 1}, {"942100": 1, "xss-script-tag": 1}),
    ("delivery.allow_countries", (), None, None),
    ("method", (), None, None),
])
def test_record_verdict(detail, named, by_filter, rules):
    events, _ = make()
    settings = EventSettings(tenant_threshold=1)
    events.record_verdict("shop", settings, detail, "192.0.2.1", named)
    evs = queued(events)
    if by_filter is None:
        assert evs == []
    else:
        assert evs[0]["counts"]["by_filter"] == by_filter and evs[0]["rules"] == rules


def test_the_queue_drops_the_oldest_and_counts_them():
    events, _ = make(max_pending=5)
    settings = EventSettings(tenant_threshold=1, client_threshold=10**9, window=10)
    before = EVENTS_DROPPED._value.get()
    for n in range(10):  # one alert each
        events.record(f"t{n}", settings, "waf", (), "192.0.2.1")
    evs = queued(events)
    assert len(evs) == 5 and [e["tenant"] for e in evs] == ["t5", "t6", "t7", "t8", "t9"]
    assert events.dropped == 5 and EVENTS_DROPPED._value.get() == before + 5


def test_event_shape():
    events, clock = make()
    clock.now = T0 + 12.5
    flood(events, EventSettings(tenant_threshold=1, webhook_url=URL, secret=SECRET), 1)
    (ev,) = queued(events)
    assert set(ev) == {"type", "id", "node", "tenant", "what", "time", "window", "counts", "top_sources", "rules",
                       "threshold"}
    assert ev["type"] == "edge.security_event" and ev["node"] == "edge-fra-1" and len(ev["id"]) == 32
    assert ev["time"] == "2023-11-14T22:14:12Z"
    assert SECRET not in orjson.dumps(ev).decode()


async def test_close_logs_every_event_once_and_summarises_open_windows(caplog):
    events, _ = make()
    settings = EventSettings(tenant_threshold=3, client_threshold=2)
    flood(events, settings, 4, client="198.51.100.23")
    with caplog.at_level(logging.WARNING, logger="edge.events"):
        await events.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.events"]
    assert len(lines) == 3
    assert lines[0] == ("security event client_blocks: tenant=shop blocked=2 window=2023-11-14T22:14:00Z+60s "
                        "source=198.51.100.0/24")
    assert lines[1].startswith("security event tenant_block_rate: tenant=shop blocked=3 ")
    assert lines[2].startswith("security event window_summary: tenant=shop blocked=4 ")
    assert not any("198.51.100.23" in line for line in lines)


# --- signatures ---------------------------------------------------------------

BODY = b'{"type":"edge.security_event","id":"abc"}'
NOW = 1_700_000_000


def mac(body: bytes = BODY, t: int = NOW, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


SIGNATURES = [
    ("valid", f"t={NOW},v1={mac()}", BODY, True),
    ("upper-case hex", f"t={NOW},v1={mac().upper()}", BODY, True),
    ("spaces after commas", f"t={NOW}, v1={mac()}", BODY, True),
    ("a rotated secret among others", f"t={NOW},v1={'0' * 64},v1={mac()}", BODY, True),
    ("an unknown scheme is ignored", f"t={NOW},v2=xyz,v1={mac()}", BODY, True),
    ("tampered body", f"t={NOW},v1={mac()}", BODY.replace(b"abc", b"abd"), False),
    ("wrong secret", f"t={NOW},v1={mac(secret='another-secret-0123456789')}", BODY, False),
    ("timestamp changed", f"t={NOW + 1},v1={mac()}", BODY, False),
    ("replayed after the tolerance", f"t={NOW - 301},v1={mac(t=NOW - 301)}", BODY, False),
    ("from the future", f"t={NOW + 301},v1={mac(t=NOW + 301)}", BODY, False),
    ("at the tolerance", f"t={NOW - 300},v1={mac(t=NOW - 300)}", BODY, True),
    ("no timestamp", f"v1={mac()}", BODY, False),
    ("no signature", f"t={NOW}", BODY, False),
    ("two timestamps", f"t={NOW},t={NOW},v1={mac()}", BODY, False),
    ("negative timestamp", f"t=-{NOW},v1={mac()}", BODY, False),
    ("non-ASCII digits", f"t=١٢٣,v1={mac()}", BODY, False),
    ("non-ASCII signature", f"t={NOW},v1={'é' * 64}", BODY, False),
    ("short signature", f"t={NOW},v1={mac()[:10]}", BODY, False),
    ("garbage", "garbage", BODY, False),
    ("empty", "", BODY, False),
    ("huge", "t=1," + "v1=" + "a" * 5000, BODY, False),
]


@pytest.mark.parametrize(("name", "header", "body", "ok"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_verify_signature(name, header, body, ok):
    assert verify_signature(SECRET, header, body, NOW) is ok


def test_sign_and_verify_agree():
    header = sign(SECRET, NOW, BODY)
    assert header == f"t={NOW},v1={mac()}"
    assert verify_signature(SECRET, header, BODY, NOW + 299)
    assert not verify_signature(SECRET, header, BODY, NOW + 301)
    assert not verify_signature(SECRET, None, BODY, NOW)  # type: ignore[arg-type]
