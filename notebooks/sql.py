# ruff: noqa: B018, F841  (marimo: a cell shows its last expression; SQL cells name results)
import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="curate: SQL")

with app.setup:
    import argparse
    import os
    import sys

    import marimo as mo
    import polars as pl

    import curate
    from curate.errors import CurateError
    from curate.maps.brush import thumbnails
    from curate.sql import header, named_queries, parameters, resolve, run_sql
    from curate.workspace import Workspace

    BOUND = ("text_emb", "embeddings")  # bound from a phrase (--text), not typed in


@app.function
def cli_args() -> argparse.Namespace:
    """`marimo run notebooks/sql.py -- -w DIR [--sql-dir DIR]`"""
    ap = argparse.ArgumentParser(prog="sql.py")
    ap.add_argument("-w", "--workspace", default=os.environ.get("CURATE_WORKSPACE", "workspace"),
                    help="workspace (default: $CURATE_WORKSPACE or ./workspace)")
    ap.add_argument("--sql-dir", default=None,
                    help="named queries from this folder (default: the package's sql/, as "
                    "`curate sql`; never the workspace's own)")
    return ap.parse_known_args(sys.argv[1:])[0]


@app.function
def with_thumbnails(ws: Workspace, df: object, limit: int = 50) -> object:
    """A result as a table; with a ``sample_id`` column its first rows get thumbnails."""
    import polars as pl

    if not isinstance(df, pl.DataFrame) or "sample_id" not in df.columns or df.is_empty():
        return mo.ui.table(df, selection=None) if df is not None else mo.md("(no rows)")
    head = df.head(limit)
    thumbs = thumbnails(ws, head["sample_id"].to_list(), size=64)
    rows = []
    for r in head.iter_rows(named=True):
        t = thumbs.get(r["sample_id"])
        drop = [k for k, v in r.items() if isinstance(v, list | bytes)]  # vectors, blobs
        rows.append({"thumbnail": mo.image(t, width=64) if t else "",
                     **{k: v for k, v in r.items() if k not in drop}})
    note = f"first {limit:,} of {df.height:,} rows" if df.height > limit else f"{df.height} rows"
    return mo.vstack([mo.md(f"<small>{note}</small>"),
                      mo.ui.table(rows, selection=None, page_size=10)])


@app.cell(hide_code=True)
def _():
    mo.md("""
    # SQL over a workspace
    The workspace's views (`samples`, `pairs` = samples + every score, `embeddings_<model>`,
    `scores_<pass>`, `map_<name>`, `selection_<name>`) and macros (`selection(name)`,
    `drop_log(name)`, `map_points(name)`) in `curate.connect(ws)`: an in-memory DuckDB
    sandbox that reads the Parquet directly and nothing outside the workspace, and never
    opens `catalog.duckdb`, so passes can write while it is open. Named queries run as
    `curate sql` runs them: every statement checked first, only reading ones run.
    """)
    return


@app.cell
def _():
    args = cli_args()
    try:
        ws, ws_error = Workspace.open(args.workspace), None
    except CurateError as e:
        ws, ws_error = None, str(e)
    mo.stop(ws is None, mo.callout(mo.md(f"**Cannot open the workspace.** {ws_error}"),
                                   kind="danger"))
    con = curate.connect(ws)
    _views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                         "ORDER BY 1").fetchall()
    mo.md(f"`{ws.root}`: " + ", ".join(f"`{v}`" for (v,) in _views))
    return args, con, ws


@app.cell
def _(args, ws):
    try:
        queries, _error = named_queries(ws, queries=args.sql_dir), None
    except CurateError as e:
        queries, _error = {}, str(e)
    query_pick = mo.ui.dropdown(list(queries), value=next(iter(queries), None),
                                label="named query")
    mo.vstack([mo.md("## Named queries"), query_pick] if queries else
              [mo.md(f"## Named queries\n{_error or 'No `*.sql` files.'}")])
    return queries, query_pick


@app.cell
def _(args, queries, query_pick, ws):
    mo.stop(not query_pick.value)
    _, _sql, _defaults = resolve(ws, query_pick.value, args.sql_dir)
    _typed = [p for p in parameters(_sql) if p not in BOUND]
    params = mo.ui.dictionary({p: mo.ui.text(value=_defaults.get(p, ""), label=p)
                               for p in _typed})
    phrase = mo.ui.text(label="phrase (binds $text_emb)") if "text_emb" in parameters(
        _sql) else None
    needs = phrase is not None or any(p not in _defaults for p in _typed)
    run_query = mo.ui.run_button(label="Run")
    mo.vstack([mo.md(f"```\n{header(queries[query_pick.value])}\n```"), params,
               *([phrase] if phrase is not None else []), run_query])
    return needs, params, phrase, run_query


@app.cell
def _(args, needs, params, phrase, query_pick, run_query, ws):
    mo.stop(needs and not run_query.value, mo.md("Fill in the parameters and press **Run**."))
    try:
        _res = run_sql(ws.root, query_pick.value,
                       {k: v for k, v in params.value.items() if v != ""},
                       text=phrase.value if phrase is not None else None,
                       queries=args.sql_dir)
        _out = with_thumbnails(ws, pl.from_arrow(_res))
    except CurateError as e:  # a query's error (or refusal) is shown, not raised
        _out = mo.callout(mo.md(f"**The query failed.** {e}"), kind="danger")
    _out
    return


@app.cell(hide_code=True)
def _():
    mo.md(r"""
    ## SQL cells
    Edit these or add your own (`mo.sql(f"...", engine=con)`); results are Polars frames.
    """)
    return


@app.cell
def _(con):
    status = mo.sql(
        """
        SELECT status, count(*) AS samples, count(DISTINCT source) AS sources
        FROM samples GROUP BY ALL ORDER BY samples DESC
        """,
        engine=con,
    )
    return


@app.cell
def _(con):
    longest = mo.sql(
        """
        SELECT sample_id, caption, length(caption) AS chars
        FROM pairs WHERE status = 'ok' ORDER BY chars DESC LIMIT 20
        """,
        engine=con,
        output=False,
    )
    return (longest,)


@app.cell
def _(longest, ws):
    with_thumbnails(ws, longest)
    return


if __name__ == "__main__":
    app.run()
