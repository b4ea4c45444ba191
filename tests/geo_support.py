"""Test MMDB databases, written with mmdb-writer in the shape of MaxMind
GeoLite2-Country: ``{"country": {"iso_code": "DE"}}``.

    write_country_db(tmp_path / "geo.mmdb", {"127.0.0.2/32": "DE", "2001:db8::/32": "DE"})

One IPv6 database holds both families (IPv4 networks live at ``::/96``, where
readers look IPv4 addresses up), as MaxMind's own databases do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import netaddr
from mmdb_writer import MMDBWriter


def write_country_db(
    path: str | os.PathLike[str],
    mapping: dict[str, str | None],
    *,
    records: dict[str, dict[str, Any]] | None = None,
    database_type: str = "GeoLite2-Country",
) -> Path:
    """Write ``mapping`` (CIDR -> ISO code) to ``path`` and return the path.

    A ``None`` code writes a record without any country (the network is in
    the database, its country is unknown). ``records`` maps further CIDRs to
    whole records, for shapes such as ``{"registered_country": {...}}`` only.
    Broader networks are inserted first, so a more specific one overrides them.
    """
    entries: dict[str, dict[str, Any]] = {
        cidr: ({"country": {"iso_code": code}} if code is not None else {}) for cidr, code in mapping.items()
    }
    entries.update(records or {})
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description={"en": "edge test database"},
    )
    for cidr, record in sorted(entries.items(), key=lambda item: netaddr.IPNetwork(item[0]).prefixlen):
        writer.insert_network(netaddr.IPSet([cidr]), record)
    path = Path(path)
    writer.to_db_file(str(path))
    return path


def replace_atomically(target: str | os.PathLike[str], mapping: dict[str, str | None], **kwargs: Any) -> Path:
    """The geoipupdate workflow: write a temporary file beside ``target``, then
    rename it over ``target`` (a new inode; readers of the old one are unaffected)."""
    target = Path(target)
    tmp = target.with_name(target.name + ".tmp")
    write_country_db(tmp, mapping, **kwargs)
    os.replace(tmp, target)
    return target
