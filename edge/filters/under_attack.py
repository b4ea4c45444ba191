"""Under-attack mode (``filters.under_attack``): a proof-of-work challenge in
front of a tenant, and a signed clearance cookie for clients that solved it.

While the mode is on (``"on"``, or ``"auto"`` while the tenant's request rate
is over ``auto_rps``), a GET or HEAD without a valid ``edge_clearance`` cookie
gets a small HTML page (503, never cached) instead of the site. Its script
finds a nonce such that ``sha256(challenge + ":" + nonce)`` starts with
``difficulty`` zero bits and submits it to ``/.well-known/edge-challenge``,
which answers 303 back to the page with the cookie. Other methods from
unverified clients get 403: a POST cannot follow a challenge. Paths in
``exclude_paths`` (APIs, webhooks, CORS preflights) are never challenged.

Nothing is stored per client. The challenge carries its own HMAC over the
tenant, the time it was issued, a random part, the difficulty and the
client's network (/24 for IPv4, /64 for IPv6: one subscriber's addresses),
so any worker sharing the secret can verify it, and it cannot be carried to
another network or tenant. The cookie is ``v1.<expiry>.<hmac>`` over tenant,
network and expiry: checking it is a split, a comparison with the clock and
one HMAC, and values verified lately skip even that.

The no-script fallback submits ``nonce=wait``, accepted once
``WAIT_SECONDS`` have passed since the challenge was issued. It costs a bot
time rather than CPU, and so does the proof of work for a bot with native
SHA-256 (some 65,000 hashes at difficulty 16 take milliseconds): the mode
turns away floods that do not run the page or keep cookies, and slows the
rest; it is no defence against a browser botnet.

Auto mode counts the tenant's requests in one-second buckets per worker
process (with N workers, the tenant's rate is about N times what one worker
sees) and estimates the rate over the last second from the current and the
previous bucket. Over ``auto_rps`` the mode is on until ``auto_hold``
seconds after the rate was last over it.

The section (its dataclass, parser and serialiser) is
:mod:`edge.policy.sections.under_attack`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

from edge.filters._record import Recorder
from edge.filters.chain import Verdict
from edge.policy.sections.under_attack import MAX_DIFFICULTY, MIN_DIFFICULTY, UnderAttack
from edge.schema.values import TENANT_ID_RE

log = logging.getLogger("edge.filters")

CHALLENGE_PATH = "/.well-known/edge-challenge"
COOKIE = "edge_clearance"
CHALLENGE_TTL = 300  # seconds a challenge may be solved in
WAIT_SECONDS = 5  # the no-script fallback's price
MAX_CLOCK_SKEW = 5  # workers share the clock; this is for hosts of one node
MAX_FORM_BODY = 4096
MAX_RETURN_URL = 2048
MIN_SECRET = 16  # bytes
MAX_VERIFIED = 10_000  # cookie values whose HMAC is not recomputed


# --- signing (pure) ---------------------------------------------------------------------


@lru_cache(maxsize=65536)
def client_prefix(peer: str | None) -> str:
    """The network a challenge and a cookie are bound to: IPv4 /24, IPv6 /64
    (IPv4-mapped IPv6 as IPv4), "-" when there is no usable address."""
    if not peer:
        return "-"
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return "-"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
        ip = ip.ipv4_mapped
    return str(ipaddress.IPv4Network(f"{ip}/24", strict=False))


@lru_cache(maxsize=8)
def _keyed(secret: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hashes with the key already absorbed
    (RFC 2104): copying them costs a fifth of a fresh hmac.digest()."""
    if len(secret) > 64:
        secret = hashlib.sha256(secret).digest()
    key = secret.ljust(64, b"\0")
    return hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key))


def _mac(secret: bytes, message: str) -> str:
    """hex HMAC-SHA256(secret, message)."""
    inner, outer = _keyed(secret)
    h = inner.copy()
    h.update(message.encode())
    o = outer.copy()
    o.update(h.digest())
    return o.hexdigest()


def make_challenge(secret: bytes, tenant: str, prefix: str, issued: int, difficulty: int,
                   rand: str | None = None) -> str:
    """``v1.<tenant>.<issued>.<random 16 hex>.<difficulty>.<hmac>``; the HMAC
    covers everything before it and the client's network ("|" keeps the two
    apart: no difficulty and network can be shifted into each other)."""
    body = f"v1.{tenant}.{issued}.{rand or secrets.token_hex(8)}.{difficulty}"
    return f"{body}.{_mac(secret, body + '|' + prefix)}"


_CHALLENGE_RE = re.compile(rf"v1\.({TENANT_ID_RE.pattern})\.([0-9]{{1,12}})\.([0-9a-f]{{16}})\.([0-9]{{1,2}})\.([0-9a-f]{{64}})")
_NONCE_RE = re.compile(r"[0-9]{1,20}")


def leading_zero_bits_ok(challenge: str, nonce: str, difficulty: int) -> bool:
    """sha256(challenge + ":" + nonce) starts with ``difficulty`` zero bits
    (at most 32: the policy allows up to 24)."""
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - difficulty) == 0


def solve(challenge: str, difficulty: int) -> str:
    """The nonce the page's script finds: the first decimal that works."""
    n = 0
    while not leading_zero_bits_ok(challenge, str(n), difficulty):
        n += 1
    return str(n)


def verify_challenge(secret: bytes, challenge: str, nonce: str, *, tenant: str, prefix: str,
                     now: float) -> str | None:
    """None when the solution is good, else what is wrong with it (for the client)."""
    m = _CHALLENGE_RE.fullmatch(challenge)
    if m is None:
        return "malformed challenge: reload the page"
    c_tenant, issued_s, _, difficulty_s, mac = m.groups()
    if c_tenant != tenant:
        return "challenge issued for another site: reload the page"
    age = now - int(issued_s)
    if age > CHALLENGE_TTL:
        return "challenge expired: reload the page"
    if age < -MAX_CLOCK_SKEW:
        return "challenge from the future: reload the page"
    body = challenge[: -65]
    if not hmac.compare_digest(mac, _mac(secret, body + "|" + prefix)):
        # The network is not in the challenge: a moved client and a forged
        # challenge look the same.
        return "challenge issued to another network, or altered: reload the page"
    difficulty = int(difficulty_s)
    if nonce == "wait":
        if age < WAIT_SECONDS:
            return f"too early: wait {WAIT_SECONDS} seconds after the page appears, then continue"
        return None
    if not _NONCE_RE.fullmatch(nonce):
        return "malformed nonce"
    if not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY or not leading_zero_bits_ok(challenge, nonce, difficulty):
        return "wrong proof of work"
    return None


def make_cookie(secret: bytes, tenant: str, prefix: str, expiry: int) -> str:
    return f"v1.{expiry}.{_mac(secret, f'clear|{tenant}|{prefix}|{expiry}')}"


def cookie_expiry(secret: bytes, value: str, *, tenant: str, prefix: str) -> int | None:
    """The expiry of a genuine cookie for this tenant and network, else None."""
    version, _, rest = value.partition(".")
    expiry_s, _, mac = rest.partition(".")
    if version != "v1" or not expiry_s.isdigit() or len(expiry_s) > 12 or len(mac) != 64:
        return None
    if not hmac.compare_digest(mac, _mac(secret, f"clear|{tenant}|{prefix}|{expiry_s}")):
        return None
    return int(expiry_s)


def safe_return_url(url: str) -> bool:
    """A path (and query) on this site: starts with "/", not "//" and no "\\"
    (browsers read "/\\host" as "//host"), printable ASCII only (a tab or
    newline is dropped by URL parsers and could join "/" and "/host")."""
    return (
        0 < len(url) <= MAX_RETURN_URL
        and url[0] == "/"
        and url[1:2] != "/"
        and "\\" not in url
        and all(33 <= ord(ch) <= 126 for ch in url)
    )


def _cookie_value(request) -> str | None:
    for header in request.headers.getall("Cookie", ()):
        if COOKIE not in header:
            continue
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name == COOKIE:
                return value.strip('"')
    return None


# --- the page ----------------------------------------------------------------------------

# The solver: SHA-256 in plain JavaScript. crypto.subtle exists only in
# secure contexts (not on plain-http sites), and its promise per digest made
# it four times slower than this loop (node 20: ~600 ms against ~150 ms per
# 65,536 digests). Only the first 32 bits of a digest are compared: the
# difficulty is at most 24 bits. It yields to the browser every 4096 digests;
# if anything fails it falls back to the no-script answer after the wait.
_SCRIPT = (
    "(function(){"
    'var F=document.getElementById("f"),C=F.elements.challenge.value,B=+F.dataset.bits,K=[],I=[],p=2,i=0,j;'
    "for(;i<64;p++){for(j=2;j*j<=p&&p%j;j++);"
    "if(j*j>p){if(i<8)I[i]=Math.pow(p,.5)*4294967296|0;K[i++]=Math.pow(p,1/3)*4294967296|0}}"
    "function r(x,y){return x>>>y|x<<32-y}"
    "function h(m){var l=m.length,L=((l+8>>6)+1)*16,W=[],w=[],H=I.slice(),a,b,c,d,e,f,g,k,t,u,i,j;"
    "for(i=0;i<L;i++)W[i]=0;"
    "for(i=0;i<l;i++)W[i>>2]|=m.charCodeAt(i)<<24-i%4*8;"
    "W[l>>2]|=128<<24-l%4*8;W[L-1]=l*8;"
    "for(i=0;i<L;i+=16){a=H[0];b=H[1];c=H[2];d=H[3];e=H[4];f=H[5];g=H[6];k=H[7];"
    "for(j=0;j<64;j++){"
    "if(j<16)w[j]=W[i+j];else{t=w[j-15];u=w[j-2];"
    "w[j]=(r(t,7)^r(t,18)^t>>>3)+(r(u,17)^r(u,19)^u>>>10)+w[j-16]+w[j-7]|0}"
    "t=k+(r(e,6)^r(e,11)^r(e,25))+(e&f^~e&g)+K[j]+w[j]|0;"
    "u=(r(a,2)^r(a,13)^r(a,22))+(a&b^a&c^b&c)|0;"
    "k=g;g=f;f=e;e=d+t|0;d=c;c=b;b=a;a=t+u|0}"
    "t=[a,b,c,d,e,f,g,k];for(j=0;j<8;j++)H[j]=H[j]+t[j]|0}"
    "return H[0]>>>0}"
    "function go(n){F.elements.nonce.value=n;F.submit()}"
    "async function solve(){for(var n=0;;n++){"
    'if(h(C+":"+n)>>>32-B==0)return String(n);'
    "if(n%4096==4095)await new Promise(function(z){setTimeout(z,0)})}}"
    "solve().then(go,function(){setTimeout(function(){go(\"wait\")}," + str(WAIT_SECONDS * 1000 + 500) + ")})"
    "})()"
)
_STYLE = "body{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:4em auto;padding:0 1em;color:#222}"


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this page's own script and style run; no fetches, frames or other forms.
CSP = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    '<meta name="robots" content="noindex"><title>Checking your browser</title>'
    "<style>" + _STYLE + "</style></head><body>"
    "<h1>One moment, please</h1>"
    "<p>This site is protecting itself against a flood of requests. Your browser is doing a short "
    "check, then the page you asked for opens by itself.</p>"
    '<form id="f" method="get" action="' + CHALLENGE_PATH + '" data-bits="{bits}">'
    '<input type="hidden" name="challenge" value="{challenge}">'
    '<input type="hidden" name="url" value="{url}">'
    '<input type="hidden" name="nonce" value="wait">'
    "<noscript><p>JavaScript is off: wait " + str(WAIT_SECONDS) + " seconds, then press Continue.</p>"
    "<button>Continue</button></noscript></form>"
    "<script>" + _SCRIPT + "</script></body></html>"
)


def render_page(challenge: str, url: str, difficulty: int) -> bytes:
    return (
        _PAGE.replace("{bits}", str(difficulty))
        .replace("{challenge}", challenge)  # [a-z0-9._-] only
        .replace("{url}", html.escape(url, quote=True))
        .encode()
    )


PAGE_HEADERS = {
    "Retry-After": str(WAIT_SECONDS),
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
}
PAGE_TYPE = "text/html; charset=utf-8"


# --- the filter --------------------------------------------------------------------------


class _Rate:
    """One tenant's requests in the current and the previous whole second."""

    __slots__ = ("sec", "count", "prev", "until", "on")

    def __init__(self) -> None:
        self.sec = 0
        self.count = 0
        self.prev = 0
        self.until = 0.0
        self.on = False


class UnderAttackFilter:
    name = "under_attack"

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET:
            raise ValueError(f"the under-attack secret must be at least {MIN_SECRET} random bytes")
        self.secret = secret
        self.clock = clock
        self._rates: dict[str, _Rate] = {}
        # Genuine cookie values seen lately -> (tenant, network, expiry): they
        # skip the HMAC. Only verified values get in; emptied when full (a
        # plain dict costs a twentieth of an LRU's bookkeeping per lookup).
        self._verified: dict[str, tuple[str, str, int]] = {}
        self._record = Recorder(self.name)

    # ----------------------------------------------------------------- auto mode

    def engaged(self, tenant: str, settings: UnderAttack, now: float) -> bool:
        """Whether the mode is on for the tenant now; in auto mode this counts
        one request of the tenant."""
        if settings.mode != "auto":
            return settings.mode == "on"
        rate = self._rates.get(tenant)
        if rate is None:
            rate = self._rates[tenant] = _Rate()
        sec = int(now)
        if sec != rate.sec:
            rate.prev = rate.count if sec == rate.sec + 1 else 0
            rate.sec = sec
            rate.count = 0
        rate.count += 1
        # Sliding estimate: the previous second weighted by how much of it is
        # still within the last second.
        estimate = rate.count + rate.prev * (1.0 - (now - sec))
        if estimate > settings.auto_rps:
            rate.until = now + settings.auto_hold
            if not rate.on:
                rate.on = True
                log.warning("under attack mode on: tenant=%s rate=%.0f/s auto_rps=%g (this worker)",
                            tenant, estimate, settings.auto_rps)
        elif rate.on and now >= rate.until:
            rate.on = False
            log.warning("under attack mode off: tenant=%s rate=%.0f/s auto_rps=%g (this worker)",
                        tenant, estimate, settings.auto_rps)
        return rate.on

    # -------------------------------------------------------------------- check

    def wants(self, policy) -> bool:
        return policy.filters.under_attack.active

    def check(self, request, ctx, policy) -> Verdict | None:
        settings: UnderAttack = policy.filters.under_attack
        if not settings.active:
            return None
        now = self.clock()
        tenant = policy.tenant
        on = self.engaged(tenant, settings, now)
        path = ctx.path
        if path == CHALLENGE_PATH:
            # Answered whenever the mode is configured, so that a challenge
            # issued just before auto mode went off still gets its cookie.
            method = request.method
            if method == "GET" or method == "HEAD":
                return self._submit(request.query, request, ctx, tenant, settings, now)
            if method == "POST":
                return None  # the pipeline reads the form: verify_form()
            return Verdict(400, "the challenge answer must be sent with GET or POST",
                           "filter.under_attack.bad-request", {"Allow": "GET, HEAD, POST"})
        if not on or ctx.allowlisted:
            return None
        for prefix in settings.exclude_paths:
            if path.startswith(prefix):
                return None
        network = client_prefix(ctx.peer)
        value = _cookie_value(request)
        if value is not None and self._cleared(value, tenant, network, settings, now):
            return None
        method = request.method
        if method != "GET" and method != "HEAD":
            self._record.refused(tenant, "post-denied", "block", ctx.peer)
            return Verdict(403, "this site is checking browsers: open a page of it in your browser first, "
                           "then try again", "filter.under_attack.post-denied")
        self._record.count(tenant, "challenge", "challenge")
        challenge = make_challenge(self.secret, tenant, network, int(now), settings.difficulty)
        return self._page(challenge, _return_url(request, path), settings.difficulty, "challenge")

    def _cleared(self, value: str, tenant: str, network: str, settings: UnderAttack, now: float) -> bool:
        seen = self._verified.get(value)
        if seen is not None and seen[0] == tenant and seen[1] == network:
            expiry = seen[2]
        else:
            expiry = cookie_expiry(self.secret, value, tenant=tenant, prefix=network)
            if expiry is None:
                return False
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
            self._verified[value] = (tenant, network, expiry)
        # A lowered cookie_ttl shortens cookies already handed out, too.
        return now < expiry <= now + settings.cookie_ttl + MAX_CLOCK_SKEW

    def _page(self, challenge: str, url: str, difficulty: int, rule: str) -> Verdict:
        return Verdict(503, "checking your browser", f"filter.under_attack.{rule}", dict(PAGE_HEADERS),
                       body=render_page(challenge, url, difficulty), content_type=PAGE_TYPE)

    # --------------------------------------------------------------- the answer

    def takes_form(self, request, ctx, policy) -> bool:
        """A POST to CHALLENGE_PATH: the answer to a no-script challenge."""
        return ctx.path == CHALLENGE_PATH and request.method == "POST"

    async def verify_form(self, request, ctx, policy) -> Verdict | None:
        """A POSTed answer (``application/x-www-form-urlencoded``) to
        ``CHALLENGE_PATH``; None when the tenant has the mode off (the request
        is then the site's own)."""
        settings: UnderAttack = policy.filters.under_attack
        if not settings.active:
            return None
        ctype = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return _bad("send the challenge answer as application/x-www-form-urlencoded")
        if request.content_length is not None and request.content_length > MAX_FORM_BODY:
            return _bad(f"challenge answer larger than {MAX_FORM_BODY} bytes")
        body = bytearray()
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            body += chunk
            if len(body) > MAX_FORM_BODY:
                return _bad(f"challenge answer larger than {MAX_FORM_BODY} bytes")
        try:
            fields = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body),
                              max_num_fields=10)
        except ValueError:  # also UnicodeDecodeError, too many fields
            return _bad("malformed form body")
        return self._submit(_Fields(fields), request, ctx, policy.tenant, settings, self.clock())

    def _submit(self, fields, request, ctx, tenant: str, settings: UnderAttack, now: float) -> Verdict:
        values = {}
        for name in ("challenge", "nonce", "url"):
            got = fields.getall(name, ())
            if len(got) != 1:
                return _bad(f"exactly one {name} is required" if got else f"missing {name}")
            values[name] = got[0]
        url = values["url"]
        if not safe_return_url(url):
            return _bad('url must be a path on this site: starting with "/", not "//"')
        network = client_prefix(ctx.peer)
        challenge = values["challenge"]
        problem = verify_challenge(self.secret, challenge, values["nonce"], tenant=tenant, prefix=network, now=now)
        if problem is not None:
            if problem.startswith("too early"):
                # The same challenge again, so the wait already served counts.
                self._record.count(tenant, "failed", "early")
                return self._page(challenge, url, settings.difficulty, "early")
            self._record.refused(tenant, "failed", "block", ctx.peer)
            return Verdict(403, problem, "filter.under_attack.failed")
        self._record.count(tenant, "solved", "allow")
        expiry = int(now) + settings.cookie_ttl
        cookie = (f"{COOKIE}={make_cookie(self.secret, tenant, network, expiry)}; Path=/; "
                  f"Max-Age={settings.cookie_ttl}; HttpOnly; SameSite=Lax")
        if request.secure:
            cookie += "; Secure"
        return Verdict(303, "see other", "filter.under_attack.solved", {"Location": url, "Set-Cookie": cookie})

    def is_on(self, tenant: str) -> bool:
        """Whether auto mode is currently on for the tenant in this worker."""
        rate = self._rates.get(tenant)
        return rate is not None and rate.on


class _Fields:
    """parse_qs output with the MultiDict method the query has."""

    __slots__ = ("_d",)

    def __init__(self, d: Mapping[str, list[str]]) -> None:
        self._d = d

    def getall(self, name: str, default=()):
        return self._d.get(name, default)


def _bad(text: str) -> Verdict:
    return Verdict(400, text, "filter.under_attack.bad-request")


def _return_url(request, path: str) -> str:
    """Where the solved page sends the client: the request target as sent,
    or the normalised path when that is not a safe local URL."""
    raw = request.raw_path
    return raw if safe_return_url(raw) else (path if safe_return_url(path) else "/")
