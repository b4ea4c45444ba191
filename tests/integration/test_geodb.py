"""GeoDB over real MMDB files: lookups, hot reload by rename, rejected
replacements, a swap under concurrent lookups, and the shipped database."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from edge.geo.db import GeoDB, GeoDBError, find_default_database
from tests.conftest import until
from tests.geo_support import replace_atomically, write_country_db

MAPPING: dict[str, str | None] = {
    "127.0.0.2/32": "DE",
    "127.0.0.3/32": "US",
    "127.0.0.4/32": None,
    "2001:db8::/32": "DE",
}
NEW_MAPPING: dict[str, str | None] = {
    "127.0.0.2/32": "AT",
    "127.0.0.3/32": "US",
    "127.0.0.5/32": "DE",
    "2001:db8::/32": "CH",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return write_country_db(tmp_path / "GeoLite2-Country.mmdb", MAPPING)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=[False, True], ids=["mmap", "in-memory"])
def db(request: pytest.FixtureRequest, db_path: Path, clock: Clock) -> GeoDB:
    return GeoDB(db_path, clock=clock, check_interval=5.0, in_memory=request.param)


LOOKUPS = [
    ("127.0.0.2", "DE"),
    ("127.0.0.3", "US"),
    ("127.0.0.4", None),  # in the database, no country
    ("127.0.0.5", None),  # not in the database
    ("8.8.8.8", None),
    ("2001:db8::1", "DE"),
    ("2001:DB8:0:0:0:0:0:1", "DE"),
    ("2001:db8:ffff::1", "DE"),
    ("2001:db9::1", None),
    ("::ffff:127.0.0.2", "DE"),  # IPv4-mapped: looked up as 127.0.0.2
    ("::FFFF:127.0.0.3", "US"),
    ("::ffff:7f00:2", "DE"),
    ("2001:db8::1%eth0", "DE"),  # zone id dropped
    ("fe80::1%eth0", None),
    ("", None),
    ("garbage", None),
    ("127.0.0.256", None),
    ("127.000.0.2", None),  # leading zeros are ambiguous (octal?): not an address
    (" 127.0.0.2", None),
    ("127.0.0.2:80", None),
    ("[2001:db8::1]", None),
    ("127.0.0.0/8", None),
    ("x" * 10_000, None),
]


@pytest.mark.parametrize(("address", "expected"), LOOKUPS, ids=[a[:30] or "empty" for a, _ in LOOKUPS])
def test_lookups(db: GeoDB, address: str, expected: str | None) -> None:
    assert db.country(address) == expected
    assert db.country(address) == expected  # the cached answer is the same


def test_record_shapes(tmp_path: Path) -> None:
    path = write_country_db(
        tmp_path / "shapes.mmdb",
        {"192.0.2.1/32": "de"},
        records={
            # GeoLite2/DB-IP: no "country" for anonymous or satellite ranges,
            # but the registrant's country is known.
            "192.0.2.2/32": {"registered_country": {"iso_code": "DE"}},
            "192.0.2.3/32": {"country": {"iso_code": "FR"}, "registered_country": {"iso_code": "DE"}},
            "192.0.2.4/32": {"country": {"iso_code": "None"}},  # what Geoacumen writes for unknown
            "192.0.2.5/32": {"country": "NL"},  # ipinfo's flat shape
            "192.0.2.6/32": {"country": {"names": {"en": "Germany"}}, "registered_country": {"iso_code": "AT"}},
            "192.0.2.7/32": {"country": {"iso_code": "DEU"}},
            "192.0.2.8/32": {"country": {"iso_code": "D1"}},
            "192.0.2.9/32": {"city": {"names": {"en": "Berlin"}}, "country": {"iso_code": "DE"}},  # City shape
        },
    )
    db = GeoDB(path)
    got = {i: db.country(f"192.0.2.{i}") for i in range(1, 10)}
    assert got == {1: "DE", 2: "DE", 3: "FR", 4: None, 5: "NL", 6: "AT", 7: None, 8: None, 9: "DE"}


def test_metadata(db: GeoDB, db_path: Path) -> None:
    meta = db.metadata
    assert meta.database_type == "GeoLite2-Country"
    assert meta.ip_version == 6
    assert abs(meta.build_epoch - time.time()) < 3600
    assert meta.path == str(db_path)


def test_cache_is_bounded(db_path: Path) -> None:
    db = GeoDB(db_path, cache_size=16)
    for i in range(1000):
        db.country(f"10.0.{i // 256}.{i % 256}")
    assert db.cached == 16
    assert db.country("127.0.0.2") == "DE"


# ------------------------------------------------------------------ start


def test_missing_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "nope.mmdb"
    with pytest.raises(GeoDBError, match=f"{path}.*not found"):
        GeoDB(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world\n" * 100, os.urandom(4096)],
    ids=["empty", "text", "random"],
)
def test_corrupt_file_refuses_to_start(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mmdb"
    path.write_bytes(content)
    with pytest.raises(GeoDBError, match=str(path)):
        GeoDB(path)


def test_truncated_file_refuses_to_start(tmp_path: Path, db_path: Path) -> None:
    path = tmp_path / "truncated.mmdb"
    path.write_bytes(db_path.read_bytes()[:-10])
    with pytest.raises(GeoDBError, match="not a valid MaxMind DB"):
        GeoDB(path)


def test_damaged_search_tree_refuses_to_start(tmp_path: Path, db_path: Path) -> None:
    data = db_path.read_bytes()
    path = tmp_path / "damaged.mmdb"
    path.write_bytes(b"\xff" * 200 + data[200:])
    with pytest.raises(GeoDBError, match="damaged"):
        GeoDB(path)


def test_directory_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(GeoDBError, match=str(tmp_path)):
        GeoDB(tmp_path)


# ----------------------------------------------------------------- reload


def test_reload_after_rename(db: GeoDB, db_path: Path, clock: Clock) -> None:
    assert db.country("127.0.0.2") == "DE"
    replace_atomically(db_path, NEW_MAPPING)
    # Within the check interval the file is not even looked at.
    clock.now += 1
    assert db.maybe_reload() is False
    assert db.country("127.0.0.2") == "DE"
    clock.now += 5
    assert db.maybe_reload() is True
    assert db.reloads == 1
    # The cache went with the old reader.
    assert db.country("127.0.0.2") == "AT"
    assert db.country("127.0.0.5") == "DE"
    assert db.country("::ffff:127.0.0.5") == "DE"
    assert db.country("2001:db8::1") == "CH"
    assert db.country("127.0.0.4") is None
    # Nothing changed since: no reload.
    clock.now += 10
    assert db.maybe_reload() is False


def test_force_skips_the_interval(db: GeoDB, db_path: Path) -> None:
    replace_atomically(db_path, NEW_MAPPING)
    assert db.maybe_reload() is False
    assert db.maybe_reload(force=True) is True
    assert db.country("127.0.0.2") == "AT"


def test_old_reader_stays_usable_after_the_swap(db: GeoDB, db_path: Path) -> None:
    # A lookup that fetched the old reader just before the swap finishes on it.
    old = db.reader
    replace_atomically(db_path, NEW_MAPPING)
    assert db.maybe_reload(force=True)
    assert old.get("127.0.0.2") == {"country": {"iso_code": "DE"}}


CORRUPT = {
    "truncated": lambda data: data[: len(data) // 2],
    "truncated-by-one": lambda data: data[:-1],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x00garbage" * 300,
    "damaged-tree": lambda data: b"\xff" * 200 + data[200:],
}


@pytest.mark.parametrize("damage", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_replacement_keeps_the_old_database(
    db: GeoDB, db_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture, damage
) -> None:
    assert db.country("127.0.0.2") == "DE"
    valid_new = write_country_db(db_path.with_name("new.mmdb"), NEW_MAPPING).read_bytes()
    tmp = db_path.with_name("incoming.tmp")
    tmp.write_bytes(damage(valid_new))
    os.replace(tmp, db_path)
    clock.now += 10
    with caplog.at_level(logging.WARNING, logger="edge.geo"):
        assert db.maybe_reload() is False
    warnings = [r for r in caplog.records if r.name == "edge.geo" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(db_path) in warnings[0].getMessage()
    assert "rejected" in warnings[0].getMessage()
    assert db.country("127.0.0.2") == "DE"
    assert db.country("2001:db8::1") == "DE"
    # The same bad file is not retried (nor logged again) until it changes.
    caplog.clear()
    clock.now += 10
    with caplog.at_level(logging.WARNING, logger="edge.geo"):
        assert db.maybe_reload() is False
    assert not [r for r in caplog.records if r.name == "edge.geo"]
    # A good file afterwards is picked up.
    replace_atomically(db_path, NEW_MAPPING)
    clock.now += 10
    assert db.maybe_reload() is True
    assert db.country("127.0.0.2") == "AT"


def test_deleted_file_keeps_the_loaded_database(
    db: GeoDB, db_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    db_path.unlink()
    with caplog.at_level(logging.WARNING, logger="edge.geo"):
        for _ in range(3):
            clock.now += 10
            assert db.maybe_reload() is False
    assert len([r for r in caplog.records if r.name == "edge.geo"]) == 1
    assert db.country("127.0.0.3") == "US"
    write_country_db(db_path, NEW_MAPPING)
    clock.now += 10
    assert db.maybe_reload() is True
    assert db.country("127.0.0.2") == "AT"


def test_swap_under_concurrent_lookups(db_path: Path) -> None:
    # Lookups in many threads while the file is replaced and swapped 30
    # times: no lookup raises, and every answer is one of the two databases'.
    db = GeoDB(db_path, cache_size=64)
    allowed = {
        "127.0.0.2": {"DE", "AT"},
        "127.0.0.3": {"US"},
        "127.0.0.4": {None},
        "127.0.0.5": {None, "DE"},
        "::ffff:127.0.0.2": {"DE", "AT"},
        "2001:db8::1": {"DE", "CH"},
        "2001:db8::2": {"DE", "CH"},
    }
    # Unique addresses too, so lookups keep missing the cache and hit the readers.
    stop = threading.Event()
    errors: list[BaseException] = []
    wrong: list[tuple[str, str | None]] = []
    counts = [0] * 8

    def worker(n: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                for address, ok in allowed.items():
                    got = db.country(address)
                    if got not in ok:
                        wrong.append((address, got))
                db.country(f"10.{n}.{(i >> 8) & 255}.{i & 255}")
                i += 1
                counts[n] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    # Every replacement written beside the file before the lookups start,
    # then renamed over it as geoipupdate does: writing is not what is under
    # test, and next to eight busy threads it would take most of the time.
    versions = [write_country_db(db_path.with_name(f"v{n}.mmdb"), m) for n, m in enumerate((NEW_MAPPING, MAPPING))]
    replacements = [shutil.copyfile(versions[i % 2], db_path.with_name(f"{i}.tmp")) for i in range(30)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    try:
        for replacement in replacements:
            os.replace(replacement, db_path)
            assert db.maybe_reload(force=True) is True
            time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors
    assert not wrong
    assert all(counts)
    assert db.reloads == 30
    assert db.country("127.0.0.2") == "DE"  # the last swap put MAPPING back


async def test_watch_reloads_in_the_background(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = GeoDB(db_path)
    task = asyncio.ensure_future(db.watch(0.02))
    try:
        replace_atomically(db_path, NEW_MAPPING)
        await until(lambda: db.country("127.0.0.2") == "AT", "the watcher loaded the new database")
        # A corrupt replacement under watch: warned about, old answers kept.
        tmp = db_path.with_name("x.tmp")
        tmp.write_bytes(b"broken")
        with caplog.at_level(logging.WARNING, logger="edge.geo"):
            os.replace(tmp, db_path)
            await until(lambda: any("rejected" in r.getMessage() for r in caplog.records),
                        "the watcher rejected the corrupt file")
        assert any(str(db_path) in r.getMessage() for r in caplog.records if r.name == "edge.geo")
        assert db.country("127.0.0.2") == "AT"
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ------------------------------------------------ the shipped database
#
# REQUIRED, NOT SKIPPED: the README's install commands install
# python-geoacumen (with --no-deps, as it pins an old maxminddb), and the node
# falls back to its database. If this fails, install it:
#     pip install --no-deps python-geoacumen

WELL_KNOWN = [
    ("80.128.0.1", "DE"),  # Deutsche Telekom, 80.128.0.0/11
    ("91.0.0.1", "DE"),  # Deutsche Telekom, 91.0.0.0/10
    ("2003::1", "DE"),  # Deutsche Telekom IPv6, 2003::/19
    ("::ffff:80.128.0.1", "DE"),
    ("193.99.144.80", "DE"),  # heise.de
    ("8.8.8.8", "US"),  # Google
    ("2001:4860:4860::8888", "US"),  # Google
    ("81.2.69.160", "GB"),  # MaxMind's test address in the UK
    ("10.0.0.1", None),  # private
]


def test_shipped_geoacumen_database_is_installed_and_answers() -> None:
    path = find_default_database()
    assert path is not None, (
        "python-geoacumen is not installed; the README's commands install it: "
        "pip install --no-deps python-geoacumen"
    )
    db = GeoDB(path)
    assert db.metadata.database_type == "Geoacumen-Country"
    assert db.metadata.ip_version == 6
    got = {address: db.country(address) for address, _ in WELL_KNOWN}
    assert got == dict(WELL_KNOWN)


def test_find_default_database_does_not_import_the_package() -> None:
    import sys

    sys.modules.pop("geoacumen", None)
    find_default_database()
    assert "geoacumen" not in sys.modules
