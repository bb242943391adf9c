"""Hostile paths and input: glob characters in workspace and source paths, non-regular files,
oversized images, a lying sidecar. Every input is a row (inputs = ok + failed + present) and
nothing is a traceback."""

from __future__ import annotations

import io
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.errors import CurateError
from curate.ingest import ingest
from curate.workspace import Workspace


def _png(seed: int, size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(
        out, "PNG")
    return out.getvalue()


def _folder(path: Path, n: int, first: int = 0) -> Path:
    """A folder source of ``n`` captioned PNGs, distinct from any other ``first``."""
    path.mkdir(parents=True)
    for i in range(first, first + n):
        (path / f"img{i}.png").write_bytes(_png(i))
        (path / f"img{i}.txt").write_text(f"a picture number {i}")
    return path


def _rows(ws: Path) -> list[dict]:
    return [r for p in Workspace.open(ws).sample_parts() for r in pq.read_table(p).to_pylist()]


@pytest.mark.parametrize("odd", ["ws[1]", "w?", "w*", "w{a,b}"])
def test_a_workspace_with_glob_characters_reads_only_its_own_parts(tmp_path: Path,
                                                                  odd: str) -> None:
    neighbour = {"ws[1]": "ws1", "w?": "wx", "w*": "wxyz", "w{a,b}": "wa"}[odd]
    ingest([str(_folder(tmp_path / "src_a", 3))], tmp_path / neighbour, progress=False)
    ingest([str(_folder(tmp_path / "src_b", 5, first=10))], tmp_path / odd, progress=False)
    ws = Workspace.open(tmp_path / odd)
    with ws.connect() as con:
        assert con.execute("SELECT count(*) FROM samples").fetchall() == [(5,)]
        assert con.execute("SELECT count(*) FROM pairs").fetchall() == [(5,)]
    with duckdb.connect(str(ws.catalog_path), read_only=True) as con:  # the catalog file too
        assert con.execute("SELECT count(*) FROM samples").fetchall() == [(5,)]
    with ws.snapshot() as con:
        assert con.execute("SELECT count(*) FROM samples").fetchall() == [(5,)]


def test_every_verb_reads_only_its_own_workspace_beside_a_glob_twin(tmp_path: Path) -> None:
    """ws[1] beside ws1, both with a selection of the same name: score, select, sql (the
    sandbox and its macros), export and card all see ws[1]'s five samples, never ws1's three."""
    import curate
    from curate.cards import write_card
    from curate.export import export
    from curate.passes.score import score
    from curate.select import select
    from curate.sql import run_sql
    for name, n, first in (("ws1", 3, 0), ("ws[1]", 5, 10)):
        ws = tmp_path / name
        ingest([str(_folder(tmp_path / f"src_{n}", n, first))], ws, progress=False)
        score(ws, "text_stats", progress=False)
        select(ws, "all", [("where", {"expr": "n_words > 0"})])
    odd = tmp_path / "ws[1]"
    con = curate.connect(odd)
    assert con.execute("SELECT count(*) FROM pairs").fetchall() == [(5,)]
    assert con.execute("SELECT count(*) FROM selection('all')").fetchall() == [(5,)]
    assert con.execute('SELECT count(*) FROM "selection_all"').fetchall() == [(5,)]
    assert run_sql(odd, "SELECT count(*) AS n FROM selection('all')").to_pylist() == [{"n": 5}]
    assert export(odd, "all", tmp_path / "out", progress=False).samples == 5
    card = write_card(odd, "all").read_text()
    assert "| pairs kept | 5 of 5 candidates |" in card and "Ingest: 5 pairs, 5 ok" in card


def test_source_paths_with_glob_characters_are_used_as_they_are(tmp_path: Path) -> None:
    _folder(tmp_path / "src1", 2)
    odd = _folder(tmp_path / "src[1]", 4, first=20)
    report = ingest([str(odd)], tmp_path / "ws", progress=False)
    assert (report.inputs, report.ok) == (4, 4)
    assert {r["caption"] for r in _rows(tmp_path / "ws")} == {
        f"a picture number {i}" for i in range(20, 24)}
    braced = _folder(tmp_path / "x{a,b}", 1, first=40)  # a brace list that names a real path
    report = ingest([str(braced)], tmp_path / "ws2", progress=False)
    assert (report.inputs, report.ok) == (1, 1)


def _counts(report) -> None:
    """Every input is a row: counted once, as ok, failed or already present."""
    assert report.inputs == report.ok + report.failed + report.already_present


def _by_key(ws: Path) -> dict[str, dict]:
    return {r["key"]: r for r in _rows(ws)}


def test_a_fifo_named_as_a_source_is_one_line_and_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "table.parquet"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(CurateError, match=r"table.parquet: a FIFO, not a file or folder") as e:
        ingest([str(fifo)], tmp_path / "ws", progress=False)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "ws").glob("samples/part-*"))


def test_a_device_named_as_a_source_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CurateError, match=r"/dev/zero: a character device, not a file"):
        ingest(["/dev/zero"], tmp_path / "ws", progress=False)


def test_a_fifo_and_a_device_inside_a_folder_are_failed_rows(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", 3)
    os.mkfifo(src / "pipe.png")
    (src / "pipe.txt").write_text("a caption beside a FIFO")
    (src / "zero.jpg").symlink_to("/dev/zero")
    (src / "zero.txt").write_text("a caption beside a device")
    report = ingest([str(src)], tmp_path / "ws", progress=False)
    _counts(report)
    assert (report.inputs, report.ok, report.failed) == (5, 3, 2)
    rows = _by_key(tmp_path / "ws")
    assert rows["pipe"]["status"] == "failed"
    assert rows["pipe"]["error"].startswith("not_a_file: ") and "a FIFO" in rows["pipe"]["error"]
    assert rows["zero"]["error"].startswith("not_a_file: ")
    assert "a character device" in rows["zero"]["error"]


def test_a_table_row_pointing_at_a_device_is_a_failed_row(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(_png(1))
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image_path": ["ok.png", "/dev/zero"],
                             "caption": ["a fine picture", "endless zeros"]}), table)
    report = ingest([str(table)], tmp_path / "ws", progress=False)
    _counts(report)
    assert (report.inputs, report.ok, report.failed) == (2, 1, 1)
    bad = [r for r in _rows(tmp_path / "ws") if r["status"] == "failed"]
    assert bad[0]["error"].startswith("not_a_file: /dev/zero is a character device")


def test_an_image_over_the_size_cap_is_a_failed_row(tmp_path: Path) -> None:
    src = _folder(tmp_path / "src", 2)
    (src / "big.png").write_bytes(_png(5, size=400))
    (src / "big.txt").write_text("a big picture")
    limit = len(_png(5, size=400)) - 1
    report = ingest([str(src)], tmp_path / "ws", progress=False, max_image_bytes=limit)
    _counts(report)
    assert (report.inputs, report.ok, report.failed) == (3, 2, 1)
    big = _by_key(tmp_path / "ws")["big"]
    assert big["status"] == "failed" and big["error"] == (
        f"image_too_large: {limit + 1} bytes, over the cap of {limit}")
    # bytes held in a table cell are capped the same way
    table = tmp_path / "cells.parquet"
    pq.write_table(pa.table({"image": [_png(6, size=400), _png(7)],
                             "caption": ["big bytes", "small bytes"]}), table)
    report = ingest([str(table)], tmp_path / "ws2", progress=False, max_image_bytes=limit)
    assert (report.inputs, report.ok, report.failed) == (2, 1, 1)
    assert report.errors["image_too_large"] == 1


def test_a_tar_member_over_the_cap_is_refused_from_its_header_never_read(tmp_path: Path
                                                                         ) -> None:
    """A member whose header claims 16 GiB, followed by a few bytes: reading it would take the
    whole file (and find it truncated); its header alone makes it ``image_too_large``, and the
    sample before it is untouched."""
    import tarfile

    shard = tmp_path / "big.tar"
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("a.png", _png(1)), ("a.txt", b"a small picture")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    huge = tarfile.TarInfo("b.png")
    huge.size = 1 << 34
    body = shard.read_bytes().rstrip(b"\0")  # the end-of-archive blocks give way to b.png
    body += b"\0" * (-len(body) % 512)
    shard.write_bytes(body + huge.tobuf(format=tarfile.GNU_FORMAT) + b"x" * 4096)
    report = ingest([str(shard)], tmp_path / "ws", progress=False, max_image_bytes=1 << 20)
    rows = {r["key"]: r for r in _rows(tmp_path / "ws")}
    assert rows["a"]["status"] == "ok"
    assert rows["b"]["status"] == "failed" and rows["b"]["error"].startswith(
        f"image_too_large: b.png is {1 << 34} bytes, over the cap of {1 << 20}"), rows["b"]
    assert report.errors["image_too_large"] == 1


def _shard(tmp_path: Path, change) -> Path:
    """One img2dataset shard of 6 samples whose parquet ``change(rows)`` rewrites."""
    from curate.synth import make_pool
    pool = make_pool(tmp_path / "pool", 6, 1, shard_size=6)
    side = pool / "00000.parquet"
    rows = pq.read_table(side).to_pylist()
    pq.write_table(pa.Table.from_pylist(change(rows)), side)
    return pool / "00000.tar"


def test_a_sha256_the_bytes_disagree_with_is_checked_and_kept_as_data(tmp_path: Path) -> None:
    """Checked, not failed: img2dataset's own sha256 is of the download before re-encoding,
    so failing a mismatch would fail every real img2dataset sample (its tests run it)."""
    def lie(rows):
        rows[0]["sha256"] = "0" * 64
        return rows
    report = ingest([str(_shard(tmp_path, lie))], tmp_path / "ws", progress=False)
    _counts(report)
    assert report.inputs == 6 and len(_rows(tmp_path / "ws")) == 6
    rows = _by_key(tmp_path / "ws")
    assert rows["000000000"]["sha256_matches"] is False
    assert rows["000000000"]["sha256"] == "0" * 64  # what the source said, kept
    honest = [r for k, r in rows.items() if k != "000000000" and r["sha256"]]
    assert honest and all(r["sha256_matches"] is True for r in honest)
    with Workspace.open(tmp_path / "ws").connect() as con:  # a column `where` can use
        assert con.execute("SELECT count(*) FROM pairs WHERE NOT sha256_matches"
                           ).fetchall() == [(1,)]


def test_an_out_of_range_sidecar_size_is_a_failed_row(tmp_path: Path) -> None:
    def huge(rows):
        rows[1]["original_width"] = 2 ** 40
        return rows
    report = ingest([str(_shard(tmp_path, huge))], tmp_path / "ws", progress=False)
    _counts(report)
    row = _by_key(tmp_path / "ws")["000000001"]
    assert row["status"] == "failed" and row["orig_width"] is None
    assert "bad_metadata: orig_width 1099511627776 is not a size in pixels" in row["error"]
    assert len(_rows(tmp_path / "ws")) == 6


def test_a_sidecar_value_of_the_wrong_type_is_a_failed_row(tmp_path: Path) -> None:
    def typed(rows):
        for r in rows:
            r["url"] = [r["url"]]  # a list where text goes
        return rows
    report = ingest([str(_shard(tmp_path, typed))], tmp_path / "ws", progress=False)
    _counts(report)
    rows = _rows(tmp_path / "ws")
    assert len(rows) == 6 and all(r["status"] == "failed" and r["url"] is None for r in rows)
    assert all("bad_metadata: url is a list, not text" in r["error"] for r in rows)


def test_duplicate_and_null_sidecar_keys_are_failed_rows(tmp_path: Path) -> None:
    def keys(rows):
        return [*rows, {**rows[2], "caption": "a second row for key 2"},
                {**rows[3], "key": None, "caption": "a row with no key"}]
    report = ingest([str(_shard(tmp_path, keys))], tmp_path / "ws", progress=False)
    _counts(report)
    assert report.inputs == 8 and len(_rows(tmp_path / "ws")) == 8
    errors = [r["error"] for r in _rows(tmp_path / "ws")]
    assert sum(e is not None and e.startswith("duplicate_key: parquet row 6 repeats key "
                                              "'000000002'") for e in errors) == 1
    assert sum(e is not None and e.startswith("missing_key: parquet row 7 has no key")
               for e in errors) == 1


@pytest.mark.parametrize("cells", [[5, 7], [["a", "b"], ["c"]]], ids=["int64", "list"])
def test_a_caption_column_of_the_wrong_type_is_rows_not_a_traceback(tmp_path: Path,
                                                                     cells: list) -> None:
    for i in range(2):
        (tmp_path / f"{i}.png").write_bytes(_png(i))
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image_path": ["0.png", "1.png"], "caption": cells}), table)
    report = ingest([str(table)], tmp_path / "ws", progress=False)
    _counts(report)
    rows = _rows(tmp_path / "ws")
    assert report.inputs == len(rows) == 2
    if isinstance(cells[0], int):  # a number is text that happens to be digits
        assert sorted(r["caption"] for r in rows) == ["5", "7"]
    else:
        assert all(r["status"] == "failed" and r["caption"] is None for r in rows)
        assert all(r["error"] == "bad_caption: a list, not text" for r in rows)
