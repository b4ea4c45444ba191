"""The node as users install it: a wheel built from the source tree,
installed (not editable) into a new virtualenv, run with no checkout in
reach. Everything it reads at run time must have travelled in the wheel."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .support import DEMO_PORT, REPO, port_is_free

# What a source distribution of the project holds; nothing else is copied.
SOURCES = ("pyproject.toml", "README.md", "edge", "policies")


def run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin directory of a virtualenv holding only the built wheel; its
    dependencies are this interpreter's, seen through a plain path entry
    (so the checkout's editable hook is not loaded)."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(src)], cwd=root)
    shutil.rmtree(src)  # from here on, no source tree exists
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    wheel = next(wheels.glob("edge-*.whl"))
    run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)])
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    (Path(site) / "_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = run([str(python), "-c", "import edge.policies, edge; print(edge.__file__)"], cwd=root)
    assert where.startswith(str(venv)), f"edge imported from {where}, not from the installed wheel"
    return venv / "bin"


def test_the_installed_node_serves_in_quick_mode(installed, run_edge, port, upstream, tmp_path):
    upstream.respond("/hello", b"hello", headers={"Cache-Control": "max-age=60"})
    node = run_edge("--origin", upstream.url, port=port, command=[str(installed / "edge")], cwd=tmp_path)
    assert node.get("/hello").status == 200, node.describe()
    assert node.get("/hello").is_hit


def test_the_installed_node_serves_the_demo(installed, run_edge, port, tmp_path):
    if not port_is_free(DEMO_PORT):
        pytest.fail(f"port {DEMO_PORT} on 127.0.0.1 is busy: demo mode starts its built-in origin there")
    node = run_edge(port=port, command=[str(installed / "edge")], cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    first = node.get("/")
    assert first.status == 200 and b"edge demo origin" in first.body, node.describe()
    assert node.terminate() == 0, node.describe()
