"""Ingest from every source kind and every bad input; counts reconcile with truth."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.images import read_bytes
from curate.ingest import ingest, kinds
from curate.ingest.kinds import Kind, Options, Record, Source
from tests import badinput
from tests.conftest import POOL_N


def samples(ws: Path) -> pl.DataFrame:
    """Every samples part (parts of different sources may have different metadata columns)."""
    return pl.concat([pl.read_parquet(p) for p in sorted((ws / "samples").glob("*.parquet"))],
                     how="diagonal_relaxed")


def codes(error: str | None) -> set[str]:
    return {e.split(":")[0] for e in (error or "").split("; ") if e}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_pool_counts_reconcile_with_truth(pool: Path, ingested: Path) -> None:
    truth = pl.read_parquet(pool / "truth.parquet")
    s = samples(ingested)
    assert s.height == truth.height == POOL_N  # every input has exactly one row
    assert s["sample_id"].n_unique() == s.height
    joined = s.join(truth, on="key", how="inner")
    assert joined.height == POOL_N
    assert (joined["status"] == joined["expected_status"]).all()
    for row in joined.filter(pl.col("status") == "failed").iter_rows(named=True):
        got = codes(row["error"])
        if row["corrupt"]:
            assert got & {"truncated_image", "undecodable_image", "empty_image"}, row
        if row["empty_caption"]:
            assert "empty_caption" in got
        if row["failed_download"]:
            assert "failed_to_download" in got
    counts = dict(s.group_by("status").len().iter_rows())
    assert counts["ok"] + counts["failed"] == POOL_N


def test_img2dataset_metadata_and_header_fields(pool: Path, ingested: Path) -> None:
    s = samples(ingested).filter(pl.col("status") == "ok")
    side = pl.concat([pl.read_parquet(p) for p in sorted(pool.glob("0*.parquet"))])
    j = s.join(side, left_on="orig_key", right_on="key", suffix="_i2d")
    assert j.height == s.height
    assert (j["url"] == j["url_i2d"]).all() and (j["sha256"] == j["sha256_i2d"]).all()
    assert (j["download_status"] == "success").all()
    assert set(s["image_format"]) == {"jpeg"} and set(s["width"]) >= {64}
    assert (j["width"] == j["orig_width"]).all() and (j["height"] == j["orig_height"]).all()
    # references point at the original bytes inside the tar: sha256 matches img2dataset's
    for row in s.head(50).iter_rows(named=True):
        data = read_bytes(row["image_path"], row["image_offset"], row["image_length"])
        assert hashlib.sha256(data).hexdigest() == row["sha256"]


def test_reingest_adds_nothing_and_ids_are_stable(pool: Path, ingested: Path,
                                                  tmp_path: Path) -> None:
    ws = tmp_path / "again"
    shutil.copytree(ingested, ws)
    before = sorted(samples(ws)["sample_id"])
    report = ingest([str(pool / "{00000..00002}.tar")], ws, progress=False)  # brace pattern
    assert (report.inputs, report.already_present, report.ok, report.failed) == (
        POOL_N, POOL_N, 0, 0)
    assert sorted(samples(ws)["sample_id"]) == before
    other = tmp_path / "fresh"  # a glob into a new workspace gives the same ids
    ingest([str(pool / "*.tar")], other, progress=False)
    assert sorted(samples(other)["sample_id"]) == before


def test_catalog_answers_sql_from_any_duckdb_client(ingested: Path) -> None:
    con = duckdb.connect(str(ingested / "catalog.duckdb"), read_only=True)
    n_ok = con.execute("SELECT count(*) FROM samples WHERE status = 'ok'").fetchone()[0]
    assert n_ok == samples(ingested).filter(pl.col("status") == "ok").height
    assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == POOL_N
    con.close()


def test_every_bad_input_gets_a_row(tmp_path: Path, workspace: Path) -> None:
    shard, expected = badinput.bad_shard(tmp_path / "bad.tar")
    report = ingest([str(shard)], workspace, progress=False)
    s = samples(workspace)
    assert report.inputs == s.height == report.ok + report.failed == 12
    for key, code in expected.items():
        rows = s.filter(pl.col("key") == key)
        if key == "dup":
            assert sorted("duplicate_key" in codes(e) for e in rows["error"]) == [False, True]
            continue
        assert rows.height == 1, key
        (row,) = rows.iter_rows(named=True)
        assert (row["status"] == "ok") == (code == ""), row
        if code:
            assert code in codes(row["error"]), row
    latin = s.filter(pl.col("key") == "latin").row(0, named=True)
    assert latin["caption"] == "caf\ufffd au lait"  # kept visible, never dropped
    good2 = s.filter(pl.col("key") == "good2").row(0, named=True)
    assert (good2["caption"], good2["image_format"], good2["url"]) == ("a green square",
                                                                        "webp", "u")


@pytest.mark.parametrize("keep", [0.5, 0.57])  # at a record boundary, and inside a member
def test_truncated_tar_keeps_what_was_read(tmp_path: Path, workspace: Path, keep: float) -> None:
    members = []
    for i in range(20):
        members += [(f"{i:04d}.jpg", badinput.jpeg((i * 10, 0, 0), 64)),
                    (f"{i:04d}.txt", f"sample {i}".encode())]
    shard = badinput.truncate(badinput.write_tar(tmp_path / "cut.tar", members), keep)
    report = ingest([str(shard)], workspace, progress=False)
    s = samples(workspace)
    assert report.failed >= 1 and report.ok >= 5
    assert s.height == report.ok + report.failed
    assert any("truncated_tar" in codes(e) for e in s["error"].to_list())
    assert sorted(s.filter(pl.col("status") == "ok")["key"]) == [
        f"{i:04d}" for i in range(report.ok)]


def test_plain_webdataset_caption_in_txt_or_json(tmp_path: Path, workspace: Path) -> None:
    a = badinput.write_tar(tmp_path / "a.tar", [("x1.jpg", badinput.jpeg()),
                                                ("x1.txt", b"from txt")])
    b = badinput.write_tar(tmp_path / "b.tar", [
        ("y1.png", badinput.png()), ("y1.json", json.dumps({"caption": "from json",
                                                            "score": 0.5}).encode())])
    ingest([str(a), str(b)], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert s["caption"].to_list() == ["from txt", "from json"]
    assert s["source_kind"].to_list() == ["webdataset", "webdataset"]
    assert json.loads(s["meta"][1]) == {"score": 0.5}


def test_table_sources_parquet_csv_and_urls(tmp_path: Path, workspace: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(badinput.jpeg())
    (tmp_path / "img" / "b.png").write_bytes(badinput.png())
    pq.write_table(pa.table({"image_path": ["img/a.jpg", "img/b.png", "img/missing.jpg"],
                             "caption": ["a red square", "a blue square", "gone"],
                             "aesthetic": [5.0, 6.0, 7.0]}), tmp_path / "t.parquet")
    url = (tmp_path / "img" / "a.jpg").as_uri()
    (tmp_path / "t.csv").write_text(f"pic,alt_text\n{url},a red square by url\n"
                                    f"file:///nonexistent/x.jpg,nowhere\n")
    ingest([str(tmp_path / "t.parquet")], workspace, progress=False)
    ingest([str(tmp_path / "t.csv")], workspace, image_col="pic", caption_col="alt_text",
           progress=False)
    s = samples(workspace)
    assert s.height == 5
    ok = s.filter(pl.col("status") == "ok").sort("caption")
    assert ok["caption"].to_list() == ["a blue square", "a red square", "a red square by url"]
    assert ok.filter(pl.col("caption") == "a red square by url")["url"][0] == url
    failed = s.filter(pl.col("status") == "failed").sort("caption")
    assert [codes(e) for e in failed["error"]] == [{"missing_image"}, {"failed_to_download"}]
    with pytest.raises(Exception, match="no caption column"):
        ingest([str(tmp_path / "t.csv")], workspace, image_col="pic", progress=False)


def test_folder_of_images_with_captions(tmp_path: Path, workspace: Path) -> None:
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    (d / "cat.jpg").write_bytes(badinput.jpeg())
    (d / "cat.txt").write_text("a red square photo")
    (d / "sub" / "dog.webp").write_bytes(badinput.webp())
    (d / "sub" / "dog.txt").write_text("a green square")
    (d / "lonely.png").write_bytes(badinput.png())
    (d / "orphan.txt").write_text("no picture")
    report = ingest([str(d)], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert (report.ok, report.failed) == (2, 2)
    assert s["key"].to_list() == ["cat", "lonely", "orphan", "sub/dog"]
    assert [codes(e) for e in s["error"]] == [set(), {"missing_caption"}, {"missing_image"},
                                              set()]


def test_identical_pair_elsewhere_is_kept_as_a_duplicate(tmp_path: Path,
                                                         workspace: Path) -> None:
    pair = [("k1.jpg", badinput.jpeg()), ("k1.txt", b"same pair")]
    a = badinput.write_tar(tmp_path / "a.tar", pair)
    b = badinput.write_tar(tmp_path / "b.tar", pair)
    ingest([str(a), str(b)], workspace, progress=False)
    s = samples(workspace)
    assert s.height == 2 and s["sample_id"].n_unique() == 2
    assert codes(s.filter(pl.col("status") == "failed")["error"][0]) == {"duplicate_pair"}
    report = ingest([str(b), str(a)], workspace, progress=False)
    assert report.already_present == 2 and samples(workspace).height == 2


@pytest.mark.parametrize("make", ["missing", "not_a_tar", "bad_table"])
def test_unreadable_source_fails_with_one_line(tmp_path: Path, make: str) -> None:
    path = tmp_path / {"missing": "nope.tar", "not_a_tar": "x.tar", "bad_table": "t.parquet"}[make]
    if make != "missing":
        path.write_bytes(b"definitely not what the name says" * 50)
    r = cli("ingest", str(path), "-w", str(tmp_path / "ws"))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in r.stderr


def test_info_prints_counts_and_sizes(ingested: Path) -> None:
    r = cli("info", "-w", str(ingested))
    assert r.returncode == 0, r.stderr
    s = samples(ingested)
    n_failed = s.filter(pl.col("status") == "failed").height
    assert f"failed {n_failed}" in r.stdout and f"ok {s.height - n_failed}" in r.stdout
    assert "empty_caption" in r.stdout and "samples" in r.stdout
    d = json.loads(cli("info", "-w", str(ingested), "--json").stdout)
    assert d["samples"] == POOL_N


def _read_pairs(source: Source, options: Options) -> Iterator[Record]:
    """A made-up format: one ``key<TAB>image file<TAB>caption`` per line."""
    folder = Path(source.path).parent
    for line in Path(source.path).read_text().splitlines():
        key, image, caption = line.split("\t")
        rec = Record(key, source.path, source.kind, caption=caption.encode())
        kinds.load_file(rec, folder / image)
        yield rec


def test_a_kind_registered_elsewhere_is_detected_and_ingested(
        tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kinds, "_KINDS", {k.name: k for k in kinds.kinds()})  # undone after
    kinds.register(Kind(name="pairs", detect=lambda p: p.suffix == ".pairs", read=_read_pairs,
                        label="a .pairs list"))
    (tmp_path / "a.jpg").write_bytes(badinput.jpeg())
    (tmp_path / "b.png").write_bytes(badinput.png())
    (tmp_path / "one.pairs").write_text("k1\ta.jpg\ta red square\nk2\tgone.jpg\tmissing\n")
    (tmp_path / "two.pairs").write_text("k3\tb.png\ta blue square\n")
    pq.write_table(pa.table({"image_path": ["a.jpg"], "caption": ["by table"]}),
                   tmp_path / "t.parquet")
    assert [s.kind for s in kinds.expand([str(tmp_path / "*")])] == ["pairs", "table", "pairs"]
    report = ingest([str(tmp_path / "{one,two}.pairs")], workspace, progress=False, workers=2)
    s = samples(workspace).sort("key")
    assert (report.inputs, report.ok, report.failed) == (3, 2, 1)
    assert s["source_kind"].to_list() == ["pairs"] * 3
    assert s["caption"].to_list() == ["a red square", "missing", "a blue square"]
    assert [codes(e) for e in s["error"]] == [set(), {"missing_image"}, set()]
    assert s["image_format"].to_list() == ["jpeg", None, "png"]


def test_kind_overrides_detection(pool: Path, tmp_path: Path, workspace: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(badinput.jpeg())
    (tmp_path / "list.dat").write_text("image_path,caption\na.jpg,a red square\n")
    with pytest.raises(CurateError, match="list.dat: not an img2dataset shard"):
        ingest([str(tmp_path / "list.dat")], workspace, progress=False)
    ingest([str(tmp_path / "list.dat")], workspace, progress=False, kind="table")
    s = samples(workspace)
    assert s.select("source_kind", "status", "caption").rows() == [
        ("table", "ok", "a red square")]
    # an img2dataset shard read as a plain tar: its parquet's failed downloads are not rows
    other = tmp_path / "ws2"
    report = ingest([str(pool / "00000.tar")], other, progress=False, kind="webdataset")
    truth = pl.read_parquet(pool / "truth.parquet").filter(
        (pl.col("shard") == "00000") & ~pl.col("failed_download"))
    s = samples(other)
    assert report.inputs == s.height == truth.height < 200
    assert set(s["source_kind"]) == {"webdataset"}
    assert sorted(s["orig_key"]) == sorted(truth["key"])
    with pytest.raises(CurateError, match="unknown source kind 'tarball'; use one of: ") as e:
        ingest([str(pool)], tmp_path / "ws3", progress=False, kind="tarball")
    assert {"img2dataset", "webdataset", "table", "folder"} <= set(
        str(e.value).split("use one of: ")[1].split(", "))


def test_error_texts_are_the_same_in_every_run(tmp_path: Path) -> None:
    """PIL names the buffer it read by its memory address; the error column leaves it out, so
    two ingests of the same bytes write the same rows."""
    shard = badinput.write_tar(tmp_path / "s.tar", [("a.jpg", b"not an image at all"),
                                                    ("a.txt", b"a caption")])
    errors = []
    for ws in ("one", "two"):
        ingest([str(shard)], tmp_path / ws, progress=False)
        errors.append(pq.read_table(tmp_path / ws / "samples" / "part-000000.parquet",
                                    columns=["error"])["error"].to_pylist())
    assert errors[0] == errors[1]
    assert errors[0][0].startswith("undecodable_image: UnidentifiedImageError: cannot "
                                   "identify image file") and " at 0x" not in errors[0][0]
