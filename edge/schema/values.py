"""Value grammars the node configuration and the tenant policies share:
sizes, country codes and tenant ids. Host names and URLs are
:mod:`edge.http.urls`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from edge.schema.check import BAD, describe

# --- sizes ---------------------------------------------------------------------------

MAX_SIZE = 2**50  # 1 PiB: anything larger is a typo, not a cache
SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 10**3, "kib": 2**10,
    "mb": 10**6, "mib": 2**20,
    "gb": 10**9, "gib": 2**30,
    "tb": 10**12, "tib": 2**40,
}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")
SIZE_EXPECTED = 'a size such as "256MiB" or a number of bytes'


def parse_size(value: object) -> int:
    """Bytes from a number or a string with a unit: ``1048576``, ``"1MiB"``, ``"1.5 gb"``, ``"2TB"``.

    The one size grammar of ``edge.toml`` and of policies. Units B, KB, KiB,
    MB, MiB, GB, GiB, TB and TiB, in any case (there are no bit units to
    confuse them with); decimal units are powers of 1000, binary ones of
    1024. With a unit the amount may have decimals and fractions of a byte
    are dropped; without one it is a whole number of bytes. At most
    ``MAX_SIZE``. Raises ValueError whose message reads "expected ..., found ...".
    """
    amount: Decimal
    whole = True
    if isinstance(value, bool):  # bool is an int subclass; true is no size
        raise ValueError(f"expected {SIZE_EXPECTED}, found {describe(value)}")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float) and math.isfinite(value):
        amount = Decimal(value)
    elif isinstance(value, str) and (m := _SIZE_RE.fullmatch(value)) and (not m[2] or m[2].lower() in SIZE_UNITS):
        try:
            amount = Decimal(m[1]) * SIZE_UNITS[m[2].lower() or "b"]
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise ValueError(f"expected {SIZE_EXPECTED}, found {describe(value)}") from None
        whole = not m[2]
    else:
        raise ValueError(f"expected {SIZE_EXPECTED}, found {describe(value)}")
    if amount < 0:
        raise ValueError(f"expected {SIZE_EXPECTED}, found {describe(value)}")
    if whole and amount != amount.to_integral_value():
        raise ValueError(f"expected a whole number of bytes, found {describe(value)}")
    if amount > MAX_SIZE:
        raise ValueError(f"expected a size of at most 1024TiB, found {describe(value)}")
    return int(amount)


def size_in(lo: int, hi: int) -> Callable[[object], Any]:
    """A converter (see :mod:`edge.schema.check`): a size from ``lo`` to ``hi`` bytes, or BAD."""

    def convert(v: object) -> Any:
        try:
            n = parse_size(v)
        except ValueError:
            return BAD
        return n if lo <= n <= hi else BAD

    return convert


# --- countries -----------------------------------------------------------------------

# ISO 3166-1 alpha-2, officially assigned codes (as in tzdata's iso3166.tab).
# Exceptionally reserved codes such as "UK" or "EU" are refused on purpose:
# data residency decisions compare these codes with the geo database's.
ISO_COUNTRIES: frozenset[str] = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO
    DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU
    GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW
    KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU
    MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW
    PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA
    ZM ZW""".split()
)
COUNTRY = 'an ISO 3166-1 alpha-2 country code such as "DE"'


def country(v: object) -> Any:
    """A country code in any case -> upper case, or BAD."""
    if not isinstance(v, str) or v.upper() not in ISO_COUNTRIES:
        return BAD
    return v.upper()


# --- tenant ids ----------------------------------------------------------------------

TENANT_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
TENANT = f"a tenant id matching ^{TENANT_ID_RE.pattern}$"
# Names in the policy directory that are not tenants (schema.json is the
# policies' JSON Schema, for editors). The loader skips their files, so no
# tenant may take one: the admin API and token configuration refuse them.
RESERVED_TENANTS = frozenset({"schema"})
NOT_RESERVED = ("a tenant id other than " + ", ".join(f'"{n}"' for n in sorted(RESERVED_TENANTS))
                + " (reserved: the policy directory's file of that name is not a tenant)")


__all__ = [
    "COUNTRY", "ISO_COUNTRIES", "MAX_SIZE", "NOT_RESERVED", "RESERVED_TENANTS", "SIZE_EXPECTED", "SIZE_UNITS",
    "TENANT", "TENANT_ID_RE", "country", "parse_size", "size_in",
]
