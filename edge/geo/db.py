"""The country database: a MaxMind DB (MMDB) reader with a per-address LRU
and hot reload when the file is replaced.

Record shape: ``country.iso_code`` (GeoLite2/GeoIP2 Country and City, DB-IP,
Geoacumen), falling back to ``registered_country.iso_code`` for networks that
have no ``country`` (GeoLite2 and DB-IP leave it out for anonymous proxies,
satellite providers and some anycast ranges, but still name the registrant's
country). A bare string ``country`` (ipinfo's free MMDB) is accepted too.
Anything that is not two ASCII letters (Geoacumen writes ``"None"``) is
unknown: ``None``.

Every file is verified before it is used, at start and on reload: readable
metadata (IPv4 or IPv6 tree, a plausible build date) and some sixty probe
lookups across the address space that must not raise.

Reload and the reader's mode. The reader maps the file (``MODE_AUTO``: the
C extension's mmap, about 1 µs a lookup, pages shared by all workers; the
pure-Python mmap reader when the extension is missing).
geoipupdate, and :func:`tests.geo_support.replace_atomically`, write a new
file and ``rename()`` it over the old one: the old inode stays intact and
mapped until its reader is gone, so a lookup in flight on the old reader
finishes on consistent data. The swap is one reference assignment of a
``(reader, cache)`` pair; a lookup reads that pair once, so it never mixes
the new reader with the old cache. Old readers are never ``close()``d: they
are freed by reference counting when the last lookup using one returns
(closing explicitly could fail a lookup that had already fetched it).
The one unsafe update is writing the file *in place* (``cp new old``
truncates the mapped inode and may crash the process with SIGBUS): replace
by rename, or pass ``in_memory=True`` (the file is read whole into memory;
pure-Python lookups, about 12 µs uncached; memory per worker).
"""
from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

log = logging.getLogger("edge.geo")

try:
    from maxminddb import extension as _extension

    _HAS_EXTENSION = hasattr(_extension, "Reader")
except ImportError:  # pure-Python maxminddb
    _HAS_EXTENSION = False

_MISS = object()
_EPOCH_2000 = 946684800
# Longest plausible text form: full IPv6 plus a zone id; longer input is not an address.
_MAX_ADDRESS_LEN = 64
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# Probe lookups run on every newly opened file: spread over IPv4 (the first
# octet walks 0..255 in steps) plus a few IPv6 addresses, so a damaged search
# tree or data section is likely to raise before the file is put in service.
_PROBES_V4 = tuple(f"{i}.{(i * 7) % 256}.{(i * 13) % 256}.{(i * 31) % 256}" for i in range(1, 256, 5))
_PROBES_V6 = ("2001:db8::1", "2003::1", "2a00:1450::1", "2600::1", "::1", "fe80::1")


class GeoDBError(Exception):
    """The database file cannot be used (missing, unreadable, not an MMDB)."""


@dataclass(frozen=True, slots=True)
class GeoMetadata:
    path: str
    database_type: str
    build_epoch: int  # seconds since the epoch, from the file's metadata
    ip_version: int
    node_count: int


@dataclass(frozen=True, slots=True)
class _FileId:
    """What ``os.stat`` says about the file; a rename over it changes ``ino``."""

    dev: int
    ino: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> _FileId:
        return cls(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class _Active:
    """A reader and the results it produced; swapped as one reference."""

    __slots__ = ("cache", "meta", "reader", "warned")

    def __init__(self, reader: Any, meta: GeoMetadata) -> None:
        self.reader = reader
        self.cache: OrderedDict[str, str | None] = OrderedDict()
        self.meta = meta
        self.warned = False


def _open_checked(path: Path, mode: int) -> tuple[Any, GeoMetadata]:
    try:
        reader = maxminddb.open_database(str(path), mode)
    except FileNotFoundError:
        raise GeoDBError(f"geo database {path}: file not found") from None
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        # maxminddb raises InvalidDatabaseError (a RuntimeError) or ValueError
        # for a file without valid metadata, OSError for unreadable ones.
        raise GeoDBError(f"geo database {path}: not a valid MaxMind DB ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use this file
        raise GeoDBError(f"geo database {path}: cannot be opened ({type(exc).__name__}: {exc})") from None
    try:
        m = reader.metadata()
        meta = GeoMetadata(str(path), str(m.database_type), int(m.build_epoch), int(m.ip_version), int(m.node_count))
        if meta.ip_version not in (4, 6):
            raise ValueError(f"ip_version {meta.ip_version}")
        if meta.build_epoch < _EPOCH_2000:
            # Metadata is the file's last bytes; a cut-off epoch decodes small.
            raise ValueError(f"build_epoch {meta.build_epoch}")
        for probe in _PROBES_V4 + (_PROBES_V6 if meta.ip_version == 6 else ()):
            _country_of(reader.get(probe))
    except Exception as exc:  # noqa: BLE001
        reader.close()
        raise GeoDBError(f"geo database {path}: damaged ({type(exc).__name__}: {exc})") from None
    return reader, meta


def _open_verified(path: Path, mode: int) -> tuple[Any, GeoMetadata]:
    """Open ``path`` fully and prove it answers; GeoDBError otherwise."""
    reader, meta = _open_checked(path, mode)
    if mode != maxminddb.MODE_AUTO and _HAS_EXTENSION:
        # The pure-Python reader (MODE_MEMORY) decodes a value cut short at
        # the end of the file (a truncated copy); libmaxminddb refuses it.
        # Let it check the same file too.
        strict, strict_meta = _open_checked(path, maxminddb.MODE_MMAP_EXT)
        strict.close()  # never published: nothing can be using it
        if strict_meta != meta:
            raise GeoDBError(f"geo database {path}: changed while it was being loaded")
    return reader, meta


def _iso(value: object) -> str | None:
    if type(value) is str and len(value) == 2 and value[0] in _ASCII_LETTERS and value[1] in _ASCII_LETTERS:
        return value.upper()
    return None


def _country_of(record: object) -> str | None:
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    if isinstance(country, dict):
        code = _iso(country.get("iso_code"))
        if code is not None:
            return code
    elif isinstance(country, str):
        return _iso(country)
    registered = record.get("registered_country")
    if isinstance(registered, dict):
        return _iso(registered.get("iso_code"))
    return None


def _lookup_key(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address as the reader must see it, or None when it is not one.
    Parsed here rather than by the reader so that every mode accepts the same
    spellings (no leading zeros, no whitespace). IPv4-mapped IPv6 becomes IPv4
    (MMDBs keep IPv4 at ::/96, not at ::ffff:0:0/96); a zone id is dropped (it
    names an interface, not a network)."""
    try:
        if ":" not in address:
            return ipaddress.IPv4Address(address)
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return None
    mapped = ip.ipv4_mapped
    return mapped if mapped is not None else ip


class GeoDB:
    """``GeoDB(path).country("80.128.0.1") -> "DE"``.

    Thread-safe: ``country`` may run in any thread while another thread (or
    :meth:`watch`) reloads. ``check_interval`` throttles :meth:`maybe_reload`;
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cache_size: int = 65536,
        check_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        in_memory: bool = False,
    ) -> None:
        self.path = Path(path)
        self.cache_size = max(1, cache_size)
        self.check_interval = check_interval
        self._clock = clock
        self._mode = maxminddb.MODE_MEMORY if in_memory else maxminddb.MODE_AUTO
        self._reload_lock = threading.Lock()
        try:
            before = _FileId.of(os.stat(self.path))
        except FileNotFoundError:
            raise GeoDBError(f"geo database {self.path}: file not found") from None
        except OSError as exc:
            raise GeoDBError(f"geo database {self.path}: {exc.strerror or exc}") from None
        reader, meta = _open_verified(self.path, self._mode)
        self._active = _Active(reader, meta)
        self._loaded_id: _FileId = before
        self._rejected_id: _FileId | None = None
        self._stat_failed = False
        self._last_check = clock()
        self.reloads = 0

    # ------------------------------------------------------------ lookups

    def country(self, address: str) -> str | None:
        """ISO 3166-1 alpha-2 code (upper case) of ``address``, or None when
        the address is invalid, not in the database, or has no country."""
        active = self._active  # read once: reader and cache stay a pair
        cache = active.cache
        code = cache.get(address, _MISS)
        if code is not _MISS:
            try:
                cache.move_to_end(address)
            except KeyError:  # evicted by another thread in between
                pass
            return code  # type: ignore[return-value]
        if type(address) is not str or len(address) > _MAX_ADDRESS_LEN:
            return None  # not cached: the cache holds short strings only
        code = self._lookup(active, address)
        cache[address] = code
        if len(cache) > self.cache_size:
            try:
                cache.popitem(last=False)
            except KeyError:
                pass
        return code

    def _lookup(self, active: _Active, address: str) -> str | None:
        key = _lookup_key(address)
        if key is None:
            return None
        try:
            return _country_of(active.reader.get(key))
        except ValueError:
            # Not an address, or IPv6 in an IPv4-only database.
            return None
        except Exception as exc:  # noqa: BLE001 - a damaged region of the file
            if not active.warned:
                active.warned = True
                log.warning("geo database %s: lookup failed (%s: %s); answering unknown", self.path, type(exc).__name__, exc)
            return None

    @property
    def metadata(self) -> GeoMetadata:
        return self._active.meta

    @property
    def cached(self) -> int:
        """Addresses whose country the database in use has cached."""
        return len(self._active.cache)

    @property
    def reader(self) -> Any:
        """The database in use: a lookup that took it finishes on it, even
        after a reload has put another in its place."""
        return self._active.reader

    # ------------------------------------------------------------- reload

    def _changed(self, force: bool) -> _FileId | None:
        """The file's new identity when it differs from the loaded one and from
        the last rejected one; None otherwise (also between checks)."""
        now = self._clock()
        if not force and now - self._last_check < self.check_interval:
            return None
        self._last_check = now
        try:
            current = _FileId.of(os.stat(self.path))
        except OSError as exc:
            # Deleted or unreadable: keep answering from what is loaded; say so once.
            if not self._stat_failed:
                self._stat_failed = True
                log.warning("geo database %s: cannot stat (%s); keeping the loaded database", self.path, exc.strerror or exc)
            return None
        self._stat_failed = False
        if current == self._loaded_id or current == self._rejected_id:
            return None
        return current

    def _install(self, file_id: _FileId, reader: Any, meta: GeoMetadata) -> None:
        self._active = _Active(reader, meta)  # the swap: one reference, fresh cache
        self._loaded_id = file_id
        self._rejected_id = None
        self.reloads += 1
        log.info("geo database %s reloaded: %s built %s", self.path, meta.database_type,
                 time.strftime("%Y-%m-%d", time.gmtime(meta.build_epoch)))

    def _reject(self, file_id: _FileId, exc: GeoDBError) -> None:
        # Remember the bad version: it is not retried until the file changes again.
        self._rejected_id = file_id
        log.warning("geo database %s: replacement rejected, keeping the loaded database: %s", self.path, exc)

    def maybe_reload(self, *, force: bool = False) -> bool:
        """Reload when the file was replaced; True when a new database is in
        service. At most one ``os.stat`` every ``check_interval`` seconds
        (``force`` skips that wait). Blocks while the new file is opened and
        verified: from a running event loop use :meth:`watch` instead."""
        if not self._reload_lock.acquire(blocking=False):
            return False  # another thread is reloading already
        try:
            file_id = self._changed(force)
            if file_id is None:
                return False
            try:
                reader, meta = _open_verified(self.path, self._mode)
            except GeoDBError as exc:
                self._reject(file_id, exc)
                return False
            self._install(file_id, reader, meta)
            return True
        finally:
            self._reload_lock.release()

    async def watch(self, interval: float | None = None) -> None:
        """Check every ``interval`` seconds (default ``check_interval``) until
        cancelled; open and verify in a worker thread, so requests never wait."""
        interval = self.check_interval if interval is None else interval
        while True:
            await asyncio.sleep(interval)
            try:
                if not self._reload_lock.acquire(blocking=False):
                    continue
                try:
                    file_id = self._changed(force=True)
                    if file_id is None:
                        continue
                    try:
                        reader, meta = await asyncio.to_thread(_open_verified, self.path, self._mode)
                    except GeoDBError as exc:
                        self._reject(file_id, exc)
                        continue
                    self._install(file_id, reader, meta)
                finally:
                    self._reload_lock.release()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("geo database %s: reload check failed; keeping the loaded database", self.path)


def find_default_database() -> Path | None:
    """The country MMDB of the ``python-geoacumen`` package, or None.

    Located without importing the package (its ``__init__`` may target an old
    maxminddb API); install it with ``pip install --no-deps python-geoacumen``
    because it pins ``maxminddb==1.5.4``.
    """
    try:
        spec = importlib.util.find_spec("geoacumen")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "db" / "Geoacumen-Country.mmdb"
        if candidate.is_file():
            return candidate
    return None
