"""``curate sql``: named or ad-hoc SQL over a workspace's catalog, on a read-only connection.

A named query is a file ``sql/NAME.sql`` (the workspace's own ``sql/`` first, then the one this
package ships) whose header comment says what it answers and which ``$parameters`` it takes,
with defaults as ``$name (default VALUE)``. Parameters are bound by DuckDB, never formatted into
the SQL. ``text=`` embeds a phrase with the model whose embeddings the query reads and binds it
as ``$text_emb`` (and that model's embeddings view name as ``$embeddings``, for
``query_table($embeddings)``), so "the samples most like this phrase" is one command. Relative
paths in the SQL (``read_parquet('selections/x.parquet')``) resolve against the workspace.
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
from curate.workspace import Workspace

PACKAGE_SQL = Path(__file__).resolve().parents[1] / "sql"
READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA", "CALL"}
PARAM = re.compile(r"(?<![\w$])\$([A-Za-z_]\w*)")
DEFAULT = re.compile(r"\$([A-Za-z_]\w*)\s*\(default\s+([^)]*)\)")
FORMATS = ("table", "csv", "json", "parquet")


def sql_dirs(ws: Workspace | None = None) -> list[Path]:
    return [d for d in ([ws.root / "sql"] if ws else []) + [PACKAGE_SQL] if d.is_dir()]


def named_queries(ws: Workspace | None = None) -> dict[str, Path]:
    """Every named query, by name (a workspace's own ``sql/`` wins over the package's)."""
    found: dict[str, Path] = {}
    for d in reversed(sql_dirs(ws)):
        found.update({p.stem: p for p in sorted(d.glob("*.sql"))})
    return dict(sorted(found.items()))


def header(path: Path) -> str:
    """The leading ``--`` comment of a named query, without the dashes."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines)


def resolve(ws: Workspace, query_or_name: str) -> tuple[str, str, dict[str, str]]:
    """(label, SQL text, parameter defaults) of a named query, a .sql file or SQL text."""
    named = named_queries(ws)
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


def _value(text: str) -> Any:
    """A --param value as DuckDB should see it: integer, float, or string."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", text):
        return float(text)
    return text


def _statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements of ``sql``; any that could write is refused before anything runs."""
    try:
        stmts = con.extract_statements(sql)
    except duckdb.Error as e:
        raise CurateError(f"cannot parse the SQL: {str(e).splitlines()[0]}") from None
    if not stmts:
        raise CurateError("no SQL statement given")
    for s in stmts:
        kind = str(s.type).rsplit(".", 1)[-1]
        if kind not in READ_ONLY:
            raise CurateError(f"read-only: a {kind} statement would change the "
                              "workspace or write files, so nothing ran; write results with "
                              "-o FILE, or open catalog.duckdb yourself to make tables")
    return [s.query for s in stmts]


def _ident(name: str) -> str:
    """A pass folder's name as the catalog spells its view (as ``Workspace`` does)."""
    return "".join(c if c.isalnum() else "_" for c in name).lower()


def _params(sql: str) -> set[str]:
    """The ``$names`` a statement uses (comments and string literals left out)."""
    return set(PARAM.findall(re.sub(r"--[^\n]*|'[^']*'", "", sql)))


def _text_embedding(ws: Workspace, sql: str, text: str, model: str | None
                    ) -> tuple[dict[str, Any], str]:
    """Bind ``$text_emb`` (the phrase's embedding) and ``$embeddings`` (the view of the model's
    embeddings); returns the parameters and the SQL with ``$text_emb`` cast to ``FLOAT[d]``."""
    from curate import models
    from curate.workspace import model_key

    keys = {_ident(d.name): d for d in ws.pass_dirs("embeddings")}
    if model is None:
        used = [k for k in keys if f"embeddings_{k}" in sql]
        names = {read_json(keys[k] / "manifest.json")["model"]["name"] for k in used or keys}
        if len(names) != 1:
            raise CurateError("--text: say which model embeds the phrase with --model "
                              f"(embeddings here: {', '.join(sorted(names)) or 'none'})")
        model = names.pop()
    key = _ident(model_key(model))
    if key not in keys:
        raise CurateError(f"--text: no embeddings of {model!r} in {ws.root}; run "
                          f"`curate embed -w {ws.root} --model {model}` first")
    import torch

    m = models.load(model)
    with torch.no_grad():
        vec = m.model.encode_text(m.tokenizer([text]))[0].float().tolist()
    sql = re.sub(r"\$text_emb\b(?!\s*::)", f"CAST($text_emb AS FLOAT[{len(vec)}])", sql)
    return {"text_emb": vec, "embeddings": f"embeddings_{key}"}, sql


def run_sql(workspace: str | Path, query_or_name: str, params: dict[str, str] | None = None,
            text: str | None = None, model: str | None = None) -> pa.Table:
    """Run a named query, a .sql file or SQL text on a read-only connection to the catalog
    (its views rebuilt first) and return the last statement's result."""
    ws = Workspace.open(workspace)
    label, sql, defaults = resolve(ws, query_or_name)
    unknown = sorted(set(params or {}) - _params(sql))
    if unknown:
        raise CurateError(f"{label} takes no parameter {unknown[0]!r} (its parameters: "
                          f"{', '.join('$' + p for p in sorted(_params(sql))) or 'none'})")
    given = {**defaults, **(params or {})}
    values: dict[str, Any] = {k: _value(v) for k, v in given.items()}
    if text is not None:
        bound, sql = _text_embedding(ws, sql, text, model)
        values.update(bound)
    con = ws.connect(read_only=True)
    try:
        con.execute("SET file_search_path = $p", {"p": str(ws.root)})
        result = None
        for stmt in _statements(con, sql):
            wanted = _params(stmt)
            missing = sorted(wanted - set(values))
            if missing:
                hint = " (--text PHRASE binds $text_emb and $embeddings)" if {
                    "text_emb", "embeddings"} & set(missing) else ""
                raise CurateError(f"{label} needs --param {missing[0]}=VALUE{hint}; its "
                                  f"parameters: {', '.join('$' + w for w in sorted(wanted))}")
            try:
                result = con.sql(stmt, params={k: values[k] for k in wanted} or None)
                result = result.to_arrow_table() if result is not None else None
            except duckdb.Error as e:
                raise CurateError(f"{label}: {str(e).strip().splitlines()[0]}") from None
    finally:
        con.close()
    return result if result is not None else pa.table({})


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
