"""The import graph of ``edge/``, read from the source with ``ast``.

Two rules, each for every module:

- No import circle. Imports inside functions and under ``TYPE_CHECKING``
  count: a lazy import hides a circle, it does not remove it. Importing
  ``edge.a.b.c`` also runs the packages ``edge.a`` and ``edge.a.b`` (their
  ``__init__``), so it depends on them too, unless the importer sits
  inside them already.
- No private name (leading underscore) taken from another package. A
  package is the directory a module sits in (``edge.cache.purge`` belongs
  to ``edge.cache``, ``edge.app`` to ``edge``); its modules share their
  private names (``edge/filters/_record.py`` serves the filters alone), what
  another package needs is public API of its owner. A private module counts
  like a private name. Names of the standard library and of dependencies
  are outside this rule.

Tests are held to the second rule too, against every package: a test uses
the public API of the code it checks.

And no module of ``edge/`` reaches MAX_MODULE_LINES lines.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@dataclasses.dataclass(frozen=True)
class Use:
    """``importer`` takes ``target`` (a module, or ``module.name``) at ``where``."""

    importer: str
    target: str
    where: str


class Tree:
    """The modules of the packages under ``root`` (``edge``, ``tests``) and
    what each imports of them."""

    def __init__(self, root: Path, packages: Iterable[str]) -> None:
        self.root = root
        self.files: dict[str, Path] = {}
        self.packages: set[str] = set()
        for top in packages:
            for path in sorted((root / top).rglob("*.py")):
                parts = list(path.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                    self.packages.add(".".join(parts))
                self.files[".".join(parts)] = path
        self.uses: dict[str, list[Use]] = {name: list(dict.fromkeys(self._uses(name))) for name in self.files}

    def package_of(self, module: str) -> str:
        return module if module in self.packages else module.rpartition(".")[0]

    def _module(self, dotted: str) -> str | None:
        """The longest prefix of ``dotted`` that is one of the modules."""
        parts = dotted.split(".")
        while parts:
            name = ".".join(parts)
            if name in self.files:
                return name
            parts.pop()
        return None

    def _uses(self, module: str) -> Iterable[Use]:
        path = self.files[module]
        tree = ast.parse(path.read_text(), str(path))
        package = self.package_of(module)
        aliases: dict[str, str] = {}  # local name -> module it is bound to

        def at(node: ast.AST) -> str:
            return f"{path.relative_to(self.root)}:{node.lineno}"

        private_attributes: list[ast.Attribute] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                if _private(node.attr):
                    private_attributes.append(node)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    target = self._module(alias.name)
                    if target is None:
                        continue
                    yield Use(module, alias.name if alias.name in self.files else target, at(node))
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        head = alias.name.partition(".")[0]
                        aliases[head] = head
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if self._module(source) is None:
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in self.files:
                        yield Use(module, sub, at(node))
                        aliases[alias.asname or alias.name] = sub
                    else:
                        yield Use(module, sub if _private(alias.name) else source, at(node))
        # module._name, after ``import edge.x`` or ``from edge import x``
        # (the aliases of the whole file known: one walk collects both)
        for node in private_attributes:
            chain: list[str] = []
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                owner = ".".join([aliases[value.id], *chain])
                if owner in self.files:
                    yield Use(module, f"{owner}.{node.attr}", at(node))

    def depends(self, use: Use) -> list[str]:
        """The modules ``use`` runs: its module and the packages above it
        that its importer is not inside."""
        target = self._module(use.target)
        assert target is not None
        inside = self.package_of(use.importer).split(".")
        parts = target.split(".")
        out = [target]
        for i in range(1, len(parts)):
            if parts[:i] != inside[:i]:
                out.append(".".join(parts[:i]))
        return [m for m in out if m != use.importer and m in self.files]

    def graph(self) -> dict[str, dict[str, str]]:
        """importer -> {imported module: where (the first place)}."""
        out: dict[str, dict[str, str]] = {name: {} for name in self.files}
        for name, uses in self.uses.items():
            for use in uses:
                for dep in self.depends(use):
                    out[name].setdefault(dep, use.where)
        return out

    def private_uses(self) -> list[tuple[Use, str]]:
        """(use, owner module) for each private name or module taken from
        another package."""
        found = []
        for name, uses in self.uses.items():
            for use in uses:
                parts = use.target.split(".")
                for i in range(1, len(parts)):
                    if _private(parts[i]):
                        owner = self._module(".".join(parts[:i])) or ".".join(parts[:i])
                        if self.package_of(owner) != self.package_of(name):
                            found.append((use, owner))
                        break
        return found


def circles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected sets of modules (Tarjan), each as one of its
    shortest circles: a path that ends where it starts; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sets: list[set[str]] = []

    def visit(root: str) -> None:
        # Iterative: no recursion limit, whatever the depth of the graph.
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    members = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.add(member)
                        if member == node:
                            break
                    if len(members) > 1 or node in graph[node]:
                        sets.append(members)

    for name in sorted(graph):
        if name not in index:
            visit(name)
    out = []
    for members in sets:
        start = min(members)
        previous: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            if start in graph[node]:
                path = [start]
                while node != start:
                    path.insert(1, node)
                    node = previous[node]
                out.append(path + [start])
                break
            for nxt in sorted(graph[node]):
                if nxt in members and nxt not in previous and nxt != start:
                    previous[nxt] = node
                    queue.append(nxt)
    return sorted(out)


def _show(path: list[str], graph: dict[str, dict[str, str]]) -> str:
    """The circle step by step, and every module of its tangle (others may
    close shorter circles of their own through them)."""
    members = set(path)
    grown = True
    while grown:
        grown = False
        for name in graph:
            if name not in members and any(n in members for n in graph[name]) and _reaches(graph, members, name):
                members.add(name)
                grown = True
    steps = [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(path, path[1:])]
    return "\n    ".join([f"tangle of {', '.join(sorted(members))}:", *steps])


def _reaches(graph: dict[str, dict[str, str]], targets: set[str], start: str) -> bool:
    """Whether some module of ``targets`` leads back to ``start``."""
    seen, todo = set(targets), list(targets)
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt == start:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


@pytest.fixture(scope="module")
def edge_tree() -> Tree:
    return Tree(REPO, ["edge"])


def test_no_import_circle_in_edge(edge_tree):
    graph = edge_tree.graph()
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join("  " + _show(c, graph) for c in found)


def _private_report(tree: Tree) -> list[str]:
    return sorted(f"  {use.where}: {use.importer} uses {use.target}, private to {tree.package_of(owner)}"
                  for use, owner in tree.private_uses())


def test_no_private_name_crosses_a_package(edge_tree):
    bad = _private_report(edge_tree)
    assert not bad, "private names used outside their package:\n" + "\n".join(bad)


def test_no_test_uses_a_private_name():
    tree = Tree(REPO, ["edge", "tests"])
    bad = [line for line in _private_report(tree) if " tests." in line.split(" uses ")[0]]
    assert not bad, "tests using private names (test through the public API):\n" + "\n".join(bad)


# --- module sizes ------------------------------------------------------------------------

# Past this a module holds more than one job: split it along a seam.
MAX_MODULE_LINES = 700


def test_every_module_in_edge_is_under_the_size_limit():
    sizes = [(len(path.read_text().splitlines()), str(path.relative_to(REPO))) for path in (REPO / "edge").rglob("*.py")]
    big = [f"  {name}: {lines} lines" for lines, name in sorted(sizes, reverse=True) if lines >= MAX_MODULE_LINES]
    assert not big, f"modules of {MAX_MODULE_LINES} lines or more:\n" + "\n".join(big)


# --- what reading a policy loads ---------------------------------------------------------

# Validating a policy (``edge policy validate``, the admin API's checks) needs
# the sections and the WAF rules' ids, never the HTTP stack or the compiled WAF.
POLICY_ONLY = """
import json, sys
import edge.policy.parse
from edge.policy import parse_policy
from edge.waf import rule_ids
policy = parse_policy({
    "hosts": ["shop.example"], "origins": [{"url": "http://127.0.0.1:9", "set_by": "tenant"}],
    "filters": {"waf": {"max_body": 4096,
                        "exclusions": [{"rule": sorted(rule_ids())[0], "path_prefix": "/search"}]},
                "events": {"webhook_url": "https://hooks.example/edge", "secret": "0123456789abcdef",
                           "set_by": "tenant"}},
}, tenant="shop", source="shop.json")
assert policy.filters.waf.exclusions
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "yarl") or m == "edge.waf.engine")))
"""


def test_reading_a_policy_loads_neither_aiohttp_nor_the_waf_engine():
    done = subprocess.run([sys.executable, "-c", POLICY_ONLY], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


# --- the walker itself, on small made-up packages -------------------------------------------

WALKS = [
    ({"a.py": "import pkg.b\n", "b.py": "import pkg.a\n"}, ["pkg.a -> pkg.b -> pkg.a"], [], "top-level"),
    ({"a.py": "def f():\n    from pkg import b\n", "b.py": "from pkg.a import f\n"},
     ["pkg.a -> pkg.b -> pkg.a"], [], "lazy-from-import-of-a-submodule"),
    ({"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n", "b.py": "from . import a\n"},
     ["pkg.a -> pkg.b -> pkg.a"], [], "type-only-and-relative"),
    ({"sub/__init__.py": "from pkg.sub.x import X\n", "sub/x.py": "import pkg.y\n", "y.py": "from pkg.sub.z import Z\n",
      "sub/z.py": ""},
     ["pkg.sub -> pkg.sub.x -> pkg.y -> pkg.sub"], [], "a-package-init-runs-first"),
    ({"sub/__init__.py": "from pkg.sub.x import X\n", "sub/x.py": "from pkg.sub.z import Z\n", "sub/z.py": ""},
     [], [], "siblings-inside-a-package-with-an-init"),
    ({"a.py": "from pkg.b import _hidden\n", "b.py": "_hidden = 1\n"}, [], [], "private-in-the-same-package"),
    ({"a.py": "from pkg.sub.b import _hidden, shown\n", "sub/b.py": ""}, [], ["pkg.sub.b._hidden"],
     "private-from-a-subpackage"),
    ({"a.py": "from pkg.sub import b\nb._hidden()\n", "sub/b.py": ""}, [], ["pkg.sub.b._hidden"],
     "private-attribute-of-a-module"),
    ({"a.py": "import pkg.sub._inner\n", "sub/_inner.py": ""}, [], ["pkg.sub._inner"], "private-module"),
    ({"sub/c.py": "from pkg._top import x\n", "_top.py": ""}, [], ["pkg._top"], "private-module-of-the-parent"),
    ({"a.py": "from re import _parser\nimport os\nos._exit\n"}, [], [], "other-libraries-are-not-checked"),
]


@pytest.mark.parametrize(("files", "expected", "private"), [w[:3] for w in WALKS], ids=[w[3] for w in WALKS])
def test_the_walker(tmp_path, files, expected, private):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
            (path.parent / "__init__.py").write_text("")
        path.write_text(text)
    tree = Tree(tmp_path, ["pkg"])
    assert [" -> ".join(c) for c in circles(tree.graph())] == expected
    assert sorted(use.target for use, _ in tree.private_uses()) == private
