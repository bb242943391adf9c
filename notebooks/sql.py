# ruff: noqa: B018, F841  (marimo: a cell shows its last expression; SQL cells name results)
import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="curate: SQL")

with app.setup:
    import argparse
    import os
    import re
    import sys
    from pathlib import Path

    import duckdb
    import marimo as mo

    from curate.errors import CurateError
    from curate.maps import catalog
    from curate.maps.brush import thumbnails
    from curate.workspace import Workspace


@app.function
def cli_args() -> argparse.Namespace:
    """`marimo run notebooks/sql.py -- -w DIR [--sql-dir sql/]`"""
    ap = argparse.ArgumentParser(prog="sql.py")
    ap.add_argument("-w", "--workspace", default=os.environ.get("CURATE_WORKSPACE", "workspace"),
                    help="workspace (default: $CURATE_WORKSPACE or ./workspace)")
    ap.add_argument("--sql-dir", default=None, help="named queries (default: the repo's sql/)")
    return ap.parse_known_args(sys.argv[1:])[0]


@app.function
def named_queries(folder: Path) -> dict[str, str]:
    """``{name: SQL}`` of every ``*.sql`` file in ``folder``."""
    return {p.stem: p.read_text() for p in sorted(folder.glob("*.sql"))}


@app.function
def header(sql: str) -> str:
    """A named query's leading comment: what it answers and which parameters it takes."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines)


@app.function
def parameters(sql: str) -> list[str]:
    """The ``$name`` parameters a query binds (comments and strings ignored)."""
    body = re.sub(r"--[^\n]*|'(?:[^']|'')*'", "", sql)
    return list(dict.fromkeys(re.findall(r"\$([A-Za-z_]\w*)", body)))


@app.function
def value(text: str) -> object:
    """A parameter typed in a text box, as a number when it looks like one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


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
    `scores_<pass>`, `map_<name>`, `selection_<name>`) in an in-memory DuckDB that reads
    the Parquet directly: this notebook never locks `catalog.duckdb`, so passes can write
    while it is open.
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
    con = catalog(ws)
    _views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal "
                         "ORDER BY 1").fetchall()
    mo.md(f"`{ws.root}`: " + ", ".join(f"`{v}`" for (v,) in _views))
    return args, con, ws


@app.cell
def _(args):
    _folder = Path(args.sql_dir) if args.sql_dir else mo.notebook_dir().parent / "sql"
    queries = named_queries(_folder) if _folder.is_dir() else {}
    query_pick = mo.ui.dropdown(list(queries), value=next(iter(queries), None),
                                label="named query")
    mo.vstack([mo.md("## Named queries"), query_pick] if queries else
              [mo.md(f"## Named queries\nNo `*.sql` files in `{_folder}`.")])
    return queries, query_pick


@app.cell
def _(queries, query_pick):
    mo.stop(not query_pick.value)
    _sql = queries[query_pick.value]
    params = mo.ui.dictionary({p: mo.ui.text(label=p) for p in parameters(_sql)})
    run_query = mo.ui.run_button(label="Run")
    mo.vstack([mo.md(f"```\n{header(_sql)}\n```"), params, run_query])
    return params, run_query


@app.cell
def _(con, params, queries, query_pick, run_query, ws):
    _sql = queries[query_pick.value]
    mo.stop(parameters(_sql) and not run_query.value,
            mo.md("Fill in the parameters and press **Run**."))
    try:
        _res = con.sql(_sql, params={k: value(v) for k, v in params.value.items()} or None)
        _out = with_thumbnails(ws, _res.pl() if _res is not None else None)
    except duckdb.Error as e:  # a query's error is shown, not raised
        _out = mo.callout(mo.md(f"**The query failed.** {str(e).splitlines()[0]}"),
                          kind="danger")
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
