"""The identify phase (edge/pipeline/identify.py): which tenant and path a
request target names, or the precise 4xx/5xx when it names none. RFC 9112
§3.2 for the request target, §3.2.2 for its absolute form."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from multidict import CIMultiDict

from edge.pipeline.context import Ctx
from edge.pipeline.identify import site
from edge.policy import PolicySet, parse_policy

POLICIES = PolicySet([parse_policy({"hosts": ["shop.example"], "origins": [{"url": "http://o.example"}]},
                                   tenant="shop", source="shop.json")])


def request(target: str, *hosts: str, version: tuple[int, int] = (1, 1)):
    headers = CIMultiDict(("Host", h) for h in hosts)
    return SimpleNamespace(raw_path=target, headers=headers, version=SimpleNamespace(major=version[0]))


CASES = [
    # (id, target, Host lines, version, refusal or (host, path, raw query))
    ("origin-form", "/a/b?x=1", ("shop.example",), (1, 1), ("shop.example", "/a/b", "x=1")),
    ("host-case-and-port", "/", ("SHOP.example:80",), (1, 1), None),
    ("9112-3.2.2-absolute-form-wins-over-host", "http://shop.example/p", ("other.example",), (1, 1),
     ("shop.example", "/p", "")),
    ("9112-3.2.2-absolute-form-https", "https://shop.example", (), (1, 1), ("shop.example", "/", "")),
    ("9112-3.2.2-absolute-form-other-scheme", "ftp://shop.example/p", (), (1, 1), (400, "bad-target")),
    ("9112-3.2-fragment", "/p#top", ("shop.example",), (1, 1), (400, "bad-target")),
    ("9112-3.2-no-host", "/", (), (1, 1), (400, "bad-host")),
    ("9112-3.2-two-hosts", "/", ("shop.example", "shop.example"), (1, 1), (400, "bad-host")),
    ("malformed-host", "/", ("shop example",), (1, 1), (400, "bad-host")),
    ("unknown-host", "/", ("other.example",), (1, 1), (421, "unknown-host")),
    ("malformed-path", "/a/%zz", ("shop.example",), (1, 1), (400, "bad-path")),
    ("9110-2.5-not-http-1", "/", ("shop.example",), (2, 0), (505, "bad-version")),
]


@pytest.mark.parametrize("target, hosts, version, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_site(target, hosts, version, expected):
    ctx = Ctx("r", 0.0, "GET", "192.0.2.1")
    refusal = site(request(target, *hosts, version=version), ctx, POLICIES)
    if expected is not None and isinstance(expected[0], int):
        assert refusal is not None and (refusal[0], refusal[2]) == expected
        return
    assert refusal is None and ctx.tenant == "shop" and ctx.policy is not None
    if expected is not None:
        assert (ctx.host, ctx.path, ctx.raw_query) == expected


HTTPS_POLICIES = PolicySet([
    parse_policy({"hosts": ["shop.example", "*.shop.example"], "origins": [{"url": "http://o.example"}],
                  "tls": {"redirect_http": True, "hsts": {"max_age": 600}}}, tenant="shop", source="shop.json"),
    parse_policy({"hosts": ["blog.example"], "origins": [{"url": "http://o.example"}]}, tenant="blog",
                 source="blog.json"),
])
TLS13 = "TLSv1.3"

HTTPS_CASES = [
    # (id, target, Host, the connection's (server name, its tenant) or None for plain HTTP,
    #  refusal (status, detail, Location) or the answer fields over HTTPS)
    ("https-hsts", "/a", "shop.example", ("shop.example", "shop"), (("Strict-Transport-Security", "max-age=600"),)),
    ("https-same-tenant-other-name", "/a", "www.shop.example", ("shop.example", "shop"),
     (("Strict-Transport-Security", "max-age=600"),)),
    ("9110-15.5.20-another-tenants-host", "/a", "blog.example", ("shop.example", "shop"), (421, "misdirected", None)),
    ("9110-15.5.20-host-of-sni-tenant-only", "/a", "shop.example", ("blog.example", "blog"), (421, "misdirected", None)),
    ("no-sni-any-host", "/a", "blog.example", (None, None), ()),  # no name: nothing to be misdirected from
    ("sni-of-nobody", "/a", "blog.example", ("other.example", None), ()),  # the default certificate's connection
    ("no-hsts-for-blog", "/a", "blog.example", ("blog.example", "blog"), ()),
    ("plain-redirect", "/a/b?x=1&y=%20", "WWW.shop.example:8080", None,
     (308, "https-redirect", "https://www.shop.example/a/b?x=1&y=%20")),
    ("plain-redirect-absolute-form", "http://shop.example/p?q", "other.example", None,
     (308, "https-redirect", "https://shop.example/p?q")),
    ("8555-8.3-acme-challenge-not-redirected", "/.well-known/acme-challenge/tok", "shop.example", None, ()),
    ("plain-no-redirect-for-blog", "/a", "blog.example", None, ()),
    ("plain-unknown-host-still-421", "/a", "other.example", None, (421, "unknown-host", None)),
]


@pytest.mark.parametrize("target, host, tls, expected", [c[1:] for c in HTTPS_CASES], ids=[c[0] for c in HTTPS_CASES])
def test_site_over_https_and_plain_http(target, host, tls, expected):
    from edge.tls.listener import TlsSession

    session = None if tls is None else TlsSession(TLS13, *tls)
    ctx = Ctx("r", 0.0, "GET", "192.0.2.1", tls=session)
    req = request(target, host)
    refusal = site(req, ctx, HTTPS_POLICIES)
    if expected and isinstance(expected[0], int):
        assert refusal is not None and (refusal[0], refusal[2]) == expected[:2]
        assert (refusal[3]["Location"] if len(refusal) > 3 else None) == expected[2]
        return
    assert refusal is None
    assert getattr(req, "answer_fields", ()) == expected
