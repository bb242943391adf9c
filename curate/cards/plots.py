"""The pictures of a data card: score histograms of kept against dropped samples (matplotlib,
binned by DuckDB so memory does not grow with the pool) and the map of the selection over the
pool when ``curate map`` has made one. PNGs carry no timestamp or version, so they repeat."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from curate.catalog import duck_path
from curate.errors import CurateError
from curate.files import atomic_path
from curate.maps import list_maps, load_points
from curate.maps.render import figure
from curate.workspace import Workspace

BINS = 40
PNG_META = {"Software": None}  # matplotlib would stamp its version into the file


def _pyplot():  # noqa: ANN202
    import matplotlib  # lazily: heavy, and only drawing needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _counts(con: duckdb.DuckDBPyConnection, column: str, kept: Path, dropped: Path | None
            ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Bin edges and per-group counts of ``column`` for kept and dropped samples."""
    col = '"' + column.replace('"', '""') + '"'
    groups = "SELECT 'kept' AS g, sample_id FROM read_parquet($kept)" + (
        " UNION ALL SELECT 'dropped', sample_id FROM read_parquet($dropped)" if dropped else "")
    params = {"kept": duck_path(kept), **({"dropped": duck_path(dropped)} if dropped else {})}
    rows = con.sql(f"""WITH v AS (SELECT g, CAST(p.{col} AS DOUBLE) AS x FROM ({groups}) AS s
                       JOIN pairs AS p USING (sample_id) WHERE isfinite(CAST(p.{col} AS DOUBLE))),
                       r AS (SELECT min(x) AS lo, max(x) AS hi FROM v)
                       SELECT g, least(CAST(floor((x - lo) / greatest(hi - lo, 1e-12) * {BINS})
                                            AS INTEGER), {BINS - 1}) AS b, count(*), lo, hi
                       FROM v, r GROUP BY ALL ORDER BY 1, 2""", params=params).fetchall()
    if not rows:
        return None
    lo, hi = rows[0][3], rows[0][4]
    edges = np.linspace(lo, hi if hi > lo else lo + 1, BINS + 1)
    counts = {g: np.zeros(BINS, np.int64) for g in ("kept", "dropped")}
    for g, b, n, *_ in rows:
        counts[g][b] = n
    return edges, counts


def histograms(con: duckdb.DuckDBPyConnection, ws: Workspace, selection: str,
               columns: list[str], out: Path) -> bool:
    """Draw up to 12 score columns' histograms, kept against dropped, into ``out``."""
    files = ws.selection(selection)
    kept, dropped = files.parquet, files.dropped
    binned = [(c, h) for c in columns[:12]
              if (h := _counts(con, c, kept, dropped if dropped.exists() else None))]
    if not binned:
        return False
    plt = _pyplot()
    cols = min(3, len(binned))
    rows = math.ceil(len(binned) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), dpi=80, squeeze=False)
    for ax in axes.flat[len(binned):]:
        ax.set_visible(False)
    for ax, (column, (edges, counts)) in zip(axes.flat, binned, strict=False):
        for g, colour in (("dropped", "#d95f02"), ("kept", "#1b9e77")):
            if counts[g].any():
                ax.stairs(counts[g], edges, fill=True, alpha=0.55, color=colour,
                          label=f"{g} ({counts[g].sum():,})")
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata=PNG_META)
    plt.close(fig)
    return True


def selection_map(ws: Workspace, selection: str, out: Path) -> str | None:
    """Draw the selection over the pool on the workspace's map (``default`` or the first);
    returns the picture's caption, or None when there is no map."""
    names = list_maps(ws)
    if not names:
        return None
    name = "default" if "default" in names else names[0]
    kept = set(pq.read_table(ws.selection(selection).parquet,
                             columns=["sample_id"])["sample_id"].to_pylist())
    try:
        frame = load_points(ws, name)
    except CurateError:
        return None
    frame["selection"] = pd.Categorical(
        np.where(frame["sample_id"].isin(kept), "kept", "not kept"),
        categories=["not kept", "kept"])
    n = int((frame["selection"] == "kept").sum())
    title = f"map {name}: {n:,} kept of {len(frame):,} points"
    plt = _pyplot()
    fig, _ = figure(frame, "selection", title, 700)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", metadata=PNG_META)
    plt.close(fig)
    return f"Map `{name}` of the pool with the {n:,} kept samples marked"
