"""Fault injection across verbs: kill -9 at chosen points, a second writer, deleted and
truncated parts. Each case checks that nothing was lost and that the result equals an
uninterrupted run's (or that the verb refused in one line, changing nothing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.passes.score import score
from curate.select import select

ROOT = Path(__file__).resolve().parents[1]
RULES = [("top", {"column": "n_words", "amount": 0.5})]


def curate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


@pytest.fixture()
def ws(ingested: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    score(ws, "text_stats", progress=False)
    return ws


def _files(ws: Path, name: str) -> dict[str, bytes]:
    sel = ws / "selections"
    return {p: (sel / p).read_bytes() for p in (f"{name}.parquet", f"{name}.json",
                                                 f"dropped/{name}.parquet")}


KILL_SELECT = """
import os, signal, sys
from curate.select import select
real = os.replace
def replace(a, b):
    real(a, b)
    if str(b).endswith("/selections/dropped/s.parquet"):  # the first of three files moved
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
select(sys.argv[1], "s", [("top", {"column": "n_words", "amount": 0.2})], overwrite=True)
"""


def test_a_kill_inside_select_force_leaves_the_new_selection_whole(ws: Path) -> None:
    select(ws, "s", RULES)
    old = _files(ws, "s")
    r = subprocess.run([sys.executable, "-c", KILL_SELECT, str(ws)], cwd=ROOT)
    assert r.returncode == -9
    # one file of three moved when the kill came: the next open finishes the other two
    from curate.workspace import Workspace
    Workspace.open(ws)
    new = _files(ws, "s")
    assert all(new[p] != old[p] for p in new)
    m = json.loads(new["s.json"])
    assert m["kept"] == pq.read_metadata(ws / "selections" / "s.parquet").num_rows
    assert m["rules"][0]["params"]["amount"] == 0.2
    # and it is exactly what an uninterrupted run writes
    select(ws, "s2", [("top", {"column": "n_words", "amount": 0.2})])
    assert pq.read_table(ws / "selections" / "s.parquet").equals(
        pq.read_table(ws / "selections" / "s2.parquet"))
    assert not list((ws / "selections").rglob(".*.tmp"))


def test_select_refuses_a_pass_with_a_deleted_part(ws: Path) -> None:
    want = select(ws, "whole", RULES).kept
    (ws / "scores" / "text_stats" / "part-000004.parquet").unlink()
    with pytest.raises(CurateError, match=r"scores/text_stats, which is incomplete: 1 of 6 "
                       r"parts missing .*curate score -w .* text_stats"):
        select(ws, "half", RULES)
    assert not (ws / "selections" / "half.json").exists()
    r = curate("select", "-w", str(ws), "half", "top", "n_words", "0.5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
    partial = select(ws, "half", RULES, allow_partial=True)
    assert partial.kept < want
    m = json.loads((ws / "selections" / "half.json").read_text())
    assert m["rules"][0]["partial_inputs"] == ["scores/text_stats"]
    score(ws, "text_stats", progress=False)  # the named command resumes it
    assert select(ws, "again", RULES).kept == want


def test_select_refuses_a_killed_pass(ws: Path) -> None:
    m = ws / "scores" / "text_stats" / "manifest.json"
    m.write_text(m.read_text().replace('"status": "complete"', '"status": "running"'))
    with pytest.raises(CurateError, match="its manifest says 'running'"):
        select(ws, "x", RULES)


@pytest.mark.slow
def test_a_second_writer_is_refused_in_one_line(ws: Path) -> None:
    hold = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom curate.lock import writing\n"
        "with writing(sys.argv[1], 'score'):\n    print('held', flush=True)\n"
        "    time.sleep(120)\n"), str(ws)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert hold.stdout.readline().strip() == "held"
        r = curate("select", "-w", str(ws), "s", "top", "n_words", "0.5")
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [
            r.stderr.strip()] and f"`curate score` (pid {hold.pid}" in r.stderr
        assert not (ws / "selections").exists()
    finally:
        hold.kill()
        hold.wait()
    assert curate("select", "-w", str(ws), "s", "top", "n_words", "0.5").returncode == 0


def _small_disk() -> None:
    """In the child: files may not grow past 4 KB, and the write fails (EFBIG) instead of
    the signal killing the process: the way a full disk looks to a writer."""
    import resource
    import signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_full_disk_is_one_line_and_keeps_the_old_selection(ws: Path) -> None:
    select(ws, "s", RULES)
    old = _files(ws, "s")
    r = subprocess.run([sys.executable, "-m", "curate.cli", "select", "-w", str(ws), "s",
                        "--force", "top", "n_words", "0.2"], capture_output=True, text=True,
                       timeout=600, cwd=ROOT, preexec_fn=_small_disk)
    assert r.returncode == 2, r.stderr
    *progress, line = r.stderr.strip().splitlines()
    assert [p.split(":")[0] for p in progress] == ["top"]  # its progress, then the error
    assert line.startswith("curate select: ") and "ulimit -f" in line
    assert _files(ws, "s") == old
    assert not list(ws.rglob(".*.tmp"))


def test_a_name_too_long_is_refused_before_any_work(ws: Path) -> None:
    r = curate("select", "-w", str(ws), "x" * 300, "top", "n_words", "0.5")
    assert r.returncode == 2 and "at most 128 characters" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (ws / "selections").exists()


def test_info_shows_an_incomplete_pass_as_such(ws: Path) -> None:
    from curate.info import format_info, info
    assert all(p["complete"] for p in info(ws)["passes"])
    (ws / "scores" / "text_stats" / "part-000004.parquet").unlink()
    d = info(ws)
    (p,) = [p for p in d["passes"] if p["key"] == "text_stats"]
    assert not p["complete"] and p["problems"][0].startswith("1 of 6 parts missing")
    text = format_info(d)
    assert "scores/text_stats: " in text and "INCOMPLETE: 1 of 6 parts missing" in text
    assert f"finish it with `curate score -w {ws} text_stats`" in text
    r = curate("info", "-w", str(ws))
    assert r.returncode == 0 and "INCOMPLETE" in r.stdout


def test_info_on_a_workspace_an_ingest_wrote_nothing_to_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"  # a table with its columns and no rows
    pq.write_table(pa.table({"image_path": pa.array([], pa.string()),
                             "caption": pa.array([], pa.string())}), empty)
    r = curate("ingest", str(empty), "-w", str(tmp_path / "ws"))
    assert r.returncode != 0 and "no samples in it" in r.stderr
    assert (tmp_path / "ws" / "samples").is_dir()
    r = curate("info", "-w", str(tmp_path / "ws"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "no samples" in r.stdout


def _pictures(src: Path, n: int) -> Path:
    """A folder source of ``n`` distinct captioned pictures (read in place by embed)."""
    import io

    from PIL import Image
    src.mkdir()
    for i in range(n):
        out = io.BytesIO()
        Image.new("RGB", (24, 24), (i * 40 % 256, 255 - i * 25 % 256, i * 7 % 256)).save(out,
                                                                                       "PNG")
        (src / f"p{i:02d}.png").write_bytes(out.getvalue())
        (src / f"p{i:02d}.txt").write_text(f"picture {i} of a colour field")
    return src


def test_redo_failed_recomputes_the_rows_a_missing_image_failed(tmp_path: Path) -> None:
    from curate.ingest import ingest
    from curate.passes.embed import embed
    src = _pictures(tmp_path / "src", 8)
    ws, clean = tmp_path / "ws", tmp_path / "clean"
    ingest([str(src)], ws, part_rows=4, progress=False)
    shutil.copytree(ws, clean)
    embed(clean, "tiny-clip", batch_size=8, workers=0, progress=False)
    (src / "p05.png").rename(tmp_path / "away.png")  # in the second samples part
    first = embed(ws, "tiny-clip", batch_size=8, workers=0, progress=False)
    assert first.failed == 1
    out = ws / "embeddings" / "tiny-clip"
    untouched = (out / "part-000000.parquet").stat()
    (tmp_path / "away.png").rename(src / "p05.png")
    assert embed(ws, "tiny-clip", progress=False).failed == 1  # a plain rerun skips done parts
    r = curate("embed", "-w", str(ws), "--model", "tiny-clip", "--batch-size", "8",
               "--workers", "0", "--redo-failed")
    assert r.returncode == 0, r.stderr
    assert "(0 failed) in 1 new parts, 1 parts already done" in r.stdout
    again = (out / "part-000000.parquet").stat()
    assert (again.st_ino, again.st_mtime_ns) == (untouched.st_ino, untouched.st_mtime_ns)
    for part in ("part-000000.parquet", "part-000001.parquet"):
        assert pq.read_table(out / part).equals(
            pq.read_table(clean / "embeddings" / "tiny-clip" / part))
    m = json.loads((out / "manifest.json").read_text())
    assert (m["status"], m["rows"], m["failed"]) == ("complete", 8, 0)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("argv", [["select", "x", "top", "clip_score", "0.3"],
                                  ["select", "x", "where", "true"], ["score", "text_stats"],
                                  ["info"], ["verify"], ["map"], ["export", "x", "out"]])
def test_every_verb_on_an_empty_workspace_is_one_line(tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "ws" / "samples").mkdir(parents=True)  # what an ingest that wrote nothing leaves
    r = curate(argv[0], "-w", str(tmp_path / "ws"), *argv[1:])
    assert "Traceback" not in r.stderr
    assert len((r.stdout + r.stderr).strip().splitlines()) <= 2, r.stdout + r.stderr
    assert r.returncode in (0, 2)


def test_damaged_manifests_and_parts_are_one_line_and_mended_by_a_rerun(ws: Path) -> None:
    select(ws, "s", RULES)
    (ws / "scores" / "text_stats" / "manifest.json").write_text("")
    # the damaged pass gets no view, so it stops no reader or writer; info names it
    r = curate("info", "-w", str(ws))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    line = next(x for x in r.stdout.splitlines() if "scores/text_stats" in x)
    assert "INCOMPLETE: manifest.json unreadable" in line, line
    r = curate("select", "-w", str(ws), "t", "top", "n_words", "0.5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "text_stats" in r.stderr and "Traceback" not in r.stderr, r.stderr
    score(ws, "text_stats", progress=False)  # the pass's own rerun rewrites its manifest
    part = ws / "scores" / "text_stats" / "part-000001.parquet"
    part.write_bytes(part.read_bytes()[:100])
    for argv in (["select", "t", "top", "n_words", "0.5", "--allow-partial"],
                 ["export", "s", str(ws.parent / "out"), "--allow-partial"]):
        r = curate(argv[0], "-w", str(ws), *argv[1:])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "part-000001.parquet" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert curate("verify", "-w", str(ws), "--repair").returncode == 1  # the selection is stale
    score(ws, "text_stats", progress=False)
    r = curate("verify", "-w", str(ws))
    assert r.returncode == 1 and "selection s: made from inputs that changed" in r.stdout
    select(ws, "s", RULES, overwrite=True)
    assert curate("verify", "-w", str(ws)).returncode == 0
