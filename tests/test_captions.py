"""Several captions per image: the images view, ``captions add`` bookkeeping against the
captions table, and image embeddings computed once per image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateError
from curate.hashing import content_id
from curate.images import read_bytes
from curate.ingest import ingest
from curate.ingest.captions import add_captions
from curate.passes.embed import embed
from curate.synth import make_pool
from curate.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def samples(ws: Path) -> pl.DataFrame:
    with Workspace.open(ws).connect() as con:
        return con.sql("SELECT * FROM samples").pl()


def sql(ws: Path, query: str) -> list[tuple]:
    with Workspace.open(ws).connect() as con:
        return con.execute(query).fetchall()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 60-sample pool (two shards) ingested in parts of 30 (treat as read-only)."""
    pool = make_pool(tmp_path_factory.mktemp("cpool") / "pool", 60, seed=3, shard_size=30)
    ws = tmp_path_factory.mktemp("cws") / "ws"
    ingest([str(pool)], ws, part_rows=30, progress=False)
    return pool, ws


def test_images_view_groups_samples_by_image_bytes(small: tuple[Path, Path]) -> None:
    pool, ws = small
    s = samples(ws).filter(pl.col("status") == "ok")
    assert (s["image_id"] == s["image_hash"]).all()
    assert set(s["caption_source"]) == {"alt"}  # web alt-text by default
    truth = pl.read_parquet(pool / "truth.parquet")
    exact = truth.filter((pl.col("duplicate_kind") == "exact")
                         & (pl.col("expected_status") == "ok"))
    images = sql(ws, "SELECT count(*), sum(n_captions) FROM images")[0]
    assert images == (s["image_hash"].n_unique(), s.height)
    # every exact duplicate the pool planted is a second caption of its source's image
    n = dict(sql(ws, "SELECT image_id, n_captions FROM images"))
    by_key = dict(zip(s["key"], s["image_id"], strict=True))
    dups = [(k, d) for k, d in zip(exact["key"], exact["duplicate_of"], strict=True)
            if d in by_key]
    assert dups, "the pool planted no exact duplicate of an ok image"
    for key, src in dups:
        assert by_key[key] == by_key[src] and n[by_key[src]] >= 2


def table_for(ws: Path, n: int) -> tuple[pa.Table, pl.DataFrame]:
    """A captions table keyed by ``key``: ``n`` new captions of ok samples, one caption a
    sample already has, two keys no sample has, one empty caption."""
    s = samples(ws).filter(pl.col("status") == "ok").sort("key")
    keys = s["key"].to_list()
    rows = [{"key": k, "caption": f"a generated caption number {i}", "model": "test"}
            for i, k in enumerate(keys[:n])]
    rows += [{"key": keys[0], "caption": s["caption"][0], "model": "test"},
             {"key": "no-such-key", "caption": "x", "model": "test"},
             {"key": "other-missing", "caption": "y", "model": "test"},
             {"key": keys[1], "caption": "  ", "model": "test"}]
    return pa.Table.from_pylist(rows), s


def test_captions_add_attaches_new_samples_of_the_same_images(small: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    _, base = small
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    table, s = table_for(ws, 10)
    path = tmp_path / "gen.parquet"
    pq.write_table(table, path)
    before = len(list((ws / "samples").glob("part-*.parquet")))
    r = add_captions(ws, path, "blip2", progress=False)
    assert (r.rows, r.added, r.already_present, r.unmatched, r.failed, r.ambiguous) == (
        14, 10, 1, 2, 1, 0)
    assert len(list((ws / "samples").glob("part-*.parquet"))) == before + 1
    after = samples(ws)
    new = after.filter(pl.col("caption_source") == "blip2").sort("caption")
    assert new.height == 10
    orig = {k: row for k, row in zip(s["key"], s.iter_rows(named=True), strict=True)}
    for row in new.iter_rows(named=True):
        src = orig[row["orig_key"]]
        # the same bytes, referenced in place, and the id ingest would give the pair
        assert (row["image_path"], row["image_offset"], row["image_length"]) == (
            src["image_path"], src["image_offset"], src["image_length"])
        data = read_bytes(row["image_path"], row["image_offset"], row["image_length"])
        assert row["sample_id"] == content_id(data, row["caption"].encode())
        assert row["image_id"] == src["image_id"] and row["status"] == "ok"
        assert row["meta"] == '{"model": "test"}'
    want = {orig[k]["image_id"] for k in table["key"].to_pylist()[:10]}
    got = dict(sql(ws, "SELECT image_id, n_captions FROM images WHERE "
                   "list_contains(sources, 'blip2')"))
    assert set(got) == want and all(n >= 2 for n in got.values())
    log = pl.read_parquet(ws / "captions" / "blip2.parquet").sort("row")
    assert log["status"].to_list() == ["added"] * 10 + [
        "already_present", "unmatched", "unmatched", "failed"]
    assert log["error"][13].startswith("empty_caption")
    assert "no-such-key" in log["error"][11]
    # adding the same table again adds nothing
    again = add_captions(ws, path, "blip2", progress=False)
    assert (again.added, again.already_present, again.unmatched) == (0, 11, 2)
    assert samples(ws).height == after.height


def test_captions_add_by_image_id_and_url_and_ambiguous_keys(small: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    _, base = small
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    s = samples(ws).filter(pl.col("status") == "ok").sort("key")
    by_id = pa.table({"image_id": s["image_id"][:3].to_list(),
                      "text": ["one", "two", "three"]})
    r = add_captions(ws, by_id, "alt2", progress=False)
    assert (r.added, r.unmatched) == (3, 0)
    csv = tmp_path / "by_url.csv"
    pl.DataFrame({"url": s["url"][3:5].to_list(), "caption": ["four", "five"]}).write_csv(csv)
    assert add_captions(ws, csv, "alt2", on="url", progress=False).added == 2
    jsonl = tmp_path / "by_key.jsonl"
    pl.DataFrame({"key": [s["key"][5]], "caption": ["six"]}).write_ndjson(jsonl)
    assert add_captions(ws, jsonl, "alt2", progress=False).added == 1
    # a second pool's keys repeat the first's, with other images: a key names two images
    other = make_pool(tmp_path / "other", 5, seed=11, shard_size=30)
    ingest([str(other)], ws, progress=False)
    amb = add_captions(ws, pa.table({"key": [s["key"][0]], "caption": ["seven"]}), "alt3",
                       progress=False)
    assert (amb.ambiguous, amb.added) == (1, 0)
    log = pl.read_parquet(ws / "captions" / "alt3.parquet")
    assert log["status"].to_list() == ["ambiguous"] and "2 different images" in log["error"][0]
    with pytest.raises(CurateError, match="no column 'nope'"):
        add_captions(ws, by_id, "alt4", caption_column="nope", progress=False)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(CurateError, match="cannot read the captions table"):
        add_captions(ws, bad, "alt4", progress=False)


def test_views_read_a_workspace_without_the_new_columns(tmp_path: Path,
                                                        small: tuple[Path, Path]) -> None:
    """A part written before image_id and caption_source (a COCO part with its integer
    image_id column) still reads: image_id is the hash, the old column source_image_id."""
    _, base = small
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    part = sorted((ws / "samples").glob("part-*.parquet"))[0]
    t = pq.read_table(part)
    t = t.append_column("image_id", pa.array(range(t.num_rows), pa.int64()))
    t = t.drop_columns(["source_kind"]).append_column(
        "source_kind", pa.array(["coco"] * t.num_rows))
    pq.write_table(t, part)
    s = samples(ws)
    first = s.filter(pl.col("source_kind") == "coco")
    assert first.height == t.num_rows and set(first["caption_source"]) == {"human"}
    assert sorted(first["source_image_id"].to_list()) == list(range(t.num_rows))
    assert (s["image_id"].fill_null("") == s["image_hash"].fill_null("")).all()


@pytest.mark.slow
def test_embedding_reuses_image_vectors_and_encodes_only_new_text(
        small: tuple[Path, Path], tmp_path: Path) -> None:
    pool, base = small
    work = tmp_path / "w"
    shutil.copytree(pool, work / "pool")
    ws = work / "ws"
    ingest([str(work / "pool")], ws, part_rows=30, progress=False)
    first = embed(ws, "tiny-clip", batch_size=16, workers=0, progress=False)
    s = samples(ws).filter(pl.col("status") == "ok")
    assert first.extra["images_decoded"] == s["image_hash"].n_unique()
    assert first.extra["images_reused"] == s.height - s["image_hash"].n_unique()
    table, _ = table_for(ws, 8)
    add_captions(ws, table.slice(0, 8), "blip2", progress=False)
    # the image bytes go away: only reused image vectors can give the new samples theirs
    shutil.move(work / "pool", work / "gone")
    second = embed(ws, "tiny-clip", batch_size=16, workers=0, progress=False)
    assert (second.extra["images_decoded"], second.extra["images_reused"]) == (0, 8)
    assert second.parts_written == 1
    with Workspace.open(ws).connect() as con:
        rows = con.sql("""SELECT n.sample_id, n.caption, e.status, e.image_emb, e.text_emb,
                o.image_emb AS orig_emb, o.text_emb AS orig_text
            FROM samples n JOIN embeddings_tiny_clip e USING (sample_id)
            JOIN samples s ON s.image_id = n.image_id AND s.caption_source = 'alt'
            JOIN embeddings_tiny_clip o ON o.sample_id = s.sample_id
            WHERE n.caption_source = 'blip2'""").pl()
    assert rows["sample_id"].n_unique() == 8 and (rows["status"] == "ok").all()
    for r in rows.iter_rows(named=True):
        np.testing.assert_array_equal(r["image_emb"], r["orig_emb"])
        assert not np.allclose(r["text_emb"], r["orig_text"])
    from curate import models
    m = models.load("tiny-clip", "cpu")
    import torch
    with torch.no_grad():
        want = m.model.encode_text(m.tokenizer(rows["caption"].to_list())).numpy()
    np.testing.assert_allclose(np.stack(rows["text_emb"].to_numpy()), want, atol=1e-5)


def test_captions_cli_one_line_summary_and_errors(small: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    _, base = small
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    table, _ = table_for(ws, 3)
    path = tmp_path / "gen.parquet"
    pq.write_table(table, path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "curate.cli", "captions", "add", str(path), "-w", str(ws)]
    out = subprocess.run([*run, "--name", "blip2"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "3 added, 1 already present, 2 unmatched, 0 ambiguous, 1 failed" in out.stdout
    bad = subprocess.run([*run, "--name", "../x"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "caption source '../x'" in bad.stderr


@pytest.mark.slow
def test_synth_generated_captions_at_known_rates_attach_by_url(tmp_path: Path) -> None:
    from curate.synth.generated import Generated, write_generated
    pool = make_pool(tmp_path / "pool", 300, seed=4, shard_size=100)
    table = write_generated(pool, seed=4, shares=Generated(wrong=0.3, generic=0.2))
    truth = pl.read_parquet(pool / "truth.parquet")
    ok = truth.filter(pl.col("expected_status") == "ok")
    assert ok["generated_kind"].null_count() == 0
    assert truth.filter(pl.col("expected_status") != "ok")["generated_kind"].null_count() == \
        truth.height - ok.height
    share = ok["generated_kind"].value_counts(normalize=True)
    rates = dict(zip(share["generated_kind"], share["proportion"], strict=True))
    assert abs(rates["wrong"] - 0.3) < 0.08 and abs(rates["generic"] - 0.2) < 0.08
    for r in ok.iter_rows(named=True):
        names = f" {r['colour']} {r['shape']}" in r["generated_caption"]
        assert names == (r["generated_kind"] != "wrong") == r["generated_correct"]
    ws = tmp_path / "ws"
    ingest([str(pool)], ws, progress=False)
    rep = add_captions(ws, table, "blip2", on="url", progress=False)
    assert rep.rows == ok.height and rep.unmatched == rep.failed == rep.ambiguous == 0
    assert rep.added + rep.already_present == ok.height
