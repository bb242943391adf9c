"""``curate demo``: the main job on the embedded default. A synthetic pool is generated,
ingested into a local workspace, embedded, and every scoring pass that can run offline runs
on it; the figures printed are measured against the pool's ground truth. Running it again
resumes and adds nothing."""

from __future__ import annotations

import time
from pathlib import Path

from curate import passes
from curate.embed import embed
from curate.info import format_info, info
from curate.ingest import ingest
from curate.metrics import auroc
from curate.score import score
from curate.synth import make_pool
from curate.workspace import CurateError, Workspace

# (score column, truth label that marks the positives, positives score lower?)
CHECKS = [("clip_cosine", "mismatched", True), ("clip_score", "mismatched", True),
          ("wclip_image_z", "odd_image", False), ("contrast", "odd_image", True)]


def truth_report(workspace: Path, pool: Path) -> list[str]:
    """AUROC of each score column at flagging its defect, against ``truth.parquet``
    (positives: samples with the defect; negatives: samples with no defect at all)."""
    truth = str(pool / "truth.parquet").replace("'", "''")
    lines = []
    with Workspace.open(workspace).connect(read_only=True) as con:
        have = {r[0] for r in con.execute("DESCRIBE pairs").fetchall()}
        for col, label, lower in CHECKS:
            if col not in have:
                continue
            rows = con.execute(
                f'SELECT t.{label} AS pos, p."{col}" AS v FROM pairs p JOIN '
                f"read_parquet('{truth}') t USING (key) WHERE p.\"{col}\" IS NOT NULL AND "
                f"(t.{label} OR t.defect = 'none')").fetchnumpy()
            pos = rows["pos"].astype(bool)
            sign = -1.0 if lower else 1.0
            a = auroc(sign * rows["v"][pos], sign * rows["v"][~pos])
            lines.append(f"      {col:<14} flags {label:<11} AUROC {a:.3f} "
                         f"({int(pos.sum())} positives, {int((~pos).sum())} clean)")
    return lines


def demo(workspace: Path, n: int = 2000, seed: int = 0) -> None:
    start = time.time()
    pool = workspace.parent / f"{workspace.name}-pool"
    if not (pool / "truth.parquet").exists():
        make_pool(pool, n, seed)
        print(f"[1/4] synthetic pool: {n} samples (seed {seed}) in img2dataset layout -> {pool}")
    else:
        print(f"[1/4] synthetic pool: reusing {pool}")
    print("[2/4] " + ingest([str(pool)], workspace).summary())
    print("[3/4] " + embed(workspace, "tiny-clip").summary())
    print("[4/4] scoring passes")
    for p in passes.list_passes():
        try:
            print("      " + score(workspace, p.name).summary())
        except CurateError as e:  # a pass that needs weights this machine does not have
            print(f"      {p.name}: skipped: {e}")
    print("\nmeasured against truth.parquet (AUROC, 1.0 = perfect, 0.5 = chance)")
    print("\n".join(truth_report(workspace, pool)))
    print()
    print(format_info(info(workspace)))
    print(f"\ndemo finished in {time.time() - start:.0f}s. Query it: "
          f"duckdb {workspace / 'catalog.duckdb'} \"SELECT * FROM pairs LIMIT 5\"")
