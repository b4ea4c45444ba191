"""Gates: one cheap "could any rule match this value" test per target.

Almost every value of ordinary traffic (a static path, a browser's
User-Agent, a session id, ``red shoes``) matches no rule, so the engine
asks one precompiled question per value before running any transformation
or operator: does the value contain *evidence* one of the target's rules
needs? A value without any passes with that one search.

Evidence of a rule is a set of strings of which every match contains at
least one (an ``any of`` requirement), derived from the rule at load:

* ``rx``: walked over the parsed pattern. A sequence needs each of its
  items, so the cheapest item's evidence serves: a run of literal
  characters (``union``, ``/dev/``), a character class (``[<>]``), a group,
  or an alternation (the union of its branches' evidence; no evidence if
  one branch has none);
* ``pm``, ``contains``, ``eq``: the words themselves (the longest piece
  between spaces);
* libinjection: the characters its tokenizer needs (quotes, operators...);
* a ``gate`` list in the rule replaces the derived evidence.

"Cheapest" depends on where a value comes from: ``;`` and ``(`` are in
every User-Agent but rare in a query value, spaces are in prose but never
in a raw path. So evidence is chosen per target kind (:data:`COMMON`), and a
gate is only as good as its rarest evidence: :func:`weak` names the rules
whose evidence ordinary values of a kind contain, so that nobody adds an
ungated costly rule without noticing.

Transformations could create evidence the raw value lacks (``%3C`` is
``<`` after ``url_decode``), so a value containing what a transformation of
the target's rules acts on (``%``, ``&``, NUL, ``\\``, ``//``, ``/*``...)
always passes the gate. The rest of the transformations only lower-case
(the gate is case-insensitive), remove, or turn whitespace into spaces
(whitespace evidence is the whole class, ``+`` included), so they never
create evidence.
"""
from __future__ import annotations

import re

from edge.waf import operators as ops

try:  # Python 3.11+
    from re import _constants as _c, _parser as _sre
except ImportError:  # pragma: no cover
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _sre  # type: ignore[no-redef]

# Everything \s matches, and "+" which url_decode turns into a space.
# (\s of a str pattern is str.isspace(), and no space is above U+3000.)
SPACES = frozenset(chr(i) for i in range(0x3001) if chr(i).isspace()) | {"+"}

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# Characters ordinary values of a kind of target contain.
COMMON: dict[str, frozenset[str]] = {
    "path": _ALNUM | frozenset("/._-~"),
    # User-Agent, Referer, Accept...: "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) ...; +http://"
    "ua": _ALNUM | frozenset(" \t;()/:.,+-_!~"),
    "header": _ALNUM | frozenset(" \t;()/:.,+=-_*?!~[]"),
    # query and body arguments, cookies: words, numbers, prose, e-mail addresses, URLs
    "value": _ALNUM | frozenset(" \t.,-_/@!?=+()*[]~"),
}

# What each transformation acts on: a value with one of these may gain
# evidence when transformed, so it always passes.
TRIGGERS: dict[str, tuple[str, ...]] = {
    "url_decode": ("%",),
    "html_entity_decode": ("&",),
    "remove_nulls": ("\x00",),
    "normalise_path": ("\\", "//", "/.", "./"),
    "remove_comments": ("/*",),  # becomes a space
    "lowercase": (),
    "compress_whitespace": (),
}


def kind_of(target: str) -> str:
    if target in ("path", "query"):
        return "path"
    if target == "header:user-agent":
        return "ua"
    if target == "headers" or target.startswith("header:"):
        return "header"
    return "value"


# Ordinary values per kind (lower case): evidence found in them is worthless.
SAMPLES: dict[frozenset[str], str] = {
    COMMON["ua"]: " ".join((
        "mozilla/5.0 (windows nt 10.0; win64; x64) applewebkit/537.36 (khtml, like gecko) chrome/122.0.0.0 safari/537.36",
        "mozilla/5.0 (linux; android 14; pixel 8) applewebkit/537.36 (khtml, like gecko) mobile safari/537.36",
        "mozilla/5.0 (iphone; cpu iphone os 17_3 like mac os x) version/17.3 mobile/15e148",
        "mozilla/5.0 (x11; linux x86_64; rv:123.0) gecko/20100101 firefox/123.0",
        "mozilla/5.0 (compatible; googlebot/2.1; +http://www.google.com/bot.html)")),
    COMMON["header"]: " ".join((
        "https://shop.example.de/de/produkte/schuhe?page=2", "text/html,application/xhtml+xml,*/*;q=0.8",
        "de-de,de;q=0.9,en-us;q=0.8", "gzip, deflate, br, zstd", "max-age=0", "keep-alive")),
}


def _chance(s: str, common: frozenset[str]) -> float:
    """Roughly how likely an ordinary value of the kind contains ``s``."""
    if s in SAMPLES.get(common, ""):
        return 1.0
    if len(s) == 1:
        return 1.0 if s in common else 0.001
    if any(ch not in common for ch in s):
        return 0.001
    if not s.isalnum():  # "..", "-c", "/bin/"
        return 0.01 if len(s) == 2 else 0.002
    return {2: 0.15, 3: 0.03}.get(len(s), 0.005)


def cost(evidence: frozenset[str], common: frozenset[str]) -> float:
    none = 1.0
    for s in evidence:
        none *= 1.0 - _chance(s, common)
    return 1.0 - none


def derive(operator: ops.Operator, common: frozenset[str]) -> frozenset[str] | None:
    """Evidence of ``operator`` (see the module docstring); None when there is none."""
    if isinstance(operator, ops.Rx):
        try:
            parsed = _sre.parse(operator.pattern, re.IGNORECASE)
        except re.error:  # pragma: no cover - compiled at load
            return None
        return _seq(list(parsed), common)
    if isinstance(operator, ops.Pm):
        return _words(operator.words, common)
    if isinstance(operator, (ops.Contains, ops.Eq)):
        return _words((operator.text,), common)
    if isinstance(operator, ops.LibinjectionSqli):
        return ops.SQLI_GATE
    if isinstance(operator, ops.LibinjectionXss):
        return ops.XSS_GATE
    return None  # length_gt: any value long enough


def _words(words, common) -> frozenset[str] | None:
    out = set()
    for word in words:
        pieces = [p for p in re.split(r"[\s+]+", word.lower()) if p]
        if not pieces:
            return None
        out.add(min(pieces, key=lambda p: (_chance(p, common), -len(p))))
    return frozenset(out)


def _best(cands: list[frozenset[str]], common) -> frozenset[str] | None:
    if not cands:
        return None
    return min(cands, key=lambda e: (cost(e, common), len(e)))


def _seq(seq, common) -> frozenset[str] | None:
    cands: list[frozenset[str]] = []
    for i, (op, av) in enumerate(seq):
        found = _item(op, av, common)
        if found is not None:
            cands.append(found)
        lead, _ = _lead(seq[i:])
        if lead and all(len(s) >= 2 for s in lead):
            cands.append(lead)
    return _best(cands, common)


_MAX_LEAD = 64


def _lead(seq) -> tuple[frozenset[str] | None, bool]:
    """The strings a match of ``seq`` starts with (lower case; ``on(?:error|load)``
    gives onerror, onload), and whether they span all of ``seq``. None: unknown."""
    outs = {""}
    for op, av in seq:
        if op == _c.AT:
            continue  # zero width
        part: frozenset[str] | None
        complete = True
        if op == _c.LITERAL:
            ch = chr(av)
            part = None if ch in SPACES else frozenset({ch.lower()})
        elif op == _c.IN:
            part = _class(av)
            if part is not None and (len(part) > 4 or part & SPACES):
                part = None
        elif op == _c.SUBPATTERN:
            part, complete = _lead(list(av[3]))
        elif op == _c.BRANCH:
            union: set[str] = set()
            for branch in av[1]:
                sub, done = _lead(list(branch))
                if not sub:
                    union = set()
                    break
                union |= sub
                complete = complete and done
            part = frozenset(union) or None
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT) and av[0] >= 1:
            sub, done = _lead(list(av[2]))
            part = None
            if sub and done and len(sub) == 1:
                part = frozenset({next(iter(sub)) * min(av[0], 8)})
            complete = False
        else:
            part = None
        if not part or "" in part:
            break
        outs = {o + p for o in outs for p in part}
        if len(outs) > _MAX_LEAD:
            return None, False
        if not complete:
            return (frozenset(outs) if "" not in outs else None), False
    else:
        return (frozenset(outs) if "" not in outs else None), True
    return (frozenset(outs) if "" not in outs else None), False


def _item(op, av, common) -> frozenset[str] | None:
    if op == _c.LITERAL:
        ch = chr(av)
        return SPACES if ch == " " else frozenset({ch.lower()})
    if op == _c.IN:
        return _class(av)
    if op == _c.SUBPATTERN:
        return _seq(list(av[3]), common)
    if op == _c.ATOMIC_GROUP:
        return _seq(list(av), common)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        return _seq(list(av[2]), common) if av[0] >= 1 else None
    if op == _c.BRANCH:
        union: set[str] = set()
        for branch in av[1]:
            found = _seq(list(branch), common)
            if found is None:
                return None
            union |= found
        return frozenset(union)
    return None  # anchors, lookarounds, any, negated literals


def _class(items) -> frozenset[str] | None:
    out: set[str] = set()
    for op, av in items:
        if op == _c.LITERAL:
            ch = chr(av)
            out |= SPACES if ch == " " else {ch.lower()}
        elif op == _c.RANGE:
            lo, hi = av
            if hi - lo > 64:
                return None
            for n in range(lo, hi + 1):
                ch = chr(n)
                out |= SPACES if ch == " " else {ch.lower()}
        elif op == _c.CATEGORY and av == _c.CATEGORY_SPACE:
            out |= SPACES
        else:  # NEGATE, \w, \d...: too much
            return None
    return frozenset(out)


def compile_gate(evidence: set[str], triggers: set[str]):
    """``search`` of a case-insensitive regex for any of ``evidence`` or ``triggers``."""
    chars = sorted(s for s in evidence | triggers if len(s) == 1)
    words = {s.lower() for s in evidence | triggers if len(s) > 1}
    parts = []
    if chars:
        parts.append("[" + "".join(_class_escape(ch) for ch in chars) + "]")
    if words:
        parts.append(ops.trie(words))
    return re.compile("|".join(parts), re.IGNORECASE).search


def _class_escape(ch: str) -> str:
    return "\\" + ch if ch in "\\]^-[" else ch
