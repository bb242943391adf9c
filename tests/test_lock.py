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


HOLD_WITH_WORKERS = """
import sys, time
from curate.lock import writing
from curate.parallel import pmap
with writing(sys.argv[1], "select"):
    print("held", flush=True)
    pmap(time.sleep, [60, 60, 60, 60], workers=2)
"""


def test_a_killed_writer_s_workers_do_not_keep_its_lock(tmp_path: Path) -> None:
    """The forked pool inherits the lock's descriptor: killing the writer kills its workers
    too (PR_SET_PDEATHSIG), so the next writer is not refused by orphans of a dead pid."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_WITH_WORKERS, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    time.sleep(1.0)  # the pool's two workers forked and sleeping
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    assert len(children) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while holder(tmp_path) is not None and time.time() < deadline:
        time.sleep(0.1)
    assert holder(tmp_path) is None
    with writing(tmp_path, "score"):
        assert holder(tmp_path)["pid"] == os.getpid()
