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
    from curate.sql import execute, header, named_queries, run_sql
    from curate.sql.notebook import form
    from curate.workspace import Workspace


@app.function
def cli_args() -> argparse.Namespace:
    """`marimo run notebooks/sql.py -- -w DIR [--sql-dir DIR] [--query NAME]`"""
    ap = argparse.ArgumentParser(prog="sql.py")
    ap.add_argument("-w", "--workspace", default=os.environ.get("CURATE_WORKSPACE", "workspace"),
                    help="workspace (default: $CURATE_WORKSPACE or ./workspace)")
    ap.add_argument("--sql-dir", default=None,
                    help="named queries from this folder (default: the package's sql/, as "
                    "`curate sql`; never the workspace's own)")
    ap.add_argument("--query", default=None, help="the named query picked first")
    ap.add_argument("--text", default="", help="the phrase for similar_to_text")
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


@app.function
def field(f: object) -> object:
    """A form field: a dropdown where the workspace says what the value can be."""
    if f.choices:
        return mo.ui.dropdown(list(f.choices), value=f.default or f.choices[0], label=f.name)
    return mo.ui.text(value=f.default, label=f.name,
                      placeholder="(none in this workspace yet)" if f.choices is not None
                      else "")


@app.cell(hide_code=True)
def _():
    mo.md("""
    # SQL over a workspace
    The workspace's views (`samples`, `pairs` = samples + every score, `embeddings_<model>`,
    `scores_<pass>`, `map_<name>`, `selection_<name>`) and macros (`selection(name)`,
    `drop_log(name)`, `map_points(name)`) in `curate.connect(ws)`: an in-memory DuckDB
    sandbox that reads the Parquet directly and nothing outside the workspace, and never
    opens `catalog.duckdb`, so passes can write while it is open. Named queries and the SQL
    box run as `curate sql` runs them: every statement checked first, only reading ones run.
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
    query_pick = mo.ui.dropdown(list(queries), value=args.query if args.query in queries
                                else next(iter(queries), None), label="named query")
    mo.vstack([mo.md("## Named queries"), query_pick] if queries else
              [mo.md("## Named queries"), mo.callout(mo.md(_error or "No `*.sql` files."),
                                                     kind="warn")])
    return queries, query_pick


@app.cell
def _(args, con, queries, query_pick, ws):
    mo.stop(not query_pick.value)
    query_form = form(ws, con, query_pick.value, args.sql_dir)
    params = mo.ui.dictionary({f.name: field(f) for f in query_form.fields})
    phrase = mo.ui.text(value=args.text, label="phrase (embedded with the model whose "
                        "embeddings the query reads; binds $text_emb)", full_width=True) \
        if query_form.phrase else None
    run_query = mo.ui.run_button(label="Run")
    mo.vstack([mo.md(f"```\n{header(queries[query_pick.value])}\n```"), params,
               *([phrase] if phrase is not None else []), run_query])
    return params, phrase, query_form, run_query


@app.cell
def _(args, params, phrase, query_form, query_pick, run_query, ws):
    _ready = query_form.complete() or (phrase is not None and phrase.value.strip()
                                       and all(v for v in params.value.values()))
    mo.stop(not (_ready or run_query.value),
            mo.md("Fill in the parameters and press **Run**."))
    try:
        _res = run_sql(ws.root, query_pick.value,
                       {k: v for k, v in params.value.items() if v not in ("", None)},
                       text=phrase.value if phrase is not None and phrase.value else None,
                       queries=args.sql_dir)
        result = pl.from_arrow(_res)
        _out = mo.vstack([mo.md(f"`{query_pick.value}`: **{result.height:,} rows**"),
                          with_thumbnails(ws, result)])
    except CurateError as e:  # a query's error (or refusal) is shown, not raised
        result, _out = None, mo.callout(mo.md(f"**The query failed.** {e}"), kind="danger")
    _out
    return (result,)


@app.cell(hide_code=True)
def _():
    mo.md("""
    ## Your own SQL
    Checked and run as `curate sql -w WS "SQL"` runs it (reading statements only).
    """)
    return


@app.cell
def _():
    adhoc = mo.ui.code_editor(value="SELECT source, count(*) AS samples\nFROM samples "
                              "GROUP BY ALL ORDER BY samples DESC", language="sql",
                              label="SQL")
    run_adhoc = mo.ui.run_button(label="Run the SQL")
    mo.vstack([adhoc, run_adhoc])
    return adhoc, run_adhoc


@app.cell
def _(adhoc, con, run_adhoc, ws):
    mo.stop(not run_adhoc.value, mo.md("Press **Run the SQL**."))
    try:
        adhoc_result = pl.from_arrow(execute(con, adhoc.value, label="your SQL"))
        _out = mo.vstack([mo.md(f"your SQL: **{adhoc_result.height:,} rows**"),
                          with_thumbnails(ws, adhoc_result)])
    except CurateError as e:
        adhoc_result, _out = None, mo.callout(mo.md(f"**The SQL failed.** {e}"), kind="danger")
    _out
    return (adhoc_result,)


@app.cell(hide_code=True)
def _():
    mo.md(r"""
    ## SQL cells
    In `marimo edit`, edit these or add your own (`mo.sql(f"...", engine=con)`); results are
    Polars frames.
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
