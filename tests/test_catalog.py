"""The catalog holds views only: writers rebuild it in a fresh file renamed into place, so a
client holding it open never breaks a writer, and readers never open it at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

from curate.ingest import ingest
from curate.workspace import Workspace
from tests import badinput

HOLD = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)  # the README's own reader
print(con.execute("SELECT count(*) FROM samples").fetchone()[0], flush=True)
sys.stdin.readline()
print(con.execute("SELECT count(*) FROM samples").fetchone()[0], flush=True)
"""


def _shard(path: Path, colour: tuple[int, int, int]) -> Path:
    return badinput.write_tar(path, [("a.jpg", badinput.jpeg(colour)), ("a.txt", b"a square"),
                                     ("b.jpg", badinput.jpeg(colour[::-1])),
                                     ("b.txt", b"another square")])


def test_a_reader_holding_the_catalog_never_breaks_a_writer(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ingest([str(_shard(tmp_path / "one.tar", (200, 0, 0)))], ws, progress=False)
    reader = subprocess.Popen([sys.executable, "-c", HOLD, str(ws / "catalog.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "2"
        # a second writer while the reader holds the file open
        r = ingest([str(_shard(tmp_path / "two.tar", (0, 0, 200)))], ws, progress=False)
        assert r.ok == 2
        with Workspace.open(ws).connect() as con:  # a reader of curate's: no file opened
            assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 4
        with duckdb.connect(str(ws / "catalog.duckdb"), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 4
        out, _ = reader.communicate("\n", timeout=60)
        assert out.strip() == "4"  # the holder reads on: its views read the Parquet on disk
    finally:
        reader.kill()
    assert not [p.name for p in ws.iterdir() if p.name.startswith(".catalog")]


def test_a_garbage_catalog_is_replaced_by_the_next_write(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ingest([str(_shard(tmp_path / "one.tar", (200, 0, 0)))], ws, progress=False)
    (ws / "catalog.duckdb").write_bytes(b"garbage" * 1000)
    (ws / "catalog.duckdb.wal").write_bytes(b"a stale log")
    with Workspace.open(ws).connect() as con:  # readers do not need it at all
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 2
    ingest([str(_shard(tmp_path / "two.tar", (0, 0, 200)))], ws, progress=False)
    with duckdb.connect(str(ws / "catalog.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 4
    assert not (ws / "catalog.duckdb.wal").exists()
