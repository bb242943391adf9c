"""The synthetic pool: img2dataset layout that real readers accept, and truthful labels."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import webdataset as wds
from PIL import Image

from curate.synth import make_pool
from tests.conftest import POOL_N, POOL_SEED, POOL_SHARD


def members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64)), np.float32)


def test_layout_matches_img2dataset(pool: Path) -> None:
    shards = sorted(p.stem for p in pool.glob("*.tar"))
    assert shards == [f"{i:05d}" for i in range(POOL_N // POOL_SHARD)]
    truth = pl.read_parquet(pool / "truth.parquet")
    for shard in shards:
        meta = pl.read_parquet(pool / f"{shard}.parquet")
        stats = json.loads((pool / f"{shard}_stats.json").read_text())
        m = members(pool / f"{shard}.tar")
        ok = meta.filter(pl.col("status") == "success")
        assert stats["count"] == meta.height == POOL_SHARD
        assert stats["successes"] == ok.height == len([k for k in m if k.endswith(".jpg")])
        assert all(len(k) == 9 and k.startswith(shard) for k in meta["key"])
        failed = set(meta.filter(pl.col("status") != "success")["key"])
        assert failed == set(truth.filter(pl.col("failed_download") & (pl.col("shard") == shard))
                             ["key"])
        for row in ok.head(20).iter_rows(named=True):
            assert hashlib.sha256(m[f"{row['key']}.jpg"]).hexdigest() == row["sha256"]
            assert m[f"{row['key']}.txt"].decode() == row["caption"]
            assert json.loads(m[f"{row['key']}.json"])["url"] == row["url"]


def test_webdataset_reads_the_shards(pool: Path) -> None:
    ds = wds.WebDataset(str(pool / "00000.tar"), shardshuffle=False)
    keys = [s["__key__"] for s in ds]
    meta = pl.read_parquet(pool / "00000.parquet")
    assert keys == meta.filter(pl.col("status") == "success")["key"].to_list()


def test_truth_labels_are_true(pool: Path) -> None:
    truth = pl.read_parquet(pool / "truth.parquet")
    assert truth.height == POOL_N and truth["key"].n_unique() == POOL_N
    shares = truth["defect"].value_counts().to_dict(as_series=False)
    share = dict(zip(shares["defect"], shares["count"], strict=False))
    assert 0.05 < share["mismatched"] / POOL_N < 0.15 and share["abstract"] > 10
    clean = truth.filter(pl.col("defect") == "none")["key"].to_list()
    img = {}
    for tar in sorted(pool.glob("*.tar")):
        img.update({k[:-4]: v for k, v in members(tar).items() if k.endswith(".jpg")})
    for row in truth.iter_rows(named=True):
        if row["mismatched"]:
            assert row["caption"] != row["true_caption"] and row["colour"] in row["true_caption"]
        elif row["abstract"]:
            assert not {row["colour"], row["shape"]} & set(row["caption"].split())
        elif not row["empty_caption"]:
            assert row["caption"] == row["true_caption"] and row["colour"] in row["caption"]
        if row["duplicate_kind"] == "exact":
            assert img[row["key"]] == img[row["duplicate_of"]]
        if row["duplicate_kind"] == "near":
            a, b = pixels(img[row["key"]]), pixels(img[row["duplicate_of"]])
            assert img[row["key"]] != img[row["duplicate_of"]]
            others = [pixels(img[k]) for k in clean[:30] if k != row["duplicate_of"]]
            # closer to its source than to any other image in the pool: visually the same scene
            assert np.abs(a - b).mean() < min(np.abs(a - o).mean() for o in others if
                                              not np.array_equal(o, a))
        if row["empty_caption"]:
            assert row["caption"].strip() == ""


def test_pool_is_deterministic(tmp_path: Path, pool: Path) -> None:
    again = make_pool(tmp_path / "again", POOL_N, POOL_SEED, shard_size=POOL_SHARD)
    assert (again / "00001.tar").read_bytes() == (pool / "00001.tar").read_bytes()
    assert pl.read_parquet(again / "truth.parquet").equals(pl.read_parquet(pool / "truth.parquet"))
