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
    from curate.maps import catalog, check_map, list_maps, load_points, read_manifest
    from curate.maps.brush import geometry, histograms, keep_by_cluster, rule_sql
    from curate.maps.explore import cards, inside, numeric_useful, save, useful_columns
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
def danger(title: str, error: object) -> object:
    return mo.callout(mo.md(f"**{title}** {error}"), kind="danger")


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Explore a map
    Every sample of the workspace on its UMAP map. **Drag** a box (or **Shift+drag** a
    lasso) to brush a region: its samples as cards, their scores against the pool, threshold
    rules to refine it and a button to save it as a selection appear below. The brush stays
    when you colour the map by another column or switch maps.
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
    mo.stop(ws is None, danger("Cannot open the workspace.", ws_error))
    maps = list_maps(ws)
    mo.stop(not maps, mo.callout(mo.md(
        f"**No map yet** in `{ws.root}`. Make one with `curate map -w {ws.root}` "
        "(or the *map* step of `notebooks/loop.py`), then reload."), kind="warn"))
    con = catalog(ws)
    return con, maps, ws


@app.cell
def _(args, maps):
    map_pick = mo.ui.dropdown(maps, value=args.map if args.map in maps else maps[0],
                              label="map")
    map_pick
    return (map_pick,)


@app.cell
def _(con, map_pick, ws):
    scores = score_columns(con)
    try:
        frame, load_error = load_points(ws, map_pick.value, colour_columns(con)[1:], con), None
    except CurateError as e:
        frame, load_error = None, e
    mo.stop(frame is None, danger("Cannot load the map.", load_error))
    manifest = read_manifest(ws, map_pick.value)
    _stale = check_map(ws, map_pick.value, con)
    mo.vstack([
        mo.md(f"**{map_pick.value}**: {len(frame):,} points, {manifest['embedding']['kind']} "
              f"embeddings of `{manifest['embedding']['model']}`, UMAP fitted on "
              f"{manifest['sample']:,}, {len(manifest['clusters'])} clusters"),
        *([mo.callout(mo.md(_stale), kind="warn")] if _stale else [])])
    return frame, scores


@app.cell
def _(args, frame):
    choices = useful_columns(frame)
    color_pick = mo.ui.dropdown(choices, value=args.color if args.color in choices
                                else "cluster", label="colour by")
    _note = None if args.color in choices else mo.callout(mo.md(
        f"No column `{args.color}` to colour by in this workspace; colouring by cluster. "
        "Columns: " + ", ".join(f"`{c}`" for c in choices)), kind="warn")
    clear = mo.ui.button(value=0, label="Clear the brush", on_click=lambda n: n + 1)
    mo.vstack([mo.hstack([color_pick, clear], justify="start"), *([_note] if _note else [])])
    return clear, color_pick


@app.cell
def _(args):
    # the brush outlives the picture: {"map", "shape", "ids"}; a colour or map change redraws
    # the map, and the brush comes back from here
    get_brush, set_brush = mo.state(
        {"map": None, "shape": {"type": "box", "x": args.brush[:2], "y": args.brush[2:]},
         "ids": None} if args.brush else None)
    return get_brush, set_brush


@app.cell
def _(clear, set_brush):
    if clear.value:
        set_brush(None)
    return


@app.cell
def _(color_pick, frame, get_brush, map_pick):
    _kept = get_brush()
    _shape = _kept and _kept["shape"]
    _here = _kept is not None and _kept["map"] in (None, map_pick.value)
    _fig, _ax = figure(frame, color_pick.value, size=560)
    if _kept and not (_here and _shape and _shape["type"] == "box"):
        # a lasso (or a brush from another map) cannot be redrawn as a box: show its points
        _pts = frame[kept_mask(frame, _kept, map_pick.value)]
        _ax.scatter(_pts["x"], _pts["y"], s=4, facecolors="none", edgecolors="black",
                    linewidths=0.4)
    brush = mo.ui.matplotlib(
        _ax, value={"x": _shape["x"], "y": _shape["y"]} if _here and _shape and
        _shape["type"] == "box" else None, debounce=True)
    plt.close(_fig)
    brush
    return (brush,)


@app.function
def kept_mask(frame: object, kept: dict | None, map_name: str) -> np.ndarray:
    """The points of ``frame`` the kept brush holds: by geometry on its own map, else by id."""
    if not kept:
        return np.zeros(len(frame), bool)
    if kept["map"] in (None, map_name) and kept["shape"]:
        return inside(frame, kept["shape"])
    return frame["sample_id"].isin(kept["ids"] or []).to_numpy()


@app.cell
def _(brush, frame, get_brush, map_pick, set_brush):
    _shape = geometry(brush.value)
    _old = get_brush()
    if _shape is not None and (_old is None or _old["shape"] != _shape
                               or _old["map"] != map_pick.value):
        _m = np.asarray(brush.value.get_mask(frame["x"].to_numpy(), frame["y"].to_numpy()),
                        bool)
        set_brush({"map": map_pick.value, "shape": _shape,
                   "ids": frame["sample_id"][_m].tolist()})
    return


@app.cell
def _(frame, get_brush, map_pick):
    kept = get_brush()
    mask = kept_mask(frame, kept, map_pick.value)
    brushed = frame[mask]
    if not kept:
        _msg = mo.callout(mo.md("Drag a box on the map (Shift+drag for a lasso) to see its "
                                "samples."), kind="neutral")
    elif brushed.empty:
        _msg = mo.callout(mo.md("**The brush holds no points.** Draw it over the map's "
                                "points."), kind="warn")
    else:
        _msg = mo.md(f"### {len(brushed):,} samples brushed "
                     f"({len(brushed) / len(frame):.1%} of the map)")
    _msg
    return brushed, kept, mask


@app.cell
def _(brushed, frame, scores):
    mo.stop(brushed.empty)
    _num = numeric_useful(frame)
    sort_pick = mo.ui.dropdown(["(map order)", *_num],
                               value=scores[0] if scores and scores[0] in _num else
                               "(map order)", label="sort cards by")
    descending = mo.ui.checkbox(value=False, label="highest first")
    page = mo.ui.number(start=1, stop=max(1, -(-len(brushed) // 24)), value=1, label="page")
    mo.hstack([sort_pick, descending, page], justify="start")
    return descending, page, sort_pick


@app.cell
def _(brushed, descending, page, scores, sort_pick, ws):
    try:
        _grid = cards(ws, brushed, None if sort_pick.value == "(map order)" else
                      sort_pick.value, descending.value, int(page.value) - 1,
                      scores=list(dict.fromkeys(
                          [*([sort_pick.value] if sort_pick.value in brushed else []),
                           *scores]))[:3])
        _out = mo.Html(_grid._repr_html_())
    except CurateError as e:
        _out = danger("Cannot show the cards.", e)
    _out
    return


@app.cell
def _(brushed, frame, scores):
    mo.stop(brushed.empty)
    _num = numeric_useful(frame)
    hist_pick = mo.ui.multiselect(_num, value=[c for c in scores if c in _num][:4] or _num[:4],
                                  label="histograms of")
    hist_pick
    return (hist_pick,)


@app.cell
def _(brushed, frame, hist_pick, mask):
    mo.stop(brushed.empty or not hist_pick.value)
    _fig = histograms(frame, mask, list(hist_pick.value))
    plt.close(_fig)
    _fig
    return


@app.cell(hide_code=True)
def _(scores):
    mo.md("## Refine with a threshold rule\nWhat the rule keeps per cluster, of the whole map "
          "(and of the brush, if you save it refined)." if scores else
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
    ranges = {c: tuple(v) for c, v in sliders.value.items()}
    _table = keep_by_cluster(frame, ranges)
    _total = _table.iloc[-1]
    mo.vstack([
        mo.md(f"The rule keeps **{int(_total['kept']):,}** of {int(_total['samples']):,} "
              f"samples ({_total['kept_share']:.1%}). As a selection:\n\n"
              f"`curate select -w {ws.root} NAME where '{rule_sql(ranges)}'`"),
        mo.ui.table(_table, selection=None, page_size=20)])
    return (ranges,)


@app.cell
def _(brushed, map_pick):
    mo.stop(brushed.empty)
    sel_name = mo.ui.text(value=f"brush-{map_pick.value}", label="selection name")
    overwrite = mo.ui.checkbox(label="replace a selection of that name")
    refine = mo.ui.checkbox(label="only the brushed samples the rule keeps")
    save_btn = mo.ui.run_button(label="Save the brush as a selection")
    mo.vstack([mo.md("## Save"), mo.hstack([sel_name, overwrite, refine, save_btn],
                                           justify="start")])
    return overwrite, refine, save_btn, sel_name


@app.cell
def _(brushed, kept, map_pick, overwrite, ranges, refine, save_btn, sel_name, ws):
    mo.stop(not save_btn.value)
    _ids = brushed["sample_id"]
    _rule = rule_sql(ranges) if refine.value and ranges else None
    if _rule:
        _keep = np.ones(len(brushed), bool)
        for _c, (_lo, _hi) in ranges.items():
            _v = brushed[_c].to_numpy(dtype=float)
            _keep &= (_v >= _lo) & (_v <= _hi)
        _ids = _ids[_keep]
    _kind, _text = save(ws, sel_name.value, _ids.tolist(), kept["map"] or map_pick.value,
                        kept["shape"] if kept["map"] in (None, map_pick.value) else None,
                        overwrite.value, _rule)
    mo.callout(mo.md(_text), kind=_kind)
    return


if __name__ == "__main__":
    app.run()
