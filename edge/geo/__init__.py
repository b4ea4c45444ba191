"""Geo building blocks: the country database (MMDB, hot reload), the client
address behind trusted proxies, and the PROXY protocol listener."""
from __future__ import annotations

from edge.geo.client import Trusted, client_address, normalise_address
from edge.geo.db import GeoDB, GeoDBError, GeoMetadata, find_default_database

__all__ = [
    "GeoDB",
    "GeoDBError",
    "GeoMetadata",
    "Trusted",
    "client_address",
    "find_default_database",
    "normalise_address",
]
