"""Pure parts of the admin API: tokens, the failure limiter, Host checks,
merge patch, If-Match, path checks, the [admin] config section, cache
outcomes."""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from edge.admin import auth
from edge.admin.app import merge_patch, path_trick
from edge.admin.auth import AuthFailure, FailureKeys, MemoryFailures, SharedFailures, TokenSet, token_hash
from edge.admin.hosts import allowed_names, host_allowed
from edge.admin.store import PolicyFiles, Precondition
from edge.config import AdminToken, ConfigError, admin_listen_problem, load_config, read_tokens_file
from edge.config_tls import ListenAddress


def tok(value: str, tenant: str = "*") -> AdminToken:
    return AdminToken(hashlib.sha256(value.encode()).digest(), tenant)


# --- tokens ------------------------------------------------------------------------


def test_token_hash_is_what_the_config_wants():
    assert token_hash("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_check_finds_the_token_and_its_scope():
    tokens = TokenSet([tok("op"), tok("shop-t", "shop")])
    p = tokens.check("Bearer shop-t")
    assert (p.tenant, p.operator, p.may("shop"), p.may("news")) == ("shop", False, True, False)
    assert p.token_id == hashlib.sha256(b"shop-t").hexdigest()[:8]
    assert tokens.check("bearer   op ").operator


@pytest.mark.parametrize("header,reason", [
    (None, "missing"),
    ("", "malformed"),
    ("Bearer", "malformed"),
    ("Bearer ", "malformed"),
    ("Basic b3A6", "malformed"),
    ("Bearer a b", "malformed"),
    ("Bearer tök", "malformed"),
    ("Bearer " + "a" * 513, "malformed"),
    ("Bearer nope", "unknown"),
])
def test_check_refuses(header, reason):
    with pytest.raises(AuthFailure) as exc:
        TokenSet([tok("op")]).check(header)
    assert exc.value.reason == reason
    assert exc.value.challenge.startswith("Bearer")
    assert exc.value.counts == (reason != "missing")


def test_every_configured_hash_is_compared_even_after_a_match(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = TokenSet([tok("a"), tok("b"), tok("c")])
    tokens.check("Bearer a")
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(AuthFailure):
        tokens.check("Bearer zzz")
    assert len(calls) == 3


def test_token_repr_shows_no_hash():
    assert "digest" not in repr(tok("x")) and tok("x").id == hashlib.sha256(b"x").hexdigest()[:8]


# --- failure limiter ----------------------------------------------------------------


@pytest.fixture(params=["memory", "shared"])
def limiter(request, tmp_path):
    """``limiter(limit=..., window=...)``: each kind counts the same way; the
    shared one in a SQLite file, as the workers of a node do."""
    made = []

    def make(**kwargs):
        if request.param == "memory":
            return MemoryFailures(**kwargs)
        lim = SharedFailures(tmp_path / "failures.sqlite3", **kwargs)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        lim.close()


# (seconds to advance, keys of one failure, expected Retry-After or None)
WINDOW_STEPS = [
    (0, ["a:1"], None),
    (1, ["a:1"], None),
    (1, ["a:1"], None),
    (0, ["a:1"], 58),  # the fourth failure within the window opened 2 s ago
    (0, ["a:2"], None),  # another address
    (57.5, ["a:1"], 1),
    (1, ["a:1"], None),  # the window is over: a new one opens
    (0, ["a:1", "t:x"], None),
    (0, ["a:3", "t:x"], None),
    (0, ["a:4", "t:x"], None),
    (5, ["a:5", "t:x"], 55),  # a token tried from many addresses
]


def test_limiter_counts_failures_per_key_in_a_window(limiter):
    now = [1000.0]
    lim = limiter(limit=3, window=60, clock=lambda: now[0])
    for i, (advance, keys, expected) in enumerate(WINDOW_STEPS):
        now[0] += advance
        assert lim.count(keys) == expected, (i, keys)


def test_limiter_memory_is_bounded(limiter):
    now = [0.0]
    lim = limiter(limit=1, window=60, max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        now[0] += 0.001
        lim.count([f"a:{i}"])
    assert len(lim) == 100
    assert lim.count(["a:999"]) is not None and lim.count(["a:0"]) is None


def test_workers_sharing_the_file_share_the_count(tmp_path):
    """Two workers, each with its own connection: the limit holds for their sum."""
    path = tmp_path / "failures.sqlite3"
    one, two = SharedFailures(path, limit=10, window=60), SharedFailures(path, limit=10, window=60)
    try:
        answers = [(one if i % 2 else two).count(["a:1"]) for i in range(11)]
        assert answers[:10] == [None] * 10 and answers[10] == 60
    finally:
        one.close()
        two.close()


def test_an_unusable_shared_file_falls_back_to_counting_in_the_worker(tmp_path, caplog):
    lim = SharedFailures(tmp_path / "missing-dir" / "failures.sqlite3", limit=1, window=60)
    try:
        assert lim.count(["a:1"]) is None and lim.count(["a:1"]) == 60
    finally:
        lim.close()
    assert "this worker counts its own" in caplog.text


def test_failure_keys_hash_addresses_and_tokens():
    keys = FailureKeys(b"secret")
    a = keys.address("192.0.2.7")
    assert a == keys.address("::ffff:192.0.2.7") and a != keys.address("192.0.2.8")  # not per /24
    assert "192.0.2" not in a and a.startswith("a:")
    assert keys.address("2001:db8::1") == keys.address("2001:db8::2")  # one /64
    assert keys.address("2001:db8::1") != keys.address("2001:db8:0:1::1")
    assert a != FailureKeys(b"other").address("192.0.2.7")  # keyed: not a table lookup away
    digest = hashlib.sha256(b"guess").digest()
    assert keys.token(digest).startswith("t:") and digest.hex()[:16] not in keys.token(digest)


# --- Host ---------------------------------------------------------------------------


ALLOWED = allowed_names(["Admin.Example.net.", "192.0.2.10"], "127.0.0.1")


@pytest.mark.parametrize("hosts,local,ok", [
    ([], "127.0.0.1", True),  # HTTP/1.0 without Host
    (["127.0.0.1:9090"], "127.0.0.1", True),
    (["127.0.0.1"], "127.0.0.1", True),
    (["127.8.9.10:1"], "127.0.0.1", True),  # all of 127.0.0.0/8 is loopback
    (["localhost:9090"], "127.0.0.1", True),
    (["LOCALHOST."], "127.0.0.1", True),
    (["[::1]:9090"], "::1", True),
    (["[::1]"], "127.0.0.1", True),
    (["admin.example.net:9090"], "127.0.0.1", True),
    (["ADMIN.example.net"], "127.0.0.1", True),
    (["192.0.2.10:80"], "127.0.0.1", True),  # in admin.hosts
    (["10.1.2.3:9090"], "10.1.2.3", True),  # the address the connection came in on
    (["[fd00::5]:9090"], "fd00::5", True),
    (["10.1.2.3:9090"], "10.9.9.9", False),
    (["evil.example:9090"], "127.0.0.1", False),  # a rebound name
    (["localhost.evil.example"], "127.0.0.1", False),
    (["sub.admin.example.net"], "127.0.0.1", False),
    (["127.0.0.1", "evil.example"], "127.0.0.1", False),  # two Host fields
    ([""], "127.0.0.1", False),
    (["127.0.0.1:x"], "127.0.0.1", False),
    (["[::1"], "127.0.0.1", False),
    (["user@127.0.0.1"], "127.0.0.1", False),
    (["0.0.0.0:9090"], "127.0.0.1", False),
])
def test_host_allowed(hosts, local, ok):
    assert host_allowed(hosts, ALLOWED, local) is ok


def test_allowed_names_take_the_listen_address_unless_it_is_a_wildcard():
    assert "10.0.0.5" in allowed_names([], "10.0.0.5")
    assert "admin.internal" in allowed_names([], "admin.internal")
    assert allowed_names([], "0.0.0.0") == frozenset() == allowed_names([], "::")


# --- merge patch (RFC 7396 appendix A) ---------------------------------------------------


@pytest.mark.parametrize("target,patch,result", [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch(target, patch, result):
    assert merge_patch(target, patch) == result


# --- preconditions and paths ---------------------------------------------------------------


@pytest.mark.parametrize("if_match,current,ok", [
    (None, None, True),
    (None, "v1", True),
    (["*"], "v1", True),
    (["*"], None, False),
    (["v1"], "v1", True),
    (["v0", "v1"], "v1", True),
    (["v0"], "v1", False),
    (["v1"], None, False),
])
def test_if_match(if_match, current, ok):
    if ok:
        PolicyFiles.check(if_match, current)
    else:
        with pytest.raises(Precondition):
            PolicyFiles.check(if_match, current)


@pytest.mark.parametrize("raw,bad", [
    ("/v1/tenants/shop/policy", False),
    ("/v1/tenants/shop/policy?x=..", False),
    ("/v1/tenants/../policy", True),
    ("/v1/tenants/./policy", True),
    ("/v1/tenants/%2e%2e/policy", True),
    ("/v1/tenants/%2E/policy", True),
    ("/v1/tenants/a%2Fb/policy", True),
    ("/v1/tenants/a%5cb/policy", True),
    ("/v1/tenants/a%00/policy", True),
])
def test_path_tricks(raw, bad):
    assert bool(path_trick(raw)) is bad


def test_policy_files_write_atomically_and_clean_up_leftovers(tmp_path: Path):
    files = PolicyFiles(tmp_path)
    files.write("shop", {"hosts": ["a"]})
    assert (tmp_path / "shop.json").read_text().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.json"]
    dead = tmp_path / ".shop.json.999999999.1.admin-tmp"  # no such pid
    live = tmp_path / f".shop.json.{__import__('os').getpid()}.2.admin-tmp"
    dead.write_text("{}")
    live.write_text("{}")
    assert files.remove_leftovers() == [dead.name]
    assert live.exists()
    assert files.delete("shop") and not files.delete("shop")


# --- [admin] in edge.toml --------------------------------------------------------------------


def _config(tmp_path: Path, admin: str, extra: str = "") -> Path:
    (tmp_path / "p").mkdir(exist_ok=True)
    path = tmp_path / "edge.toml"
    path.write_text(f'[policies]\ndirectory = "p"\n{extra}\n[admin]\n{admin}\n')
    return path


H = "sha256:" + "ab" * 32


def test_admin_section(tmp_path: Path):
    (tmp_path / "tokens.toml").write_text(f'tokens = [{{ hash = "{H}", tenant = "shop" }}]\n')
    cfg = load_config(_config(tmp_path, f'listen = "127.0.0.1:9191"\ntokens = [{{ hash = "{H.upper().replace("SHA256", "sha256")}", tenant = "*" }}]\n'
                                        'tokens_file = "tokens.toml"\naudit_log = "log/audit.jsonl"'))
    a = cfg.admin
    assert a.enabled and a.listen == ListenAddress("127.0.0.1", 9191)
    assert a.tokens == (AdminToken(bytes.fromhex("ab" * 32), "*"),)
    assert a.tokens_file == tmp_path / "tokens.toml" and a.audit_log == tmp_path / "log" / "audit.jsonl"
    assert (a.hosts, a.failed_auth_limit, a.failed_auth_window) == ((), 10, 60.0)
    a = load_config(_config(tmp_path, 'hosts = ["Admin.Example.net.", "[2001:db8::1]", "192.0.2.1"]\n'
                                      "failed_auth_limit = 5\nfailed_auth_window = 300")).admin
    assert (a.hosts, a.failed_auth_limit, a.failed_auth_window) == (
        ("admin.example.net", "2001:db8::1", "192.0.2.1"), 5, 300.0)


def test_a_tokens_file_may_not_name_a_reserved_tenant(tmp_path: Path):
    (tmp_path / "tokens.toml").write_text(f'tokens = [{{ hash = "{H}", tenant = "schema" }}]\n')
    with pytest.raises(ConfigError) as exc:
        read_tokens_file(tmp_path / "tokens.toml")
    assert 'tokens[0].tenant: expected a tenant id other than "schema"' in str(exc.value)


def test_no_admin_section_means_no_admin_listener(tmp_path: Path):
    (tmp_path / "p").mkdir()
    (tmp_path / "edge.toml").write_text('[policies]\ndirectory = "p"\n')
    assert load_config(tmp_path / "edge.toml").admin.enabled is False
    assert load_config(_config(tmp_path, "")).admin.listen == ListenAddress("127.0.0.1", 9090)
    assert load_config(_config(tmp_path, "enabled = false")).admin.enabled is False


@pytest.mark.parametrize("admin,extra,message", [
    ('listen = "127.0.0.1:8080"', "", "admin.listen: expected an address that is not a public listener"),
    ('listen = "0.0.0.0:8080"', "", "admin.listen: expected an address that is not a public listener"),
    ('listen = "127.0.0.1:0"', "[node]\nworkers = 2", "admin.listen: expected a fixed port when node.workers > 1"),
    ('listen = "nowhere"', "", "admin.listen: expected an address"),
    ('tokens = [{ hash = "abc", tenant = "*" }]', "", 'admin.tokens[0].hash: expected "sha256:" and 64 hex digits'),
    (f'tokens = [{{ hash = "{"ab" * 32}", tenant = "*" }}]', "", 'the "sha256:" prefix is missing'),
    (f'tokens = [{{ hash = "{H}", tenant = "../x" }}]', "", 'admin.tokens[0].tenant: expected "*" (operator) or a tenant id'),
    (f'tokens = [{{ hash = "{H}" }}]', "", "admin.tokens[0].tenant: expected"),
    (f'tokens = [{{ hash = "{H}", tenant = "*", token = "x" }}]', "", "admin.tokens[0].token: expected one of the keys"),
    ('tokens = "x"', "", "admin.tokens: expected an array of tables"),
    (f'tokens = [{{ hash = "{H}", tenant = "schema" }}]', "",
     'admin.tokens[0].tenant: expected a tenant id other than "schema" (reserved'),
    ('tokens_file = "missing.toml"', "", "missing.toml: cannot read the tokens file"),
    ('hosts = "admin.example"', "", "admin.hosts: expected an array of host names or IP addresses"),
    ('hosts = ["admin.example", "evil/x"]', "", 'found "evil/x" in it'),
    ('hosts = [1]', "", "found 1 in it"),
    ("failed_auth_limit = 0", "", "admin.failed_auth_limit: expected an integer from 1 to 10000, found 0"),
    ("failed_auth_window = 0.5", "", "admin.failed_auth_window: expected a number of seconds from 1 to 86400"),
    ("enabled = 1", "", "admin.enabled: expected true or false"),
    ("colour = 1", "", "admin.colour: expected one of the keys"),
])
def test_bad_admin_section(tmp_path: Path, admin, extra, message):
    with pytest.raises(ConfigError) as exc:
        load_config(_config(tmp_path, admin, extra))
    assert message in str(exc.value)


def test_admin_listen_problem():
    public = (ListenAddress("0.0.0.0", 8080),)
    assert admin_listen_problem(ListenAddress("127.0.0.1", 8080), public, 1)
    assert admin_listen_problem(ListenAddress("127.0.0.1", 9090), public, 1) is None
    assert admin_listen_problem(ListenAddress("127.0.0.1", 0), (ListenAddress("127.0.0.1", 0),), 1) is None


def test_policy_write_keeps_the_files_mode(tmp_path):
    import os

    from edge.admin.store import PolicyFiles

    files = PolicyFiles(tmp_path)
    files.write("shop", {"hosts": ["a.test"]})
    os.chmod(tmp_path / "shop.json", 0o640)
    files.write("shop", {"hosts": ["b.test"]})
    assert (tmp_path / "shop.json").stat().st_mode & 0o777 == 0o640
