"""The aesthetic pass and fitting a head: parity with a plain forward pass, fitting recovers a
rating, clear errors for missing or mismatched heads, and the CLI end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from curate.cli import main
from curate.errors import CurateError
from curate.passes.aesthetic_fit import fit_aesthetic
from curate.passes.score import score

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((1024, None), (128, 1024), (64, 128), (16, 64), (1, 16))  # out, in (None: d)
BACKGROUND = {"black": 2.0, "gray": 4.0, "beige": 6.0, "white": 8.0}


def random_head(path: Path, d: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random head in the shipped layout: Linear layers at 0, 2, 4, 6, 7 of ``layers``."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (out, inp) in zip((0, 2, 4, 6, 7), SIZES, strict=True):
        inp = inp or d
        sd[f"layers.{i}.weight"] = torch.randn(out, inp, generator=g) / inp ** 0.5
        sd[f"layers.{i}.bias"] = torch.randn(out, generator=g) * 0.1
    sd["layers.7.bias"] += 5.0
    torch.save(sd, path)
    return sd


def spearman(a: pl.Series, b: pl.Series) -> float:
    return float(np.corrcoef(a.rank("average").to_numpy(), b.rank("average").to_numpy())[0, 1])


@pytest.fixture(scope="module")
def ws(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("aes") / "ws"
    shutil.copytree(embedded, out)
    return out


@pytest.fixture(scope="module")
def clean(ws: Path, pool: Path) -> pl.DataFrame:
    """The ok samples without defects, a rating from their background and size, and a split:
    even rows are labelled, odd rows only scored."""
    keys = pl.read_parquet(ws / "samples" / "*.parquet").filter(pl.col("status") == "ok")
    d = (keys.select("sample_id", "key").join(pl.read_parquet(pool / "truth.parquet"), on="key")
         .filter(pl.col("defect") == "none").sort("sample_id"))
    noise = np.random.default_rng(0).normal(0, 0.3, d.height)
    return d.with_columns(
        rating=pl.col("background").replace_strict(BACKGROUND) + (pl.col("size") == "large")
        + pl.Series(noise), labelled=pl.int_range(pl.len()) % 2 == 0)


def scores_of(ws: Path, weights: Path) -> pl.DataFrame:
    report = score(ws, "aesthetic", {"weights": str(weights)}, progress=False)
    return pl.read_parquet(report.out_dir / "part-*.parquet")


def test_scores_equal_a_plain_forward_pass(ws: Path, tmp_path: Path) -> None:
    sd = random_head(tmp_path / "head.pth", 64)
    got = scores_of(ws, tmp_path / "head.pth").sort("sample_id")
    e = pl.read_parquet(ws / "embeddings" / "tiny-clip" / "*.parquet").sort("sample_id")
    assert got["sample_id"].equals(e["sample_id"])
    x = np.stack(e["image_emb"].to_numpy()).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for i in (0, 2, 4, 6, 7):
        x = x @ sd[f"layers.{i}.weight"].double().numpy().T + sd[f"layers.{i}.bias"].numpy()
    assert got["aesthetic"].dtype == pl.Float32 and got["aesthetic"].null_count() == 0
    assert np.abs(got["aesthetic"].to_numpy() - x[:, 0]).max() < 1e-5
    m = json.loads((next((ws / "scores").glob("aesthetic--*")) / "manifest.json").read_text())
    assert m["head"]["dim"] == 64 and len(m["head"]["sha256"]) == 64


def test_another_head_at_the_same_path_is_not_mixed_with_old_scores(
        ws: Path, tmp_path: Path) -> None:
    random_head(tmp_path / "head.pth", 64, seed=1)
    out = score(ws, "aesthetic", {"weights": str(tmp_path / "head.pth")}, progress=False).out_dir
    old = json.loads((out / "manifest.json").read_text())["weights_sha256"]
    assert set(old) == {"model", "head"}
    (out / "part-000000.parquet").unlink()
    random_head(tmp_path / "head.pth", 64, seed=2)
    new = hashlib.sha256((tmp_path / "head.pth").read_bytes()).hexdigest()
    with pytest.raises(CurateError, match="other weights") as e:
        score(ws, "aesthetic", {"weights": str(tmp_path / "head.pth")}, progress=False)
    assert f"head sha256 {old['head'][:12]}, now {new[:12]}" in str(e.value)
    assert str(out) in str(e.value)
    assert not (out / "part-000000.parquet").exists()
    # each part records its weights too: a damaged manifest loses nothing the check needs
    random_head(tmp_path / "head.pth", 64, seed=1)
    score(ws, "aesthetic", {"weights": str(tmp_path / "head.pth")}, progress=False)
    kept = (out / "part-000000.parquet").read_bytes()
    (out / "manifest.json").write_bytes(b"")
    random_head(tmp_path / "head.pth", 64, seed=2)
    with pytest.raises(CurateError, match="other weights") as e:
        score(ws, "aesthetic", {"weights": str(tmp_path / "head.pth")}, progress=False)
    assert f"head sha256 {old['head'][:12]}, now {new[:12]}" in str(e.value)
    assert (out / "part-000000.parquet").read_bytes() == kept


@pytest.mark.slow
def test_fitted_head_ranks_unseen_samples_by_rating(ws: Path, clean: pl.DataFrame,
                                                    tmp_path: Path) -> None:
    labels = tmp_path / "labels.parquet"
    clean.filter("labelled").select("sample_id", "rating").write_parquet(labels)
    head = tmp_path / "fitted.pth"
    report = fit_aesthetic(ws, labels, out=head, epochs=100, seed=0)
    assert report["labels"] == clean["labelled"].sum() and report["skipped_no_image"] == 0
    assert report["val"] == round(0.1 * report["labels"]) and report["val_spearman"] >= 0.7
    keys = set(torch.load(head, weights_only=True))
    assert keys == {f"layers.{i}.{k}" for i in (0, 2, 4, 6, 7) for k in ("weight", "bias")}

    d = scores_of(ws, head).join(clean, on="sample_id")
    unseen = d.filter(~pl.col("labelled"))
    assert unseen.height > 150
    rho = spearman(unseen["aesthetic"], unseen["rating"])
    assert rho >= 0.85, rho  # about 0.93

    again = fit_aesthetic(ws, labels, out=tmp_path / "again.pth", epochs=100, seed=0)
    assert again["sha256"] == report["sha256"]  # deterministic for a seed


def test_bad_labels_are_errors(ws: Path, clean: pl.DataFrame, tmp_path: Path) -> None:
    labels = tmp_path / "labels.parquet"
    pl.DataFrame({"sample_id": [*clean["sample_id"][:20], "no-such-id"],
                  "rating": [1.0] * 21}).write_parquet(labels)
    with pytest.raises(CurateError, match="no-such-id"):
        fit_aesthetic(ws, labels, out=tmp_path / "h.pth")
    pl.DataFrame({"sample_id": clean["sample_id"][:20], "rating": ["good"] * 20}
                 ).write_parquet(labels)
    with pytest.raises(CurateError, match="numeric"):
        fit_aesthetic(ws, labels, out=tmp_path / "h.pth")
    assert not (tmp_path / "h.pth").exists()


def test_missing_weights_say_what_is_needed(ws: Path, tmp_path: Path) -> None:
    with pytest.raises(CurateError, match="weights") as e:
        score(ws, "aesthetic", progress=False)
    assert "sac+logos+ava1-l14-linearMSE.pth" in str(e.value)
    assert "fit-aesthetic" in str(e.value)
    with pytest.raises(CurateError, match="nope.pth"):
        score(ws, "aesthetic", {"weights": str(tmp_path / "nope.pth")}, progress=False)


def test_head_of_another_dim_fails_before_any_work(ingested: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(ingested, ws)
    random_head(tmp_path / "l14.pth", 768)
    with pytest.raises(CurateError, match=r"768.*64"):
        score(ws, "aesthetic", {"weights": str(tmp_path / "l14.pth")}, progress=False)
    assert not (ws / "embeddings").exists() and not (ws / "scores").exists()


@pytest.mark.slow
def test_cli_fits_then_scores(ws: Path, clean: pl.DataFrame, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    labels = tmp_path / "labels.parquet"
    clean.select("sample_id", "rating").write_parquet(labels)
    head = tmp_path / "cli.pth"
    run = subprocess.run([sys.executable, "-m", "curate.cli", "fit-aesthetic", "-w", str(ws),
                          str(labels), "-o", str(head), "--epochs", "5"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Spearman" in run.stdout and str(head) in run.stdout
    assert scores_of(ws, head)["aesthetic"].null_count() == 0

    assert main(["fit-aesthetic", "-w", str(ws), str(tmp_path / "missing.parquet"),
                 "-o", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("curate fit-aesthetic: ") and "missing.parquet" in err
