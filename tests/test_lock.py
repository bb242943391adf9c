"""One writer per workspace: a second writer is refused in one line naming the holder; the
lock goes with its process (kill -9 included); one process may re-enter it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.errors import CurateError
from curate.lock import holder, writes, writing

HOLD = """
import sys, time
from curate.lock import writing
with writing(sys.argv[1], "ingest"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holding(ws: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(ws)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    proc = _holding(tmp_path)
    try:
        assert holder(tmp_path)["pid"] == proc.pid
        with pytest.raises(CurateError, match=rf"`curate ingest` \(pid {proc.pid}") as e:
            with writing(tmp_path, "score"):
                pass
        assert "\n" not in str(e.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the kernel dropped the lock with the process: no stale lock to clear
    assert holder(tmp_path) is None
    with writing(tmp_path, "score"):
        assert holder(tmp_path)["verb"] == "score"
        assert holder(tmp_path)["pid"] == os.getpid()
    assert holder(tmp_path) is None


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    calls = []

    @writes("inner")
    def inner(workspace: Path) -> None:
        calls.append(holder(workspace)["verb"])

    @writes("outer")
    def outer(workspace: Path) -> None:
        inner(workspace)
        inner(workspace=workspace)

    outer(tmp_path)
    assert calls == ["outer", "outer"]
    assert holder(tmp_path) is None


def test_a_refused_writer_leaves_the_holder_alone(tmp_path: Path) -> None:
    proc = _holding(tmp_path)
    try:
        for _ in range(3):
            with pytest.raises(CurateError):
                with writing(tmp_path, "select"):
                    pass
        time.sleep(0.1)
        assert holder(tmp_path)["pid"] == proc.pid and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
