"""The node's metrics files as workers leave them: real processes in
prometheus-client's multiprocess mode, one directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WORKER = """
from edge.observe import metrics
for _ in range(3):
    metrics.record_request("files", 200, "hit", 5)
metrics.publish()
"""

SCRAPE = """
import json
from edge.observe import metrics
print(json.dumps(metrics.node_stats(metrics.NodeView().collect()).requests))
"""


def run(code: str, directory: Path) -> str:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_counts_of_exited_workers_stay_and_a_file_left_empty_breaks_no_scrape(tmp_path):
    run(WORKER, tmp_path)
    run(WORKER, tmp_path)
    # A worker killed between creating its file and sizing it leaves it empty.
    (tmp_path / "counter_4194305.db").touch()
    assert json.loads(run(SCRAPE, tmp_path)) == {"files": 6}
