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

    def ranges(self, hosts: Callable[[], Iterable[str]] = tuple) -> list[tuple[str, str]]:
        """The key ranges ``[lo, hi)`` this spec covers, sorted and disjoint.
        ``hosts`` lists the hosts the tenant has entries for (asked only
        when a path-only URL or prefix needs it). Tags have no range."""
        t = tenant_prefix(self.tenant)
        if self.all:
            return [(t, t + TOP)]
        out: list[tuple[str, str]] = []
        known: list[str] | None = None
        for targets, end in ((self.urls, _URL_END), (self.prefixes, TOP)):
            for target in targets:
                if target.host is None:
                    if known is None:
                        known = list(hosts())
                    names: Iterable[str] = known
                else:
                    names = (target.host,)
                for host in names:
                    lo = t + host + SEP + target.fragment
                    out.append((lo, lo + end))
        return merge_ranges(out)

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
class _Snapshot:
    """The barriers in force, never changed once built (disk threads read it
    while the loop builds the next). Values are (hard time, soft time)."""

    urls: dict[tuple[str, str | None, str], tuple[float, float]] = field(default_factory=dict)
    prefixes: dict[str, tuple[tuple[str | None, str, float, float], ...]] = field(default_factory=dict)
    tags: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    tenants: dict[str, tuple[float, float]] = field(default_factory=dict)


def _later(times: tuple[float, float] | None, soft: bool, now: float) -> tuple[float, float]:
    hard_t, soft_t = times or (0.0, 0.0)
    return (hard_t, max(soft_t, now)) if soft else (max(hard_t, now), soft_t)


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

    A barrier is kept ``ttl`` seconds (origin fetches and collapsed waits end
    long before), and beyond that while a streamed disk write that began
    before it is still running. Lookups are dictionary probes per URL, tag
    and tenant; only prefixes are a (per-tenant) list.
    """

    def __init__(self, ttl: float = 600.0) -> None:
        self.ttl = ttl
        self._snap: _Snapshot | None = None
        self._next_prune = 0.0

    @property
    def active(self) -> bool:
        return self._snap is not None

    def add(self, spec: PurgeSpec, now: float, oldest_writer: float | None = None) -> None:
        old = self._snap or _Snapshot()
        snap = _Snapshot(dict(old.urls), dict(old.prefixes), dict(old.tags), dict(old.tenants))
        tenant, soft = spec.tenant, spec.soft
        if spec.all:
            snap.tenants[tenant] = _later(snap.tenants.get(tenant), soft, now)
        for u in spec.urls:
            k = (tenant, u.host, u.fragment)
            snap.urls[k] = _later(snap.urls.get(k), soft, now)
        if spec.prefixes:
            new = tuple((p.host, p.fragment, *_later(None, soft, now)) for p in spec.prefixes)
            snap.prefixes[tenant] = snap.prefixes.get(tenant, ()) + new
        for tag in spec.tags:
            k = (tenant, tag)
            snap.tags[k] = _later(snap.tags.get(k), soft, now)
        self._snap = snap
        self.prune(now, oldest_writer)

    def prune(self, now: float, oldest_writer: float | None = None) -> None:
        """Forget barriers older than ``ttl`` that no running streamed write
        (started at ``oldest_writer``) predates."""
        self._next_prune = now + min(self.ttl, 30.0)
        snap = self._snap
        if snap is None:
            return
        cutoff = now - self.ttl
        if oldest_writer is not None:
            cutoff = min(cutoff, oldest_writer)

        def keep(times: tuple[float, float]) -> tuple[float, float] | None:
            hard_t, soft_t = (t if t >= cutoff else 0.0 for t in times)
            return (hard_t, soft_t) if hard_t or soft_t else None

        def kept(d: dict) -> dict:
            out = {}
            for k, v in d.items():
                v = keep(v)
                if v is not None:
                    out[k] = v
            return out

        prefixes = {}
        for tenant, items in snap.prefixes.items():
            left = tuple(p for p in items if keep(p[2:]) is not None)
            if left:
                prefixes[tenant] = left
        pruned = _Snapshot(kept(snap.urls), prefixes, kept(snap.tags), kept(snap.tenants))
        empty = not (pruned.urls or pruned.prefixes or pruned.tags or pruned.tenants)
        self._snap = None if empty else pruned

    def due(self, now: float) -> bool:
        return now >= self._next_prune

    def verdict(self, key: str, meta: Meta) -> Admit:
        """Whether a purge since ``meta``'s fetch covers the entry at ``key``.
        Safe from any thread (reads one immutable snapshot)."""
        snap = self._snap
        if snap is None:
            return Admit.KEEP
        tenant, _, rest = key.partition(SEP)
        host, _, rest = rest.partition(SEP)  # rest: path \n query [\n extras] [\x1f variant]
        hard_t = soft_t = 0.0
        times = snap.tenants.get(tenant)
        if times:
            hard_t, soft_t = times
        if snap.urls:
            start = rest.find(SEP) + 1
            end = len(rest)
            for sep in (SEP, _VARIANT_SEP):
                i = rest.find(sep, start)
                if 0 <= i < end:
                    end = i
            fragment = rest[:end]
            for h in (host, None):
                times = snap.urls.get((tenant, h, fragment))
                if times:
                    hard_t, soft_t = max(hard_t, times[0]), max(soft_t, times[1])
        for h, fragment, ht, st in snap.prefixes.get(tenant, ()):
            if (h is None or h == host) and rest.startswith(fragment):
                hard_t, soft_t = max(hard_t, ht), max(soft_t, st)
        if snap.tags:
            for tag in meta.extra.get("tags") or ():
                times = snap.tags.get((tenant, tag))
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
        now = time.time()
        store.barriers.add(spec, now, store.oldest_writer())
        in_memory: set[str] = set()
        if memory:
            in_memory = await self._memory(spec, now)
        count = len(in_memory)
        if disk and store.disk is not None:
            count += await store.disk.run(_purge_disk, store.disk, spec, now, in_memory)
        return count

    async def _memory(self, spec: PurgeSpec, now: float) -> set[str]:
        mem = self.store.memory
        if spec.tags:
            keys: list[str] = sorted({k for tag in spec.tags for k in mem.tag_keys(spec.tenant, tag)})
        else:
            keys = [k for lo, hi in spec.ranges(lambda: mem.hosts(spec.tenant)) for k in mem.range_keys(lo, hi)]
        affected: set[str] = set()
        for i, key in enumerate(keys, 1):
            if mem.purge_now(key, spec.soft, now):
                affected.add(key)
            if i % _YIELD_EVERY == 0:
                # A whole tenant must not stall every other request; the
                # barrier already keeps purged entries from coming back.
                await asyncio.sleep(0)
        return affected


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
    for lo, hi in spec.ranges(lambda: disk.hosts_sync(spec.tenant)):
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
