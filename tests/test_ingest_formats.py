"""Ingest what the field's own tools write: Hugging Face ``datasets`` (parquet with an Image
feature, ``save_to_disk``, ImageFolder), webdataset's ``ShardWriter`` (DataComp-style shards,
``.tar.gz``), Lance, COCO captions, headerless CC3M-style TSVs of URLs fetched over loopback,
and img2dataset's three output formats. Counts, captions, statuses and ids are checked
against what was written; bad inputs are rows, nothing is silently dropped."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.hashing import content_id, image_hash
from curate.images import read_bytes
from curate.ingest import ingest
from curate.ingest.fetch import FetchConfig
from tests import badinput


def samples(ws: Path) -> pl.DataFrame:
    parts = sorted((ws / "samples").glob("*.parquet"))
    return pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed")


def codes(error: str | None) -> set[str]:
    return {e.split(":")[0] for e in (error or "").split("; ") if e}


def sql(ws: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(ws / "catalog.duckdb"), read_only=True) as con:
        return con.execute(query).fetchall()


def stored_bytes(row: dict) -> bytes:
    return read_bytes(row["image_path"], row["image_offset"], row["image_length"])


def colours(n: int) -> list[bytes]:
    return [badinput.jpeg((10 * i % 256, 40, 200 - i), 24 + i % 5) for i in range(n)]


# ---------------------------------------------------------------- a loopback image server


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        if self.path == "/drip.jpg":  # one byte every 0.3 s: only the deadline stops it
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An http.server on 127.0.0.1 serving a folder of images, a non-image and a big file."""
    root = tmp_path_factory.mktemp("www")
    for i, data in enumerate(colours(12)):
        (root / f"{i}.jpg").write_bytes(data)
    (root / "page.jpg").write_bytes(b"<html>not an image</html>")
    (root / "big.jpg").write_bytes(badinput.jpeg(size=16) + b"\0" * 200_000)

    def handler(*a: object, **kw: object) -> _Handler:
        return _Handler(*a, directory=str(root), **kw)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", root
    srv.shutdown()
    srv.server_close()


QUICK = FetchConfig(workers=8, timeout=2.0, deadline=1.5, max_bytes=100_000)


@pytest.mark.slow
def test_headerless_tsv_of_urls_is_fetched_once_into_the_workspace(
        server: tuple[str, Path], tmp_path: Path, workspace: Path) -> None:
    base, root = server
    lines = [(f'"a quoted start {i}' if i == 0 else f"caption {i}", f"{base}/{i}.jpg")
             for i in range(6)]
    bad = {"missing": f"{base}/missing.jpg", "page": f"{base}/page.jpg",
           "ftp": "ftp://127.0.0.1/x.jpg", "drip": f"{base}/drip.jpg", "big": f"{base}/big.jpg",
           "nohost": "http://no-such-host.invalid/x.jpg"}  # .invalid never resolves (RFC 6761)
    lines += [(name, url) for name, url in bad.items()]
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("".join(f"{c}\t{u}\n" for c, u in lines))
    start = time.time()
    report = ingest([str(tsv)], workspace, columns=["caption", "url"], fetch=QUICK,
                    progress=False)
    assert time.time() - start < 20  # the drip is cut at its deadline
    s = samples(workspace)
    assert report.inputs == s.height == len(lines)  # the first row is a sample, not a header
    assert sorted(s["caption"]) == sorted(c for c, _ in lines)
    ok = s.filter(pl.col("status") == "ok")
    assert ok.height == 6 and set(ok["download_status"]) == {"success"}
    ws_images = (workspace / "images").resolve()
    for row in ok.iter_rows(named=True):  # bytes kept in the workspace, as served
        assert Path(row["image_path"]).parent == ws_images
        i = int(row["url"].rsplit("/", 1)[1].split(".")[0])
        data = stored_bytes(row)
        assert data == (root / f"{i}.jpg").read_bytes()
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert row["sample_id"] == content_id(data, row["caption"].encode())
    by_caption = {r["caption"]: r for r in s.iter_rows(named=True)}
    assert by_caption["missing"]["error"].startswith("failed_to_download: HTTP Error 404")
    assert "scheme" in by_caption["ftp"]["error"]
    assert "deadline" in by_caption["drip"]["error"]
    assert "cap" in by_caption["big"]["error"]
    assert by_caption["nohost"]["error"].startswith(
        "failed_to_download: DNS lookup of no-such-host.invalid failed")
    assert codes(by_caption["page"]["error"]) == {"undecodable_image"}
    for name in ("missing", "ftp", "drip", "big"):
        assert codes(by_caption[name]["error"]) == {"failed_to_download"}
        assert by_caption[name]["download_status"] == "failed_to_download"
    with tarfile.open(next(ws_images.glob("part-*.tar"))) as tar:  # a webdataset shard
        names = tar.getnames()
    assert len([n for n in names if not n.endswith(".txt")]) == 7  # 6 images + the page
    shards = sorted(ws_images.glob("part-*.tar"))
    again = ingest([str(tsv)], workspace, columns=["caption", "url"], fetch=QUICK,
                   progress=False)
    assert again.already_present == len(lines) and sorted(ws_images.glob("*.tar")) == shards
    with pytest.raises(CurateError, match="--columns"):  # a headerless file named nothing
        ingest([str(tsv)], tmp_path / "ws2", progress=False)


# ---------------------------------------------------------------- Hugging Face datasets


def _hf_rows(n: int) -> tuple[list[bytes], list[str]]:
    return colours(n), [f"a picture number {i}" for i in range(n)]


def test_hf_parquet_with_image_feature(tmp_path: Path, workspace: Path) -> None:
    import datasets
    images, captions = _hf_rows(10)
    cells = [{"bytes": b, "path": None} for b in images]
    cells[3] = {"bytes": b"not an image; really" * 50, "path": None}  # a bad cell is a row
    ds = datasets.Dataset.from_dict(
        {"image": cells, "text": captions, "aesthetic_score": [i / 10 for i in range(10)],
         "thumb": [b"\x00\x01" * 40] * 10},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                    "aesthetic_score": datasets.Value("float64"),
                                    "thumb": datasets.Value("binary")}))
    (tmp_path / "data").mkdir()
    ds.select(range(6)).to_parquet(str(tmp_path / "data" / "train-00000-of-00002.parquet"))
    ds.select(range(6, 10)).to_parquet(str(tmp_path / "data" / "train-00001-of-00002.parquet"))
    report = ingest([str(tmp_path / "data")], workspace, progress=False)  # a folder of them
    s = samples(workspace).sort("source", "key")
    assert (report.inputs, report.ok, report.failed) == (10, 9, 1)
    assert set(s["source_kind"]) == {"hf_parquet"}
    assert s["caption"].to_list() == captions
    for i, row in enumerate(s.iter_rows(named=True)):
        assert len(row["error"] or "") <= 300 and "\\x" not in (row["meta"] or "")
        assert json.loads(row["meta"])["thumb"] == "<80 bytes>"  # binary never stringified
        if i == 3:
            assert codes(row["error"]) == {"undecodable_image"}
            continue
        assert stored_bytes(row) == images[i]
        assert row["sample_id"] == content_id(images[i], captions[i].encode())
    assert sql(workspace, "SELECT count(*) FROM samples WHERE aesthetic_score >= 0.5") == [(5,)]


def test_hf_save_to_disk_dataset_and_dataset_dict(tmp_path: Path, workspace: Path) -> None:
    import datasets
    images, captions = _hf_rows(8)
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in images],
                                     "caption": captions}, features=features)
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds.select(range(5)), "test": ds.select(range(5, 8))}
                         ).save_to_disk(str(tmp_path / "dict"))
    ingest([str(tmp_path / "one")], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert s["caption"].to_list() == captions and set(s["status"]) == {"ok"}
    assert [stored_bytes(r) for r in s.iter_rows(named=True)] == images
    other = tmp_path / "ws2"
    ingest([str(tmp_path / "dict")], other, progress=False)
    d = samples(other).sort("key")
    assert d["key"].to_list() == [f"test/{i}" for i in range(3)] + [f"train/{i}"
                                                                     for i in range(5)]
    assert sorted(d["caption"]) == sorted(captions) and set(d["source_kind"]) == {"hf_arrow"}


def test_imagefolder_with_metadata_jsonl_and_csv(tmp_path: Path, workspace: Path) -> None:
    root = tmp_path / "folder"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    images = colours(5)
    for i in range(3):
        (root / "train" / f"{i}.jpg").write_bytes(images[i])
    (root / "train" / "extra.jpg").write_bytes(images[3])  # no metadata row names it
    (root / "train" / "metadata.jsonl").write_text("".join(json.dumps(
        {"file_name": f"{i}.jpg", "text": f"train {i}", "rating": i}) + "\n" for i in range(3))
        + json.dumps({"file_name": "gone.jpg", "text": "no such file", "rating": 9}) + "\n")
    (root / "test" / "a.jpg").write_bytes(images[4])
    (root / "test" / "metadata.csv").write_text("file_name,caption\na.jpg,test a\n")
    import datasets  # the producer's reader sees the same rows
    hf = datasets.load_dataset("imagefolder", data_dir=str(root / "test"), split="train")
    assert hf[0]["caption"] == "test a"
    report = ingest([str(root)], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert (report.inputs, report.ok) == (6, 4)
    assert s["key"].to_list() == ["test/a", "train/0", "train/1", "train/2", "train/extra",
                                  "train/gone"]
    assert s["caption"].to_list() == ["test a", "train 0", "train 1", "train 2", None,
                                      "no such file"]
    assert [codes(e) for e in s["error"]] == [set(), set(), set(), set(), {"missing_caption"},
                                              {"missing_image"}]
    assert s["rating"].to_list()[1:4] == [0, 1, 2]
    assert Path(s["image_path"][1]) == (root / "train" / "0.jpg").resolve()  # in place


# ---------------------------------------------------------------- webdataset and DataComp


def test_datacomp_shards_from_shardwriter(tmp_path: Path, workspace: Path) -> None:
    import webdataset as wds
    images = colours(12)
    truth = [{"uid": f"{i:032x}", "text": f"datacomp caption {i}", "alt": f"alt {i}",
              "clip_b32_similarity_score": round(0.2 + i * 0.01, 3), "original_width": 24 + i}
             for i in range(12)]
    with wds.ShardWriter(str(tmp_path / "shard-%05d.tar"), maxcount=5, verbose=0) as sink:
        for i in range(10):
            sink.write({"__key__": f"{i:09d}", "jpg": images[i], "json": truth[i]})
    with wds.TarWriter(str(tmp_path / "more.tar.gz")) as sink:  # a compressed shard
        for i in range(10, 12):
            sink.write({"__key__": f"{i:09d}", "jpg": images[i], "json": truth[i]})
    shards = sorted(str(p) for p in tmp_path.glob("shard-*.tar"))
    assert len(shards) == 2
    report = ingest([*shards, str(tmp_path / "more.tar.gz")], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert (report.inputs, report.ok) == (12, 12)
    assert s["caption"].to_list() == [t["text"] for t in truth]  # from the .json's text
    assert s["uid"].to_list() == [t["uid"] for t in truth]
    gz = s.filter(pl.col("source").str.ends_with(".tar.gz"))
    assert gz.height == 2 and all(Path(p).parent.name == "images" for p in gz["image_path"])
    assert [stored_bytes(r) for r in s.iter_rows(named=True)] == images
    want = sum(t["clip_b32_similarity_score"] > 0.25 for t in truth)
    assert sql(workspace, "SELECT count(*) FROM pairs WHERE clip_b32_similarity_score > 0.25"
               ) == [(want,)]
    assert sql(workspace, "SELECT max(orig_width) FROM samples") == [(35,)]  # img2dataset's
    other = tmp_path / "ws2"  # --caption-column names a field of the .json
    ingest(shards, other, caption_col="alt", progress=False)
    assert sorted(samples(other)["caption"]) == sorted(t["alt"] for t in truth[:10])


# ---------------------------------------------------------------- COCO and Lance


def test_coco_captions_one_sample_per_caption(tmp_path: Path, workspace: Path) -> None:
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    images = colours(3)
    for i in (1, 2, 3):
        (tmp_path / "val2017" / f"{i:012d}.jpg").write_bytes(images[i - 1])
    coco = {"info": {}, "licenses": [],
            "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 24, "height": 24}
                       for i in (1, 2, 3, 4)],  # 4 is not on disk
            "annotations": [{"id": 10, "image_id": 1, "caption": "one a"},
                            {"id": 11, "image_id": 1, "caption": "one b"},
                            {"id": 12, "image_id": 2, "caption": "two"},
                            {"id": 13, "image_id": 4, "caption": "four"},
                            {"id": 14, "image_id": 99, "caption": "no such image"}]}
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.write_text(json.dumps(coco))
    report = ingest([str(path)], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert report.inputs == s.height == 6  # 5 captions + image 3, which has none
    by = {r["key"]: r for r in s.iter_rows(named=True)}
    assert by["10"]["image_path"] == by["11"]["image_path"]  # the image shared, in place
    assert stored_bytes(by["10"]) == images[0] and by["10"]["status"] == "ok"
    assert (by["11"]["source_image_id"], by["11"]["annotation_id"]) == (1, 11)
    assert codes(by["13"]["error"]) == {"missing_image"}
    assert codes(by["14"]["error"]) == {"missing_image"}
    assert codes(by["image-3"]["error"]) == {"missing_caption"}
    assert sql(workspace, "SELECT count(*) FROM samples WHERE source_image_id = 1") == [(2,)]
    # image 1 is one image with two human captions; image_id is its content hash
    one = image_hash(images[0])
    assert sql(workspace, "SELECT n_captions, sources, image_path FROM images "
               f"WHERE image_id = '{one}'") == [(2, ["human"], by["10"]["image_path"])]
    assert sql(workspace, "SELECT count(*) FROM images") == [(2,)]  # images 1 and 2 are ok


def test_lance_dataset(tmp_path: Path, workspace: Path) -> None:
    import lance
    images, captions = _hf_rows(6)
    lance.write_dataset(pa.table({"image": pa.array(images, pa.binary()),
                                  "caption": captions}), str(tmp_path / "pairs.lance"))
    report = ingest([str(tmp_path / "pairs.lance")], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert (report.inputs, report.ok) == (6, 6) and set(s["source_kind"]) == {"lance"}
    assert s["caption"].to_list() == captions
    assert [stored_bytes(r) for r in s.iter_rows(named=True)] == images


# ---------------------------------------------------------------- bad and empty sources


def test_long_errors_are_bounded_and_binary_is_never_text(tmp_path: Path,
                                                          workspace: Path) -> None:
    long = "x" * 5000 + ".jpg"
    pq.write_table(pa.table({"image_path": [long, "also; missing.jpg"],
                             "caption": ["long", "semi"],
                             "blob": pa.array([b"\x89PNG" * 1000] * 2, pa.binary())}),
                   tmp_path / "t.parquet")
    ingest([str(tmp_path / "t.parquet")], workspace, kind="table", progress=False)
    for row in samples(workspace).iter_rows(named=True):
        assert row["status"] == "failed" and len(row["error"]) <= 300
        assert codes(row["error"]) == {"missing_image"}
        assert json.loads(row["meta"]) == {"blob": "<4000 bytes>"}


@pytest.mark.parametrize("make", ["empty_dir", "notes_dir", "empty_tar", "unknown_file"])
def test_nothing_to_read_stops_with_one_line(tmp_path: Path, make: str) -> None:
    path = tmp_path / {"empty_dir": "d", "notes_dir": "n", "empty_tar": "e.tar",
                       "unknown_file": "x.bin"}[make]
    if make.endswith("dir"):
        path.mkdir()
        if make == "notes_dir":
            (path / "README.md").write_text("nothing curate reads")
    elif make == "empty_tar":
        tarfile.open(path, "w").close()
    else:
        path.write_bytes(b"\0" * 100)
    with pytest.raises(CurateError) as e:
        ingest([str(path)], tmp_path / "ws", progress=False)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    if make != "empty_tar":  # the kinds curate reads, named
        assert "webdataset" in str(e.value) and ("hf_parquet" in str(e.value)
                                                 or "Hugging Face parquet" in str(e.value))


# ---------------------------------------------------------------- img2dataset itself


def _img2dataset() -> str | None:
    """img2dataset's command: $CURATE_IMG2DATASET, beside this Python, or on PATH."""
    found = os.environ.get("CURATE_IMG2DATASET") or shutil.which(
        "img2dataset", path=str(Path(sys.executable).parent)) or shutil.which("img2dataset")
    return found if found and Path(found).exists() else None


def _written(out: Path, fmt: str, key: str) -> bytes:
    """The image img2dataset wrote for ``key`` in output format ``fmt``."""
    if fmt == "files":
        return (out / "00000" / f"{key}.jpg").read_bytes()
    if fmt == "parquet":
        (row,) = pq.read_table(out / "00000.parquet").filter(
            pa.compute.field("key") == key).to_pylist()
        return row["jpg"]
    with tarfile.open(out / "00000.tar") as tar:
        return tar.extractfile(f"{key}.jpg").read()


def i2d_rows(n: int = 8) -> list[tuple[str, str]]:
    return ([(f"caption {i}", f"{i}.jpg") for i in range(n)]
            + [("gone", "missing.jpg"), ("junk", "page.jpg")])


def test_img2dataset_parquet_layout_read_without_the_network(tmp_path: Path,
                                                             workspace: Path) -> None:
    """img2dataset 1.47's parquet output, written as it writes it (its columns and a
    failure's row), in a folder: the bytes come from the file, the failures are rows."""
    images = colours(3)
    rows = [dict(caption=f"c{i}", url=f"http://127.0.0.1:9/{i}.jpg", key=f"{i:09d}",
                 status="success", error_message=None, width=24, height=24,
                 original_width=24, original_height=24, exif="{}",
                 sha256=hashlib.sha256(images[i]).hexdigest(), jpg=images[i])
            for i in range(3)]
    rows.append(dict(rows[0], key="000000003", status="failed_to_download", sha256=None,
                     error_message="HTTP Error 404: Not Found", jpg=None, caption="c3"))
    (tmp_path / "out").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "out" / "00000.parquet")
    (tmp_path / "out" / "00000_stats.json").write_text("{}")
    report = ingest([str(tmp_path / "out")], workspace, progress=False)
    s = samples(workspace).sort("key")
    assert (report.inputs, report.ok, report.failed) == (4, 3, 1)
    assert set(s["source_kind"]) == {"img2dataset_parquet"}
    assert s["error"][3] == "failed_to_download: HTTP Error 404: Not Found"
    for row in s.head(3).iter_rows(named=True):
        assert hashlib.sha256(stored_bytes(row)).hexdigest() == row["sha256"]
        assert row["url"].startswith("http://127.0.0.1:9/")


FORMATS = ("webdataset", "parquet", "files")


@pytest.fixture(scope="module")
def i2d_outputs(server: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, Path]:
    """img2dataset run on one URL list (8 images, a 404, a web page) in its three output
    formats at once (each run spends ~30 s starting up, most of it not downloading)."""
    exe = _img2dataset()
    if exe is None:
        if os.environ.get("CI"):  # CI installs it (`make test` does): missing there is a defect
            pytest.fail("img2dataset is not installed (make test puts it in .venv-i2d)")
        pytest.skip("img2dataset is not installed (make test puts it in .venv-i2d)")
    base, _ = server
    tmp = tmp_path_factory.mktemp("i2d")
    (tmp / "urls.tsv").write_text("url\tcaption\n" + "".join(
        f"{base}/{name}\t{cap}\n" for cap, name in i2d_rows()))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}  # no update check over the network
    runs = {fmt: subprocess.Popen(
        [exe, "--url_list", str(tmp / "urls.tsv"), "--input_format", "tsv", "--url_col", "url",
         "--caption_col", "caption", "--output_format", fmt, "--output_folder",
         str(tmp / fmt), "--processes_count", "1", "--thread_count", "4", "--resize_mode",
         "no", "--enable_wandb", "False"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE) for fmt in FORMATS}
    for fmt, run in runs.items():
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, (fmt, err.decode()[-2000:])
    return {fmt: tmp / fmt for fmt in FORMATS}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_img2dataset_output_formats(i2d_outputs: dict[str, Path], workspace: Path,
                                    fmt: str) -> None:
    out = i2d_outputs[fmt]
    listed = i2d_rows()
    truth = pl.read_parquet(out / "00000.parquet")
    report = ingest([str(out)], workspace, progress=False)
    s = samples(workspace)
    assert report.inputs == s.height == truth.height == len(listed)
    j = s.join(truth, left_on="orig_key", right_on="key", suffix="_i2d")
    assert j.height == len(listed)
    assert (j["caption"] == j["caption_i2d"]).all() and (j["url"] == j["url_i2d"]).all()
    assert (j["download_status"] == j["status_i2d"]).all()
    ok = j.filter(pl.col("status_i2d") == "success")
    assert ok.height == 8 and set(ok["status"]) == {"ok"}
    for row in ok.iter_rows(named=True):  # the bytes img2dataset wrote, read back
        assert stored_bytes(row) == _written(out, fmt, row["orig_key"])
    failed = j.filter(pl.col("status_i2d") != "success")
    assert sorted(failed["caption"]) == ["gone", "junk"] and set(failed["status"]) == {"failed"}
    for row in failed.iter_rows(named=True):
        assert row["error"] == f"{row['status_i2d']}: {row['error_message']}"
