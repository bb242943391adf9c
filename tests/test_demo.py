"""`curate demo` runs end to end and resumes: the README's main job must not rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the whole module: see `make test-fast`


def test_demo_runs_and_a_second_run_adds_nothing(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "curate.cli", "demo", "-w", str(tmp_path / "ws"), "-n", "400"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    out = first.stdout
    assert "ingested 400 inputs" in out and "embeddings/tiny-clip" in out
    auc = dict(re.findall(r"(\w+)\s+flags \w+\s+AUROC ([0-9.]+)", out))
    assert float(auc["clip_score"]) > 0.9 and float(auc["concreteness"]) > 0.9
    assert "dedup finds" in out and "selection top30" in out
    assert re.search(r"map default: \d+ points, \d+ clusters", out)
    explore = f"-m marimo run {Path('notebooks/explore.py').resolve()} -- -w {tmp_path / 'ws'}"
    assert explore in out.splitlines()[-1]  # it ends with the command that opens the map
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert re.search(r"0 ok, 0 failed, 400 already present", second.stdout)
    assert "0 new parts" in second.stdout
    assert "map default: up to date" in second.stdout
