"""The interactive map: every point of a map in a WebGL scatter (pan, zoom, hover cards, box
and lasso selection, colour by any useful column, cluster labels at their centroids, search
results highlighted), one anywidget that runs the same in marimo (``mo.ui.anywidget(w)``) and
in JupyterLab (a plain ipywidget).

Why our own small anywidget over jupyter-scatter (evaluated first; both draw with
regl-scatterplot): jupyter-scatter 1.0.1 shows an image in its tooltip only from a URL column,
so hovering a thumbnail needs either a million data URLs shipped up front or an HTTP server
beside the kernel; neither works the same under ``marimo run`` and JupyterLab. Its legend has
no search or scrolling for 64+ clusters, and it brings geoindex-rs, pooch and matplotlib
colormap code we do not need. Here the front end (``widget/src/index.js``: regl-scatterplot
1.16 and d3-scale from npm, bundled by esbuild into ``curate/maps/static/map_widget.js`` and
shipped in the package, nothing fetched at run time) asks for a hovered point's card through
the ``hovered`` trait and Python answers in ``hover_card`` (thumbnail, caption, scores);
points travel as binary buffers (float32 positions, uint16 colour codes), the selection comes
back as int32 row indices.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import anywidget
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.parquet as pq
import traitlets

from curate.errors import CurateError
from curate.maps import widget_data as data
from curate.maps.frames import MAP_COLUMNS, catalog, pair_columns, score_columns
from curate.maps.io import read_manifest
from curate.workspace import Workspace

STATIC = Path(__file__).with_name("static") / "map_widget.js"
# columns that identify, locate or time a sample rather than describe it
NOT_COLOURS = frozenset({"sample_id", "image_path", "image_offset", "image_length", "caption",
                         "error", "url", "key", "orig_key", "sha256", "image_hash", "source",
                         "meta", "ingested_at", "x", "y", "cluster_label"})
MAX_STRING_VALUES = 1000  # a string column with more distinct values is an id, not a category


def color_choices(con: duckdb.DuckDBPyConnection, rows: str = "pairs") -> list[str]:
    """Columns worth colouring a map by: ``cluster``, then the ``pairs`` columns holding
    numbers, booleans or short strings, leaving out ids, hashes, paths, times, nested values,
    and, counted over ``rows`` (SQL for the map's rows of ``pairs``), columns with a single
    value and strings with more than ``MAX_STRING_VALUES`` values."""
    cand = {c: t for c, t in pair_columns(con).items() if c not in NOT_COLOURS
            and not c.endswith(("_path", "_hash", "_id")) and "[" not in t
            and not t.startswith(("STRUCT", "MAP", "BLOB", "TIMESTAMP", "DATE", "TIME",
                                  "INTERVAL", "UNION", "UUID"))}
    if not cand:
        return ["cluster"]
    row = con.execute("SELECT " + ", ".join(
        f'approx_count_distinct("{c}")' for c in cand) + f" FROM {rows}").fetchall()[0]
    out = ["cluster"]
    for (c, t), n in zip(cand.items(), row, strict=True):
        if n >= 2 and (t != "VARCHAR" or n <= MAX_STRING_VALUES):
            out.append(c)
    return out


def _bytes(value: bytes | memoryview | None, _widget: object) -> bytes:
    """A buffer from the front end as bytes (Jupyter sends a memoryview, marimo bytes)."""
    return b"" if value is None else bytes(value)


class MapWidget(anywidget.AnyWidget):
    """A map of a workspace, drawn by the browser. ``selected_ids`` follows the box or lasso
    drawn there; ``color`` recolours it (the selection stays); ``highlight(ids)`` marks search
    results; ``map_name`` switches maps, keeping the selected samples that are on both."""

    _esm = STATIC
    _xy = traitlets.Bytes(b"").tag(sync=True)
    _codes = traitlets.Bytes(b"").tag(sync=True)
    _palette = traitlets.List(traitlets.Unicode()).tag(sync=True)
    _legend = traitlets.Dict().tag(sync=True)
    _labels = traitlets.List().tag(sync=True)
    _highlight = traitlets.Bytes(b"").tag(sync=True)
    selection = traitlets.Bytes(b"").tag(sync=True, from_json=_bytes)  # int32 rows
    hovered = traitlets.Int(-1).tag(sync=True)
    hover_card = traitlets.Dict().tag(sync=True)
    color = traitlets.Unicode("cluster").tag(sync=True)
    map_name = traitlets.Unicode("default").tag(sync=True)
    mode = traitlets.Unicode("pan").tag(sync=True)  # pan, box or lasso
    show_labels = traitlets.Bool(True).tag(sync=True)
    height = traitlets.Int(560).tag(sync=True)
    point_size = traitlets.Float(3.0).tag(sync=True)
    performance_mode = traitlets.Bool(False).tag(sync=True)  # square points, for 5M+

    def __init__(self, ws: Workspace | str | Path, map_name: str = "default",
                 color: str = "cluster", **kw: object) -> None:
        self.ws = ws if isinstance(ws, Workspace) else Workspace.open(ws)
        self._con = catalog(self.ws)
        self._choices: list[str] | None = None  # counted on first use: seconds at 1M
        self._scores = score_columns(self._con)
        self._sources = self.ws.pair_sources(self._con)
        self._ready = False  # observers wait until the points and colours are in place
        super().__init__(**kw)
        self._load(map_name)
        self.map_name = map_name
        self.color = color  # validated
        self._ready = True
        self._apply_colour(color)

    # the points ---------------------------------------------------------------------------
    def _load(self, name: str) -> None:
        """Read the map's points in the file's order (sorting or joining a million string
        ids costs seconds); points whose sample left the workspace stay until the map is made
        again, as ``check_map`` reports."""
        read_manifest(self.ws, name)  # a missing map says which exist and how to make one
        t = pq.read_table(self.ws.map_files(name).parquet, columns=list(MAP_COLUMNS))
        self.frame = t.to_pandas()
        self._id_array = t["sample_id"].combine_chunks()
        self._ids = self.frame["sample_id"].to_numpy(dtype=object)
        self._columns = {}
        self._choices = None
        xy, transform = data.positions(self.frame["x"].to_numpy(), self.frame["y"].to_numpy())
        self.transform = transform
        self._con.register("_map_order", pa.table({"sample_id": self._id_array,
                                                   "idx": pa.array(np.arange(len(t)))}))
        self.set_trait("_xy", xy.tobytes())
        self.set_trait("_labels", data.label_positions(self.frame, transform))

    @traitlets.observe("map_name")
    def _on_map(self, change: dict) -> None:
        if change["old"] == change["new"] or not self._ready:
            return
        keep = self.selected_ids
        self._load(change["new"])
        self.set_trait("_highlight", b"")
        self._apply_colour(self.color)
        self.select(keep)

    def column(self, name: str) -> pd.Series:
        """Column ``name`` of ``pairs`` for every point, in the map's row order (cached)."""
        if name in MAP_COLUMNS:
            return self.frame[name]
        if name not in self._columns:
            if name not in pair_columns(self._con):
                raise CurateError(f"no column {name!r} in this workspace; colour by one of "
                                  f"{', '.join(self._choices)}")
            # a score's column from its own view (with the samples, as pairs has them):
            # joining every score view as ``pairs`` does costs 2-4x as much at 300k points
            view, col = self._sources.get(name, ("pairs", name))
            also = "" if view == "pairs" else " JOIN samples s USING (sample_id)"
            got = self._con.execute(f'SELECT o.idx, p."{col}" AS v FROM _map_order o{also} '
                                    f'JOIN "{view}" p USING (sample_id)').fetch_df()
            v = got["v"].to_numpy()
            if len(got) == len(self._ids):
                col = np.empty(len(self._ids), v.dtype)
            elif v.dtype.kind in "iuf":  # a point whose sample left: NaN, or None
                col, v = np.full(len(self._ids), np.nan), v.astype(np.float64)
            else:
                col = np.full(len(self._ids), None, object)
            col[got["idx"].to_numpy()] = v
            self._columns[name] = col
        return pd.Series(self._columns[name], name=name)

    def color_choices(self) -> list[str]:
        """The columns this map can be coloured by (see ``color_choices``), counted over the
        map's points on first use."""
        if self._choices is None:
            self._choices = color_choices(self._con, "_map_order JOIN pairs USING (sample_id)")
        return list(self._choices)

    # colour --------------------------------------------------------------------------------
    @traitlets.validate("color")
    def _check_color(self, proposal: dict) -> str:
        c = proposal["value"]
        t = pair_columns(self._con).get(c, "")
        if c not in MAP_COLUMNS and (not t or "[" in t or t.startswith(("STRUCT", "MAP",
                                                                          "BLOB"))):
            raise CurateError(f"cannot colour by {c!r}; choose one of "
                              f"{', '.join(self.color_choices())}")
        return c

    @traitlets.observe("color")
    def _on_color(self, change: dict) -> None:
        if change["old"] != change["new"] and self._ready:
            self._apply_colour(change["new"])

    def _apply_colour(self, color: str) -> None:
        frame = self.frame if color in MAP_COLUMNS else self.frame.assign(
            **{color: self.column(color).to_numpy()})
        self.colouring = data.colouring(frame, color)
        with self.hold_sync():
            self._palette = self.colouring.palette
            self._legend = self.colouring.legend
            self._codes = self.colouring.codes.tobytes()

    # selection and highlight ---------------------------------------------------------------
    @property
    def selected_indices(self) -> np.ndarray:
        """Rows of ``frame`` in the browser's box or lasso (sorted)."""
        return data.decode_indices(self.selection, len(self._ids))

    @property
    def selected_ids(self) -> list[str]:
        """Sample ids of the selected points, in the map's row order."""
        return self._ids[self.selected_indices].tolist()

    def _rows(self, ids: list[str]) -> np.ndarray:
        """Rows of these ids on the map (a scan of the ids, hashing only the few asked for:
        a hash index of a million strings would cost seconds to build)."""
        if not len(ids):
            return np.zeros(0, np.int64)
        hit = pa.compute.is_in(self._id_array, value_set=pa.array(list(ids), pa.string()))
        return np.flatnonzero(hit.to_numpy(zero_copy_only=False))

    def select(self, ids: list[str]) -> int:
        """Select these samples (those on the map); returns how many are."""
        rows = self._rows(ids)
        self.selection = data.encode_indices(rows)
        return len(np.unique(rows))

    def highlight(self, ids: list[str]) -> int:
        """Ring these samples on the map (search results; ``[]`` clears); returns how many of
        them are on it."""
        rows = self._rows(ids)
        self._highlight = data.encode_indices(rows)
        return len(np.unique(rows))

    @property
    def highlighted_ids(self) -> list[str]:
        return self._ids[data.decode_indices(self._highlight, len(self._ids))].tolist()

    # hover ---------------------------------------------------------------------------------
    @traitlets.observe("hovered")
    def _on_hover(self, change: dict) -> None:
        i = change["new"]
        if 0 <= i < len(self._ids):
            self.hover_card = self.card(i)

    def card(self, i: int, size: int = 160) -> dict:
        """What the hover card shows for row ``i``: its id, a JPEG thumbnail as a data URL,
        the caption, its cluster and the current colour's and every score's value (one
        query of ``pairs``)."""
        sid = str(self._ids[i])
        cols = list(dict.fromkeys(c for c in [self.color, *self._scores]
                                  if c not in MAP_COLUMNS))
        row = self._con.execute(
            "SELECT caption, image_path, image_offset, image_length" +
            "".join(f', "{c}"' for c in cols) + " FROM pairs WHERE sample_id = $s",
            {"s": sid}).fetchall()  # fetchone would leave the result open
        row = row[0] if row else None
        values: dict[str, object] = {"cluster": str(self.frame["cluster_label"].iat[i])}
        if row is None:  # the sample left the workspace since the map was made
            return {"index": int(i), "sample_id": sid, "caption": "(no longer in the "
                    "workspace)", "thumbnail": None, "values": values}
        values.update({c: _plain(v) for c, v in zip(cols, row[4:], strict=True)})
        thumb = thumbnail(*row[1:4], size)
        return {"index": int(i), "sample_id": sid, "caption": row[0] or "",
                "thumbnail": "data:image/jpeg;base64," + base64.b64encode(thumb).decode()
                if thumb else None, "values": values}

    def close(self) -> None:
        self._con.close()
        super().close()


def thumbnail(path: str, offset: int | None, length: int | None, size: int) -> bytes | None:
    """A JPEG thumbnail of one image (None when it cannot be read: shown as missing)."""
    from PIL import Image

    from curate.images import decode_rgb, read_bytes

    try:
        img = decode_rgb(read_bytes(path, offset, length))
    except Exception:  # a failed image is shown as missing, never raised
        return None
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _plain(v: object) -> object:
    """A value the hover card can carry as JSON."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float | np.floating):
        return None if np.isnan(v) else float(v)
    return str(v)
