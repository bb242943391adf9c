# ruff: noqa: B018, F841  (marimo: a cell shows its last expression; SQL cells name results)
import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="curate: explore a map")

with app.setup:
    import argparse
    import os
    import sys

    import marimo as mo
    import matplotlib.pyplot as plt
    import numpy as np

    from curate.errors import CurateError
    from curate.maps import catalog, check_map, list_maps, load_points, read_manifest, save_brush
    from curate.maps.brush import (
        captions,
        geometry,
        histograms,
        keep_by_cluster,
        rule_sql,
        thumbnails,
    )
    from curate.maps.frames import colour_columns, score_columns
    from curate.maps.render import figure
    from curate.workspace import Workspace


@app.function
def cli_args() -> argparse.Namespace:
    """`marimo run notebooks/explore.py -- -w DIR [--map NAME] [--color COL] [--brush ...]`"""
    ap = argparse.ArgumentParser(prog="explore.py")
    ap.add_argument("-w", "--workspace", default=os.environ.get("CURATE_WORKSPACE", "workspace"),
                    help="workspace (default: $CURATE_WORKSPACE or ./workspace)")
    ap.add_argument("--map", default=None, help="map name (default: the first)")
    ap.add_argument("--color", default="cluster", help="column to colour the map by")
    ap.add_argument("--brush", type=float, nargs=4, metavar=("X0", "X1", "Y0", "Y1"),
                    help="start with this box brushed (map coordinates)")
    return ap.parse_known_args(sys.argv[1:])[0]


@app.function
def open_workspace(path: str) -> tuple[Workspace | None, str | None]:
    try:
        return Workspace.open(path), None
    except CurateError as e:
        return None, str(e)


@app.function
def card(sid: str, thumb: bytes | None, caption: str, scores: dict) -> object:
    """One brushed sample: thumbnail, caption and scores."""
    img = mo.image(thumb, width=96, height=96) if thumb else mo.md("*(no image)*")
    lines = " · ".join(f"{k} {v:.3g}" for k, v in scores.items() if v == v)
    return mo.vstack([img, mo.md(f"<small>{caption[:90]}</small>"),
                      mo.md(f"<small style='color:gray'>{lines}</small>")], gap=0.2)


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Explore a map
    Every sample of the workspace on its UMAP map, drawn by datashader. **Drag** a box
    (or **Shift+drag** a lasso) to brush a region: its samples, their scores against the
    pool, and a button to save them as a selection appear below.
    """)
    return


@app.cell
def _():
    args = cli_args()
    ws_input = mo.ui.text(value=args.workspace, label="workspace", full_width=True)
    ws_input
    return args, ws_input


@app.cell
def _(ws_input):
    ws, ws_error = open_workspace(ws_input.value)
    mo.stop(ws is None, mo.callout(mo.md(f"**Cannot open the workspace.** {ws_error}"),
                                   kind="danger"))
    maps = list_maps(ws)
    mo.stop(not maps, mo.callout(mo.md(
        f"**No map yet** in `{ws.root}`. Make one with `curate map -w {ws.root}` "
        "(or the *map* step of `notebooks/loop.py`), then reload."), kind="warn"))
    con = catalog(ws)
    return con, maps, ws


@app.cell
def _(args, con, maps):
    _cols = colour_columns(con)
    map_pick = mo.ui.dropdown(maps, value=args.map if args.map in maps else maps[0],
                              label="map")
    color_pick = mo.ui.dropdown(_cols, value=args.color if args.color in _cols else "cluster",
                                label="colour by")
    _note = None if args.color in _cols else mo.callout(mo.md(
        f"No column `{args.color}` in this workspace; colouring by cluster. Columns: "
        + ", ".join(f"`{c}`" for c in _cols)), kind="warn")
    mo.vstack([mo.hstack([map_pick, color_pick], justify="start"), *([_note] if _note else [])])
    return color_pick, map_pick


@app.cell
def _(color_pick, con, map_pick, ws):
    scores = score_columns(con)
    _wanted = scores + ([color_pick.value] if color_pick.value != "cluster" else [])
    try:
        frame, load_error = load_points(ws, map_pick.value, _wanted, con), None
    except CurateError as e:
        frame, load_error = None, str(e)
    mo.stop(frame is None, mo.callout(mo.md(f"**Cannot load the map.** {load_error}"),
                                      kind="danger"))
    manifest = read_manifest(ws, map_pick.value)
    _stale = check_map(ws, map_pick.value, con)
    mo.vstack([
        mo.md(f"**{map_pick.value}**: {len(frame):,} points, {manifest['embedding']['kind']} "
              f"embeddings of `{manifest['embedding']['model']}`, UMAP fitted on "
              f"{manifest['sample']:,}, {len(manifest['clusters'])} clusters"),
        *([mo.callout(mo.md(_stale), kind="warn")] if _stale else [])])
    return frame, manifest, scores


@app.cell
def _(args, color_pick, frame):
    _fig, _ax = figure(frame, color_pick.value, size=560)
    _b = args.brush
    brush = mo.ui.matplotlib(_ax, value={"x": _b[:2], "y": _b[2:]} if _b else None,
                             debounce=True)
    plt.close(_fig)
    brush
    return (brush,)


@app.cell
def _(brush, frame):
    mask = np.asarray(brush.value.get_mask(frame["x"].to_numpy(), frame["y"].to_numpy()),
                      bool)
    brushed = frame[mask]
    if not brush.value:
        _msg = mo.callout(mo.md("Drag a box on the map (Shift+drag for a lasso) to see its "
                                "samples."), kind="neutral")
    elif brushed.empty:
        _msg = mo.callout(mo.md("**The brush holds no points.** Draw it over the map's "
                                "points."), kind="warn")
    else:
        _msg = mo.md(f"### {len(brushed):,} samples brushed "
                     f"({len(brushed) / len(frame):.1%} of the map)")
    _msg
    return brushed, mask


@app.cell
def _(brushed, scores, ws):
    mo.stop(brushed.empty)
    _show = brushed.head(24)
    _ids = list(_show["sample_id"])
    _thumbs, _caps = thumbnails(ws, _ids), captions(ws, _ids)
    mo.hstack([card(r.sample_id, _thumbs.get(r.sample_id), _caps[r.sample_id],
                    {c: getattr(r, c) for c in scores[:3]})
               for r in _show.itertuples()], wrap=True, gap=0.5)
    return


@app.cell
def _(brushed, frame, mask, scores):
    mo.stop(brushed.empty)
    _fig = histograms(frame, mask, scores[:4] or ["cluster"])
    plt.close(_fig)
    _fig
    return


@app.cell
def _(brushed, map_pick):
    mo.stop(brushed.empty)
    sel_name = mo.ui.text(value=f"brush-{map_pick.value}", label="selection name")
    overwrite = mo.ui.checkbox(label="replace a selection of that name")
    save = mo.ui.run_button(label="Save the brush as a selection")
    mo.hstack([sel_name, overwrite, save], justify="start")
    return overwrite, save, sel_name


@app.cell
def _(brush, brushed, map_pick, overwrite, save, sel_name, ws):
    mo.stop(not save.value)
    try:
        _r = save_brush(ws, sel_name.value, list(brushed["sample_id"]), map_pick.value,
                        geometry(brush.value), overwrite.value)
        _path = ws.selection(sel_name.value).parquet
        _out = mo.callout(mo.md(f"Saved **{_r.kept:,}** samples as selection "
                                f"`{sel_name.value}` (`{_path}`)."), kind="success")
    except CurateError as e:
        _out = mo.callout(mo.md(f"**Not saved.** {e}"), kind="danger")
    _out
    return


@app.cell(hide_code=True)
def _(scores):
    mo.md("## What would a threshold rule keep, per cluster?" if scores else
          "## Threshold rules\nNo scores yet: run `curate score NAME -w DIR` to add some.")
    return


@app.cell
def _(frame, scores):
    mo.stop(not scores)
    _ranges = {}
    for _c in scores[:6]:
        _v = frame[_c].dropna()
        if _v.empty or _v.min() == _v.max():
            continue
        _lo, _hi = float(_v.min()), float(_v.max())
        _ranges[_c] = mo.ui.range_slider(start=_lo, stop=_hi, step=(_hi - _lo) / 200,
                                         value=[_lo, _hi], label=_c, show_value=True)
    sliders = mo.ui.dictionary(_ranges)
    sliders.vstack()
    return (sliders,)


@app.cell
def _(frame, sliders, ws):
    _ranges = {c: tuple(v) for c, v in sliders.value.items()}
    _table = keep_by_cluster(frame, _ranges)
    _total = _table.iloc[-1]
    mo.vstack([
        mo.md(f"The rule keeps **{int(_total['kept']):,}** of {int(_total['samples']):,} "
              f"samples ({_total['kept_share']:.1%}). As a selection:\n\n"
              f"`curate select -w {ws.root} NAME where '{rule_sql(_ranges)}'`"),
        mo.ui.table(_table, selection=None, page_size=20)])
    return


if __name__ == "__main__":
    app.run()
