"""Node configuration (edge/config.py): good files, defaults, and one exact
message per kind of mistake."""
from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from edge.app import node_lists
from edge.schema.check import describe
from tests import tls_support
from edge.config import (
    CacheConfig,
    ConfigError,
    Limits,
    LogConfig,
    NodeConfig,
    NodeLists,
    PoliciesConfig,
    Timeouts,
    default_config,
    load_config,
    parse_size,
)
from edge.config_tls import AcmeConfig, ListenAddress, TlsConfig, parse_listen_address

FULL = """
[node]
name = "edge-1"
country = "DE"
workers = 4

[[listen]]
address = "0.0.0.0:8080"

[[listen]]
address = "[::]:8443"

[cache]
memory_size = "256MiB"
memory_max_object = "1MiB"
disk_path = "var/cache"
disk_size = "10GiB"
fill_buffer = "512KiB"
tenant_disk_quota = "2GiB"

[policies]
directory = "policies"
watch_interval = 0

[proxy]
trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]

[limits]
max_request_line = 4096
max_header_size = "16KiB"
max_headers = 50
max_body_size = "1GB"

[timeouts]
keepalive = 30
shutdown = 2.5

[log]
access = false
level = "WARNING"
"""

MINIMAL = '[policies]\ndirectory = "policies"\n'


@pytest.fixture
def confdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding edge.toml's policy directory; the cwd, so messages read "edge.toml: ..."."""
    (tmp_path / "policies").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(confdir: Path, text: str, name: str = "edge.toml") -> Path:
    path = confdir / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(text: str) -> list[str]:
    Path("edge.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config("edge.toml")
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


# --- good files --------------------------------------------------------------

def test_full_file(confdir: Path) -> None:
    cfg = load_config(write(confdir, FULL))
    assert cfg == NodeConfig(
        name="edge-1",
        country="DE",
        workers=4,
        listen=(ListenAddress("0.0.0.0", 8080), ListenAddress("::", 8443)),
        cache=CacheConfig(256 * 2**20, 2**20, confdir.resolve() / "var/cache", 10 * 2**30, 512 * 2**10, 2 * 2**30),
        policies=PoliciesConfig(confdir.resolve() / "policies", 0.0),
        trusted_proxies=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("2001:db8::/32"),
            ipaddress.ip_network("192.0.2.7/32"),
        ),
        limits=Limits(4096, 16 * 1024, 50, 10**9),
        timeouts=Timeouts(30.0, 2.5),
        log=LogConfig(False, "warning"),
        source=str(confdir / "edge.toml"),
    )


def test_minimal_file_gets_defaults(confdir: Path) -> None:
    cfg = load_config(write(confdir, MINIMAL))
    expected = dataclasses.replace(
        default_config(),
        policies=PoliciesConfig(confdir.resolve() / "policies", 2.0),
        source=str(confdir / "edge.toml"),
    )
    assert cfg == expected


def test_defaults() -> None:
    cfg = default_config()
    assert cfg.name == "edge" and cfg.country is None and cfg.workers == 1
    assert cfg.listen == (ListenAddress("127.0.0.1", 8080),)
    assert cfg.cache == CacheConfig(256 * 2**20, 2**20, None, 10 * 2**30)
    assert cfg.cache.tenant_quota == 5 * 2**30  # unset: half of the disk tier
    assert cfg.policies == PoliciesConfig(None, 2.0)
    assert cfg.trusted_proxies == ()
    assert cfg.limits == Limits(8190, 8190, 100, 100 * 2**20)
    assert cfg.timeouts == Timeouts(75.0, 10.0)
    assert cfg.log == LogConfig(True, "info")


def test_dataclasses_are_frozen_slotted_and_replaceable() -> None:
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"  # type: ignore[misc]
    for obj in (cfg, cfg.cache, cfg.policies, cfg.limits, cfg.timeouts, cfg.log, cfg.listen[0]):
        assert not hasattr(obj, "__dict__")
    changed = dataclasses.replace(cfg, workers=2, limits=dataclasses.replace(cfg.limits, max_headers=10))
    assert changed.workers == 2 and changed.limits.max_headers == 10 and cfg.workers == 1


def test_relative_paths_resolve_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc" / "edge"
    (conf / "tenants").mkdir(parents=True)
    (conf / "edge.toml").write_text(
        '[cache]\ndisk_path = "../../var/cache"\n[policies]\ndirectory = "tenants"\n', encoding="utf-8"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "etc" / "edge" / "edge.toml")
    assert cfg.policies.directory == (conf / "tenants").resolve()
    assert cfg.cache.disk_path is not None
    assert cfg.cache.disk_path.resolve() == (tmp_path / "var" / "cache").resolve()
    assert cfg.policies.directory.is_absolute() and cfg.cache.disk_path.is_absolute()


def test_absolute_paths_are_kept(confdir: Path) -> None:
    cfg = load_config(write(confdir, f'[cache]\ndisk_path = "/srv/cache"\n{MINIMAL}'))
    assert cfg.cache.disk_path == Path("/srv/cache")


def test_quick_mode_needs_no_policy_directory(confdir: Path) -> None:
    cfg = load_config(write(confdir, "[node]\nname = \"q\"\n"), require_policies=False)
    assert cfg.policies.directory is None and cfg.name == "q"


GOOD_VALUES = [
    ('[node]\ncountry = "de"', lambda c: c.country == "DE", "country-upper-cased"),
    ('[node]\nworkers = 64', lambda c: c.workers == 64, "workers-max"),
    ('[[listen]]\naddress = "localhost:0"', lambda c: c.listen == (ListenAddress("localhost", 0),), "port-0"),
    ('[[listen]]\naddress = "[::1]:80"', lambda c: c.listen == (ListenAddress("::1", 80),), "ipv6"),
    ('[cache]\nmemory_size = 1048576', lambda c: c.cache.memory_size == 2**20, "size-int"),
    ('[cache]\nmemory_size = "2 GB"', lambda c: c.cache.memory_size == 2 * 10**9, "size-space-decimal"),
    ('[cache]\nmemory_size = "1.5gib"', lambda c: c.cache.memory_size == 3 * 2**29, "size-fraction-lower"),
    ('[cache]\ncompress_budget = "32MiB"', lambda c: c.cache.compress_budget == 32 * 2**20, "compress-budget"),
    ('[cache]\ncompress_budget = 0', lambda c: c.cache.compress_budget == 0, "compress-budget-off"),
    ('[cache]\nuncacheable_memory = 30', lambda c: c.cache.uncacheable_memory == 30.0, "uncacheable-memory"),
    ('[cache]\nuncacheable_memory = 0', lambda c: c.cache.uncacheable_memory == 0.0, "uncacheable-memory-off"),
    ('[cache]\nuncacheable_memory_keys = 100', lambda c: c.cache.uncacheable_memory_keys == 100, "uncacheable-memory-keys"),
    ('[policies]\ndirectory = "policies"\nwatch_interval = 1', lambda c: c.policies.watch_interval == 1.0, "int-seconds"),
    ('[limits]\nmax_body_size = 0', lambda c: c.limits.max_body_size == 0, "no-bodies"),
    ('[log]\nlevel = "Debug"', lambda c: c.log.level == "debug", "level-lowered"),
    ('[log]\nrefused_origin_interval = 0', lambda c: c.log.refused_origin_interval == 0.0, "every-refusal-logged"),
    ('[proxy]\ntrusted_proxies = []', lambda c: c.trusted_proxies == (), "no-proxies"),
    ('[outbound]\nallow_networks = ["10.20.0.0/16", "fd00:1::/32"]',
     lambda c: [str(n) for n in c.outbound.allow_networks] == ["10.20.0.0/16", "fd00:1::/32"], "outbound-networks"),
    ('[certificates]\nexpiry_check_interval = 600\nmax_per_tenant = 5',
     lambda c: (c.certificates.expiry_check_interval, c.certificates.max_per_tenant) == (600.0, 5), "certificates"),
    ('[certificates]\nexpiry_check_interval = 0', lambda c: c.certificates.expiry_check_interval == 0.0,
     "certificates-no-periodic-check"),
    ("[acme]", lambda c: c.acme == AcmeConfig(enabled=True), "acme-defaults"),
    ('[acme]\nemail = "Certs@Example.DE"\nrenew_before = 14.5\nretry_min = 5\nretry_max = 5\n'
     'directory_url = "https://127.0.0.1:14000/dir"\naccount_key = "account.key"',
     lambda c: (c.acme.email, c.acme.renew_before, c.acme.retry_min, c.acme.retry_max, c.acme.directory_url,
                c.acme.account_key.name) == ("Certs@example.de", 14.5 * 86400, 5.0, 5.0,
                                             "https://127.0.0.1:14000/dir", "account.key"), "acme-settings"),
    ('[[listen]]\naddress = "0.0.0.0:8443"\ntls = true',
     lambda c: c.listen == (ListenAddress("0.0.0.0", 8443, tls=True),), "listen-tls"),
    ('[[listen]]\naddress = "0.0.0.0:80"\ntls = false\n[[listen]]\naddress = "0.0.0.0:443"\ntls = true',
     lambda c: [a.tls for a in c.listen] == [False, True], "listen-plain-and-tls"),
    ('[[listen]]\naddress = "0.0.0.0:443"\ntls = true\nproxy_protocol = true\nproxy_protocol_from = ["10.0.0.0/8"]',
     lambda c: c.listen[0].tls and c.listen[0].proxy_protocol, "listen-tls-behind-proxy-protocol"),
    ('[tls]\nhandshake_timeout = 3', lambda c: c.tls.handshake_timeout == 3.0, "handshake-timeout"),
    ('[tls]\ncertificate_dir = "certs"', lambda c: c.tls.certificate_dir == Path("certs").resolve(), "certificate-dir"),
    ('[tls]\ncertificate_dir = "/srv/certs"', lambda c: c.tls.certificate_dir == Path("/srv/certs"), "certificate-dir-absolute"),
    ('', lambda c: c.tls == TlsConfig(None, None, 10.0), "tls-defaults"),
]


@pytest.mark.parametrize("text,check", [g[:2] for g in GOOD_VALUES], ids=[g[2] for g in GOOD_VALUES])
def test_good_values(confdir: Path, text: str, check) -> None:  # type: ignore[no-untyped-def]
    if "[policies]" not in text:
        text = MINIMAL + text
    assert check(load_config(write(confdir, text)))


# One size grammar for edge.toml and policies (edge.schema.values.parse_size):
# what either accepted before, the same bytes in both (tests/unit/test_policy_parse.py
# has the same table for a policy's cache.disk_quota).
@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        ('"1TB"', 10**12),
        ('"2tib"', 2 << 40),
        ('"100"', 100),
        ('"17.0"', 17),
        ("1024.0", 1024),
        ('"1.5B"', 1),  # with a unit, fractions of a byte are dropped (policies' grammar)
        ('"1.MiB"', 1 << 20),
        ('".5KiB"', 512),
    ],
)
def test_one_size_grammar_with_policies(confdir: Path, value: str, nbytes: int) -> None:
    cfg = load_config(write(confdir, f"{MINIMAL}[limits]\nmax_body_size = {value}\n"))
    assert cfg.limits.max_body_size == nbytes


# --- hostile files: one exact message each -----------------------------------

SIZE = 'expected a size such as "256MiB" or a number of bytes'
CIDR = 'expected a CIDR such as "10.0.0.0/8" or "2001:db8::/32"'
ADDR = 'expected an address such as "0.0.0.0:8080" or "[::]:8080" (port 0 to 65535)'
PROXY_PEERS = 'the networks of the load balancers that send PROXY protocol headers, such as ["10.0.0.0/8"]'
NAME = (
    'expected a name of letters, digits, ".", "_" or "-" that starts with a letter '
    "(at most 63 characters)"
)
ACME_URL = 'expected an https:// URL of an ACME directory, such as "https://acme-v02.api.letsencrypt.org/directory"'
EMAIL = 'expected an e-mail address such as "certs@example.de"'
SECTIONS = "acme, admin, cache, certificates, filters, geoip, limits, listen, log, node, origin_tls, outbound, policies, proxy, timeouts, tls"

BAD = [
    # (toml put before MINIMAL, expected message without the "edge.toml: " prefix, id)
    ("nod = 1", f'nod: expected one of the sections {SECTIONS}, found an unknown section (did you mean "node"?)', "unknown-section"),
    ("[server]\nport = 1", f"server: expected one of the sections {SECTIONS}, found an unknown section", "unknown-section-no-hint"),
    ("node = 5", "node: expected a table ([node]), found 5", "section-not-a-table"),
    ("[node]\nnmae = \"x\"", 'node.nmae: expected one of the keys country, name, workers, found an unknown key (did you mean "name"?)', "unknown-key"),
    ("[node]\nname = \"\"", f'node.name: {NAME}, found ""', "name-empty"),
    ("[node]\nname = \"1edge\"", f'node.name: {NAME}, found "1edge"', "name-digit-first"),
    ("[node]\nname = \"edge 1\"", f'node.name: {NAME}, found "edge 1"', "name-space"),
    ("[node]\nname = \"edge;hit\"", f'node.name: {NAME}, found "edge;hit"', "name-injects-cache-status"),
    ("[node]\nname = 5", f"node.name: {NAME}, found 5", "name-int"),
    ("[node]\ncountry = \"UK\"", 'node.country: expected an ISO 3166-1 alpha-2 country code such as "DE", found "UK"', "country-reserved"),
    ("[node]\ncountry = \"DEU\"", 'node.country: expected an ISO 3166-1 alpha-2 country code such as "DE", found "DEU"', "country-alpha3"),
    ("[node]\nworkers = 0", "node.workers: expected an integer from 1 to 64, found 0", "workers-zero"),
    ("[node]\nworkers = 65", "node.workers: expected an integer from 1 to 64, found 65", "workers-too-many"),
    ("[node]\nworkers = true", "node.workers: expected an integer from 1 to 64, found true", "workers-bool"),
    ("[node]\nworkers = 2.0", "node.workers: expected an integer from 1 to 64, found 2.0", "workers-float"),
    ("[[listen]]\naddress = \"8080\"", f'listen[0].address: {ADDR}, found "8080"', "address-no-host"),
    ("[[listen]]\naddress = \"::1:8080\"", f'listen[0].address: {ADDR}, found "::1:8080"', "address-ipv6-unbracketed"),
    ("[[listen]]\naddress = \"[::1]8080\"", f'listen[0].address: {ADDR}, found "[::1]8080"', "address-no-colon"),
    ("[[listen]]\naddress = \"[nope]:80\"", f'listen[0].address: {ADDR}, found "[nope]:80"', "address-bad-ipv6"),
    ("[[listen]]\naddress = \"a.com:65536\"", f'listen[0].address: {ADDR}, found "a.com:65536"', "address-port-range"),
    ("[[listen]]\naddress = \"a.com:http\"", f'listen[0].address: {ADDR}, found "a.com:http"', "address-named-port"),
    ("[[listen]]\naddress = \"a_b:80\"", f'listen[0].address: {ADDR}, found "a_b:80"', "address-bad-hostname"),
    ("[[listen]]\naddress = 8080", f"listen[0].address: {ADDR}, found 8080", "address-int"),
    ("[[listen]]\nport = 8080", f"listen[0].port: expected one of the keys address, proxy_protocol, proxy_protocol_from, tls, found an unknown key\nedge.toml: listen[0].address: {ADDR}, found nothing", "listen-missing-address"),
    ("[listen]\naddress = \"0.0.0.0:80\"", "listen: expected an array of tables ([[listen]]), found a table", "listen-single-table"),
    ("[[listen]]\naddress = \"0.0.0.0:80\"\nproxy_protocol = true", f"listen[0].proxy_protocol_from: expected {PROXY_PEERS}, found nothing", "proxy-protocol-without-peers"),
    ("[[listen]]\naddress = \"0.0.0.0:80\"\nproxy_protocol = true\nproxy_protocol_from = []", f"listen[0].proxy_protocol_from: expected {PROXY_PEERS}, found an empty array", "proxy-protocol-no-peers"),
    ("[[listen]]\naddress = \"0.0.0.0:80\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.1/8\"]", 'listen[0].proxy_protocol_from[0]: expected a CIDR such as "10.0.0.0/8" or "2001:db8::/32", found "10.0.0.1/8" (has host bits set)', "proxy-protocol-peer-host-bits"),
    ("[[listen]]\naddress = \"0.0.0.0:80\"\nproxy_protocol = true\nproxy_protocol_from = \"10.0.0.0/8\"", 'listen[0].proxy_protocol_from: expected an array of CIDR strings, found "10.0.0.0/8"', "proxy-protocol-peers-not-array"),
    ("[[listen]]\naddress = \"0.0.0.0:80\"\nproxy_protocol_from = [\"10.0.0.0/8\"]", "listen[0].proxy_protocol_from: expected it only with proxy_protocol = true, found it without", "proxy-protocol-peers-without-proxy-protocol"),
    ("listen = []", "listen: expected at least one [[listen]] address, found none", "listen-empty"),
    ("[[listen]]\naddress = \"0.0.0.0:80\"\n[[listen]]\naddress = \"0.0.0.0:80\"", 'listen[1].address: expected each address once, found "0.0.0.0:80" again', "listen-duplicate"),
    ("[node]\nworkers = 2\n[[listen]]\naddress = \"127.0.0.1:0\"", "listen: expected fixed ports when node.workers > 1, found port 0", "port-0-with-workers"),
    ("[cache]\nmemory_size = \"lots\"", f'cache.memory_size: {SIZE}, found "lots"', "size-word"),
    ("[cache]\nmemory_size = \"256 Mb/s\"", f'cache.memory_size: {SIZE}, found "256 Mb/s"', "size-junk"),
    ("[cache]\nmemory_size = \"256MiBs\"", f'cache.memory_size: {SIZE}, found "256MiBs"', "size-unknown-unit"),
    ("[cache]\nmemory_size = \"-1MiB\"", f'cache.memory_size: {SIZE}, found "-1MiB"', "size-negative-string"),
    ("[cache]\nmemory_size = -1", f"cache.memory_size: {SIZE}, found -1", "size-negative"),
    ("[cache]\nmemory_size = 0", 'cache.memory_size: expected a size from 1 to 1125899906842624 bytes, found 0', "size-zero"),
    ("[cache]\nmemory_size = true", f"cache.memory_size: {SIZE}, found true", "size-bool"),
    ("[cache]\nmemory_size = 1.5", "cache.memory_size: expected a whole number of bytes, found 1.5", "size-fractional-float"),
    ("[cache]\nmemory_size = \"1.5\"", 'cache.memory_size: expected a whole number of bytes, found "1.5"', "size-fractional-string"),
    ("[cache]\nmemory_size = \"2000TiB\"", 'cache.memory_size: expected a size of at most 1024TiB, found "2000TiB"', "size-absurd"),
    ("[cache]\nmemory_size = inf", f"cache.memory_size: {SIZE}, found inf", "size-inf"),
    ("[cache]\nmemory_size = [1]", f"cache.memory_size: {SIZE}, found an array", "size-array"),
    ("[cache]\nmemory_size = \"1MiB\"\nmemory_max_object = \"2MiB\"", "cache.memory_max_object: expected at most cache.memory_size (1048576 bytes), found 2097152 bytes", "max-object-over-memory"),
    ("[cache]\nfill_buffer = \"4KiB\"", 'cache.fill_buffer: expected a size from 65536 to 1125899906842624 bytes, found "4KiB"', "fill-buffer-small"),
    ("[cache]\nmemory_size = \"1MiB\"\nfill_buffer = \"2MiB\"", "cache.fill_buffer: expected at most cache.memory_size (1048576 bytes), found 2097152 bytes", "fill-buffer-over-memory"),
    ("[cache]\nfill_bufer = \"1MiB\"", 'cache.fill_bufer: expected one of the keys compress_budget, disk_path, disk_size, fill_buffer, memory_max_object, memory_size, tenant_disk_quota, uncacheable_memory, uncacheable_memory_keys, found an unknown key (did you mean "fill_buffer"?)', "fill-buffer-typo"),
    ("[cache]\ndisk_path = \"\"", 'cache.disk_path: expected a path (relative to the config file), found ""', "disk-path-empty"),
    ("[cache]\ndisk_path = 1", "cache.disk_path: expected a path (relative to the config file), found 1", "disk-path-int"),
    ("[cache]\ncompress_budget = -1", f"cache.compress_budget: {SIZE}, found -1", "compress-budget-negative"),
    ("[cache]\ncompress_budget = \"lots\"", f'cache.compress_budget: {SIZE}, found "lots"', "compress-budget-word"),
    ("[cache]\nuncacheable_memory = 601", "cache.uncacheable_memory: expected a number of seconds (0: off) from 0 to 600, found 601", "uncacheable-memory-over-barrier"),
    ("[cache]\nuncacheable_memory = -1", "cache.uncacheable_memory: expected a number of seconds (0: off) from 0 to 600, found -1", "uncacheable-memory-negative"),
    ("[cache]\nuncacheable_memory = \"2m\"", 'cache.uncacheable_memory: expected a number of seconds (0: off) from 0 to 600, found "2m"', "uncacheable-memory-word"),
    ("[cache]\nuncacheable_memory_keys = 0", "cache.uncacheable_memory_keys: expected an integer from 1 to 1000000, found 0", "uncacheable-memory-keys-zero"),
    ("[cache]\nuncacheable_memory_keys = 1e9", "cache.uncacheable_memory_keys: expected an integer from 1 to 1000000, found 1000000000.0", "uncacheable-memory-keys-float"),
    ("[cache]\ndisk_size = \"1GiB\"", "cache.disk_size: expected cache.disk_path to be set as well (no path, no disk tier), found no disk_path", "disk-size-without-path"),
    ("[cache]\ntenant_disk_quota = \"1GiB\"", "cache.tenant_disk_quota: expected cache.disk_path to be set as well (no path, no disk tier), found no disk_path", "tenant-quota-without-path"),
    ("[cache]\ndisk_path = \"c\"\ndisk_size = \"1GiB\"\ntenant_disk_quota = \"2GiB\"", "cache.tenant_disk_quota: expected at most cache.disk_size (1073741824 bytes), found 2147483648 bytes", "tenant-quota-over-disk"),
    ("[cache]\ndisk_path = \"c\"\ntenant_disk_quota = -1", f"cache.tenant_disk_quota: {SIZE}, found -1", "tenant-quota-negative"),
    ("[cache]\ndisk_path = \"c\"\ntenant_disk_quota = 0", "cache.tenant_disk_quota: expected a size from 1 to 1125899906842624 bytes, found 0", "tenant-quota-zero"),
    ("[cache]\ndisk_path = \"c\"\ntenant_disk_quota = \"half\"", f'cache.tenant_disk_quota: {SIZE}, found "half"', "tenant-quota-word"),
    ("[proxy]\ntrusted_proxies = \"10.0.0.0/8\"", 'proxy.trusted_proxies: expected an array of CIDR strings, found "10.0.0.0/8"', "proxies-not-array"),
    ("[proxy]\ntrusted_proxies = [\"10.0.0.1/8\"]", f'proxy.trusted_proxies[0]: {CIDR}, found "10.0.0.1/8" (has host bits set)', "proxies-host-bits"),
    ("[proxy]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", 10]", f'proxy.trusted_proxies[1]: {CIDR}, found "10.0.0.0/33"\nedge.toml: proxy.trusted_proxies[2]: {CIDR}, found 10', "proxies-each-element"),
    ("[proxy]\ntrusted = []", 'proxy.trusted: expected one of the keys client_address_header, trusted_proxies, found an unknown key (did you mean "trusted_proxies"?)', "proxies-typo"),
    ("[proxy]\nclient_address_header = \"X-Real-IP\"", 'proxy.client_address_header: expected one of "x-forwarded-for", "forwarded", found "X-Real-IP"', "address-header"),
    ("[outbound]\nallow_networks = [\"10.0.0.1/8\"]", f'outbound.allow_networks[0]: {CIDR}, found "10.0.0.1/8" (has host bits set)', "outbound-host-bits"),
    ("[outbound]\nallow_network = []", 'outbound.allow_network: expected one of the keys allow_networks, found an unknown key (did you mean "allow_networks"?)', "outbound-typo"),
    ("[certificates]\nexpiry_check_interval = -1", "certificates.expiry_check_interval: expected a number of seconds "
     "(0: only at start and after writes) from 0 to 86400, found -1", "expiry-check-negative"),
    ("[certificates]\nexpiry_check_interval = \"1h\"", "certificates.expiry_check_interval: expected a number of seconds "
     '(0: only at start and after writes) from 0 to 86400, found "1h"', "expiry-check-string"),
    ("[certificates]\nmax_per_tenant = 0", "certificates.max_per_tenant: expected an integer from 1 to 10000, found 0",
     "max-certificates-zero"),
    ("[certificates]\ncheck_interval = 60", "certificates.check_interval: expected one of the keys expiry_check_interval, "
     'max_per_tenant, found an unknown key (did you mean "expiry_check_interval"?)', "certificates-unknown-key"),
    ("[limits]\nmax_request_line = 10", "limits.max_request_line: expected a size from 64 to 1048576 bytes, found 10", "request-line-small"),
    ("[limits]\nmax_header_size = \"2MiB\"", 'limits.max_header_size: expected a size from 64 to 1048576 bytes, found "2MiB"', "header-size-large"),
    ("[limits]\nmax_headers = \"100\"", 'limits.max_headers: expected an integer from 1 to 10000, found "100"', "max-headers-string"),
    ("[limits]\nmax_headers = 0", "limits.max_headers: expected an integer from 1 to 10000, found 0", "max-headers-zero"),
    ("[limits]\nmax_body_size = \"big\"", f'limits.max_body_size: {SIZE}, found "big"', "body-size-word"),
    ("[timeouts]\nkeepalive = -1", "timeouts.keepalive: expected a number of seconds from 0 to 3600, found -1", "keepalive-negative"),
    ("[timeouts]\nshutdown = \"10s\"", 'timeouts.shutdown: expected a number of seconds from 0 to 3600, found "10s"', "shutdown-string"),
    ("[timeouts]\nshutdown = nan", "timeouts.shutdown: expected a number of seconds from 0 to 3600, found nan", "shutdown-nan"),
    ("[timeouts]\nshutdown = false", "timeouts.shutdown: expected a number of seconds from 0 to 3600, found false", "shutdown-bool"),
    ("[log]\naccess = \"yes\"", 'log.access: expected true or false, found "yes"', "access-string"),
    ("[log]\naccess = 1", "log.access: expected true or false, found 1", "access-int"),
    ("[log]\nlevel = \"verbose\"", 'log.level: expected one of "debug", "info", "warning", "error", "critical", found "verbose"', "level-unknown"),
    ("[log]\nrefused_origin_interval = -1",
     "log.refused_origin_interval: expected a number of seconds (0: every refusal) from 0 to 86400, found -1",
     "refused-origin-interval-negative"),
    ("[log]\nformat = \"json\"", "log.format: expected one of the keys access, level, refused_origin_interval, found an unknown key", "log-unknown-key"),
    ("[acme]\ndirectory = \"x\"", 'acme.directory: expected one of the keys account_key, ca_bundle, directory_url, email, order_timeout, renew_before, request_timeout, retry_max, retry_min, found an unknown key (did you mean "directory_url"?)', "acme-unknown-key"),
    ("[acme]\ndirectory_url = \"http://acme.example/dir\"", f'acme.directory_url: {ACME_URL}, found "http://acme.example/dir"', "acme-url-not-https"),
    ("[acme]\ndirectory_url = \"acme.example\"", f'acme.directory_url: {ACME_URL}, found "acme.example"', "acme-url-not-absolute"),
    ("[acme]\nemail = \"certs\"", f'acme.email: {EMAIL}, found "certs"', "acme-email-no-at"),
    ("[acme]\nemail = \"certs@localhost\"", f'acme.email: {EMAIL}, found "certs@localhost"', "acme-email-single-label"),
    ("[acme]\nemail = \"a b@example.de\"", f'acme.email: {EMAIL}, found "a b@example.de"', "acme-email-space"),
    ("[acme]\nemail = [\"certs@example.de\"]", f"acme.email: {EMAIL}, found an array", "acme-email-list"),
    ("[acme]\nca_bundle = \"/nonexistent/ca.pem\"", 'acme.ca_bundle: expected an existing PEM file of CA certificates, found "/nonexistent/ca.pem" (no such file)', "acme-ca-bundle-missing"),
    ("[acme]\naccount_key = \"/nonexistent/account.key\"", 'acme.account_key: expected a file in an existing directory (made there when missing), found "/nonexistent/account.key" (no such directory)', "acme-account-key-dir-missing"),
    ("[acme]\nrenew_before = 0", "acme.renew_before: expected a number of days from 0.001 to 365, found 0", "acme-renew-before-zero"),
    ("[acme]\nrenew_before = \"30d\"", 'acme.renew_before: expected a number of days from 0.001 to 365, found "30d"', "acme-renew-before-string"),
    ("[acme]\nretry_min = 0", "acme.retry_min: expected a number of seconds from 1 to 86400, found 0", "acme-retry-min-zero"),
    ("[acme]\nretry_max = 1e9", "acme.retry_max: expected a number of seconds from 1 to 2.592e+06, found 1000000000.0", "acme-retry-max-huge"),
    ("[acme]\nretry_min = 600\nretry_max = 60", "acme.retry_max: expected at least acme.retry_min (600 seconds), found 60", "acme-retry-max-below-min"),
    ("[acme]\norder_timeout = 1", "acme.order_timeout: expected a number of seconds from 10 to 3600, found 1", "acme-order-timeout-short"),
    ("[acme]\nrequest_timeout = 0", "acme.request_timeout: expected a number of seconds from 1 to 300, found 0", "acme-request-timeout-zero"),
    ("acme = true", "acme: expected a table ([acme]), found true", "acme-not-a-table"),
    ("[[listen]]\naddress = \"0.0.0.0:443\"\ntls = \"yes\"", 'listen[0].tls: expected true or false, found "yes"', "listen-tls-string"),
    ("[tls]\nhandshake_timeout = 0", "tls.handshake_timeout: expected a number of seconds from 0.5 to 300, found 0", "handshake-timeout-zero"),
    ("[tls]\nhandshake_timeout = 301", "tls.handshake_timeout: expected a number of seconds from 0.5 to 300, found 301", "handshake-timeout-long"),
    ("[tls]\nhandshake_timeout = \"10s\"", 'tls.handshake_timeout: expected a number of seconds from 0.5 to 300, found "10s"', "handshake-timeout-string"),
    ("[tls]\ncertificate_dir = 5", "tls.certificate_dir: expected a path (relative to the config file), found 5", "certificate-dir-int"),
    ("[tls]\ndefault_cert = \"a.pem\"", 'tls.default_cert: expected one of the keys certificate_dir, default_certificate, handshake_timeout, found an unknown key (did you mean "default_certificate"?)', "tls-typo"),
    ("tls = true", "tls: expected a table ([tls]), found true", "tls-not-a-table"),
]


@pytest.mark.parametrize("text,message", [b[:2] for b in BAD], ids=[b[2] for b in BAD])
def test_bad_field(confdir: Path, text: str, message: str) -> None:
    assert errors_of(text + "\n" + MINIMAL) == [f"edge.toml: {line}" for line in message.split("\nedge.toml: ")]


@pytest.mark.parametrize(
    "text,message",
    [
        ("[policies]\ndirectory = \"policies\"\nwatch_interval = -2", "policies.watch_interval: expected a number of seconds from 0 to 3600, found -2"),
        ("[policies]\nwatch_interval = 2\ndirectory = 3", "policies.directory: expected a path (relative to the config file), found 3"),
        ("[policies]\ndirectry = \"policies\"", 'policies.directry: expected one of the keys directory, watch_interval, found an unknown key (did you mean "directory"?)\nedge.toml: policies.directory: expected a directory of tenant policies (relative to the config file), found nothing'),
        ("", "policies.directory: expected a directory of tenant policies (relative to the config file), found nothing"),
    ],
    ids=["watch-negative", "directory-int", "directory-typo", "directory-missing"],
)
def test_bad_policies(confdir: Path, text: str, message: str) -> None:
    assert errors_of(text) == [f"edge.toml: {line}" for line in message.split("\nedge.toml: ")]


def test_policy_directory_must_exist(confdir: Path) -> None:
    missing = confdir.resolve() / "nope"
    assert errors_of('[policies]\ndirectory = "nope"') == [
        f'edge.toml: policies.directory: expected an existing directory, found "{missing}" (no such directory)'
    ]


def test_all_errors_reported_together(confdir: Path) -> None:
    errors = errors_of(
        MINIMAL + '[node]\nworkers = 0\n[cache]\nmemory_size = "lots"\n[log]\nlevel = "loud"\nacess = true\n'
    )
    assert [e.split(":")[1].strip() for e in errors] == [
        "node.workers", "cache.memory_size", "log.acess", "log.level",
    ]


def test_invalid_toml_names_line_and_column(confdir: Path) -> None:
    errors = errors_of('[node]\nname = "edge-1"\nworkers = = 2\n')
    assert len(errors) == 1
    assert errors[0].startswith("edge.toml: invalid TOML: ")
    assert "line 3, column" in errors[0]


def test_duplicate_key_is_invalid_toml(confdir: Path) -> None:
    errors = errors_of('[node]\nworkers = 1\nworkers = 2\n')
    assert errors[0].startswith("edge.toml: invalid TOML: ") and "line 3" in errors[0]


def test_non_utf8_file(confdir: Path) -> None:
    Path("edge.toml").write_bytes(b'[node]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config("edge.toml")
    assert info.value.errors == ["edge.toml: expected UTF-8 TOML, found an undecodable byte at offset 15"]


def test_missing_file(confdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("absent.toml")
    assert info.value.errors == ["absent.toml: cannot read the config file: No such file or directory"]


def test_directory_instead_of_file(confdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("policies")
    assert info.value.errors == ["policies: cannot read the config file: Is a directory"]


# --- parse_size (shared helper) ----------------------------------------------

@pytest.mark.parametrize(
    "value,expected",
    [
        (0, 0),
        (1024, 1024),
        (1024.0, 1024),
        ("0", 0),
        ("17", 17),
        ("17B", 17),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("1kib", 1024),
        ("3 MB", 3_000_000),
        ("256MiB", 256 * 2**20),
        ("1GB", 10**9),
        ("10GiB", 10 * 2**30),
        ("2TB", 2 * 10**12),
        ("1TiB", 2**40),
        ("0.5KiB", 512),
        (" 1MiB ", 2**20),
        (2**50, 2**50),
        ("1024TiB", 2**50),
        ("1.5B", 1),
        ("0.3B", 0),
        ("1.MiB", 2**20),
        (".5KiB", 512),
        ("17.0", 17),
    ],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value,message",
    [
        ("lots", f'{SIZE}, found "lots"'),
        ("", f'{SIZE}, found ""'),
        ("MiB", f'{SIZE}, found "MiB"'),
        ("1 PiB", f'{SIZE}, found "1 PiB"'),
        ("1e6", f'{SIZE}, found "1e6"'),
        ("1_000", f'{SIZE}, found "1_000"'),
        ("-1", f'{SIZE}, found "-1"'),
        (-1, f"{SIZE}, found -1"),
        (-0.5, f"{SIZE}, found -0.5"),
        (True, f"{SIZE}, found true"),
        (None, f"{SIZE}, found None"),
        (float("nan"), f"{SIZE}, found nan"),
        (0.5, "expected a whole number of bytes, found 0.5"),
        ("0.3", 'expected a whole number of bytes, found "0.3"'),
        ("١٠MiB", f'{SIZE}, found "١٠MiB"'),
        (2**50 + 1, f"expected a size of at most 1024TiB, found {2**50 + 1}"),
        ("1025TiB", 'expected a size of at most 1024TiB, found "1025TiB"'),
    ],
    ids=[
        "word", "empty", "unit-only", "unknown-unit", "exponent", "underscore", "negative-string",
        "negative", "negative-float", "bool", "none", "nan", "fraction", "fraction-without-unit",
        "non-ascii-digits", "absurd-int", "absurd-string",
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0.0.0.0:8080", ListenAddress("0.0.0.0", 8080)),
        ("127.0.0.1:1", ListenAddress("127.0.0.1", 1)),
        ("[::]:443", ListenAddress("::", 443)),
        ("[2001:db8::1]:65535", ListenAddress("2001:db8::1", 65535)),
        ("edge.example.com:8080", ListenAddress("edge.example.com", 8080)),
    ],
)
def test_parse_listen_address(text: str, expected: ListenAddress) -> None:
    assert parse_listen_address(text) == expected


def test_geoip_and_proxy_protocol(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "GeoLite2-Country.mmdb").write_bytes(b"x")
    path = tmp_path / "edge.toml"
    path.write_text(
        '[policies]\ndirectory = "policies"\n'
        '[geoip]\ndatabase = "GeoLite2-Country.mmdb"\ncheck_interval = 60\n'
        '[[listen]]\naddress = "0.0.0.0:8080"\n'
        '[[listen]]\naddress = "0.0.0.0:8081"\nproxy_protocol = true\nproxy_protocol_from = ["10.0.0.0/8", "fd00::/8"]\n'
    )
    config = load_config(path)
    assert config.geoip.database == tmp_path / "GeoLite2-Country.mmdb"
    assert config.geoip.check_interval == 60
    assert [a.proxy_protocol for a in config.listen] == [False, True]
    assert config.listen[1].proxy_protocol_from == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_default_certificate(confdir: Path) -> None:
    chain, key, _, _ = tls_support.chain("edge.example")
    write(confdir, chain + key, "default.pem")
    config = load_config(write(confdir, f'{MINIMAL}[tls]\ndefault_certificate = "default.pem"\n'))
    assert config.tls.default_certificate == confdir.resolve() / "default.pem"


DEFAULT_CERTIFICATE = "tls.default_certificate: expected a PEM file with a certificate chain and its unencrypted private key"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "no such file or directory"),
        ("", "no PEM certificate in it"),
        ("chain", "no PEM private key in it"),
        ("key", "no PEM certificate in it"),
        ("chain+other-key", "the private key does not belong to the first certificate"),
        ("chain+encrypted-key", "the private key is encrypted"),
        ("garbage", "no PEM certificate in it"),
    ],
)
def test_default_certificate_that_cannot_serve(confdir: Path, content: str | None, why: str) -> None:
    chain, key, leaf, _ = tls_support.chain("edge.example")
    other = tls_support.issue(["edge.example"], key_kind="ec256-other")
    texts = {"": "", "chain": chain, "key": key, "chain+other-key": chain + other.key_pem(),
             "chain+encrypted-key": chain + leaf.key_pem(b"secret"), "garbage": "\x00" * 100}
    if content is not None:
        write(confdir, texts[content], "default.pem")
    found = f'{describe(str(confdir.resolve() / "default.pem"))} ({why})'
    assert errors_of(f'{MINIMAL}[tls]\ndefault_certificate = "default.pem"\n') == [
        f"edge.toml: {DEFAULT_CERTIFICATE}, found {found}"]


def test_missing_geoip_database_is_an_error(tmp_path):
    (tmp_path / "policies").mkdir()
    path = tmp_path / "edge.toml"
    path.write_text('[policies]\ndirectory = "policies"\n[geoip]\ndatabase = "nope.mmdb"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "geoip.database: expected an existing MaxMind DB file" in str(exc.value)


# --- node-wide address lists ------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[filters]\ndeny = "10.0.0.0/8"', 'filters.deny: expected an array of CIDR strings, found "10.0.0.0/8"'),
        ('[filters]\nallow = ["10.0.0.1/8"]', "filters.allow[0]: expected a CIDR"),
        ('[filters]\ndeny = ["nonsense"]', 'filters.deny[0]: expected a CIDR such as "10.0.0.0/8" or "2001:db8::/32", found "nonsense"'),
        ("[filters]\nblock = []", "filters.block: expected one of the keys allow, allow_file, client_burst, client_rate, deny, deny_file"),
    ],
)
def test_node_lists_bad_config(tmp_path, toml, message):
    path = tmp_path / "edge.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_node_list_files_name_every_bad_line(tmp_path):
    f = tmp_path / "deny.txt"
    f.write_text("# blocklist\n192.0.2.0/24\n198.51.100.7  # one host\n\n300.1.1.1\n2001:db8::/32\n10.0.0.1/8\n")
    config = dataclasses.replace(default_config(), filters=NodeLists(deny_file=f))
    with pytest.raises(ConfigError) as info:
        node_lists(config)
    assert info.value.errors[0].startswith(f"{f}:5: expected a CIDR")
    assert info.value.errors[1].startswith(f"{f}:7: expected a CIDR") and "host bits" in info.value.errors[1]
    assert len(info.value.errors) == 2
    f.write_text("192.0.2.0/24\n198.51.100.7\n")
    allow, deny = node_lists(config)
    assert "198.51.100.7" in deny and "192.0.2.9" in deny and "198.51.100.8" not in deny and len(allow) == 0


def test_missing_node_list_file_is_a_clear_error(tmp_path):
    config = dataclasses.replace(default_config(), filters=NodeLists(allow_file=tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="nope.txt: cannot be read"):
        node_lists(config)


@pytest.mark.parametrize(
    "argv,quota",
    [
        (["--origin", "http://127.0.0.1:9", "--cache-dir", "c", "--cache-size", "1GiB"], 2**30),
        (["--origin", "http://127.0.0.1:9", "--cache-dir", "c"], 10 * 2**30),
    ],
    ids=["quick-mode-sized", "quick-mode-default"],
)
def test_quick_mode_gives_its_one_tenant_the_whole_disk_tier(argv, quota) -> None:
    """No other tenant to keep a share for (a node's default is half)."""
    from edge.cli import apply_flags, build_parser

    config = apply_flags(default_config(), build_parser().parse_args(["serve", *argv]), demo=False)
    assert config.cache.tenant_quota == config.cache.disk_size == quota
