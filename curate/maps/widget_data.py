"""What the map widget sends to the browser, as pure functions of a map's points: positions as
one float32 buffer, a colour code per point (uint16) with its palette and legend, and the
cluster labels at their centroids.

Every colouring is a category code, so the front end always draws with one palette lookup
(regl-scatterplot's categorical ``colorBy``): a category column gets a code per category
(every cluster its own colour; other columns their ``MAX_CATEGORIES - 1`` largest values
and "other"), a number gets one of ``RAMP_STEPS`` equal bins between its 1st and 99th
percentile on the viridis ramp, code 0 being "missing" (grey).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from curate.maps.render import NONE, OTHER, PALETTE, is_categorical

RAMP_STEPS = 64
MAX_CATEGORIES = 256  # clusters beyond this share colours (k-means makes at most 64)
GLASBEY_N = 256


@dataclass(frozen=True)
class Colouring:
    """One colouring of the points: a code per point, the colour of each code and the legend
    (``kind`` "category": items with code, name, colour, count; "numeric": the span, the ramp
    and the missing count)."""

    codes: np.ndarray  # uint16, one per point
    palette: list[str]
    legend: dict


def positions(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict]:
    """The points in [-1, 1] (WebGL's clip space, which regl-scatterplot expects) with one
    scale for both axes, so distances keep their aspect; returned as one float32 buffer, all
    x then all y, and the transform ``{"center": [cx, cy], "scale": s}`` (ndc = (v - c) * s)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if not len(x):
        return np.zeros(0, np.float32), {"center": [0.0, 0.0], "scale": 1.0}
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    half = max(x.max() - x.min(), y.max() - y.min()) / 2 or 1.0
    s = 0.98 / half
    out = np.empty(2 * len(x), np.float32)
    out[:len(x)] = (x - cx) * s
    out[len(x):] = (y - cy) * s
    return out, {"center": [float(cx), float(cy)], "scale": float(s)}


def glasbey(n: int) -> list[str]:
    """``n`` colours of colorcet's glasbey_category10 (category10 first, then distinct ones
    chosen for legibility against each other: Glasbey et al. 2007, "Colour displays for
    categorical images")."""
    import colorcet

    pal = colorcet.glasbey_category10
    return [pal[i % GLASBEY_N] if isinstance(pal[0], str) else "#{:02x}{:02x}{:02x}".format(
        *(round(255 * v) for v in pal[i % GLASBEY_N])) for i in range(n)]


def ramp(n: int = RAMP_STEPS) -> list[str]:
    """``n`` colours of matplotlib's viridis, low to high (perceptually uniform)."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [matplotlib.colors.to_hex(cmap(i / max(n - 1, 1))) for i in range(n)]


def colouring(frame: pd.DataFrame, color: str) -> Colouring:
    """The colouring of ``frame`` (a map's points) by column ``color``."""
    s = frame[color]
    if color == "cluster":
        return _clusters(frame)
    if is_categorical(s):
        return _categories(s, color)
    return _numeric(s.astype("float64").to_numpy(), color)


def _clusters(frame: pd.DataFrame) -> Colouring:
    c = frame["cluster"].to_numpy()
    ids, inverse, counts = np.unique(c, return_inverse=True, return_counts=True)
    names = (frame.groupby("cluster", sort=True)["cluster_label"].first().to_dict()
             if "cluster_label" in frame else {})
    pal = glasbey(len(ids))
    items = [{"code": i, "name": f"{int(k)}: {names.get(k, k)}", "colour": pal[i],
              "count": int(counts[i])} for i, k in enumerate(ids)]
    return Colouring(inverse.astype(np.uint16), pal, {"kind": "category", "title": "cluster",
                                                      "items": items})


def _categories(s: pd.Series, color: str) -> Colouring:
    names = s.astype("string").fillna("(none)")
    counts = names.value_counts(sort=True)
    if len(counts) > MAX_CATEGORIES:
        keep = list(counts.index[:MAX_CATEGORIES - 1])
    else:
        keep = list(counts.index)
    keep.sort(key=lambda n: (n == "(none)", n))
    lookup = {n: i for i, n in enumerate(keep)}
    other = len(keep)
    codes = names.map(lookup).fillna(other).to_numpy().astype(np.uint16)
    base = list(PALETTE) if len(keep) <= len(PALETTE) else glasbey(len(keep))
    pal = [NONE if n == "(none)" else base[i] for i, n in enumerate(keep)]
    items = [{"code": i, "name": n, "colour": pal[i], "count": int(counts[n])}
             for i, n in enumerate(keep)]
    if len(counts) > len(keep):
        pal.append(OTHER)
        items.append({"code": other, "name": "other",
                      "colour": OTHER, "count": int((codes == other).sum())})
    return Colouring(codes, pal, {"kind": "category", "title": color, "items": items})


def _numeric(v: np.ndarray, color: str) -> Colouring:
    ok = ~np.isnan(v)
    codes = np.zeros(len(v), np.uint16)
    lo = hi = 0.0
    if ok.any():
        lo, hi = (float(t) for t in np.nanpercentile(v[ok], [1, 99]))
        if hi <= lo:
            hi = lo + 1e-9
        t = np.clip((v[ok] - lo) / (hi - lo), 0, 1)
        codes[ok] = 1 + np.minimum((t * RAMP_STEPS).astype(np.int64), RAMP_STEPS - 1)
    colours = ramp()
    missing = int((~ok).sum())
    items = [{"code": 0, "name": "missing", "colour": NONE, "count": missing}] if missing else []
    return Colouring(codes, [NONE, *colours], {"kind": "numeric", "title": color,
                                               "span": [lo, hi], "ramp": colours,
                                               "missing": missing, "items": items})


def centroids(frame: pd.DataFrame) -> pd.DataFrame:
    """Per cluster: its label and where to draw it, the coordinate-wise median of its points
    (unlike the mean, it stays inside a cluster an outlier or a curved shape pulls on)."""
    g = frame.groupby("cluster", sort=True)
    out = g[["x", "y"]].median()
    out["label"] = g["cluster_label"].first() if "cluster_label" in frame else \
        out.index.astype(str)
    out["size"] = g.size()
    return out.reset_index()


def label_positions(frame: pd.DataFrame, transform: dict) -> list[list]:
    """``[[x, y, label, cluster], ...]`` in the buffer's coordinates, largest cluster first
    (the front end drops a label that would overlap one already drawn)."""
    c = centroids(frame).sort_values(["size", "cluster"], ascending=[False, True])
    (cx, cy), s = transform["center"], transform["scale"]
    return [[float((r.x - cx) * s), float((r.y - cy) * s), str(r.label), int(r.cluster)]
            for r in c.itertuples()]


def encode_indices(idx: np.ndarray | list[int]) -> bytes:
    """Row indices as the int32 buffer the front end reads (sorted, unique)."""
    return np.unique(np.asarray(idx, np.int64)).astype("<i4").tobytes()


def decode_indices(buf: bytes | memoryview | None, n: int) -> np.ndarray:
    """The front end's int32 buffer as sorted unique row indices below ``n``."""
    if not buf:
        return np.zeros(0, np.int64)
    a = np.frombuffer(bytes(buf), "<i4").astype(np.int64)
    return np.unique(a[(a >= 0) & (a < n)])
