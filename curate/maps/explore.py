"""What the explore notebooks (marimo's ``notebooks/explore.py`` and Jupyter's
``notebooks/explore.ipynb``) do with a set of brushed samples, written once for both: which
columns are worth offering (ids, hashes, paths, timestamps and constant columns left out), the
points inside a brush's geometry, a sortable and pageable card grid that renders anywhere
(``_repr_html_``: JupyterLab, marimo's ``mo.Html``, a static HTML export) and saving the brush
as a selection with a one-line message instead of a traceback."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from curate.errors import CurateError
from curate.maps.brush import captions, save_brush, thumbnails
from curate.workspace import Workspace

# names that identify or locate a sample, or say when it arrived: never a colour or histogram
NOT_USEFUL = re.compile(r"(^|_)(id|ids|hash|sha256|path|url|key|meta|offset|length|error"
                        r"|caption)$|_at$|^(x|y)$")
MAX_CATEGORIES = 64  # more distinct strings than this is an identifier, not a category


def useful_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of a map's frame worth colouring by or plotting: numbers, booleans and strings
    of at most ``MAX_CATEGORIES`` values that are not all the same (``cluster`` first)."""
    out = []
    for c in frame.columns:
        if c != "cluster" and NOT_USEFUL.search(c):
            continue
        s = frame[c]
        if pd.api.types.is_datetime64_any_dtype(s) or s.dropna().empty:
            continue
        numeric = pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
        if not numeric and s.nunique(dropna=True) > MAX_CATEGORIES:
            continue
        if s.nunique(dropna=False) < 2:
            continue
        out.append(c)
    return sorted(out, key=lambda c: c != "cluster")


def numeric_useful(frame: pd.DataFrame) -> list[str]:
    """The useful columns that are numbers (histograms and sort keys); booleans count."""
    return [c for c in useful_columns(frame) if c != "cluster"
            and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]


def inside(frame: pd.DataFrame, shape: dict | None) -> np.ndarray:
    """Which points of ``frame`` lie in a brush geometry (``{"type": "box", "x": [x0, x1],
    "y": [y0, y1]}`` or ``{"type": "lasso", "vertices": [[x, y], ...]}``), edges included for
    a box, as ``mo.ui.matplotlib`` counts them."""
    x, y = frame["x"].to_numpy(float), frame["y"].to_numpy(float)
    if not shape:
        return np.zeros(len(frame), bool)
    if shape["type"] == "box":
        (x0, x1), (y0, y1) = sorted(shape["x"]), sorted(shape["y"])
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    from matplotlib.path import Path as Polygon

    return Polygon(np.asarray(shape["vertices"], float)).contains_points(np.c_[x, y])


@dataclass
class Cards:
    """One page of brushed samples as cards: thumbnail, caption and the chosen scores."""

    rows: list[dict] = field(default_factory=list)
    page: int = 0
    pages: int = 0
    total: int = 0
    sort_by: str | None = None
    descending: bool = True

    def title(self) -> str:
        if not self.total:
            return "no samples"
        order = (f", by {self.sort_by} ({'highest' if self.descending else 'lowest'} first)"
                 if self.sort_by else "")
        return f"page {self.page + 1} of {self.pages} ({self.total:,} samples{order})"

    def _repr_html_(self) -> str:
        cards = []
        for r in self.rows:
            img = (f'<img src="data:image/jpeg;base64,{base64.b64encode(r["thumb"]).decode()}"'
                   ' width="96" height="96" style="object-fit:contain">' if r["thumb"] else
                   '<div style="width:96px;height:96px;background:#eee">no image</div>')
            scores = " · ".join(f"{html.escape(k)} {_fmt(v)}" for k, v in r["scores"].items())
            cards.append(
                f'<figure class="curate-card" data-sample-id="{html.escape(r["sample_id"])}" '
                'style="width:150px;margin:0;font-size:11px">'
                f'{img}<figcaption>{html.escape(r["caption"][:90])}<br>'
                f'<code style="font-size:9px">{html.escape(r["sample_id"])}</code><br>'
                f'<span style="color:gray">{scores}</span></figcaption></figure>')
        return (f'<div class="curate-cards"><p><small>{html.escape(self.title())}</small></p>'
                '<div style="display:flex;flex-wrap:wrap;gap:8px">' + "".join(cards)
                + "</div></div>")


def _fmt(v: object) -> str:
    if isinstance(v, bool | np.bool_):
        return str(bool(v)).lower()
    if isinstance(v, int | float | np.number):
        return "–" if v != v else f"{v:.3g}"
    return str(v)


def cards(ws: Workspace, brushed: pd.DataFrame, sort_by: str | None = None,
          descending: bool = True, page: int = 0, per_page: int = 24,
          scores: list[str] | tuple[str, ...] = ()) -> Cards:
    """Page ``page`` of the brushed samples sorted by ``sort_by`` (missing values last), with
    thumbnails and captions read for that page only (a million-point brush reads 24)."""
    total = len(brushed)
    pages = max(1, math.ceil(total / per_page))
    page = min(max(0, int(page)), pages - 1)
    if sort_by:
        if sort_by not in brushed.columns:
            raise CurateError(f"cannot sort by {sort_by!r}: not a column of this map's points")
        brushed = brushed.sort_values(sort_by, ascending=not descending, na_position="last",
                                      kind="stable")
    show = brushed.iloc[page * per_page:(page + 1) * per_page]
    ids = list(show["sample_id"])
    thumbs, caps = thumbnails(ws, ids), captions(ws, ids)
    cols = [c for c in scores if c in show.columns]
    rows = [{"sample_id": sid, "thumb": thumbs.get(sid), "caption": caps[sid],
             "scores": {c: show[c].iloc[i] for c in cols}} for i, sid in enumerate(ids)]
    return Cards(rows, page, pages, total, sort_by, descending)


def save(ws: Workspace, name: str, ids: list[str], map_name: str, shape: dict | None,
         overwrite: bool = False, rule: str | None = None) -> tuple[str, str]:
    """Save brushed ``ids`` as selection ``name`` (``rule``: the threshold rule that refined
    them): ``(callout kind, message)``, a user error being a ``danger`` message (the notebooks
    show it as a callout, never a traceback)."""
    try:
        r = save_brush(ws, name, ids, map_name, shape, overwrite, rule)
    except CurateError as e:
        return "danger", f"**Not saved.** {e}"
    return "success", (f"Saved **{r.kept:,}** samples as selection `{name}` "
                       f"(`{ws.selection(name).parquet}`).")
