"""Cache keys: path normalisation, query filtering, secondary (Vary) keys.

A wrong key leads to cache poisoning or to one tenant reading another's
entries, so every key starts with the tenant id and nothing here has a
default that could silently widen a key.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from urllib.parse import unquote

# Parameters that only carry analytics; they never change what an origin
# answers, so they must never fragment the cache.
DEFAULT_TRACKING_PARAMS: tuple[str, ...] = (
    "utm_*",
    "fbclid",
    "gclid",
    "dclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "_gl",
    "yclid",
    "igshid",
)


@dataclass(frozen=True, slots=True)
class KeyOptions:
    """What of a request goes into its cache key (besides tenant, host and path).

    Names in the three param lists may end in ``*`` (prefix match). Header
    names are lower-case; cookie names are case-sensitive.
    """

    tracking_params: tuple[str, ...] = DEFAULT_TRACKING_PARAMS
    drop_params: tuple[str, ...] = ()
    keep_params: tuple[str, ...] | None = None  # None: keep all not dropped
    sort_params: bool = True
    headers: tuple[str, ...] = ()
    cookies: tuple[str, ...] = ()


# --- percent-encoding canonicalisation (RFC 3986 §6.2.2) --------------------

_UNRESERVED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
# Characters that may stay literal: pchar plus "/" (path) and "?" (query),
# RFC 3986 §3.3 and §3.4. Everything else is percent-encoded as UTF-8, so
# "/a b" and "/a%20b" (or a raw and an encoded non-ASCII letter) share a key.
_PATH_SAFE = r"A-Za-z0-9\-._~!$&'()*+,;=:@/"
_QUERY_SAFE = _PATH_SAFE + "?"

# One token of work each: a percent triplet, a lone "%" (path: invalid), or
# a character that must be encoded. Anything the regex does not match is copied as is.
_PATH_TOKEN = re.compile(r"%(?:[0-9A-Fa-f]{2})?|[^" + _PATH_SAFE + "]")
_QUERY_TOKEN = re.compile(r"%[0-9A-Fa-f]{2}|[^" + _QUERY_SAFE + "]")
_QUERY_RAW_UNSAFE = re.compile(r"[^%" + _QUERY_SAFE + "]")
_MALFORMED_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Any character that needs work ("%" included, as it is not in the safe
# sets). Without one (and without "//" or "/.") a path is already canonical.
_PATH_UNSAFE = re.compile(r"[^" + _PATH_SAFE + "]")
_QUERY_UNSAFE = re.compile(r"[^" + _QUERY_SAFE + "]")

_PCT = tuple("%{:02X}".format(b) for b in range(256))


class _Invalid(Exception):
    """Internal: the path cannot be canonicalised (caller answers 400)."""


def _encode_char(ch: str) -> str:
    try:
        data = ch.encode("utf-8", "surrogateescape")  # aiohttp keeps undecodable bytes this way
    except UnicodeEncodeError:
        raise _Invalid from None
    return "".join(_PCT[b] for b in data)


def _path_token(m: re.Match[str]) -> str:
    tok = m.group()
    if tok[0] == "%":
        if len(tok) == 1:
            raise _Invalid  # "%zz", "%4", a trailing "%"
        b = int(tok[1:], 16)
        if b == 0:
            raise _Invalid  # NUL truncates strings in C origins and logs
        c = chr(b)
        return c if c in _UNRESERVED else _PCT[b]
    if tok < " " or tok == "\x7f":
        raise _Invalid
    # Backslash lands here too and becomes "%5C": some origins (IIS, many
    # Windows stacks) treat "\" as "/", so "/a\..\b" could escape what the
    # key says. Encoding it keeps it an ordinary, canonical data octet that
    # never takes part in dot-segment removal; "\" and "%5c" share one key.
    return _encode_char(tok)


def _query_token(m: re.Match[str]) -> str:
    tok = m.group()
    if tok[0] == "%" and len(tok) == 3:
        b = int(tok[1:], 16)
        c = chr(b)
        return c if c in _UNRESERVED else _PCT[b]
    try:
        return _encode_char(tok)
    except _Invalid:
        # A lone surrogate (not from a real request): still encode, so a
        # normalised query is always ASCII.
        return "".join(_PCT[b] for b in tok.encode("utf-8", "surrogatepass"))


def _canon_query_part(part: str) -> str:
    if _MALFORMED_PCT.search(part) is None:
        return _QUERY_TOKEN.sub(_query_token, part)
    # A malformed escape ("%zz", "%4"): decoders disagree on it (Go drops
    # the parameter, PHP keeps "%zz"), so it must not share a key with
    # "%25zz"; and decoding its neighbours could forge a valid escape
    # ("%%41a" -> "%Aa"). Keep the escapes verbatim, only encode what may
    # not appear raw. The "%" stays malformed, so these forms never meet a
    # canonical one.
    return _QUERY_RAW_UNSAFE.sub(_query_token, part)


# --- paths --------------------------------------------------------------------

def normalise_path(raw_path: str, limit: int = 8192) -> str | None:
    """Canonical form of a request path (without query), or None for a 400.

    Decodes percent-encoded unreserved characters, upper-cases the remaining
    escapes (RFC 3986 §6.2.2.1-2), keeps "%2F" encoded (it is data, not a
    separator), removes dot-segments after decoding so "%2e%2e" counts as
    ".." (§5.2.4, never above root) and collapses repeated slashes. The
    result never contains control characters, so it is safe in a key.
    """
    if len(raw_path) > limit or raw_path[:1] != "/":
        return None
    if "//" not in raw_path and "/." not in raw_path and _PATH_UNSAFE.search(raw_path) is None:
        return raw_path  # the common case: nothing to decode or resolve
    try:
        decoded = _PATH_TOKEN.sub(_path_token, raw_path)
    except _Invalid:
        return None
    path = _resolved(decoded[1:].split("/"))
    return path if len(path) <= limit else None


def _resolved(segments: Iterable[str]) -> str:
    """The path of ``segments`` with dot-segments removed (never above root)
    and empty segments collapsed."""
    out: list[str] = []
    trailing = False  # "/a/" and "/a" may differ at the origin; keep the slash
    for seg in segments:
        if seg == "" or seg == ".":
            trailing = True
        elif seg == "..":
            if out:
                out.pop()
            trailing = True
        else:
            out.append(seg)
            trailing = False
    if not out:
        return "/"
    return "/" + "/".join(out) + ("/" if trailing else "")


def decoded_view(path: str) -> str:
    """The path as an origin may read it, for rule matching only.

    ``path`` is already normalised (edge.cache.key.normalise_path), which
    keeps "%2F" encoded because it is data to a strict origin. Lenient
    origins read it otherwise: most decode "%2F" to "/" (some decode twice),
    Tomcat and Spring drop ";params" from each segment, IIS turns "\\" into
    "/". This view does all of that and resolves the dot-segments it
    uncovers, so a rule for "/account/" also sees "/account%2Forders",
    "/account;x=1/orders" and "/static/..%2Faccount/orders".
    """
    # Remembered for short paths only: the cache must not hold megabytes of
    # paths anyone can make up.
    return _decoded_cached(path) if len(path) <= 512 else _decoded_view(path)


def _decoded_view(path: str) -> str:
    if "%" not in path and ";" not in path and "\\" not in path:
        return path  # the common case: normalised is already what every origin reads
    for _ in range(3):
        if "%" not in path:
            break
        path = unquote(path, errors="surrogateescape")
    return _resolved(seg.partition(";")[0] for seg in path.replace("\\", "/").split("/")[1:])


_decoded_cached = lru_cache(maxsize=4096)(_decoded_view)


# --- queries -----------------------------------------------------------------

def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A predicate for names in ``patterns`` ("x*" matches any name starting with "x")."""
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    if not prefixes:
        return exact.__contains__
    if "" in prefixes:  # a bare "*"
        return lambda name: True
    return lambda name: name in exact or name.startswith(prefixes)


@lru_cache(maxsize=1024)
def _build_filter(opts: KeyOptions) -> Callable[[str], bool]:
    drop = _matcher(opts.tracking_params + opts.drop_params)
    if opts.keep_params is None:
        return lambda name: not drop(name)
    keep = _matcher(opts.keep_params)
    return lambda name: keep(name) and not drop(name)


# id(opts) -> (opts, filter). Policies hand the same KeyOptions object to
# every request, so an identity lookup skips hashing the dataclass (which
# costs more than the rest of a short query). Holding opts keeps its id from
# being reused; the value-keyed lru_cache above still shares equal options.
_FILTERS: dict[int, tuple[KeyOptions, Callable[[str], bool]]] = {}


def param_filter(opts: KeyOptions) -> Callable[[str], bool]:
    """Whether a query parameter (by its canonical name) stays in keys made
    with ``opts``; built once per options object, and shared by equal ones."""
    entry = _FILTERS.get(id(opts))
    if entry is not None and entry[0] is opts:
        return entry[1]
    if len(_FILTERS) >= 1024:  # policy reloads create new objects; stay bounded
        _FILTERS.clear()
    keep = _build_filter(opts)
    _FILTERS[id(opts)] = (opts, keep)
    return keep


def normalise_query(query: str, opts: KeyOptions) -> str:
    """Canonical form of a raw query string (without "?") for the cache key.

    Drops tracking/drop params, applies keep_params, canonicalises escapes
    like the path ("+" stays "+": whether it means a space is the origin's
    business) and sorts by name. Sorting is stable and by name only: the
    order of repeated names is meaningful to many origins (PHP takes the
    last, others the first), so "a=1&a=2" and "a=2&a=1" keep distinct keys.
    Names are matched after canonicalisation ("utm%5Fsource" is
    "utm_source") and case-sensitively, as origins read them. Empty pieces
    ("a=1&&b=2") carry nothing and are dropped; drop wins over keep.
    """
    if not query:
        return ""
    keeps = param_filter(opts)
    canon = _QUERY_UNSAFE.search(query) is not None
    params: list[tuple[str, str]] = []
    for piece in query.split("&"):
        if not piece:
            continue
        name, eq, value = piece.partition("=")
        if canon:
            name = _canon_query_part(name)
        if not keeps(name):
            continue
        if canon and value:
            value = _canon_query_part(value)
        params.append((name, name + eq + value))
    if opts.sort_params and len(params) > 1:
        params.sort(key=_by_name)
    return "&".join([p for _, p in params])


_by_name = itemgetter(0)


# --- hosts -------------------------------------------------------------------

_MAX_HOST = 255
_REG_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_PORT = re.compile(r"[0-9]{0,5}")


def host_key(host_header: str) -> str | None:
    """The tenant-identifying form of a Host header, or None when invalid.

    Lower-cased, one trailing dot removed ("example.com." is the same DNS
    name), port removed: a tenant is a name, and the listener port is node
    configuration, so "a.com" and "a.com:8080" must share one cache. IPv6
    literals keep their brackets and are written in RFC 5952 form.
    """
    # Checked before the memo so hostile megabyte headers never sit in it.
    if not host_header or len(host_header) > _MAX_HOST + 6:
        return None
    return _host_key(host_header)


@lru_cache(maxsize=4096)
def _host_key(host_header: str) -> str | None:
    if not host_header.isascii():
        return None  # IDNs arrive as A-labels (punycode); raw UTF-8 is not a host
    h = host_header.lower()
    if h[0] == "[":
        end = h.find("]")
        if end < 0 or not _valid_port(h[end + 1 :]):
            return None
        literal = h[1:end]
        # IPvFuture and zone ids (RFC 6874) are not something a client sends to a CDN.
        try:
            addr = ipaddress.IPv6Address(literal)
        except ValueError:
            return None
        if addr.scope_id is not None:
            return None
        return "[" + addr.compressed + "]"
    name, colon, port = h.partition(":")
    if colon and not _valid_port(":" + port):
        return None
    if name.endswith("."):
        name = name[:-1]
    # Stricter than RFC 3986 reg-name on purpose: sub-delims and escapes are
    # never part of a DNS name, and "," would let two combined Host lines
    # ("a.com, b.com") pass as one tenant.
    if not name or len(name) > _MAX_HOST or _REG_NAME.fullmatch(name) is None:
        return None
    if any(len(label) > 63 for label in name.split(".")):
        return None
    return name


host_key.cache_info = _host_key.cache_info  # type: ignore[attr-defined] - the memo's size and hits, as lru_cache reports them


def _valid_port(rest: str) -> bool:
    """Whether what follows the host is empty or ":" and a port."""
    if not rest:
        return True
    if rest[0] != ":":
        return False
    digits = rest[1:]
    # An empty port ("a.com:") is allowed and equivalent to none (RFC 3986 §6.2.3).
    return _PORT.fullmatch(digits) is not None and (not digits or int(digits) <= 65535)


# --- primary key -------------------------------------------------------------

# Separator between the fixed fields. Normalised tenant ids, hosts, paths and
# queries never contain it (control characters are rejected or encoded), so
# "tenant\n" is a safe prefix for tenant-wide purges and scans.
SEP = "\n"
_ABSENT = "~"  # marks a header/cookie the request did not carry


def _lp(value: str) -> str:
    # Length prefix: header and cookie values may contain anything,
    # separators included, so they are never delimited, only counted.
    return f"{len(value)}:{value}"


def field_value(headers: Mapping[str, str], name: str) -> str | None:
    """One request header's value, field lines combined (RFC 9110 §5.3)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values = getall(name, None)
        if values is None:
            return None
        value = ", ".join(values)
    else:
        value = headers.get(name)
        if value is None:
            return None
    if "," in value:
        return ", ".join(part.strip(" \t") for part in value.split(","))
    return value.strip(" \t")


def tenant_prefix(tenant: str) -> str:
    """The prefix shared by every primary key of ``tenant`` (for purges and scans)."""
    if SEP in tenant:
        raise ValueError(f"tenant id contains a key separator: {tenant!r}")
    return tenant + SEP


def primary_key(
    tenant: str,
    host: str,
    path: str,
    query: str,
    opts: KeyOptions,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
) -> str:
    """The cache key of a request: ``tenant\\nhost\\npath\\nquery[\\nextras]``.

    host, path and query must already be normalised (host_key,
    normalise_path, normalise_query); a separator in them means the caller
    skipped that, and is refused rather than risking a collision. Extras
    are the opts.headers and opts.cookies, each as name and value
    length-prefixed, an absent one distinct from an empty one.
    """
    head = tenant + SEP + host + SEP + path + SEP + query
    if head.count(SEP) != 3:
        raise ValueError("cache key fields must not contain a newline; normalise them first")
    if not opts.headers and not opts.cookies:
        return head
    parts = [head, SEP]
    for name in opts.headers:
        value = field_value(headers, name)
        parts.append("h" + _lp(name) + (_ABSENT if value is None else _lp(value)))
    for name in opts.cookies:
        value = cookies.get(name)
        parts.append("c" + _lp(name) + (_ABSENT if value is None else _lp(value)))
    return "".join(parts)


# --- Vary (RFC 9111 §4.1) ----------------------------------------------------

@lru_cache(maxsize=1024)
def vary_names(vary_header: str | None) -> tuple[str, ...] | None:
    """Selecting header names of a response: lower-cased, unique, sorted.

    None when Vary contains "*" (the response can never be selected by a
    later request, §4.1); () when Vary is absent or empty. Pass all Vary
    field lines joined with ", ".
    """
    if not vary_header:
        return ()
    names = set()
    for part in vary_header.split(","):
        name = part.strip(" \t").lower()
        if name == "*":
            return None
        if name:
            names.add(name)
    return tuple(sorted(names))


def vary_key(names: tuple[str, ...], request_headers: Mapping[str, str]) -> str:
    """Secondary key: the request's values of the selecting headers.

    Values are compared after combining field lines with ", " and removing
    whitespace around commas and at the ends (§4.1 allows normalising).
    An absent header only matches absence, so it is encoded apart from an
    empty one. Names are part of the key, so a changed Vary never reuses a
    variant stored under other names.
    """
    if not names:
        return ""
    parts = []
    for name in names:
        value = field_value(request_headers, name)
        if name == "accept-encoding":
            # A few buckets, not every browser's spelling; the origin is sent
            # the bucket too (edge/pipeline/upstream.py), so it answers for it.
            value = encoding_bucket(value)
        parts.append(_lp(name) + (_ABSENT if value is None else _lp(value)))
    return "".join(parts)


# Between a primary key and a variant's secondary key: a control character,
# never in a normalised key field, and apart from SEP, so that a key's URL
# ends at the first of the two.
VARIANT_SEP = "\x1f"


def variant_key(key: str, names: tuple[str, ...] | None, request_headers: Mapping[str, str]) -> str:
    """Where the response selected by these request headers is stored
    (RFC 9111 §4.1): the primary key alone when nothing varies."""
    return key + VARIANT_SEP + vary_key(names, request_headers) if names else key


_BUCKETS: dict[str | None, str] = {}


def encoding_bucket(accept_encoding: str | None) -> str:
    """``accept_bucket`` memoised: browsers send a handful of spellings."""
    bucket = _BUCKETS.get(accept_encoding)
    if bucket is None:
        from edge.cache.compress import accept_bucket

        if len(_BUCKETS) > 4096:
            _BUCKETS.clear()
        bucket = _BUCKETS[accept_encoding] = accept_bucket(accept_encoding)
    return bucket
