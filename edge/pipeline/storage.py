"""The pipeline's side of the store: finding an entry and its Vary variant,
collecting a body for a tier (``Sink``), compressed copies of stored
entries, updating an entry after a validation, and invalidations."""
from __future__ import annotations

import dataclasses
import logging
import time
from urllib.parse import urljoin, urlsplit

from cachetools import LRUCache
from multidict import CIMultiDict

from edge.admin.control import purge_everywhere
from edge.cache import compress as cz
from edge.cache.admission import Admission, Asked, Revalidated, admit, revalidated
from edge.cache.key import host_key, normalise_path, normalise_query, variant_key
from edge.cache.purge import PurgeSpec, Target
from edge.cache.store import Hit, Meta, Removal
from edge.http.directives import parse_cache_control
from edge.http.headers import removes_fields

log = logging.getLogger("edge.pipeline")

_NO_CC = parse_cache_control(None)

ENCODED_SEP = "\x1e"  # a compressed copy of the entry under this key; purges of the URL cover it


def asked_of(request, path: str) -> Asked:
    """What of ``request`` bears on storing its answer."""
    h = request.headers
    raw = h.get("Cache-Control")
    return Asked(request.method, path, parse_cache_control(raw) if raw else _NO_CC, "Authorization" in h,
                 removes_fields(h))


async def close_body(hit: Hit | None) -> None:
    """Close the body stream of an entry that will not be sent."""
    if hit is not None and hit.chunks is not None:
        chunks, hit.chunks = hit.chunks, None
        await chunks.aclose()


class Sink:
    """Collects a body for the store: in memory while small, streamed to the
    disk tier once it outgrows the memory tier's object limit."""

    def __init__(self, store, key, store_key, meta: Meta, vary, max_size: int, clen: int | None, follower=None) -> None:
        self.store = store
        self.key = key
        self.store_key = store_key
        self.meta = meta
        self.vary = vary
        self.max_size = max_size
        self.parts: list[bytes] | None = []
        self.size = 0
        self.writer = None
        self.dead = False
        self.too_large = False
        self.follower = follower  # reads the disk file as it is written (a collapse.Fill)
        if clen is not None and clen > store.max_memory_object:
            self._to_disk()

    def _to_disk(self) -> None:
        if not self.store.can_stream:
            self.dead = self.too_large = True
            self.parts = None
            return
        self.writer = self.store.writer(self.store_key, self.follower)

    async def feed(self, chunk: bytes) -> None:
        if self.dead:
            return
        self.size += len(chunk)
        if self.size > self.max_size:
            self.too_large = True
            await self.abort()
            return
        if self.writer is None:
            assert self.parts is not None
            self.parts.append(chunk)
            if self.size <= self.store.max_memory_object:
                return
            self._to_disk()
            if self.writer is None:
                return
            parts, self.parts = self.parts, None
        else:
            parts = (chunk,)
        try:
            for part in parts:
                await self.writer.write(part)
        except OSError:
            log.warning("disk tier write failed; the body is not stored")
            await self.abort()

    async def commit(self) -> None:
        if self.dead:
            return
        self.dead = True
        now = self.meta.response_time
        if self.vary:
            await self.store.put(self.key, Meta.marker(self.vary, now, self.meta.lifetime), b"")
        if self.writer is not None:
            try:
                await self.writer.commit(self.meta)
            except Exception:
                log.exception("disk tier write failed")
            return
        body = b"".join(self.parts or ())
        self.meta.size = len(body)
        await self.store.put(self.store_key, self.meta, body)

    async def abort(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.parts = None
        if self.writer is not None:
            await self.writer.abort()


class Storage:
    """The store as the phases use it."""

    def __init__(self, state) -> None:
        self.state = state
        self._compressing: set[str] = set()  # variant keys being compressed now
        self._no_variant: LRUCache = LRUCache(maxsize=4096)  # (variant key, response time): compressing did not pay
        self._compress_budget = cz.Budget(state.config.cache.compress_budget)

    async def lookup(self, key: str, req_headers) -> tuple[Hit | None, bool]:
        """Returns the stored entry for this request, and whether the URL has
        variants (so a miss is a vary-miss)."""
        store = self.state.store
        hit = store.get_now(key)
        if hit is None:
            hit = await store.get(key)
            if hit is None:
                return None, False
        meta = hit.meta
        if meta.status == 0:  # a Vary marker: RFC 9111 §4.1 secondary key
            vkey = variant_key(key, meta.vary, req_headers)
            hit = store.get_now(vkey) or await store.get(vkey)
            if hit is not None:
                hit.key = vkey
            return hit, True
        hit.key = key
        return hit, False

    # ------------------------------------------------------ compressed copies

    async def encoded(self, hit: Hit, coding: str) -> Hit | None:
        """The stored response compressed with ``coding``: the variant made
        before for this very response, or made now (once: concurrent
        requests get identity meanwhile) and stored beside it. None: serve
        identity (too small or large, no gain, being compressed, or the
        worker's compression budget spent by others)."""
        key = getattr(hit, "key", None)
        if key is None:
            return None
        meta = hit.meta
        vkey = key + ENCODED_SEP + coding
        if (vkey, meta.response_time) in self._no_variant:
            return None  # tried for this very response: it does not pay
        found = await self._stored_variant(vkey, meta)
        if found is not None:
            await close_body(hit)
            return found
        size = len(hit.body) if hit.body is not None else meta.size
        if vkey in self._compressing or not cz.MIN_SIZE <= size <= cz.MAX_SIZE:
            return None
        cost = cz.cost(size, coding)
        if not self._compress_budget.take(cost):
            return None  # a later hit compresses it, when the others are done
        self._compressing.add(vkey)
        try:
            if not await self._store_variant(hit, vkey, coding):
                # Remembered here too: the mark on a disk entry's metadata
                # is lost with the copy read for this hit.
                self._no_variant[(vkey, meta.response_time)] = True
                return None
            found = await self._stored_variant(vkey, meta)
            if found is not None:
                await close_body(hit)
            return found
        except Exception:
            log.exception("compressing a stored response failed; identity served")
            return None
        finally:
            self._compressing.discard(vkey)
            self._compress_budget.give(cost)

    async def _stored_variant(self, vkey: str, meta: Meta) -> Hit | None:
        """The variant stored under ``vkey`` if it was made from the response
        ``meta`` describes (an older one is left to be replaced)."""
        store = self.state.store
        found = store.get_now(vkey)
        if found is None and store.disk is not None:
            found = await store.get(vkey)
        if found is None:
            return None
        if found.meta.extra.get("of") != meta.response_time:
            await close_body(found)
            return None
        found.key = vkey
        return found

    async def _store_variant(self, hit: Hit, vkey: str, coding: str) -> bool:
        """Streams the stored body of ``hit`` through the coder into the
        store under ``vkey``: in memory while small, else to the disk tier.
        False when nothing was stored: no gain (the entry is marked, not to
        be tried again), or the entry was replaced or purged meanwhile."""
        meta = hit.meta
        store = self.state.store
        size = len(hit.body) if hit.body is not None else meta.size
        chunks = None
        if hit.body is not None:
            source = hit.body
        else:
            # A reader of its own: the stream of ``hit`` stays whole, for
            # identity if compressing fails or does not pay.
            again = await store.get(hit.key)
            if again is None or again.meta.response_time != meta.response_time:
                await close_body(again)
                return False
            chunks = again.chunks
            source = again.body if again.body is not None else chunks
        extra = {"of": meta.response_time}
        if "tags" in meta.extra:
            extra["tags"] = meta.extra["tags"]
        # Headers once the compressed length is known; nothing rendered for identity.
        vmeta = dataclasses.replace(meta, headers=(), size=0, extra=extra, template=None, template_version="")
        # Compressed bytes as many as the identity ones do not pay: the sink gives up.
        sink = Sink(store, vkey, vkey, vmeta, (), size - 1, None)
        encoded = cz.encode(source, coding)
        try:
            async for data in encoded:
                await sink.feed(data)
                if sink.dead:
                    break
        except BaseException:
            await sink.abort()
            raise
        finally:
            await encoded.aclose()
            if chunks is not None:
                await chunks.aclose()
        if sink.size >= size:
            meta.extra["cz"] = 0  # incompressible: never tried again for this entry
            return False
        if sink.dead:
            return False  # too large for memory, and there is no disk tier
        vmeta.headers = tuple(cz.variant_headers(meta.headers, coding, sink.size))
        await sink.commit()
        return True

    # --------------------------------------------------------- after a fetch

    async def freshen(self, req_headers, ctx, fresh: CIMultiDict, got, request_time: float, old: Meta) -> Revalidated:
        """The stored entry ``old`` updated by the origin's validation and
        written back (or removed, when the origin so decided). ``fresh``:
        the answer's headers as forwarded; ``got``: as the origin sent them."""
        done = revalidated(old, fresh, got, path=ctx.path, request_time=request_time, response_time=time.time(),
                           policy=ctx.policy)
        store_key = variant_key(ctx.key, old.vary, req_headers)
        if done.keep:
            # Only if it is still the entry that was validated (another
            # request may have replaced it with a new body meanwhile).
            await self.state.store.update(store_key, done.meta, expected=old.response_time)
        else:
            await self.state.store.delete(store_key, Removal.INVALIDATION)
        return done

    def admit(self, request, ctx, upstream, headers: CIMultiDict, request_time: float,
              may_store: bool = True) -> Admission:
        """Whether and how the origin's answer (``headers``: as forwarded)
        is stored, as edge.cache.admission decides now."""
        policy = ctx.policy
        store = self.state.store
        largest = policy.cache.max_object_size
        if not store.can_stream:
            largest = min(largest, store.max_memory_object)
        return admit(asked_of(request, ctx.path), upstream.status, headers, upstream.headers,
                     content_length=upstream.content_length, request_time=request_time, response_time=time.time(),
                     policy=policy, largest=largest, may_store=may_store)

    async def head_update(self, req_headers, ctx, fresh: CIMultiDict, upstream, request_time: float, old: Meta) -> None:
        """RFC 9111 §4.3.5: a 200 to HEAD updates the stored GET response
        when it describes the same representation, else invalidates it."""
        stored = CIMultiDict(old.headers)
        got = upstream.headers
        same = True
        for name in ("ETag", "Last-Modified"):
            if name in got and name in stored and got[name] != stored[name]:
                same = False
        if upstream.content_length is not None and old.status == 200 and upstream.content_length != old.size:
            same = False
        if same:
            await self.freshen(req_headers, ctx, fresh, got, request_time, old)
        else:
            await self.state.store.delete(variant_key(ctx.key, old.vary, req_headers), Removal.INVALIDATION)

    async def invalidate(self, ctx, headers) -> None:
        """RFC 9111 §4.4: a successful unsafe request invalidates what is
        stored for its URL and for same-origin Location / Content-Location
        (all Vary variants; every worker's memory tier and the disk tier,
        before the answer goes out)."""
        policy, path = ctx.policy, ctx.path
        targets = {(path, ctx.raw_query)}
        for name in ("Location", "Content-Location"):
            ref = headers.get(name)
            found = _same_origin(ref, ctx.host, path) if ref else None
            if found is not None:
                targets.add(found)
        urls = []
        for target_path, target_query in targets:
            opts = policy.request_decision(target_path).key
            query = normalise_query(target_query, opts) if target_query else ""
            urls.append(Target(ctx.host, target_path, query))
        try:
            await purge_everywhere(self.state.control, self.state.store, PurgeSpec(policy.tenant, urls=tuple(urls)))
        except Exception:
            log.exception("invalidation after %s failed (request %s)", ctx.method, ctx.rid)


def _same_origin(ref: str, host: str, base: str) -> tuple[str, str] | None:
    """(path, raw query) of a Location / Content-Location value on the
    request's own host (RFC 9111 §4.4: other origins are not invalidated,
    against denial of service), else None."""
    try:
        parts = urlsplit(urljoin("http://" + host + base, ref.strip()))
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or host_key(parts.netloc) != host:
        return None
    path = normalise_path(parts.path or "/")
    return (path, parts.query) if path is not None else None
