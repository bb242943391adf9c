"""The Ray engine: a local two-CPU Ray instance computes the same parts as the local runner."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray  # a dev dependency: these tests run, never skip

from curate.cli import main
from curate.errors import CurateError
from curate.files import read_json
from curate.passes.embed import embed
from curate.passes.score import score
from curate.workspace import Workspace

pytestmark = pytest.mark.slow  # the whole module: see `make test-fast`


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_embedded(local_ray, ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ingested workspace embedded by the Ray engine (same batch size as the
    ``embedded`` fixture's local run)."""
    ws = tmp_path_factory.mktemp("ray") / "ws"
    shutil.copytree(ingested, ws)
    embed(ws, "tiny-clip", batch_size=64, engine="ray", progress=False)
    return ws


def assert_same_parts(a: Path, b: Path) -> int:
    """Every part under ``a`` has an identical table under ``b``, and vice versa."""
    names = sorted(p.name for p in a.glob("part-*.parquet"))
    assert names and names == sorted(p.name for p in b.glob("part-*.parquet"))
    for name in names:
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        assert ta.schema == tb.schema
        assert ta.equals(tb), f"{a.name}/{name} differs between engines"
    return len(names)


def test_ray_embeddings_equal_local(embedded: Path, ray_embedded: Path) -> None:
    assert assert_same_parts(embedded / "embeddings/tiny-clip",
                             ray_embedded / "embeddings/tiny-clip") == 6
    m = read_json(ray_embedded / "embeddings/tiny-clip/manifest.json")
    assert m["status"] == "complete" and m["rows"] == read_json(
        embedded / "embeddings/tiny-clip/manifest.json")["rows"]
    assert m["engine"]["name"] == "ray" and m["engine"]["actors"] == 2
    with Workspace.open(ray_embedded).connect(read_only=True) as con:
        got = con.execute("SELECT count(*) FROM embeddings_tiny_clip").fetchall()
    assert got == [(m["rows"],)]


@pytest.mark.parametrize("name", ["clip_score", "typicality", "text_stats"])
def test_ray_scores_equal_local(name: str, embedded: Path, ray_embedded: Path,
                                tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    shutil.copytree(embedded, local)
    shutil.copytree(ray_embedded, remote)
    score(local, name, progress=False)
    assert main(["score", name, "-w", str(remote), "--engine", "ray"]) == 0  # the CLI's path
    assert assert_same_parts(local / "scores" / name, remote / "scores" / name) == 6


def test_ray_resume_skips_finished_parts(embedded: Path, ray_embedded: Path,
                                         tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ray_embedded, ws)
    out = ws / "embeddings/tiny-clip"
    (out / "part-000002.parquet").unlink()
    (out / "part-000004.parquet").unlink()
    report = embed(ws, "tiny-clip", batch_size=64, engine="ray", progress=False)
    assert (report.parts_skipped, report.parts_written) == (4, 2)
    assert assert_same_parts(embedded / "embeddings/tiny-clip", out) == 6


def test_ray_actor_failure_is_one_line_and_keeps_parts(local_ray, embedded: Path,
                                                       tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(embedded, ws)
    pq.write_table(pq.read_table(ws / "samples/part-000003.parquet").slice(0, 0),
                   ws / "embeddings/tiny-clip/part-000003.parquet")  # a part that misaligns
    with pytest.raises(CurateError, match="part-000003.parquet failed on a Ray actor: "
                       "CurateError: cannot read .*rerun to resume"):
        score(ws, "clip_score", progress=False, engine="ray")
    done = sorted(p.name for p in (ws / "scores/clip_score").glob("part-*.parquet"))
    # the other actors' parts are kept; nothing is half-written under a final name
    assert done == [f"part-{i:06d}.parquet" for i in (0, 1, 2, 4, 5)]
    # and Ray Data's iterator thread has finished: one left running at ray.shutdown() touches
    # the dead core worker, which ends the whole process with exit code 1
    assert not [t for t in threading.enumerate() if t.name == "iter_threaded" and t.is_alive()]


def test_unreachable_cluster_fails_in_one_line(embedded: Path, tmp_path: Path) -> None:
    import time
    t = time.monotonic()
    with pytest.raises(CurateError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        score(embedded, "text_stats", engine="ray", address="127.0.0.1:1")
    assert time.monotonic() - t < 30  # not Ray's minutes of retries
    assert not (embedded / "scores" / "text_stats").exists()


def test_unknown_engine_is_refused(embedded: Path) -> None:
    with pytest.raises(CurateError, match="unknown engine 'spark'"):
        score(embedded, "text_stats", engine="spark")
