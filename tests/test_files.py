"""Atomic writes: a set of files replaced together appears whole or not at all, also when the
writing process is killed between two of its renames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from curate.files import atomic_files, recover

KILLED = """
import os, signal, sys
from pathlib import Path
from curate.files import atomic_files
real, moved = os.replace, []
def replace(a, b):
    real(a, b)
    moved.append(b)
    if str(b).endswith("a.txt"):  # the plan and the first file are in place, the second not
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
d = Path(sys.argv[1])
with atomic_files([d / "a.txt", d / "b.txt"], d / "journal" / "x.json") as (a, b):
    a.write_text("new a")
    b.write_text("new b")
"""


def _old(d: Path) -> None:
    (d / "a.txt").write_text("old a")
    (d / "b.txt").write_text("old b")


def test_a_kill_between_renames_is_finished_by_recover(tmp_path: Path) -> None:
    _old(tmp_path)
    r = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)])
    assert r.returncode == -9
    # the kill left a mix on disk, and the plan to finish it
    assert {(tmp_path / n).read_text() for n in ("a.txt", "b.txt")} == {"new a", "old b"}
    assert recover(tmp_path / "journal") == ["x"]
    assert (tmp_path / "a.txt").read_text() == "new a"
    assert (tmp_path / "b.txt").read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "journal"]
    assert recover(tmp_path / "journal") == []


def test_a_failure_before_the_plan_changes_nothing(tmp_path: Path) -> None:
    _old(tmp_path)
    with pytest.raises(RuntimeError):
        with atomic_files([tmp_path / "a.txt", tmp_path / "b.txt"],
                          tmp_path / "journal" / "x.json") as (a, _):
            a.write_text("new a")
            raise RuntimeError("the second file could not be made")
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_files_replaced_together(tmp_path: Path) -> None:
    _old(tmp_path)
    with atomic_files([tmp_path / "a.txt", tmp_path / "sub" / "b.txt"],
                      tmp_path / "journal" / "x.json") as (a, b):
        a.write_text("new a")
        b.write_text("new b")
    assert (tmp_path / "a.txt").read_text() == "new a"
    assert (tmp_path / "sub" / "b.txt").read_text() == "new b"
    assert not any((tmp_path / "journal").iterdir())
