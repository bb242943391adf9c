"""A map's points with any columns of the workspace, for rendering and notebooks.

Notebooks read through ``catalog``: an in-memory DuckDB connection holding the workspace's
views (``samples``, ``pairs``, ``embeddings_*``, ``scores_*``) plus ``map_<name>`` and
``selection_<name>``, built over the Parquet directly, so a notebook left open never holds a
lock on ``catalog.duckdb`` that would block a pass writing.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from curate.catalog import duck_path, view_names
from curate.errors import CurateError
from curate.maps.io import list_maps, read_manifest
from curate.workspace import Workspace, view_name

MAP_COLUMNS = ("sample_id", "x", "y", "cluster", "cluster_label")


def catalog(ws: Workspace) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the workspace's views, maps and selections."""
    con = duckdb.connect()
    ws.build_views(con)  # the catalog's own view definitions, over the same Parquet
    for name in list_maps(ws):
        con.execute(f'CREATE VIEW "{view_name("map", name)}" AS SELECT * FROM read_parquet('
                    f"'{_quote(duck_path(ws.map_files(name).parquet))}')")
    for path in sorted(ws.selections_dir.glob("*.parquet")):  # a hand-made one too
        con.execute(f'CREATE VIEW "{view_name("selection", path.stem)}" AS SELECT * FROM '
                    f"read_parquet('{_quote(duck_path(path))}')")
    return con


def _quote(path: object) -> str:
    return str(path).replace("'", "''")


def pair_columns(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """``{column: DuckDB type}`` of the ``pairs`` view."""
    return {r[0]: r[1] for r in con.execute("DESCRIBE pairs").fetchall()}


def colour_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Columns a map can be coloured by: numbers, booleans and short strings of ``pairs``."""
    skip = {"sample_id", "image_path", "image_offset", "image_length", "caption", "error",
            "url", "key", "sha256", "source"}
    out = []
    for c, t in pair_columns(con).items():
        if c in skip or "[" in t or t.startswith(("STRUCT", "MAP", "BLOB")):
            continue
        out.append(c)
    return ["cluster", *out]


NUMERIC = ("DOUBLE", "FLOAT", "REAL", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "HUGEINT",
           "UBIGINT", "UINTEGER", "USMALLINT", "UTINYINT")


def score_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Numeric columns that scoring passes added to ``pairs`` (not the samples' own)."""
    own = {r[0] for r in con.execute("DESCRIBE samples").fetchall()}
    return [c for c, t in pair_columns(con).items()
            if c not in own and (t in NUMERIC or t.startswith("DECIMAL"))]


def load_points(ws: Workspace, name: str, columns: list[str] | tuple[str, ...] = (),
                con: duckdb.DuckDBPyConnection | None = None) -> pd.DataFrame:
    """The map's points (``sample_id, x, y, cluster, cluster_label``) with ``columns`` of ``pairs``;
    points whose sample left the workspace are dropped (``check_map`` counts them)."""
    read_manifest(ws, name)  # a missing map fails here with what to do
    own = con is None
    con = con or catalog(ws)
    try:
        have = pair_columns(con)
        extra = [c for c in dict.fromkeys(columns) if c not in MAP_COLUMNS]
        missing = [c for c in extra if c not in have]
        if missing:
            raise CurateError(f"no column {', '.join(map(repr, missing))} in this workspace; "
                              f"columns: {', '.join(colour_columns(con))}")
        sel = "".join(f', p."{c}"' for c in extra)
        try:
            return con.execute(f"SELECT m.sample_id, m.x, m.y, m.cluster, m.cluster_label{sel}"
                               " FROM read_parquet($m) m JOIN pairs p USING (sample_id) "
                               "ORDER BY m.cluster, m.sample_id",
                               {"m": duck_path(ws.map_files(name).parquet)}).df()
        except duckdb.Error as e:
            raise CurateError(f"cannot read map {name!r} ({str(e).splitlines()[0]}); make it "
                              f"again with `curate map -w {ws.root} --name {name}`") from None
    finally:
        if own:
            con.close()


def check_map(ws: Workspace, name: str, con: duckdb.DuckDBPyConnection | None = None
              ) -> str | None:
    """None if the map covers exactly the samples it should; otherwise what changed and
    what to run."""
    m = read_manifest(ws, name)
    key, kind = m["embedding"]["model"], m["embedding"]["kind"]
    view = view_name("embeddings", key)
    own = con is None
    con = con or catalog(ws)
    try:
        if view not in view_names(con):
            return (f"map {name!r} was made from embeddings/{key}, which are gone; run "
                    f"`curate embed` and `curate map -w {ws.root} --name {name}` again")
        ok = "" if kind == "text" else "WHERE e.status = 'ok'"
        gone, new, unembedded = con.execute(f"""
            WITH m AS (SELECT sample_id FROM read_parquet($m)),
                 e AS (SELECT e.sample_id FROM "{view}" e {ok}),
                 s AS (SELECT sample_id FROM samples WHERE status = 'ok')
            SELECT (SELECT count(*) FROM m ANTI JOIN s USING (sample_id)),
                   (SELECT count(*) FROM e ANTI JOIN m USING (sample_id)),
                   (SELECT count(*) FROM s ANTI JOIN "{view}" USING (sample_id))""",
                                            {"m": duck_path(ws.map_files(name).parquet)}).fetchone()
    finally:
        if own:
            con.close()
    if not (gone or new or unembedded):
        return None
    parts = [f"{gone:,} of its samples are gone"] if gone else []
    parts += [f"{new:,} samples are not on it"] if new else []
    parts += [f"{unembedded:,} samples have no embeddings yet"] if unembedded else []
    todo = "`curate embed`, then " if unembedded else ""
    return (f"the samples changed since map {name!r} was made ({m['points']:,} points): "
            f"{'; '.join(parts)}. Run {todo}`curate map -w {ws.root} --name {name}` to "
            "redraw it.")
