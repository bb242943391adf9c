"""Snapshots: each sees its own workspace's views, as the Parquet is when it opens."""

from __future__ import annotations

import threading
from pathlib import Path

from curate.catalog import cursor, memory_db
from curate.catalog import view_names as _views
from curate.workspace import Workspace


def test_snapshots_are_isolated_and_go_when_left(ingested: Path, embedded: Path) -> None:
    a, b = Workspace.open(ingested), Workspace.open(embedded)
    with a.snapshot() as ca, b.snapshot() as cb:
        assert "pairs" in _views(ca) and not any(v.startswith("embeddings_") for v in _views(ca))
        assert any(v.startswith("embeddings_") for v in _views(cb))  # b's own views
        rows = ca.execute("SELECT count(*) FROM samples").fetchall()[0][0]
        assert rows == cb.execute("SELECT count(*) FROM samples").fetchall()[0][0] == 600
        other = cursor(cb)  # a second connection, for another thread: the same views
        got = []
        t = threading.Thread(target=lambda: got.append(_views(other)))
        t.start()
        t.join()
        other.close()
        assert got == [_views(cb)]
        dbs = {r[0] for r in memory_db().execute(
            "SELECT database_name FROM duckdb_databases()").fetchall()}
        assert {ca.execute("SELECT current_database()").fetchall()[0][0],
                cb.execute("SELECT current_database()").fetchall()[0][0]} <= dbs
    left = {r[0] for r in memory_db().execute(
        "SELECT database_name FROM duckdb_databases()").fetchall()}
    assert not any(d.startswith("snapshot_") for d in left)
