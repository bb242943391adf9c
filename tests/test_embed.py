"""The embedding pass: vectors per ok sample, failures as rows, resume, SQL over vectors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.ingest import ingest
from curate.metrics import auroc
from curate.passes.embed import embed
from curate.workspace import model_key
from tests import badinput

EMB = Path("embeddings") / "tiny-clip"


def vectors(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(ws / EMB / "part-*.parquet").sort("sample_id")


def test_one_row_per_ok_sample_with_raw_vectors_and_norms(embedded: Path) -> None:
    s = pl.read_parquet(embedded / "samples" / "*.parquet")
    e = vectors(embedded)
    assert sorted(e["sample_id"]) == sorted(s.filter(pl.col("status") == "ok")["sample_id"])
    assert (e["status"] == "ok").all()  # the pool's corrupt images were all caught at ingest
    img = np.stack(e["image_emb"].to_numpy())
    txt = np.stack(e["text_emb"].to_numpy())
    assert img.dtype == np.float32 and img.shape == txt.shape == (e.height, 64)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), e["image_norm"], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), e["text_norm"], rtol=1e-5)
    assert len({f.name for f in (embedded / EMB).glob("part-*.parquet")}) == len(
        list((embedded / "samples").glob("part-*.parquet")))
    m = json.loads((embedded / EMB / "manifest.json").read_text())
    assert m["status"] == "complete" and m["rows"] == e.height and m["model"]["weights_sha256"]


def test_true_pairs_score_above_mismatched_captions(embedded: Path, pool: Path) -> None:
    e = vectors(embedded).join(pl.read_parquet(embedded / "samples" / "*.parquet")
                               .select("sample_id", "key"), on="sample_id")
    t = e.join(pl.read_parquet(pool / "truth.parquet"), on="key")
    img, txt = np.stack(t["image_emb"].to_numpy()), np.stack(t["text_emb"].to_numpy())
    cos = (img * txt).sum(1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)
    bad, clean = t["mismatched"].to_numpy(), (t["defect"] == "none").to_numpy()
    assert bad.sum() > 20 and auroc(cos[clean], cos[bad]) >= 0.9


def test_catalog_cosine_in_sql_matches_numpy(embedded: Path) -> None:
    con = duckdb.connect(str(embedded / "catalog.duckdb"), read_only=True)
    got = dict(con.execute('SELECT sample_id, array_cosine_similarity(image_emb, text_emb) '
                           'FROM "embeddings_tiny_clip"').fetchall())
    con.close()
    e = vectors(embedded).head(20)
    for row in e.iter_rows(named=True):
        a, b = np.asarray(row["image_emb"]), np.asarray(row["text_emb"])
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        assert abs(got[row["sample_id"]] - cos) < 1e-5


def test_image_that_fails_to_decode_is_a_row(tmp_path: Path, workspace: Path) -> None:
    shard = badinput.write_tar(tmp_path / "s.tar", [
        ("a.jpg", badinput.jpeg()), ("a.txt", b"a red square"),
        ("b.png", badinput.corrupt_png_body()), ("b.txt", b"a broken picture")])
    report = ingest([str(shard)], workspace, progress=False)
    assert report.ok == 2  # header and end marker are fine: only a decode finds it
    embed(workspace, "tiny-clip", workers=0, progress=False)
    e = vectors(workspace).join(pl.read_parquet(workspace / "samples" / "*.parquet")
                                .select("sample_id", "key"), on="sample_id").sort("key")
    assert e["status"].to_list() == ["ok", "failed"]
    assert e["error"][1].startswith("undecodable_image")
    assert e["image_emb"][1] is None and e["text_emb"][1] is not None


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(embedded: Path, ingested: Path,
                                               tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    out = ws / EMB
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "embed", "-w", str(ws),
                             "--batch-size", "16", "--workers", "0"],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(Path.cwd())))
    deadline = time.time() + 120
    while not list(out.glob("part-*.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("part-*.parquet")))
    total = len(list((ws / "samples").glob("part-*.parquet")))
    assert 1 <= done < total, "the kill must land mid-run"
    report = embed(ws, "tiny-clip", batch_size=16, workers=0, progress=False)
    assert report.parts_skipped == done and report.parts_written == total - done
    assert not list(out.glob(".*.tmp"))
    a, b = vectors(ws), vectors(embedded)
    assert a["sample_id"].to_list() == b["sample_id"].to_list()
    np.testing.assert_allclose(np.stack(a["image_emb"].to_numpy()),
                               np.stack(b["image_emb"].to_numpy()), atol=1e-5)
    np.testing.assert_allclose(np.stack(a["text_emb"].to_numpy()),
                               np.stack(b["text_emb"].to_numpy()), atol=1e-5)
    again = embed(ws, "tiny-clip", progress=False)
    assert again.parts_written == 0 and again.rows == a.height


def test_embed_adds_parts_for_newly_ingested_samples(embedded: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(embedded, ws)
    shard = badinput.write_tar(tmp_path / "more.tar", [("z.jpg", badinput.jpeg((9, 9, 9))),
                                                       ("z.txt", b"one more")])
    ingest([str(shard)], ws, progress=False)
    report = embed(ws, "tiny-clip", workers=0, progress=False)
    assert report.parts_written == 1 and report.rows == vectors(embedded).height + 1
    assert pq.read_table(ws / EMB / "part-000006.parquet").num_rows == 1


def test_a_run_with_nothing_to_compute_keeps_how_the_parts_were_computed(
        embedded: Path, tmp_path: Path) -> None:
    """The manifest describes the parts: a rerun that computes nothing (as clip_score's
    call to embed does) with another batch size and the measured core split leaves the
    recorded params as the computing run wrote them (CI once saw them change run to run)."""
    ws = tmp_path / "ws"
    shutil.copytree(embedded, ws)
    path = ws / EMB / "manifest.json"
    before = json.loads(path.read_text())
    again = embed(ws, "tiny-clip", batch_size=7, workers=None, progress=False)
    after = json.loads(path.read_text())
    assert again.parts_written == 0 and after["status"] == "complete"
    assert after["params"] == before["params"] and after["params"]["batch_size"] != 7
    assert after["updated_at"] == before["updated_at"]


@pytest.mark.slow
def test_missing_weights_fail_at_once_with_a_hint(tmp_path: Path, ingested: Path) -> None:
    missing = tmp_path / "nowhere" / "open_clip_pytorch_model.bin"
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "curate.cli", "embed", "-w", str(ingested),
                        "--model", f"ViT-B-32@{missing}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and time.time() - t < 60
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in r.stderr


def test_resuming_with_other_weights_is_refused(embedded: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(embedded, ws)
    path = ws / EMB / "manifest.json"
    m = json.loads(path.read_text())
    sha = m["weights_sha256"]["model"]
    assert sha == m["model"]["weights_sha256"] and len(sha) == 64
    m["weights_sha256"]["model"] = "0" * 64  # as if another file had been embedded here
    path.write_text(json.dumps(m))
    (ws / EMB / "part-000000.parquet").unlink()  # a part the run would add
    with pytest.raises(CurateError, match="other weights") as e:
        embed(ws, "tiny-clip", progress=False)
    assert str(ws / EMB) in str(e.value) and "0" * 12 in str(e.value)
    assert sha[:12] in str(e.value) and "remove that folder" in str(e.value)
    assert len(str(e.value).splitlines()) == 1
    assert not (ws / EMB / "part-000000.parquet").exists()
    assert json.loads(path.read_text()) == m  # the manifest is left as it was


def test_a_folder_from_before_the_weights_field_is_checked_by_its_model(
        embedded: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(embedded, ws)
    path = ws / EMB / "manifest.json"
    m = json.loads(path.read_text())
    del m["weights_sha256"]
    m["model"]["weights_sha256"] = "0" * 64
    path.write_text(json.dumps(m))
    with pytest.raises(CurateError, match="other weights"):
        embed(ws, "tiny-clip", progress=False)


def test_long_model_names_never_share_a_folder() -> None:
    a = model_key("ViT-H-14@/very/long/path/to/checkpoints/of/a/lab/HPS_v2_compressed.pt")
    b = model_key("ViT-H-14@/very/long/path/to/checkpoints/of/a/lab/HPS_v2.1_compressed.pt")
    assert a != b and len(a) <= 64 and model_key("tiny-clip") == "tiny-clip"
