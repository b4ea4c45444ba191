"""Where the files the node reads at run time are, however it was installed."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def policies_dir() -> Path:
    """The shipped policies folder (``policies/`` in the source tree)."""
    return Path(str(files("edge.policies")))
