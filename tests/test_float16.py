"""Embeddings stored as float16 (``curate embed --dtype float16``): half the bytes, read back
as float32, and every score within tolerance of the float32 workspace's on the synthetic pool
(CLIPScore's AUROC against truth.parquet the same to 3 decimals)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.passes.embed import embed
from curate.passes.score import score
from curate.synth.truth import score_aurocs
from curate.workspace import Workspace

PASSES = ("clip_score", "typicality", "reward")  # every offline pass that reads embeddings
# bounds a few times what bench/float16.py measured on 2,000 samples (RESULTS.md)
COLUMNS = {"clip_score": 2e-3, "clip_cosine": 1e-3, "reward": 2e-3, "wclip_image_nll": 0.5,
           "wclip_text_nll": 0.5, "wclip_image_z": 0.05,
           "wclip_text_z": 0.05}


@pytest.fixture(scope="module")
def pair(embedded: Path, ingested: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("f16")
    f32, f16 = root / "f32", root / "f16"
    shutil.copytree(embedded, f32)
    shutil.copytree(ingested, f16)
    embed(f16, "tiny-clip", batch_size=64, workers=1, progress=False, dtype="float16")
    for ws in (f32, f16):
        for name in PASSES:
            score(ws, name, progress=False)
    return f32, f16


def test_stored_as_float16_read_as_float32(pair: tuple[Path, Path]) -> None:
    f32, f16 = pair
    part = "embeddings/tiny-clip/part-000000.parquet"
    assert pq.read_schema(f16 / part).field("image_emb").type.value_type == pa.float16()
    assert pq.read_schema(f32 / part).field("image_emb").type.value_type == pa.float32()
    assert Workspace.open(f16).manifest("embeddings", "tiny-clip")["dtype"] == "float16"
    with Workspace.open(f16).connect() as con:
        kind = con.execute("SELECT DISTINCT typeof(image_emb) FROM embeddings_tiny_clip "
                           "WHERE image_emb IS NOT NULL").fetchall()
    assert kind == [("FLOAT[64]",)]
    a = pq.read_table(f32 / part).column("image_emb").to_pylist()
    b = pq.read_table(f16 / part).column("image_emb").to_pylist()
    for x, y in zip(a, b, strict=True):
        assert (x is None) == (y is None)
        if x is not None:  # float16 keeps 11 significant bits
            assert np.asarray(y) == pytest.approx(np.asarray(x), rel=2 ** -10, abs=1e-6)
    size = {ws: sum(p.stat().st_size for p in (ws / "embeddings/tiny-clip").glob("part-*"))
            for ws in pair}
    assert size[f16] < 0.7 * size[f32]


def test_scores_equal_within_tolerance(pair: tuple[Path, Path], pool: Path) -> None:
    got = {}
    for ws in pair:
        with Workspace.open(ws).connect() as con:
            got[ws] = con.sql(f"SELECT {', '.join(COLUMNS)} FROM pairs ORDER BY sample_id"
                              ).fetchnumpy()
    f32, f16 = pair
    for col, tol in COLUMNS.items():
        x, y = (np.asarray(got[ws][col], float) for ws in pair)
        assert (np.isnan(x) == np.isnan(y)).all(), col
        assert np.nanmax(np.abs(x - y)) <= tol, (col, np.nanmax(np.abs(x - y)))
    au = [{r["column"]: r["auroc"] for r in score_aurocs(ws, pool)} for ws in pair]
    assert {"clip_score", "clip_cosine", "wclip_image_z"} <= set(au[0])
    for col in au[0]:
        assert round(au[0][col], 3) == round(au[1][col], 3), col


def test_a_folder_keeps_one_dtype(pair: tuple[Path, Path]) -> None:
    f32, f16 = pair
    with pytest.raises(CurateError, match="stored as float16"):
        embed(f16, "tiny-clip", progress=False, dtype="float32")
    with pytest.raises(CurateError, match="--dtype 'float8'"):
        embed(f32, "tiny-clip", progress=False, dtype="float8")


def test_sql_reads_float16_embeddings_as_float32(pair: tuple[Path, Path]) -> None:
    """The SQL sandbox (``curate sql``, ``curate.connect``, the notebooks) reads a float16
    workspace: every named query runs, and the embeddings view gives the stored float16
    values as float32 (CI's 10M bench found every query failing on DuckDB's Arrow scan)."""
    import curate
    from curate.sql import named_queries, parameters, resolve, run_sql

    f32, f16 = pair
    w = Workspace.open(f16)
    ran = 0
    for name in named_queries(w):
        if {"selection", "map"} & set(parameters(resolve(w, name)[1])):
            continue  # these need a selection or a map; the workspace has none
        text = "a red circle" if name == "similar_to_text" else None
        got, want = run_sql(f16, name, text=text), run_sql(f32, name, text=text)
        assert got.num_rows == want.num_rows, name
        ran += 1
    assert ran >= 4
    con = curate.connect(f16)
    got = con.execute("SELECT sample_id, image_emb FROM embeddings_tiny_clip WHERE "
                      "status = 'ok' ORDER BY sample_id").fetchall()
    con.close()
    stored = pq.ParquetDataset(sorted(w.pass_dir("embeddings", "tiny-clip").glob(
        "part-*.parquet"))).read(columns=["sample_id", "status", "image_emb"]).to_pylist()
    stored = sorted((r["sample_id"], r["image_emb"]) for r in stored if r["status"] == "ok")
    assert [g[0] for g in got] == [s[0] for s in stored]
    np.testing.assert_array_equal(np.array([g[1] for g in got], np.float32),
                                  np.array([s[1] for s in stored], np.float16).astype(np.float32))
