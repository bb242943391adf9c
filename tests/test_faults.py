"""A kill -9 at every commit of every writing verb, then a rerun: the result must equal an
uninterrupted run's, nothing may be lost and ``curate verify`` must find nothing wrong.

Every write in curate becomes visible through one rename or exclusive link
(``curate.files.commit_point``); with ``CURATE_KILL_AT=N`` the process kills itself just before
the Nth. For each verb the test runs it killed at N = 1, 2, ... until a run finishes without
reaching N: so every commit point of the verb, in the order the verb reaches them, is one case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.files import KILL_AT

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# what may differ between two runs that did the same work: clocks, rates, process ids
VOLATILE = re.compile(r"(^|_)(at|time|times|wall|seconds|secs|elapsed|rate|per_s|started|"
                      r"finished|created|updated|date|pid|host|since|took|eta|last_run|this_run|"
                      r"skipped|resumed)(_|$)|"
                      r"samples_per_s|samples/s", re.I)
STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?|"
                   r"\d+(\.\d+)? ?(s|ms|min|samples/s|/s)\b")
SKIP = {"catalog.duckdb", ".curate-writer.lock", ".high-water"}  # views only; the lock; a mark

# each verb: (the workspace state it starts from, the Python that runs it; argv[1] = ws,
# argv[2] = the pool, argv[3] = an export folder)
VERBS: dict[str, tuple[str, str]] = {
    "ingest": ("empty", "from curate.ingest import ingest\n"
               "ingest([sys.argv[2]], sys.argv[1], part_rows=50, progress=False)"),
    "embed": ("ingested", "from curate.passes.embed import embed\n"
              "embed(sys.argv[1], 'tiny-clip', batch_size=32, workers=0, progress=False)"),
    "score": ("embedded", "from curate.passes.score import score\n"
              "score(sys.argv[1], 'clip_score', progress=False)\n"
              "score(sys.argv[1], 'text_stats', progress=False)"),
    "select": ("scored", "from curate.select import select\n"
               "select(sys.argv[1], 'pick', [('where', {'expr': 'n_words > 3'}),\n"
               "       ('top', {'column': 'clip_score', 'amount': 0.5})])"),
    "select --force": ("selected", "from curate.select import select\n"
                       "select(sys.argv[1], 'pick', [('top', {'column': 'n_words', "
                       "'amount': 0.3})], overwrite=True)"),
    "map": ("embedded", "from curate.maps import make_map\n"
            "from curate.maps.layout import MapParams\n"
            "make_map(sys.argv[1], 'default', params=MapParams(sample=120, clusters=4),\n"
            "         progress=False)"),
    "export": ("selected", "from curate.export import export\n"
               "export(sys.argv[1], 'pick', sys.argv[3], shard_size=40, progress=False)"),
    "card": ("selected", "from curate.cards import write_card\n"
             "write_card(sys.argv[1], 'pick')"),
}


def _run(code: str, ws: Path, pool: Path, out: Path, kill_at: int | None
         ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT}
    if kill_at is not None:
        env[KILL_AT] = str(kill_at)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", "import sys\n" + code, str(ws), str(pool),
                           str(out)], capture_output=True, text=True, env=env, timeout=600)


def _clean(value: object, case: str) -> object:
    if isinstance(value, dict):
        return {k: _clean(v, case) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_clean(v, case) for v in value]
    if isinstance(value, str):  # paths inside the case's folder, wherever it is
        return STAMP.sub("#", value.replace(case, "<case>"))
    if isinstance(value, float):
        return round(value, 4)
    return value


def state(*roots: Path) -> dict[str, object]:
    """What the files under ``roots`` hold, clocks and rates left out: Parquet as its rows
    (volatile columns dropped), JSON without volatile keys, other text with stamps masked,
    binary files as bytes. Leftover temporary files and journals are kept in, so one left
    behind is a difference."""
    out: dict[str, object] = {}
    case = str(roots[0].resolve().parent)
    for root in roots:
        for p in sorted(root.rglob("*")) if root.exists() else []:
            if not p.is_file() or p.name in SKIP:
                continue
            key = f"{root.name}/{p.relative_to(root)}"
            if p.suffix == ".parquet":
                t = pq.read_table(p)
                t = t.drop_columns([c for c in t.column_names if VOLATILE.search(c)])
                out[key] = _clean(t.to_pylist(), case)
            elif p.suffix == ".json":
                out[key] = _clean(json.loads(p.read_text()), case)
            elif p.suffix in (".md", ".txt", ".csv", ".sha256", ".b3"):
                out[key] = STAMP.sub("#", p.read_text().replace(case, "<case>"))
            else:
                out[key] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each starting state, built once by uninterrupted runs, as a folder holding ``ws`` (and
    ``out``, the export) and the pool."""
    from curate.synth import make_pool

    base = tmp_path_factory.mktemp("faults")
    pool = make_pool(base / "pool", 100, 3, shard_size=50)
    made: dict[str, Path] = {}
    previous = None
    for name, verb in (("empty", None), ("ingested", "ingest"), ("embedded", "embed"),
                       ("scored", "score"), ("selected", "select"),
                       ("exported", "export")):
        d = base / name
        if previous is None:
            (d / "ws").mkdir(parents=True)
        else:
            shutil.copytree(previous, d)
            r = _run(VERBS[verb][1], d / "ws", pool, d / "out", None)
            assert r.returncode == 0, r.stderr
        made[name] = previous = d
    made["pool"] = pool
    return made


def _copy(states: dict[str, Path], start: str, dest: Path) -> Path:
    shutil.copytree(states[start], dest)
    return dest


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_kill_at_every_commit_then_a_rerun_equals_an_uninterrupted_run(
        verb: str, states: dict[str, Path], tmp_path: Path) -> None:
    start, code = VERBS[verb]
    pool = states["pool"]
    whole = _copy(states, start, tmp_path / "whole")
    r = _run(code, whole / "ws", pool, whole / "out", None)
    assert r.returncode == 0, r.stderr
    want = state(whole / "ws", whole / "out")
    before = state(states[start] / "ws", states[start] / "out")
    assert want != before, "the verb must write something"
    checked = _walk(verb, code, states, start, tmp_path, want)
    assert checked >= 2, f"{verb}: {checked} commit points; the walk did not run"


def _walk(verb: str, code: str, states: dict[str, Path], start: str, tmp_path: Path,
          want: dict[str, object]) -> int:
    """Kill ``verb`` at commit 1, 2, ... until a run finishes first; after each kill, rerun
    it whole and compare with ``want``. The number of commit points checked."""
    from curate.verify import verify

    pool, n = states["pool"], 0
    while True:
        n += 1
        assert n < 200, f"{verb}: no end to its commits"
        d = _copy(states, start, tmp_path / f"kill-{n}")
        r = _run(code, d / "ws", pool, d / "out", n)
        if r.returncode == 0:
            assert state(d / "ws", d / "out") == want, f"{verb}: a run with no kill differs"
            shutil.rmtree(d)
            return n - 1
        assert r.returncode == -9, f"{verb} at commit {n}: {r.stderr[-2000:]}"
        again = _run(code, d / "ws", pool, d / "out", None)
        # a kill after its output was whole (before the catalog's refresh, say) leaves a
        # rerun of the same command nothing to do but refuse to overwrite it, in one line
        finished = again.returncode == 1 and "exists; pick another name" in again.stderr
        assert again.returncode == 0 or finished, (
            f"{verb} rerun after a kill at commit {n}: {again.stderr}")
        got = state(d / "ws", d / "out")
        _same(got, want, f"{verb}, killed at commit {n} then rerun")
        report = verify(d / "ws")
        assert report.ok, f"{verb} killed at commit {n}: verify says {report}"
        shutil.rmtree(d)


def _same(got: dict[str, object], want: dict[str, object], what: str) -> None:
    assert sorted(got) == sorted(want), (
        f"{what}: files differ: extra {sorted(set(got) - set(want))}, "
        f"missing {sorted(set(want) - set(got))}")
    for k in want:
        assert got[k] == want[k], f"{what}: {k} differs"


def test_state_tells_runs_apart(states: dict[str, Path], tmp_path: Path) -> None:
    """The comparison the walk relies on can fail: a changed selection is a difference, a
    second run of the same select is not."""
    a = _copy(states, "selected", tmp_path / "a")
    assert state(a / "ws") == state(states["selected"] / "ws")
    r = _run(VERBS["select --force"][1], a / "ws", states["pool"], a / "out", None)
    assert r.returncode == 0, r.stderr
    assert state(a / "ws") != state(states["selected"] / "ws")
    (a / "ws" / "samples" / ".part.x.tmp").write_bytes(b"left over")
    assert "ws/samples/.part.x.tmp" in state(a / "ws")


