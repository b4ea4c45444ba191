"""Purges: what an operator asks to remove from the cache, which keys that
is, and removing (or, soft, expiring) them in both tiers without scans.

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
``Barriers``     kept by the TieredStore: a purge first records "nothing
                 fetched before time T and covered by this spec may be stored
                 or served", checked where entries enter the memory tier and
                 when they are committed to or read from the disk tier. So an
                 origin response that was in flight during the purge, a disk
                 read racing it, or an entry a sibling worker is just writing
                 can never bring purged content back (see ``Barriers``).
``Purger``       ``apply(spec)``: barrier, then the memory tier (on the loop,
                 index lookups), then the disk tier (in its executor, SQL
                 ranges over diskcache's key index and the tags table).

Tags come from the origin's ``Surrogate-Key`` (space-separated) and
``Cache-Tag`` (comma-separated) response fields (``tag_extra``); the
pipeline stores them in ``Meta.extra["tags"]`` and never forwards the fields.
A tag is 1 to 1024 visible ASCII characters without whitespace, compared
case-sensitively; at most 256 per response (more are ignored).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from edge.cache.key import SEP, host_key, normalise_path, normalise_query, tenant_prefix
from edge.cache.store import Admit, Meta

if TYPE_CHECKING:
    from edge.cache.disk import DiskStore
    from edge.cache.tiered import TieredStore
    from edge.policy.model import TenantPolicy

MAX_ITEMS = 1000  # per list in one purge request
MAX_ITEM_LENGTH = 16384  # characters of one URL or prefix
MAX_TAGS = 256  # per response; more are ignored
MAX_TAG_LENGTH = 1024
BATCH = 1000  # disk entries per transaction: other workers' writes interleave
_YIELD_EVERY = 2000  # memory entries between returns to the event loop
_RANGES_PER_YIELD = 500  # memory key ranges (index lookups) between returns to the loop
# Path-only URLs and prefixes cover every host the tenant has entries for:
# their ranges are (path-only targets x hosts). Bounded, or a tenant with
# many cached hosts (wildcards) turns one purge into minutes of work.
MAX_RANGES = 100_000
MAX_RANGE_CHARS = 20_000_000  # characters of those ranges' keys (long paths)
# Barriers per tenant before they are collapsed into one tenant-wide barrier.
MAX_PREFIX_BARRIERS = 256  # scanned on every put and disk read
MAX_KEYED_BARRIERS = 4096  # URLs and tags: dictionary probes, copied on each add
MAX_BARRIER_LIFETIME = 900.0  # seconds, whatever streamed writes still run
_VARIANT_SEP = "\x1f"
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


# --- barriers ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TenantBarriers:
    """One tenant's barriers in force, never changed once built (disk threads
    read it while the loop builds the next). Times are (hard, soft)."""

    all: tuple[float, float] | None = None
    urls: dict[tuple[str | None, str], tuple[float, float]] = field(default_factory=dict)
    prefixes: tuple[tuple[str | None, str, float, float], ...] = ()
    tags: dict[str, tuple[float, float]] = field(default_factory=dict)

    def collapsed(self) -> _TenantBarriers:
        """One tenant-wide barrier at the latest of these times. Safe: a
        barrier only refuses what was fetched before its time, and this one
        is no earlier than any it replaces (it refuses more, never less)."""
        hard_t, soft_t = self.all or (0.0, 0.0)
        for times in itertools.chain(self.urls.values(), (p[2:] for p in self.prefixes), self.tags.values()):
            hard_t, soft_t = max(hard_t, times[0]), max(soft_t, times[1])
        return _TenantBarriers((hard_t, soft_t))


def _later(times: tuple[float, float] | None, soft: bool, now: float) -> tuple[float, float]:
    hard_t, soft_t = times or (0.0, 0.0)
    return (hard_t, max(soft_t, now)) if soft else (max(hard_t, now), soft_t)


def _max_times(a: tuple[float, float] | None, b: tuple[float, float]) -> tuple[float, float]:
    return b if a is None else (max(a[0], b[0]), max(a[1], b[1]))


class Barriers:
    """Purges as rules over time: an entry whose origin request started
    before a purge that covers it (``Meta.request_time`` < purge time) is not
    stored and not served from disk (hard) or only as stale (soft).

    Without them a purge races: a response in flight from the origin, a
    disk read that started before the disk delete, or a sibling worker's
    disk write would put the purged content back after ``apply`` returned.
    Checked by the TieredStore on puts and disk reads (the memory hit path
    never: the memory tier is purged at once, and whatever enters it later
    went through a check) and by the DiskStore inside the transaction that
    commits an entry.

    Bounded whatever the purges: per tenant, more than MAX_PREFIX_BARRIERS
    prefixes or MAX_KEYED_BARRIERS URLs and tags collapse into one
    tenant-wide barrier at the latest time (conservative, see
    ``_TenantBarriers.collapsed``); an ``add`` copies only its tenant's
    entry. Lookups are dictionary probes per URL, tag and tenant plus a scan
    of at most MAX_PREFIX_BARRIERS prefixes.

    A barrier is kept ``ttl`` seconds (origin fetches and collapsed waits end
    long before), and beyond that while a streamed disk write that began
    before it is still running, but never more than MAX_BARRIER_LIFETIME.
    What is dropped while such a write runs is remembered per tenant as one
    ``retired`` (hard, soft) time pair, checked only when a streamed write
    commits (``verdict(..., streamed=True)``): a write that long which
    overlapped a purge of its tenant is not stored (or stored stale).
    """

    def __init__(self, ttl: float = 600.0) -> None:
        self.ttl = ttl
        self._snap: dict[str, _TenantBarriers] | None = None
        self._retired: dict[str, tuple[float, float]] = {}
        self._next_prune = 0.0

    @property
    def active(self) -> bool:
        return self._snap is not None

    def tenant(self, tenant: str) -> _TenantBarriers | None:
        """The barriers of ``tenant`` in force (for inspection and tests)."""
        return (self._snap or {}).get(tenant)

    def add(self, spec: PurgeSpec, now: float, oldest_writer: float | None = None) -> None:
        tenant, soft = spec.tenant, spec.soft
        old = (self._snap or {}).get(tenant) or _TenantBarriers()
        everything = old.all
        if spec.all:
            everything = _later(everything, soft, now)
        urls = old.urls
        if spec.urls:
            urls = dict(urls)
            for u in spec.urls:
                k = (u.host, u.fragment)
                urls[k] = _later(urls.get(k), soft, now)
        prefixes = old.prefixes
        if spec.prefixes:
            prefixes = prefixes + tuple((p.host, p.fragment, *_later(None, soft, now)) for p in spec.prefixes)
        tags = old.tags
        if spec.tags:
            tags = dict(tags)
            for tag in spec.tags:
                tags[tag] = _later(tags.get(tag), soft, now)
        entry = _TenantBarriers(everything, urls, prefixes, tags)
        if len(prefixes) > MAX_PREFIX_BARRIERS or len(urls) + len(tags) > MAX_KEYED_BARRIERS:
            entry = entry.collapsed()
        snap = dict(self._snap or {})  # one reference per tenant: nothing deep is copied
        snap[tenant] = entry
        self._snap = snap
        if self.due(now):
            self.prune(now, oldest_writer)

    def prune(self, now: float, oldest_writer: float | None = None) -> None:
        """Forget barriers older than ``ttl`` that no running streamed write
        (started at ``oldest_writer``) predates, and every barrier older than
        MAX_BARRIER_LIFETIME (then retired for streamed commits)."""
        self._next_prune = now + min(self.ttl, 30.0)
        retired = {t: v for t, v in self._retired.items() if oldest_writer is not None and oldest_writer < max(v)}
        snap = self._snap
        if snap is None:
            self._retired = retired
            return
        cutoff = now - self.ttl
        if oldest_writer is not None:
            cutoff = max(min(cutoff, oldest_writer), now - MAX_BARRIER_LIFETIME)
        pruned: dict[str, _TenantBarriers] = {}
        for tenant, entry in snap.items():
            gone: list[tuple[float, float]] = []

            def keep(times, gone=gone):
                hard_t, soft_t = (t if t >= cutoff else 0.0 for t in times)
                if (hard_t, soft_t) != tuple(times):
                    gone.append(tuple(times))
                return (hard_t, soft_t) if hard_t or soft_t else None

            def kept(d: dict) -> dict:
                out = {}
                for k, v in d.items():
                    v = keep(v)
                    if v is not None:
                        out[k] = v
                return out

            left = _TenantBarriers(
                keep(entry.all) if entry.all else None,
                kept(entry.urls),
                tuple(p for p in entry.prefixes if keep(p[2:]) is not None),
                kept(entry.tags),
            )
            if not gone:
                left = entry  # unchanged: the same object (readers may hold it)
            if left.all or left.urls or left.prefixes or left.tags:
                pruned[tenant] = left
            if gone and oldest_writer is not None:
                # A streamed write may predate what was dropped: its commit
                # still checks the tenant-wide latest time of it.
                for times in gone:
                    if oldest_writer < max(times):
                        retired[tenant] = _max_times(retired.get(tenant), times)
        self._snap = pruned or None
        self._retired = retired

    def due(self, now: float) -> bool:
        return now >= self._next_prune

    def verdict(self, key: str, meta: Meta, streamed: bool = False) -> Admit:
        """Whether a purge since ``meta``'s fetch covers the entry at ``key``;
        ``streamed``: a streamed write commits it (long-gone barriers count).
        Safe from any thread (reads immutable snapshots)."""
        snap = self._snap
        if snap is None and not streamed:
            return Admit.KEEP
        tenant, _, rest = key.partition(SEP)
        hard_t = soft_t = 0.0
        if streamed:
            times = self._retired.get(tenant)
            if times:
                hard_t, soft_t = times
        entry = snap.get(tenant) if snap is not None else None
        if entry is not None:
            host, _, rest = rest.partition(SEP)  # rest: path \n query [\n extras] [\x1f variant]
            if entry.all:
                hard_t, soft_t = max(hard_t, entry.all[0]), max(soft_t, entry.all[1])
            if entry.urls:
                start = rest.find(SEP) + 1
                end = len(rest)
                for sep in (SEP, _VARIANT_SEP):
                    i = rest.find(sep, start)
                    if 0 <= i < end:
                        end = i
                fragment = rest[:end]
                for h in (host, None):
                    times = entry.urls.get((h, fragment))
                    if times:
                        hard_t, soft_t = max(hard_t, times[0]), max(soft_t, times[1])
            for h, fragment, ht, st in entry.prefixes:
                if (h is None or h == host) and rest.startswith(fragment):
                    hard_t, soft_t = max(hard_t, ht), max(soft_t, st)
            if entry.tags:
                for tag in meta.extra.get("tags") or ():
                    times = entry.tags.get(tag)
                    if times:
                        hard_t, soft_t = max(hard_t, times[0]), max(soft_t, times[1])
        t = meta.request_time
        if hard_t > t:
            return Admit.DROP
        if soft_t > t:
            return Admit.STALE
        return Admit.KEEP


# --- applying a purge -----------------------------------------------------------------


class Purger:
    """Applies purges to one worker's TieredStore. Holds no state of its own
    (the barriers live in the store), so one may be made per purge."""

    def __init__(self, store: TieredStore) -> None:
        self.store = store

    async def apply(self, spec: PurgeSpec, *, memory: bool = True, disk: bool = True) -> int:
        """Purge ``spec`` from this worker's memory tier and/or the shared disk
        tier; returns the stored responses affected, each counted once
        whichever tiers held it (Vary variants count, their markers do not;
        soft: entries expired, already stale ones included).

        When it returns, no request of this worker that starts afterwards is
        answered with a purged entry. The memory tier is per worker: the
        other workers need ``apply(spec, disk=False)`` each.
        """
        store = self.store
        limit = spec.host_limit()
        if limit is not None:
            # Refused before anything is done: path-only targets x hosts
            # beyond MAX_RANGES (counting stops there).
            if memory:
                spec.check_hosts(len(await self._memory_hosts(spec.tenant, limit + 1)))
            if disk and store.disk is not None:
                spec.check_hosts(len(await store.disk.run(store.disk.hosts_sync, spec.tenant, limit + 1)))
        now = time.time()
        store.barriers.add(spec, now, store.oldest_writer())
        in_memory: set[str] = set()
        if memory:
            in_memory = await self._memory(spec, now)
        count = len(in_memory)
        if disk and store.disk is not None:
            count += await store.disk.run(_purge_disk, store.disk, spec, now, in_memory)
        return count

    async def _memory_hosts(self, tenant: str, limit: int) -> list[str]:
        """The memory tier's hosts of ``tenant`` (at most ``limit``), returning
        to the loop between batches of index probes."""
        found: list[str] = []
        for host in self.store.memory.iter_hosts(tenant):
            found.append(host)
            if len(found) >= limit:
                break
            if len(found) % _RANGES_PER_YIELD == 0:
                await asyncio.sleep(0)
        return found

    async def _memory(self, spec: PurgeSpec, now: float) -> set[str]:
        mem = self.store.memory
        affected: set[str] = set()
        if spec.tags:
            keys: Iterable[str] = sorted({k for tag in spec.tags for k in mem.tag_keys(spec.tenant, tag)})
        else:
            known: list[str] = []
            limit = None if spec.all else spec.host_limit()
            if limit is not None:
                known = await self._memory_hosts(spec.tenant, limit + 1)
                spec.check_hosts(len(known))  # hosts added since apply() checked
            keys = self._range_keys(spec, known)
        done = 0
        for key in keys:
            if key is None:
                await asyncio.sleep(0)  # after _RANGES_PER_YIELD index lookups
                continue
            if mem.purge_now(key, spec.soft, now):
                affected.add(key)
            done += 1
            if done % _YIELD_EVERY == 0:
                # A whole tenant must not stall every other request; the
                # barrier already keeps purged entries from coming back.
                await asyncio.sleep(0)
        return affected

    def _range_keys(self, spec: PurgeSpec, known: list[str]) -> Iterable[str | None]:
        """The memory keys in ``spec``'s ranges, made lazily (the ranges are
        neither built all at once nor merged: a key met twice is purged once,
        ``affected`` is a set); None after every _RANGES_PER_YIELD ranges."""
        mem = self.store.memory
        for i, (lo, hi) in enumerate(spec.iter_ranges(known), 1):
            yield from mem.range_keys(lo, hi)
            if i % _RANGES_PER_YIELD == 0:
                yield None


def _purge_disk(disk: DiskStore, spec: PurgeSpec, now: float, in_memory: set[str]) -> int:
    """The disk part of a purge, in the disk tier's executor: batches of at
    most BATCH entries, one transaction each. Returns the entries affected
    that are not in ``in_memory`` (already counted)."""
    count = 0
    if spec.tags:
        lo, hi = tenant_range(spec.tenant)
        rows: set[tuple[str, str]] = set()
        for tag in spec.tags:
            rows.update(disk.tagged_sync(lo, hi, tag))
        items: list[tuple[str, str | None]] = sorted(rows)
        tags = frozenset(spec.tags)
        for i in range(0, len(items), BATCH):
            count += sum(k not in in_memory for k in disk.purge_sync(items[i : i + BATCH], spec.soft, now, tags))
        return count
    limit = spec.host_limit()
    for lo, hi in spec.ranges(lambda: disk.hosts_sync(spec.tenant, None if limit is None else limit + 1)):
        after = None
        while True:
            keys = disk.range_keys_sync(lo, hi, after, BATCH)
            if keys:
                affected = disk.purge_sync([(k, None) for k in keys], spec.soft, now)
                count += sum(k not in in_memory for k in affected)
            if len(keys) < BATCH:
                break
            after = keys[-1]
    return count
