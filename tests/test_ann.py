"""The nearest-neighbour index (curate.ann) against exact NumPy search on the synthetic pool:
recall, reuse, extension when a part is added, a rebuild when a part changes, and its users
(similar_to_text, dedup's semantic stage)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from curate import ann
from curate.errors import CurateError
from curate.sql import run_sql
from curate.workspace import Workspace

MODEL = "tiny-clip"


@pytest.fixture()
def ws(embedded: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(embedded, dest)
    return dest


def stored(ws: Path, column: str) -> tuple[list[str], np.ndarray]:
    e = pl.read_parquet(ws / "embeddings" / MODEL / "part-*.parquet").filter(
        pl.col(column).is_not_null())
    x = np.stack(e[column].to_numpy()).astype(np.float32)
    return e["sample_id"].to_list(), x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(ids: list[str], x: np.ndarray, q: np.ndarray, k: int) -> list[list[str]]:
    sim = q @ x.T
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in sim]


def found(t, nq: int) -> list[list[str]]:
    d = t.to_pydict()
    out: list[list[str]] = [[] for _ in range(nq)]
    for qi, sid in zip(d["query"], d["sample_id"], strict=True):
        out[qi].append(sid)
    return out


def test_recall_against_exact_search(ws: Path) -> None:
    ids, img = stored(ws, "image_emb")
    _, txt = stored(ws, "text_emb")
    q = txt[::6]  # captions as queries, as similar_to_text asks
    r = ann.build(ws, MODEL, progress=False)
    assert r["vectors"] == len(ids) and r["rebuilt"] and r["appended"] == 6
    assert ann.current(Workspace.open(ws), MODEL)
    truth = exact_top(ids, img, q, 10)
    for nprobe, least in ((None, 0.95), (1, 0.3)):
        t = ann.search(Workspace.open(ws), MODEL, q, 10, nprobe=nprobe, with_embedding=True)
        got = found(t, len(q))
        rec = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, truth, strict=True)])
        assert rec >= least, (nprobe, rec)
        # every hit's similarity is its exact cosine, and its stored vector comes along
        pos = {s: i for i, s in enumerate(ids)}
        rows = [pos[s] for s in t["sample_id"].to_pylist()]
        cos = np.einsum("ij,ij->i", img[rows], q[t["query"].to_numpy()])
        assert t["similarity"].to_numpy() == pytest.approx(cos, abs=1e-5)
        emb = np.stack(t["embedding"].to_numpy(zero_copy_only=False))
        assert emb / np.linalg.norm(emb, axis=1, keepdims=True) == pytest.approx(img[rows],
                                                                                 abs=1e-6)
    # the text index answers text queries
    tids, _ = stored(ws, "text_emb")
    ann.build(ws, MODEL, "text", progress=False)
    got = found(ann.search(Workspace.open(ws), MODEL, q[:5], 1, modality="text"), 5)
    assert [g[0] for g in got] == [tids[i] for i in range(0, 30, 6)]


def test_reused_extended_when_a_part_is_added_rebuilt_when_one_changes(ws: Path,
                                                                      tmp_path: Path) -> None:
    w = Workspace.open(ws)
    folder = ws / "embeddings" / MODEL
    last = folder / "part-000005.parquet"
    shutil.move(last, tmp_path / last.name)
    r = ann.build(ws, MODEL, progress=False)
    assert (r["rebuilt"], r["appended"]) == (True, 5)
    first = ann.manifest(w, MODEL)
    again = ann.build(ws, MODEL, progress=False)
    assert (again["rebuilt"], again["appended"]) == (False, 0)
    assert ann.manifest(w, MODEL) == first  # reused: nothing rewritten
    shutil.move(tmp_path / last.name, last)  # a part added since the build
    assert not ann.current(w, MODEL)
    ids, img = stored(ws, "image_emb")
    q = img[::50]
    stale = found(ann.search(w, MODEL, q, 5), len(q))  # not current: an exact scan
    assert stale == exact_top(ids, img, q, 5)
    r = ann.build(ws, MODEL, progress=False)
    assert (r["rebuilt"], r["appended"], r["vectors"]) == (False, 1, len(ids))
    m = ann.manifest(w, MODEL)
    assert m["lists"] == first["lists"] and m["generation"] == first["generation"] + 1
    assert sorted(p.name for p in w.ann_dir(MODEL).iterdir()) == [m["file"], "image.json"]
    assert found(ann.search(w, MODEL, q, 1), len(q)) == [[s] for s in ids[::50]]
    pq.write_table(pq.read_table(last), last)  # rewritten (same rows, new file)
    r = ann.build(ws, MODEL, progress=False)
    assert (r["rebuilt"], r["appended"], r["vectors"]) == (True, 6, len(ids))


def test_similar_to_text_through_the_index(ws: Path) -> None:
    exact = run_sql(ws, "similar_to_text", {"n": "5"}, text="a red circle").to_pylist()
    ann.build(ws, MODEL, progress=False)
    got = run_sql(ws, "similar_to_text", {"n": "5"}, text="a red circle").to_pylist()
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in exact]
    assert [r["similarity"] for r in got] == pytest.approx([r["similarity"] for r in exact],
                                                           abs=1e-5)


def test_map_search_and_more_like_this_through_the_index(ws: Path) -> None:
    """The notebook's search goes through the index once one covers the parts (on this small
    pool every list is probed, so it returns what the exact scan returns); a part written
    since makes the index stale and the search exact again."""
    from curate.maps.search import by_phrase, more_like

    ids, _ = stored(ws, "image_emb")
    exact = by_phrase(ws, MODEL, "a red circle", 12)
    like = more_like(ws, ids[7], 9)
    assert exact.attrs["via"] == like.attrs["via"] == "exact"
    ann.build(ws, MODEL, progress=False)
    got, got_like = by_phrase(ws, MODEL, "a red circle", 12), more_like(ws, ids[7], 9)
    assert got.attrs["via"] == got_like.attrs["via"] == "index"
    for a, b in ((got, exact), (got_like, like)):
        assert a["sample_id"].tolist() == b["sample_id"].tolist()
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-5)
        assert a["rank"].tolist() == list(range(1, len(b) + 1))
    assert ids[7] not in set(got_like["sample_id"])
    with pytest.raises(CurateError, match="no image embedding"):
        more_like(ws, "not-a-sample", 5)
    with pytest.raises(CurateError, match="positive"):
        by_phrase(ws, MODEL, "red", 0)
    part = sorted((ws / "embeddings" / MODEL).glob("part-*.parquet"))[0]
    os.utime(part)  # the index no longer covers the parts as they are
    assert by_phrase(ws, MODEL, "a red circle", 12).attrs["via"] == "exact"


def test_semantic_pairs_from_the_index_equal_all_pairs(ws: Path) -> None:
    ids, img = stored(ws, "image_emb")
    ann.build(ws, MODEL, progress=False)
    w = Workspace.open(ws)
    order = list(reversed(ids))  # candidates in another order than stored
    x = img[::-1].copy()
    for threshold in (0.999, 0.99):
        got = set(ann.pairs_above(w, MODEL, x, {s: i for i, s in enumerate(order)}, threshold))
        sim = x @ x.T
        want = {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(sim >= threshold, 1)),
                                                 strict=True)}
        assert want and got == want, threshold
    sub = {s: i for i, s in enumerate(order[:300])}  # others' vectors are ignored
    got = ann.pairs_above(w, MODEL, x[:300], sub, 0.99)
    assert got and all(a < b < 300 for a, b in got)


def test_dedup_semantic_stage_uses_the_index(ws: Path) -> None:
    """With one k-means cluster (600 rows) the old path compares all pairs, so it is the
    ground truth the index's range search must reproduce, drop for drop."""
    from curate.select import select
    rule = [("dedup", {"by": "image_length", "stages": ("semantic",)})]
    select(ws, "plain", rule)
    ann.build(ws, MODEL, progress=False)
    select(ws, "indexed", rule)
    log = {n: pl.read_parquet(ws / "selections" / "dropped" / f"{n}.parquet").sort("sample_id")
           for n in ("plain", "indexed")}
    assert log["plain"].height > 0
    cols = ["sample_id", "representative", "stage"]
    assert log["indexed"].select(cols).equals(log["plain"].select(cols))


def test_cli_and_errors(ingested: Path, ws: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "curate.cli", "index", "-w", str(ws), "--modality",
                        "image", "text"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    n_img, n_txt = (len(stored(ws, c)[0]) for c in ("image_emb", "text_emb"))
    assert 0 < n_img <= n_txt  # a failed image has no vector, its caption has one
    assert r.stdout.splitlines()[0].startswith(f"index tiny-clip image: {n_img} vectors")
    assert f"index tiny-clip text: {n_txt} vectors" in r.stdout
    r = subprocess.run([sys.executable, "-m", "curate.cli", "index", "-w", str(ingested)],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "curate embed" in r.stderr
    with pytest.raises(CurateError, match="modality"):
        ann.search(Workspace.open(ws), MODEL, np.ones(64), modality="audio")
