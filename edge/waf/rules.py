"""WAF rules as data: loading, validation and the regular-expression safety check.

A rule set is every ``*.json`` file of a directory (``policies/waf/`` ships
the default), read in name order. A file is ``{"description": ..., "rules":
[...]}``; the format of a rule is in ``policies/waf/README.md``.

Loading is all or nothing: the first problem raises :class:`WafRuleError`
naming the file, the rule (id, or index when it has no usable id), the
field and what was expected. Nothing global changes, so a caller that
reloads keeps its previous :class:`RuleSet` when loading fails.

Regular expressions run on attacker-controlled input inside the event
loop, so a pattern that can backtrack catastrophically is refused at load
(:func:`redos_problem`): a conservative static check over the parsed
pattern, which may refuse some safe patterns but accepts no pattern of
the known exponential shapes.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

try:  # Python 3.11+
    from re import _constants as _c, _parser as _sre
except ImportError:  # pragma: no cover
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _sre  # type: ignore[no-redef]

from edge.shipped import policies_dir
from edge.waf import operators as ops
from edge.waf.transforms import TRANSFORMS

TAGS = ("sqli", "xss", "lfi", "rfi", "rce", "php", "java", "scanner", "protocol")
# Targets read from the request line and headers: cheap, every request.
REQUEST_TARGETS = ("method", "path", "query", "args", "args_names", "headers", "cookies", "cookie_names")
# Targets only a body has. "args" and "args_names" are both: the query's
# arguments with the request, the body's (form, multipart, JSON) with the body.
BODY_TARGETS = ("body", "files")
TARGETS = REQUEST_TARGETS + BODY_TARGETS
RULE_KEYS = ("id", "description", "targets", "transforms", "operator", "value", "score", "tags", "paranoia", "phase",
             "gate")
PHASES = ("request", "body")
FILE_KEYS = ("description", "rules")
MAX_SCORE = 100
MAX_PARANOIA = 4
MAX_PATTERN = 4096

_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEADER_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


class WafRuleError(Exception):
    """A rule file that cannot be used; ``str()`` says where and what."""


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str
    targets: tuple[str, ...]  # "path", "args", "header:user-agent", ...
    transforms: tuple[str, ...]
    operator: ops.Operator
    score: int
    tags: tuple[str, ...]
    paranoia: int = 1
    # "request" or "body": the rule sees only the query's or only the body's
    # arguments (a body may carry markup or code a query never should). None: both.
    phase: str | None = None
    # Declared evidence (see edge.waf.gates): one of these strings occurs,
    # case-insensitively, in every value the rule matches. None: derived.
    gate: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    ids: frozenset[str]
    source: str  # the directory, for messages


def default_rules_dir() -> Path:
    """The shipped rule set, ``policies/waf``."""
    return policies_dir() / "waf"


def files_stamp(directory: Path) -> tuple | None:
    """Names, modification times and sizes of the rule files: what tells a
    changed rule set from the one read before. None when unreadable."""
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in Path(directory).glob("*.json")))
    except OSError:
        return None


_IDS: dict[str, tuple[tuple, frozenset[str]]] = {}


def rule_ids(directory: Path | None = None) -> frozenset[str]:
    """The ids of the rules in ``directory`` (default: the shipped set, the
    one a node compiles), read again when its files change.

    What a policy's WAF exclusions may name when the caller passes no rule
    set (``edge policy validate``, a node's first load before it compiles
    its rules).
    Files broken since they were last read leave the ids read then, as a
    node keeps its previous rules; broken from the start: WafRuleError.
    """
    directory = Path(directory) if directory is not None else default_rules_dir()
    stamp = files_stamp(directory)
    known = _IDS.get(str(directory))
    if known is not None and known[0] == stamp:
        return known[1]
    try:
        ids = load_ruleset(directory).ids
    except WafRuleError:
        if known is None:
            raise
        return known[1]
    _IDS[str(directory)] = (stamp, ids)
    return ids


def load_ruleset(directory: Path) -> RuleSet:
    directory = Path(directory)
    if not directory.is_dir():
        raise WafRuleError(f"{directory}: expected a directory of WAF rule files (*.json), found none")
    files = sorted(directory.glob("*.json"))
    if not files:
        raise WafRuleError(f"{directory}: expected at least one WAF rule file (*.json), found none")
    rules: list[Rule] = []
    where: dict[str, str] = {}
    for file in files:
        for rule in load_file(file):
            if rule.id in where:
                raise WafRuleError(f"{file.name}: rule {rule.id}: id: expected an id no other rule has, "
                                   f"found one already used in {where[rule.id]}")
            where[rule.id] = file.name
            rules.append(rule)
    return RuleSet(tuple(rules), frozenset(where), str(directory))


def load_file(file: Path) -> list[Rule]:
    name = file.name
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WafRuleError(f"{name}: expected a readable UTF-8 file, found {type(exc).__name__}: {exc}") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise WafRuleError(f"{name}: expected each key once in an object, found {exc.args[0]!r} twice") from None
    except ValueError as exc:
        raise WafRuleError(f"{name}: expected JSON, found a syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise WafRuleError(f'{name}: expected an object {{"rules": [...]}}, found {_show(data)}')
    for key in data:
        if key not in FILE_KEYS:
            raise WafRuleError(f"{name}: {key}: expected one of the keys {', '.join(FILE_KEYS)}, found an unknown key")
    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list):
        raise WafRuleError(f"{name}: rules: expected a list of rules, found {_show(raw_rules, missing=True)}")
    seen: set[str] = set()
    out = []
    for i, raw in enumerate(raw_rules):
        rule = parse_rule(raw, name, i)
        if rule.id in seen:
            raise WafRuleError(f"{name}: rule {rule.id}: id: expected an id no other rule has, found it twice in this file")
        seen.add(rule.id)
        out.append(rule)
    return out


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _show(value: object, *, missing: bool = False) -> str:
    if value is None and missing:
        return "nothing"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:59] + "…"


def parse_rule(raw: object, file: str, index: int) -> Rule:
    """One rule from its decoded JSON; ``file`` and ``index`` are for messages."""
    label = f"rules[{index}]"
    if not isinstance(raw, dict):
        raise WafRuleError(f"{file}: {label}: expected a rule object, found {_show(raw)}")
    rid = raw.get("id")
    if isinstance(rid, str) and _ID_RE.fullmatch(rid):
        label = f"rule {rid}"

    def fail(field: str, expected: str, found: str) -> WafRuleError:
        return WafRuleError(f"{file}: {label}: {field}: expected {expected}, found {found}")

    for key in raw:
        if key not in RULE_KEYS and key != "_comment":
            raise fail(key, "one of the keys " + ", ".join(RULE_KEYS), "an unknown key")
    for key in ("id", "targets", "operator", "score", "tags"):
        if key not in raw:
            raise fail(key, _EXPECTED[key], "nothing")
    if not (isinstance(rid, str) and _ID_RE.fullmatch(rid)):
        raise fail("id", _EXPECTED["id"], _show(rid))
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "a string", _show(description))

    targets = raw["targets"]
    if not isinstance(targets, list) or not targets:
        raise fail("targets", _EXPECTED["targets"], _show(targets))
    for i, t in enumerate(targets):
        if not isinstance(t, str) or not _valid_target(t):
            raise fail(f"targets[{i}]", _TARGET, _show(t))

    transforms = raw.get("transforms", [])
    if not isinstance(transforms, list):
        raise fail("transforms", "a list of transformation names", _show(transforms))
    for i, t in enumerate(transforms):
        if not isinstance(t, str) or t not in TRANSFORMS:
            raise fail(f"transforms[{i}]", "one of " + ", ".join(TRANSFORMS), _show(t))

    op_name = raw["operator"]
    if not isinstance(op_name, str) or op_name not in ops.VALUES:
        raise fail("operator", _EXPECTED["operator"], _show(op_name))
    operator = _operator(op_name, raw, fail)

    score = raw["score"]
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= MAX_SCORE:
        raise fail("score", _EXPECTED["score"], _show(score))
    tags = raw["tags"]
    if not isinstance(tags, list) or not tags:
        raise fail("tags", _EXPECTED["tags"], _show(tags))
    for i, t in enumerate(tags):
        if t not in TAGS:
            raise fail(f"tags[{i}]", "one of " + ", ".join(TAGS), _show(t))
    paranoia = raw.get("paranoia", 1)
    if isinstance(paranoia, bool) or not isinstance(paranoia, int) or not 1 <= paranoia <= MAX_PARANOIA:
        raise fail("paranoia", f"an integer 1..{MAX_PARANOIA}", _show(paranoia))
    phase = raw.get("phase")
    if phase is not None and phase not in PHASES:
        raise fail("phase", '"request" or "body"', _show(phase))
    gate = raw.get("gate")
    if gate is not None:
        if (not isinstance(gate, list) or not gate
                or not all(isinstance(g, str) and g and not any(ch.isspace() or ch == "+" for ch in g) for g in gate)):
            raise fail("gate", 'a non-empty list of non-empty strings without spaces or "+"', _show(gate))
        gate = tuple(dict.fromkeys(gate))
    return Rule(rid, description, tuple(dict.fromkeys(targets)), tuple(transforms), operator, score,
                tuple(dict.fromkeys(tags)), paranoia, phase, gate)


_TARGET = ("one of " + ", ".join(TARGETS) + ', or "header:NAME" with a lower-case header name')
_EXPECTED = {
    "id": 'an id of 1 to 64 letters, digits, ".", "_" or "-"',
    "targets": "a non-empty list of targets",
    "operator": "one of " + ", ".join(ops.VALUES),
    "score": f"an integer 1..{MAX_SCORE}",
    "tags": "a non-empty list of tags (" + ", ".join(TAGS) + ")",
}


def _valid_target(t: str) -> bool:
    if t in TARGETS:
        return True
    kind, sep, name = t.partition(":")
    return kind == "header" and bool(sep) and _HEADER_RE.fullmatch(name) is not None


def _operator(name: str, raw: dict, fail) -> ops.Operator:
    expected = ops.VALUES[name]
    value = raw.get("value")
    if expected is None:
        if "value" in raw:
            raise fail("value", f"no value for operator {name}", _show(value))
        if not ops.libinjection_available():
            raise fail("operator", f"{name} with the libinjection-python package installed", "it missing")
        return ops.LibinjectionSqli() if name == "libinjection_sqli" else ops.LibinjectionXss()
    if "value" not in raw:
        raise fail("value", expected, "nothing")
    if name == "rx":
        if not isinstance(value, str) or not value or len(value) > MAX_PATTERN:
            raise fail("value", f"a regular expression of 1..{MAX_PATTERN} characters", _show(value))
        try:
            regex = re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise fail("value", "a regular expression that compiles", f"{_show(value)} ({exc})") from None
        problem = redos_problem(value)
        if problem is not None:
            raise fail("value", "a regular expression without catastrophic backtracking",
                       f"{_show(value)} ({problem})")
        return ops.Rx(value, regex, required_chars(value))
    if name == "pm":
        if (not isinstance(value, list) or not value
                or not all(isinstance(w, str) and w for w in value)):
            raise fail("value", expected, _show(value))
        return ops.Pm.build(tuple(value))
    if name == "contains":
        if not isinstance(value, str) or not value:
            raise fail("value", expected, _show(value))
        return ops.Contains(value, frozenset(ops.rarest(value)))
    if name == "eq":
        if not isinstance(value, str):
            raise fail("value", expected, _show(value))
        return ops.Eq(value, frozenset(value[:1]) or None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:  # length_gt
        raise fail("value", expected, _show(value))
    return ops.LengthGt(value)


# --- regular expressions: catastrophic backtracking ------------------------------

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT}
_ANY: frozenset[str] = frozenset({"<any>"})  # stands for "any character" in first-sets


def redos_problem(pattern: str) -> str | None:
    """Why ``pattern`` may backtrack catastrophically, or None.

    Refused: a repeat (more than once) whose body contains an unbounded
    repeat (``(a+)+``, ``(a*)*``, ``(.*a){20}``), a repeated body that can
    match empty (``(a?)*``), and a repeated alternation whose branches can
    start with the same character (``(a|a)*``, ``(a|ab)+``). Possessive
    repeats and atomic groups never backtrack into their bodies and are allowed.
    """
    try:
        parsed = _sre.parse(pattern, re.IGNORECASE)
    except re.error as exc:
        return str(exc)
    if any(op == _c.GROUPREF or op == _c.GROUPREF_EXISTS for op, _ in _walk(parsed)):
        return "backreferences are not supported"
    return _check_seq(list(parsed))


def _walk(seq):
    for op, av in seq:
        yield op, av
        for child in _children(op, av):
            yield from _walk(child)


def _children(op, av):
    if op == _c.SUBPATTERN:
        return [av[3]]
    if op in _REPEATS or op == _c.POSSESSIVE_REPEAT:
        return [av[2]]
    if op == _c.BRANCH:
        return list(av[1])
    if op in (_c.ASSERT, _c.ASSERT_NOT):
        return [av[1]]
    if op == _c.ATOMIC_GROUP:
        return [av]
    if op == _c.GROUPREF_EXISTS:
        return [b for b in av[1:] if b is not None]
    return []


def _check_seq(seq) -> str | None:
    for op, av in seq:
        if op in _REPEATS:
            lo, hi, body = av
            if hi is _c.MAXREPEAT or hi > 1:
                body = list(body)
                if _has_unbounded(body):
                    return "a repeated group contains another unbounded repeat (nested quantifier)"
                if _nullable(body):
                    return "a repeated group can match the empty string"
                branch = _overlapping_branch(body)
                if branch:
                    return "a repeated alternation has branches that can start with the same character"
        if op in (_c.POSSESSIVE_REPEAT, _c.ATOMIC_GROUP):
            continue  # never backtracks into its body
        for child in _children(op, av):
            problem = _check_seq(list(child))
            if problem:
                return problem
    return None


def _has_unbounded(seq) -> bool:
    for op, av in seq:
        if op in (_c.POSSESSIVE_REPEAT, _c.ATOMIC_GROUP):
            continue  # its body is never re-split
        if op in _REPEATS and av[1] is _c.MAXREPEAT:
            return True
        if any(_has_unbounded(list(child)) for child in _children(op, av)):
            return True
    return False


def _nullable(seq) -> bool:
    for op, av in seq:
        if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue
        if op == _c.SUBPATTERN:
            if not _nullable(list(av[3])):
                return False
        elif op == _c.ATOMIC_GROUP:
            if not _nullable(list(av)):
                return False
        elif op in _REPEATS or op == _c.POSSESSIVE_REPEAT:
            if av[0] > 0 and not _nullable(list(av[2])):
                return False
        elif op == _c.BRANCH:
            if not any(_nullable(list(b)) for b in av[1]):
                return False
        else:
            return False
    return True


def _overlapping_branch(seq) -> bool:
    for op, av in _walk(seq):
        if op == _c.BRANCH:
            # The parser factors out common prefixes: "(a|ab)" becomes
            # "a(?:|b)", so an empty branch beside another is an overlap.
            if any(_nullable(list(b)) for b in av[1]):
                return True
            seen: set[str] = set()
            for branch in av[1]:
                first = _first(list(branch))
                if first is _ANY or "<any>" in seen or first & seen:
                    return True
                seen |= first
    return False


def _first(seq) -> frozenset[str]:
    """Characters (lower case) a match of ``seq`` can start with; _ANY when unknown or too many."""
    out: set[str] = set()
    for op, av in seq:
        if op in (_c.AT, _c.ASSERT, _c.ASSERT_NOT):
            continue
        nullable = False
        if op == _c.LITERAL:
            part = frozenset(chr(av).lower())
        elif op == _c.IN:
            part = _class(av)
        elif op == _c.SUBPATTERN:
            part = _first(list(av[3]))
            nullable = _nullable(list(av[3]))
        elif op == _c.ATOMIC_GROUP:
            part = _first(list(av))
            nullable = _nullable(list(av))
        elif op in _REPEATS or op == _c.POSSESSIVE_REPEAT:
            part = _first(list(av[2]))
            nullable = av[0] == 0 or _nullable(list(av[2]))
        elif op == _c.BRANCH:
            part = frozenset()
            for b in av[1]:
                f = _first(list(b))
                if f is _ANY:
                    return _ANY
                part |= f
                nullable = nullable or _nullable(list(b))
        else:
            return _ANY
        if part is _ANY:
            return _ANY
        out |= part
        if not nullable:
            return frozenset(out)
    return frozenset(out)


def _class(items) -> frozenset[str]:
    chars: set[str] = set()
    for op, av in items:
        if op == _c.LITERAL:
            chars.add(chr(av).lower())
        elif op == _c.RANGE:
            lo, hi = av
            if hi - lo > 256:
                return _ANY
            chars.update(chr(n).lower() for n in range(lo, hi + 1))
        else:  # NEGATE, CATEGORY (\w, \d, \s): treat as anything
            return _ANY
    return frozenset(chars)


# --- regular expressions: a gate of required characters ------------------------


def required_chars(pattern: str) -> frozenset[str] | None:
    """Characters of which every match of ``pattern`` contains at least one
    (both cases of letters, as rx is case-insensitive), chosen to be as rare
    as possible in ordinary values; None when there is no such set."""
    try:
        parsed = _sre.parse(pattern, re.IGNORECASE)
    except re.error:  # pragma: no cover - compiled before
        return None
    found = _required(list(parsed))
    return None if found is None else ops.folded(found)


def _cost(chars: frozenset[str]) -> tuple[int, int]:
    return (sum(1 for ch in chars if ch in ops.COMMON or ch.lower() in ops.COMMON), len(chars))


def _required(seq) -> frozenset[str] | None:
    best: frozenset[str] | None = None
    for op, av in seq:
        found = _required_item(op, av)
        if found is not None and (best is None or _cost(found) < _cost(best)):
            best = found
    return best


def _required_item(op, av) -> frozenset[str] | None:
    if op == _c.LITERAL:
        return frozenset(chr(av))
    if op == _c.IN:
        chars = _class(av)
        return None if chars is _ANY or len(chars) > 64 else frozenset(chars)
    if op == _c.SUBPATTERN:
        return _required(list(av[3]))
    if op == _c.ATOMIC_GROUP:
        return _required(list(av))
    if op in _REPEATS or op == _c.POSSESSIVE_REPEAT:
        return _required(list(av[2])) if av[0] >= 1 else None
    if op == _c.BRANCH:
        union: set[str] = set()
        for b in av[1]:
            found = _required(list(b))
            if found is None:
                return None
            union |= found
        return frozenset(union)
    return None
