"""The SQL sandbox: a locked in-memory DuckDB over one workspace, and the statement check.

Two walls, as DuckDB's "Securing DuckDB" page advises. ``check`` parses every statement before
any runs and lets through only reading ones: SELECT (``DESCRIBE``, ``SHOW``, ``SUMMARIZE``,
``FROM``, ``VALUES`` and ``WITH`` parse as SELECT), EXPLAIN [ANALYZE] of a statement that passes
the check itself, and PRAGMA or CALL of a short read-only allow-list. ``connect`` is DuckDB's own
wall: the views are built in memory (catalog.duckdb is never opened, so a reader never blocks a
writer), external access is off with the workspace root as the only allowed directory,
extensions are never installed or loaded, nothing spills to a temp directory, no secrets are
read, and the configuration is locked last. A file outside the workspace
(``read_text('/etc/passwd')``, ``glob('/root/*')``, another workspace's Parquet, a symlink out
of it) is a DuckDB permission error, whatever the SQL looks like.

DuckDB's allowed directories can be written as well as read, so a COPY or ATTACH into the
workspace is stopped by ``check`` alone: code handed the bare connection (a notebook's SQL
cells, a Python user) can read only the workspace but should run others' SQL through ``check``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from curate.catalog import duck_path
from curate.errors import CurateError
from curate.workspace import NAME, Workspace, view_name

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


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _name_sql(what: str) -> str:
    """SQL that yields macro argument ``name`` if ``check_name`` would accept it, else fails
    with check_name's line: a parameter never walks out of the folder it names a file in."""
    why = f"{what} ''' || name || ''': use letters, digits, ''_'', ''-'', ''.'' (not first), " \
          "at most 128 characters"
    return (f"CASE WHEN regexp_full_match(name, '{NAME.pattern}') THEN name "
            f"ELSE error('{why}') END")


def _layout(con: duckdb.DuckDBPyConnection, ws: Workspace) -> None:
    """Views ``map_<name>`` and ``selection_<name>``, and table macros that find a selection's
    ids, drop log or map by name: ``selection(name)``, ``drop_log(name)`` (with
    ``file_row_number``: the order the rules dropped them) and ``map_points(name)``."""
    for name in ws.map_names():
        con.execute(f'CREATE VIEW "{view_name("map", name)}" AS SELECT * FROM '
                    f"read_parquet('{_quote(duck_path(ws.map_files(name).parquet))}')")
    for name in ws.selection_names():
        con.execute(f'CREATE VIEW "{view_name("selection", name)}" AS SELECT * FROM '
                    f"read_parquet('{_quote(duck_path(ws.selection(name).parquet))}')")
    like = ws.selection("NAME")  # the layout's folders, as the workspace builds them
    for macro, folder, what, extra in (
            ("selection", like.parquet.parent, "selection name", ""),
            ("drop_log", like.dropped.parent, "selection name", ", file_row_number = true"),
            ("map_points", ws.map_files("NAME").parquet.parent, "map name", "")):
        con.execute(f"CREATE MACRO {macro}(name) AS TABLE SELECT * FROM read_parquet("
                    f"'{_quote(duck_path(folder))}/' || {_name_sql(what)} || '.parquet'{extra})")


def connect(workspace: Workspace | str | Path) -> duckdb.DuckDBPyConnection:
    """A locked in-memory DuckDB with the workspace's views (``samples``, ``pairs``,
    ``embeddings_*``, ``scores_*``, ``map_*``, ``selection_*``) and macros (``selection``,
    ``drop_log``, ``map_points``), reading only files under the workspace root."""
    ws = workspace if isinstance(workspace, Workspace) else Workspace.open(workspace)
    con = duckdb.connect(config=SETTINGS)
    try:
        con.execute("SET temp_directory = ''")  # a query beyond memory fails, never spills
        con.execute("SET allowed_directories = $d", {"d": sorted({  # as given, and as escaped
            str(ws.root).rstrip("/") + "/", duck_path(ws.root).rstrip("/") + "/"})})
        con.execute("SET enable_external_access = false")
        ws.build_views(con)
        _layout(con, ws)
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con
