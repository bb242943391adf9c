"""A composite caption reward in the spirit of VLRM (algorithms.md 4.5: "CLIP-S + ITM", each
component z-scored per model before combining): ``reward = sum_i w_i * (x_i - mean_i) / std_i``
with each component's mean and population std (ddof=0) over every ok row of its score folder
in the workspace, fixed in prepare and recorded in the manifest; ``reward_raw`` is null.
A component is ``"<score folder key>.<column>"``, e.g. ``clip_score.clip_score``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.passes import Inputs, scores_input
from curate.workspace import Workspace


def parse(component: str) -> tuple[str, str]:
    """(score folder key, column) of ``"<key>.<column>"``, split at the last dot."""
    key, dot, column = component.rpartition(".")
    if not (key and dot and column):
        raise CurateError(f"composite component {component!r} must look like "
                          "'<score folder key>.<column>', e.g. 'clip_score.clip_score'")
    return key, column


def validate(p: Any) -> None:
    """Components and weights pair up one to one (checked before any work)."""
    if not p.components:
        raise CurateError("backend 'composite' needs at least one component")
    if len(p.weights) != len(p.components):
        raise CurateError(f"backend 'composite' got {len(p.components)} components but "
                          f"{len(p.weights)} weights; give one weight per component")
    for c in p.components:
        parse(c)


def _stats(ws: Workspace, component: str) -> dict:
    """Mean and std of one component over every ok row of its folder, after checking it."""
    key, column = parse(component)
    folder, run = ws.scores_dir(key), f"`curate score {key.split('--')[0]}`"
    manifest = ws.manifest("scores", key)
    if manifest is None:
        extra = f" with the parameters in its key {key!r}" if "--" in key else ""
        raise CurateError(f"composite component {component!r} needs {scores_input(key)}, "
                          f"which does not exist; run {run}{extra} first")
    if column not in manifest.get("columns", []):
        raise CurateError(f"{scores_input(key)} has no column {column!r}; its columns: "
                          f"{', '.join(manifest.get('columns', []))}")
    missing = [s.name for s in ws.sample_parts() if not (folder / s.name).is_file()]
    if missing:
        raise CurateError(f"{scores_input(key)} lacks {len(missing)} parts ({missing[0]}, "
                          f"...); run {run} again to finish it")
    values = []
    for part in sorted(folder.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["status", column])
        kind = t[column].type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)
                or pa.types.is_boolean(kind)):
            raise CurateError(f"component {component!r} is {kind}, not a number")
        t = t.filter(pc.equal(t["status"], "ok"))
        values.append(pc.cast(t[column], pa.float64()).to_numpy(zero_copy_only=False))
    x = np.concatenate(values) if values else np.zeros(0)
    x = x[np.isfinite(x)]
    if len(x) < 2 or not x.std() > 0:
        raise CurateError(f"component {component!r} has {len(x)} values and no spread; it "
                          "cannot be z-scored")
    return {"component": component, "folder": scores_input(key), "column": column,
            "source": {k: manifest[k] for k in ("pass", "params", "model") if k in manifest},
            "mean": float(x.mean()), "std": float(x.std()), "n": int(len(x))}


def prepare(ws: Workspace, p: Any) -> tuple[dict[str, tuple[float, float]], dict]:
    """Each component's workspace-wide mean and std, fixed for the whole run."""
    validate(p)
    stats = [_stats(ws, c) for c in dict.fromkeys(p.components)]
    return {s["component"]: (s["mean"], s["std"]) for s in stats}, {
        "backend": "composite", "components": stats, "weights": list(p.weights),
        "scale": "reward = sum_i w_i * (x_i - mean_i) / std_i (population std over all ok rows "
                 "of the workspace when the pass ran); reward_raw = null"}


def inputs(p: Any) -> Inputs:
    spec: Inputs = {}
    for c in dict.fromkeys(p.components):
        key, column = parse(c)
        spec.setdefault(scores_input(key), {})[column] = c
    return spec


def _floats(x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object:  # a nullable bool or int column
        arr = np.array([np.nan if v is None else float(v) for v in arr])
    return arr.astype(np.float64)


def compute(batch: dict[str, Any], p: Any, state: dict[str, tuple[float, float]]
            ) -> dict[str, np.ndarray]:
    """``reward = sum_i w_i * z_i`` (algorithms.md 4.5); NaN where any component is null."""
    n = len(batch[p.components[0]])
    reward = np.zeros(n, np.float64)
    for c, w in zip(p.components, p.weights, strict=True):
        mean, std = state[c]
        reward += float(w) * (_floats(batch[c]) - mean) / std
    return {"reward": reward, "reward_raw": np.full(n, np.nan)}
