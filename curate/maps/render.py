"""``curate render``: every point of a map drawn by datashader, coloured by a column.

Categorical columns (strings, booleans, ``cluster``) get one colour
per category and a legend; numbers get the mean value per pixel on a colour scale spanning
the 1st to 99th percentile, with a colour bar. The image is placed in a matplotlib axes at
the map's data coordinates (``extent``), so a selection drawn on it (``mo.ui.matplotlib``)
comes back in map coordinates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from curate.files import atomic_path
from curate.lock import writes
from curate.maps.frames import load_points
from curate.workspace import Workspace

MAX_CATEGORIES = 20
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#e7ba52", "#637939", "#ad494a",
           "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363")
OTHER, NONE = "#c7c7c7", "#e0e0e0"


def is_categorical(s: pd.Series) -> bool:
    """``cluster``, booleans and strings are categories; other numbers are a scale."""
    return s.name == "cluster" or s.dtype == bool or not pd.api.types.is_numeric_dtype(s)


def categories(frame: pd.DataFrame, color: str) -> tuple[pd.Categorical, list[str], list[str]]:
    """(category per point, names, colours). Clusters each get their own colour (up to 256);
    in other columns the largest categories do and the rest share "other"; a missing value
    is "(none)"."""
    s = frame[color]
    if color == "cluster":
        ids = sorted(int(c) for c in s.unique())
        labels = (dict(zip(frame["cluster"], frame["cluster_label"], strict=True))
                  if "cluster_label" in frame else {})
        cats = [f"{c}: {labels[c]}" if c in labels else str(c) for c in ids]
        codes = pd.Categorical.from_codes(np.searchsorted(ids, s.to_numpy()), categories=cats)
        return codes, cats, [_glasbey(i) for i in range(len(cats))]
    names = s.astype("string").fillna("(none)")
    counts = names.value_counts()
    keep = list(counts.index[:MAX_CATEGORIES - 1]) if len(counts) > MAX_CATEGORIES \
        else list(counts.index)
    keep.sort(key=lambda n: (n == "(none)", n))
    cats = keep + (["other"] if len(counts) > len(keep) else [])
    values = names.where(names.isin(keep), "other")
    colours = [NONE if c == "(none)" else PALETTE[i % len(PALETTE)] for i, c in enumerate(keep)]
    colours += [OTHER] if len(cats) > len(keep) else []
    return pd.Categorical(values, categories=cats), cats, colours


def _glasbey(i: int) -> str:
    """Colour ``i`` of colorcet's glasbey_category10 (category10 first, then distinct ones)."""
    import colorcet  # lazily, as datashader and matplotlib below: heavy, only drawing needs them

    return colorcet.glasbey_category10[i % 256] if isinstance(
        colorcet.glasbey_category10[0], str) else "#{:02x}{:02x}{:02x}".format(
        *(int(round(255 * v)) for v in colorcet.glasbey_category10[i % 256]))


def bounds(frame: pd.DataFrame, pad: float = 0.03) -> tuple[tuple[float, float], ...]:
    out = []
    for c in ("x", "y"):
        lo, hi = float(frame[c].min()), float(frame[c].max())
        d = (hi - lo) or 1.0
        out.append((lo - pad * d, hi + pad * d))
    return tuple(out)


def shade(frame: pd.DataFrame, color: str | None, width: int = 600, height: int = 600,
          ranges: tuple | None = None) -> tuple[object, dict]:
    """(PIL image, key) where key describes the colours: ``{"categories", "colours"}`` or
    ``{"span", "cmap"}`` or ``{}`` for a density image."""
    import datashader as ds
    import datashader.transfer_functions as tf
    import matplotlib

    xr, yr = ranges or bounds(frame)
    cvs = ds.Canvas(plot_width=width, plot_height=height, x_range=xr, y_range=yr)
    df = frame[["x", "y"]].astype("float32")
    spread = 1 if len(frame) > 200_000 else 2
    if color is None:
        img = tf.shade(cvs.points(df, "x", "y"), cmap=["#9ecae1", "#08306b"], how="eq_hist")
        return tf.spread(img, px=spread).to_pil(), {}
    if is_categorical(frame[color]):
        df["cat"], cats, colours = categories(frame, color)
        agg = cvs.points(df, "x", "y", ds.by("cat", ds.count()))
        img = tf.shade(agg, color_key=dict(zip(cats, colours, strict=True)), how="eq_hist",
                       min_alpha=120)
        return tf.spread(img, px=spread).to_pil(), {"categories": cats, "colours": colours}
    v = frame[color].astype("float64")
    ok = v.notna().to_numpy()
    if not ok.any():
        img = tf.shade(cvs.points(df, "x", "y"), cmap=[NONE, NONE])
        return tf.spread(img, px=spread).to_pil(), {"span": (0.0, 1.0), "cmap": "viridis"}
    lo, hi = np.nanpercentile(v[ok], [1, 99])
    hi = hi if hi > lo else lo + 1e-9
    df["v"] = v.clip(lo, hi).astype("float32")
    cmap = matplotlib.colormaps["viridis"]
    top = tf.shade(cvs.points(df[ok], "x", "y", ds.mean("v")), cmap=cmap, how="linear",
                   span=(lo, hi))
    layers = [tf.shade(cvs.points(df[~ok], "x", "y"), cmap=[NONE, NONE])] if (~ok).any() else []
    img = tf.stack(*layers, top) if layers else top
    return tf.spread(img, px=spread).to_pil(), {"span": (float(lo), float(hi)),
                                                "cmap": "viridis", "missing": int((~ok).sum())}


def figure(frame: pd.DataFrame, color: str | None = "cluster", title: str | None = None,
           size: int = 600, legend: bool = True) -> tuple[object, object]:
    """(figure, axes): the shaded map at data coordinates with its legend or colour bar."""
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ranges = bounds(frame)
    img, key = shade(frame, color, size, size, ranges)
    fig, ax = plt.subplots(figsize=(size / 100 + (2.6 if legend and color else 0.2),
                                    size / 100 + 0.5), dpi=100)
    ax.imshow(img, extent=(*ranges[0], *ranges[1]), aspect="auto", interpolation="nearest")
    ax.set_xlim(*ranges[0])
    ax.set_ylim(*ranges[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(frame):,} points" + (f", coloured by {color}" if color else ""),
                 fontsize=10)
    if legend and "categories" in key:
        pairs = list(zip(key["categories"], key["colours"], strict=True))
        handles = [Patch(color=c, label=n[:40]) for n, c in pairs[:MAX_CATEGORIES]]
        if len(pairs) > MAX_CATEGORIES:
            handles.append(Patch(color="white", label=f"+ {len(pairs) - MAX_CATEGORIES} more"))
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
                  frameon=False, title=color, title_fontsize=8)
    elif legend and "span" in key:
        norm = matplotlib.colors.Normalize(*key["span"])
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=key["cmap"]), ax=ax,
                           fraction=0.05, pad=0.02, extend="both")
        bar.set_label(color + (f" ({key['missing']:,} missing in grey)" if key.get("missing")
                               else " (mean per pixel)"), fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.98 if not legend or not color else
                        size / 100 / (size / 100 + 2.6) + 0.02, top=0.94, bottom=0.02)
    return fig, ax


@writes("render")
def render_map(workspace: str | Path, name: str = "default", color: str | None = "cluster",
               out: str | Path | None = None, size: int = 800) -> Path:
    """Draw map ``name`` coloured by ``color`` (a ``pairs`` column or ``cluster``; None for
    density) into a PNG at ``out`` (default ``maps/NAME-COLOR.png``)."""
    import matplotlib.pyplot as plt  # lazily: heavy, and only drawing needs it

    ws = Workspace.open(workspace)
    frame = load_points(ws, name, [color] if color else [])
    out = Path(out) if out else ws.map_picture(name, color)
    fig, _ = figure(frame, color, f"map {name}: {len(frame):,} points"
                    + (f" coloured by {color}" if color else ""), size)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
