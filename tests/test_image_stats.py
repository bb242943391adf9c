"""image_stats: pixel statistics against hand-computed values, on real ingested files."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageFilter

from curate import images
from curate.ingest import ingest
from curate.passes.image_stats import load
from curate.passes.score import score
from tests import badinput

PIXEL = ("brightness", "contrast", "blur", "colourfulness", "saturated_fraction")


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _grey(v: int, w: int = 32, h: int = 32) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def _checker(a: int, b: int, n: int = 16) -> np.ndarray:
    """A 1-pixel grey checkerboard of values ``a`` and ``b``."""
    ij = np.add.outer(np.arange(n), np.arange(n)) % 2
    return np.repeat(np.where(ij == 0, a, b)[..., None], 3, axis=2)


def _scene() -> np.ndarray:
    """A sharp, busy picture: random 4-pixel blocks of colour."""
    rng = np.random.default_rng(0)
    return np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((4, 4, 1)))


def _bands() -> np.ndarray:
    """Left half pure red, right half pure blue (colourfulness by hand)."""
    a = np.zeros((8, 8, 3), np.uint8)
    a[:, :4, 0] = 255
    a[:, 4:, 2] = 255
    return a


def _clipped() -> np.ndarray:
    """Half black, a quarter white, a quarter mid grey: 3/4 of the pixels clipped."""
    a = np.full((8, 8, 3), 128, np.uint8)
    a[:, :4] = 0
    a[:, 4:6] = 255
    return a


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """A folder of hand-made images ingested and scored (forked pool and serial agree)."""
    src = tmp_path_factory.mktemp("imgs")
    blurred = Image.fromarray(_scene().astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    files = {"grey": _png(_grey(128)), "checker": _png(_checker(40, 200)),
             "sharp": _png(_scene()), "blurred": _png(np.asarray(blurred)),
             "wide": _png(_grey(90, 40, 20)), "bands": _png(_bands()),
             "clipped": _png(_clipped()), "corrupt": badinput.corrupt_png_body()}
    for name, data in files.items():
        (src / f"{name}.png").write_bytes(data)
        (src / f"{name}.txt").write_text(f"a picture called {name}")
    ws = tmp_path_factory.mktemp("ws") / "ws"
    ingest([str(src)], ws, progress=False)
    score(ws, "image_stats", {"workers": 2}, progress=False)  # the forked pool path
    samples = pl.read_parquet(ws / "samples" / "*.parquet").select("sample_id", "key")
    out = pl.read_parquet(ws / "scores" / "image_stats--workers=2" / "*.parquet").join(
        samples, on="sample_id")
    score(ws, "image_stats", {"workers": 1}, progress=False)
    serial = pl.read_parquet(ws / "scores" / "image_stats--workers=1" / "*.parquet")
    assert serial.sort("sample_id").equals(out.sort("sample_id").drop("key"))
    return out


def _row(df: pl.DataFrame, key: str) -> dict:
    rows = df.filter(pl.col("key") == key).to_dicts()
    assert len(rows) == 1, f"{key}: {len(rows)} rows"
    return rows[0]


def test_solid_grey_is_flat(scored: pl.DataFrame) -> None:
    r = _row(scored, "grey")
    assert r["brightness"] == pytest.approx(128 / 255, abs=1e-9)
    assert r["contrast"] == pytest.approx(0, abs=1e-9)
    assert r["blur"] == pytest.approx(0, abs=1e-9)
    assert r["colourfulness"] == pytest.approx(0, abs=1e-9)
    assert r["saturated_fraction"] == 0 and r["format"] == "png"


def test_checkerboard_matches_hand_computed(scored: pl.DataFrame) -> None:
    r, a, b = _row(scored, "checker"), 40.0, 200.0
    # half the pixels each: luma std |a-b|/2; every interior Laplacian is ±4(a-b), mean 0
    assert r["contrast"] == pytest.approx(abs(a - b) / 2 / 255, rel=1e-9)
    assert r["blur"] == pytest.approx(16 * (a - b) ** 2, rel=1e-9)
    assert r["brightness"] == pytest.approx((a + b) / 2 / 255, rel=1e-9)


def test_scene_matches_plain_numpy(scored: pl.DataFrame) -> None:
    x = _scene()
    luma = x @ np.array([0.299, 0.587, 0.114])
    lap = [4 * luma[i, j] - luma[i - 1, j] - luma[i + 1, j] - luma[i, j - 1] - luma[i, j + 1]
           for i in range(1, x.shape[0] - 1) for j in range(1, x.shape[1] - 1)]
    r = _row(scored, "sharp")
    assert r["contrast"] == pytest.approx(luma.std() / 255, rel=1e-9)
    assert r["blur"] == pytest.approx(np.var(lap), rel=1e-9)
    assert r["saturated_fraction"] == pytest.approx(np.mean((luma >= 250) | (luma <= 5)))


def test_colourfulness_and_clipping_by_hand(scored: pl.DataFrame) -> None:
    # red: rg=255, yb=127.5; blue: rg=0, yb=-255; half of each
    want = math.hypot(127.5, 191.25) + 0.3 * math.hypot(127.5, 63.75)
    assert _row(scored, "bands")["colourfulness"] == pytest.approx(want, rel=1e-9)
    assert _row(scored, "clipped")["saturated_fraction"] == 0.75


def test_gaussian_blur_lowers_blur(scored: pl.DataFrame) -> None:
    sharp, soft = _row(scored, "sharp")["blur"], _row(scored, "blurred")["blur"]
    assert soft < sharp / 10


def test_aspect_ratio_and_megapixels(scored: pl.DataFrame) -> None:
    r = _row(scored, "wide")
    assert r["aspect_ratio"] == 2.0 and r["megapixels"] == pytest.approx(40 * 20 / 1e6)
    assert r["brightness"] == pytest.approx(90 / 255, abs=1e-9)


def test_undecodable_image_gets_null_pixel_stats(scored: pl.DataFrame) -> None:
    r = _row(scored, "corrupt")
    assert r["status"] == "ok" and r["aspect_ratio"] == 1.0 and r["format"] == "png"
    assert all(r[c] is None for c in PIXEL)
    assert scored.height == 8


def test_large_jpeg_is_downscaled_with_draft() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1200, 600), (100, 100, 100)).save(buf, "JPEG", quality=95)
    x = load(buf.getvalue(), 256)
    assert x.shape == (128, 256, 3)
    assert abs(float(x.mean()) - 100) < 2


def _kind(x: np.ndarray) -> str:
    """Which odd image this is, from the raw pixels: one colour, vertical stripes or noise."""
    x = x.astype(np.float64)
    if np.abs(x - x.mean(axis=(0, 1))).max() <= 3:
        return "blank"
    return "stripes" if x.std(axis=0).max() <= 3 else "noise"


def test_pool_odd_images_separate(ingested: Path, pool: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    score(ws, "image_stats", progress=False)
    samples = pl.read_parquet(ws / "samples" / "*.parquet").select(
        "sample_id", "key", "image_path", "image_offset", "image_length")
    truth = pl.read_parquet(pool / "truth.parquet").select("key", "defect")
    df = (pl.read_parquet(ws / "scores" / "image_stats" / "*.parquet")
          .join(samples, on="sample_id").join(truth, on="key"))
    clean = df.filter(pl.col("defect") == "none")
    assert clean.height > 300 and clean["blur"].null_count() == 0
    odd = df.filter(pl.col("defect") == "odd_image").to_dicts()
    for r in odd:
        data = images.read_bytes(r["image_path"], r["image_offset"], r["image_length"])
        r["kind"] = _kind(np.asarray(images.decode_rgb(data)))
    blank = [r for r in odd if r["kind"] == "blank"]
    noise = [r for r in odd if r["kind"] == "noise"]
    assert len(blank) >= 2 and len(noise) >= 2
    assert all(r["contrast"] < 0.01 and r["blur"] < 1 for r in blank)
    q99 = clean["blur"].quantile(0.99)
    assert all(r["blur"] > q99 and r["contrast"] > clean["contrast"].median() for r in noise)
