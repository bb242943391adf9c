"""The SQL sandbox: a locked in-memory DuckDB over one workspace, and the statement check.

Two walls, as DuckDB's "Securing DuckDB" page advises. ``check`` parses every statement before
any runs and lets through only reading ones: SELECT (``DESCRIBE``, ``SHOW``, ``SUMMARIZE``,
``FROM``, ``VALUES`` and ``WITH`` parse as SELECT), EXPLAIN [ANALYZE] of a statement that passes
the check itself, and PRAGMA or CALL of a short read-only allow-list. ``connect`` is DuckDB's own
wall: the views are built in memory (catalog.duckdb is never opened, so a reader never blocks a
writer) over Arrow datasets of the workspace's Parquet, so DuckDB itself needs no file access:
external access is off with no allowed directory, extensions are never installed or loaded,
nothing spills to a temp directory, no secrets are read, and the configuration is locked last.
Any file named in SQL (``read_text('/etc/passwd')``, ``glob('/root/*')``, ``COPY ... TO``,
``ATTACH``, even the workspace's own Parquet by path) is a DuckDB permission error, whatever the
SQL looks like and whether or not ``check`` ran, so the bare connection (a notebook's SQL cells,
a Python user) writes nothing and reads only what the views show. What such a user can still do
is change the connection's own in-memory database (``CREATE TABLE``, ``DROP VIEW``): it goes
with the connection and touches no file.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.workspace import Workspace, view_name

# PRAGMAs and CALLs that only read (sizes, schemas, versions); anything else is refused
READ_PRAGMAS = frozenset({"database_list", "database_size", "functions", "platform", "show",
                          "show_databases", "show_tables", "show_tables_expanded",
                          "storage_info", "table_info", "user_agent", "version"})
READ_CALLS = frozenset({"pragma_database_list", "pragma_database_size", "pragma_platform",
                        "pragma_show", "pragma_show_tables", "pragma_storage_info",
                        "pragma_table_info", "pragma_version", "pragma_user_agent"})
SETTINGS = {  # given at startup: what the database may do at all
    "autoinstall_known_extensions": False, "autoload_known_extensions": False,
    "allow_community_extensions": False, "allow_persistent_secrets": False}
WRITES = ("would change the workspace or write files, so nothing ran; write results with "
          "-o FILE")


def _refuse(what: str, why: str = WRITES) -> CurateError:
    return CurateError(f"read-only: {what} {why}")


def _only(allowed: frozenset[str]) -> str:
    return f"is not one that only reads ({', '.join(sorted(allowed))}), so nothing ran"


def _words(sql: str) -> list[tuple[int, str]]:
    """``(offset, text)`` of each token of ``sql`` (comments left out)."""
    toks = duckdb.tokenize(sql)
    ends = [t[0] for t in toks[1:]] + [len(sql)]
    return [(start, sql[start:end].strip()) for (start, kind), end in zip(toks, ends, strict=True)
            if kind != duckdb.token_type.comment]


def _split(sql: str) -> list[duckdb.Statement]:
    try:
        return duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise CurateError(f"cannot parse the SQL: {str(e).strip().splitlines()[0]}") from None


def _kind(stmt: duckdb.Statement) -> str:
    try:
        return stmt.type.name
    except ValueError:  # a statement type this duckdb module cannot name
        return "UNKNOWN"


def _explained(sql: str) -> str:
    """The statement an EXPLAIN [ANALYZE] [(options)] statement explains."""
    words = _words(sql)
    i = 1 + (len(words) > 1 and words[1][1].upper() in ("ANALYZE", "ANALYSE"))
    if i < len(words) and words[i][1] == "(":
        depth = 0
        for j in range(i, len(words)):
            depth += words[j][1].count("(") - words[j][1].count(")")
            if depth == 0:
                i = j + 1
                break
    if i >= len(words):
        raise _refuse("an EXPLAIN", "of nothing curate could check, so nothing ran")
    return sql[words[i][0]:]


def _check_one(stmt: duckdb.Statement) -> None:
    kind, words = _kind(stmt), _words(stmt.query)
    head = words[0][1].upper() if words else ""
    if kind == "SELECT":
        return
    if kind == "EXPLAIN" and head == "EXPLAIN":
        inner = _split(_explained(stmt.query))
        if len(inner) != 1:
            raise _refuse("an EXPLAIN of several statements", "is not checked, so nothing ran")
        try:
            _check_one(inner[0])
        except CurateError as e:
            raise CurateError(str(e).replace("read-only: ", "read-only: EXPLAIN of ", 1)) from None
        return
    if kind == "PRAGMA" and head == "PRAGMA":
        name = words[1][1].lower() if len(words) > 1 else ""
        if name in READ_PRAGMAS and not any(w == "=" for _, w in words[2:]):
            return
        raise _refuse(f"PRAGMA {name}", _only(READ_PRAGMAS))
    if kind == "CALL" and head == "CALL":
        name = words[1][1] if len(words) > 1 else ""
        if len(words) > 2 and words[2][1] == "(" and name.strip('"').lower() in READ_CALLS:
            return
        raise _refuse(f"CALL {name}", _only(READ_CALLS))
    if kind == "MULTI":
        raise _refuse("a PIVOT without an IN list", "makes types before it reads, so nothing "
                      "ran; name the values: PIVOT t ON col IN (v1, v2) USING ...")
    raise _refuse(f"a {head or kind} statement")


def check(sql: str) -> list[str]:
    """The statements of ``sql`` if every one only reads; else one line naming the first that
    does not, before anything runs (EXPLAIN is judged by what it explains)."""
    stmts = _split(sql)
    if not stmts:
        raise CurateError("no SQL statement given")
    for s in stmts:
        _check_one(s)
    return [s.query for s in stmts]


class _Datasets:
    """Arrow datasets of the workspace's Parquet, registered in ``con`` under names of their
    own: DuckDB reads them through Arrow, so it needs no file access at all."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con, self.count = con, 0

    def register(self, files: list[Path], by_name: bool = False) -> str:
        """The registered name of a dataset of ``files`` (columns matched by name: parts of
        different sources carry different metadata columns)."""
        schema = (pa.unify_schemas([pq.read_schema(f) for f in files],
                                   promote_options="permissive") if by_name and files else
                  pq.read_schema(files[0]) if files else None)
        if schema is not None:  # DuckDB reads no float16 through Arrow: read it as float32
            schema = pa.schema([f.with_type(_widened(f.type)) for f in schema],
                               metadata=schema.metadata)
        name = f"_parquet_{self.count}"
        self.count += 1
        self.con.register(name, ds.dataset([str(f) for f in files], schema=schema,
                                           format="parquet"))
        return name

    def scan(self, folder: Path, by_name: bool = False) -> str:
        """``Workspace.build_views``'s ``scan``: the parts of ``folder`` as they are now."""
        return f'"{self.register(sorted(folder.glob("part-*.parquet")), by_name)}"'


def _widened(t: pa.DataType) -> pa.DataType:
    """``t`` with float16 (``embed --dtype float16``'s vectors) as float32, which the dataset
    casts each part's values to as it reads them."""
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_widened(t.value_type), t.list_size)
    if pa.types.is_list(t):
        return pa.list_(_widened(t.value_type))
    return t


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _lookup(what: str, tables: dict[str, str]) -> str:
    """SQL for ``query_table``: the registered table of macro argument ``name``, or one line
    saying which names there are (a parameter never names anything but a workspace file)."""
    whens = "".join(f" WHEN name = {_literal(n)} THEN {_literal(t)}"
                    for n, t in sorted(tables.items()))
    there = _literal(f"' in this workspace (there are: {', '.join(sorted(tables)) or 'none'})")
    return (f"CASE WHEN name IS NULL THEN error('a {what} is named by text, not NULL'){whens} "
            f"ELSE error('no {what} ''' || name || {there}) END")


def _layout(con: duckdb.DuckDBPyConnection, ws: Workspace, data: _Datasets) -> None:
    """Views ``map_<name>`` and ``selection_<name>``, and table macros that find a selection's
    ids, drop log or map by name: ``selection(name)``, ``drop_log(name)`` (with
    ``file_row_number``: the order the rules dropped them) and ``map_points(name)``."""
    found: dict[str, dict[str, str]] = {"selection": {}, "drop_log": {}, "map_points": {}}
    for name in ws.map_names():
        found["map_points"][name] = data.register([ws.map_files(name).parquet])
    for name in ws.selection_names():
        sel = ws.selection(name)
        found["selection"][name] = data.register([sel.parquet])
        if sel.dropped.exists():
            found["drop_log"][name] = data.register([sel.dropped])
    for kind, macro in (("map", "map_points"), ("selection", "selection")):
        for name, table in found[macro].items():
            con.execute(f'CREATE VIEW "{view_name(kind, name)}" AS SELECT * FROM "{table}"')
    for macro, what, extra in (
            ("selection", "selection", ""),
            ("drop_log", "drop log of a selection",
             ", row_number() OVER () - 1 AS file_row_number"),  # a one-file scan keeps order
            ("map_points", "map", "")):
        con.execute(f"CREATE MACRO {macro}(name) AS TABLE SELECT *{extra} FROM "
                    f"query_table({_lookup(what, found[macro])})")


def connect(workspace: Workspace | str | Path) -> duckdb.DuckDBPyConnection:
    """A locked in-memory DuckDB with the workspace's views (``samples``, ``pairs``,
    ``embeddings_*``, ``scores_*``, ``map_*``, ``selection_*``) and macros (``selection``,
    ``drop_log``, ``map_points``) over Arrow datasets of the workspace's Parquet as it is now
    (connect again to see parts written since). DuckDB itself may touch no file: ``COPY``,
    ``ATTACH``, ``read_parquet`` or ``read_text`` of any path is a permission error."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    con = duckdb.connect(config=SETTINGS)
    try:
        con.execute("SET temp_directory = ''")  # a query beyond memory fails, never spills
        data = _Datasets(con)
        ws.build_views(con, data.scan)
        _layout(con, ws, data)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con
