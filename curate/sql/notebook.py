"""What the SQL notebooks need beyond ``curate sql``: a form per named query, its fields
filled with the query's documented defaults and, where a parameter names something of the
workspace (a selection, a map, a score column), the names that exist there to pick from. The
query still runs through ``run_sql``, the function ``curate sql`` calls, so the notebook and
the CLI bind, check and sandbox it the same way."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from curate.maps.frames import score_columns
from curate.sql import parameters, resolve
from curate.workspace import Workspace

BOUND = ("text_emb", "embeddings")  # bound from a phrase (--text), never typed in


@dataclass(frozen=True)
class Field:
    """One parameter of a named query as a form field: its default (``""``: none) and, when
    the workspace says what it can be, the values to choose from."""

    name: str
    default: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Form:
    """A named query's form: its typed fields and whether it takes a phrase (``--text``)."""

    fields: tuple[Field, ...]
    phrase: bool

    def complete(self) -> bool:
        """Whether every field has a value before the user types anything."""
        return not self.phrase and all(f.default for f in self.fields)


def choices(ws: Workspace, con: duckdb.DuckDBPyConnection, param: str) -> list[str] | None:
    """What a parameter called ``param`` can be in this workspace (None: free text)."""
    if param == "selection":
        return ws.selection_names()
    if param == "map":
        return ws.map_names()
    if param == "column":
        return score_columns(con)
    return None


def form(ws: Workspace, con: duckdb.DuckDBPyConnection, name: str,
         queries: str | None = None) -> Form:
    """The form of named query ``name``: a field per ``$parameter`` it binds (the phrase
    ones aside), each defaulting to the header's default where the workspace has it, else to
    the first of what it has."""
    _, sql, defaults = resolve(ws, name, queries)
    fields = []
    for p in parameters(sql):
        if p in BOUND:
            continue
        opts = choices(ws, con, p)
        default = defaults.get(p, "")
        if opts and default not in opts:
            default = opts[0]  # the documented default is not in this workspace: one that is
        fields.append(Field(p, default or (opts[0] if opts else ""),
                            tuple(opts) if opts is not None else None))
    return Form(tuple(fields), "text_emb" in parameters(sql))


def result_html(ws: Workspace, table: pa.Table, title: str, limit: int = 50) -> str:
    """A query's result as an HTML table for Jupyter (``title``, then its first ``limit``
    rows); with a ``sample_id`` column each row gets the sample's thumbnail. Vectors and
    blobs are left out, every value is escaped."""
    from curate.maps.brush import thumbnails

    n = table.num_rows
    keep = [f.name for f in table.schema if not (pa.types.is_binary(f.type)
            or pa.types.is_large_binary(f.type) or pa.types.is_list(f.type)
            or pa.types.is_fixed_size_list(f.type) or pa.types.is_large_list(f.type))]
    rows = table.slice(0, limit).select(keep).to_pylist()
    ids = [r["sample_id"] for r in rows] if "sample_id" in keep else []
    thumbs = thumbnails(ws, [i for i in ids if i is not None], size=64) if ids else {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (["thumbnail"] if ids else []) + keep)
    body = []
    for r in rows:
        cells = []
        if ids:
            t = thumbs.get(r["sample_id"])
            cells.append("<td>" + (f'<img src="data:image/jpeg;base64,'
                                   f'{base64.b64encode(t).decode()}" width="64">' if t else "")
                         + "</td>")
        cells += [f"<td>{html.escape(str(r[c]))}</td>" for c in keep]
        body.append("<tr>" + "".join(cells) + "</tr>")
    shown = f" (first {limit:,} shown)" if n > limit else ""
    return (f'<p class="curate-result"><b>{html.escape(title)}: {n:,} rows</b>{shown}</p>'
            f'<table class="curate-table"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")
