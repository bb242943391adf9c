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
    from curate.maps.brush import histograms, keep_by_cluster, rule_sql
    from curate.maps.explore import cards, inside, numeric_useful, save, useful_columns
    from curate.maps.frames import colour_columns, score_columns
    from curate.maps.render import figure
    from curate.maps.search import by_phrase, more_like
    from curate.maps.widget import MapWidget
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
    Every sample of the workspace on its UMAP map, drawn in the browser (WebGL): pan, zoom,
    hover for a card. Pick **box** or **lasso** and drag to brush a region: its samples as
    cards, their scores against the pool, threshold rules to refine it and a button to save
    it as a selection appear below. The brush stays when you colour the map by another
    column or switch maps; search rings what it finds.
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
def _(args, frame, maps, ws):
    # made once per workspace: a map or colour change goes to this widget, which keeps its
    # selection (the samples on both maps, when the map changes)
    w = MapWidget(ws, map_name=args.map if args.map in maps else maps[0])
    if args.brush:  # start with this box brushed, as if drawn (headless runs)
        w.select(frame["sample_id"][inside(frame, {"type": "box", "x": args.brush[:2],
                                                   "y": args.brush[2:]})].tolist())
    choices = [c for c in w.color_choices() if c in useful_columns(frame) or c == "cluster"]
    color_pick = mo.ui.dropdown(choices, value=args.color if args.color in choices
                                else "cluster", label="colour by")
    _note = None if args.color in choices else mo.callout(mo.md(
        f"No column `{args.color}` to colour by in this workspace; colouring by cluster. "
        "Columns: " + ", ".join(f"`{c}`" for c in choices)), kind="warn")
    mapw = mo.ui.anywidget(w)
    mo.vstack([mo.hstack([color_pick], justify="start"), *([_note] if _note else []), mapw,
               mo.md("<small>**pan** drags and zooms (wheel), **box** and **lasso** brush, "
                     "**clear** empties the brush; hover a point for its card.</small>")])
    return choices, color_pick, mapw, w


@app.cell
def _(color_pick, map_pick, w):
    try:  # the widget recolours (or switches maps) in place: the brush stays
        w.map_name = map_pick.value
        w.color = color_pick.value
        _out = None
    except CurateError as e:
        _out = danger("Cannot recolour the map.", e)
    _out
    return


@app.cell
def _():
    # the brushed sample ids, apart from the widget: the cells below rerun when they change,
    # not on every hover or pan the widget syncs
    get_brush, set_brush = mo.state(None)
    return get_brush, set_brush


@app.cell
def _(get_brush, mapw, set_brush, w):
    _ = mapw.value  # rerun on every change the browser sends
    _ids = w.selected_ids
    if _ids != get_brush():
        set_brush(_ids)
    return


@app.cell
def _(frame, get_brush):
    kept = get_brush() or []
    mask = frame["sample_id"].isin(kept).to_numpy()
    brushed = frame[mask]
    if not kept:
        _msg = mo.callout(mo.md("Choose **box** or **lasso** on the map and drag over it to "
                                "brush a region and see its samples."), kind="neutral")
    elif brushed.empty:
        _msg = mo.callout(mo.md("**The brush holds no points of this map.** Draw it over "
                                "the map's points."), kind="warn")
    else:
        _msg = mo.md(f"### {len(brushed):,} samples brushed "
                     f"({len(brushed) / len(frame):.1%} of the map)")
    _msg
    return brushed, mask


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


@app.cell
def _():
    phrase = mo.ui.text(label="images like the phrase", placeholder="a red circle",
                        full_width=True)
    like = mo.ui.text(label="or more like sample", placeholder="a sample_id (on its card)")
    k = mo.ui.number(start=1, stop=10_000, value=48, label="results")
    search_btn = mo.ui.run_button(label="Search")
    mo.vstack([mo.md("## Search the map"), phrase, mo.hstack([like, k, search_btn],
                                                               justify="start")])
    return k, like, phrase, search_btn


@app.cell
def _(frame, k, like, map_pick, phrase, scores, search_btn, w, ws):
    mo.stop(not search_btn.value or not (phrase.value.strip() or like.value.strip()),
            mo.md("Type a phrase (or a sample id) and press **Search**: the results are "
                  "ringed on the map and shown here."))
    try:
        hits = (more_like(ws, like.value.strip(), int(k.value), map_pick.value)
                if like.value.strip() else by_phrase(ws, map_pick.value, phrase.value,
                                                     int(k.value)))
        _on = w.highlight(hits["sample_id"].tolist())
        _found = frame.merge(hits[["sample_id", "score"]], on="sample_id")
        _grid = cards(ws, _found, "score", True, 0, int(k.value), ["score", *scores[:2]])
        _what = f"more like `{like.value.strip()}`" if like.value.strip() else \
            f"images like *{phrase.value}*"
        _out = mo.vstack([mo.md(f"**{len(hits):,} {_what}** ({_on:,} on this map, ringed)"),
                          mo.Html(_grid._repr_html_())])
    except CurateError as e:
        _out = danger("Cannot search.", e)
    _out
    return


@app.cell
def _():
    static = mo.ui.checkbox(label="also draw the static picture (datashader, as `curate "
                            "render` draws it)")
    static
    return (static,)


@app.cell
def _(color_pick, frame, static):
    mo.stop(not static.value)
    _fig, _ = figure(frame, color_pick.value, size=560)
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
def _(brushed, map_pick, overwrite, ranges, refine, save_btn, sel_name, ws):
    mo.stop(not save_btn.value)
    _ids = brushed["sample_id"]
    _rule = rule_sql(ranges) if refine.value and ranges else None
    if _rule:
        _keep = np.ones(len(brushed), bool)
        for _c, (_lo, _hi) in ranges.items():
            _v = brushed[_c].to_numpy(dtype=float)
            _keep &= (_v >= _lo) & (_v <= _hi)
        _ids = _ids[_keep]
    _kind, _text = save(ws, sel_name.value, _ids.tolist(), map_pick.value, None,
                        overwrite.value, _rule)
    mo.callout(mo.md(_text), kind=_kind)
    return


if __name__ == "__main__":
    app.run()
