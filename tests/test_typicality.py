"""The typicality pass (Whitened CLIP): the fit whitens, matches a hand computation, flags odd
images, is reused on a re-run and rejects unknown parameters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curate.errors import CurateError
from curate.metrics import auroc
from curate.passes import typicality as ty
from curate.passes.score import score

OUT = Path("scores") / "typicality"


@pytest.fixture(scope="module")
def scored(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the embedded workspace with the typicality pass run once."""
    ws = tmp_path_factory.mktemp("typ") / "ws"
    shutil.copytree(embedded, ws)
    report = score(ws, "typicality", progress=False)
    assert report.parts_written == len(list((ws / "samples").glob("part-*.parquet")))
    return ws


def joined(ws: Path, pool: Path) -> pl.DataFrame:
    keys = pl.read_parquet(ws / "samples" / "*.parquet").select("sample_id", "key")
    return (pl.read_parquet(ws / OUT / "part-*.parquet").join(keys, on="sample_id")
            .join(pl.read_parquet(pool / "truth.parquet"), on="key"))


def test_whitened_full_rank_set_has_norm_d_and_identity_covariance() -> None:
    rng = np.random.default_rng(0)
    d, n = 32, 4000
    a = rng.normal(size=(d, d)) * np.logspace(0, -2, d)  # anisotropic, strongly correlated
    x = (rng.standard_t(5, size=(n, d)) @ a + 13.0).astype(np.float32)  # heavy tails, offset
    mu, w, _ = ty.whitening(ty.moments(x), 1e-6)
    white = (x.astype(np.float64) - mu) @ w
    assert abs(np.square(white).sum(axis=1).mean() / d - 1) < 0.02
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(d), atol=1e-6)


def test_whitened_pool_embeddings_have_norm_equal_to_their_rank(scored: Path) -> None:
    """tiny-clip's embeddings span fewer than 64 directions; the whitening is the identity on
    those it spans and the floored rest add about nothing."""
    e = pl.read_parquet(scored / "embeddings" / "tiny-clip" / "part-*.parquet")
    with np.load(scored / OUT / "whitening.npz") as f:
        for m in ty.MODALITIES:
            x = np.stack(e[f"{m}_emb"].drop_nulls().to_numpy()).astype(np.float64)
            k, d = int(f[f"rank_{m}"]), x.shape[1]
            assert int(f[f"n_{m}"]) == len(x) and 0 < k <= d
            white = (x - f[f"mu_{m}"]) @ f[f"w_{m}"]
            assert abs(np.square(white).sum(axis=1).mean() / k - 1) < 0.02
            cov = np.cov(white, rowvar=False)
            np.testing.assert_allclose(cov[:k, :k], np.eye(k), atol=1e-6)
            assert np.abs(cov[k:, k:]).max() < 1e-3


def test_three_dimensional_example_by_hand() -> None:
    # mean 0, covariance (n-1 = 5) diag(2/5, 8/5, 18/5): ||w||^2 of (1, 0, 0) is 1/(2/5)
    x = np.array([[1, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 3], [0, 0, -3]],
                 np.float32)
    mu, w, lam = ty.whitening(ty.moments(x), 1e-6)
    np.testing.assert_allclose(mu, 0, atol=1e-12)
    np.testing.assert_allclose(lam, [18 / 5, 8 / 5, 2 / 5])
    np.testing.assert_allclose(np.abs(w), np.diag([1, 1, 1])[::-1] / np.sqrt([18, 8, 2]) *
                               np.sqrt(5), atol=1e-12)
    nll, z = ty.nll_z(np.array([[1, 0, 0], [1, 2, 3]], np.float32), mu, w)
    np.testing.assert_allclose(nll, [0.5 * 2.5, 0.5 * (2.5 + 2.5 + 2.5)])
    np.testing.assert_allclose(z, [(2.5 - 3) / np.sqrt(6), (7.5 - 3) / np.sqrt(6)])

    # a random correlated example against plain numpy: NLL is half the Mahalanobis distance
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 3)) + [5, -2, 1]
    parts = [ty.moments(x[:7]), ty.moments(x[7:30]), ty.moments(x[30:])]
    m = ty.merge(ty.merge(parts[0], parts[1]), parts[2])  # streamed by parts as in fit()
    mu, w, _ = ty.whitening(m, 1e-6)
    sigma = np.cov(x, rowvar=False)
    np.testing.assert_allclose(mu, x.mean(axis=0))
    np.testing.assert_allclose(w.T @ sigma @ w, np.eye(3), atol=1e-10)
    diff = x - x.mean(axis=0)
    maha = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(sigma), diff)
    np.testing.assert_allclose(ty.nll_z(x, mu, w)[0], 0.5 * maha, rtol=1e-9)


def test_eigenvalues_are_floored_relative_to_the_largest() -> None:
    x = np.array([[0, 0, 0], [2, 0, 0], [0, 1, 0], [2, 1, 0]], np.float64)  # third axis flat
    _, w, lam = ty.whitening(ty.moments(x), 1e-3)
    assert lam[-1] == pytest.approx(1e-3 * lam[0]) and np.isfinite(w).all()
    with pytest.raises(CurateError, match="identical"):
        ty.whitening(ty.moments(np.ones((4, 3))), 1e-6)


def test_image_typicality_flags_odd_images(scored: Path, pool: Path) -> None:
    d = joined(scored, pool)
    pos = d.filter(pl.col("odd_image"))["wclip_image_z"].to_numpy()
    neg = d.filter(pl.col("defect") == "none")["wclip_image_z"].to_numpy()
    assert len(pos) >= 8 and not np.isnan(pos).any() and not np.isnan(neg).any()
    assert auroc(pos, neg) >= 0.9  # 0.95 on this pool
    np.testing.assert_allclose(d["wclip_image_nll"], 0.5 * (
        d["wclip_image_z"].to_numpy() * np.sqrt(2 * 64) + 64), rtol=1e-4)


def test_rerun_reuses_the_fit_and_writes_no_part(scored: Path) -> None:
    files = sorted((scored / OUT).glob("part-*.parquet")) + [scored / OUT / "whitening.npz"]
    before = {p: p.stat().st_mtime_ns for p in files}
    fitted = json.loads((scored / OUT / "manifest.json").read_text())["whitening"]
    report = score(scored, "typicality", progress=False)
    assert report.parts_written == 0 and report.parts_skipped == len(files) - 1
    assert {p: p.stat().st_mtime_ns for p in files} == before
    # a run that computes nothing leaves the record of the run that computed the parts
    assert json.loads((scored / OUT / "manifest.json").read_text())["whitening"] == fitted

    # a lost part is rescored with the stored matrices, to the same values
    part = sorted((scored / OUT).glob("part-*.parquet"))[0]
    old = pl.read_parquet(part)
    part.unlink()
    assert score(scored, "typicality", progress=False).parts_written == 1
    assert pl.read_parquet(part).equals(old)
    assert json.loads((scored / OUT / "manifest.json").read_text())["whitening"]["reused"]
    assert (scored / OUT / "whitening.npz").stat().st_mtime_ns == before[files[-1]]


def test_unknown_parameter_is_named(scored: Path) -> None:
    with pytest.raises(CurateError, match="eig_flor"):
        score(scored, "typicality", {"eig_flor": "1e-4"}, progress=False)
    with pytest.raises(CurateError, match="eig_floor"):
        score(scored, "typicality", {"eig_floor": "0"}, progress=False)
