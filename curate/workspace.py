"""A workspace: a directory of Parquet parts, one folder per pass with a manifest, and a
``catalog.duckdb`` of views joined on ``sample_id`` (rebuildable from the Parquet at any time).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_WORKSPACE = "workspace"


class CurateError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits non-zero."""


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def write_json(obj: dict, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return Path(path)


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


MEMORY_LIMIT = "512MB"  # of the in-memory DuckDB that snapshots (exports, cards) query
_MEMORY_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None
_MEMORY_DB_LOCK = threading.Lock()
_SNAPSHOTS = itertools.count()


def memory_db() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB, made on first use (again in a forked child: DuckDB is
    not fork-safe). Making one costs ~20 ms (it builds its function catalog) and closing one
    ~12 ms (it stops its threads) on the dev VM, as much as a 28k-sample export's query."""
    global _MEMORY_DB
    with _MEMORY_DB_LOCK:
        if _MEMORY_DB is None or _MEMORY_DB[0] != os.getpid():
            _MEMORY_DB = (os.getpid(), duckdb.connect(config={
                "memory_limit": MEMORY_LIMIT,  # a sort or join beyond it spills to disk
                "temp_directory": str(Path(tempfile.gettempdir()) / "curate-duckdb")}))
        return _MEMORY_DB[1]


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


@dataclass(frozen=True)
class Workspace:
    """Paths and catalog of one workspace directory."""

    root: Path

    @classmethod
    def open(cls, root: str | Path, create: bool = False) -> Workspace:
        root = Path(root).expanduser().resolve()
        if create:
            (root / "samples").mkdir(parents=True, exist_ok=True)
        elif not (root / "samples").is_dir():
            raise CurateError(f"{root} is not a workspace (no samples/ folder); "
                              "run `curate ingest SOURCE -w DIR` first")
        return cls(root)

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def sample_parts(self) -> list[Path]:
        return sorted(self.samples_dir.glob("part-*.parquet"))

    def pass_dirs(self, kind: str) -> list[Path]:
        """Folders of a kind of pass output (``embeddings``, ``scores``) that hold a manifest."""
        base = self.root / kind
        return sorted(p.parent for p in base.glob("*/manifest.json")) if base.is_dir() else []

    def connect(self, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A connection to the catalog, rebuilt first so views see every part on disk."""
        if not read_only:
            con = duckdb.connect(str(self.catalog_path))
            self._build_views(con)
            return con
        self.refresh()
        return duckdb.connect(str(self.catalog_path), read_only=True)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the catalog's views over the Parquet on disk now, in a database of
        its own in the process's in-memory DuckDB (``memory_db``); it takes no lock on
        catalog.duckdb, so a long reader (an export) never blocks a writer. ``cursor`` gives
        another connection to it (for a second thread). Its database goes when it is left."""
        db, name = memory_db(), f"snapshot_{next(_SNAPSHOTS)}"
        with _MEMORY_DB_LOCK, db.cursor() as c:
            c.execute(f"ATTACH ':memory:' AS {name}")
        con = db.cursor()
        try:
            con.execute(f"USE {name}")
            self._build_views(con)
            yield con
        finally:
            con.close()
            with _MEMORY_DB_LOCK, db.cursor() as c:
                c.execute(f"DETACH {name}")

    def refresh(self) -> None:
        """Recreate the catalog's views from the Parquet on disk."""
        with duckdb.connect(str(self.catalog_path)) as con:
            self._build_views(con)

    def _build_views(self, con: duckdb.DuckDBPyConnection) -> None:
        def glob(d):
            return str(d / "part-*.parquet").replace("'", "''")
        views = {}
        if self.sample_parts():
            views["samples"] = f"SELECT * FROM read_parquet('{glob(self.samples_dir)}')"
        for d in self.pass_dirs("embeddings"):
            if any(d.glob("part-*.parquet")):
                m = read_json(d / "manifest.json")  # Parquet keeps no array size: cast
                casts = ", ".join(f"{c}::FLOAT[{int(m['dim'])}] AS {c}" for c in m["columns"]
                                  if c.endswith("_emb"))
                views[f"embeddings_{_ident(d.name)}"] = (
                    f"SELECT * REPLACE ({casts}) FROM read_parquet('{glob(d)}')")
        for d in self.pass_dirs("scores"):
            if any(d.glob("part-*.parquet")):
                views[f"scores_{_ident(d.name)}"] = f"SELECT * FROM read_parquet('{glob(d)}')"
        for name in view_names(con) - set(views) - {"pairs"}:
            con.execute(f'DROP VIEW IF EXISTS "{name}"')
        for name, sql in views.items():
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
        if "samples" in views:
            con.execute(f"CREATE OR REPLACE VIEW pairs AS {self._pairs_sql(views)}")

    def _pairs_sql(self, views: dict[str, str]) -> str:
        """Samples joined with every score pass's columns. A pass run with non-default
        parameters (key ``name--k=v``) gets its columns suffixed ``__k_v``; a name another
        pass already took gets ``__<pass key>``."""
        cols, joins = [], []
        taken = set(pq.read_schema(self.sample_parts()[0]).names)
        for i, d in enumerate(d for d in self.pass_dirs("scores")
                              if f"scores_{_ident(d.name)}" in views):
            suffix = "__" + _ident(d.name.split("--", 1)[1]) if "--" in d.name else ""
            for c in read_json(d / "manifest.json")["columns"]:
                name = c + suffix if c + suffix not in taken else f"{c}__{_ident(d.name)}"
                taken.add(name)
                cols.append(f', t{i}."{c}" AS "{name}"')
            joins.append(f' LEFT JOIN "scores_{_ident(d.name)}" AS t{i} USING (sample_id)')
        return "SELECT s.*" + "".join(cols) + " FROM samples AS s" + "".join(joins)

    def manifest(self, kind: str, key: str) -> dict | None:
        path = self.root / kind / key / "manifest.json"
        return read_json(path) if path.exists() else None


def _ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).lower()


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
