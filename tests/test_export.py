"""Export: webdataset shards that real consumers read, atomic and resumable, checked sources."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import blake3
import polars as pl
import pytest
import webdataset as wds

from curate.export import export
from curate.ingest import ingest
from curate.passes.score import score
from curate.select import select
from tests import badinput

ROOT = Path(__file__).resolve().parents[1]


def ingest_hash(data: bytes) -> str:
    """What ingest stores as image_hash: BLAKE2b-128 over the length (8 bytes LE) and bytes."""
    h = hashlib.blake2b(digest_size=16)
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)
    return h.hexdigest()


@pytest.fixture(scope="module")
def scored(embedded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded pool with clip_score and two selections: best (120) and other (50)."""
    ws = tmp_path_factory.mktemp("export") / "ws"
    shutil.copytree(embedded, ws)
    score(ws, "clip_score", progress=False)
    select(ws, "best", [("where", {"expr": "clip_score > 0.3"}),
                        ("top", {"column": "clip_score", "amount": 120})])
    select(ws, "other", [("random", {"amount": 50, "seed": 1})])
    return ws


@pytest.fixture(scope="module")
def exported(scored: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "best"
    export(scored, "best", out, shard_size=40, progress=False)
    return out


def samples(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(ws / "samples" / "*.parquet")


def curate_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_webdataset_reads_every_sample_with_the_source_bytes(scored: Path,
                                                             exported: Path) -> None:
    ids = pl.read_parquet(scored / "selections" / "best.parquet")["sample_id"]
    truth = {r["sample_id"]: r for r in samples(scored).iter_rows(named=True)}
    man = pl.read_parquet(exported / "manifest.parquet")
    assert sorted(man["sample_id"]) == sorted(ids) and man["key"].is_unique().all()
    ds = wds.WebDataset(str(exported / "best-{000000..000002}.tar"), shardshuffle=False)
    seen = {}
    for s in ds:
        key = s["__key__"]
        assert "." not in key and key not in seen
        meta = json.loads(s["json"])
        row = truth[meta["sample_id"]]
        assert ingest_hash(s["jpg"]) == row["image_hash"]  # the original bytes, not re-encoded
        assert s["jpg"] == open(row["image_path"], "rb").read()[
            row["image_offset"]:row["image_offset"] + row["image_length"]]
        assert s["txt"].decode() == row["caption"] == meta["caption"]
        assert meta["key"] == key and meta["url"] == row["url"]
        assert meta["source_key"] == row["key"] and "clip_score" in meta
        seen[key] = meta["sample_id"]
    assert len(seen) == len(ids) == 120
    assert seen == dict(zip(man["key"], man["sample_id"], strict=True))
    sizes = json.loads((exported / "sizes.json").read_text())
    assert sizes == {"best-000000.tar": 40, "best-000001.tar": 40, "best-000002.tar": 40}
    for line in (exported / "B3SUMS").read_text().splitlines():
        digest, name = line.split()
        assert blake3.blake3((exported / name).read_bytes()).hexdigest() == digest
    assert man.group_by("shard").len().sort("shard")["len"].to_list() == [40, 40, 40]
    scores = pl.read_parquet(scored / "scores" / "clip_score" / "*.parquet")
    joined = man.join(scores, on="sample_id", suffix="_src")
    assert (joined["clip_score"] == joined["clip_score_src"]).all()


@pytest.mark.slow
def test_open_clip_trains_an_epoch_on_the_export(exported: Path, tmp_path: Path) -> None:
    """open_clip's own training entry point, told nothing about the number of samples."""
    from curate.models.tinyclip import TINY_ARCH, cache_dir, register_arch
    register_arch()
    config = cache_dir() / "models" / "configs" / f"{TINY_ARCH}.json"
    code = ("import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
            "from open_clip_train.main import main; main(sys.argv[2:])")
    r = subprocess.run(
        [sys.executable, "-c", code, str(config), "--dataset-type", "webdataset",
         "--train-data", str(exported / "best-{000000..000002}.tar"), "--model", TINY_ARCH,
         "--batch-size", "30", "--epochs", "1", "--workers", "1", "--precision", "fp32",
         "--lr", "1e-3", "--warmup", "1", "--zeroshot-frequency", "0", "--seed", "0",
         "--logs", str(tmp_path), "--name", "run"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "[120/120 (100%)]" in log  # sizes.json told it: 120 samples, 4 batches of 30
    assert (tmp_path / "run" / "checkpoints" / "epoch_1.pt").is_file()


def test_extension_follows_the_real_format_and_files_are_read_whole(
        tmp_path: Path) -> None:
    shard = badinput.write_tar(tmp_path / "mixed.tar", [
        ("a.jpg", badinput.jpeg()), ("a.txt", b"a red square"),
        ("b.png", badinput.png()), ("b.txt", b"a blue square"),
        ("c.webp", badinput.webp()), ("c.txt", b"a green square")])
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "d.png").write_bytes(badinput.png((9, 9, 9)))
    (folder / "d.txt").write_text("a black square")
    ws = tmp_path / "ws"
    ingest([str(shard), str(folder)], ws, progress=False)
    select(ws, "all", [("where", {"expr": "true"})])
    export(ws, "all", tmp_path / "out", card=False, progress=False)
    with tarfile.open(tmp_path / "out" / "all-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    exts = sorted(n.split(".", 1)[1] for n in members if not n.endswith(("txt", "json")))
    assert exts == ["jpg", "png", "png", "webp"]
    originals = {badinput.jpeg(), badinput.png(), badinput.webp(), badinput.png((9, 9, 9))}
    assert {d for n, d in members.items() if n.endswith(("jpg", "png", "webp"))} == originals


def test_shard_bytes_bound_every_shard(scored: Path, tmp_path: Path) -> None:
    limit = 100_000
    r = export(scored, "best", tmp_path / "out", shard_bytes=limit, card=False, progress=False)
    tars = sorted((tmp_path / "out").glob("*.tar"))
    assert r.shards == len(tars) > 2
    assert all(p.stat().st_size <= limit for p in tars)
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sum(sizes.values()) == 120
    for p in tars:
        with tarfile.open(p) as tar:
            assert len(tar.getnames()) == 3 * sizes[p.name]


def test_columns_choose_what_each_json_and_the_manifest_carry(scored: Path,
                                                              tmp_path: Path) -> None:
    export(scored, "other", tmp_path / "out", columns=["clip_cosine"], card=False,
           progress=False)
    man = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert "clip_cosine" in man.columns and "clip_score" not in man.columns
    with tarfile.open(tmp_path / "out" / "other-000000.tar") as tar:
        meta = json.loads(tar.extractfile(tar.getmember(man["key"][0] + ".json")).read())
    assert "clip_cosine" in meta and "clip_score" not in meta


@pytest.mark.parametrize("limits", [{"shard_size": 40}, {"shard_bytes": 100_000}])
def test_samples_written_one_at_a_time_give_the_fast_path_bytes(scored: Path, tmp_path: Path,
                                                                limits: dict) -> None:
    """webdataset's reading of an export (laid out by ``write_batch``), written again a sample
    dict at a time (``write``) with the same limits, gives the same shards byte for byte."""
    from curate.export.webdataset import WebDatasetWriter
    from curate.export.writer import Target

    fast = tmp_path / "fast"
    export(scored, "best", fast, card=False, progress=False, **limits)
    info = json.loads((fast / "export.json").read_text())
    (tmp_path / "one").mkdir()
    writer = WebDatasetWriter()
    writer.open(Target(tmp_path / "one", "best", 9, **limits), {"shards": []})
    for s in wds.WebDataset(str(fast / info["pattern"]), shardshuffle=False):
        writer.write({"__key__": s["__key__"], "jpg": s["jpg"], "txt": s["txt"].decode(),
                      "json": s["json"], "__url__": s["__url__"]})
    records = writer.close()
    assert records == info["shards"] and len(records) >= 3
    assert writer.planned == [{"name": r["name"], "first": r["first"]} for r in records]
    for r in records:
        assert (tmp_path / "one" / r["name"]).read_bytes() == (fast / r["name"]).read_bytes()


class Captions:
    """A second format, to show the seam: per shard a ``.tsv`` of key and caption lines."""

    format, suffix, members = "captions", ".tsv", {"tsv": "key, a tab, the caption"}

    def open(self, target, state, reader=None) -> None:  # noqa: ANN001
        self.target, self.state, self.lines, self.planned = target, state, [], []
        self.position = sum(s["samples"] for s in state["shards"])

    def write_batch(self, batch) -> None:  # noqa: ANN001
        for key, txt in zip(batch["key"].to_pylist(), batch["txt"].to_pylist(), strict=True):
            self.write({"__key__": key, "txt": txt})

    def write(self, sample: dict) -> None:
        if not self.lines:
            name = self.target.shard(len(self.state["shards"]), self.suffix).name
            self.planned.append({"name": name, "first": self.position})
        self.lines.append(f"{sample['__key__']}\t{sample['txt']}\n")
        self.position += 1
        if len(self.lines) == self.target.shard_size:
            self.close()

    def close(self) -> list[dict]:
        from curate.export.writer import record_shard
        if self.lines:
            data, shard = "".join(self.lines).encode(), self.planned[-1]
            (self.target.out / shard["name"]).write_bytes(data)
            record_shard(self.target, self.state, {**shard, "samples": len(self.lines),
                                                   "bytes": len(data),
                                                   "blake3": blake3.blake3(data).hexdigest()})
        self.lines = []
        return self.state["shards"]

    def abort(self) -> None:
        self.lines = []


def test_a_format_is_one_writer_in_the_registry(scored: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer registered by name gets the query's rows; the export's manifest, sizes,
    checksums and record follow its shards; the format is part of the export's identity."""
    from curate.errors import CurateError
    from curate.export.formats import FORMATS

    with pytest.raises(CurateError, match=r"^unknown export format 'hf' "
                       r"\(formats: parquet, uids, webdataset\)$"):
        export(scored, "other", tmp_path / "no", format="hf", progress=False)
    assert not (tmp_path / "no").exists()
    monkeypatch.setitem(FORMATS, "captions", Captions)
    out = tmp_path / "out"
    r = export(scored, "other", out, shard_size=20, format="captions", card=False,
               progress=False)
    assert (r.samples, r.shards, r.shards_written) == (50, 3, 3)
    info = json.loads((out / "export.json").read_text())
    assert info["format"] == info["fingerprint"]["format"] == "captions"
    assert info["pattern"] == "other-{000000..000002}.tsv"
    assert json.loads((out / "sizes.json").read_text()) == {
        "other-000000.tsv": 20, "other-000001.tsv": 20, "other-000002.tsv": 10}
    man = pl.read_parquet(out / "manifest.parquet")
    truth = dict(samples(scored).select("sample_id", "caption").iter_rows())
    lines = [(p.name, line.split("\t", 1)) for p in sorted(out.glob("*.tsv"))
             for line in p.read_text().splitlines()]
    assert [(shard, key, truth[sid]) for shard, key, sid in man.select(
        "shard", "key", "sample_id").iter_rows()] == [(n, k, c) for n, (k, c) in lines]
    for line in (out / "B3SUMS").read_text().splitlines():
        digest, name = line.split()
        assert blake3.blake3((out / name).read_bytes()).hexdigest() == digest
    with pytest.raises(CurateError, match="holds an export of selection 'other' "
                                          r"\(format 'captions'\)"):
        export(scored, "other", out, shard_size=20, card=False, progress=False)


KILL = """
import os, signal, sys
import curate.export as e
import curate.export.tar as t
import curate.export.webdataset as w
calls = []
def hook(real):
    def wrapper(self, *args):
        calls.append(1)
        if len(calls) == 3:  # the third shard: written whole, then killed
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args)
    return wrapper
if sys.argv[1] == "before-rename":  # its bytes are in the temporary file, not yet renamed
    t.Sink._close_file = hook(t.Sink._close_file)
else:  # it has its final name; the resume state does not know it yet
    w.WebDatasetWriter._done = hook(w.WebDatasetWriter._done)
e.export(sys.argv[2], sys.argv[4], sys.argv[3], shard_size=15, progress=False)
"""


def kill_export(where: str, ws: Path, out: Path, selection: str) -> subprocess.CompletedProcess:
    """Export in a subprocess SIGKILLed as its third shard closes (see KILL)."""
    return subprocess.run([sys.executable, "-c", KILL, where, str(ws), str(out), selection],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before-rename", "after-rename"])
def test_killed_export_resumes_to_the_same_bytes(scored: Path, tmp_path: Path,
                                                 where: str) -> None:
    whole, out = tmp_path / "whole", tmp_path / "resumed"
    export(scored, "best", whole, shard_size=15, progress=False)
    r = kill_export(where, scored, out, "best")
    assert r.returncode == -9, r.stderr[-2000:]
    assert not (out / "export.json").exists() and not (out / "sizes.json").exists()
    finals = sorted(out.glob("best-*.tar"))
    assert len(finals) == (2 if where == "before-rename" else 3)
    for p in finals:  # whatever has a final name is a whole shard
        assert p.read_bytes() == (whole / p.name).read_bytes()
    report = export(scored, "best", out, shard_size=15, progress=False)
    assert report.shards_skipped == 2 and report.shards_written == 6
    files = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for f in files:
        assert (whole / f).read_bytes() == (out / f).read_bytes(), f
    again = export(scored, "best", out, shard_size=15, progress=False)
    assert again.shards_written == 0 and again.shards_skipped == 8


@pytest.mark.slow
def test_bad_targets_fail_cleanly(scored: Path, exported: Path, tmp_path: Path) -> None:
    r = curate_cli("export", "-w", str(scored), "missing", str(tmp_path / "a"))
    assert r.returncode == 2 and "no selection 'missing'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    before = {p: p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    r = curate_cli("export", "-w", str(scored), "other", str(exported))
    assert r.returncode == 2 and "holds an export of selection 'best'" in r.stderr
    assert {p: p.read_bytes() for p in exported.rglob("*") if p.is_file()} == before
    r = curate_cli("export", "-w", str(scored), "best", str(exported), "--shard-size", "7")
    assert r.returncode == 2 and "shard_size 40" in r.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    r = curate_cli("export", "-w", str(scored), "best", str(tmp_path / "busy"))
    assert r.returncode == 2 and "not empty" in r.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


@pytest.fixture()
def own_pool(pool: Path, tmp_path: Path) -> Path:
    """A workspace over a private copy of the pool, whose shards a test may move or change."""
    shutil.copytree(pool, tmp_path / "pool")
    ws = tmp_path / "ws"
    ingest([str(tmp_path / "pool")], ws, progress=False)
    select(ws, "all", [("where", {"expr": "true"})])
    return ws


def test_moved_source_shard_fails_before_writing(own_pool: Path, tmp_path: Path) -> None:
    src = own_pool.parent / "pool"
    (src / "00001.tar").rename(src / "elsewhere.tar")
    r = curate_cli("export", "-w", str(own_pool), "all", str(tmp_path / "out"))
    assert r.returncode == 2 and "gone since ingest" in r.stderr and "00001.tar" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_rewritten_source_shard_fails_and_leaves_nothing(own_pool: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert kill_export("before-rename", own_pool, out, "all").returncode == -9
    assert len(list(out.glob("all-*.tar"))) == 2  # an unfinished export of 00000.tar's samples
    src = own_pool.parent / "pool"
    size = (src / "00002.tar").stat().st_size  # same name, other members, no shorter
    other = (src / "00001.tar").read_bytes()
    (src / "00002.tar").write_bytes(other + bytes(max(0, size - len(other))))
    r = curate_cli("export", "-w", str(own_pool), "all", str(out), "--shard-size", "15")
    assert r.returncode == 2 and "00002.tar changed since ingest" in r.stderr
    assert not out.exists()  # the unfinished export's shards are gone with it


@pytest.mark.slow
def test_changed_image_bytes_fail_the_hash_check(own_pool: Path, tmp_path: Path) -> None:
    s = samples(own_pool).filter(pl.col("status") == "ok").sort("image_path", "image_offset")
    row = s.row(len(s) // 2, named=True)  # the middle image: in-place, same length
    with open(row["image_path"], "r+b") as f:
        f.seek(row["image_offset"] + row["image_length"] // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = curate_cli("export", "-w", str(own_pool), "all", str(tmp_path / "out"),
                   "--verify", "all")
    assert r.returncode == 2 and "does not have its ingest hash" in r.stderr
    assert row["key"] in r.stderr and not (tmp_path / "out").exists()


def test_reads_land_in_place_across_runs_gaps_and_files(tmp_path: Path) -> None:
    """The reader puts images in their places: long runs of neighbours, members it must skip
    (gaps over 16 KB between images split a run) and whole image files."""
    import numpy as np
    import pyarrow as pa

    from curate.export.read import SourceChanged, SourceReader

    rng = np.random.default_rng(0)
    shard, rows = tmp_path / "src.tar", []
    with tarfile.open(shard, "w") as tar:
        for k in range(617):
            data = rng.integers(0, 256, int(rng.integers(1, 3000)), np.uint8).tobytes()
            for name, body in ((f"{k:05d}.jpg", data),
                               (f"{k:05d}.txt", bytes(20000 if k % 397 == 0 else 10))):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
            rows.append((str(shard), f"{k:05d}", data))
    with tarfile.open(shard) as tar:
        offsets = {m.name[:5]: m.offset_data for m in tar if m.name.endswith(".jpg")}
    loose = tmp_path / "loose.png"
    loose.write_bytes(b"\x89PNG" + bytes(range(256)) * 7)
    rows.append((str(loose), "loose", loose.read_bytes()))
    keep = [r for i, r in enumerate(rows) if i % 5 != 3]  # a selection with holes
    batch = pa.RecordBatch.from_pydict({
        "i": list(range(len(keep))),
        "image_path": [p for p, _, _ in keep],
        "image_offset": [offsets.get(k, 0) for _, k, _ in keep],
        "image_length": [len(d) for _, _, d in keep],
        "tar": [k in offsets for _, k, _ in keep],  # what export_io.query says of each row
        "remote": [False] * len(keep),
        "same": [False] + [a[0] == b[0] for a, b in zip(keep, keep[1:], strict=False)],
        "source_key": [k for _, k, _ in keep],
        "member": [k for _, k, _ in keep],  # the tar member each image is
        "image_hash": [ingest_hash(d) for _, _, d in keep]})
    lens = np.array([len(d) for _, _, d in keep])
    pos = np.concatenate([[0], np.cumsum(lens + 7)[:-1]]) + 3
    out = np.zeros(int(pos[-1] + lens[-1] + 5), np.uint8)
    reader = SourceReader("all")
    rows = reader.read_into(batch, out, pos)
    for (_, _, data), p in zip(keep, pos, strict=True):
        assert out[p:p + len(data)].tobytes() == data
    assert rows == list(range(len(keep)))  # verify="all": every image is to be hash-checked
    reader.check_hashes(batch, rows, out, pos)
    assert reader.verified == len(keep)
    out[pos[5]] ^= 1  # a flipped bit fails its ingest hash
    with pytest.raises(SourceChanged, match="does not have its ingest hash"):
        reader.check_hashes(batch, rows, out, pos)
    with open(shard, "r+b") as f:  # a member renamed in the source: the header check fails
        f.seek(offsets["00400"] - 512)
        f.write(b"99999")
    with pytest.raises(SourceChanged, match="no member 00400"):
        SourceReader("sample").read_into(batch, out, pos)
    with open(shard, "r+b") as f:  # cut short inside the last image: the read comes up short
        f.truncate(offsets[keep[-2][1]] + 1)
    with pytest.raises(SourceChanged, match="shorter than ingest found it"):
        SourceReader("sample").read_into(batch, out, pos)
    reader.close()


def test_tar_layout_matches_the_reference_headers_and_tarfile_reads_it() -> None:
    """The kernel's bytes equal members built one by one from ``header`` (checksums summed
    over the whole block), for empty, block-sized and odd lengths; tarfile reads them back."""
    import numpy as np

    from curate.export.tar import BLOCK, header, image_places, sample_size, tar_blocks

    rng = np.random.default_rng(1)
    lens = [0, 1, 511, 512, 513, 4096, 12345]
    imgs = [rng.integers(0, 256, n, np.uint8).tobytes() for n in lens]
    txts = [f"caption {i} \u00e9".encode() * (i * 40) for i in range(len(lens))]
    jss = [json.dumps({"k": i, "pad": "x" * (i * 97)}).encode() for i in range(len(lens))]
    exts = [b"jpg", b"png", b"webp", b"jpg", b"gif", b"jpg", b"tiff"]
    keys = np.arange(7, 7 + len(lens), dtype=np.int64) * 1000003

    def arrow_like(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        at = np.concatenate([[0], np.cumsum([len(x) for x in items])]).astype(np.int64)
        return np.frombuffer(b"".join(items) or b"\0", np.uint8), at

    def pad(data: bytes) -> bytes:
        return data + bytes(-len(data) % BLOCK)

    img_len = np.array(lens, np.int64)
    sizes = sample_size(img_len, np.array([len(t) for t in txts]), np.array([len(j) for j in jss]))
    out = np.full(int(sizes.sum()), 0xAB, np.uint8)  # garbage everywhere the kernel must write
    for p, data in zip(image_places(sizes), imgs, strict=True):
        out[p:p + len(data)] = np.frombuffer(data, np.uint8)
    tar_blocks(keys, 11, img_len, arrow_like(exts), arrow_like(txts), arrow_like(jss), out)
    want = b"".join(
        header(b"%011d.%s" % (k, e), len(i)) + pad(i) + header(b"%011d.txt" % k, len(t)) + pad(t)
        + header(b"%011d.json" % k, len(j)) + pad(j)
        for k, e, i, t, j in zip(keys.tolist(), exts, imgs, txts, jss, strict=True))
    assert out.tobytes() == want
    with tarfile.open(fileobj=io.BytesIO(want + bytes(2 * BLOCK))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members[::3]] == [
            f"{k:011d}.{e.decode()}" for k, e in zip(keys.tolist(), exts, strict=True)]
        assert [tar.extractfile(m).read() for m in members[::3]] == imgs
        assert all(m.mode == 0o444 and m.mtime == 0 and m.uname == "bigdata" for m in members)
    with pytest.raises(ValueError, match="not the samples' size"):
        tar_blocks(keys, 11, img_len, arrow_like(exts), arrow_like(txts), arrow_like(jss),
                   out[:-1])


def test_manifest_rows_stream_out_in_order_a_row_group_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows go out a group at a time on the manifest's own thread, each with the shard it
    starts in, in key order; a failure on that thread is raised by close."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.export.query import Manifest

    monkeypatch.setattr(Manifest, "ROWS", 5)
    shards = [{"name": "a-000000.tar", "first": 0}, {"name": "a-000001.tar", "first": 9}]
    def batch(keys: list[int], score: pa.Array | None = None) -> pa.RecordBatch:
        """export_io.query's columns the manifest takes, and one chosen column"""
        n = len(keys)
        return pa.RecordBatch.from_pydict({
            "i": pa.array(keys, pa.int64()), "key": [f"{k:09d}" for k in keys],
            "sample_id": [f"id{k}" for k in keys], "rank": list(keys), "reason": ["keep"] * n,
            "txt": [f"cap {k}" for k in keys], "url": [None] * n, "image_format": ["jpeg"] * n,
            "image_length": [100 + k for k in keys],
            "m.clip_score": score if score is not None else pa.array(
                [k / 10 for k in keys], pa.float32())})

    batches = [batch(list(range(start, min(start + 4, 23)))) for start in range(0, 23, 4)]
    with Manifest(tmp_path / "m.parquet") as man:
        for b in batches:  # batches of 4 rows (the last of 3), keys 0..22
            man.add(b, shards)
        man.close()
    f = pq.ParquetFile(tmp_path / "m.parquet")
    got = f.read().to_pylist()
    # flushed once 5 or more rows wait: 4 + 4, 4 + 4, 4 + 3
    assert [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)] == [8, 8, 7]
    assert [r["key"] for r in got] == [f"{k:09d}" for k in range(23)]
    assert [r["shard"] for r in got] == ["a-000000.tar"] * 9 + ["a-000001.tar"] * 14
    assert got[3] == {"key": "000000003", "shard": "a-000000.tar", "sample_id": "id3",
                      "rank": 3, "reason": "keep", "caption": "cap 3", "url": None,
                      "image_format": "jpeg", "image_bytes": 103,
                      "clip_score": pytest.approx(0.3)}
    with pytest.raises(pa.ArrowInvalid):  # a batch whose schema differs fails on the thread
        with Manifest(tmp_path / "bad.parquet") as man:
            man.add(batches[0], shards)
            man.add(batch([4], pa.array(["x"])), shards)
            man.close()
