"""Caption concreteness measured against real human labels (not a test; prints figures).

    .venv/bin/python bench/concreteness.py [--csv PATH] [--icc MODEL_DIR] [--n-pool 2000]

1. Spearman rho with the human concreteness level (0..3) of the captions in
   ``shared/benchmarks/caption_concreteness_dev.csv`` for ``lexical``, ``offline`` and, as the
   reference, the file's own ``icc_score`` column (and the ``icc`` backend with ``--icc``).
   This file is for measuring only: nothing in curate is fitted to it.
2. Captions/s of each text-only backend on CPU, with the word cache cold and warm.
3. AUROC separating a fresh synthetic pool's ``abstract`` captions from clean ones.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.metrics import auroc  # noqa: E402
from curate.passes.concreteness.backends import concreteness, prepare, score_texts  # noqa: E402
from curate.passes.concreteness.norms import rate  # noqa: E402
from curate.synth import make_pool  # noqa: E402

DEV = ROOT.parent / "shared" / "benchmarks" / "caption_concreteness_dev.csv"


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = ranks(np.asarray(x, np.float64)), ranks(np.asarray(y, np.float64))
    return float(np.corrcoef(rx, ry)[0, 1])


def rho_line(name: str, scores: np.ndarray, human: np.ndarray) -> str:
    """Rho over all rows (a NaN score ranks as least concrete) and over the scored rows."""
    nan = np.isnan(scores)
    filled = np.where(nan, np.nanmin(scores) - 1 if (~nan).any() else 0.0, scores)
    line = f"  {name:<22} rho = {spearman(filled, human):.3f}"
    if nan.any():
        line += (f"  ({nan.sum()} unscored, ranked lowest; on the {(~nan).sum()} scored "
                 f"rows rho = {spearman(scores[~nan], human[~nan]):.3f})")
    return line


def throughput(texts: list[str], backend: str, repeat: int) -> tuple[float, float]:
    """(captions/s with the per-word cache cleared first, captions/s warm) after loading."""
    state = prepare(backend)
    rate.cache_clear()
    t0 = time.perf_counter()
    score_texts(texts, backend, state)
    cold = len(texts) / (time.perf_counter() - t0)
    big = texts * repeat
    t0 = time.perf_counter()
    score_texts(big, backend, state)
    return cold, len(big) / (time.perf_counter() - t0)


def main() -> None:
    t0 = time.perf_counter()
    prepare("offline")
    load_s = time.perf_counter() - t0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEV)
    ap.add_argument("--icc", default=None, help="ICC model folder (optional)")
    ap.add_argument("--n-pool", type=int, default=2000)
    args = ap.parse_args()

    with args.csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    texts = [r["caption"] for r in rows]
    human = np.array([float(r["concreteness_annotation"]) for r in rows])
    levels, counts = np.unique(human, return_counts=True)
    print(f"{args.csv.name}: {len(rows)} captions; captions per human level: "
          + ", ".join(f"{int(v)}: {n}" for v, n in zip(levels, counts, strict=True)))
    print("Spearman rho with the human level:")
    print(rho_line("icc_score (file)", np.array([float(r["icc_score"]) for r in rows]), human))
    if args.icc:
        print(rho_line("icc (this backend)", concreteness(texts, "icc", args.icc), human))
    for backend in ("lexical", "offline"):
        print(rho_line(backend, concreteness(texts, backend), human))

    print(f"\nCPU throughput (norms load once per process: {load_s:.2f}s)")
    for backend in ("lexical", "offline"):
        cold, warm = throughput(texts, backend, 40)
        print(f"  {backend:<8} {cold:8.0f} captions/s cold word cache, {warm:8.0f} warm "
              f"({len(texts) * 40} captions)")

    with tempfile.TemporaryDirectory() as tmp:
        make_pool(tmp, args.n_pool, seed=123)
        truth = pq.read_table(Path(tmp) / "truth.parquet").to_pylist()
    abstract = [r["caption"] for r in truth if r["abstract"]]
    clean = [r["caption"] for r in truth if r["defect"] == "none"]
    print(f"\nsynthetic pool (n={args.n_pool}, seed=123): {len(abstract)} abstract vs "
          f"{len(clean)} clean captions")
    for backend in ("lexical", "offline"):
        a, c = concreteness(abstract, backend), concreteness(clean, backend)
        print(f"  {backend:<8} AUROC = {auroc(c[~np.isnan(c)], a[~np.isnan(a)]):.3f}")


if __name__ == "__main__":
    main()
