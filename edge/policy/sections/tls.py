"""The ``tls`` section: how a tenant's hosts get their certificates.
:mod:`edge.tls.acme` applies ``acme``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.schema.check import BOOL, MISSING, Check, boolean

KEYS: dict[str, tuple[str, ...]] = {
    "tls": ("acme",),
}


@dataclass(frozen=True, slots=True)
class TlsSettings:
    # Certificates for the tenant's exact hosts issued and renewed by the
    # node's ACME CA (the node's [acme] section), validated over HTTP-01.
    acme: bool = False


NO_TLS = TlsSettings()


def parse_tls(c: Check, raw: object, path: str) -> TlsSettings:
    if raw is MISSING:
        return NO_TLS
    o = c.object(raw, path, "tls")
    if o is None:
        return NO_TLS
    return TlsSettings(acme=c.get(o, path, "acme", False, BOOL, boolean))


def tls_data(t: TlsSettings) -> dict[str, Any]:
    return {"acme": t.acme}
