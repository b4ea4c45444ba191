"""The validation kit (edge.schema): one collector, and nothing of edge beneath it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from edge.schema.check import BAD, Check, int_in, request_path
from edge.schema.values import country, size_in

KIT = Path(__file__).resolve().parents[2] / "edge" / "schema"


@pytest.mark.parametrize("module", sorted(p.name for p in KIT.glob("*.py")))
def test_the_kit_imports_nothing_else_of_edge(module):
    tree = ast.parse((KIT / module).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.split(".")[0] == "edge" and not m.startswith("edge.schema")} == set()


def test_check_reports_every_problem_with_its_field():
    c = Check("shop.json", {"thing": ("size", "paths", "country")})
    o = c.object({"size": "2KiB", "paths": ["/a", "a", "/a", "/b%2f"], "country": "xx", "sise": 1}, "x", "thing")
    assert o is not None
    assert c.get(o, "x", "size", None, "a size", size_in(1, 1024)) is None
    assert c.list(o, "x", "paths", (), "paths", "a path", request_path) == ("/a", "/b%2F")
    assert c.get(o, "x", "country", None, "a country", country) is None
    assert c.get(o, "x", "absent", 7, "anything", int_in(0, 1)) == 7
    assert [str(e) for e in c.errors] == [
        'shop.json: x.sise: expected a known key (did you mean "size"?), found an unknown key',
        'shop.json: x.size: expected a size, found "2KiB"',
        'shop.json: x.paths[1]: expected a path, found "a"',
        'shop.json: x.country: expected a country, found "xx"',
    ]


@pytest.mark.parametrize(("value", "out"), [(0, 0), (1, 1), (2, BAD), (True, BAD), (1.0, BAD), ("1", BAD)])
def test_int_in(value, out):
    assert int_in(0, 1)(value) is out if out is BAD else int_in(0, 1)(value) == out
