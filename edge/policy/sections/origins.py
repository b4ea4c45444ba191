"""The ``origins`` and ``origin_failover`` sections: where a tenant's
requests go, and when the next origin is tried."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from edge.http.urls import check_url, hostname, ip_literal
from edge.schema.check import BAD, MISSING, Check, int_in, join, number_in, one_of

MAX_TIMEOUT = 3600.0
MAX_CONNECTIONS = 10_000
MAX_FAILURES_BEFORE_DOWN = 1000

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_RETRY_ON_STATUS = frozenset({502, 503, 504})
DEFAULT_FAILURES_BEFORE_DOWN = 3
DEFAULT_COOLDOWN = 10.0

# Who wrote a destination's URL (``"set_by"`` of an origin or of the events
# section): "tenant" makes it guarded (edge.origin.guard).
SET_BY = ("operator", "tenant")
SET_BY_EXPECTED = '"operator" or "tenant"'

KEYS: dict[str, tuple[str, ...]] = {
    "origin": ("url", "host_header", "connect_timeout", "read_timeout", "max_connections", "set_by"),
    "failover": ("retry_on_status", "failures_before_down", "cooldown"),
}

TIMEOUT = f"a number of seconds > 0 and <= {MAX_TIMEOUT:g}"
ORIGINS = "a non-empty list of origins"
URL = "an absolute http:// or https:// URL with a host and no path, query or fragment"
HOST_HEADER = "a hostname or IP address with an optional :port"
STATUS = "an HTTP status code 400..599"
STATUS_LIST = "a list of HTTP status codes"


@dataclass(frozen=True, slots=True)
class OriginSpec:
    url: str  # normalised "scheme://host[:port]", default port left out
    scheme: Literal["http", "https"]
    host: str  # what to connect to; an IPv6 address without brackets
    port: int
    host_header: str | None  # "hostname[:port]" sent instead of the client's Host
    connect_timeout: float
    read_timeout: float
    max_connections: int
    # Who wrote the origin: "tenant" (a tenant token, through the admin API,
    # edge.admin.provenance) makes it guarded (edge.origin.guard); files and
    # operators vouch.
    set_by: Literal["operator", "tenant"] = "operator"

    @property
    def guarded(self) -> bool:
        return self.set_by == "tenant"


@dataclass(frozen=True, slots=True)
class Failover:
    retry_on_status: frozenset[int]
    failures_before_down: int
    cooldown: float


DEFAULT_FAILOVER = Failover(DEFAULT_RETRY_ON_STATUS, DEFAULT_FAILURES_BEFORE_DOWN, DEFAULT_COOLDOWN)


def _origin_url(v: object) -> Any:
    """-> (url, scheme, host, port)"""
    u = check_url(v, path=False, idn=True)
    return BAD if u is None else (u.origin, u.scheme, u.address, u.effective_port)


def _host_header(v: object) -> Any:
    if not isinstance(v, str):
        return BAD
    if v.startswith("["):
        host, _, rest = v.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            return BAD
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = v.partition(":")
        port = port_text if sep else None
    name = ip_literal(host) or hostname(host)
    if name is None:
        return BAD
    if port is None:
        return name
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return BAD
    return f"{name}:{int(port)}"


def quick_origin(url: str) -> OriginSpec | None:
    """The one origin of ``edge serve --origin URL``, every other field a default; None for a bad URL."""
    parsed = _origin_url(url)
    if parsed is BAD:
        return None
    url, scheme, host, port = parsed
    return OriginSpec(url, scheme, host, port, None, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT,
                      DEFAULT_MAX_CONNECTIONS)


def parse_origins(c: Check, raw: object) -> list[OriginSpec]:
    """The policy's ``origins`` (``raw``: its value, or MISSING)."""
    origins: list[OriginSpec] = []
    if raw is MISSING:
        return origins
    if not isinstance(raw, list) or not raw:
        c.fail("origins", ORIGINS, raw)
        return origins
    for i, item in enumerate(raw):
        spec = _origin(c, item, f"origins[{i}]")
        if spec is not None:
            origins.append(spec)
    return origins


def _origin(c: Check, raw: object, path: str) -> OriginSpec | None:
    o = c.object(raw, path, "origin")
    if o is None:
        return None
    before = len(c.errors)
    if "url" not in o:
        c.fail(join(path, "url"), URL, MISSING)
    parsed = c.get(o, path, "url", None, URL, _origin_url)
    host_header = None
    if o.get("host_header") is not None:
        host_header = c.get(o, path, "host_header", None, HOST_HEADER, _host_header)
    timeout = number_in(0.0, MAX_TIMEOUT)
    connect = c.get(o, path, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, TIMEOUT, timeout)
    read = c.get(o, path, "read_timeout", DEFAULT_READ_TIMEOUT, TIMEOUT, timeout)
    conns = c.get(o, path, "max_connections", DEFAULT_MAX_CONNECTIONS,
                  f"an integer 1..{MAX_CONNECTIONS}", int_in(1, MAX_CONNECTIONS))
    set_by = c.get(o, path, "set_by", "operator", SET_BY_EXPECTED, one_of(*SET_BY))
    if len(c.errors) > before or parsed is None:
        return None
    url, scheme, host, port = parsed
    return OriginSpec(url, scheme, host, port, host_header, connect, read, conns, set_by)


def parse_failover(c: Check, raw: object, path: str) -> Failover:
    if raw is MISSING:
        return DEFAULT_FAILOVER
    o = c.object(raw, path, "failover")
    if o is None:
        return DEFAULT_FAILOVER
    statuses = c.list(o, path, "retry_on_status", DEFAULT_RETRY_ON_STATUS, STATUS_LIST, STATUS, int_in(400, 599))
    return Failover(
        frozenset(statuses),
        c.get(o, path, "failures_before_down", DEFAULT_FAILURES_BEFORE_DOWN,
              f"an integer 1..{MAX_FAILURES_BEFORE_DOWN}", int_in(1, MAX_FAILURES_BEFORE_DOWN)),
        c.get(o, path, "cooldown", DEFAULT_COOLDOWN, TIMEOUT, number_in(0.0, MAX_TIMEOUT)),
    )


def origin_data(o: OriginSpec) -> dict[str, Any]:
    return {
        "url": o.url,
        "host_header": o.host_header,
        "connect_timeout": o.connect_timeout,
        "read_timeout": o.read_timeout,
        "max_connections": o.max_connections,
        "set_by": o.set_by,
    }


def failover_data(f: Failover) -> dict[str, Any]:
    return {
        "retry_on_status": sorted(f.retry_on_status),
        "failures_before_down": f.failures_before_down,
        "cooldown": f.cooldown,
    }
