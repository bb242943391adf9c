"""Selections from id lists (the ``ids`` rule) and the export formats beside webdataset
(``uids``, ``parquet``, ``--keep-keys``), against ground truth: DataComp-style shards written
by webdataset's writers, a subset ``.npy`` written by numpy, and the exported files read back
by numpy, ``datasets`` and webdataset."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.export import export
from curate.ingest import ingest
from curate.select import load_selection, parse_rules, select
from curate.workspace import Workspace
from tests import badinput

N = 12


def _image(i: int) -> bytes:
    return badinput.jpeg((10 * i % 256, 40, 200 - i), 24 + i % 5)


def _uids(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    return [f"{int(hi):016x}{int(lo):016x}"
            for hi, lo in rng.integers(0, 2**64, (n, 2), dtype=np.uint64)]


def _subset(uids: list[str]) -> np.ndarray:
    """A subset file as DataComp's baselines write it."""
    a = np.array([(int(u[:16], 16), int(u[16:], 16)) for u in uids], np.dtype("u8,u8"))
    a.sort()
    return a


@pytest.fixture(scope="module")
def datacomp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A workspace ingested from DataComp-style shards (.json with uid, text and a score)."""
    import webdataset as wds
    src = tmp_path_factory.mktemp("dc-src")
    truth = [{"uid": u, "text": f"datacomp caption {i}",
              "clip_b32_similarity_score": round(0.2 + i * 0.01, 3)}
             for i, u in enumerate(_uids(N))]
    with wds.ShardWriter(str(src / "shard-%05d.tar"), maxcount=5, verbose=0) as sink:
        for i, t in enumerate(truth):
            sink.write({"__key__": f"{i:09d}",
                        "jpg": _image(i),
                        "json": t})
    ws = tmp_path_factory.mktemp("dc") / "ws"
    ingest(sorted(str(p) for p in src.glob("shard-*.tar")), ws, progress=False)
    return ws, truth


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace of plain webdataset shards (.txt captions): no uid anywhere."""
    import webdataset as wds
    src = tmp_path_factory.mktemp("plain-src")
    with wds.TarWriter(str(src / "plain.tar")) as sink:
        for i in range(3):
            sink.write({"__key__": f"p{i}", "jpg": badinput.jpeg((i * 50, 9, 9), 20),
                        "txt": f"plain {i}"})
    ws = tmp_path_factory.mktemp("plain") / "ws"
    ingest([str(src / "plain.tar")], ws, progress=False)
    return ws


def test_datacomp_uid_round_trip(datacomp: tuple[Path, list[dict]], tmp_path: Path) -> None:
    ws, truth = datacomp
    chosen = [truth[i]["uid"] for i in (0, 3, 4, 8, 11)]
    subset = _subset(chosen)
    np.save(tmp_path / "subset.npy", subset)
    report = select(ws, "sub", [("ids", {"file": str(tmp_path / "subset.npy")})])
    step = report.steps[0]
    assert (report.kept, step["matched"], step["unmatched"], step["on"]) == (5, 5, 0, "uid")
    out = tmp_path / "out"
    export(ws, "sub", out, format="uids", progress=False)
    [npy] = sorted(out.glob("*.npy"))
    back = np.load(npy)
    assert back.dtype == np.dtype("u8,u8") and np.array_equal(back, subset)
    export(ws, "sub", out, format="uids", progress=False)  # finished: nothing to do
    assert np.array_equal(np.load(npy), subset)


def test_unmatched_ids_are_reported(datacomp: tuple[Path, list[dict]], tmp_path: Path
                                    ) -> None:
    ws, truth = datacomp
    stranger = "f" * 32
    (tmp_path / "ids.txt").write_text(f"{truth[2]['uid']}\n\n{stranger}\n{truth[5]['uid']}\n")
    report = select(ws, "txt", [("ids", {"file": str(tmp_path / "ids.txt"), "on": "uid"})])
    step = report.steps[0]
    assert (report.kept, step["ids"], step["matched"], step["unmatched"]) == (2, 3, 2, 1)
    assert step["unmatched_ids"] == [stranger] and stranger in step["note"]
    kept = set(load_selection(Workspace.open(ws), "txt"))
    dropped = pq.read_table(Workspace.open(ws).selection("txt").dropped).to_pylist()
    assert len(dropped) == N - 2 and not kept & {d["sample_id"] for d in dropped}
    assert all(d["reason"] == "ids: uid not in ids.txt" for d in dropped)


def test_ids_from_tables_compose_with_other_rules(datacomp: tuple[Path, list[dict]],
                                                  tmp_path: Path) -> None:
    ws, truth = datacomp
    keys = [f"{i:09d}" for i in range(6)]
    pq.write_table(pa.table({"key": keys, "other": list(range(6))}), tmp_path / "k.parquet")
    report = select(ws, "keys", [("ids", {"file": str(tmp_path / "k.parquet")}),
                                 ("top", {"column": "clip_b32_similarity_score",
                                          "amount": 2})])
    assert report.steps[0]["on"] == "key" and report.steps[0]["matched"] == 6
    assert report.kept == 2
    ids = load_selection(Workspace.open(ws), "keys")
    (tmp_path / "s.csv").write_text("sample_id,x\n" + "".join(f"{s},1\n" for s in ids))
    again = select(ws, "csv", [("ids", {"file": str(tmp_path / "s.csv")})])
    assert again.steps[0]["on"] == "sample_id"
    assert sorted(load_selection(Workspace.open(ws), "csv")) == sorted(ids)  # ids: source order


def test_ids_errors_are_one_line(datacomp: tuple[Path, list[dict]], plain: Path,
                                 tmp_path: Path) -> None:
    ws, truth = datacomp
    np.save(tmp_path / "subset.npy", _subset([truth[0]["uid"]]))
    with pytest.raises(CurateError, match="no uid column"):
        select(plain, "x", [("ids", {"file": str(tmp_path / "subset.npy")})])
    np.save(tmp_path / "bad.npy", np.arange(4))
    with pytest.raises(CurateError, match=r"not DataComp's subset"):
        select(ws, "x", [("ids", {"file": str(tmp_path / "bad.npy")})])
    with pytest.raises(CurateError, match="on='id'"):
        select(ws, "x", [("ids", {"file": str(tmp_path / "subset.npy"), "on": "id"})])
    with pytest.raises(CurateError, match="no file"):
        select(ws, "x", [("ids", {"file": str(tmp_path / "none.npy")})])
    assert parse_rules(["ids", "f.npy", "on=uid"]) == [("ids", {"file": "f.npy", "on": "uid"})]


def test_uids_export_needs_uids(plain: Path, tmp_path: Path) -> None:
    select(plain, "all", [("random", {"amount": 2})])
    with pytest.raises(CurateError, match="no uid"):
        export(plain, "all", tmp_path / "out", format="uids", progress=False)


def test_parquet_export_loads_with_datasets(datacomp: tuple[Path, list[dict]], tmp_path: Path
                                            ) -> None:
    import datasets
    ws, truth = datacomp
    select(ws, "pq", [("top", {"column": "clip_b32_similarity_score", "amount": 7})])
    out = tmp_path / "out"
    export(ws, "pq", out, format="parquet", shard_size=3, progress=False,
           columns=["clip_b32_similarity_score"])
    shards = sorted(out.glob("pq-*.parquet"))
    assert len(shards) == 3 and "configs:" in (out / "README.md").read_text()
    cache = str(tmp_path / "hf")
    by_files = datasets.load_dataset("parquet", data_files=[str(p) for p in shards],
                                     split="train", cache_dir=cache)
    by_dir = datasets.load_dataset(str(out), split="train", cache_dir=cache)
    for ds in (by_files, by_dir):
        assert isinstance(ds.features["image"], datasets.Image) and len(ds) == 7
        assert ds.to_pandas()["key"].tolist() == [f"{i:09d}" for i in range(7)]
    raw = by_dir.cast_column("image", datasets.Image(decode=False))
    want = {f"{i:09d}": t for i, t in enumerate(truth)}
    for row in raw:
        i = int(row["source_key"])
        assert row["image"]["bytes"] == _image(i)  # the original bytes
        assert row["caption"] == want[row["source_key"]]["text"]
        assert row["clip_b32_similarity_score"] == pytest.approx(
            want[row["source_key"]]["clip_b32_similarity_score"])
    assert {r["source_key"] for r in raw} == {f"{i:09d}" for i in range(5, 12)}
    assert by_dir[0]["image"].size[0] > 0  # decodes as a PIL image


def test_keep_keys_writes_source_keys(datacomp: tuple[Path, list[dict]], tmp_path: Path
                                      ) -> None:
    import webdataset as wds
    ws, truth = datacomp
    keys = [f"{i:09d}" for i in (5, 7, 9)]
    (tmp_path / "keys.txt").write_text("\n".join(keys))
    select(ws, "kk", [("ids", {"file": str(tmp_path / "keys.txt"), "on": "key"})])
    out = tmp_path / "out"
    export(ws, "kk", out, keep_keys=True, progress=False)
    got = list(wds.WebDataset(str(out / "kk-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in got] == keys
    assert [s["jpg"] for s in got] == [_image(i) for i in (5, 7, 9)]
    assert [json.loads(s["json"])["key"] for s in got] == keys
    assert [s["txt"].decode() for s in got] == [truth[i]["text"] for i in (5, 7, 9)]
    assert pq.read_table(out / "manifest.parquet")["key"].to_pylist() == keys
    with pytest.raises(CurateError, match="applies to webdataset"):
        export(ws, "kk", tmp_path / "u", format="uids", keep_keys=True, progress=False)


def test_keep_keys_refuses_keys_webdataset_would_split(tmp_path: Path) -> None:
    src = tmp_path / "slash.tar"
    with tarfile.open(src, "w") as tar:
        for name, data in (("sub/a.jpg", _image(1)), ("sub/a.txt", b"a caption")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ws = tmp_path / "ws"
    ingest([str(src)], ws, progress=False)
    select(ws, "all", [("random", {"amount": 1})])
    with pytest.raises(CurateError, match="--keep-keys: source key 'sub/a'"):
        export(ws, "all", tmp_path / "out", keep_keys=True, progress=False)
    export(ws, "all", tmp_path / "plain", progress=False)  # position keys are fine
