"""Structured Field Values for HTTP, RFC 8941: strict parsing (§4.2).

Pure and total: a value either parses exactly as the algorithms of §4.2
say, or ``StructuredFieldError`` is raised and the caller ignores the whole
field (§4.2: "if parsing fails, the entire field value is ignored"). Nothing
is repaired or guessed. Serialising is not needed here and not provided.

Python values: Integer -> int, Decimal -> ``decimal.Decimal``, String -> str,
Token -> ``Token`` (a str), Byte Sequence -> bytes, Boolean -> bool.
Dictionaries and parameters are dicts: a repeated key keeps its first
position and takes the last value (§4.2.2, §4.2.3.2).
"""
from __future__ import annotations

import base64
import binascii
import decimal
import re
from typing import NamedTuple

__all__ = [
    "BareItem",
    "InnerList",
    "Item",
    "StructuredFieldError",
    "Token",
    "parse_dictionary",
    "parse_item",
    "parse_list",
]


class StructuredFieldError(ValueError):
    """The value is not a valid structured field of the asked type."""


class Token(str):
    """An sf-token (§3.3.4), told apart from an sf-string by its type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Token({str.__repr__(self)})"


BareItem = int | decimal.Decimal | str | bytes | bool


class Item(NamedTuple):
    value: BareItem
    params: dict[str, BareItem]


class InnerList(NamedTuple):
    items: tuple[Item, ...]
    params: dict[str, BareItem]


Member = Item | InnerList

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")  # §3.1.2
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~:/A-Za-z0-9]*")  # §3.3.4: tchar, ":" and "/"
_NUMBER = re.compile(r"-?([0-9]+)(?:\.([0-9]*))?")  # lengths checked as §4.2.4 says
_STRING = re.compile(r'"((?:[ !#-\[\]-~]|\\["\\])*)"')  # §3.3.3: printable ASCII, \" and \\ escaped
_UNESCAPE = re.compile(r"\\(.)")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")  # §3.3.5
_OWS = re.compile(r"[ \t]*")
_SP = re.compile(r" *")
_MAX_INTEGER_DIGITS = 15  # §3.3.1
_MAX_DECIMAL_INT_DIGITS = 12  # §3.3.2
_MAX_DECIMAL_FRACTION_DIGITS = 3


class _Parser:
    __slots__ = ("s", "i", "n")

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0
        self.n = len(s)

    def fail(self, why: str) -> StructuredFieldError:
        return StructuredFieldError(f"{why} at offset {self.i}")

    def char(self) -> str:
        i = self.i
        return self.s[i] if i < self.n else ""

    def top(self, parse) -> object:
        """§4.2: ASCII only, leading and trailing SP (not HTAB), nothing left over."""
        if not self.s.isascii():
            raise StructuredFieldError("not ASCII")
        self.i = _SP.match(self.s).end()
        value = parse()
        self.i = _SP.match(self.s, self.i).end()
        if self.i != self.n:
            raise self.fail("unexpected character")
        return value

    def separator(self) -> bool:
        """After a list or dictionary member: OWS "," OWS before the next
        (no trailing comma), or the end. True when another member follows."""
        s = self.s
        i = _OWS.match(s, self.i).end()
        if i == self.n:
            self.i = i
            return False
        if s[i] != ",":
            self.i = i
            raise self.fail('expected ","')
        self.i = _OWS.match(s, i + 1).end()
        if self.i == self.n:
            raise self.fail("trailing comma")
        return True

    # §4.2.1
    def list(self) -> list[Member]:
        members: list[Member] = []
        more = self.i < self.n
        while more:
            members.append(self.inner_list() if self.char() == "(" else self.item())
            more = self.separator()
        return members

    # §4.2.1.2
    def inner_list(self) -> InnerList:
        s, n = self.s, self.n
        self.i += 1  # "("
        items: list[Item] = []
        while self.i < n:
            self.i = _SP.match(s, self.i).end()
            if self.char() == ")":
                self.i += 1
                return InnerList(tuple(items), self.parameters())
            items.append(self.item())
            c = self.char()
            if c != " " and c != ")":
                raise self.fail("expected SP or ) in inner list")
        raise self.fail("unterminated inner list")

    # §4.2.2
    def dictionary(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        more = self.i < self.n
        while more:
            key = self.key()
            if self.char() == "=":
                self.i += 1
                members[key] = self.inner_list() if self.char() == "(" else self.item()
            else:
                members[key] = Item(True, self.parameters())
            more = self.separator()
        return members

    # §4.2.3
    def item(self) -> Item:
        value = self.bare_item()
        return Item(value, self.parameters())

    # §4.2.3.1
    def bare_item(self) -> BareItem:
        c = self.char()
        if c == "-" or "0" <= c <= "9":
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            return self.boolean()
        m = _TOKEN.match(self.s, self.i)
        if m is None:
            raise self.fail("expected an item")
        self.i = m.end()
        return Token(m.group())

    # §4.2.3.2
    def parameters(self) -> dict[str, BareItem]:
        params: dict[str, BareItem] = {}
        s = self.s
        while self.char() == ";":
            self.i = _SP.match(s, self.i + 1).end()
            key = self.key()
            if self.char() == "=":
                self.i += 1
                params[key] = self.bare_item()
            else:
                params[key] = True
        return params

    # §4.2.3.3
    def key(self) -> str:
        m = _KEY.match(self.s, self.i)
        if m is None:
            raise self.fail("expected a key")
        self.i = m.end()
        return m.group()

    # §4.2.4
    def number(self) -> int | decimal.Decimal:
        m = _NUMBER.match(self.s, self.i)
        if m is None:
            raise self.fail("expected a digit")
        whole, fraction = m.group(1), m.group(2)
        if fraction is None:
            if len(whole) > _MAX_INTEGER_DIGITS:
                raise self.fail("integer with too many digits")
            self.i = m.end()
            return int(m.group())
        if len(whole) > _MAX_DECIMAL_INT_DIGITS:
            raise self.fail("decimal with too many integer digits")
        if not fraction:
            raise self.fail("decimal ends with a dot")
        if len(fraction) > _MAX_DECIMAL_FRACTION_DIGITS:
            raise self.fail("decimal with too many fraction digits")
        self.i = m.end()
        return decimal.Decimal(m.group())

    # §4.2.5
    def string(self) -> str:
        m = _STRING.match(self.s, self.i)
        if m is None:
            raise self.fail("malformed string")
        self.i = m.end()
        text = m.group(1)
        return _UNESCAPE.sub(r"\1", text) if "\\" in text else text

    # §4.2.7
    def byte_sequence(self) -> bytes:
        m = _BYTES.match(self.s, self.i)
        if m is None:
            raise self.fail("malformed byte sequence")
        # §4.2.7: missing "=" padding SHOULD NOT fail; padding inside does.
        core = m.group(1).rstrip("=")
        if "=" in core or len(core) % 4 == 1:
            raise self.fail("malformed base64")
        try:
            value = base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
        except binascii.Error:
            raise self.fail("malformed base64") from None
        self.i = m.end()
        return value

    # §4.2.8
    def boolean(self) -> bool:
        c = self.s[self.i + 1 : self.i + 2]
        if c != "1" and c != "0":
            raise self.fail("expected ?0 or ?1")
        self.i += 2
        return c == "1"


def parse_dictionary(value: str) -> dict[str, Member]:
    """An sf-dictionary (§3.2); field lines joined with ", " beforehand (§4.2)."""
    p = _Parser(value)
    return p.top(p.dictionary)  # type: ignore[return-value]


def parse_list(value: str) -> list[Member]:
    """An sf-list (§3.1); field lines joined with ", " beforehand (§4.2)."""
    p = _Parser(value)
    return p.top(p.list)  # type: ignore[return-value]


def parse_item(value: str) -> Item:
    """An sf-item (§3.3)."""
    p = _Parser(value)
    return p.top(p.item)  # type: ignore[return-value]
