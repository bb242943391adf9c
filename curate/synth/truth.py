"""Measurements against a synthetic pool's ``truth.parquet``: how well each score flags the
defect it should, and how well a dedup selection finds the planted duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from curate.metrics import auroc
from curate.workspace import Workspace

# (score column, truth label of the positives, positives score lower?)
CHECKS = [("clip_cosine", "mismatched", True), ("clip_score", "mismatched", True),
          ("concreteness", "abstract", True), ("wclip_image_z", "odd_image", False),
          ("reward", "mismatched", True)]


def score_aurocs(workspace: Path, pool: Path) -> list[dict]:
    """AUROC of each available score column at flagging its defect (positives: samples with
    the defect; negatives: samples with no defect at all)."""
    truth = str(pool / "truth.parquet").replace("'", "''")
    out = []
    with Workspace.open(workspace).connect(read_only=True) as con:
        have = {r[0] for r in con.sql("DESCRIBE pairs").fetchall()}
        for col, label, lower in CHECKS:
            if col not in have:
                continue
            rows = con.sql(
                f'SELECT t.{label} AS pos, p."{col}" AS v FROM pairs p JOIN '
                f"read_parquet('{truth}') t USING (key) WHERE p.\"{col}\" IS NOT NULL AND "
                f"(t.{label} OR t.defect = 'none')").fetchnumpy()
            pos = rows["pos"].astype(bool)
            if pos.all() or not pos.any():
                continue
            sign = -1.0 if lower else 1.0
            out.append({"column": col, "flags": label, "positives": int(pos.sum()),
                        "clean": int((~pos).sum()),
                        "auroc": auroc(sign * rows["v"][pos], sign * rows["v"][~pos])})
    return out


def dedup_quality(workspace: Path, pool: Path, selection: str) -> dict:
    """Precision (dropped samples whose representative is a copy of the same original) and
    recall (planted duplicates of which the copy or its original was dropped)."""
    ws = Workspace.open(workspace)
    keys = {}
    for part in ws.sample_parts():
        t = pq.read_table(part, columns=["sample_id", "key"]).to_pydict()
        keys.update(zip(t["sample_id"], t["key"], strict=True))
    truth = pq.read_table(pool / "truth.parquet", columns=["key", "duplicate_of"]).to_pydict()
    group = {k: d or k for k, d in zip(truth["key"], truth["duplicate_of"], strict=True)}
    dropped = pq.read_table(ws.selection(selection).dropped,
                            columns=["sample_id", "representative"]).to_pydict()
    pairs = [(keys[s], keys[r]) for s, r in zip(dropped["sample_id"],
                                                dropped["representative"], strict=True) if r]
    gone = {a for a, _ in pairs}
    present = set(keys.values())
    planted = [k for k, d in zip(truth["key"], truth["duplicate_of"], strict=True)
               if d and k in present]
    return {"dropped": len(pairs), "planted": len(planted),
            "precision": float(np.mean([group[a] == group[b] for a, b in pairs]))
            if pairs else float("nan"),
            "recall": float(np.mean([k in gone or group[k] in gone for k in planted]))
            if planted else float("nan")}
