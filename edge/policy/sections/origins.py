"""The ``origins`` and ``origin_failover`` sections: where a tenant's
requests go, and when the next origin is tried."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from edge.http.urls import check_url, hostname, ip_literal
from edge.origin.tls import CA_BUNDLE, ca_bundle_problem
from edge.schema.check import BAD, BOOL, MISSING, Check, boolean, int_in, join, number_in, one_of

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
    "origin": ("url", "host_header", "connect_timeout", "read_timeout", "max_connections", "set_by",
               "ca", "server_name", "verify", "client_certificate"),
    "failover": ("retry_on_status", "failures_before_down", "cooldown"),
}

TIMEOUT = f"a number of seconds > 0 and <= {MAX_TIMEOUT:g}"
ORIGINS = "a non-empty list of origins"
URL = "an absolute http:// or https:// URL with a host and no path, query or fragment"
HOST_HEADER = "a hostname or IP address with an optional :port"
STATUS = "an HTTP status code 400..599"
STATUS_LIST = "a list of HTTP status codes"
SERVER_NAME = "a hostname or IP address, without a port"
HTTP_TLS = "nothing on an http:// origin (TLS settings are for https:// origins)"
NO_NODE_CERTIFICATE = "false: this node has no client certificate for origins ([origin_tls] in its edge.toml)"


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
    # https only (edge.origin.tls): PEM CA certificates trusted instead of
    # the system store; the name TLS sends and verifies (None: the default,
    # see tls_name); verification; whether to present the node's client
    # certificate ([origin_tls]).
    ca: str | None = field(default=None, repr=False)
    server_name: str | None = None
    verify: bool = True
    client_certificate: bool = False

    @property
    def guarded(self) -> bool:
        return self.set_by == "tenant"

    @property
    def tls_name(self) -> str | None:
        """The name sent in SNI and checked in the origin's certificate:
        ``server_name``, else the host of ``host_header``, else the URL's
        host; None for http origins. An IPv6 address without brackets."""
        if self.scheme != "https":
            return None
        if self.server_name is not None:
            return self.server_name
        if self.host_header is None:
            return self.host
        host = self.host_header
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.partition(":")[0]


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


def _server_name(v: object) -> Any:
    if not isinstance(v, str):
        return BAD
    name = ip_literal(v) or hostname(v)
    return BAD if name is None else name.strip("[]")


def _ca(c: Check, v: object, where: str) -> str | None:
    if not isinstance(v, str):
        # Not even the start of a list's text: it may hold a key.
        kind = "a list" if isinstance(v, list) else "an object" if isinstance(v, dict) else None
        c.fail(where, CA_BUNDLE, kind or v, literal=kind is not None)
        return None
    problem = ca_bundle_problem(v)
    if problem is not None:
        c.fail(where, CA_BUNDLE, problem, literal=True)  # never the text: it may hold a key
        return None
    return v


def quick_origin(url: str) -> OriginSpec | None:
    """The one origin of ``edge serve --origin URL``, every other field a default; None for a bad URL."""
    parsed = _origin_url(url)
    if parsed is BAD:
        return None
    url, scheme, host, port = parsed
    return OriginSpec(url, scheme, host, port, None, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT,
                      DEFAULT_MAX_CONNECTIONS)


def parse_origins(c: Check, raw: object, node_client_certificate: bool | None = None) -> list[OriginSpec]:
    """The policy's ``origins`` (``raw``: its value, or MISSING).
    ``node_client_certificate``: whether the node has a client certificate
    for origins; None: not known here (not checked)."""
    origins: list[OriginSpec] = []
    if raw is MISSING:
        return origins
    if not isinstance(raw, list) or not raw:
        c.fail("origins", ORIGINS, raw)
        return origins
    for i, item in enumerate(raw):
        spec = _origin(c, item, f"origins[{i}]", node_client_certificate)
        if spec is not None:
            origins.append(spec)
    return origins


def _origin(c: Check, raw: object, path: str, node_client_certificate: bool | None) -> OriginSpec | None:
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
    ca = _ca(c, o["ca"], join(path, "ca")) if o.get("ca") is not None else None
    server_name = None
    if o.get("server_name") is not None:
        server_name = c.get(o, path, "server_name", None, SERVER_NAME, _server_name)
    verify = c.get(o, path, "verify", True, BOOL, boolean)
    client = c.get(o, path, "client_certificate", False, BOOL, boolean)
    if len(c.errors) > before or parsed is None:
        return None
    url, scheme, host, port = parsed
    if scheme == "http":
        for key, value in (("ca", ca), ("server_name", server_name), ("verify", not verify), ("client_certificate", client)):
            if value:
                c.fail(join(path, key), HTTP_TLS,
                       "a CA bundle" if key == "ca" else o[key], literal=key == "ca")
    elif ca is not None and not verify:
        c.fail(join(path, "verify"), "true with a ca bundle (nothing would be checked against it)", False)
    if client and node_client_certificate is False:
        c.fail(join(path, "client_certificate"), NO_NODE_CERTIFICATE, True)
    if len(c.errors) > before:
        return None
    return OriginSpec(url, scheme, host, port, host_header, connect, read, conns, set_by, ca, server_name, verify,
                      client)


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
        "ca": o.ca,
        "server_name": o.server_name,
        "verify": o.verify,
        "client_certificate": o.client_certificate,
    }


def failover_data(f: Failover) -> dict[str, Any]:
    return {
        "retry_on_status": sorted(f.retry_on_status),
        "failures_before_down": f.failures_before_down,
        "cooldown": f.cooldown,
    }
