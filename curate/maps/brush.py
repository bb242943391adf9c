"""What the explore notebook does with a brush on a map: its geometry, thumbnails of the
brushed samples, their score histograms against the pool, saving it as a selection, and
live counts of what a threshold rule would keep per cluster."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from curate.catalog import duck_path
from curate.errors import CurateError
from curate.lock import writes
from curate.maps.io import read_manifest
from curate.select.store import SelectReport, check_free, write_selection
from curate.workspace import Workspace


def geometry(selection: Any) -> dict | None:
    """A ``mo.ui.matplotlib`` selection as plain data: a box, a lasso polygon, or None."""
    if hasattr(selection, "x_min"):
        return {"type": "box", "x": [selection.x_min, selection.x_max],
                "y": [selection.y_min, selection.y_max]}
    if getattr(selection, "vertices", None):
        return {"type": "lasso", "vertices": [list(v) for v in selection.vertices]}
    return None


@writes("select")
def save_brush(workspace: Workspace | str | Path, name: str, ids: list[str], map_name: str,
               shape: dict | None, overwrite: bool = False, rule: str | None = None
               ) -> SelectReport:
    """Write the brushed ``ids`` as selection ``name`` (rule ``brush``; parameters: the map,
    the brush geometry and the threshold ``rule`` that refined it, if any), through the
    selection store as ``curate select`` writes one."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    check_free(ws, name or "", overwrite, hint="overwrite it")
    if not ids:
        raise CurateError("the brush holds no points; draw it over the map's points first")
    points = read_manifest(ws, map_name)["points"]
    shape = _plain(shape)
    ids = list(dict.fromkeys(ids))
    t0 = time.time()
    params = {"map": map_name, "geometry": shape, **({"where": rule} if rule else {})}
    note = f"brushed on map {map_name}" + (f", then kept where {rule}" if rule else "")
    step = {"rule": "brush", "params": params, "in": points, "out": len(ids), "note": note}
    report = SelectReport(name, points, len(ids), [step])
    write_selection(ws, name, ids, {i: note for i in ids}, [], report, None)
    report.seconds = time.time() - t0
    return report


def _plain(obj: Any) -> Any:
    """Geometry with numpy numbers made plain floats, so the manifest stores numbers."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return float(obj) if isinstance(obj, int | float | np.number) and not isinstance(
        obj, bool) else obj


def _samples(ws: Workspace, ids: list[str], cols: str) -> list[tuple]:
    con = duckdb.connect()
    rows = con.execute(f"SELECT sample_id, {cols} FROM read_parquet($g) WHERE "
                       "list_contains($ids, sample_id)",
                       {"g": duck_path(ws.samples_dir) + "/part-*.parquet", "ids": list(ids)}
                       ).fetchall()
    con.close()
    return rows


def captions(ws: Workspace, ids: list[str]) -> dict[str, str]:
    """Captions of samples by id (maps leave them out: a million captions is a lot of RAM)."""
    got = dict(_samples(ws, ids, "caption")) if ids else {}
    return {i: got.get(i) or "" for i in ids}


def thumbnails(ws: Workspace, ids: list[str], size: int = 96) -> dict[str, bytes | None]:
    """JPEG thumbnails of samples by id (None where the image cannot be read)."""
    from PIL import Image

    from curate.images import decode_rgb, read_bytes

    if not ids:
        return {}
    rows = _samples(ws, ids, "image_path, image_offset, image_length")
    out: dict[str, bytes | None] = dict.fromkeys(ids)
    for sid, path, offset, length in rows:
        try:
            img = decode_rgb(read_bytes(path, offset, length))
        except Exception:  # a failed image is shown as missing, never raised
            continue
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out[sid] = buf.getvalue()
    return out


def numeric_columns(frame: pd.DataFrame) -> list[str]:
    skip = {"x", "y", "cluster", "image_offset", "image_length", "width", "height"}
    return [c for c in frame.columns if c not in skip and frame[c].dtype != bool
            and pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]


def histograms(frame: pd.DataFrame, mask: np.ndarray, columns: list[str], bins: int = 30
               ) -> Any:
    """Small multiples: each column's distribution in the brush against the whole pool
    (densities, so the shapes compare whatever the counts)."""
    import matplotlib.pyplot as plt

    cols = columns or ["cluster"]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.4), squeeze=False)
    for ax, c in zip(axes[0], cols, strict=True):
        v = frame[c].to_numpy(dtype=float)
        ok = ~np.isnan(v)
        edges = np.histogram_bin_edges(v[ok], bins=bins) if ok.any() else bins
        ax.hist(v[ok], bins=edges, density=True, color="#bbbbbb", label="pool")
        ax.hist(v[ok & mask], bins=edges, density=True, histtype="step", lw=2,
                color="#d62728", label=f"brush ({int((ok & mask).sum()):,})")
        ax.set_title(c, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def rule_sql(ranges: dict[str, tuple[float, float]]) -> str:
    """The ``where`` rule a set of range sliders stands for (for ``curate select``)."""
    return " AND ".join(f'"{c}" BETWEEN {lo:.6g} AND {hi:.6g}' for c, (lo, hi) in
                        ranges.items()) or "TRUE"


def keep_by_cluster(frame: pd.DataFrame, ranges: dict[str, tuple[float, float]]
                    ) -> pd.DataFrame:
    """Per cluster: its label, size, how many samples every ``lo <= column <= hi`` keeps
    (a missing score keeps nothing, as in ``curate select``), and that share; plus a total
    row."""
    keep = np.ones(len(frame), bool)
    for c, (lo, hi) in ranges.items():
        v = frame[c].to_numpy(dtype=float)
        keep &= (v >= lo) & (v <= hi)
    g = pd.DataFrame({"cluster": frame["cluster"], "cluster_label": frame["cluster_label"],
                      "keep": keep})
    out = g.groupby(["cluster", "cluster_label"], sort=True).agg(
        samples=("keep", "size"), kept=("keep", "sum")).reset_index()
    total = pd.DataFrame([{"cluster": -1, "cluster_label": "(all)", "samples": len(frame),
                           "kept": int(keep.sum())}])
    out = pd.concat([out, total], ignore_index=True)
    out["kept_share"] = (out["kept"] / out["samples"].clip(lower=1)).round(3)
    return out
