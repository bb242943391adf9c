"""What the SQL notebooks need beyond ``curate sql``: a form per named query, its fields
filled with the query's documented defaults and, where a parameter names something of the
workspace (a selection, a map, a score column), the names that exist there to pick from. The
query still runs through ``run_sql``, the function ``curate sql`` calls, so the notebook and
the CLI bind, check and sandbox it the same way."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

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
