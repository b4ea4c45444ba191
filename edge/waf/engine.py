"""The WAF engine: a rule set compiled for the two moments it is asked.

``inspect_request`` reads what the request line and headers carry (path,
query arguments, cookies, a few headers) and runs on every request, cache
hits included, so it is built for the plain values of ordinary traffic:

* rules are grouped by target and transformation chain, so a value is
  transformed once per chain, not once per rule;
* each group has a gate, the characters one of which any match needs
  (derived from the patterns at load); a value with none of them skips the
  whole group with one scan in C. ``/static/app.3f2a.js`` or a session id
  touches no operator at all;
* libinjection, the costly operator, has a gate of its own (quotes,
  operators, brackets for SQL; markup and schemes for XSS).

``inspect_body`` parses a body the origin will receive (form, multipart,
JSON; anything else as text) and runs the rules on its arguments. A body
that does not parse as what it claims is inspected as raw text in every
argument rule, so breaking the syntax never skips inspection.

The result depends on the request alone, so what the rules find in a value
(a User-Agent, an argument, a cookie, a whole query or request target) is
remembered, bounded per target (4,096 values of up to 512 characters,
cleared when full; paths 32,768). The memos hold what *every* rule finds,
at every paranoia level and without exclusions; each tenant's settings are
applied afterwards, so one tenant's exclusions never hide anything from
another. They hold request values (cookies, header values) in worker
memory, never written anywhere.

Two passes: the cheap pass runs on every request (cache hits included):
method, path, query and its arguments, and the User-Agent (scanners,
Log4Shell). The full pass runs every rule before a request goes to the
origin.
"""
from __future__ import annotations

import dataclasses

import codecs
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

import orjson

from edge.policy.sections.waf import WafSettings
from edge.waf import gates
from edge.waf.operators import COMMON, LibinjectionSqli, LibinjectionXss
from edge.waf.rules import BODY_TARGETS, Rule, RuleSet, files_stamp, load_ruleset
from edge.waf.transforms import TRANSFORMS

MAX_JSON_DEPTH = 32
MAX_VALUES = 4096  # arguments of one body; bounded anyway by max_body
MAX_PARTS = 256


@dataclass(frozen=True, slots=True)
class WafResult:
    score: int
    rules: tuple[str, ...]  # matched rule ids, in the order they matched
    tags: tuple[str, ...]


class _Group:
    """Rules that share a target and a transformation chain."""

    __slots__ = ("funcs", "gate", "lower", "rules")

    def __init__(self, transforms: tuple[str, ...], rules: list[Rule]) -> None:
        self.funcs = tuple(TRANSFORMS[t] for t in transforms)
        self.lower = "lowercase" in transforms
        # Per rule: its own gate (libinjection), and the strings one of which
        # each of its matches holds (for long values: a few substring tests
        # spare a regex that would try every position of a page of text).
        self.rules = tuple(
            (r, _gate(r.operator.gate) if _costly(r) else None, _evidence(r)) for r in rules
        )
        gates = [r.operator.gate for r in rules]
        union: set[str] = set()
        for g in gates:
            if g is None:
                union = set()
                break
            union |= g
        self.gate = _gate(frozenset(union)) if union else None


def _evidence(rule: Rule) -> tuple[str, ...] | None:
    if _costly(rule):
        return None
    found = frozenset(w.lower() for w in rule.gate) if rule.gate else gates.derive(rule.operator, gates.COMMON["value"])
    return tuple(sorted(found, key=len, reverse=True)) if found else None


# Values longer than this get the evidence test before a rule's regex.
_LONG = 96


def _costly(rule: Rule) -> bool:
    return isinstance(rule.operator, (LibinjectionSqli, LibinjectionXss))


def _gate(chars: frozenset[str] | None):
    """``search`` of a class of ``chars``; None when it would let nearly everything through."""
    if not chars or all(ch in COMMON for ch in chars):
        return None
    return re.compile("[" + "".join(re.escape(ch) for ch in sorted(chars)) + "]").search


class _State:
    __slots__ = ("excluded", "paranoia", "matched", "score", "tags")

    def __init__(self, excluded: frozenset[str], paranoia: int, prior: WafResult | None) -> None:
        self.excluded = excluded
        self.paranoia = paranoia
        if prior is None:
            self.matched: list[str] = []
            self.score = 0
            self.tags: list[str] = []
        else:
            self.matched = list(prior.rules)
            self.score = prior.score
            self.tags = list(prior.tags)

    def result(self) -> WafResult | None:
        if not self.matched:
            return None
        return WafResult(self.score, tuple(self.matched), tuple(self.tags))


def _run(groups: tuple[_Group, ...], value: str, st: _State) -> None:
    for group in groups:
        v = value
        for f in group.funcs:
            v = f(v)
        gate = group.gate
        if gate is not None and gate(v) is None:
            continue
        # ASCII only: str.lower() and the regexes' case-insensitive matching
        # agree there (not for "İ", "K" and their kin).
        lv = (v if group.lower else v.lower()) if len(v) > _LONG and v.isascii() else None
        for rule, rule_gate, words in group.rules:
            if rule.id in st.excluded or rule.paranoia > st.paranoia or rule.id in st.matched:
                continue
            if rule_gate is not None and rule_gate(v) is None:
                continue
            if lv is not None and words is not None and not any(w in lv for w in words):
                continue
            if rule.operator.match(v):
                st.matched.append(rule.id)
                st.score += rule.score
                for tag in rule.tags:
                    if tag not in st.tags:
                        st.tags.append(tag)


class _Target:
    """The groups of one target, behind the target's gate (edge.waf.gates)."""

    __slots__ = ("always", "by_id", "gate", "gated", "memo", "memo_size", "weak")

    def __init__(self, target: str, chains: dict[tuple[str, ...], list[Rule]]) -> None:
        kind = gates.kind_of(target)
        common = gates.COMMON[kind]
        evidence: set[str] = set()
        triggers: set[str] = set()
        gated: dict[tuple[str, ...], list[Rule]] = {}
        always: dict[tuple[str, ...], list[Rule]] = {}
        weak: list[str] = []
        for transforms, rules in chains.items():
            for rule in rules:
                found = frozenset(rule.gate) if rule.gate else gates.derive(rule.operator, common)
                if found is None or gates.cost(found, common) >= WEAK:
                    # No evidence rarer than ordinary values: the rule runs on
                    # every value (libinjection still behind its own gate).
                    always.setdefault(transforms, []).append(rule)
                    weak.append(rule.id)
                    continue
                gated.setdefault(transforms, []).append(rule)
                evidence |= found
                for t in transforms:
                    triggers.update(gates.TRIGGERS[t])
        self.by_id = {r.id: r for rules in chains.values() for r in rules}
        self.memo: dict[str, tuple[Rule, ...]] = {}
        self.memo_size = _PATH_MEMO_SIZE if target == "path" else _MEMO_SIZE
        self.always = tuple(_Group(tr, rs) for tr, rs in always.items())
        self.gated = tuple(_Group(tr, rs) for tr, rs in gated.items())
        self.gate = gates.compile_gate(evidence, triggers) if self.gated else None
        self.weak = tuple(weak)


# A rule whose evidence an ordinary value of its target kind contains with
# about this chance gets no gate (it is listed in Waf.ungated).
WEAK = 0.9


def _scan(target: _Target | None, value: str, st: _State) -> None:
    if target is None:
        return
    if len(value) <= _MEMO_VALUE:
        # The same User-Agents, cookies and arguments come again and again:
        # what every rule finds in a value is worked out once (bounded memo).
        memo = target.memo
        found = memo.get(value)
        if found is None:
            probe = _State(frozenset(), _ALL_LEVELS, None)
            _scan_all(target, value, probe)
            if len(memo) >= target.memo_size:
                memo.clear()
            found = memo[value] = tuple(target.by_id[rid] for rid in probe.matched)
        if found:
            _merge(found, st)
        return
    _scan_all(target, value, st)


def _merge(found: tuple[Rule, ...], st: _State) -> None:
    """Add what a memo says the rules found, as this tenant counts it."""
    for rule in found:
        if rule.id in st.excluded or rule.paranoia > st.paranoia or rule.id in st.matched:
            continue
        st.matched.append(rule.id)
        st.score += rule.score
        for tag in rule.tags:
            if tag not in st.tags:
                st.tags.append(tag)


def _clean(target: _Target | None, value: str) -> bool:
    """True when ``value`` is known (memo) to match no rule of ``target``."""
    return target is None or target.memo.get(value) == ()


def _scan_all(target: _Target, value: str, st: _State) -> None:
    if target.always:
        _run(target.always, value, st)
    if target.gate is not None and target.gate(value) is not None:
        _run(target.gated, value, st)


_MEMO_VALUE = 512  # longer values (bodies, huge cookies) are scanned each time
_MEMO_SIZE = 4096  # values per target; cleared when full (a flood of new values only costs scans)
_PATH_MEMO_SIZE = 32768  # a site's hot paths are many more than its User-Agents
_ALL_LEVELS = 1 << 30


def _compile(rules: tuple[Rule, ...], phase: str, phase_targets: tuple[str, ...]) -> dict[str, _Target]:
    by_target: dict[str, dict[tuple[str, ...], list[Rule]]] = {}
    for rule in rules:
        if rule.phase is not None and rule.phase != phase:
            continue
        for target in rule.targets:
            if target in phase_targets or (target.startswith("header:") and "headers" in phase_targets):
                by_target.setdefault(target, {}).setdefault(rule.transforms, []).append(rule)
    return {t: _Target(t, chains) for t, chains in by_target.items()}


_REQUEST = ("method", "path", "query", "args", "args_names", "headers", "cookies", "cookie_names")
_BODY = ("args", "args_names") + BODY_TARGETS


def _cheap(rule: Rule) -> Rule | None:
    """The rule as the cheap pass (every request, cache hits too) runs it:
    on the request line, and on headers only for scanners and Log4Shell,
    which are cheap to spot; None when nothing of it is left."""
    targets = tuple(dict.fromkeys(
        "header:user-agent" if t == "headers" else t
        for t in rule.targets
        if t in _CHEAP_TARGETS
        or (t == "header:user-agent" and "scanner" in rule.tags)
        or (t == "headers" and rule.id in _CHEAP_USER_AGENT_RULES)
    ))
    if not targets:
        return None
    return rule if targets == rule.targets else dataclasses.replace(rule, targets=targets)


_CHEAP_TARGETS = frozenset({"method", "path", "query", "args", "args_names"})
# Rules on every header that the cheap pass runs on the User-Agent, where
# these attacks are sprayed (remembered per value, so free for browsers).
_CHEAP_USER_AGENT_RULES = frozenset({"java-log4shell"})


class _Pass:
    """The compiled targets of one pass over a request's head."""

    __slots__ = ("args", "clean_targets", "queries", "cookie_names", "cookies", "headers", "method", "named", "names", "path",
                 "query")

    def __init__(self, compiled: dict[str, _Target]) -> None:
        self.method = compiled.get("method")
        self.path = compiled.get("path")
        self.query = compiled.get("query")
        self.args = compiled.get("args")
        self.names = compiled.get("args_names")
        self.headers = compiled.get("headers")
        self.cookies = compiled.get("cookies")
        self.cookie_names = compiled.get("cookie_names")
        # (header name, target) for rules that name one header
        self.named = tuple((t[7:], g) for t, g in compiled.items() if t.startswith("header:"))
        self.queries: dict[str, tuple[Rule, ...]] = {}  # raw query -> what every rule found in it
        self.clean_targets: dict[str, bool] = {}  # request targets in which no rule finds anything


class Waf:
    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        self._by_id = {r.id: r for r in ruleset.rules}
        self._cheap_pass = _Pass(_compile(tuple(filter(None, map(_cheap, ruleset.rules))), "request", _REQUEST))
        req = _compile(ruleset.rules, "request", _REQUEST)
        self._full_pass = _Pass(req)
        body = _compile(ruleset.rules, "body", _BODY)
        self._body = body.get("body")
        self._body_args = body.get("args")
        self._body_names = body.get("args_names")
        self._files = body.get("files")
        # Rules that run on every value of a target, having no evidence rarer
        # than ordinary values of it: {(rule id, target, phase)}. Kept short on purpose.
        self.ungated = frozenset((rid, t, phase) for phase, targets in (("request", req), ("body", body))
                                 for t, target in targets.items() for rid in target.weak)

    # ---------------------------------------------------------------- request

    def inspect_request(self, method: str, path: str, raw_query: str, headers, settings: WafSettings,
                        normalised: str | None = None, full: bool = True) -> WafResult | None:
        """``path`` is the path as received (no query), ``normalised`` the
        pipeline's normalised form (for path-scoped exclusions; ``path`` when None).
        ``full`` False: the cheap pass every request gets (request line,
        scanners, Log4Shell); True: every rule, for requests bound for the
        origin. None: no rule matched."""
        p = self._full_pass if full else self._cheap_pass
        if not full and not raw_query and self.plain_and_clean(method, path, headers):
            return None
        st = _State(settings.excluded_for(normalised or path), settings.paranoia, None)
        _scan(p.method, method, st)
        _scan(p.path, path, st)
        if raw_query:
            # What every rule finds in the whole query, remembered like the
            # values' (listing pages and their queries come back and back).
            memo = p.queries
            found = memo.get(raw_query)
            if found is None:
                probe = _State(frozenset(), _ALL_LEVELS, None)
                _scan(p.query, raw_query, probe)
                self._arguments(raw_query, p.args, p.names, probe)
                found = tuple(self._by_id[rid] for rid in probe.matched)
                if len(raw_query) <= _MEMO_VALUE * 4:
                    if len(memo) >= _MEMO_SIZE:
                        memo.clear()
                    memo[raw_query] = found
            if found:
                _merge(found, st)
        for name, target in p.named:
            for value in headers.getall(name, ()):
                _scan(target, value, st)
        if p.headers is not None:
            for value in headers.values():
                _scan(p.headers, value, st)
        if p.cookies is not None or p.cookie_names is not None:
            for header in headers.getall("Cookie", ()):
                for pair in header.split(";"):
                    name, _, value = pair.partition("=")
                    _scan(p.cookie_names, name.strip(), st)
                    _scan(p.cookies, value.strip(), st)
        return st.result()

    def known_clean(self, method: str, target: str, headers) -> bool:
        """The cheap pass for a request target (path and query, as
        received) that no rule found anything in before, with a method and
        User-Agent known to be clean. True: nothing to find."""
        p = self._cheap_pass
        if target not in p.clean_targets or not _clean(p.method, method):
            return False
        for name, t in p.named:
            for value in headers.getall(name, ()):
                if not _clean(t, value):
                    return False
        return True

    def remember_if_clean(self, target: str) -> None:
        """After a cheap pass that found nothing for this tenant: remember
        ``target`` if no rule at all (any paranoia, no exclusions) finds
        anything in its path and query."""
        p = self._cheap_pass
        if target in p.clean_targets or len(target) > _MEMO_VALUE * 4:
            return
        path, _, query = target.partition("?")
        probe = _State(frozenset(), _ALL_LEVELS, None)
        _scan(p.path, path, probe)
        if query:
            found = p.queries.get(query)
            if found is None:
                _scan(p.query, query, probe)
                self._arguments(query, p.args, p.names, probe)
            elif found:
                return
        if probe.matched:
            return
        if len(p.clean_targets) >= _MEMO_SIZE:
            p.clean_targets.clear()
        p.clean_targets[target] = True

    def plain_and_clean(self, method: str, path: str, headers) -> bool:
        """The common cache hit for the cheap pass: a plain path (letters,
        digits, ``/._~-``) without a query, and a method and User-Agent
        known (memo) to match nothing. True: nothing to find."""
        p = self._cheap_pass
        if not _clean(p.path, path) or not _clean(p.method, method):
            return False
        for name, target in p.named:
            for value in headers.getall(name, ()):
                if not _clean(target, value):
                    return False
        return True

    @staticmethod
    def _arguments(text: str, values: _Target | None, names: _Target | None, st: _State) -> None:
        """``a=1&b=2`` (query or form body), each name and value percent-decoded once."""
        for pair in text.split("&")[:MAX_VALUES]:
            if not pair:
                continue
            name, _, value = pair.partition("=")
            if "%" in name or "+" in name:
                name = unquote_plus(name, errors="replace")
            if "%" in value or "+" in value:
                value = unquote_plus(value, errors="replace")
            _scan(names, name, st)
            _scan(values, value, st)

    # ------------------------------------------------------------------- body

    def inspect_body(self, body: bytes, content_type: str | None, path: str, settings: WafSettings,
                     prior: WafResult | None) -> WafResult | None:
        """Adds what the body matches to ``prior`` (the request's result). ``path``
        is the normalised path (for exclusions). Only the first ``max_body`` bytes are read."""
        if not settings.inspect_body or not body:
            return prior
        body = body[: settings.max_body]
        st = _State(settings.excluded_for(path), settings.paranoia, prior)
        mtype, params = _media_type(content_type)
        text = _decode(body, params.get("charset"))
        _scan(self._body, text, st)
        args, names = self._body_args, self._body_names
        parsed = True
        if mtype == "application/x-www-form-urlencoded":
            self._arguments(text, args, names, st)
        elif mtype == "application/json" or mtype.endswith("+json"):
            parsed = self._json(body, text, st)
        elif mtype == "multipart/form-data":
            parsed = self._multipart(body, params.get("boundary"), st)
        if not parsed:
            # Not what it claims to be: what the origin's parser makes of it
            # is unknown, so every argument rule sees all of it.
            _scan(args, text, st)
        return st.result()

    def _json(self, body: bytes, text: str, st: _State) -> bool:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            try:  # another charset than UTF-8 that decoded
                data = orjson.loads(text.encode("utf-8", "surrogatepass"))
            except (orjson.JSONDecodeError, UnicodeError):
                return False
        count = [0]
        self._walk(data, 0, count, st)
        return True

    def _walk(self, node, depth: int, count: list[int], st: _State) -> None:
        count[0] += 1
        if count[0] > MAX_VALUES:
            return
        if isinstance(node, str):
            _scan(self._body_args, node, st)
        elif isinstance(node, dict):
            if depth >= MAX_JSON_DEPTH:
                _scan(self._body_args, orjson.dumps(node).decode(), st)
                return
            for key, value in node.items():
                _scan(self._body_names, key, st)
                self._walk(value, depth + 1, count, st)
        elif isinstance(node, list):
            if depth >= MAX_JSON_DEPTH:
                _scan(self._body_args, orjson.dumps(node).decode(), st)
                return
            for value in node:
                self._walk(value, depth + 1, count, st)

    def _multipart(self, body: bytes, boundary: str | None, st: _State) -> bool:
        if not boundary or len(boundary) > 200:
            return False
        delimiter = b"--" + boundary.encode("latin-1", "replace")
        chunks = body.split(delimiter)
        if len(chunks) < 3:
            return False  # no part, or no closing delimiter
        ok = chunks[-1].startswith(b"--")
        for chunk in chunks[1:-1][:MAX_PARTS]:
            head, sep, content = chunk.partition(b"\r\n\r\n")
            if not sep:
                head, sep, content = chunk.partition(b"\n\n")
                if not sep:
                    ok = False
                    continue
            if content.endswith(b"\r\n"):
                content = content[:-2]
            elif content.endswith(b"\n"):
                content = content[:-1]
            fields = _part_headers(head.decode("utf-8", "replace"))
            disposition = fields.get("content-disposition")
            if disposition is None:
                ok = False
                continue
            _, params = _media_type(disposition)
            name = params.get("name")
            if name is not None:
                _scan(self._body_names, name, st)
            filename = params.get("filename") or params.get("filename*")
            if filename is not None:
                _scan(self._files, filename, st)
                _scan(self._body_args, filename, st)
                continue  # file contents are seen by the "body" rules only
            ptype, pparams = _media_type(fields.get("content-type"))
            _scan(self._body_args, _decode(content, pparams.get("charset")), st)
        return ok


def _media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``text/html; charset=utf-8`` -> ("text/html", {"charset": "utf-8"}); tolerant of junk."""
    if not value:
        return "", {}
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    if rest:
        for item in _PARAM_RE.finditer(rest):
            key = item.group(1).lower()
            raw = item.group(2)
            if raw.startswith('"'):
                raw = raw[1:-1].replace('\\"', '"') if raw.endswith('"') and len(raw) > 1 else raw[1:]
            params.setdefault(key, raw)
    return head.strip().lower(), params


_PARAM_RE = re.compile(r'\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')


def _decode(body: bytes, charset: str | None) -> str:
    """Text in the declared charset; unknown or absent: UTF-8. Never fails."""
    if charset:
        try:
            codec = codecs.lookup(charset.strip().strip('"'))
        except (LookupError, ValueError):
            codec = None
        if codec is not None and codec.name not in _NOT_TEXT:
            try:
                return body.decode(codec.name, "replace")
            except Exception:  # a codec that raises on bad input despite "replace"
                pass
    return body.decode("utf-8", "replace")


# Codecs that codecs.lookup knows but that are no text encodings of a body.
_NOT_TEXT = frozenset({"rot-13", "base64", "hex", "quopri", "uu", "zlib", "bz2"})


def _part_headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out.setdefault(name.strip().lower(), value.strip())
    return out




_COMPILED: dict[tuple, tuple[RuleSet, Waf]] = {}


def compiled(directory) -> tuple[RuleSet, Waf]:
    """The rule set of ``directory`` and its compiled engine, made once per
    version of the files (compiling takes a good part of a second; nodes
    of one process and reloads that changed nothing share it)."""
    stamp = files_stamp(directory)
    key = (str(directory), stamp)
    found = _COMPILED.get(key) if stamp is not None else None
    if found is None:
        rules = load_ruleset(directory)
        found = (rules, Waf(rules))
        if stamp is not None:
            _COMPILED.clear()  # only the current version is worth keeping
            _COMPILED[key] = found
    return found
