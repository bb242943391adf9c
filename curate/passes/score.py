"""``curate score``: run a registered pass over a workspace through the one runner.

Per samples part, the pass's inputs (samples columns, stored embeddings) are read and aligned
on ``sample_id``; the pass's pure batch function adds its columns; the runner writes
``scores/<key>/part-*.parquet`` atomically and records a manifest. A sample whose image failed
to decode keeps its ``status``/``error`` and gets null scores.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import passes
from curate.arrays import vectors
from curate.errors import CurateError
from curate.files import read_json
from curate.lock import writes
from curate.passes import ray as ray_engine
from curate.passes.runner import WEIGHTS, Job, PassReport, input_rows, run
from curate.workspace import Workspace


def _column(col: pa.ChunkedArray) -> Any:
    if pa.types.is_fixed_size_list(col.type):
        return vectors(col)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.to_pylist()
    return col.to_numpy()


def read_inputs(ws: Workspace, part: str, spec: dict[str, dict[str, str]]
                ) -> tuple[pa.Table, dict[str, Any]]:
    """(sample_id/status/error table, aligned input columns) for one part's ok samples."""
    sample_cols = spec.get("samples", {})
    base = input_rows(ws.folder("samples") / part, ["sample_id", *sample_cols])
    ids = base["sample_id"]
    status = np.full(base.num_rows, "ok", dtype=object)
    error = np.full(base.num_rows, None, dtype=object)
    batch = {alias: _column(base[c]) for c, alias in sample_cols.items()}
    for folder, cols in spec.items():
        if folder == "samples":
            continue
        path = ws.folder(folder) / part
        if not path.exists():
            raise CurateError(f"{path.parent} has no {part}; run the pass that makes it")
        try:
            t = pq.read_table(path, columns=["sample_id", "status", "error", *cols])
        except (pa.ArrowException, OSError) as e:
            raise CurateError(f"cannot read {path} ({e}); delete it and rerun the pass "
                              "that writes it") from None
        if not t["sample_id"].equals(ids):  # align by id if the orders differ
            pos = {s: i for i, s in enumerate(t["sample_id"].to_pylist())}
            t = t.take(pa.array([pos[s] for s in ids.to_pylist()]))
        bad = np.asarray(pa.compute.not_equal(t["status"], "ok").to_numpy(zero_copy_only=False))
        status[bad], error[bad] = "failed", np.asarray(t["error"].to_pylist(), object)[bad]
        batch.update({alias: _column(t[c]) for c, alias in cols.items()})
    return pa.table({"sample_id": ids, "status": pa.array(list(status), pa.string()),
                     "error": pa.array(list(error), pa.string())}), batch


def _to_arrow(values: Any, ok: np.ndarray) -> pa.Array:
    if isinstance(values, list):
        arr = pa.array([v if k else None for v, k in zip(values, ok, strict=True)])
        return arr.cast(pa.string()) if pa.types.is_null(arr.type) else arr  # all-null strings
    values = np.asarray(values)
    mask = ~ok
    if values.dtype.kind == "f":
        mask |= np.isnan(values)
    return pa.array(values, mask=mask)


def apply(p: passes.Pass, params: Any, state: Any, batch: passes.Batch, n: int,
          ok: np.ndarray) -> dict[str, pa.Array]:
    """The pass's batch function over ``n`` rows in chunks, as Arrow columns."""
    out: dict[str, list] = {c: [] for c in p.columns}
    for s in range(0, n, p.batch_size):
        chunk = {k: v[s:s + p.batch_size] for k, v in batch.items()}
        got = p.compute(chunk, params, state)
        for c in p.columns:
            out[c].append(got[c])
    return {c: _to_arrow(_concat(v) if v else [], ok) for c, v in out.items()}


def _concat(chunks: list) -> Any:
    return [x for c in chunks for x in c] if isinstance(chunks[0], list) else np.concatenate(
        chunks)


@writes("score")
def score(workspace: str | Path, name: str, params: dict[str, Any] | None = None,
          progress: bool = True, engine: str = "local", address: str | None = None,
          actors: int | None = None, redo_failed: bool = False) -> PassReport:
    """Run pass ``name`` with ``params`` over every samples part not yet scored (and, with
    ``redo_failed``, again over the parts holding rows that failed).
    ``engine="ray"`` computes the parts on a Ray actor pool (``curate.passes.ray``); the
    pass's ``prepare`` runs once, here, and its state travels to each actor. The weights its
    ``prepare`` names (``weights_sha256`` in its info) go to the runner, which refuses to mix
    them with parts scored with other weights."""
    p = passes.get(name)
    prm = passes.make_params(p, params)  # an unknown parameter fails here, before any work
    ws = Workspace.open(workspace)
    # joined first: an unknown engine or an unreachable cluster fails before any work
    cluster = ray_engine.cluster_for(engine, address, actors)
    state, info = p.prepare(ws, prm) if p.prepare else (None, {})
    weights = info.get(WEIGHTS)
    spec = p.inputs(prm)
    manifest = {"pass": p.name, "params": passes.as_dict(prm), "columns": list(p.columns),
                "inputs": {f: _identity(ws, f) for f in spec},
                **{k: v for k, v in info.items() if k != WEIGHTS}}
    if cluster is not None:
        manifest["engine"] = cluster.describe(address)
        process = ray_engine.process(partial(_part_worker, ws, p.name, prm, state), cluster,
                                     ws.pass_dir("scores", passes.key(p, prm)), weights)
    else:
        def process(pending: list[Path], advance: Any) -> Any:
            for part in pending:
                table = score_part(ws, p, prm, state, part)
                advance(table.num_rows)
                yield part, table

    return run(ws, Job(kind="scores", key=passes.key(p, prm), manifest=manifest,
                       process=process, weights=weights), progress, redo_failed=redo_failed)


def score_part(ws: Workspace, p: passes.Pass, prm: Any, state: Any, part: Path) -> pa.Table:
    """One samples part's output table: its inputs read and aligned, the pass's columns added."""
    base, batch = read_inputs(ws, part.name, p.inputs(prm))
    ok = np.asarray(pa.compute.equal(base["status"], "ok").to_numpy(zero_copy_only=False))
    cols = apply(p, prm, state, batch, base.num_rows, ok)
    return pa.table({**{c: base[c] for c in base.column_names}, **cols})


def _part_worker(ws: Workspace, name: str, prm: Any, state: Any
                 ) -> Callable[[Path], pa.Table]:
    """In a Ray actor: the pass and its prepared state, once; one part's table per call."""
    p = passes.get(name)
    return lambda part: score_part(ws, p, prm, state, part)


def _identity(ws: Workspace, folder: str) -> dict | None:
    """What an input folder is (its manifest's pass, key and model) for the manifest."""
    path = ws.folder(folder) / "manifest.json"
    if folder == "samples" or not path.exists():
        return None
    m = read_json(path)
    return {k: m.get(k) for k in ("pass", "key", "model", "prefix") if m.get(k) is not None}
