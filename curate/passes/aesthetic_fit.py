"""Fit an aesthetic head on your own ratings: the LAION improved aesthetic predictor's recipe
(christophschuhmann/improved-aesthetic-predictor train_predictor.py; algorithms.md section 4.1).

The head has the shipped architecture with the model's embedding dim as input, trained with MSE,
Adam lr 1e-3 and batch 256 on L2-normalized image embeddings; the last epoch is kept, as the
reference's final save does. 10% of the labels (at least one) are held out for the report.
Training is deterministic for a seed. The state dict's keys match the shipped file's, so the
``aesthetic`` pass loads it with ``--param weights=HEAD.pth``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.arrays import vectors
from curate.errors import CurateError
from curate.files import atomic_path
from curate.lock import writes
from curate.models import weights_sha256
from curate.passes.embed import embed
from curate.workspace import Workspace

BATCH, LR, VAL_FRACTION, MIN_LABELS = 256, 1e-3, 0.1, 10


def head_module(dim: int) -> Any:
    """The head as a torch module; its state dict keys are ``layers.{0,2,4,6,7}.*``."""
    from torch import nn

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

        def forward(self, x: Any) -> Any:
            return self.layers(x)

    return Head()


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's over average ranks."""
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


def read_labels(path: str | Path, known: set[str]) -> tuple[list[str], np.ndarray]:
    """(sample_ids, ratings) from a Parquet; unknown ids, duplicates or ratings that are not
    finite numbers are errors, not skips."""
    try:
        t = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise CurateError(f"cannot read labels {path}: {e}") from e
    if missing := {"sample_id", "rating"} - set(t.column_names):
        raise CurateError(f"labels {path} lack column(s) {', '.join(sorted(missing))}; "
                          "they need sample_id and rating")
    kind = t.schema.field("rating").type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise CurateError(f"labels {path}: rating must be numeric, not {kind}")
    ids = [str(s) for s in t["sample_id"].to_pylist()]
    rating = t["rating"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad = [s for s, r in zip(ids, rating, strict=True) if not np.isfinite(r)]
    if bad:
        raise CurateError(f"labels {path}: {len(bad)} rating(s) are null or not finite "
                          f"(e.g. sample_id {bad[0]})")
    if unknown := [s for s in ids if s not in known]:
        raise CurateError(f"labels {path}: {len(unknown)} sample_id(s) are not in the "
                          f"workspace (e.g. {', '.join(unknown[:3])})")
    if len(set(ids)) != len(ids):
        raise CurateError(f"labels {path}: some sample_ids appear more than once")
    return ids, rating


def labelled_embeddings(ws: Workspace, model: str, ids: list[str], rating: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """(normalized image embeddings, ratings, count skipped) for labelled samples whose image
    was embedded; one without an image (failed at ingest or decode) is skipped."""
    want = dict(zip(ids, rating, strict=True))
    xs, ys = [], []
    for part in sorted(ws.embeddings_dir(model).glob("part-*.parquet")):
        t = pq.read_table(part, columns=["sample_id", "image_emb"])
        keep = np.array([s in want for s in t["sample_id"].to_pylist()], bool)
        if keep.any():
            x = vectors(t["image_emb"])[keep]
            y = np.array([want[s] for s in np.asarray(t["sample_id"].to_pylist())[keep]])
            ok = np.isfinite(x).all(axis=1)
            xs.append(x[ok])
            ys.append(y[ok])
    x = np.concatenate(xs) if xs else np.zeros((0, 1), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32), len(ids) - len(y)


@writes("fit-aesthetic")
def fit_aesthetic(workspace: str | Path, labels: str | Path, model: str = "tiny-clip", *,
                  out: str | Path, epochs: int = 50, seed: int = 0) -> dict[str, Any]:
    """Train an aesthetic head on ``labels`` (Parquet: sample_id, rating); save it to ``out``."""
    import torch

    ws = Workspace.open(workspace)
    if epochs < 1:
        raise CurateError(f"epochs must be at least 1, got {epochs}")
    known = {s for p in ws.sample_parts()
             for s in pq.read_table(p, columns=["sample_id"])["sample_id"].to_pylist()}
    ids, rating = read_labels(labels, known)
    embed(ws.root, model, progress=False)
    x, y, skipped = labelled_embeddings(ws, model, ids, rating)
    if len(y) < MIN_LABELS:
        raise CurateError(f"only {len(y)} labelled samples have an image embedding; "
                          f"fitting needs at least {MIN_LABELS}")
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, round(VAL_FRACTION * len(y)))
    val, train = order[:n_val], order[n_val:]
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])[:, None]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = head_module(x.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            net.train()
            for idx in torch.randperm(len(train), generator=gen).split(BATCH):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            pred = net(torch.from_numpy(x)).numpy()[:, 0]
    out = Path(out).expanduser()
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:  # a handle: no file name inside
        torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, fh)
    return {"out": str(out.resolve()), "sha256": weights_sha256(out), "model": model,
            "dim": int(x.shape[1]), "labels": len(ids), "skipped_no_image": skipped,
            "train": len(train), "val": len(val), "epochs": epochs, "seed": seed,
            "train_mse": float(np.mean((pred[train] - y[train]) ** 2)),
            "val_mse": float(np.mean((pred[val] - y[val]) ** 2)),
            "val_spearman": spearman(pred[val], y[val]) if len(val) > 1 else float("nan")}
