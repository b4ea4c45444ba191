"""Purges: what an operator asks to remove from the cache, and which keys
that is. Removing them from both tiers without scans is ``purger.py``;
keeping a purged entry from coming back is ``barriers.py``.

The pieces, in the order a purge goes through them:

``parse_purge``  a request body (JSON already decoded) -> ``PurgeSpec``, or
                 ``PurgeError`` naming every bad field (``urls[2]``). URLs and
                 prefixes are normalised exactly as requests are keyed.
``PurgeSpec``    frozen and serialisable (``to_json``/``from_json``) so that
                 one worker can hand a purge to its siblings.
``ranges``       the key ranges a spec covers (key layout: ``edge.cache.key``):
                 a URL is ``[base, base + "\\x20")`` with ``base =
                 tenant\\nhost\\npath\\nquery``, which holds the entry, its key
                 extras (``base\\n...``) and Vary variants (``base\\x1f...``)
                 but not ``?a=1&b=2`` when purging ``?a=1``; a prefix is
                 ``[tenant\\nhost\\n + prefix, ... + "\\U0010ffff")``; all is
                 ``[tenant\\n, tenant\\n\\U0010ffff)``. Path-only URLs and
                 prefixes apply to every host the tenant has entries for,
                 found by a skip scan over each tier's sorted index.
``Barriers``     (``barriers.py``) kept by the TieredStore: a purge first
                 records "nothing fetched before time T and covered by this
                 spec may be stored or served".
``Purger``       (``purger.py``) ``apply(spec)``: barrier, then the memory
                 tier, then the disk tier.

Tags come from the origin's ``Surrogate-Key`` (space-separated) and
``Cache-Tag`` (comma-separated) response fields (``tag_extra``); the
pipeline stores them in ``Meta.extra["tags"]`` and never forwards the fields.
A tag is 1 to 1024 visible ASCII characters without whitespace, compared
case-sensitively; at most 256 per response (more are ignored).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from edge.cache.key import SEP, host_key, normalise_path, normalise_query, tenant_prefix

if TYPE_CHECKING:
    from edge.policy.model import TenantPolicy

MAX_ITEMS = 1000  # per list in one purge request
MAX_ITEM_LENGTH = 16384  # characters of one URL or prefix
MAX_TAGS = 256  # per response; more are ignored
MAX_TAG_LENGTH = 1024
# Path-only URLs and prefixes cover every host the tenant has entries for:
# their ranges are (path-only targets x hosts). Bounded, or a tenant with
# many cached hosts (wildcards) turns one purge into minutes of work.
MAX_RANGES = 100_000
MAX_RANGE_CHARS = 20_000_000  # characters of those ranges' keys (long paths)
_URL_END = "\x20"  # above SEP and the variant separator, below every query character
TOP = "\U0010ffff"  # above every character a key holds after a prefix
_KINDS = ("urls", "prefixes", "tags", "all")
_FIELDS = frozenset(_KINDS + ("soft",))


class PurgeError(ValueError):
    """A purge request that cannot be applied; ``errors`` is a list of
    ``{"field": "urls[2]", "message": "..."}``, one per problem."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass(frozen=True, slots=True)
class Target:
    """A normalised URL or prefix. ``host`` None: every host of the tenant.
    For a URL ``query`` is the normalised query ("" for none); for a prefix
    it is None when the prefix ends within the path, else the normalised
    start of the query (``/a?`` purges every query of exactly ``/a``)."""

    host: str | None
    path: str
    query: str | None = ""

    @property
    def fragment(self) -> str:
        """The part of a key after ``tenant\\nhost\\n`` this target starts with."""
        return self.path if self.query is None else self.path + SEP + self.query


@dataclass(frozen=True, slots=True)
class PurgeSpec:
    """One purge of one tenant's entries: exactly one of ``urls``,
    ``prefixes``, ``tags`` or ``all``. ``soft`` expires the entries (kept for
    stale serving) instead of removing them."""

    tenant: str
    urls: tuple[Target, ...] = ()
    prefixes: tuple[Target, ...] = ()
    tags: tuple[str, ...] = ()
    all: bool = False
    soft: bool = False

    def __post_init__(self) -> None:
        if sum(map(bool, (self.urls, self.prefixes, self.tags, self.all))) != 1:
            raise ValueError("a purge has exactly one of urls, prefixes, tags, all")
        tenant_prefix(self.tenant)  # no separator in the tenant id

    @property
    def path_only(self) -> tuple[Target, ...]:
        """The URLs and prefixes without a host (each covers every host)."""
        return tuple(t for t in self.urls + self.prefixes if t.host is None)

    def host_limit(self) -> int | None:
        """The most hosts the path-only targets may be applied to within
        MAX_RANGES and MAX_RANGE_CHARS (None: no path-only target)."""
        targets = self.path_only
        if not targets:
            return None
        chars = sum(len(self.tenant) + 64 + len(t.fragment) for t in targets)
        return min(MAX_RANGES // len(targets), MAX_RANGE_CHARS // chars)

    def check_hosts(self, hosts: int) -> None:
        """PurgeError when the path-only targets over ``hosts`` hosts are more
        work than MAX_RANGES / MAX_RANGE_CHARS allow."""
        limit = self.host_limit()
        if limit is None or hosts <= limit:
            return
        n = len(self.path_only)
        kind = "urls" if self.urls else "prefixes"
        raise PurgeError([{
            "field": kind,
            "message": (
                f"{n} path-only {kind} (no host) apply to each of the tenant's {hosts}+ cached hosts: "
                f"{n * hosts}+ key ranges, more than the limit of {MAX_RANGES} "
                f"(and {MAX_RANGE_CHARS} characters); use absolute URLs (https://host/path) "
                f"for the hosts meant, or a prefix covering the paths"
            ),
        }])

    def iter_ranges(self, known: Iterable[str] = ()) -> Iterable[tuple[str, str]]:
        """The key ranges ``[lo, hi)`` this spec covers, unsorted and possibly
        overlapping, made one at a time; path-only targets use the hosts
        ``known``. The caller checks ``check_hosts`` first."""
        t = tenant_prefix(self.tenant)
        if self.all:
            yield (t, t + TOP)
            return
        for targets, end in ((self.urls, _URL_END), (self.prefixes, TOP)):
            for target in targets:
                names: Iterable[str] = known if target.host is None else (target.host,)
                for host in names:
                    lo = t + host + SEP + target.fragment
                    yield (lo, lo + end)

    def ranges(self, hosts: Callable[..., Iterable[str]] = tuple) -> list[tuple[str, str]]:
        """The key ranges ``[lo, hi)`` this spec covers, sorted and disjoint.
        ``hosts`` lists the hosts the tenant has entries for (asked only
        when a path-only URL or prefix needs it). Tags have no range.
        PurgeError when path-only targets x hosts exceed MAX_RANGES."""
        known: list[str] = []
        limit = None if self.all else self.host_limit()
        if limit is not None:
            known = list(itertools.islice(hosts(), limit + 1))
            self.check_hosts(len(known))
        return merge_ranges(self.iter_ranges(known))

    def to_json(self) -> dict:
        """A JSON-compatible value; ``from_json`` of it (or of its JSON text)
        gives this spec back."""
        return {
            "v": 1,
            "tenant": self.tenant,
            "urls": [[u.host, u.path, u.query] for u in self.urls],
            "prefixes": [[p.host, p.path, p.query] for p in self.prefixes],
            "tags": list(self.tags),
            "all": self.all,
            "soft": self.soft,
        }

    @classmethod
    def from_json(cls, data: object) -> PurgeSpec:
        """The spec ``to_json`` described (a dict, or its JSON text);
        ValueError when it is not one."""
        if isinstance(data, (str, bytes, bytearray)):
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"malformed purge spec: {exc}") from None
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("malformed purge spec: not a version 1 spec object")

        def text(value: object, what: str) -> str:
            if not isinstance(value, str) or _has_control(value):
                raise ValueError(f"malformed purge spec: {what}")
            return value

        def targets(name: str, prefix: bool) -> tuple[Target, ...]:
            items = data.get(name, [])
            if not isinstance(items, list):
                raise ValueError(f"malformed purge spec: {name}")
            out = []
            for item in items:
                if not isinstance(item, list) or len(item) != 3:
                    raise ValueError(f"malformed purge spec: {name}")
                host, path, query = item
                if host is not None:
                    text(host, name)
                if not text(path, name).startswith("/"):
                    raise ValueError(f"malformed purge spec: {name}")
                if query is None and not prefix:
                    raise ValueError(f"malformed purge spec: {name}")
                out.append(Target(host, path, None if query is None else text(query, name)))
            return tuple(out)

        tenant = text(data.get("tenant"), "tenant")
        tags = data.get("tags", [])
        if not isinstance(tags, list):
            raise ValueError("malformed purge spec: tags")
        return cls(
            tenant=tenant,
            urls=targets("urls", False),
            prefixes=targets("prefixes", True),
            tags=tuple(text(t, "tags") for t in tags),
            all=data.get("all") is True,
            soft=data.get("soft") is True,
        )


def merge_ranges(ranges: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Sorted, overlapping ones joined: each key then lies in at most one."""
    out: list[tuple[str, str]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def tenant_range(tenant: str) -> tuple[str, str]:
    t = tenant_prefix(tenant)
    return t, t + TOP


# --- tags from the origin ----------------------------------------------------------


def _valid_tag(tag: str) -> bool:
    return 0 < len(tag) <= MAX_TAG_LENGTH and tag.isascii() and tag.isprintable() and " " not in tag


def surrogate_keys(headers: Mapping[str, str]) -> list[str]:
    """The tags of a response: ``Surrogate-Key`` (space-separated, Fastly)
    and ``Cache-Tag`` (comma-separated, Cloudflare), in order, each once,
    invalid ones skipped, at most MAX_TAGS."""
    found: dict[str, None] = {}
    getall = getattr(headers, "getall", None)
    fields = (
        [(v, None) for v in (getall("Surrogate-Key", ()) if getall else [headers.get("Surrogate-Key") or ""])]
        + [(v, ",") for v in (getall("Cache-Tag", ()) if getall else [headers.get("Cache-Tag") or ""])]
    )
    for value, sep in fields:
        for tag in value.split(sep):
            tag = tag.strip()
            if tag and tag not in found and _valid_tag(tag):
                found[tag] = None
                if len(found) == MAX_TAGS:
                    return list(found)
    return list(found)


def tag_extra(headers: Mapping[str, str]) -> dict:
    """``Meta.extra`` for a response to be stored: ``{"tags": [...]}`` when it has any."""
    tags = surrogate_keys(headers)
    return {"tags": tags} if tags else {}


# --- parsing a purge request -----------------------------------------------------


def _has_control(value: str) -> bool:
    return any(c < " " or c == "\x7f" for c in value)


def _show(name: object) -> str:
    text = name if isinstance(name, str) else repr(name)
    return text if len(text) <= 64 else text[:61] + "..."


def parse_purge(
    body: object, policy: TenantPolicy, resolve: Callable[[str], TenantPolicy | None]
) -> PurgeSpec:
    """A purge request body (decoded JSON) of ``policy``'s tenant -> PurgeSpec.

    ``{"urls": [...]}``, ``{"prefixes": [...]}``, ``{"tags": [...]}`` or
    ``{"all": true}``, exactly one of them, optionally with ``"soft": true``.
    URLs and prefixes are absolute http(s) URLs of one of the tenant's hosts
    or paths starting with "/" (every host of the tenant). Lists hold 1 to
    1000 strings. ``resolve`` maps a host (``host_key`` form) to the policy
    serving it; a host of another tenant, or of none, is an error that never
    says which. Raises PurgeError with every problem found.
    """
    errors: list[dict[str, str]] = []

    def err(name: str, message: str) -> None:
        errors.append({"field": name, "message": message})

    if not isinstance(body, dict):
        raise PurgeError([{"field": "body", "message": "must be a JSON object"}])
    for name in body:
        if name not in _FIELDS:
            err(_show(name), "unknown field (expected urls, prefixes, tags, all, soft)")
    soft = body.get("soft", False)
    if not isinstance(soft, bool):
        err("soft", "must be true or false")
    kinds = [k for k in _KINDS if k in body]
    if not kinds:
        err("body", "one of urls, prefixes, tags or all is required")
    elif len(kinds) > 1:
        err("body", f"only one of urls, prefixes, tags or all per purge, not {' and '.join(kinds)}")

    urls: list[Target] = []
    prefixes: list[Target] = []
    tags: list[str] = []
    if "all" in body and body["all"] is not True:
        err("all", "must be true")
    for kind in ("urls", "prefixes", "tags"):
        if kind not in body:
            continue
        items = body[kind]
        if not isinstance(items, list):
            err(kind, "must be a list")
            continue
        if not items:
            err(kind, "must not be empty")
            continue
        if len(items) > MAX_ITEMS:
            err(kind, f"at most {MAX_ITEMS} items per purge, got {len(items)}")
            continue
        for i, item in enumerate(items):
            name = f"{kind}[{i}]"
            if not isinstance(item, str):
                err(name, "must be a string")
            elif kind == "tags":
                if not _valid_tag(item):
                    err(name, f"a tag is 1 to {MAX_TAG_LENGTH} visible ASCII characters without spaces")
                elif item not in tags:
                    tags.append(item)
            else:
                target = _target(item, kind == "prefixes", policy, resolve, name, err)
                out = prefixes if kind == "prefixes" else urls
                if target is not None and target not in out:
                    out.append(target)
    if errors:
        raise PurgeError(errors)
    return PurgeSpec(policy.tenant, tuple(urls), tuple(prefixes), tuple(tags), body.get("all") is True, soft)


def _target(item, prefix, policy, resolve, name, err) -> Target | None:
    if not item:
        err(name, "must not be empty")
        return None
    if len(item) > MAX_ITEM_LENGTH:
        err(name, f"longer than {MAX_ITEM_LENGTH} characters")
        return None
    if _has_control(item):
        err(name, "contains control characters")
        return None
    item = item.partition("#")[0]  # a fragment never reaches the server
    host: str | None = None
    if item.startswith("//"):
        err(name, "must be an absolute http(s) URL or a path starting with a single /")
        return None
    if item.startswith("/"):
        target = item
    else:
        scheme, sep, rest = item.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            err(name, "must be an absolute http(s) URL or a path starting with /")
            return None
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, target = rest[:end], rest[end:]
        if not target.startswith("/"):
            target = "/" + target
        if "@" in authority:
            err(name, "must not contain user information")
            return None
        host = host_key(authority)
        if host is None:
            err(name, "malformed host")
            return None
        owner = resolve(host)
        if owner is None or owner.tenant != policy.tenant:
            err(name, f"host {host} belongs to another tenant")
            return None
    raw_path, qmark, raw_query = target.partition("?")
    path = normalise_path(raw_path)
    if path is None:
        err(name, "malformed path")
        return None
    if prefix and not qmark:
        return Target(host, path, None)
    # Keyed exactly as a request for this path is: the tenant's key options
    # for it drop tracking parameters and sort the rest.
    opts = policy.request_decision(path).key
    return Target(host, path, normalise_query(raw_query, opts) if raw_query else "")
