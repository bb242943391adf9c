"""The captioning pass, offline: a random-initialised tiny BLIP of the real class, built from a
config and saved with ``save_pretrained``, loaded by path as a hub id would be. Its captions are
noise; the path, the bookkeeping (one caption per image, attached as samples) and resume after a
kill are what is checked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from curate.errors import CurateError
from curate.ingest import ingest
from curate.passes.caption import caption
from curate.synth import make_pool
from curate.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "red",
         "blue", "circle", "square", "on", "the", "background"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BlipForConditionalGeneration of two tiny layers and its BlipProcessor, saved."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )
    d = tmp_path_factory.mktemp("tinyblip")
    (d / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tok = BertTokenizerFast(str(d / "vocab.txt"))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=37)
    cfg = BlipConfig(text_config=dict(vocab_size=len(WORDS), max_position_embeddings=64,
                                      bos_token_id=5, sep_token_id=3, pad_token_id=0,
                                      eos_token_id=3, **small),
                     vision_config=dict(image_size=32, patch_size=8, **small),
                     projection_dim=16)
    torch.manual_seed(0)
    out = d / "model"
    BlipForConditionalGeneration(cfg).save_pretrained(out)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok).save_pretrained(out)
    return out


def samples(ws: Path) -> pl.DataFrame:
    with Workspace.open(ws).connect() as con:
        return con.sql("SELECT * FROM samples").pl()


@pytest.mark.slow
def test_captions_every_image_once_and_attaches_them(tiny_blip: Path, tmp_path: Path) -> None:
    pool = make_pool(tmp_path / "pool", 40, seed=5, shard_size=20)
    ws = tmp_path / "ws"
    ingest([str(pool)], ws, part_rows=20, progress=False)
    before = samples(ws).filter(pl.col("status") == "ok")
    run, attached = caption(ws, str(tiny_blip), "blip", batch_size=8, device="cpu",
                            max_new_tokens=6, progress=False)
    images = before["image_hash"].n_unique()
    assert run.rows == images and run.failed == 0 and run.parts_written == 2
    out = pl.read_parquet(ws / "captions" / "blip" / "part-*.parquet")
    assert sorted(out["image_id"]) == sorted(before["image_hash"].unique())
    vocab = set(WORDS[5:])
    assert all(c and set(c.split()) <= vocab for c in out["caption"])  # the model's words
    # attached: one blip caption per image (a caption the image has already is not repeated)
    after = samples(ws)
    blip = after.filter(pl.col("caption_source") == "blip")
    assert attached.added == blip.height and attached.added + attached.already_present == images
    assert blip["image_id"].n_unique() == blip.height
    for r in blip.join(out, on="image_id", suffix="_run").iter_rows(named=True):
        assert r["caption"] == r["caption_run"]
    m = Workspace.open(ws).manifest("captions", "blip")
    assert m["status"] == "complete" and m["weights_sha256"]["model.safetensors"]
    # a rerun captions nothing (the attached samples bring no new image) and adds nothing
    again, more = caption(ws, str(tiny_blip), "blip", device="cpu", progress=False)
    assert (again.extra["rows_this_run"], more.added) == (0, 0)
    with pytest.raises(CurateError, match="cannot load captioner"):
        caption(ws, str(tmp_path / "no-such-model"), "blip2", progress=False)


@pytest.mark.slow
def test_a_killed_run_resumes_and_attaches_every_caption(tiny_blip: Path,
                                                         tmp_path: Path) -> None:
    pool = make_pool(tmp_path / "pool", 120, seed=6, shard_size=30)
    ws = tmp_path / "ws"
    ingest([str(pool)], ws, part_rows=10, progress=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "curate.cli", "caption", "-w", str(ws), "--model",
           str(tiny_blip), "--name", "blip", "--device", "cpu", "--batch-size", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    folder = ws / "captions" / "blip"
    deadline = time.time() + 120
    while len(list(folder.glob("part-*.parquet"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = len(list(folder.glob("part-*.parquet")))
    parts = len(list((ws / "samples").glob("part-*.parquet")))
    assert 2 <= done < parts, "the run was not killed midway"
    assert samples(ws).filter(pl.col("caption_source") == "blip").height == 0
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{done} parts already done" in out.stdout
    images = samples(ws).filter((pl.col("status") == "ok")
                                & (pl.col("caption_source") == "alt"))["image_hash"].n_unique()
    run = pl.read_parquet(folder / "part-*.parquet")
    assert run.height == run["image_id"].n_unique() == images
    blip = samples(ws).filter(pl.col("caption_source") == "blip")
    assert blip.height == images - pl.read_parquet(ws / "captions" / "blip.parquet").filter(
        pl.col("status") == "already_present").height
