"""Range requests answered from a stored response (RFC 9110 §14, §13.1.5).

Pure functions, no clock, no I/O besides the body streams handed in. The
cache always stores the whole representation; a range request is cut from it
on the way out, so one stored entry serves every range and the origin never
sees a Range header for a cacheable request.

Outcomes of ``parse_range``:

- ``Outcome.IGNORE``: serve the whole representation with 200. No Range
  field, a unit other than ``bytes``, a field that does not parse, too many
  ranges, or a zero-length representation (RFC 9110 §14.2: a server MAY
  ignore the field in all these cases; it MUST for an unknown unit).
- ``Outcome.PARTIAL``: 206 with the satisfiable ranges, clamped to the
  representation, as inclusive ``(first, last)`` offsets.
- ``Outcome.UNSATISFIABLE``: 416 with ``Content-Range: bytes */size``
  (§14.1.1, §15.5.17).

Range amplification (§14.2 "a ranges-specifier with more than two
overlapping ranges, or a set of many small ranges that are not listed in
ascending order" may be ignored or rejected; §14.6 allows coalescing):

- more than ``MAX_RANGES`` range-specs: ignored, the client gets the whole
  representation once (200) instead of up to N copies of it;
- overlapping or adjacent ranges: all ranges are coalesced into sorted,
  disjoint ranges, so a 206 never carries more bytes than the representation
  (``bytes=0-,0-,0-`` gets it once, not three times);
- disjoint ranges keep the client's order (§14.6 SHOULD).
"""
from __future__ import annotations

import enum
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from edge.http.dates import parse_http_date
from edge.http.headers import is_token

__all__ = [
    "MAX_RANGES",
    "STRONG_DATE_MARGIN",
    "Ignored",
    "Outcome",
    "RangeResult",
    "forwarded_range",
    "if_range_allows",
    "multipart",
    "multipart_chunks",
    "multipart_content_type",
    "multipart_length",
    "new_boundary",
    "parse_range",
    "single_part_headers",
    "slice_chunks",
    "unsatisfiable_headers",
]

# More range-specs than this and the field is ignored (200 full): a player
# asks for one range, a PDF viewer for a handful.
MAX_RANGES = 16
# RFC 9110 §8.8.2.2: a cache may deem a stored Last-Modified strong when it is
# at least 60 seconds before the stored Date (two changes within the second
# it names cannot then hide behind it).
STRONG_DATE_MARGIN = 60.0

# 19 digits always fit in 63 bits; longer numerals are refused rather than
# trusted (§14.1.2 asks recipients to anticipate overflowing numerals).
_INT_RANGE = re.compile(r"([0-9]{1,19})-([0-9]{1,19})?")
_SUFFIX_RANGE = re.compile(r"-([0-9]{1,19})")
_OWS = " \t"
# entity-tag = [ W/ ] DQUOTE *etagc DQUOTE (RFC 9110 §8.8.3), as in conditional.py.
_ENTITY_TAG = re.compile('(W/)?"([\x21\x23-\x7e\x80-\U0010ffff]*)"')


class Outcome(enum.Enum):
    IGNORE = "ignore"  # 200 with the whole representation
    PARTIAL = "partial"  # 206
    UNSATISFIABLE = "unsatisfiable"  # 416


class Ignored(enum.Enum):
    """Why a Range field was not acted on (for Cache-Status details and logs)."""

    ABSENT = "range-absent"
    UNIT = "range-unit"
    INVALID = "range-invalid"
    TOO_MANY = "range-too-many"
    EMPTY = "range-empty-representation"


Span = tuple[int, int]  # (first, last) byte offsets, inclusive


@dataclass(frozen=True, slots=True)
class RangeResult:
    outcome: Outcome
    ranges: tuple[Span, ...] = ()
    ignored: Ignored | None = None

    @property
    def total(self) -> int:
        """Bytes of content the ranges select."""
        return sum(last - first + 1 for first, last in self.ranges)


_ABSENT = RangeResult(Outcome.IGNORE, ignored=Ignored.ABSENT)
_UNIT = RangeResult(Outcome.IGNORE, ignored=Ignored.UNIT)
_INVALID = RangeResult(Outcome.IGNORE, ignored=Ignored.INVALID)
_TOO_MANY = RangeResult(Outcome.IGNORE, ignored=Ignored.TOO_MANY)
_EMPTY = RangeResult(Outcome.IGNORE, ignored=Ignored.EMPTY)
_UNSATISFIABLE = RangeResult(Outcome.UNSATISFIABLE)


def parse_range(value: str | None, size: int) -> RangeResult:
    """The Range field of a GET against a representation of ``size`` bytes.

    ``value`` is the single Range field line (pass None when the request has
    none or repeats it: the field is a singleton, §14.2).
    """
    specs = _specs(value)
    if isinstance(specs, RangeResult):
        return specs

    if size <= 0:
        # §14.1.2: on a zero-length representation only a suffix-range with a
        # non-zero length is satisfiable, yet no Content-Range can describe its
        # zero bytes: §14.2 lets a server ignore Range there, so 200 (empty).
        if any(first is None and n for first, n in specs):
            return _EMPTY
        return _UNSATISFIABLE

    spans: list[Span] = []
    for first, last in specs:
        if first is None:  # suffix-range: the last n bytes, all if shorter (§14.1.2)
            if last:
                spans.append((max(size - last, 0), size - 1))
        elif first < size:
            spans.append((first, size - 1 if last is None or last >= size else last))
    if not spans:
        return _UNSATISFIABLE
    return RangeResult(Outcome.PARTIAL, _coalesced(spans))


def _specs(value: str | None) -> list[tuple[int | None, int | None]] | RangeResult:
    """The range-specs of a Range field as (first, last) with None for an
    open end (``first-``) or (None, n) for a suffix, or why it is ignored."""
    if value is None:
        return _ABSENT
    unit, eq, rest = value.strip(_OWS).partition("=")
    if not eq:
        return _INVALID
    if unit.lower() != "bytes":  # range units compare case-insensitively (§14.1)
        return _UNIT if is_token(unit) else _INVALID
    # range-set = 1#range-spec: OWS around commas, empty elements tolerated
    # (§5.6.1), at least one element.
    specs: list[tuple[int | None, int | None]] = []
    for element in rest.split(","):
        element = element.strip(_OWS)
        if not element:
            continue
        if len(specs) == MAX_RANGES:
            return _TOO_MANY
        m = _INT_RANGE.fullmatch(element)
        if m is not None:
            first = int(m.group(1))
            last = None if m.group(2) is None else int(m.group(2))
            if last is not None and last < first:
                return _INVALID  # §14.1.2: invalid, so the whole field is
            specs.append((first, last))
            continue
        m = _SUFFIX_RANGE.fullmatch(element)
        if m is None:
            return _INVALID  # other-range, signs, non-ASCII digits, > 19 digits
        specs.append((None, int(m.group(1))))
    if not specs:
        return _INVALID
    return specs


def forwarded_range(value: str | None) -> str | None:
    """The Range field to send an origin for a client's ``value`` when the
    size is not known yet, or None to send none (the origin answers 200 in
    full, which §14.2 allows for any field the edge would ignore).

    Canonical and bounded: at most MAX_RANGES specs, overlapping or adjacent
    ones merged, so the origin is never asked for the same bytes twice
    (``bytes=0-,0-,0-`` becomes ``bytes=0-``).
    """
    specs = _specs(value)
    if isinstance(specs, RangeResult):
        return None
    bounded = [(first, last) for first, last in specs if first is not None and last is not None]
    open_from = min((first for first, last in specs if first is not None and last is None), default=None)
    suffix = max((n for first, n in specs if first is None), default=None)
    if open_from == 0:
        return "bytes=0-"  # the whole object, once: any suffix is inside it
    parts: list[str] = []
    if bounded:
        spans = _coalesced(bounded)
        if open_from is not None:
            # An open range swallows every span that reaches it.
            kept = [(a, b) for a, b in spans if b + 1 < open_from]
            open_from = min([open_from] + [a for a, b in spans if b + 1 >= open_from])
            spans = tuple(kept)
        parts.extend(f"{a}-{b}" for a, b in spans)
    if open_from is not None:
        parts.append(f"{open_from}-")
    if suffix is not None:
        parts.append(f"-{suffix}")
    return "bytes=" + ",".join(parts)


def _coalesced(spans: list[Span]) -> tuple[Span, ...]:
    """Sorted and merged when any two overlap or touch; else as requested."""
    ordered = sorted(spans)
    if all(ordered[i][1] + 1 < ordered[i + 1][0] for i in range(len(ordered) - 1)):
        return tuple(spans)
    merged = [ordered[0]]
    for first, last in ordered[1:]:
        top_first, top_last = merged[-1]
        if first <= top_last + 1:
            merged[-1] = (top_first, max(top_last, last))
        else:
            merged.append((first, last))
    return tuple(merged)


# ------------------------------------------------------------------ If-Range


def if_range_allows(if_range: str | None, etag: str | None, last_modified: str | None, date: str | None) -> bool:
    """RFC 9110 §13.1.5: whether the Range field is to be acted on.

    True without If-Range. An entity-tag must be strong and equal to the
    stored strong ETag (strong comparison, §8.8.3.2); a weak one never
    matches. An HTTP-date must equal the stored Last-Modified, and that must
    be a strong validator: at least ``STRONG_DATE_MARGIN`` seconds before the
    stored Date (§8.8.2.2). Anything malformed is false: the client gets the
    whole representation, which is always safe. ``etag``, ``last_modified``
    and ``date`` are the stored response's single field values.
    """
    if if_range is None:
        return True
    value = if_range.strip(_OWS)
    if value[:1] == '"' or value[:2] == "W/":
        m = _ENTITY_TAG.fullmatch(value)
        if m is None or m.group(1) is not None or etag is None:
            return False
        current = _ENTITY_TAG.fullmatch(etag.strip(_OWS))
        return current is not None and current.group(1) is None and current.group(2) == m.group(2)
    when = parse_http_date(value)
    if when is None:
        return False
    modified = parse_http_date(last_modified)
    sent = parse_http_date(date)
    if modified is None or sent is None:
        return False
    return when == modified and sent - modified >= STRONG_DATE_MARGIN


# ------------------------------------------------------------------ responses


def single_part_headers(start: int, end: int, size: int) -> dict[str, str]:
    """Fields of a single-part 206 (§14.4, §15.3.7.1)."""
    return {"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)}


def unsatisfiable_headers(size: int) -> dict[str, str]:
    """Fields of a 416 (§15.5.17): the current length, for the client's next try."""
    return {"Content-Range": f"bytes */{size}"}


def new_boundary() -> str:
    """24 random hex digits: a body containing the delimiter by chance is a
    2**-96 event, and a client cannot choose content to break it."""
    return secrets.token_hex(12)


def multipart_content_type(boundary: str) -> str:
    return f"multipart/byteranges; boundary={boundary}"


def _part_head(boundary: str, content_type: str | None, first: int, last: int, size: int, leading: bool) -> bytes:
    # The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1):
    # every part but the first is preceded by one, the body itself ends
    # without one.
    lines = ["\r\n--" if leading else "--", boundary, "\r\n"]
    if content_type and "\r" not in content_type and "\n" not in content_type:
        lines += ["Content-Type: ", content_type, "\r\n"]
    lines += [f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n"]
    return "".join(lines).encode("utf-8", "surrogateescape")


def _tail(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")


def multipart_length(ranges: Iterable[Span], content_type: str | None, size: int, boundary: str) -> int:
    """The exact Content-Length of the multipart body for these ranges (the
    same for ``multipart`` and ``multipart_chunks``)."""
    total = 0
    for i, (first, last) in enumerate(ranges):
        total += len(_part_head(boundary, content_type, first, last, size, i > 0)) + last - first + 1
    return total + len(_tail(boundary))


def multipart(
    ranges: Iterable[Span], body: bytes, content_type: str | None, size: int, boundary: str | None = None
) -> tuple[str, bytes]:
    """A ``multipart/byteranges`` body (§14.6) cut from a body held in
    memory, parts in the order given. Returns (Content-Type value, body)."""
    ranges = tuple(ranges)
    if boundary is None:
        boundary = new_boundary()
        while any(boundary.encode("ascii") in body[first : last + 1] for first, last in ranges):
            boundary = new_boundary()
    out = bytearray()
    for i, (first, last) in enumerate(ranges):
        out += _part_head(boundary, content_type, first, last, size, i > 0)
        out += body[first : last + 1]
    out += _tail(boundary)
    return multipart_content_type(boundary), bytes(out)


async def multipart_chunks(
    ranges: Iterable[Span], chunks: AsyncIterator[bytes], content_type: str | None, size: int, boundary: str
) -> AsyncIterator[bytes]:
    """The multipart body for a streamed (disk) body, in one pass over it.

    Parts come in ascending order, whatever the request's order: one read of
    the stored body outweighs §14.6's SHOULD about order. The length is the
    same either way (``multipart_length``). ``chunks`` is closed at the end.
    A source shorter than the ranges ends the body early; the caller, who
    announced ``multipart_length``, notices the short count.
    """
    ordered = sorted(ranges)
    pos = 0
    i = 0
    try:
        if ordered:
            first, last = ordered[0]
            yield _part_head(boundary, content_type, first, last, size, False)
            async for chunk in chunks:
                end = pos + len(chunk)
                while i < len(ordered):
                    first, last = ordered[i]
                    lo, hi = max(first, pos), min(last + 1, end)
                    if lo < hi:
                        yield chunk[lo - pos : hi - pos]
                    if last + 1 > end:
                        break  # this part continues in the next chunk
                    i += 1
                    if i < len(ordered):
                        first, last = ordered[i]
                        yield _part_head(boundary, content_type, first, last, size, True)
                pos = end
                if i == len(ordered):
                    break
            if i < len(ordered):
                return
        yield _tail(boundary)
    finally:
        await _close(chunks)


async def slice_chunks(chunks: AsyncIterator[bytes], start: int, end_inclusive: int) -> AsyncIterator[bytes]:
    """Bytes ``start`` to ``end_inclusive`` of a chunked body (a disk hit):
    earlier bytes are skipped, reading stops after the last one, and the
    source is closed in every case. A short source yields fewer bytes."""
    pos = 0
    try:
        async for chunk in chunks:
            end = pos + len(chunk)
            if end > start:
                lo, hi = max(start - pos, 0), min(end_inclusive + 1 - pos, len(chunk))
                if lo == 0 and hi == len(chunk):
                    yield chunk
                elif lo < hi:
                    yield chunk[lo:hi]
            pos = end
            if pos > end_inclusive:
                break
    finally:
        await _close(chunks)


async def _close(chunks) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
