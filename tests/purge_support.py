"""Random cache keys and purge specs for the purge tests, and what a spec
means stated on the parts of a key (not on strings), to check the key
ranges and barriers against."""
from __future__ import annotations

import random

from edge.cache.key import KeyOptions, primary_key
from edge.cache.purge import PurgeSpec, Target

TENANTS = ("shop", "shop2", "sho")
HOSTS = ("a.example", "a.example.de", "b.example", "a.exampl")
PATHS = ("/", "/a", "/a/", "/a/b", "/ab", "/a%20b", "/b", "/static/x.css")
QUERIES = ("", "a=1", "a=1&b=2", "a=10", "b=1", "a=1&a=2")
KEYED = KeyOptions(headers=("accept-language",), cookies=("lang",))


def random_key(rng: random.Random) -> tuple[str, tuple[str, str, str, str]]:
    """A key as the pipeline writes it: primary (with extras or not), a Vary
    variant of it, or both; returned with its parts."""
    parts = (rng.choice(TENANTS), rng.choice(HOSTS), rng.choice(PATHS), rng.choice(QUERIES))
    opts = KEYED if rng.random() < 0.4 else KeyOptions()
    headers = {"accept-language": rng.choice(["de", "en", "a\nb\x1f"])} if rng.random() < 0.7 else {}
    cookies = {"lang": rng.choice(["x", "\U0010ffff", ""])} if rng.random() < 0.5 else {}
    key = primary_key(*parts, opts, headers, cookies)
    if rng.random() < 0.4:
        key += "\x1f" + rng.choice(["", "15:accept-encoding2:br", "1:x~"])
    return key, parts


def random_spec(rng: random.Random) -> PurgeSpec:
    kind = rng.choice(["urls", "prefixes", "all"])
    tenant = rng.choice(TENANTS)
    soft = rng.random() < 0.5
    if kind == "all":
        return PurgeSpec(tenant, all=True, soft=soft)

    def host():
        return rng.choice(HOSTS + (None, None))

    if kind == "urls":
        return PurgeSpec(tenant, urls=tuple(Target(host(), rng.choice(PATHS), rng.choice(QUERIES)) for _ in range(rng.randint(1, 3))), soft=soft)
    prefixes = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(PATHS)
        if rng.random() < 0.5:
            prefixes.append(Target(host(), path[: rng.randint(1, len(path))], None))
        else:
            q = rng.choice(QUERIES)
            prefixes.append(Target(host(), path, q[: rng.randint(0, len(q))]))
    return PurgeSpec(tenant, prefixes=tuple(prefixes), soft=soft)


def intended(spec: PurgeSpec, parts: tuple[str, str, str, str]) -> bool:
    """What a spec means, stated on the parts of a key rather than on strings."""
    tenant, host, path, query = parts
    if tenant != spec.tenant:
        return False
    if spec.all:
        return True
    for u in spec.urls:
        if u.host in (None, host) and u.path == path and u.query == query:
            return True
    for p in spec.prefixes:
        if p.host not in (None, host):
            continue
        if p.query is None and path.startswith(p.path):
            return True
        if p.query is not None and path == p.path and query.startswith(p.query):
            return True
    return False


def selected(ranges, key):
    return any(lo <= key < hi for lo, hi in ranges)
