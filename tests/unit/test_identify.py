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
