"""ClipCov coreset selection over a workspace: the ``coreset`` rule, ``select_coreset`` (the
candidates' stored embeddings, a partition of them, a budget) and its two partitions (k-means on
the image embeddings, or a column of the catalog). The greedy itself is ``clipcov``, in
``curate.select.clipcov`` (Joshi et al. 2024; algorithms.md section 3.1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.arrays import normalize, vectors
from curate.errors import CurateError
from curate.params import Amount
from curate.select.clipcov import DEFAULT_MAX_PARTITION, clipcov, kmeans_partition
from curate.select.step import Step
from curate.workspace import Workspace

ROWS_PER_PARTITION = 2000  # select_coreset's default k = max(1, N // 2000)


@dataclass(frozen=True)
class CoresetParams:
    """Parameters of ``coreset``: the budget, the partition, and ClipCov's weights (the
    notebook's values by default; ``clipcov`` documents each)."""

    amount: Amount = Amount(0.3)  # the budget: a fraction of the candidates or a count
    model: str = "tiny-clip"
    partition: str = "kmeans"  # or a column of the pairs view whose values are the partitions
    k: int | None = None  # k-means partitions (default: one per 2,000 selectable samples)
    easiness_weight: float = 2.0
    label_weight: float = 0.5
    refresh: int = 200  # picks per partition between two redundancy deductions
    threshold: float = 0.0
    max_partition: int = DEFAULT_MAX_PARTITION
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("refresh", "max_partition", "k"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise CurateError(f"{name}={v} must be at least 1")


def coreset(step: Step, p: CoresetParams) -> tuple[list[str], dict[str, Any]]:
    """ClipCov cross-covariance coreset of the candidates under the budget ``p.amount``."""
    kept, info = select_coreset(step.ws, step.ids, p.amount, model=p.model,
                                partition=p.partition, k=p.k, con=step.con,
                                easiness_weight=p.easiness_weight, label_weight=p.label_weight,
                                refresh=p.refresh, threshold=p.threshold,
                                max_partition=p.max_partition, seed=p.seed, device=p.device)
    step.drop_rest(kept, "coreset: not picked under the budget")
    step.kept_reasons = pa.array([f"coreset pick {i}" for i in range(len(kept))], pa.string())
    return kept, info


def load_embeddings(ws: Workspace, model: str, ids: list[str]
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sample ids, normalized image and text embeddings) of the ok, finite rows among ``ids``
    in the model's stored embeddings, in storage order."""
    folder = ws.embeddings_dir(model)
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise CurateError(f"{folder} has no embeddings; run `curate embed -w {ws.root} "
                          f"--model {model}` first")
    wanted = set(ids)  # one hash set for all parts (pc.is_in would rebuild it per part)
    out_ids, xs, ys = [], [], []
    for part in parts:
        t = pq.read_table(part, columns=["sample_id", "status"])
        keep = np.fromiter((s in wanted for s in t["sample_id"].to_pylist()), bool, t.num_rows)
        keep &= np.asarray(pc.fill_null(pc.equal(t["status"], "ok"), False))
        if not keep.any():
            continue
        t = pq.read_table(part, columns=["sample_id", "image_emb", "text_emb"])
        t = t.filter(pa.array(keep))
        x, y = vectors(t["image_emb"]), vectors(t["text_emb"])
        ok = np.isfinite(x).all(1) & np.isfinite(y).all(1)
        out_ids += [s for s, k in zip(t["sample_id"].to_pylist(), ok, strict=True) if k]
        xs.append(normalize(x[ok]))
        ys.append(normalize(y[ok]))
    if not xs:
        return [], np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)
    return out_ids, np.concatenate(xs), np.concatenate(ys)


def column_partition(ws: Workspace, ids: list[str], column: str,
                     con: duckdb.DuckDBPyConnection | None = None) -> np.ndarray:
    """Partition labels from a column of the catalog's ``pairs`` view, aligned with ``ids``
    (a null is its own partition). The ids are bound as a registered Arrow table; ``con``: a
    connection to the catalog already open (a selection's), else one is opened here."""
    own = con is None
    con = ws.connect(read_only=True) if con is None else con
    try:
        names = [r[0] for r in con.execute("DESCRIBE pairs").fetchall()]
        if column not in names:
            raise CurateError(f"partition {column!r} is neither 'kmeans' nor a column of the "
                              f"pairs view ({', '.join(names)})")
        con.register("coreset_ids", pa.table({"sample_id": pa.array(ids, pa.string()),
                                              "i": pa.array(np.arange(len(ids)))}))
        try:
            quoted = '"' + column.replace('"', '""') + '"'
            t = con.sql(f"SELECT c.i, p.{quoted} AS v FROM coreset_ids AS c "
                        "JOIN pairs AS p USING (sample_id) ORDER BY c.i").to_arrow_table()
        finally:
            con.unregister("coreset_ids")
    finally:
        if own:
            con.close()
    if t.num_rows != len(ids):
        raise CurateError(f"{len(ids) - t.num_rows} selectable samples are missing from the "
                          "pairs view or appear in it twice")
    values = t["v"].to_pylist()
    codes: dict[Any, int] = {}
    return np.array([codes.setdefault(v, len(codes)) for v in values], np.int64)


def select_coreset(workspace: Workspace | str | Path, candidates: list[str],
                   budget: Amount | float | int | str, model: str = "tiny-clip",
                   partition: str = "kmeans", k: int | None = None,
                   con: duckdb.DuckDBPyConnection | None = None, **clipcov_kwargs: Any
                   ) -> tuple[list[str], dict[str, Any]]:
    """ClipCov over ``candidates`` (sample ids) with ``model``'s stored embeddings.

    ``budget``: an ``Amount`` (a float in (0, 1] is a fraction of the candidates, int(N * f) as
    the notebook; an int >= 1 a count); more than the candidates, none, or <= 0, is a
    CurateError. Candidates without an ok embedding are not selectable (counted in info; if
    fewer are selectable than the budget, all of them are returned and the shortfall recorded).
    ``partition``: ``"kmeans"`` (spherical k-means on the image embeddings, k = ``k`` or
    max(1, N // 2000), fitted on at most 256·k of them: ``kmeans_partition``) or a column of
    the catalog's ``pairs`` view whose values are the partitions (a column named ``kmeans`` is
    shadowed), read through ``con`` if one is open. ``seed`` and ``device`` in
    ``clipcov_kwargs`` apply to the k-means too. Returns the selected ids in pick order and
    info.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    unique = list(dict.fromkeys(candidates))
    amount = Amount.parse(budget)
    count = amount.of(len(unique), "coreset")
    ids, img, txt = load_embeddings(ws, model, unique)
    seed = clipcov_kwargs.get("seed", 0)
    device = clipcov_kwargs.get("device", "cpu")
    t0 = time.perf_counter()
    if partition == "kmeans":
        kk = max(1, k if k is not None else len(ids) // ROWS_PER_PARTITION)
        labels = kmeans_partition(img, kk, seed=seed, device=device)
        how = dict(partition="kmeans", k=kk)
    else:
        labels = column_partition(ws, ids, partition, con) if ids else np.zeros(0, np.int64)
        how = dict(partition=partition, k=int(len(np.unique(labels))))
    partition_seconds = round(time.perf_counter() - t0, 3)
    picked, info = clipcov(img, txt, labels, count, **clipcov_kwargs)
    info = dict(model=model, **how, partition_seconds=partition_seconds,
                candidates=len(unique), duplicate_candidates=len(candidates) - len(unique),
                without_embeddings=len(unique) - len(ids), selectable=len(ids),
                requested_budget=amount.value, shortfall=count - len(picked), **info)
    info["budget"] = count
    return [ids[i] for i in picked], info
