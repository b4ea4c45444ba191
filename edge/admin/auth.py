"""Admin authentication: bearer tokens known only by their SHA-256, and a
bounded limiter of failed attempts per client network.

Pure logic, no aiohttp: the routes in ``app.py`` apply it.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.config import OPERATOR, AdminToken

# A token longer than this is not one we issued; hashing megabytes per
# request would be a cheap way to burn CPU.
MAX_TOKEN_LENGTH = 512
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")


def token_hash(token: str) -> str:
    """What goes into the configuration for ``token``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_from_env(value: str) -> AdminToken:
    """``EDGE_ADMIN_TOKEN``: an operator token given in plain text, kept as its hash."""
    return AdminToken(hashlib.sha256(value.strip().encode()).digest(), OPERATOR)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's id (never the token) and its tenant scope."""

    token_id: str
    tenant: str  # "*" for operators

    @property
    def operator(self) -> bool:
        return self.tenant == OPERATOR

    def may(self, tenant: str) -> bool:
        return self.tenant == OPERATOR or self.tenant == tenant


class AuthFailure(Exception):
    """``reason`` is "missing", "malformed" or "unknown" (RFC 6750 §3.1 error codes follow)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def counts(self) -> bool:
        """A guess at a token (limited), rather than a request that forgot one."""
        return self.reason != "missing"

    @property
    def challenge(self) -> str:
        if self.reason == "missing":
            return 'Bearer realm="edge-admin"'
        code = "invalid_request" if self.reason == "malformed" else "invalid_token"
        return f'Bearer realm="edge-admin", error="{code}"'


class TokenSet:
    """The configured tokens. ``check`` hashes the presented token once and
    compares it with every configured hash in constant time, without
    stopping at the first mismatch, so timing tells nothing about how many
    tokens exist or which one came close."""

    def __init__(self, tokens: Iterable[AdminToken] = ()) -> None:
        self.tokens: tuple[AdminToken, ...] = tuple(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def check(self, authorization: str | None) -> Principal:
        if authorization is None:
            raise AuthFailure("missing")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH or not TOKEN_CHARS.issuperset(token):
            raise AuthFailure("malformed")
        presented = hashlib.sha256(token.encode()).digest()
        found: AdminToken | None = None
        for candidate in self.tokens:
            # compare_digest on equal-length digests; every candidate is compared.
            if hmac.compare_digest(presented, candidate.digest) and found is None:
                found = candidate
        if found is None:
            raise AuthFailure("unknown")
        return Principal(found.id, found.tenant)


class FailureLimiter:
    """At most ``limit`` failed attempts per key (a client's /24 or /48) in
    ``window`` seconds; then every attempt from that key gets 429 until the
    window ends, good tokens included (otherwise 429 versus 200 would still
    answer the guesses). Memory is bounded: at most ``max_keys`` keys, the
    least recently failed forgotten first."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._keys: OrderedDict[str, tuple[float, int]] = OrderedDict()  # key -> (window start, failures)

    def __len__(self) -> int:
        return len(self._keys)

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, or None when it may now."""
        entry = self._keys.get(key)
        if entry is None:
            return None
        start, count = entry
        left = start + self.window - self.clock()
        if left <= 0:
            del self._keys[key]
            return None
        if count < self.limit:
            return None
        return max(1, math.ceil(left))

    def failed(self, key: str) -> None:
        now = self.clock()
        start, count = self._keys.pop(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._keys[key] = (start, count + 1)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
