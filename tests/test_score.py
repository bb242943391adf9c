"""The score runner and the clip_score / text_stats passes, against truth and by hand."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import open_clip
import polars as pl
import pyarrow as pa
import pytest
import torch
from PIL import Image

from curate import passes
from curate.errors import CurateError
from curate.files import read_json
from curate.images import read_bytes
from curate.ingest import ingest
from curate.metrics import auroc
from curate.models.tinyclip import tiny_clip_dir
from curate.passes.runner import Job, run
from curate.passes.score import score
from curate.workspace import Workspace
from tests import badinput


@pytest.fixture(scope="module")
def scored(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("scored") / "ws"
    shutil.copytree(embedded, ws)
    score(ws, "clip_score", progress=False)
    return ws


def table(ws: Path, key: str) -> pl.DataFrame:
    return pl.read_parquet(ws / "scores" / key / "part-*.parquet")


def with_truth(ws: Path, pool: Path, key: str) -> pl.DataFrame:
    s = pl.read_parquet(ws / "samples" / "*.parquet").select("sample_id", "key", "caption",
                                                             "image_path", "image_offset",
                                                             "image_length")
    return table(ws, key).join(s, on="sample_id").join(pl.read_parquet(pool / "truth.parquet")
                                                       .drop("caption"), on="key")


def test_clip_score_separates_mismatched_captions(scored: Path, pool: Path) -> None:
    t = with_truth(scored, pool, "clip_score")
    clean = t.filter(pl.col("defect") == "none")
    bad = t.filter(pl.col("mismatched"))
    assert bad.height > 20
    assert auroc(clean["clip_score"].to_numpy(), bad["clip_score"].to_numpy()) >= 0.95
    assert ((t["clip_score"] >= 0) & (t["clip_score"] <= 2.5)).all()


def test_clip_score_equals_open_clip_computed_directly(scored: Path, pool: Path) -> None:
    """Parity: an independent computation with open_clip on the same image bytes."""
    folder = tiny_clip_dir()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    model.eval()
    t = with_truth(scored, pool, "clip_score").sort("key").head(32)
    images = torch.stack([preprocess(Image.open(io.BytesIO(read_bytes(
        r["image_path"], r["image_offset"], r["image_length"]))).convert("RGB"))
        for r in t.iter_rows(named=True)])
    with torch.no_grad():
        img = model.encode_image(images, normalize=True)
        prompted = model.encode_text(tokenizer(["A photo depicts " + c for c in t["caption"]]),
                                     normalize=True)
        plain = model.encode_text(tokenizer(t["caption"].to_list()), normalize=True)
    expected = 2.5 * torch.clamp((img * prompted).sum(-1), min=0).numpy()
    np.testing.assert_allclose(t["clip_score"].to_numpy(), expected, atol=1e-3)
    np.testing.assert_allclose(t["clip_cosine"].to_numpy(), (img * plain).sum(-1).numpy(),
                               atol=1e-3)


def test_prompt_embeddings_are_cached_and_nothing_is_recomputed(scored: Path) -> None:
    m = json.loads((scored / "embeddings" / "tiny-clip+prompt-a-photo-depicts" /
                    "manifest.json").read_text())
    assert m["prefix"] == "A photo depicts " and m["model"]["name"] == "tiny-clip"
    again = score(scored, "clip_score", progress=False)
    assert again.parts_written == 0 and again.rows == table(scored, "clip_score").height
    manifest = json.loads((scored / "scores" / "clip_score" / "manifest.json").read_text())
    assert manifest["model"]["weights_sha256"] and manifest["params"]["w"] == 2.5
    assert manifest["status"] == "complete" and manifest["samples_per_s"] > 0


def test_configurations_never_overwrite_each_other(scored: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(scored, ws)
    r = score(ws, "clip_score", {"w": "1.0"}, progress=False)
    assert r.key == "clip_score--w=1.0"
    a, b = table(ws, "clip_score"), table(ws, "clip_score--w=1.0")
    np.testing.assert_allclose(a.sort("sample_id")["clip_score"].to_numpy() / 2.5,
                               b.sort("sample_id")["clip_score"].to_numpy(), rtol=1e-6)
    con = duckdb.connect(str(ws / "catalog.duckdb"), read_only=True)
    row = con.execute("SELECT avg(clip_score) / avg(clip_score__w_1_0) FROM pairs").fetchone()
    assert abs(row[0] - 2.5) < 1e-4


def test_parts_of_other_embedding_weights_are_not_mixed(scored: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(scored, ws)
    out = ws / "scores" / "clip_score"
    m = json.loads((out / "manifest.json").read_text())
    emb = json.loads((ws / "embeddings" / "tiny-clip" / "manifest.json").read_text())
    assert m["weights_sha256"] == emb["weights_sha256"] == {
        "model": emb["model"]["weights_sha256"]}
    m["weights_sha256"]["model"] = "f" * 64  # as if scored before the model file changed
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "part-000002.parquet").unlink()
    with pytest.raises(CurateError, match="other weights") as e:
        score(ws, "clip_score", progress=False)
    assert f"model sha256 {'f' * 12}, now {emb['model']['weights_sha256'][:12]}" in str(e.value)
    assert not (out / "part-000002.parquet").exists()


def test_the_runner_refuses_any_job_of_other_weights(ingested: Path, tmp_path: Path) -> None:
    """The check is the runner's: a job of any kind names its weights (as imagereward names
    its checkpoint file) and a folder of parts from other weights gets no new part."""

    def job(sha: str) -> Job:
        def process(pending: list[Path], advance: Callable[[int], None]) -> Iterator:
            for part in pending[:1]:  # one part a run
                yield part, pa.table({"sample_id": ["x"], "status": ["ok"], "error": [None]})
        return Job(kind="scores", key="fake", manifest={"pass": "fake", "columns": []},
                   process=process, weights={"ImageReward.pt": sha})

    shutil.copytree(ingested, tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    out = ws.scores_dir("fake")
    assert run(ws, job("a" * 64), progress=False).parts_written == 1
    assert read_json(out / "manifest.json")["weights_sha256"] == {"ImageReward.pt": "a" * 64}
    assert run(ws, job("a" * 64), progress=False).parts_written == 1  # same weights: resumes
    with pytest.raises(CurateError) as e:
        run(ws, job("b" * 64), progress=False)
    assert str(e.value) == (f"{out} holds parts computed with other weights (ImageReward.pt "
                            f"sha256 {'a' * 12}, now {'b' * 12}); remove that folder to "
                            "recompute them with these weights")
    assert len(list(out.glob("part-*.parquet"))) == 2
    assert read_json(out / "manifest.json")["weights_sha256"] == {"ImageReward.pt": "a" * 64}


def test_unknown_or_bad_parameters_fail_before_any_work(scored: Path) -> None:
    with pytest.raises(CurateError, match="no parameter 'wieght'"):
        score(scored, "clip_score", {"wieght": "1"})
    with pytest.raises(CurateError, match="not a valid float"):
        score(scored, "clip_score", {"w": "high"})
    with pytest.raises(CurateError, match="unknown pass"):
        score(scored, "clip_scroe")
    assert not list((scored / "scores").glob("clip_score--*"))


@pytest.mark.slow
def test_killed_pass_resumes_to_the_same_table(pool: Path, tmp_path: Path) -> None:
    ws, ref = tmp_path / "ws", tmp_path / "ref"
    for w in (ws, ref):  # 120 parts of 5 samples: a kill lands mid-run
        ingest([str(pool)], w, part_rows=5, progress=False)
    score(ref, "text_stats", progress=False)
    out = ws / "scores" / "text_stats"
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "score", "-w", str(ws),
                             "text_stats"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(out.glob("part-*.parquet")) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("part-*.parquet")))
    total = len(list((ws / "samples").glob("part-*.parquet")))
    assert 1 <= done < total, "the kill must land mid-run"
    report = score(ws, "text_stats", progress=False)
    assert (report.parts_skipped, report.parts_written) == (done, total - done)
    assert table(ws, "text_stats").sort("sample_id").equals(
        table(ref, "text_stats").sort("sample_id"))


def test_failed_image_keeps_status_and_gets_null_scores(tmp_path: Path, workspace: Path) -> None:
    shard = badinput.write_tar(tmp_path / "s.tar", [
        ("a.jpg", badinput.jpeg()), ("a.txt", b"a red square"),
        ("b.png", badinput.corrupt_png_body()), ("b.txt", b"a broken picture")])
    ingest([str(shard)], workspace, progress=False)
    score(workspace, "clip_score", progress=False)
    t = table(workspace, "clip_score").sort("status", descending=True)
    assert t["status"].to_list() == ["ok", "failed"]
    assert t["error"][1].startswith("undecodable_image")
    assert t["clip_score"][1] is None and t["clip_score"][0] is not None


def test_text_stats_by_hand(tmp_path: Path, workspace: Path) -> None:
    long = " ".join(["word"] * 100)
    captions = {"url": "see https://shop.example.com/item now", "file": "IMG_1234.jpg",
                "price": "only $19.99 today", "html": "<b>bold</b> &amp; more",
                "plain": "a red square", "long": long}
    d = tmp_path / "imgs"
    d.mkdir()
    for i, (k, c) in enumerate(captions.items()):
        (d / f"{k}.png").write_bytes(badinput.png((i, i, i)))
        (d / f"{k}.txt").write_text(c)
    ingest([str(d)], workspace, progress=False)
    score(workspace, "text_stats", progress=False)
    s = pl.read_parquet(workspace / "samples" / "*.parquet").select("sample_id", "key")
    t = {r["key"]: r for r in table(workspace, "text_stats").join(s, on="sample_id")
         .iter_rows(named=True)}
    tok = open_clip.tokenizer.SimpleTokenizer()
    for k, c in captions.items():
        assert t[k]["n_words"] == len(c.split()) and t[k]["n_chars"] == len(c)
        assert t[k]["n_tokens"] == len(tok.encode(c)) + 2
    assert t["plain"]["n_tokens"] == 5  # start, a, red, square, end
    assert t["long"]["truncated"] and not t["plain"]["truncated"]
    flags = ("has_url", "has_filename", "has_price", "has_html")
    for k, flag in zip(("url", "file", "price", "html"), flags, strict=True):
        assert t[k][flag] and t[k]["junk"], k
    assert not any(t["plain"][f] for f in (*flags, "junk"))


def test_every_pass_is_listed_with_parameters() -> None:
    names = {p.name for p in passes.list_passes()}
    assert {"clip_score", "text_stats"} <= names
    p = passes.get("clip_score")
    assert passes.key(p, passes.make_params(p, {"w": "2.5"})) == "clip_score"
