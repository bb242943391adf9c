"""``curate sql``: named or ad-hoc SQL over a workspace, in a sandbox that only reads it.

A named query is a file ``NAME.sql`` in the package's ``sql/`` folder (or in a folder the caller
passes as ``queries=``, ``curate sql --queries DIR``; a workspace's own ``sql/`` is never read,
so a received workspace cannot put a query behind a known name). Its header comment says what
it answers and which ``$parameters`` it takes, with defaults as ``$name (default VALUE)``.
Parameters are bound by DuckDB, never formatted into the SQL. ``text=`` embeds a phrase with the
model whose embeddings the query reads and binds it as ``$text_emb`` (and that model's
embeddings view name as ``$embeddings``, for ``query_table($embeddings)``), and registers the
table ``text_neighbours`` (``sample_id``, ``image_emb``): the ``$n`` (default 100) images
nearest the phrase, found through the model's index (``curate.ann``, ``curate index``) when it
is current, else by an exact scan.

Every statement is checked, then run on ``connect(ws)``: an in-memory DuckDB whose views read
the workspace's Parquet through Arrow, and which may open no file itself (``curate.sql.sandbox``
says how): files are reached only through the views and macros (``selection(name)``,
``drop_log(name)``, ``map_points(name)``).
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow as pa

from curate.errors import CurateError
from curate.files import atomic_path, read_json
from curate.sql.sandbox import check, connect
from curate.workspace import Workspace, model_key, view_name

PACKAGE_SQL = Path(__file__).resolve().parents[2] / "sql"
PARAM = re.compile(r"(?<![\w$])\$([A-Za-z_]\w*)")
DEFAULT = re.compile(r"\$([A-Za-z_]\w*)\s*\(default\s+([^)]*)\)")
FORMATS = ("table", "csv", "json", "parquet")

__all__ = ["FORMATS", "check", "connect", "execute", "format_table", "header", "named_queries",
           "parameters", "resolve", "run_sql", "value", "write_result"]


def named_queries(ws: Workspace | None = None, queries: str | Path | None = None
                  ) -> dict[str, Path]:
    """Every named query by name: the ``*.sql`` files of ``queries`` if given, else of the
    package's ``sql/``. ``ws`` is accepted for callers that pass it; its ``sql/`` is not read."""
    folder = PACKAGE_SQL if queries is None else Path(queries).expanduser()
    if not folder.is_dir():
        raise CurateError(f"--queries {folder}: no such folder of named queries (*.sql)")
    return {p.stem: p for p in sorted(folder.glob("*.sql"))}


def header(path: Path) -> str:
    """The leading ``--`` comment of a named query, without the dashes."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines)


def resolve(ws: Workspace, query_or_name: str, queries: str | Path | None = None
            ) -> tuple[str, str, dict[str, str]]:
    """(label, SQL text, parameter defaults) of a named query, a .sql file or SQL text."""
    named = named_queries(ws, queries)
    if query_or_name in named:
        path = named[query_or_name]
    elif query_or_name.endswith(".sql") and Path(query_or_name).is_file():
        path = Path(query_or_name)
    elif re.fullmatch(r"[\w.-]+", query_or_name):
        raise CurateError(f"no named query {query_or_name!r}; named queries: "
                          f"{', '.join(named) or 'none'} (or give SQL text)")
    else:
        return "query", query_or_name, {}
    return path.stem, path.read_text(), dict(DEFAULT.findall(header(path)))


def value(text: str) -> Any:
    """A parameter given as text, as DuckDB should see it: integer, float, or string."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return text


def parameters(sql: str) -> list[str]:
    """The ``$names`` ``sql`` binds, in order of first use (comments and strings left out)."""
    return list(dict.fromkeys(PARAM.findall(re.sub(r"--[^\n]*|'[^']*'", "", sql))))


def _text_embedding(ws: Workspace, sql: str, text: str, model: str | None
                    ) -> tuple[dict[str, Any], str, str]:
    """Bind ``$text_emb`` (the phrase's embedding) and ``$embeddings`` (the view of the model's
    embeddings); returns the parameters, the SQL with ``$text_emb`` cast to ``FLOAT[d]`` and
    the model's name."""
    from curate import models

    views = {view_name("embeddings", d.name): d for d in ws.pass_dirs("embeddings")}
    if model is None:
        used = [v for v in views if v in sql]
        names = {read_json(views[v] / "manifest.json")["model"]["name"] for v in used or views}
        if len(names) != 1:
            raise CurateError("--text: say which model embeds the phrase with --model "
                              f"(embeddings here: {', '.join(sorted(names)) or 'none'})")
        model = names.pop()
    view = view_name("embeddings", model_key(model))
    if view not in views:
        raise CurateError(f"--text: no embeddings of {model!r} in {ws.root}; run "
                          f"`curate embed -w {ws.root} --model {model}` first")
    import torch

    m = models.load(model)
    with torch.no_grad():
        vec = m.model.encode_text(m.tokenizer([text]))[0].float().tolist()
    sql = re.sub(r"\$text_emb\b(?!\s*::)", f"CAST($text_emb AS FLOAT[{len(vec)}])", sql)
    return {"text_emb": vec, "embeddings": view}, sql, model


def text_neighbours(ws: Workspace, model: str, vec: list[float], n: int) -> pa.Table:
    """``text_neighbours``: the ``n`` image embeddings nearest ``vec`` (``curate.ann.search``),
    with the stored vectors, so the query computes its cosines from them."""
    from curate import ann
    t = ann.search(ws, model, vec, n, with_embedding=True)
    return pa.table({"sample_id": t["sample_id"], "image_emb": t["embedding"]})


def _error(label: str, e: duckdb.Error) -> CurateError:
    line = str(e).strip().splitlines()[0]
    if isinstance(e, duckdb.PermissionException):
        line += ("; SQL here names no file: it reads the workspace through its views and "
                 "macros (selection(name), drop_log(name), map_points(name))")
    return CurateError(f"{label}: {line}")


def execute(con: duckdb.DuckDBPyConnection, sql: str, values: dict[str, Any] | None = None,
            label: str = "query") -> pa.Table:
    """Check every statement of ``sql``, then run them on ``con`` (a ``connect`` sandbox),
    each bound to the ``values`` it uses; the last statement's result."""
    values, result = values or {}, None
    for stmt in check(sql):
        wanted = sorted(set(parameters(stmt)))
        missing = [w for w in wanted if w not in values]
        if missing:
            hint = " (--text PHRASE binds $text_emb and $embeddings)" if {
                "text_emb", "embeddings"} & set(missing) else ""
            raise CurateError(f"{label} needs --param {missing[0]}=VALUE{hint}; its "
                              f"parameters: {', '.join('$' + w for w in wanted)}")
        try:
            rel = con.sql(stmt, params={k: values[k] for k in wanted} or None)
            result = rel.to_arrow_table() if rel is not None else None
        except duckdb.Error as e:
            raise _error(label, e) from None
    return result if result is not None else pa.table({})


def run_sql(workspace: str | Path, query_or_name: str, params: dict[str, str] | None = None,
            text: str | None = None, model: str | None = None,
            queries: str | Path | None = None) -> pa.Table:
    """Run a named query (from ``queries`` or the package's ``sql/``), a .sql file or SQL text
    in the workspace's sandbox and return the last statement's result."""
    ws = Workspace.open(workspace)
    label, sql, defaults = resolve(ws, query_or_name, queries)
    takes = parameters(sql)
    unknown = sorted(set(params or {}) - set(takes))
    if unknown:
        raise CurateError(f"{label} takes no parameter {unknown[0]!r} (its parameters: "
                          f"{', '.join('$' + p for p in sorted(takes)) or 'none'})")
    values: dict[str, Any] = {k: value(v) for k, v in {**defaults, **(params or {})}.items()}
    check(sql)  # refused before anything runs, and before --text loads a model
    near = None
    if text is not None:
        bound, sql, model = _text_embedding(ws, sql, text, model)
        values.update(bound)
        n = values.get("n", 100)
        near = text_neighbours(ws, model, bound["text_emb"], n if isinstance(n, int) else 100)
    con = connect(ws)
    try:
        if near is not None:
            con.register("text_neighbours", near)
        return execute(con, sql, values, label)
    finally:
        con.close()


def _cell(v: Any) -> str:
    if isinstance(v, list):
        head = ", ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in v[:3])
        return f"[{head}{', …' if len(v) > 3 else ''}] ({len(v)})"
    if isinstance(v, float):
        return f"{v:.4g}"
    s = "" if v is None else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def format_table(t: pa.Table, max_rows: int = 50) -> str:
    """A plain fixed-width table of the first ``max_rows`` rows (vectors shortened)."""
    rows = t.slice(0, max_rows).to_pylist()
    cells = [list(t.column_names)] + [[_cell(r[c]) for c in t.column_names] for r in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(t.column_names))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    more = t.num_rows - len(rows)
    return "\n".join(lines + ([f"... {more} more rows (-o FILE writes all)"] if more else [])
                     + [f"({t.num_rows} rows)"])


def _flat(t: pa.Table) -> pa.Table:
    """Nested columns (vectors, structs) as JSON text, for CSV."""
    for i, f in enumerate(t.schema):
        if pa.types.is_nested(f.type):
            t = t.set_column(i, f.name, pa.array(
                [None if v is None else json.dumps(v) for v in t.column(i).to_pylist()]))
    return t


def write_result(t: pa.Table, fmt: str = "table", out: str | Path | None = None,
                 stream: TextIO = sys.stdout) -> None:
    """Print ``t`` (table, csv, json lines) or write it to ``out`` (any format)."""
    if fmt not in FORMATS:
        raise CurateError(f"--format {fmt!r}: use {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise CurateError("--format parquet needs -o FILE")
        import pyarrow.parquet as pq
        with atomic_path(out) as tmp:
            pq.write_table(t, tmp, compression="zstd")
        return
    if fmt == "table":
        text = format_table(t) + "\n"
    elif fmt == "csv":
        import pyarrow.csv as pcsv
        buf = io.BytesIO()
        pcsv.write_csv(_flat(t), buf)
        text = buf.getvalue().decode()
    else:
        text = "".join(json.dumps(r, default=str) + "\n" for r in t.to_pylist())
    if out is None:
        stream.write(text)
        return
    with atomic_path(out) as tmp:
        tmp.write_text(text)
