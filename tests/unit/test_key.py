"""Cache keys (edge/cache/key.py): RFC 3986 normalisation, query filtering,
host identity, primary-key collision resistance and Vary (RFC 9111 §4.1)."""
from __future__ import annotations

import random
import string
from urllib.parse import unquote_to_bytes

import pytest
from multidict import CIMultiDict

from edge.cache import key as keymod
from edge.cache.key import (
    SEP,
    VARIANT_SEP,
    KeyOptions,
    host_key,
    normalise_path,
    normalise_query,
    primary_key,
    tenant_prefix,
    variant_key,
    vary_key,
    vary_names,
)

DEFAULT = KeyOptions()

# --- normalise_path ----------------------------------------------------------

PATHS = [
    # (raw, expected, id)
    ("/", "/", "root"),
    ("/static/app.min.js", "/static/app.min.js", "plain-fast-path"),
    ("/a/b/", "/a/b/", "trailing-slash-kept"),
    ("/a//b", "/a/b", "double-slash"),
    ("///a////b//", "/a/b/", "many-slashes"),
    ("//", "/", "only-slashes"),
    ("/a/./b", "/a/b", "dot-segment"),
    ("/a/.", "/a/", "trailing-dot"),  # RFC 3986 §5.2.4 example shape
    ("/a/b/..", "/a/", "trailing-dotdot"),
    ("/a/b/../c", "/a/c", "dotdot"),
    ("/a/b/c/./../../g", "/a/g", "rfc3986-5.2.4-example"),
    ("/..", "/", "dotdot-at-root"),
    ("/../../../etc/passwd", "/etc/passwd", "dotdot-never-above-root"),
    ("/a/%2e%2e/b", "/b", "encoded-dotdot-lower"),
    ("/a/%2E%2E/b", "/b", "encoded-dotdot-upper"),
    ("/a/.%2E/b", "/b", "half-encoded-dotdot"),
    ("/a/%2e/b", "/a/b", "encoded-dot"),
    ("/%2e%2e/%2e%2e/x", "/x", "encoded-dotdot-at-root"),
    ("/.well-known/acme", "/.well-known/acme", "dot-prefixed-name-kept"),
    ("/a/...", "/a/...", "three-dots-is-a-name"),
    ("/a/..b/c", "/a/..b/c", "dotdot-prefix-is-a-name"),
    ("/a%2Fb", "/a%2Fb", "encoded-slash-kept"),
    ("/a%2fb", "/a%2Fb", "encoded-slash-hex-upper"),
    ("/a%2F..%2Fb", "/a%2F..%2Fb", "encoded-slash-not-a-separator"),
    ("/%7Euser", "/~user", "unreserved-tilde-decoded"),
    ("/%41%62%2D%2e%5F%30", "/Ab-._0", "unreserved-decoded"),
    ("/a%3ab", "/a%3Ab", "reserved-hex-upper"),
    ("/a%3Ab", "/a%3Ab", "reserved-kept"),
    ("/a%20b", "/a%20b", "space-encoded-kept"),
    ("/a b", "/a%20b", "raw-space-encoded"),
    ("/caf\u00e9", "/caf%C3%A9", "raw-non-ascii-encoded-utf8"),
    ("/caf%c3%a9", "/caf%C3%A9", "encoded-non-ascii-upper"),
    ("/\udcff", "/%FF", "surrogateescaped-byte"),
    ("/a%252e%252e/b", "/a%252e%252e/b", "no-double-decoding"),
    ("/a\\b", "/a%5Cb", "backslash-encoded"),
    ("/a%5cb", "/a%5Cb", "encoded-backslash-upper"),
    ("/a\\..\\b", "/a%5C..%5Cb", "backslash-never-a-separator"),
    ("/a%0Ab", "/a%0Ab", "encoded-newline-stays-encoded"),
    ("/a;b=c/d", "/a;b=c/d", "sub-delims-literal"),
    ("/a?b", "/a%3Fb", "question-mark-encoded"),
    ("/a#b", "/a%23b", "hash-encoded"),
]


@pytest.mark.parametrize("raw,expected", [p[:2] for p in PATHS], ids=[p[2] for p in PATHS])
def test_normalise_path(raw: str, expected: str) -> None:
    assert normalise_path(raw) == expected


INVALID_PATHS = [
    ("", "empty"),
    ("*", "asterisk-form"),
    ("a/b", "relative"),
    ("http://a.com/x", "absolute-form"),
    ("/a%00b", "encoded-nul"),
    ("/a\x00b", "raw-nul"),
    ("/a\nb", "raw-newline"),
    ("/a\rb", "raw-cr"),
    ("/a\tb", "raw-tab"),
    ("/a\x7fb", "raw-del"),
    ("/a%zzb", "bad-hex"),
    ("/a%4", "truncated-escape"),
    ("/a%", "lone-percent"),
    ("/a%g1", "non-hex-first-digit"),
    ("/\ud800", "lone-surrogate"),
]


@pytest.mark.parametrize("raw", [p[0] for p in INVALID_PATHS], ids=[p[1] for p in INVALID_PATHS])
def test_normalise_path_rejects(raw: str) -> None:
    assert normalise_path(raw) is None


@pytest.mark.parametrize(
    "raw,limit,ok",
    [
        ("/" + "a" * 8191, 8192, True),
        ("/" + "a" * 8192, 8192, False),
        ("/abc", 4, True),
        ("/abcd", 4, False),
        ("/\u00e9\u00e9", 4, False),  # 3 chars raw, 13 once encoded
    ],
    ids=["at-default-limit", "over-default-limit", "at-limit", "over-limit", "over-limit-after-encoding"],
)
def test_normalise_path_limit(raw: str, limit: int, ok: bool) -> None:
    assert (normalise_path(raw, limit) is not None) is ok


# Pieces an attacker combines to climb out of a directory or smuggle bytes.
HOSTILE_PIECES = [
    "/", "//", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2F", "%2f", "\\", "%5c",
    "a", "b", "~", "%7e", "%25", "%", "%0a", "\n", "%00", " ", "\u00e9", ";", "?", "#",
]


def _random_paths(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return ["/" + "".join(rnd.choice(HOSTILE_PIECES) for _ in range(rnd.randint(0, 12))) for _ in range(n)]


def test_normalised_paths_are_canonical_ascii_and_idempotent() -> None:
    for raw in _random_paths(5000, seed=1):
        out = normalise_path(raw)
        if out is None:
            continue
        assert out.startswith("/") and out.isascii(), raw
        assert not any(c < " " or c == "\x7f" for c in out), raw
        assert "//" not in out, raw
        segments = out.split("/")
        assert "." not in segments and ".." not in segments, raw
        assert normalise_path(out) == out, raw


def test_traversal_never_escapes_root_or_reaches_another_tenant() -> None:
    # Whatever the path, a key of tenant "a" never carries tenant "b"'s prefix
    # and never resolves to anything outside the root "/".
    for raw in _random_paths(2000, seed=2) + ["/../b\nexample.com\n/secret", "/%2e%2e/%2e%2e/b"]:
        out = normalise_path(raw)
        if out is None:
            continue
        k = primary_key("a", "example.com", out, "", DEFAULT, {}, {})
        assert k.startswith(tenant_prefix("a"))
        assert not k.startswith(tenant_prefix("b"))
        assert k.split(SEP)[2] == out


# --- normalise_query ---------------------------------------------------------

QUERIES = [
    # (query, opts, expected, id)
    ("", DEFAULT, "", "empty"),
    ("a=1", DEFAULT, "a=1", "single"),
    ("b=2&a=1", DEFAULT, "a=1&b=2", "sorted-by-name"),
    ("b=2&a=1", KeyOptions(sort_params=False), "b=2&a=1", "unsorted-when-disabled"),
    ("a=2&a=1&a=3", DEFAULT, "a=2&a=1&a=3", "duplicates-keep-their-order"),
    ("b=1&a=2&b=0&a=1", DEFAULT, "a=2&a=1&b=1&b=0", "sort-is-stable"),
    ("utm_source=x&utm_medium=y&id=1", DEFAULT, "id=1", "utm-prefix-dropped"),
    ("fbclid=abc&id=1&gclid=z&_ga=1", DEFAULT, "id=1", "tracking-dropped"),
    ("utm=1", DEFAULT, "utm=1", "prefix-needs-underscore"),
    ("FBCLID=1", DEFAULT, "FBCLID=1", "names-case-sensitive"),
    ("utm%5Fsource=x&id=1", DEFAULT, "id=1", "encoded-tracking-name-dropped"),
    ("fbclid", DEFAULT, "", "valueless-tracking-dropped"),
    ("utm_source=x", DEFAULT, "", "all-dropped-is-empty"),
    ("session=1&id=2", KeyOptions(drop_params=("session",)), "id=2", "drop-params"),
    ("sx=1&sy=2&id=2", KeyOptions(drop_params=("s*",)), "id=2", "drop-params-prefix"),
    ("a=1&b=2&c=3", KeyOptions(keep_params=("c", "a")), "a=1&c=3", "keep-list"),
    ("v1=1&v2=2&x=3", KeyOptions(keep_params=("v*",)), "v1=1&v2=2", "keep-list-prefix"),
    ("a=1&b=2", KeyOptions(keep_params=()), "", "keep-nothing"),
    ("utm_id=1&a=1", KeyOptions(keep_params=("utm_id", "a")), "a=1", "drop-wins-over-keep"),
    ("a=1", KeyOptions(tracking_params=()), "a=1", "no-tracking"),
    ("x=1&a=1", KeyOptions(drop_params=("*",)), "", "drop-everything"),
    ("a&b=&c", DEFAULT, "a&b=&c", "valueless-keep-form"),
    ("a=1&&b=2&", DEFAULT, "a=1&b=2", "empty-pieces-dropped"),
    ("a=%7e&b=%7E&c=~", DEFAULT, "a=~&b=~&c=~", "unreserved-decoded"),
    ("q=%e2%82%ac", DEFAULT, "q=%E2%82%AC", "hex-upper"),
    ("q=\u20ac", DEFAULT, "q=%E2%82%AC", "raw-non-ascii-encoded"),
    ("q=a+b", DEFAULT, "q=a+b", "plus-stays"),
    ("q=a%2bb", DEFAULT, "q=a%2Bb", "encoded-plus-stays-encoded"),
    ("q=a%20b", DEFAULT, "q=a%20b", "encoded-space"),
    ("q=a b", DEFAULT, "q=a%20b", "raw-space-encoded"),
    ("q=a%26b=c", DEFAULT, "q=a%26b=c", "encoded-ampersand-is-data"),
    ("q=a=b", DEFAULT, "q=a=b", "equals-in-value"),
    ("q=%zz&r=%25zz", DEFAULT, "q=%zz&r=%25zz", "malformed-escape-kept-distinct"),
    ("q=%zz%7e%41%c3", DEFAULT, "q=%zz%7e%41%c3", "malformed-part-kept-verbatim"),
    ("q=%%41%41", DEFAULT, "q=%%41%41", "no-escape-forged-next-to-malformed"),
    ("q=%AA", DEFAULT, "q=%AA", "real-escape-differs-from-forged"),
    ("q=%zz \u00e9&%7e=%7e", DEFAULT, "q=%zz%20%C3%A9&~=~", "malformed-part-still-ascii"),
    ("q=%00", DEFAULT, "q=%00", "nul-stays-encoded"),
    ("q=a\nb", DEFAULT, "q=a%0Ab", "raw-control-encoded"),
    ("path=/a?b", DEFAULT, "path=/a?b", "slash-and-question-literal"),
    ("%61=1", DEFAULT, "a=1", "encoded-name-decoded"),
]


@pytest.mark.parametrize(
    "query,opts,expected", [q[:3] for q in QUERIES], ids=[q[3] for q in QUERIES]
)
def test_normalise_query(query: str, opts: KeyOptions, expected: str) -> None:
    assert normalise_query(query, opts) == expected


@pytest.mark.parametrize(
    "variants",
    [
        ["a=~&b=1", "b=1&a=%7E", "b=1&a=%7e", "a=%7e&b=1&utm_source=mail", "fbclid=1&b=1&&a=~"],
        ["q=%C3%A9", "q=%c3%a9", "q=\u00e9"],
    ],
    ids=["tilde-order-tracking", "utf8-forms"],
)
def test_query_variants_collapse(variants: list[str]) -> None:
    assert len({normalise_query(v, DEFAULT) for v in variants}) == 1


def test_query_normalisation_is_idempotent_ascii() -> None:
    rnd = random.Random(3)
    pieces = ["a", "b", "=", "&", "%", "%41", "%2b", "+", " ", "utm_x", "\u00e9", "%zz", "~", "?", "A", "%a"]
    plain = KeyOptions(tracking_params=(), sort_params=False)
    for _ in range(20_000):
        q = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 10)))
        out = normalise_query(q, DEFAULT)
        assert out.isascii() and SEP not in out, q
        assert normalise_query(out, DEFAULT) == out, q
        # Meaning is preserved for a lenient decoder (Python's, like WHATWG,
        # keeps a malformed "%" literal): canonicalising never changes bytes.
        before = [unquote_to_bytes(p) for p in q.split("&") if p]
        after = [unquote_to_bytes(p) for p in normalise_query(q, plain).split("&") if p]
        assert before == after, q


def test_param_filter_built_once_per_options() -> None:
    opts = KeyOptions(drop_params=("x*",))
    assert keymod.param_filter(opts) is keymod.param_filter(opts)
    # An equal but distinct object (a reloaded policy) reuses the compiled filter.
    assert keymod.param_filter(KeyOptions(drop_params=("x*",))) is keymod.param_filter(opts)


# --- host_key ----------------------------------------------------------------

HOSTS = [
    ("example.com", "example.com", "plain"),
    ("Example.COM", "example.com", "lower-cased"),
    ("example.com.", "example.com", "trailing-dot"),
    ("example.com:80", "example.com", "port-80"),
    ("example.com:443", "example.com", "port-443"),
    ("example.com:8080", "example.com", "any-port"),
    ("example.com.:8443", "example.com", "trailing-dot-and-port"),
    ("example.com:", "example.com", "empty-port"),
    ("a-b_c.example.com", "a-b_c.example.com", "hyphen-underscore"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example", "punycode"),
    ("192.0.2.1", "192.0.2.1", "ipv4"),
    ("192.0.2.1:8080", "192.0.2.1", "ipv4-port"),
    ("[::1]", "[::1]", "ipv6"),
    ("[::1]:8080", "[::1]", "ipv6-port"),
    ("[2001:DB8:0:0::1]", "[2001:db8::1]", "ipv6-canonical"),
    ("localhost", "localhost", "single-label"),
]


@pytest.mark.parametrize("raw,expected", [h[:2] for h in HOSTS], ids=[h[2] for h in HOSTS])
def test_host_key(raw: str, expected: str) -> None:
    assert host_key(raw) == expected


HOSTILE_HOSTS = [
    ("", "empty"),
    (".", "only-dot"),
    ("example.com..", "two-trailing-dots"),
    ("a..b.com", "empty-label"),
    (".a.com", "leading-dot"),
    (" example.com", "leading-space"),
    ("example.com ", "trailing-space"),
    ("exa mple.com", "inner-space"),
    ("a.com\tb", "tab"),
    ("a.com\r\nX-Injected: 1", "crlf"),
    ("a.com\x00", "nul"),
    ("user@a.com", "userinfo"),
    ("user:pw@a.com", "userinfo-password"),
    ("a.com, b.com", "two-host-lines-combined"),
    ("a.com,b.com", "comma"),
    ("a.com/path", "slash"),
    ("a.com?x", "query"),
    ("a.com#x", "fragment"),
    ("a%2ecom", "percent-encoded"),
    ("a.com;x", "sub-delim"),
    ("a.com\\b", "backslash"),
    ("b\u00fccher.example", "raw-unicode"),
    ("a.com:port", "non-numeric-port"),
    ("a.com:99999", "port-out-of-range"),
    ("a.com:123456", "port-too-long"),
    ("a.com:-1", "negative-port"),
    ("a.com:80:80", "two-ports"),
    ("::1", "ipv6-without-brackets"),
    ("[::1", "unclosed-bracket"),
    ("[::1]x", "junk-after-bracket"),
    ("[::g]", "bad-ipv6"),
    ("[192.0.2.1]", "ipv4-in-brackets"),
    ("[fe80::1%25eth0]", "zone-id"),
    ("[v1.fe]", "ipvfuture"),
    ("a" * 64 + ".com", "label-over-63"),
    (".".join(["a" * 63] * 4) + ".com", "over-255"),
    ("a" * 10_000, "huge"),
]


@pytest.mark.parametrize("raw", [h[0] for h in HOSTILE_HOSTS], ids=[h[1] for h in HOSTILE_HOSTS])
def test_host_key_rejects(raw: str) -> None:
    assert host_key(raw) is None


def test_host_key_is_memoised_but_bounded() -> None:
    assert host_key.cache_info().maxsize == 4096
    host_key("memo.example")
    hits = host_key.cache_info().hits
    host_key("memo.example")
    assert host_key.cache_info().hits == hits + 1


# --- primary_key -------------------------------------------------------------

def test_primary_key_layout_starts_with_tenant() -> None:
    k = primary_key("t1", "example.com", "/a", "b=1", DEFAULT, {}, {})
    assert k == "t1\nexample.com\n/a\nb=1"
    assert k.startswith(tenant_prefix("t1"))


@pytest.mark.parametrize(
    "a,b",
    [
        (("t1", "example.com", "/x", ""), ("t2", "example.com", "/x", "")),
        (("t", "a.com", "/x", ""), ("t", "b.com", "/x", "")),
        (("t", "a.com", "/x", ""), ("t", "a.com", "/y", "")),
        (("t", "a.com", "/x", "a=1"), ("t", "a.com", "/x", "a=2")),
        (("t", "a.com", "/x", ""), ("t", "a.com", "/x/", "")),
        (("t", "a.com", "/x", "a"), ("t", "a.com", "/x", "a=")),
    ],
    ids=["tenant", "host", "path", "query", "trailing-slash", "valueless-vs-empty"],
)
def test_primary_key_differs(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert primary_key(*a, DEFAULT, {}, {}) != primary_key(*b, DEFAULT, {}, {})


def test_same_url_different_tenants_never_share_a_key() -> None:
    ka = primary_key("a", "shared.example", "/index.html", "", DEFAULT, {}, {})
    kb = primary_key("b", "shared.example", "/index.html", "", DEFAULT, {}, {})
    assert ka != kb
    assert ka.startswith(tenant_prefix("a")) and not ka.startswith(tenant_prefix("b"))
    # "a" is a prefix of "ab" as a string, but not as a key prefix.
    assert not primary_key("ab", "x", "/", "", DEFAULT, {}, {}).startswith(tenant_prefix("a"))


@pytest.mark.parametrize(
    "fields",
    [
        ("t\n", "a.com", "/", ""),
        ("t", "a.com\n/x", "/", ""),
        ("t", "a.com", "/x\ny", ""),
        ("t", "a.com", "/x", "q\n"),
    ],
    ids=["tenant", "host", "path", "query"],
)
def test_primary_key_refuses_unnormalised_fields(fields: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        primary_key(*fields, DEFAULT, {}, {})


def test_tenant_prefix_refuses_separator() -> None:
    with pytest.raises(ValueError):
        tenant_prefix("a\nb")


OPTS_HC = KeyOptions(headers=("accept-language", "x-device"), cookies=("ab", "Region"))


@pytest.mark.parametrize(
    "headers_a,cookies_a,headers_b,cookies_b",
    [
        ({}, {}, {"accept-language": ""}, {}),
        ({"accept-language": "de"}, {}, {"x-device": "de"}, {}),
        ({"accept-language": "a", "x-device": "b"}, {}, {"accept-language": "ab"}, {}),
        ({"accept-language": "1:a"}, {}, {"accept-language": "1", "x-device": "a"}, {}),
        ({}, {"ab": "1"}, {}, {"Region": "1"}),
        ({}, {"ab": ""}, {}, {}),
        ({"x-device": "~"}, {}, {}, {}),
        ({"accept-language": "de"}, {}, {}, {"ab": "de"}),
    ],
    ids=[
        "absent-vs-empty-header", "value-in-other-header", "split-vs-joined",
        "value-mimics-length-prefix", "cookie-names", "absent-vs-empty-cookie",
        "value-mimics-absent-marker", "header-vs-cookie",
    ],
)
def test_primary_key_extras_unambiguous(
    headers_a: dict[str, str], cookies_a: dict[str, str], headers_b: dict[str, str], cookies_b: dict[str, str]
) -> None:
    a = primary_key("t", "a.com", "/", "", OPTS_HC, headers_a, cookies_a)
    b = primary_key("t", "a.com", "/", "", OPTS_HC, headers_b, cookies_b)
    assert a != b
    assert a.startswith(tenant_prefix("t")) and b.startswith(tenant_prefix("t"))


def test_primary_key_header_lookup_is_case_insensitive_and_combines_lines() -> None:
    opts = KeyOptions(headers=("accept-language",))
    one = CIMultiDict([("Accept-Language", "de,  en")])
    two = CIMultiDict([("accept-language", "de"), ("ACCEPT-LANGUAGE", " en ")])
    assert primary_key("t", "a", "/", "", opts, one, {}) == primary_key("t", "a", "/", "", opts, two, {})


def test_primary_key_collision_resistance_property() -> None:
    """Many random field combinations, separators and markers included: the
    key must be injective over (tenant, host, path, query, header values,
    cookie values, option names)."""
    rnd = random.Random(20240601)
    alphabet = "ab:~\n\t ,h0c1=;" + "\u00e9"
    tenants = ["t", "tt", "t1", "a", "ab"]
    raw_hosts = ["a.com", "A.com", "a.com.", "b.com", "ab.com", "[::1]", "a.co"]
    raw_paths = ["/", "/a", "/a/", "//a", "/%61", "/a\\b", "/a%5cb", "/a/../b", "/b", "/h1:a"]
    raw_queries = ["", "a=1", "a=1&b=2", "b=2&a=1", "a", "a=", "utm_source=x", "a=%7e", "a=~", "h=1"]
    opt_choices = [
        DEFAULT,
        KeyOptions(headers=("x",)),
        KeyOptions(headers=("x", "y")),
        KeyOptions(cookies=("x",)),
        KeyOptions(headers=("y",), cookies=("x",)),
    ]

    def value() -> str | None:
        if rnd.random() < 0.25:
            return None
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 5)))

    seen: dict[str, tuple[object, ...]] = {}
    for _ in range(30_000):
        tenant = rnd.choice(tenants)
        host = host_key(rnd.choice(raw_hosts))
        path = normalise_path(rnd.choice(raw_paths))
        query = normalise_query(rnd.choice(raw_queries), DEFAULT)
        assert host is not None and path is not None
        opts = rnd.choice(opt_choices)
        headers = {n: v for n in opts.headers if (v := value()) is not None}
        cookies = {n: v for n in opts.cookies if (v := value()) is not None}
        k = primary_key(tenant, host, path, query, opts, headers, cookies)
        identity = (
            tenant, host, path, query,
            # header values compare after RFC 9110 list whitespace normalisation
            tuple((n, keymod.field_value(headers, n)) for n in opts.headers),
            tuple((n, cookies.get(n)) for n in opts.cookies),
        )
        assert seen.setdefault(k, identity) == identity, (k, identity, seen[k])
        assert k.startswith(tenant_prefix(tenant))
    assert len(seen) > 5_000  # the generator really explored the space


# --- Vary (RFC 9111 §4.1) ----------------------------------------------------

VARY_NAMES = [
    (None, (), "absent"),
    ("", (), "empty"),
    ("  ,  ", (), "only-commas"),
    ("Accept-Encoding", ("accept-encoding",), "single-lower-cased"),
    ("User-Agent, Accept-Encoding", ("accept-encoding", "user-agent"), "sorted"),
    ("accept-encoding, Accept-Encoding ,ACCEPT-ENCODING", ("accept-encoding",), "unique"),
    ("*", None, "star"),
    ("Accept, *", None, "star-among-names"),
    ("Accept,\t Origin", ("accept", "origin"), "tabs"),
]


@pytest.mark.parametrize("header,expected", [v[:2] for v in VARY_NAMES], ids=[v[2] for v in VARY_NAMES])
def test_vary_names(header: str | None, expected: tuple[str, ...] | None) -> None:
    """RFC 9111 §4.1: "*" never matches; field names are case-insensitive."""
    assert vary_names(header) == expected


NAMES = ("x-device", "accept-language")

VARY_SAME = [
    (CIMultiDict([("X-Device", "gzip, br")]), CIMultiDict([("x-device", "gzip,br")]), "space-after-comma"),
    (CIMultiDict([("X-Device", " gzip ,  br ")]), CIMultiDict([("x-device", "gzip, br")]), "ows-collapsed"),
    (CIMultiDict([("X-Device", "gzip"), ("X-Device", "br")]), CIMultiDict([("X-Device", "gzip, br")]), "field-lines-combined"),
    (CIMultiDict([("Accept-Language", "de"), ("X-Other", "1")]), CIMultiDict([("accept-language", "de")]), "other-headers-ignored"),
    ({"x-device": "gzip"}, CIMultiDict([("X-Device", "gzip")]), "plain-mapping"),
]


@pytest.mark.parametrize("a,b", [v[:2] for v in VARY_SAME], ids=[v[2] for v in VARY_SAME])
def test_vary_key_matches(a: object, b: object) -> None:
    """RFC 9111 §4.1: values may be normalised (whitespace, combined lines) before comparison."""
    assert vary_key(NAMES, a) == vary_key(NAMES, b)  # type: ignore[arg-type]


VARY_DIFFERENT = [
    ({}, {"x-device": ""}, "absent-vs-empty"),
    ({"x-device": "gzip"}, {"x-device": "br"}, "different-value"),
    ({"x-device": "gzip"}, {"accept-language": "gzip"}, "value-under-other-name"),
    ({"x-device": "gzip, br"}, {"x-device": "br, gzip"}, "order-matters"),
    ({"x-device": "a", "accept-language": "b"}, {"x-device": "a1:b"}, "mimic-length-prefix"),
    ({"x-device": "Gzip"}, {"x-device": "gzip"}, "value-case-kept"),
]


@pytest.mark.parametrize("a,b", [v[:2] for v in VARY_DIFFERENT], ids=[v[2] for v in VARY_DIFFERENT])
def test_vary_key_distinguishes(a: dict[str, str], b: dict[str, str]) -> None:
    """RFC 9111 §4.1: an absent header only matches absence."""
    assert vary_key(NAMES, a) != vary_key(NAMES, b)


def test_vary_key_empty_names_and_name_sets() -> None:
    assert vary_key((), {"x-device": "gzip"}) == ""
    h = {"a": "1", "b": "1"}
    assert vary_key(("a",), h) != vary_key(("b",), h)
    assert vary_key(("a", "b"), h) != vary_key(("a",), h)


def test_a_variant_is_stored_under_its_primary_key_and_its_vary_key() -> None:
    key = primary_key("t", "h.example", "/p", "", DEFAULT, {}, {})
    assert variant_key(key, (), {"accept-language": "de"}) == key  # nothing varies: the primary key
    names = ("accept-language",)
    de = variant_key(key, names, {"accept-language": "de"})
    assert de == key + VARIANT_SEP + vary_key(names, {"accept-language": "de"})
    assert de != variant_key(key, names, {"accept-language": "fr"})


def test_vary_key_property_injective() -> None:
    rnd = random.Random(7)
    alphabet = string.ascii_lowercase[:3] + ":~,0 1\n"
    seen: dict[str, tuple[object, ...]] = {}
    for _ in range(20_000):
        h = {}
        for n in NAMES:
            if rnd.random() < 0.7:
                h[n] = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 4)))
        k = vary_key(NAMES, h)
        # The identity is the value after §4.1 normalisation.
        ident = tuple(keymod.field_value(h, n) for n in NAMES)
        assert seen.setdefault(k, ident) == ident


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("gzip, deflate, br", "br;q=1.0, gzip;q=0.8", True),  # both "br": one entry, not one per spelling
        ("gzip, deflate", "gzip", True),
        ("gzip", "br", False),
        (None, "identity", True),
        ("deflate", None, True),  # nothing the edge makes: identity
    ],
)
def test_accept_encoding_is_keyed_by_bucket(a, b, same):
    ha = {} if a is None else {"accept-encoding": a}
    hb = {} if b is None else {"accept-encoding": b}
    assert (vary_key(("accept-encoding",), ha) == vary_key(("accept-encoding",), hb)) is same
