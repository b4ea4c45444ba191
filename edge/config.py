"""Node configuration: one TOML file -> frozen dataclasses.

Everything is validated at load time and all problems of a file are
reported together, each naming file, field, what was expected and what was
found. Unknown sections and keys are errors: a typo such as ``memroy_size``
must not silently leave a default in force.
"""
from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.config_tls import (
    SECTIONS as TLS_SECTIONS,
    AcmeConfig,
    CertificatesConfig,
    ListenAddress,
    OriginTLSConfig,
    TlsConfig,
    is_ipv4,
    is_ipv6,
    parse_listen_address,
    read_acme,
    read_certificates,
    read_listen,
    read_origin_tls,
    read_tls,
)
from edge.http.urls import strict_hostname
from edge.schema.check import describe
from edge.schema.reader import IPNetwork, Reader, network
from edge.schema.reader import boolean as _bool
from edge.schema.reader import integer as _integer
from edge.schema.reader import number as _number
from edge.schema.reader import one_of as _one_of
from edge.schema.reader import size as _size
from edge.schema.values import COUNTRY, NOT_RESERVED, RESERVED_TENANTS, TENANT_ID_RE, country, parse_size

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
CLIENT_ADDRESS_HEADERS: tuple[str, ...] = ("x-forwarded-for", "forwarded")
# A purge forgets what is remembered of uncacheable keys through its barrier,
# which lasts 600 s (edge/cache/barriers.py): nothing is remembered longer.
MAX_UNCACHEABLE_MEMORY = 600.0


# --- the configuration -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CacheConfig:
    memory_size: int = 256 * 2**20
    memory_max_object: int = 2**20  # larger objects live only on disk, streamed
    disk_path: Path | None = None  # absolute; None: no disk tier
    disk_size: int = 10 * 2**30
    # Bytes of a large body being fetched kept in memory for the requests
    # reading it as it arrives (edge/cache/collapse.py), per fetch.
    fill_buffer: int = 2**20
    # Of the disk tier, what one tenant may hold unless its policy says
    # otherwise (cache.disk_quota). None: half of disk_size, so that one
    # tenant's flood of distinct URLs leaves the others at least the rest.
    tenant_disk_quota: int | None = None
    # Per worker: what compressions of stored responses running at once may
    # hold (bodies plus coder states); beyond it clients get identity. 0: none.
    compress_budget: int = 64 * 2**20
    # Seconds a key whose answer could not be stored is remembered, per
    # worker: misses for it then go to the origin each at once instead of
    # queueing behind one fetch (Varnish's hit-for-miss). 0: never.
    uncacheable_memory: float = 120.0
    uncacheable_memory_keys: int = 10_000  # at most, per worker; the least recently marked go first

    @property
    def tenant_quota(self) -> int:
        return self.tenant_disk_quota if self.tenant_disk_quota is not None else self.disk_size // 2


@dataclass(frozen=True, slots=True)
class PoliciesConfig:
    directory: Path | None = None  # absolute; None only in quick mode
    watch_interval: float = 2.0  # seconds; 0 disables watching


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_line: int = 8190
    max_header_size: int = 8190  # one header field
    max_headers: int = 100
    max_body_size: int = 100 * 2**20


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. The client deadlines protect against slow clients
    (slowloris, slow POST, slow readers); 0 turns one off, e.g. behind a
    proxy that buffers whole requests."""

    keepalive: float = 75.0  # idle client keep-alive
    shutdown: float = 10.0  # graceful drain on SIGTERM
    header_read: float = 10.0  # from a request's first byte (or the accept) to its complete head: else 408
    body_read: float = 30.0  # at most between two chunks of a request body: else 408
    body_total: float = 300.0  # for a whole request body: else 408
    send: float = 30.0  # a client that takes under send_min_rate of its response for this long is cut off
    origin_queue: float = 5.0  # wait for a free origin connection: else 503 (0: no wait)
    send_min_rate: int = 1024  # bytes/second a client must take in each send period (0: any byte)


@dataclass(frozen=True, slots=True)
class LogConfig:
    access: bool = True  # access log to stderr, client addresses anonymised
    level: str = "info"  # one of LOG_LEVELS
    # Seconds between warnings about one refused origin (any client can
    # cause one per request); those left out are counted in the next.
    refused_origin_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class GeoIPConfig:
    database: Path | None = None  # a MaxMind DB (Country or City); None: every country unknown
    check_interval: float = 5.0  # seconds between checks for a replaced file; 0 disables


@dataclass(frozen=True, slots=True)
class NodeLists:
    """Node-wide client address lists (``[filters]``), for every tenant: a
    denied client is refused whatever its tenant's lists say, an allowed one
    skips the rate limits and the WAF. Files hold one CIDR a line (``#``
    comments) and are read again on SIGHUP."""

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    allow_file: Path | None = None
    deny_file: Path | None = None
    client_rate: float = 0.0  # requests/second per client address over all tenants (per worker); 0: no limit
    client_burst: int = 0  # 0: client_rate rounded up


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """Connections the node makes for origins and webhooks that tenant
    tokens set (edge.origin.guard): networks reachable although they are
    private, shared or otherwise refused. Metadata services never are."""

    allow_networks: tuple[IPNetwork, ...] = ()


ADMIN_DEFAULT_LISTEN = ListenAddress("127.0.0.1", 9090)
TOKEN_HASH_RE = re.compile(r"sha256:[0-9a-f]{64}")
OPERATOR = "*"  # the tenant scope of operator tokens


@dataclass(frozen=True, slots=True)
class AdminToken:
    """One admin token, as its SHA-256: the token itself is never stored."""

    digest: bytes = field(repr=False)  # 32 bytes
    tenant: str = OPERATOR  # a tenant id, or "*" (operator: every tenant, node-wide endpoints)

    @property
    def id(self) -> str:
        """What logs and the audit trail call it: the first 8 hex digits of the hash."""
        return self.digest.hex()[:8]


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin HTTP API: its own listener, never a public one."""

    enabled: bool = False  # on with an [admin] section (enabled = true) or --admin
    listen: ListenAddress = ADMIN_DEFAULT_LISTEN
    tokens: tuple[AdminToken, ...] = ()  # [admin] tokens, and EDGE_ADMIN_TOKEN (added by the CLI)
    tokens_file: Path | None = None  # absolute; read at start and on SIGHUP
    audit_log: Path | None = None  # absolute; None: the logger "edge.audit" (stderr)
    # Host names (or addresses) the API answers to besides loopback and the
    # listener's own address; any other Host gets 421 (DNS rebinding).
    hosts: tuple[str, ...] = ()
    # Failed authentications per client address and per presented token, over all workers.
    failed_auth_limit: int = 10  # the next failure in the window gets 429
    failed_auth_window: float = 60.0  # seconds
    failed_auth_delay: float = 1.0  # seconds before each attempt from an address over the limit
    # Not a file setting: the per-run directory where workers put their
    # control sockets (set by the supervisor when node.workers > 1, with or
    # without the admin API).
    run_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The whole node configuration. Defaults are quick mode (no policy directory)."""

    name: str = "edge"  # in Via and Cache-Status: a token starting with a letter
    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    workers: int = 1
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8080),)
    cache: CacheConfig = field(default_factory=CacheConfig)
    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # The one field trusted proxies write the client into; the other is the
    # client's own word and ignored ("x-forwarded-for" or "forwarded").
    client_address_header: str = "x-forwarded-for"
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    log: LogConfig = field(default_factory=LogConfig)
    geoip: GeoIPConfig = field(default_factory=GeoIPConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    filters: NodeLists = field(default_factory=NodeLists)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    certificates: CertificatesConfig = field(default_factory=CertificatesConfig)
    origin_tls: OriginTLSConfig = field(default_factory=OriginTLSConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    source: str = "<defaults>"  # the file this came from, as given to load_config


class ConfigError(Exception):
    """A configuration that cannot be used; ``errors`` lists every problem, one per line."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def default_config() -> NodeConfig:
    """Quick mode: every default, no policy directory."""
    return NodeConfig()


# --- loading -----------------------------------------------------------------

_SECTIONS: dict[str, tuple[str, ...]] = {
    "node": ("name", "country", "workers"),
    "cache": ("memory_size", "memory_max_object", "disk_path", "disk_size", "fill_buffer", "tenant_disk_quota",
              "compress_budget", "uncacheable_memory", "uncacheable_memory_keys"),
    "policies": ("directory", "watch_interval"),
    "proxy": ("trusted_proxies", "client_address_header"),
    "limits": ("max_request_line", "max_header_size", "max_headers", "max_body_size"),
    "timeouts": ("keepalive", "shutdown", "header_read", "body_read", "body_total", "send", "origin_queue",
                 "send_min_rate"),
    "log": ("access", "level", "refused_origin_interval"),
    "geoip": ("database", "check_interval"),
    "admin": ("enabled", "listen", "tokens", "tokens_file", "audit_log", "hosts", "failed_auth_limit",
              "failed_auth_window", "failed_auth_delay"),
    "filters": ("allow", "deny", "allow_file", "deny_file", "client_rate", "client_burst"),
    "outbound": ("allow_networks",),
    **TLS_SECTIONS,
}

# Via (RFC 9110 §7.6.3) wants a token; Cache-Status (RFC 9211) an sf-token,
# which must start with a letter. This satisfies both without quoting.
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}")

_MISSING = object()


def _per_second(high: int) -> Callable[[Any], int]:
    """Bytes a second, written as a size."""
    def convert(value: Any) -> int:
        try:
            n = parse_size(value)
        except ValueError:
            n = -1
        if not 0 <= n <= high:
            raise ValueError(f'expected bytes a second from 0 to {high}: an integer, or a size like "1KiB", '
                             f"found {describe(value)}")
        return n

    return convert


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(
            'expected a name of letters, digits, ".", "_" or "-" that starts with a letter '
            f"(at most 63 characters), found {describe(value)}"
        )
    return value


def _country(value: Any) -> str:
    code = country(value)
    if not isinstance(code, str):
        raise ValueError(f"expected {COUNTRY}, found {describe(value)}")
    return code


_level = _one_of(LOG_LEVELS)


MAX_LIST_FILE = 64 * 2**20


def read_cidr_file(path: Path) -> tuple[IPNetwork, ...]:
    """One CIDR (or bare address) a line, ``#`` starts a comment; raises
    ConfigError naming the file and every bad line."""
    try:
        if path.stat().st_size > MAX_LIST_FILE:
            raise ConfigError(f"{path}: expected at most {MAX_LIST_FILE} bytes, found a larger file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e.__class__.__name__}: {getattr(e, 'strerror', None) or e})") from None
    nets: list[IPNetwork] = []
    errors: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        try:
            nets.append(network(item if "/" in item else _host_network(item)))
        except ValueError as e:
            errors.append(f"{path}:{n}: {e}")
            if len(errors) >= 20:
                errors.append(f"{path}: (stopped after 20 errors)")
                break
    if errors:
        raise ConfigError(errors)
    return tuple(nets)


def _host_network(item: str) -> str:
    try:
        address = ipaddress.ip_address(item)
    except ValueError:
        return item  # network() says what was expected
    return f"{address}/{address.max_prefixlen}"


def load_config(path: str | Path, *, require_policies: bool = True) -> NodeConfig:
    """Read and validate a node configuration file.

    Relative paths inside it are resolved against the file's directory, so
    a node behaves the same whatever its working directory. Raises
    ConfigError listing every problem found. ``require_policies=False`` is
    quick mode: ``[policies] directory`` may then be omitted.
    """
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{file}: cannot read the config file: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file}: expected UTF-8 TOML, found an undecodable byte at offset {e.start}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from None  # the message carries line and column
    r = Reader(file, Path(path).resolve().parent, _SECTIONS)
    cfg = _build(r, data, require_policies)
    if r.errors:
        raise ConfigError(r.errors)
    return cfg


def _build(r: Reader, data: dict[str, Any], require_policies: bool) -> NodeConfig:
    d = NodeConfig()
    r.unknown(data, "", tuple(_SECTIONS))

    node = r.table(data, "node")
    name = r.get(node, "node", "name", d.name, _name)
    country = r.get(node, "node", "country", d.country, _country)
    workers = r.get(node, "node", "workers", d.workers, _integer(1, 64))

    listen = read_listen(r, data, d.listen)
    if workers > 1 and any(a.port == 0 for a in listen):
        # Each worker would bind its own random port instead of sharing one.
        r.error("listen", "fixed ports when node.workers > 1", "port 0")

    t = r.table(data, "cache")
    dc = d.cache
    memory_size = r.get(t, "cache", "memory_size", dc.memory_size, _size(1))
    memory_max_object = r.get(t, "cache", "memory_max_object", dc.memory_max_object, _size(1))
    disk_path = r.get(t, "cache", "disk_path", dc.disk_path, r.path)
    disk_size = r.get(t, "cache", "disk_size", dc.disk_size, _size(1))
    compress_budget = r.get(t, "cache", "compress_budget", dc.compress_budget, _size(0))
    fill_buffer = r.get(t, "cache", "fill_buffer", dc.fill_buffer, _size(64 * 1024))
    for key, value in (("memory_max_object", memory_max_object), ("fill_buffer", fill_buffer)):
        if value > memory_size:
            r.error(f"cache.{key}", f"at most cache.memory_size ({memory_size} bytes)", f"{value} bytes")
    if "disk_size" in t and "disk_path" not in t:
        r.error("cache.disk_size", "cache.disk_path to be set as well (no path, no disk tier)", "no disk_path")
    tenant_disk_quota = r.get(t, "cache", "tenant_disk_quota", dc.tenant_disk_quota, _size(1))
    if "tenant_disk_quota" in t and "disk_path" not in t:
        r.error("cache.tenant_disk_quota", "cache.disk_path to be set as well (no path, no disk tier)", "no disk_path")
    elif tenant_disk_quota is not None and tenant_disk_quota > disk_size:
        r.error("cache.tenant_disk_quota", f"at most cache.disk_size ({disk_size} bytes)", f"{tenant_disk_quota} bytes")
    uncacheable = r.get(t, "cache", "uncacheable_memory", dc.uncacheable_memory,
                        _number(0, MAX_UNCACHEABLE_MEMORY, "a number of seconds (0: off)"))
    uncacheable_keys = r.get(t, "cache", "uncacheable_memory_keys", dc.uncacheable_memory_keys, _integer(1, 10**6))
    cache = CacheConfig(memory_size, memory_max_object, disk_path, disk_size, fill_buffer, tenant_disk_quota,
                        compress_budget, uncacheable, uncacheable_keys)

    t = r.table(data, "policies")
    directory = r.get(t, "policies", "directory", None, r.path)
    if directory is None and "directory" not in t and require_policies:
        r.error("policies.directory", "a directory of tenant policies (relative to the config file)", "nothing")
    elif directory is not None and not directory.is_dir():
        r.error("policies.directory", "an existing directory", f"{describe(str(directory))} (no such directory)")
    watch = r.get(t, "policies", "watch_interval", d.policies.watch_interval, _number(0, 3600))
    policies = PoliciesConfig(directory, watch)

    t = r.table(data, "proxy")
    proxies = d.trusted_proxies
    if "trusted_proxies" in t:
        proxies = r.networks(t["trusted_proxies"], "proxy.trusted_proxies", proxies)
    address_header = r.get(t, "proxy", "client_address_header", d.client_address_header, _one_of(CLIENT_ADDRESS_HEADERS))

    t = r.table(data, "filters")
    node_lists: dict[str, Any] = {}
    for key in ("allow", "deny"):
        if key in t:
            node_lists[key] = r.networks(t[key], f"filters.{key}", ())
    for key in ("allow_file", "deny_file"):
        if key in t:
            node_lists[key] = r.get(t, "filters", key, None, r.path)
    node_lists["client_rate"] = r.get(t, "filters", "client_rate", 0.0, _number(0, 1e6, "requests per second"))
    node_lists["client_burst"] = r.get(t, "filters", "client_burst", 0, _integer(0, 10**7))
    filters = NodeLists(**node_lists)

    t = r.table(data, "outbound")
    outbound = OutboundConfig()
    if "allow_networks" in t:
        outbound = OutboundConfig(r.networks(t["allow_networks"], "outbound.allow_networks", ()))

    origin_tls = read_origin_tls(r, data)

    t = r.table(data, "limits")
    dl = d.limits
    limits = Limits(
        r.get(t, "limits", "max_request_line", dl.max_request_line, _size(64, 2**20)),
        r.get(t, "limits", "max_header_size", dl.max_header_size, _size(64, 2**20)),
        r.get(t, "limits", "max_headers", dl.max_headers, _integer(1, 10_000)),
        r.get(t, "limits", "max_body_size", dl.max_body_size, _size(0)),
    )

    t = r.table(data, "timeouts")
    dt = d.timeouts
    timeouts = Timeouts(
        r.get(t, "timeouts", "keepalive", dt.keepalive, _number(0, 3600)),
        r.get(t, "timeouts", "shutdown", dt.shutdown, _number(0, 3600)),
        r.get(t, "timeouts", "header_read", dt.header_read, _number(0, 3600, "a number of seconds (0: off)")),
        r.get(t, "timeouts", "body_read", dt.body_read, _number(0, 3600, "a number of seconds (0: off)")),
        # Long enough for a large upload over a slow link.
        r.get(t, "timeouts", "body_total", dt.body_total, _number(0, 86400, "a number of seconds (0: off)")),
        r.get(t, "timeouts", "send", dt.send, _number(0, 3600, "a number of seconds (0: off)")),
        r.get(t, "timeouts", "origin_queue", dt.origin_queue, _number(0, 3600, "a number of seconds (0: no wait)")),
        r.get(t, "timeouts", "send_min_rate", dt.send_min_rate, _per_second(2**30)),
    )

    t = r.table(data, "log")
    log = LogConfig(
        r.get(t, "log", "access", d.log.access, _bool),
        r.get(t, "log", "level", d.log.level, _level),
        r.get(t, "log", "refused_origin_interval", d.log.refused_origin_interval,
              _number(0, 86400, "a number of seconds (0: every refusal)")),
    )

    t = r.table(data, "geoip")
    database = r.get(t, "geoip", "database", None, r.path)
    if database is not None and not database.is_file():
        r.error("geoip.database", "an existing MaxMind DB file", f"{describe(str(database))} (no such file)")
    geoip = GeoIPConfig(database, r.get(t, "geoip", "check_interval", d.geoip.check_interval, _number(0, 86400)))

    admin = _admin(r, data, listen, workers)
    acme = read_acme(r, data)

    certificates = read_certificates(r, data)
    tls = read_tls(r, data)

    return NodeConfig(
        name=name,
        country=country,
        workers=workers,
        listen=listen,
        cache=cache,
        policies=policies,
        trusted_proxies=proxies,
        client_address_header=address_header,
        limits=limits,
        timeouts=timeouts,
        log=log,
        geoip=geoip,
        filters=filters,
        outbound=outbound,
        origin_tls=origin_tls,
        admin=admin,
        certificates=certificates,
        acme=acme,
        tls=tls,
        source=r.file,
    )


def _admin(r: Reader, data: dict[str, Any], listen: tuple[ListenAddress, ...], workers: int) -> AdminConfig:
    if "admin" not in data:
        return AdminConfig()
    t = r.table(data, "admin")
    d = AdminConfig()
    enabled = r.get(t, "admin", "enabled", True, _bool)
    address = r.get(t, "admin", "listen", d.listen, parse_listen_address)
    problem = admin_listen_problem(address, listen, workers)
    if problem:
        r.error("admin.listen", problem, describe(t.get("listen", f"{address.host}:{address.port}")))
    tokens: list[AdminToken] = []
    if "tokens" in t:
        tokens += _tokens(r, t["tokens"], "admin.tokens", r.file)
    tokens_file = r.get(t, "admin", "tokens_file", None, r.path)
    if tokens_file is not None:
        try:
            read_tokens_file(tokens_file)  # checked now; read by the admin server at start and on SIGHUP
        except ConfigError as e:
            r.errors.extend(e.errors)
    audit_log = r.get(t, "admin", "audit_log", None, r.path)
    return AdminConfig(
        enabled, address, tuple(tokens), tokens_file, audit_log,
        hosts=r.get(t, "admin", "hosts", d.hosts, _admin_hosts),
        failed_auth_limit=r.get(t, "admin", "failed_auth_limit", d.failed_auth_limit, _integer(1, 10_000)),
        failed_auth_window=r.get(t, "admin", "failed_auth_window", d.failed_auth_window, _number(1, 86400)),
        failed_auth_delay=r.get(t, "admin", "failed_auth_delay", d.failed_auth_delay, _number(0, 60)),
    )


def _admin_hosts(value: object) -> tuple[str, ...]:
    """``["admin.example.net", "192.0.2.10"]``: names compared without case or trailing dot."""
    expected = 'an array of host names or IP addresses such as ["edge-admin.example.net"]'
    if not isinstance(value, list):
        raise ValueError(f"expected {expected}, found {describe(value)}")
    out = []
    for item in value:
        name = item.strip().rstrip(".").lower() if isinstance(item, str) else ""
        if not (strict_hostname(name) or is_ipv4(name) or is_ipv6(name.strip("[]"))):
            raise ValueError(f"expected {expected}, found {describe(item)} in it")
        out.append(name.strip("[]"))
    return tuple(out)


def admin_listen_problem(admin: ListenAddress, listen: tuple[ListenAddress, ...], workers: int) -> str | None:
    """Why ``admin`` cannot be the admin listener next to these public ones, or None."""
    wild = ("0.0.0.0", "::", "")
    for pub in listen:
        if admin.port and admin.port == pub.port and (admin.host == pub.host or admin.host in wild or pub.host in wild):
            return f"an address that is not a public listener (a [[listen]] address is {pub.host}:{pub.port})"
    if workers > 1 and admin.port == 0:
        return "a fixed port when node.workers > 1"
    return None


def _tokens(r: Reader, value: object, where: str, file: str) -> list[AdminToken]:
    """``[{ hash = "sha256:<hex>", tenant = "*" | "<tenant id>" }, ...]``"""
    out: list[AdminToken] = []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        r.errors.append(f"{file}: {where}: expected an array of tables {{ hash = \"sha256:<hex>\", tenant = \"*\" }}, "
                        f"found {describe(value)}")
        return out
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        for key in item:
            if key not in ("hash", "tenant"):
                r.errors.append(f"{file}: {at}.{key}: expected one of the keys hash, tenant, found an unknown key")
        digest = item.get("hash", _MISSING)
        tenant = item.get("tenant", _MISSING)
        ok = True
        if not isinstance(digest, str) or not TOKEN_HASH_RE.fullmatch(digest.lower()):
            found = "nothing" if digest is _MISSING else describe(digest)
            if isinstance(digest, str) and TOKEN_HASH_RE.fullmatch("sha256:" + digest.lower()):
                found += ' (the "sha256:" prefix is missing)'
            r.errors.append(f'{file}: {at}.hash: expected "sha256:" and 64 hex digits '
                            f"(the output of `edge token hash`), found {found}")
            ok = False
        if not isinstance(tenant, str) or not (tenant == OPERATOR or TENANT_ID_RE.fullmatch(tenant)):
            found = "nothing" if tenant is _MISSING else describe(tenant)
            r.errors.append(f'{file}: {at}.tenant: expected "*" (operator) or a tenant id, found {found}')
            ok = False
        elif tenant in RESERVED_TENANTS:
            r.errors.append(f"{file}: {at}.tenant: expected {NOT_RESERVED}, found {describe(tenant)}")
            ok = False
        if ok:
            out.append(AdminToken(bytes.fromhex(digest.lower()[7:]), tenant))
    return out


def read_tokens_file(path: Path) -> list[AdminToken]:
    """A TOML file holding ``tokens = [...]`` as in ``[admin]``; ConfigError naming it otherwise."""
    file = str(path)
    try:
        data = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"{file}: cannot read the tokens file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file}: expected UTF-8 TOML, found an undecodable byte at offset {e.start}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from None
    r = Reader(file, Path(path).resolve().parent, {})
    for key in data:
        if key != "tokens":
            r.error(key, "only the key tokens", "an unknown key")
    tokens = _tokens(r, data.get("tokens", []), "tokens", file)
    if r.errors:
        raise ConfigError(r.errors)
    return tokens
