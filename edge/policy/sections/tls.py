"""The ``tls`` section: how a tenant is served over HTTPS. The HTTPS
listeners (:mod:`edge.tls.listener`) and the identify phase apply it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.schema.check import BOOL, MISSING, Check, boolean, int_in, join, one_of

MAX_HSTS_AGE = 2 * 365 * 86400  # two years, the longest a browser is asked to remember
PRELOAD_MIN_AGE = 365 * 86400  # hstspreload.org: at least one year
ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"  # RFC 8555 8.3: answered on plain HTTP, never redirected

KEYS: dict[str, tuple[str, ...]] = {
    "tls": ("redirect_http", "hsts", "min_version", "acme"),
    "hsts": ("max_age", "include_subdomains", "preload"),
}

MIN_VERSION = '"1.2" or "1.3"'
MAX_AGE = f"an integer number of seconds 0..{MAX_HSTS_AGE} (two years)"
PRELOAD = (f"false unless max_age is at least {PRELOAD_MIN_AGE} (one year) and include_subdomains is true "
           "(the rules of hstspreload.org)")
HSTS = "an object with max_age, or null"


@dataclass(frozen=True, slots=True)
class Hsts:
    """Strict-Transport-Security (RFC 6797), sent on HTTPS answers only."""

    max_age: int
    include_subdomains: bool = False
    preload: bool = False

    @property
    def value(self) -> str:
        parts = [f"max-age={self.max_age}"]
        if self.include_subdomains:
            parts.append("includeSubDomains")
        if self.preload:
            parts.append("preload")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """The ``tls`` section; the default redirects nothing and adds no field."""

    redirect_http: bool = False  # plain-HTTP requests get 308 to https (ACME challenges excepted)
    hsts: Hsts | None = None
    min_version: str = "1.2"  # "1.2" or "1.3": connections below it are closed after the handshake
    acme: bool = False  # certificates for the tenant's hosts from an ACME CA

    # The fields every HTTPS answer of the tenant carries (edge.http.aiohttp_adapter.Request).
    answer_fields: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = (("Strict-Transport-Security", self.hsts.value),) if self.hsts is not None else ()
        object.__setattr__(self, "answer_fields", fields)


NO_TLS = TlsPolicy()


def _parse_hsts(c: Check, raw: object, path: str) -> Hsts | None:
    if raw is None:
        return None
    o = c.object(raw, path, "hsts")
    if o is None:
        return None
    if "max_age" not in o:
        c.fail(join(path, "max_age"), MAX_AGE, MISSING)
    max_age = c.get(o, path, "max_age", 0, MAX_AGE, int_in(0, MAX_HSTS_AGE))
    subdomains = c.get(o, path, "include_subdomains", False, BOOL, boolean)
    preload = c.get(o, path, "preload", False, BOOL, boolean)
    if preload and (max_age < PRELOAD_MIN_AGE or not subdomains):
        c.fail(join(path, "preload"), PRELOAD, True)
        preload = False
    return Hsts(max_age, subdomains, preload)


def parse_tls(c: Check, raw: object, path: str) -> TlsPolicy:
    if raw is MISSING:
        return NO_TLS
    o = c.object(raw, path, "tls")
    if o is None:
        return NO_TLS
    hsts_raw = o.get("hsts")
    if hsts_raw is not None and not isinstance(hsts_raw, dict):
        c.fail(join(path, "hsts"), HSTS, hsts_raw)
        hsts = None
    else:
        hsts = _parse_hsts(c, hsts_raw, join(path, "hsts"))
    return TlsPolicy(
        redirect_http=c.get(o, path, "redirect_http", False, BOOL, boolean),
        hsts=hsts,
        min_version=c.get(o, path, "min_version", "1.2", MIN_VERSION, one_of("1.2", "1.3")),
        acme=c.get(o, path, "acme", False, BOOL, boolean),
    )


def tls_data(t: TlsPolicy) -> dict[str, Any]:
    """The section as data again: ``parse_tls`` of it gives an equal value."""
    hsts = None
    if t.hsts is not None:
        hsts = {"max_age": t.hsts.max_age, "include_subdomains": t.hsts.include_subdomains,
                "preload": t.hsts.preload}
    return {"redirect_http": t.redirect_http, "hsts": hsts, "min_version": t.min_version, "acme": t.acme}


__all__ = ["ACME_CHALLENGE_PREFIX", "KEYS", "NO_TLS", "Hsts", "TlsPolicy", "parse_tls", "tls_data"]
