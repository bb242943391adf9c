"""The DuckDB plumbing under the workspace's views: the process's one in-memory database and
its snapshots, cursors for a second thread, and paths escaped for DuckDB's file readers (they
glob every path they are given). Pure of the workspace's layout: ``workspace`` builds on it."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb

MEMORY_LIMIT = "512MB"  # of the in-memory DuckDB that snapshots (exports, cards) query
_MEMORY_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None
_MEMORY_DB_LOCK = threading.Lock()
_NAMES = itertools.count()


def memory_db() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB, made on first use (again in a forked child: DuckDB is
    not fork-safe). Making one costs ~20 ms (it builds its function catalog) and closing one
    ~12 ms (it stops its threads) on the dev VM, as much as a 28k-sample export's query."""
    global _MEMORY_DB
    with _MEMORY_DB_LOCK:
        if _MEMORY_DB is None or _MEMORY_DB[0] != os.getpid():
            _MEMORY_DB = (os.getpid(), duckdb.connect(config={
                "memory_limit": MEMORY_LIMIT,  # a sort or join beyond it spills to disk
                "temp_directory": str(_spill_dir())}))
        return _MEMORY_DB[1]


def _spill_dir() -> Path:
    """Where DuckDB spills a sort or join larger than ``MEMORY_LIMIT``."""
    return Path(tempfile.gettempdir()) / "curate-duckdb"


def view_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The views of the database ``con`` uses (not those of other snapshots)."""
    return {r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal "
        "AND database_name = current_database()").fetchall()}


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Another connection to the database ``con`` uses (a snapshot's: its views)."""
    db = con.execute("SELECT current_database()").fetchall()[0][0]
    cur = con.cursor()
    cur.execute(f'USE "{db}"')
    return cur


def connection() -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB with the memory limit and spill folder of ``memory_db``."""
    return duckdb.connect(config={"memory_limit": MEMORY_LIMIT,
                                  "temp_directory": str(_spill_dir())})


def unique() -> int:
    """A number no other call in this process returns (for temporary names)."""
    return next(_NAMES)


@contextlib.contextmanager
def attached() -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to a database of its own in ``memory_db`` (``cursor`` gives a second one);
    the database is detached when the block is left."""
    db, name = memory_db(), f"snapshot_{unique()}"
    with _MEMORY_DB_LOCK, db.cursor() as c:
        c.execute(f"ATTACH ':memory:' AS {name}")
    con = db.cursor()
    try:
        con.execute(f"USE {name}")
        yield con
    finally:
        con.close()
        with _MEMORY_DB_LOCK, db.cursor() as c:
            c.execute(f"DETACH {name}")


def duck_path(path: str | Path) -> str:
    """``path`` as DuckDB's file readers take it literally: they glob every path they are
    given, so ``[``, ``?`` and ``*`` become one-character classes (``ws[1]`` would match
    ``ws1``; ``{ }`` and ``\\`` are literal to DuckDB already). For a ``$parameter``; quote
    it (``duck_files``) to put it in SQL text."""
    return (str(path).replace("[", "[[]").replace("?", "[?]").replace("*", "[*]"))


def duck_files(paths: list[Path]) -> str:
    """A SQL list literal of ``paths`` for ``read_parquet``: each escaped (``duck_path``) and
    quoted, so it reads exactly these files whatever characters their paths hold."""
    return "[" + ", ".join(_literal(duck_path(p)) for p in paths) + "]"


def parts(folder: Path) -> str:
    """A SQL literal of the glob of ``folder``'s ``part-*.parquet``, the folder escaped
    (``duck_path``): only the part names are a pattern."""
    return _literal(duck_path(folder) + "/part-*.parquet")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
